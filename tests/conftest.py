"""Shared fixtures. Under CI=true nothing may skip because a server or binary is missing."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.ci import IN_CI  # noqa: E402  (after the path is set up)


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Under CI=true a skipped test fails the run: CI installs every server and binary the tests need."""
    if not IN_CI:
        return
    config = getattr(session, "config", None)
    reporter = config.pluginmanager.get_plugin("terminalreporter") if config is not None else None
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        names = ", ".join(getattr(r, "nodeid", "?") for r in skipped[:10])
        print(f"\nCI=true: {len(skipped)} tests skipped, which CI does not allow: {names}")
        session.exitstatus = 1  # type: ignore[attr-defined]

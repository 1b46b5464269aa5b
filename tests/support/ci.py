"""CI=true: nothing may skip because a server or binary is missing (.ci/run installs them all)."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def requires(present: bool, what: str) -> pytest.MarkDecorator:
    """Skip when `what` is missing, except under CI, where the tests run and fail on its absence."""
    return pytest.mark.skipif(not present and not IN_CI, reason=f"{what} is not installed")


def skip_unless_ci(what: str) -> None:
    """In a fixture that found `what` missing: skip outside CI, fail under it."""
    if IN_CI:
        pytest.fail(f"{what} is not installed, and CI=true does not allow skipping")
    pytest.skip(f"{what} is not installed")

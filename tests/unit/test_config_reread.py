"""D31: a reload reads the node's configuration file and environment again (shared/config/reread.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from shared.config import ConfigError, NodeConfig
from shared.config.reread import reread

BASE = {
    "name": "n1",
    "scope": "demo",
    "restapi": {"listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008"},
    "postgresql": {"data_dir": "/tmp/x", "listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432"},
    "raft": {"self_addr": "127.0.0.1:2222"},
}


def started(tmp_path: Path, data: dict) -> tuple[Path, NodeConfig]:
    """The source file, and the rendered copy a program reads (with what the launcher adds)."""
    source = tmp_path / "node.yml"
    source.write_text(yaml.safe_dump(data))
    copy = dict(data, haven={"run_dir": "/run/haven/demo-n1", "source_config": str(source)})
    return source, NodeConfig(copy, str(tmp_path / "config.yaml"))


def test_changes_in_the_file_are_read_and_the_launchers_values_kept(tmp_path: Path) -> None:
    source, current = started(tmp_path, BASE)
    source.write_text(yaml.safe_dump({**BASE, "tags": {"nosync": True}}))
    fresh = reread(current)
    assert fresh.data["tags"] == {"nosync": True}
    assert fresh.haven == {"run_dir": "/run/haven/demo-n1", "source_config": str(source)}
    assert fresh.path == current.path


def test_the_environment_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, current = started(tmp_path, BASE)
    monkeypatch.setenv("PATRONI_POSTGRESQL_DATA_DIR", "/tmp/y")
    assert reread(current).postgresql["data_dir"] == "/tmp/y"


def test_an_invalid_file_names_the_key_and_rule(tmp_path: Path) -> None:
    source, current = started(tmp_path, BASE)
    source.write_text(yaml.safe_dump({**BASE, "restapi": {"listen": 5}}))
    with pytest.raises(ConfigError) as err:
        reread(current)
    assert "restapi" in str(err.value)


def test_name_and_scope_cannot_change(tmp_path: Path) -> None:
    source, current = started(tmp_path, BASE)
    source.write_text(yaml.safe_dump({**BASE, "name": "other"}))
    with pytest.raises(ConfigError, match="name and scope cannot change"):
        reread(current)


def test_an_unreadable_file_is_not_replaced_by_the_environment(tmp_path: Path) -> None:
    source, current = started(tmp_path, BASE)
    source.chmod(0)
    os.environ["PATRONI_NAME"] = "n1"  # with PATRONI_* set, a file that cannot be seen would read as env-only
    try:
        assert _as_unprivileged(lambda: _refused(current)), "reread() accepted a file its user cannot read"
    finally:
        del os.environ["PATRONI_NAME"]


def _refused(current: NodeConfig) -> bool:
    try:
        reread(current)
    except ConfigError as exc:
        return "cannot be read" in str(exc)
    return False


def _as_unprivileged(check: Callable[[], bool]) -> bool:
    """root reads any file: run the check in a child that became nobody."""
    if os.geteuid() != 0:
        return check()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            code = 0 if check() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    source, current = started(tmp_path, BASE)
    source.unlink()
    with pytest.raises(ConfigError, match="cannot be read"):
        reread(current)

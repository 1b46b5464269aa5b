"""The software fence's target check against real processes: only a running postgres postmaster of the
configured data directory is ever killed, with all its children (C90, the software driver)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from services.watchdogd.fence import Fence, data_dir_argument, read_pid, verify
from tests.support.waiting import wait_until


class Procs:
    """Processes started by one test, stopped by pid at its end."""

    def __init__(self, tmp_path: Path) -> None:
        self.postgres = tmp_path / "bin" / "postgres"  # a shell whose process name is "postgres"
        self.postgres.parent.mkdir()
        self.postgres.symlink_to("/bin/sh")
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], cwd: Path) -> psutil.Process:
        proc = subprocess.Popen(argv, cwd=cwd)
        self.started.append(proc)
        return psutil.Process(proc.pid)

    def fake_postmaster(self, cwd: Path, *extra: str, children: int = 0) -> psutil.Process:
        script = "sleep 60 & " * children + "sleep 60; :"
        proc = self.start([str(self.postgres), "-c", script, *extra], cwd)
        # until exec() is done, the child still shows the test runner's name and command line; the kernel sets the
        # new name before the new command line, which reads as empty for a moment
        wait_until(lambda: proc.name() == "postgres" and proc.cmdline(), 5, what="the fake postmaster to exec")
        if children:
            wait_until(lambda: len(proc.children()) == children + 1, 5, what="the children to start")
        return proc

    def close(self) -> None:
        for proc in self.started:
            for child in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
                child.kill()
            proc.kill()
            proc.wait(5)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    yield p
    p.close()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def data_dir_with_pid(path: Path, pid: int | str) -> str:
    path.mkdir(exist_ok=True)
    (path / "postmaster.pid").write_text(f"{pid}\n{path}\n1700000000\n5432\n")
    return str(path)


def test_postmaster_pid_and_data_dir_argument_parsing(tmp_path: Path) -> None:
    assert read_pid(data_dir_with_pid(tmp_path / "a", 1234)) == 1234
    assert read_pid(data_dir_with_pid(tmp_path / "b", "garbage")) is None
    assert read_pid(str(tmp_path / "none")) is None
    assert data_dir_argument(["postgres", "-D", "/d", "-p", "5"]) == "/d"
    assert data_dir_argument(["postgres", "-D/d"]) == "/d"
    assert data_dir_argument(["postgres", "-p", "5"]) is None


def test_a_process_that_is_not_postgres_is_never_killed(tmp_path: Path, procs: Procs) -> None:
    data = tmp_path / "data"
    sleeper = procs.start(["sleep", "60"], cwd=tmp_path)
    for pid in (sleeper.pid, os.getpid()):  # a stranger, and this very test process
        fence = Fence(data_dir_with_pid(data, pid))
        result = fence.fire()
        assert (result.pid, result.killed) == (None, ())
        assert "not a PostgreSQL postmaster" in result.detail
        assert psutil.pid_exists(pid) and not gone(pid)


def test_a_postgres_of_another_data_dir_is_never_killed(tmp_path: Path, procs: Procs) -> None:
    data, other = tmp_path / "data", tmp_path / "other"
    other.mkdir()
    by_cwd = procs.fake_postmaster(other)
    by_arg = procs.fake_postmaster(tmp_path, "-D", str(other))
    relative = procs.fake_postmaster(tmp_path, "-D", "data")  # a relative -D proves nothing
    for proc in (by_cwd, by_arg, relative):
        result = Fence(data_dir_with_pid(data, proc.pid)).fire()
        assert result.pid is None and "not the postmaster of" in result.detail
        assert not gone(proc.pid)


def test_a_stale_postmaster_pid_kills_nothing(tmp_path: Path, procs: Procs) -> None:
    dead = procs.start(["true"], cwd=tmp_path)
    procs.started[-1].wait(5)
    result = Fence(data_dir_with_pid(tmp_path / "data", dead.pid)).fire()
    assert result.pid is None
    assert Fence(str(tmp_path / "empty")).fire().detail.startswith("no postmaster.pid")


def test_the_postmaster_of_the_data_dir_dies_with_all_its_children(tmp_path: Path, procs: Procs) -> None:
    data = tmp_path / "data"
    data.mkdir()
    postmaster = procs.fake_postmaster(data, children=2)
    children = [c.pid for c in postmaster.children(recursive=True)]
    bystander = procs.fake_postmaster(data)  # same name and cwd, but postmaster.pid does not name it
    result = Fence(data_dir_with_pid(data, postmaster.pid)).fire()
    assert result.pid == postmaster.pid
    assert sorted(result.killed) == sorted([postmaster.pid, *children])
    wait_until(lambda: all(gone(pid) for pid in [postmaster.pid, *children]), 5, what="the fenced processes to die")
    assert not gone(bystander.pid)


def test_the_data_dir_can_also_be_recognised_by_its_dash_d_argument(tmp_path: Path, procs: Procs) -> None:
    data = tmp_path / "data"
    data.mkdir()
    postmaster = procs.fake_postmaster(tmp_path, "-D", str(data))
    proc, why = verify(postmaster.pid, str(data))
    assert proc is not None and proc.pid == postmaster.pid, why


def test_unusable_reasons(tmp_path: Path, procs: Procs) -> None:
    assert "not configured" in (Fence(None).unusable_reason() or "")
    data = tmp_path / "data"
    data.mkdir()
    owner = os.stat(data).st_uid
    assert Fence(str(data), euid=lambda: 0).unusable_reason() is None
    assert Fence(str(data), euid=lambda: owner).unusable_reason() is None
    assert Fence(str(data / "not" / "yet"), euid=lambda: owner).unusable_reason() is None  # its parent decides
    stranger = Fence(str(data), euid=lambda: owner + 4321).unusable_reason()
    assert stranger is not None and f"belongs to uid {owner}" in stranger

    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    postmaster = procs.fake_postmaster(data)
    data_dir_with_pid(data, postmaster.pid)
    denied = Fence(str(data), euid=lambda: owner + 4321, kill=refuse).unusable_reason()
    assert denied is not None and f"may not signal PostgreSQL (pid {postmaster.pid})" in denied
    # a running postmaster we may signal makes the fence usable, whoever owns the directory
    assert Fence(str(data), euid=lambda: owner + 4321).unusable_reason() is None

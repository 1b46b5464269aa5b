"""Running programs as the PostgreSQL user and cleaning up after them, always by pid (other clusters may run
on this machine: never by process name)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from tests.support.ports import free_port
from tests.support.postgres import is_root, make_shared_tmpdir, pg_bin_dir, run_as_pg


def pg_user_popen_kwargs() -> dict[str, Any]:
    """subprocess.Popen arguments that run the child itself as postgres when we are root (no runuser wrapper
    process in between, so the Popen pid is the program's pid and can be signalled directly)."""
    if not is_root():
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def pg_user_env(home: str | Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    name = pwd.getpwnam("postgres").pw_name if is_root() else pwd.getpwuid(os.getuid()).pw_name
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "USER": name,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    env.update(extra or {})
    return env


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; reaps the child."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def postmaster_pid(data_dir: str | Path) -> int | None:
    """The live postmaster of this data directory, from its postmaster.pid (checked against the process table)."""
    try:
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
        pid, start = int(lines[0]), int(lines[2])
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or abs(proc.create_time() - start) > 3:
            return None
        return pid
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def stop_postmaster(data_dir: str | Path, timeout: float = 10.0) -> None:
    """Immediate shutdown of the postmaster of `data_dir` by pid; pg_ctl stop -m immediate as a fallback."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or postmaster_pid(data_dir) != pid:
            return
        time.sleep(0.05)
    run_as_pg([f"{pg_bin_dir()}/pg_ctl", "stop", "-D", str(data_dir), "-m", "immediate", "-w", "-t", "10"])


@contextlib.contextmanager
def trust_primary(prefix: str) -> Iterator[int]:
    """A throwaway primary on 127.0.0.1 with trust authentication and fsync off; yields its port, stops it at
    the end and removes its directory."""
    base = make_shared_tmpdir(prefix)
    data, port = base / "data", free_port()
    bindir = pg_bin_dir()
    init = run_as_pg([f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
    assert init.returncode == 0, init.stderr
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = run_as_pg([f"{bindir}/pg_ctl", "start", "-D", str(data), "-w", "-t", "30", "-l", str(base / "log"),
                         "-o", options])  # fmt: skip
    assert started.returncode == 0, started.stderr + started.stdout
    try:
        yield port
    finally:
        stop_postmaster(data)
        shutil.rmtree(base, ignore_errors=True)

"""The software fence: on hosts without a watchdog device, watchdogd itself kills this node's PostgreSQL
(SIGKILL to the postmaster and all its children) when the brain's keepalives stop.

The target is only ever the postmaster named by <data_dir>/postmaster.pid, and only once psutil confirms
that the pid is a running postgres postmaster of that very data directory.

psutil is imported when the fence is armed (Fence.prepare()), not at start: a watchdogd that never arms the
software fence (watchdog off, or a device) never loads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

POSTMASTER_NAMES = ("postgres", "postmaster")


def read_pid(data_dir: str) -> int | None:
    """The first line of postmaster.pid, or None."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="ascii", errors="replace") as f:
            first = f.readline().strip()
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _same_path(a: str | None, b: str) -> bool:
    return a is not None and os.path.isabs(a) and os.path.realpath(a) == os.path.realpath(b)


def data_dir_argument(cmdline: list[str]) -> str | None:
    """The value of postgres's -D option (`-D dir` or `-Ddir`), if any."""
    for i, arg in enumerate(cmdline):
        if arg == "-D" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith("-D") and len(arg) > 2:
            return arg[2:]
    return None


def verify(pid: int, data_dir: str) -> tuple[psutil.Process | None, str]:
    """The process if `pid` is a running postgres postmaster of `data_dir`; otherwise None and why not."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None, f"pid {pid} has exited"
        name = proc.name()
        if name not in POSTMASTER_NAMES:
            return None, f"pid {pid} is {name!r}, not a PostgreSQL postmaster"
        try:
            cwd: str | None = proc.cwd()
        except psutil.AccessDenied:
            cwd = None
        if _same_path(cwd, data_dir) or _same_path(data_dir_argument(proc.cmdline()), data_dir):
            return proc, ""
        return None, f"pid {pid} is a postgres process, not the postmaster of {data_dir}"
    except psutil.NoSuchProcess:
        return None, f"pid {pid} is not running"
    except psutil.AccessDenied:
        return None, f"pid {pid} cannot be inspected"


@dataclass(frozen=True)
class FenceResult:
    pid: int | None  # the postmaster killed, or None
    killed: tuple[int, ...] = ()  # every pid signalled, the postmaster first
    detail: str = ""  # why nothing (or not everything) was killed


class Fence:
    """Kills the postmaster of one data directory; `euid` and `kill` are injectable for tests."""

    def __init__(
        self,
        data_dir: str | None,
        *,
        euid: Callable[[], int] = os.geteuid,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self.data_dir = data_dir or None
        self._euid = euid
        self._kill = kill

    def prepare(self) -> None:
        """Load what firing needs now, so that firing does not wait for an import."""
        import psutil  # noqa: F401

    def target(self) -> tuple[psutil.Process | None, str]:
        if not self.data_dir:
            return None, "no data directory"
        pid = read_pid(self.data_dir)
        if pid is None:
            return None, f"no postmaster.pid in {self.data_dir}"
        return verify(pid, self.data_dir)

    def unusable_reason(self) -> str | None:
        """Why this fence could not kill PostgreSQL, or None when it could."""
        if not self.data_dir:
            return "postgresql.data_dir is not configured: the software fence has nothing to guard"
        uid = self._euid()
        if uid == 0:
            return None
        proc, _ = self.target()
        if proc is not None:
            try:
                self._kill(proc.pid, 0)
                return None
            except PermissionError:
                return f"watchdogd (uid {uid}) may not signal PostgreSQL (pid {proc.pid})"
            except ProcessLookupError:
                pass
        path = self.data_dir
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        owner = os.stat(path).st_uid
        if owner != uid:
            return f"watchdogd runs as uid {uid} but {path} belongs to uid {owner}: it could not signal PostgreSQL"
        return None

    def fire(self) -> FenceResult:
        """SIGSTOP the postmaster (no new children), collect its children, then SIGKILL them all."""
        import psutil

        proc, why = self.target()
        if proc is None:
            return FenceResult(None, (), why)
        try:
            proc.suspend()
        except psutil.Error:
            pass
        try:
            children = proc.children(recursive=True)
        except psutil.Error:
            children = []
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            return FenceResult(None, (), f"pid {proc.pid} exited before it could be killed")
        except psutil.AccessDenied:
            return FenceResult(None, (), f"no permission to kill pid {proc.pid}")
        killed = [proc.pid]
        for child in children:
            try:
                child.kill()
                killed.append(child.pid)
            except psutil.Error:
                pass
        return FenceResult(proc.pid, tuple(killed))

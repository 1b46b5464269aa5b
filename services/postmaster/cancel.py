"""Cancelling the long operation in progress (pg.cancel): a forced reinitialize cancels it first (D32, A39).

The worker runs each operation inside `scope()`; the programs it starts there (pg_basebackup, pg_ctl, pg_rewind,
initdb...) are tracked, and `cancel()` terminates their process groups. Waits written in Python end through
Progress.stopping(), which also answers True once the operation was cancelled. Programs run by other threads
(the monitor's pg_controldata) are never tracked nor cancelled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from typing import Any


class Cancellation:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._procs: set[subprocess.Popen[str]] = set()
        self._local = threading.local()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """In the worker thread, around one operation."""
        self._cancelled.clear()
        self._local.active = True
        try:
            yield
        finally:
            self._local.active = False

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            procs = list(self._procs)
        for proc in procs:
            _terminate(proc)

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def in_scope(self) -> bool:
        """Whether this thread runs an operation (only its programs and waits are cancelled)."""
        return bool(getattr(self._local, "active", False))

    def communicate(self, cmd: Sequence[str], timeout: float | None, **popen: Any) -> tuple[int, str, str]:
        """subprocess.run(cmd, timeout=...) that cancel() can end; raises subprocess.TimeoutExpired, OSError."""
        tracked = self.in_scope()
        proc: subprocess.Popen[str] = subprocess.Popen(list(cmd), text=True, start_new_session=True, **popen)
        if tracked:
            with self._lock:
                self._procs.add(proc)
                if self._cancelled.is_set():
                    _terminate(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _terminate(proc, signal.SIGKILL)
            proc.communicate()
            raise
        finally:
            if tracked:
                with self._lock:
                    self._procs.discard(proc)
        return proc.returncode, out or "", err or ""


def _terminate(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    """The program's whole process group (pg_basebackup's WAL streaming child too)."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, sig)


CANCEL = Cancellation()

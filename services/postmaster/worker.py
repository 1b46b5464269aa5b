"""The worker thread that runs long operations one at a time, and how they report back to the loop."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable

from services.postmaster.cancel import CANCEL
from shared.runtime import Loop, start_thread

log = logging.getLogger(__name__)


class Worker:
    """One thread, one job at a time."""

    def __init__(self, name: str = "postmaster-worker") -> None:
        self._name = name
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()

    def start(self) -> None:
        start_thread(self._name, self._run)

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("worker job failed")

    def stop(self) -> None:
        self._jobs.put(None)


class LoopProgress:
    """operations.Progress for the worker thread: every report runs in the loop's thread (call_from_thread)."""

    def __init__(self, loop: Loop, on_phase: Callable[[str | None], None], on_intent: Callable[[bool], None]) -> None:
        self._loop = loop
        self._on_phase = on_phase
        self._on_intent = on_intent

    def phase(self, state: str | None) -> None:
        self._loop.call_from_thread(lambda: self._on_phase(state))

    def intend(self, running: bool) -> None:
        self._loop.call_from_thread(lambda: self._on_intent(running))

    def stopping(self) -> bool:
        """The controller exits, or the operation was cancelled (pg.cancel): waits end early."""
        return self._loop.stopping or (CANCEL.cancelled() and CANCEL.in_scope())

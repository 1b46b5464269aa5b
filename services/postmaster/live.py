"""The short requests that need SQL: pg.set_sync (C74) and pg.sync_slots (C29-C34), answered from the SQL thread
(deferred replies, so the loop never waits), and the slot resync after every start of PostgreSQL (C29).

One SQL thread runs these jobs one at a time; the advancer thread moves logical slots on a replica (C32).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from services.postmaster import pg
from services.postmaster.deferred import DEFERRED, Pending
from services.postmaster.slotplan import DesiredSlots, parse_sync_slots
from services.postmaster.slots import Advancer, apply_slots
from services.postmaster.sql import Session, SqlError
from services.postmaster.standby_names import parse_set_sync
from services.postmaster.worker import Worker
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError
from shared.runtime import start_thread

if TYPE_CHECKING:
    from services.postmaster.main import Controller
    from services.postmaster.settings import Settings

log = logging.getLogger(__name__)

VISIBLE_TIMEOUT_S = 2.0  # how long pg.set_sync waits for PostgreSQL to show the new value
VISIBLE_POLL_S = 0.01
_NOTHING: dict[str, Any] = {"created": [], "dropped": [], "advanced": []}


class Live:
    def __init__(self, controller: Controller) -> None:
        self._c = controller
        self._sql = Worker("postmaster-sql")
        self.advancer = Advancer(
            controller.settings, lambda stale: controller.loop.call_from_thread(lambda: self._stale(stale))
        )
        self._synced_start: str | None = None  # the postmaster start time the desired slots were applied for
        self._resyncing = False

    @property
    def _settings(self) -> Settings:
        return self._c.settings  # a reload may replace them (D31)

    def start(self) -> None:
        self._sql.start()
        start_thread("postmaster-slots", self.advancer.run)

    def stop(self) -> None:
        self.advancer.stop()
        self._sql.stop()

    def _stale(self, names: frozenset[str]) -> None:
        """From the advancer: the slots to copy again (shown in slots_to_copy)."""
        self._c.memory = dataclasses.replace(self._c.memory, recopy=tuple(sorted(names)))
        self._c.monitor.wake.set()

    def copied(self, names: list[str]) -> None:
        """In the worker thread, after pg.copy_slots: these slots are fresh copies."""
        self.advancer.forget(names)
        self._c.loop.call_from_thread(
            lambda: self._stale(frozenset(n for n in self._c.memory.recopy if n not in names))
        )

    def _reply_later(self, req: Request, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run `work` in the SQL thread and answer with its result; SqlError becomes `unavailable`."""
        pending = self._c.server.defer(req.id, req.op)

        def job() -> None:
            body: dict[str, Any] | None = None
            error: tuple[ErrorCode, str] | None = None
            try:
                body = work()
            except OpError as exc:
                error = (exc.code, exc.message)
            except SqlError as exc:
                error = (ErrorCode.UNAVAILABLE, f"{req.op}: {exc}")
            except Exception as exc:
                log.exception("%s failed", req.op)
                error = (ErrorCode.INTERNAL, f"{req.op} failed: {type(exc).__name__}")
            self._c.loop.call_from_thread(lambda: self._answer(pending, body, error))

        self._sql.submit(job)
        return DEFERRED

    def _answer(self, pending: Pending, body: dict[str, Any] | None, error: tuple[ErrorCode, str] | None) -> None:
        self._c.server.answer(pending, body, error)
        self._c.monitor.wake.set()

    # ---- pg.set_sync --------------------------------------------------------------------------------------------

    def set_sync(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        try:
            sync = parse_set_sync(body)
        except ValueError as exc:
            raise OpError(ErrorCode.INVALID_BODY, f"pg.set_sync: {exc}")
        self._c.managed.set_sync(sync)
        log.info("synchronous_standby_names: %s", "(none)" if sync.value is None else repr(sync.value))
        op = self._c.memory.operation
        if self._c.busy and op:
            self._c.mark_config_changed()
            raise OpError(ErrorCode.BUSY, f"{op['name']} ({op['id']}) is in progress: the value applies when it ends")
        if pg.find_postmaster(self._settings) is None:
            raise OpError(ErrorCode.UNAVAILABLE, "PostgreSQL is not running: the value applies when it starts")
        self._c.apply_config()
        expected = sync.value or ""
        return self._reply_later(req, lambda: {"value": self._wait_visible(expected)})

    def _wait_visible(self, expected: str) -> str:
        """In the SQL thread: SHOW synchronous_standby_names every 10 ms until it is `expected` (2 s at most)."""
        session = Session(self._settings.local_conn_params(), timeout=VISIBLE_TIMEOUT_S, application_name="haven")
        deadline = time.monotonic() + VISIBLE_TIMEOUT_S
        try:
            while True:
                shown = str(session.query("SHOW synchronous_standby_names")[0]["synchronous_standby_names"])
                if shown == expected:
                    return shown
                if time.monotonic() >= deadline:
                    raise OpError(
                        ErrorCode.UNAVAILABLE,
                        f"PostgreSQL still shows synchronous_standby_names = {shown!r}, not {expected!r}",
                    )
                time.sleep(VISIBLE_POLL_S)
        finally:
            session.close()

    # ---- pg.sync_slots ------------------------------------------------------------------------------------------

    def sync_slots(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        try:
            desired = parse_sync_slots(body)
        except ValueError as exc:
            raise OpError(ErrorCode.INVALID_BODY, f"pg.sync_slots: {exc}")
        self._c.managed.set_slots(desired)
        self._c.memory = dataclasses.replace(self._c.memory, wanted_logical=desired.logical_names)
        if self._c.busy:
            self._c.mark_config_changed()  # hot_standby_feedback may change; slots follow after the operation
            return {**_NOTHING, "deferred": True}
        if pg.find_postmaster(self._settings) is None:
            return {**_NOTHING, "deferred": True}
        self._c.apply_config()  # hot_standby_feedback (C32)
        return self._reply_later(req, lambda: apply_slots(self._settings, desired, self.advancer))

    def on_observation(self) -> None:
        """C29: after every start of PostgreSQL (a new postmaster start time), the desired slots again."""
        sql = self._c.obs.sql
        desired = self._c.managed.get().slots
        if sql is None or desired is None or self._c.busy or self._resyncing:
            return
        if sql.postmaster_start_time == self._synced_start:
            return
        self._resyncing = True
        start = sql.postmaster_start_time
        self._sql.submit(lambda: self._resync(start, desired))

    def _resync(self, start: str, desired: DesiredSlots) -> None:
        """In the SQL thread."""
        done = False
        try:
            result = apply_slots(self._settings, desired, self.advancer)
            done = True
            if any(result.values()):
                log.info("replication slots after the start: %s", result)
        except SqlError as exc:
            log.warning("applying the replication slots failed: %s", exc)
        self._c.loop.call_from_thread(lambda: self._resynced(start, done))

    def _resynced(self, start: str, done: bool) -> None:
        self._resyncing = False
        if done:
            self._synced_start = start
            self._c.monitor.wake.set()

"""The postmaster controller's shell: the ROUTER serving pg.* requests, the PUB of pg_state, the monitor thread
that observes PostgreSQL and the worker thread that runs long operations one at a time.

The loop never runs SQL nor waits on a program: threads hand their results back with Loop.call_from_thread.
It never starts or stops PostgreSQL on its own: only requests do (docs/protocol.md, "postmaster").
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from services.postmaster import files, pg, render
from services.postmaster.cancel import CANCEL
from services.postmaster.core import (
    DataDir,
    Memory,
    Observation,
    finished_operation,
    new_operation,
    pg_state,
    remember,
    state_key,
)
from services.postmaster.deferred import DeferringRouter
from services.postmaster.live import Live
from services.postmaster.managed import ManagedStore
from services.postmaster.observe import Monitor, observe_once
from services.postmaster.operations import OperationFailed, Operations
from services.postmaster.pending import changed_postmaster_settings
from services.postmaster.render import Upstream
from services.postmaster.requests import Job, Requests
from services.postmaster.settings import NEEDS_NODE_RESTART, Settings
from services.postmaster.worker import LoopProgress, Worker
from shared import log as haven_log
from shared.config import ConfigError
from shared.config.reread import reread
from shared.protocol.endpoints import Service, Topic, pub_path, router_path
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError
from shared.protocol.ops import PG
from shared.protocol.transport import Publisher, SocketInUse
from shared.runtime import Loop, Runtime, start_thread

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0

# The state shown while each long operation runs (C91); None: derived from what the monitor sees.
_PHASES: dict[str, str | None] = {
    "pg.bootstrap": "initializing new cluster",
    "pg.clone": "creating replica",
    "pg.start": "starting",
    "pg.stop": "stopping",
    "pg.restart": "restarting",
    "pg.promote": None,
    "pg.demote": "stopping",
    "pg.follow": None,
    "pg.reinitialize": "creating replica",
    "pg.copy_slots": None,
}
_WRITES_PGDATA = frozenset({"pg.bootstrap", "pg.clone", "pg.reinitialize"})  # no pg_controldata meanwhile (C9)


class Controller:
    def __init__(self, runtime: Runtime, loop: Loop) -> None:
        self.loop = loop
        self.config = runtime.config
        self.settings = Settings.from_config(runtime.config, runtime.run_dir)
        self.dynamic: dict[str, Any] = files.read_dynamic(self.settings) or copy.deepcopy(
            dict(self.settings.bootstrap_dcs)
        )
        self._dynamic_version = 0
        self._job_dynamic_version = 0
        self._desired = self._desired_parameters()
        self._busy = False
        self._pending = False
        self._last_key: tuple[Any, ...] | None = None
        self.progress = LoopProgress(loop, self.set_phase, self.set_intent)
        self.managed = ManagedStore(self.settings)
        following = files.read_following(self.settings)
        slots = self.managed.get().slots
        self.memory = Memory(
            following=following.name if following else None, wanted_logical=slots.logical_names if slots else ()
        )
        self.server = DeferringRouter(
            loop.ctx,
            router_path(runtime.run_dir, Service.POSTMASTER),
            Requests(self).handlers(),
            PG,
            group=runtime.group,
            allowed_uids=runtime.trusted_uids,
        )
        try:
            self.publisher = Publisher(
                loop.ctx,
                pub_path(runtime.run_dir, Service.POSTMASTER),
                group=runtime.group,
                allowed_uids=runtime.trusted_uids,
            )
        except Exception:
            self.server.close()
            raise
        self.binary_version = pg.binary_version(self.settings)
        self.obs: Observation = observe_once(self.settings)
        self.memory = remember(self.memory, self.obs)
        self.monitor = Monitor(self.settings, lambda obs: loop.call_from_thread(lambda: self.on_observation(obs)))
        self.worker = Worker()
        self.live = Live(self)

    def start(self) -> None:
        self.loop.add_reader(self.server.socket, self.server.process)
        self.loop.call_later(HEARTBEAT_S, self.publish, repeat=True)
        start_thread("postmaster-monitor", self.monitor.run)
        self.worker.start()
        self.live.start()
        log.info("serving %s; PostgreSQL %s", self.server.path, self._describe())
        self.publish()

    def _describe(self) -> str:
        state = self.state()
        return f"{state['state']} as {state['role']} (data directory {state['data_dir']})"

    def close(self) -> None:
        op = self.memory.operation
        if self._busy and op:
            log.warning(
                "exiting while %s (%s) runs: it is abandoned; PostgreSQL is left as it is", op["name"], op["id"]
            )
        self.monitor.stop()
        self.worker.stop()
        self.live.stop()
        self.publisher.close()
        self.server.close()

    # ---- state ----------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return pg_state(
            self.settings.name, self.obs, self.memory, binary_version=self.binary_version, pending=self._pending
        )

    def publish(self) -> None:
        state = self.state()
        self._last_key = state_key(state)
        self.publisher.publish(Topic.PG_STATE, state)

    def _publish_if_changed(self) -> None:
        if state_key(self.state()) != self._last_key:
            self.publish()

    def on_observation(self, obs: Observation) -> None:
        if obs.order < self.obs.order:
            return  # a reading that started before the one we have
        was_running = self.obs.running
        self.obs = obs
        self.memory = remember(self.memory, obs)
        self._pending = self._compute_pending()
        if was_running and not obs.running and not self._busy:
            log.warning("PostgreSQL is no longer running (state %s)", self.state()["state"])
        self._publish_if_changed()
        self.live.on_observation()

    def _desired_parameters(self) -> dict[str, Any]:
        section = self.dynamic.get("postgresql")
        return render.effective_parameters(self.settings, section if isinstance(section, dict) else {})[0]

    def _compute_pending(self) -> bool:
        """C45: a postmaster-context parameter differs from its running value (or PostgreSQL says so)."""
        sql = self.obs.sql
        if not self.obs.running:
            return False
        if sql is None:
            return self._pending
        changed = changed_postmaster_settings(self._desired, sql.postmaster_settings)
        return sql.pending_restart or bool(changed)

    def set_phase(self, phase: str | None) -> None:
        if self._busy:
            self.memory = dataclasses.replace(self.memory, phase=phase)
            self._publish_if_changed()

    def set_intent(self, running: bool) -> None:
        self.memory = dataclasses.replace(self.memory, intended_running=running)

    @property
    def busy(self) -> bool:
        """A long operation runs."""
        return self._busy

    # ---- configuration --------------------------------------------------------------------------------------------

    def apply_config(self) -> bool:
        """Rewrite the files (with haven's managed values) and reload when they changed."""
        return self._apply_config()

    def mark_config_changed(self) -> None:
        """A managed value changed during an operation: rewrite the files when it ends."""
        self._dynamic_version += 1

    def _apply_config(self, *, force_reload: bool = False) -> bool:
        """Rewrite the files of an initialized PGDATA for the current role; reload a running instance when they
        changed (or when asked to). Returns whether PostgreSQL was reloaded."""
        if files.data_dir_state(self.settings) != DataDir.INITIALIZED:
            return False
        section = self.dynamic.get("postgresql")
        try:
            files.write_dynamic(self.settings, self.dynamic)
            primary = not files.is_standby(self.settings)
            upstream = None if primary else files.read_following(self.settings)
            written = files.write_config(
                self.settings,
                section if isinstance(section, dict) else {},
                primary=primary,
                upstream=upstream,
                overrides=self.managed.overrides(self.dynamic, primary=primary),
            )
        except OSError as exc:
            log.error("cannot write the configuration: %s", exc)
            raise OpError(ErrorCode.INTERNAL, f"cannot write the configuration: {exc.strerror}")
        pid_file = pg.find_postmaster(self.settings)
        if pid_file is None or not (written.changed or force_reload):
            return False
        pg.send_reload(pid_file.pid)
        log.info("reloaded PostgreSQL (pid %d)", pid_file.pid)
        self.monitor.wake.set()
        return True

    def configure(self, dynamic: dict[str, Any]) -> dict[str, Any]:
        """pg.configure with a valid body."""
        self.dynamic = copy.deepcopy(dynamic)
        self._dynamic_version += 1
        self._desired = self._desired_parameters()
        if self._busy:
            return {"reloaded": False, "pending_restart": self._pending, "deferred": True}
        reloaded = self._apply_config()
        self._pending = self._compute_pending()
        self._publish_if_changed()
        return {"reloaded": reloaded, "pending_restart": self._pending}

    def reload(self) -> dict[str, Any]:
        """pg.reload: re-read the node's configuration (D31), rewrite the files and reload, even when nothing
        changed (C46)."""
        self._require_idle()
        if pg.find_postmaster(self.settings) is None:
            raise OpError(ErrorCode.PRECONDITION_FAILED, "PostgreSQL is not running")
        self.reread_config()
        reloaded = self._apply_config(force_reload=True)
        return {"reloaded": reloaded, "pending_restart": self._compute_pending()}

    def reread_config(self) -> None:
        """D31: the postgresql section again, from the node's configuration file and environment. What PostgreSQL's
        files are made of (parameters, pg_hba, pg_ident, recovery settings, use_slots, use_pg_rewind, the
        remove_data_directory flags, timeouts) is taken at once; where PostgreSQL listens, its directories, binaries
        and credentials are what the monitor and the open sessions use, and change only when the node restarts."""
        try:
            config = reread(self.config)
        except ConfigError as exc:
            log.error("the configuration was not reloaded: %s", exc)
            return
        fresh = Settings.from_config(config, self.settings.run_dir)
        ignored = [f for f in NEEDS_NODE_RESTART if getattr(fresh, f) != getattr(self.settings, f)]
        if ignored:
            log.warning("not applied until the node restarts: %s changed", ", ".join(ignored))
        self.settings = dataclasses.replace(fresh, **{f: getattr(self.settings, f) for f in NEEDS_NODE_RESTART})
        self.config = config
        self._desired = self._desired_parameters()
        log.info("reloaded the configuration from %s", config.haven.get("source_config") or "the environment")

    # ---- long operations ------------------------------------------------------------------------------------------

    def _retried(self, req: Request) -> dict[str, Any] | None:
        op = self.memory.operation
        if op and op["id"] == req.id:
            return {"accepted": True, "operation": req.id}  # the same request again: idempotent
        return None

    def _require_idle(self) -> None:
        op = self.memory.operation
        if self._busy and op:
            raise OpError(ErrorCode.BUSY, f"{op['name']} ({op['id']}) is in progress")

    def _submit(self, name: str, req: Request, job: Job) -> dict[str, Any]:
        self.memory = dataclasses.replace(
            self.memory,
            operation=new_operation(req.id, name.removeprefix("pg."), time.time()),  # "bootstrap", as ha_loop reads it
            phase=_PHASES[name],
            failure=None,
            failure_at=None,
        )
        self._busy = True
        self.managed.hold(True)
        self._job_dynamic_version = self._dynamic_version
        if name in _WRITES_PGDATA:
            self.monitor.quiet.set()
        self.monitor.busy.set()
        self.monitor.wake.set()
        ops = Operations(self.settings, copy.deepcopy(self.dynamic), self.progress, self.managed)
        self.worker.submit(lambda: self._run_job(req.id, name, ops, job))
        log.info("%s (%s) accepted", name, req.id)
        self.publish()
        return {"accepted": True, "operation": req.id}

    def _run_job(self, op_id: str, name: str, ops: Operations, job: Job) -> None:
        """In the worker thread."""
        result: dict[str, Any] = {}
        error: str | None = None
        failure: str | None = None
        with CANCEL.scope():
            try:
                result = job(ops)
            except OperationFailed as exc:
                error, failure = exc.message, exc.state
            except Exception as exc:
                log.exception("%s (%s) failed", name, op_id)
                error = f"internal error: {type(exc).__name__}: {exc}"
            if CANCEL.cancelled():
                error = "cancelled" + (f": {error}" if error else "")
        obs: Observation | None = None
        following: Upstream | None = None
        try:  # the result arrives with a fresh reading, so that both are published together
            obs = observe_once(self.settings)
            following = files.read_following(self.settings)
        except Exception:
            log.exception("reading PostgreSQL's state after %s failed", name)
        self.loop.call_from_thread(lambda: self._finish(op_id, result, error, failure, obs, following))

    def _finish(
        self,
        op_id: str,
        result: dict[str, Any],
        error: str | None,
        failure: str | None,
        obs: Observation | None,
        following: Upstream | None,
    ) -> None:
        op = self.memory.operation
        if not op or op["id"] != op_id:
            return
        self._busy = False
        self.monitor.quiet.clear()
        self.monitor.busy.clear()
        self.managed.hold(False)
        self.managed.save()  # a clone or a rewind replaced PGDATA's copy
        if obs is not None and obs.order >= self.obs.order:
            self.obs = obs
        self.memory = dataclasses.replace(
            remember(self.memory, self.obs),
            operation=finished_operation(op, time.time(), error=error, result=result),
            phase=None,
            failure=failure,
            failure_at=(self.obs.running, self.obs.accepting) if failure else None,
            following=(following.name if following else None) if obs is not None else self.memory.following,
        )
        if error:
            log.error("%s (%s) failed: %s", op["name"], op_id, error)
        else:
            log.info("%s (%s) succeeded in %.3fs", op["name"], op_id, time.time() - float(op["started"]))
        if self._dynamic_version != self._job_dynamic_version:
            try:
                self._apply_config()  # a pg.configure arrived meanwhile
            except OpError:
                pass
        self._pending = self._compute_pending()
        self.publish()
        self.monitor.wake.set()

    def cancel(self) -> dict[str, Any]:
        """pg.cancel: end the long operation in progress (D32: a forced reinitialize cancels it first)."""
        op = self.memory.operation
        if not (self._busy and op):
            return {"cancelled": None}
        log.warning("cancelling %s (%s)", op["name"], op["id"])
        CANCEL.cancel()
        return {"cancelled": op["id"]}

    def long(self, name: str, req: Request, check: Callable[[], Job]) -> dict[str, Any]:
        """Run a long operation whose body is valid: refuse when busy, check preconditions (check() raises), submit."""
        if (accepted := self._retried(req)) is not None:
            return accepted
        self._require_idle()
        return self._submit(name, req, check())


def run(runtime: Runtime) -> int:
    os.umask(0o077)
    os.makedirs(runtime.run_dir, mode=0o750, exist_ok=True)
    loop = Loop()
    try:
        controller = Controller(runtime, loop)
    except SocketInUse as exc:
        log.error("%s", exc)
        loop.close()
        haven_log.shutdown()
        return 1
    loop.install_signal_handlers()
    controller.start()
    try:
        loop.run()
    finally:
        controller.close()
        loop.close()
        log.info("stopped; PostgreSQL is left as it is")
        haven_log.shutdown()
    return 0

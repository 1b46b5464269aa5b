"""The long operations, run one at a time in the worker thread. Each returns its result map or raises
OperationFailed with the message for pg_state.operation.error and the state to keep afterwards (C91)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from services.postmaster import files, pg, render
from services.postmaster.core import DataDir
from services.postmaster.managed import ManagedStore
from services.postmaster.render import Upstream
from services.postmaster.rewind import Outcome, Rewind
from services.postmaster.settings import Settings
from services.postmaster.sql import Session, SqlError

log = logging.getLogger(__name__)

STOP_MODE_OF_DEMOTE = {"offline": "fast", "graceful": "fast", "immediate": "immediate", "immediate-nolock": "immediate"}
_FIRST_POLL_S = 0.01
_MAX_POLL_S = 0.1


class OperationFailed(Exception):
    def __init__(self, message: str, state: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.state = state


class Progress(Protocol):
    """How an operation reports to the loop (thread-safe)."""

    def phase(self, state: str | None) -> None: ...

    def intend(self, running: bool) -> None: ...

    def stopping(self) -> bool: ...


class Operations:
    def __init__(
        self,
        settings: Settings,
        dynamic: Mapping[str, Any],
        progress: Progress,
        managed: ManagedStore | None = None,
    ) -> None:
        self.settings = settings
        self.dynamic = dynamic
        pg_section = dynamic.get("postgresql")
        self.dynamic_pg: Mapping[str, Any] = pg_section if isinstance(pg_section, Mapping) else {}
        self.progress = progress
        self.managed = managed

    # ---- building blocks ----------------------------------------------------------------------------------------

    def session(self) -> Session:
        return Session(self.settings.local_conn_params(), timeout=self.settings.pg_ctl_timeout)

    def in_recovery(self) -> bool:
        """Whether the running instance is a replica: asked of PostgreSQL, else from standby.signal."""
        session = Session(self.settings.local_conn_params(), timeout=2.0)
        try:
            return bool(session.query("SELECT pg_is_in_recovery() AS r")[0]["r"])
        except SqlError:
            return files.is_standby(self.settings)
        finally:
            session.close()

    def overrides(self, *, primary: bool) -> dict[str, Any]:
        return self.managed.overrides(self.dynamic, primary=primary) if self.managed is not None else {}

    def write_config(self, *, primary: bool, upstream: Upstream | None) -> files.WrittenConfig:
        controldata = {} if primary else pg.controldata(self.settings)
        return files.write_config(
            self.settings,
            self.dynamic_pg,
            primary=primary,
            upstream=upstream,
            controldata=controldata,
            overrides=self.overrides(primary=primary),
        )

    def start_postgres(self, *, primary: bool, upstream: Upstream | None, timeout: float | None = None) -> None:
        """Write the configuration, start detached, wait until it accepts connections (pg_ctl_timeout, or the
        given timeout when shorter: a primary that takes longer may be failed over, A34). PostgreSQL is left
        running when the wait ends."""
        written = self.write_config(primary=primary, upstream=upstream)
        pg.remove_stale_pid_file(self.settings)
        options = render.command_line_options(written.params)
        if self.settings.config_dir != self.settings.data_dir:
            options.append(f"--config_file={self.settings.conf_path}")
        offset = pg.log_offset(self.settings)
        self.progress.intend(True)
        started = time.time()
        try:
            pg.pg_ctl_start(self.settings, options)
        except pg.PgError as exc:
            raise OperationFailed(str(exc), "start failed")
        self.wait_ready(started, offset, timeout)

    def wait_ready(self, started: float, log_offset: int, timeout: float | None = None) -> None:
        """Until the postmaster says it accepts connections in postmaster.pid ("ready", or "standby" for a hot
        standby), as pg_isready and pg_ctl -w judge it; fails at once when it exits."""
        limit = self.settings.pg_ctl_timeout if timeout is None else min(timeout, self.settings.pg_ctl_timeout)
        deadline = time.monotonic() + limit
        delay, seen_pid = _FIRST_POLL_S, None
        while True:
            pid_file = pg.find_postmaster(self.settings)
            if pid_file is not None:
                seen_pid = pid_file.pid
                if pid_file.status in ("ready", "standby"):
                    log.info("PostgreSQL accepts connections %.3fs after the start", time.time() - started)
                    return
            elif seen_pid is not None or (
                time.time() - started > 1.0 and not pg.launched_since(self.settings, started)
            ):
                raise OperationFailed(self._start_error("PostgreSQL exited while starting", log_offset), "start failed")
            if time.monotonic() >= deadline or self.progress.stopping():
                message = f"PostgreSQL did not accept connections within {limit:.0f}s"
                raise OperationFailed(self._start_error(message, log_offset), "start failed")
            time.sleep(delay)
            delay = min(delay * 1.5, _MAX_POLL_S)

    def _start_error(self, message: str, log_offset: int) -> str:
        output = pg.log_since(self.settings, log_offset)
        lines = [line for line in output.splitlines() if line.strip()][-5:]
        return message + (": " + " | ".join(lines) if lines else "")

    def stop_postgres(self, mode: str, failed_state: str = "stop failed") -> bool:
        """Stop with pg_ctl; False when it was not running."""
        if pg.find_postmaster(self.settings) is None:
            self.progress.intend(False)
            return False
        self.progress.intend(False)
        limit = self.stop_timeout()
        try:
            pg.pg_ctl_stop(self.settings, mode, limit)
        except pg.PgError as exc:
            if limit is None or pg.find_postmaster(self.settings) is None:
                raise OperationFailed(str(exc), failed_state)
            log.warning("PostgreSQL did not stop within primary_stop_timeout (%.0fs): killing the postmaster", limit)
            if not pg.kill_postmaster(self.settings):
                raise OperationFailed(str(exc), failed_state)
        return True

    def stop_timeout(self) -> float | None:
        """A36: primary_stop_timeout bounds a stop in synchronous mode (SIGKILL after it); None: pg_ctl_timeout."""
        if str(self.dynamic.get("synchronous_mode")).lower() not in ("true", "on", "quorum", "1", "yes"):
            return None
        value = self.dynamic.get("primary_stop_timeout", self.dynamic.get("master_stop_timeout"))
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return None
        return float(value)

    def require_initialized(self) -> None:
        if files.data_dir_state(self.settings) != DataDir.INITIALIZED:
            raise OperationFailed(f"the data directory {self.settings.data_dir} is not initialized")

    def start_replica(self, upstream: Upstream | None) -> dict[str, Any]:
        """Start the stopped instance as a replica of `upstream`; of a leader only once it is known not to have
        diverged from it, or after pg_rewind (C22-C25). Result: {"rewind": outcome} when the check ran."""
        outcome = Rewind(self.settings, self.dynamic_pg).ensure_not_diverged(upstream) if upstream else None
        result: dict[str, Any] = {} if outcome is None else {"rewind": str(outcome)}
        if outcome == Outcome.REMOVED:
            self.progress.intend(False)
            return result
        try:
            self.start_postgres(primary=False, upstream=upstream)
        except OperationFailed as exc:
            if outcome in (Outcome.FAILED, Outcome.NOT_POSSIBLE):
                raise OperationFailed(f"{exc.message} (the data directory diverged: rewind {outcome})", exc.state)
            raise
        return result

    # ---- operations ---------------------------------------------------------------------------------------------

    def start(self, role: str, upstream: Upstream | None, timeout: float | None = None) -> dict[str, Any]:
        self.require_initialized()
        primary = role == "primary"
        if pg.find_postmaster(self.settings) is not None:
            if self.in_recovery() == primary:
                raise OperationFailed(f"PostgreSQL already runs as a {'replica' if primary else 'primary'}")
            return {"already_running": True}
        if not primary:
            return self.start_replica(upstream)
        self.start_postgres(primary=True, upstream=None, timeout=timeout)
        return {}

    def stop(self, mode: str, checkpoint: bool = False) -> dict[str, Any]:
        """checkpoint: a switchover's graceful stop runs a CHECKPOINT first, so the shutdown is short (A22)."""
        if checkpoint and pg.find_postmaster(self.settings) is not None:
            self._checkpoint()
        return {} if self.stop_postgres(mode) else {"already_stopped": True}

    def restart(self, upstream: Upstream | None, timeout: float | None = None) -> dict[str, Any]:
        self.require_initialized()
        primary = not files.is_standby(self.settings)
        if pg.find_postmaster(self.settings) is not None:
            primary = not self.in_recovery()
        if not primary and upstream is None:
            upstream = files.read_following(self.settings)
        self.stop_postgres("fast", "restart failed")
        try:
            self.start_postgres(primary=primary, upstream=None if primary else upstream, timeout=timeout)
        except OperationFailed as exc:
            raise OperationFailed(exc.message, "restart failed")
        return {"role": "primary" if primary else "replica"}

    def promote(self) -> dict[str, Any]:
        """pg_promote without waiting, then pg_is_in_recovery() every 10 ms (pg_ctl would poll every 100 ms)."""
        if pg.find_postmaster(self.settings) is None:
            raise OperationFailed("PostgreSQL is not running")
        session = self.session()
        started = time.monotonic()
        try:
            if not session.query("SELECT pg_is_in_recovery() AS r")[0]["r"]:
                return {"already_primary": True}
            session.query("SELECT pg_promote(wait => false)")
            deadline = started + self.settings.pg_ctl_timeout
            while session.query("SELECT pg_is_in_recovery() AS r")[0]["r"]:
                if time.monotonic() >= deadline:
                    raise OperationFailed(f"not promoted within {self.settings.pg_ctl_timeout:.0f}s")
                time.sleep(0.01)
        except SqlError as exc:
            raise OperationFailed(f"promote failed: {exc}")
        finally:
            session.close()
        elapsed = time.monotonic() - started
        log.info("promoted in %.3fs", elapsed)
        self._rewrite_running(primary=True, upstream=None)
        return {"duration": round(elapsed, 3)}

    def _rewrite_running(self, *, primary: bool, upstream: Upstream | None) -> bool:
        written = files.write_config(
            self.settings,
            self.dynamic_pg,
            primary=primary,
            upstream=upstream,
            overrides=self.overrides(primary=primary),
        )
        pid_file = pg.find_postmaster(self.settings)
        if pid_file is not None and written.changed:
            pg.send_reload(pid_file.pid)
        return written.changed

    def demote(self, mode: str, upstream: Upstream | None) -> dict[str, Any]:
        """Stop in the mode's way (A22), then start as a replica of `upstream`."""
        self.require_initialized()
        if pg.find_postmaster(self.settings) is not None:
            self.progress.phase("stopping")
            if mode == "graceful":
                self._checkpoint()
            self.stop_postgres(STOP_MODE_OF_DEMOTE[mode])
        self.progress.phase("starting")
        return self.start_replica(upstream)

    def _checkpoint(self) -> None:
        session = self.session()
        try:
            session.query("CHECKPOINT")
        except SqlError as exc:
            log.warning("CHECKPOINT before the stop failed: %s", exc)
        finally:
            session.close()

    def follow(self, upstream: Upstream | None) -> dict[str, Any]:
        """A running replica gets its new primary_conninfo with a reload (PG 13+); a stopped one is started."""
        self.require_initialized()
        if pg.find_postmaster(self.settings) is not None:
            if not self.in_recovery():
                raise OperationFailed("PostgreSQL runs as a primary: demote it instead")
            self._rewrite_running(primary=False, upstream=upstream)
            return self.check_running_replica(upstream)
        self.progress.phase("starting")
        return {"restarted": True, **self.start_replica(upstream)}

    def check_running_replica(self, upstream: Upstream | None) -> dict[str, Any]:
        """C22: a running replica that now follows a new leader may have received WAL past the leader's switchpoint
        (an asynchronous replica of a primary that died): then it cannot stream from it. It stops, is rewound or
        removed (C23-C25) and starts again. Result {"rewind": outcome} when the check ran; "unknown" (the leader was
        unreachable or still promoting) makes ha_loop ask to follow again, which repeats the check."""
        rewind = Rewind(self.settings, self.dynamic_pg)
        if upstream is None or not rewind.enabled or self.dynamic.get("standby_cluster"):
            return {"restarted": False}  # a standby cluster's leader stays in recovery: nothing to compare with
        diverged = rewind.running_diverged(upstream)
        if not diverged:
            return {"restarted": False, "rewind": str(Outcome.UNKNOWN if diverged is None else Outcome.NOT_NEEDED)}
        log.warning("this replica diverged from %s: stopping it", upstream.name)
        self.progress.phase("stopping")
        self.stop_postgres("fast")
        outcome = rewind.resolve_running_divergence(upstream)
        result: dict[str, Any] = {"restarted": True, "rewind": str(outcome)}
        if outcome == Outcome.REMOVED:
            self.progress.intend(False)
            return result
        self.progress.phase("starting")
        try:
            self.start_postgres(primary=False, upstream=upstream)
        except OperationFailed as exc:
            raise OperationFailed(f"{exc.message} (the data directory diverged: rewind {outcome})", exc.state)
        return result

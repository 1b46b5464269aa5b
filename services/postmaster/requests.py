"""One handler per pg.* op (shared/protocol/ops.py: PG): body checks beyond the schema (INVALID_BODY), then
preconditions (PRECONDITION_FAILED); the controller runs the operation."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from services.postmaster import bootstrap, files, pg, slots
from services.postmaster.core import DataDir
from services.postmaster.operations import Operations
from services.postmaster.render import ConfError, Upstream
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError
from shared.protocol.ops import PG_DEMOTE_MODES, PG_STOP_MODES
from shared.protocol.transport import Handler

if TYPE_CHECKING:
    from services.postmaster.main import Controller

Job = Callable[[Operations], dict[str, Any]]
START_ROLES = frozenset({"primary", "replica"})
_DYNAMIC_TYPES = {"parameters": dict, "recovery_conf": dict, "pg_hba": list, "pg_ident": list}


def invalid(op: str, message: str) -> OpError:
    return OpError(ErrorCode.INVALID_BODY, f"{op}: {message}")


def precondition(message: str) -> OpError:
    return OpError(ErrorCode.PRECONDITION_FAILED, message)


def upstream_of(body: Mapping[str, Any], key: str, op: str, *, required: bool = False) -> Upstream | None:
    """A member reference {name, conn_url, ...}."""
    value = body.get(key)
    if value is None:
        if required:
            raise invalid(op, f"field '{key}' is required")
        return None
    try:
        return Upstream.parse(value, key)
    except ConfError as exc:
        raise invalid(op, str(exc))


def choice_of(body: Mapping[str, Any], key: str, choices: frozenset[str], op: str) -> str:
    value = body.get(key)
    if value not in choices:
        raise invalid(op, f"{key} must be one of {', '.join(sorted(choices))}, got {value!r}")
    return str(value)


def wait_timeout(body: Mapping[str, Any], op: str) -> float | None:
    """How long a start may wait for PostgreSQL to accept connections (A34); None: pg_ctl_timeout."""
    value = body.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise invalid(op, f"timeout must be a number of seconds >= 0, got {value!r}")
    return float(value)


def check_dynamic(dynamic: Mapping[str, Any]) -> None:
    section = dynamic.get("postgresql")
    if section is not None and not isinstance(section, dict):
        raise invalid("pg.configure", "dynamic.postgresql must be a map")
    for key, kind in _DYNAMIC_TYPES.items():
        value = (section or {}).get(key)
        if value is not None and not isinstance(value, kind):
            raise invalid("pg.configure", f"dynamic.postgresql.{key} must be a {kind.__name__}")
    try:
        json.dumps(dynamic)
    except (TypeError, ValueError) as exc:
        raise invalid("pg.configure", f"dynamic is not JSON-serializable: {exc}")


class Requests:
    def __init__(self, controller: Controller) -> None:
        self._c = controller
        self._settings = controller.settings

    def handlers(self) -> dict[str, Handler]:
        return {
            "pg.status": lambda body, req: self._c.state(),
            "pg.configure": self.configure,
            "pg.reload": lambda body, req: self._c.reload(),
            "pg.cancel": lambda body, req: self._c.cancel(),
            "pg.bootstrap": self.bootstrap,
            "pg.clone": self.clone,
            "pg.start": self.start,
            "pg.stop": self.stop,
            "pg.restart": self.restart,
            "pg.promote": self.promote,
            "pg.demote": self.demote,
            "pg.follow": self.follow,
            "pg.reinitialize": self.reinitialize,
            "pg.set_sync": self.set_sync,
            "pg.sync_slots": self.sync_slots,
            "pg.copy_slots": self.copy_slots,
        }

    def _require_initialized(self) -> None:
        state = files.data_dir_state(self._settings)
        if state != DataDir.INITIALIZED:
            raise precondition(f"the data directory is {state}")

    def _is_running(self) -> bool:
        return pg.find_postmaster(self._settings) is not None

    def _is_running_primary(self) -> bool:
        if not self._is_running():
            return False
        obs = self._c.obs
        sql = obs.sql if obs.running else None
        return not sql.in_recovery if sql is not None else not files.is_standby(self._settings)

    def configure(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        check_dynamic(body["dynamic"])
        return self._c.configure(body["dynamic"])

    def bootstrap(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        def check() -> Job:
            state = files.data_dir_state(self._settings)
            if state not in (DataDir.MISSING, DataDir.EMPTY):
                raise precondition(f"cannot bootstrap: the data directory is {state}")
            if self._is_running():
                raise precondition("cannot bootstrap: PostgreSQL is running")
            return bootstrap.bootstrap

        return self._c.long("pg.bootstrap", req, check)

    def clone(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        source = upstream_of(body, "source", "pg.clone", required=True)
        leader = upstream_of(body, "leader", "pg.clone")

        def check() -> Job:
            if self._is_running():
                raise precondition("cannot create a replica: PostgreSQL is running")
            assert source is not None
            return lambda ops: bootstrap.clone(ops, source, leader)

        return self._c.long("pg.clone", req, check)

    def start(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        role = choice_of(body, "role", START_ROLES, "pg.start")
        leader = upstream_of(body, "leader", "pg.start")
        timeout = wait_timeout(body, "pg.start")

        def check() -> Job:
            self._require_initialized()
            return lambda ops: ops.start(role, leader, timeout)

        return self._c.long("pg.start", req, check)

    def stop(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        mode = choice_of(body, "mode", PG_STOP_MODES, "pg.stop")
        checkpoint = bool(body.get("checkpoint"))
        return self._c.long("pg.stop", req, lambda: lambda ops: ops.stop(mode, checkpoint))

    def reinitialize(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        source = upstream_of(body, "source", "pg.reinitialize", required=True)
        leader = upstream_of(body, "leader", "pg.reinitialize")

        def check() -> Job:
            if self._is_running_primary():
                raise precondition("cannot reinitialize: PostgreSQL runs as a primary")
            assert source is not None
            return lambda ops: bootstrap.reinitialize(ops, source, leader)

        return self._c.long("pg.reinitialize", req, check)

    def restart(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        leader = upstream_of(body, "leader", "pg.restart")
        timeout = wait_timeout(body, "pg.restart")

        def check() -> Job:
            self._require_initialized()
            return lambda ops: ops.restart(leader, timeout)

        return self._c.long("pg.restart", req, check)

    def promote(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        def check() -> Job:
            if not self._is_running():
                raise precondition("cannot promote: PostgreSQL is not running")
            return lambda ops: ops.promote()

        return self._c.long("pg.promote", req, check)

    def demote(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        mode = choice_of(body, "mode", PG_DEMOTE_MODES, "pg.demote")
        leader = upstream_of(body, "leader", "pg.demote")

        def check() -> Job:
            self._require_initialized()
            return lambda ops: ops.demote(mode, leader)

        return self._c.long("pg.demote", req, check)

    def follow(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        leader = upstream_of(body, "leader", "pg.follow")

        def check() -> Job:
            self._require_initialized()
            if self._is_running_primary():
                raise precondition("cannot follow: PostgreSQL runs as a primary (demote it)")
            return lambda ops: ops.follow(leader)

        return self._c.long("pg.follow", req, check)

    def set_sync(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        return self._c.live.set_sync(body, req)

    def sync_slots(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        return self._c.live.sync_slots(body, req)

    def copy_slots(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        source = upstream_of(body, "source", "pg.copy_slots", required=True)
        names = body.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise invalid("pg.copy_slots", "names must be a list of slot names")

        def check() -> Job:
            if not self._is_running() or self._is_running_primary():
                raise precondition("copying slots needs a running replica")
            assert source is not None
            desired, recopy = self._c.managed.get().slots, self._c.memory.recopy

            def job(ops: Operations) -> dict[str, Any]:
                result = slots.copy_slots(ops, desired, source, names, recopy)
                self._c.live.copied(result["copied"])
                return result

            return job

        return self._c.long("pg.copy_slots", req, check)

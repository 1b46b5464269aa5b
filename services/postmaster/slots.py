"""Replication slots on this node (C29-C34): applying a pg.sync_slots plan (slotplan.py) with SQL, advancing
logical slots on a replica in their own thread (statement_timeout=0, C32), and pg.copy_slots, which copies
logical slots from the primary's PGDATA over libpq.

Everything here runs outside the loop: apply_slots in the controller's SQL thread, Advancer in its own thread,
copy_slots in the worker as a long operation.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from services.postmaster import files, pg
from services.postmaster.core import parse_lsn
from services.postmaster.divergence import format_lsn
from services.postmaster.operations import OperationFailed, Operations
from services.postmaster.render import Upstream
from services.postmaster.settings import Settings
from services.postmaster.slotplan import DesiredSlots, LocalSlot, SlotPlan, plan_slots
from services.postmaster.sql import Session, SqlError
from shared.model.member import slot_name_from_member_name

log = logging.getLogger(__name__)

SQL_TIMEOUT_S = 5.0
ADVANCE_TIMEOUT_S = 3600.0  # the advancer's own bound; PostgreSQL's statement_timeout is 0 for it (C32)
SLOTS_SQL = """
SELECT pg_is_in_recovery() AS in_recovery, slot_name, slot_type, database, plugin, active, temporary,
       restart_lsn::text AS restart_lsn, confirmed_flush_lsn::text AS confirmed_flush_lsn
  FROM pg_replication_slots RIGHT JOIN (SELECT 1) one ON true
"""


def read_slots(session: Session) -> tuple[bool, dict[str, LocalSlot]]:
    """Whether PostgreSQL is in recovery, and its slots (one round trip; a row of NULLs when there is none)."""
    rows = session.query(SLOTS_SQL)
    slots = {
        r["slot_name"]: LocalSlot(
            name=r["slot_name"],
            type=r["slot_type"],
            database=r["database"],
            plugin=r["plugin"],
            restart_lsn=parse_lsn(r["restart_lsn"]),
            confirmed_flush_lsn=parse_lsn(r["confirmed_flush_lsn"]),
            active=bool(r["active"]),
            temporary=bool(r["temporary"]),
        )
        for r in rows
        if r["slot_name"] is not None
    }
    return bool(rows[0]["in_recovery"]), slots


def _attempt(session: Session, what: str, statement: str, args: Sequence[Any]) -> bool:
    try:
        session.query(statement, args)
        return True
    except SqlError as exc:
        if exc.fatal:
            raise
        log.log(logging.DEBUG if "is active" in str(exc) else logging.WARNING, "%s failed: %s", what, exc)
        return False


def apply_slots(settings: Settings, desired: DesiredSlots, advancer: Advancer | None) -> dict[str, list[str]]:
    """Make PostgreSQL's slots match the desired set; raises SqlError when PostgreSQL cannot be reached."""
    session = Session(settings.local_conn_params(), timeout=SQL_TIMEOUT_S, application_name="haven-slots")
    try:
        in_recovery, existing = read_slots(session)
        plan = plan_slots(
            desired, existing, in_recovery=in_recovery, own_slot=slot_name_from_member_name(settings.name)
        )
        return _carry_out(settings, session, plan, advancer)
    finally:
        session.close()


def _carry_out(settings: Settings, session: Session, plan: SlotPlan, advancer: Advancer | None) -> dict[str, list[str]]:
    dropped = [
        n for n in plan.drop if _attempt(session, f"dropping slot {n}", "SELECT pg_drop_replication_slot(%s)", [n])
    ]
    created = [
        n
        for n in plan.create_physical
        if _attempt(session, f"creating slot {n}", "SELECT pg_create_physical_replication_slot(%s, true)", [n])
    ]
    for name, database, plugin in plan.create_logical:
        db_session = Session(
            {**settings.local_conn_params(), "dbname": database}, timeout=SQL_TIMEOUT_S, application_name="haven-slots"
        )
        try:
            sql = "SELECT pg_create_logical_replication_slot(%s, %s)"
            if _attempt(db_session, f"creating logical slot {name} in {database}", sql, [name, plugin]):
                created.append(name)
        except SqlError as exc:
            log.warning("creating logical slot %s in database %s failed: %s", name, database, exc)
        finally:
            db_session.close()
    advanced = [
        name
        for name, lsn in plan.advance_physical
        if _attempt(
            session,
            f"advancing slot {name}",
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
            [name, format_lsn(lsn)],
        )
    ]
    if advancer is not None and plan.advance_logical:
        advancer.request(plan.advance_logical)
        advanced += [name for name, _, _ in plan.advance_logical]
    for name in (*dropped, *created):
        log.info("%s replication slot %s", "dropped" if name in dropped else "created", name)
    return {"created": created, "dropped": dropped, "advanced": advanced}


WAL_REMOVED = "58P01"  # undefined_file: "requested WAL segment ... has already been removed"


class Advancer:
    """The thread that advances logical slots on a replica to the primary's positions (C32): decoding WAL up to
    the target may take long, so it runs with statement_timeout=0, one session per database, never in the loop.
    Requests coalesce: only the latest target of each slot is kept.

    A copied slot whose WAL is no longer on this replica can never be advanced: it is reported (on_done gets the
    names) so that it is copied again, as Patroni does."""

    def __init__(self, settings: Settings, on_done: Callable[[frozenset[str]], None]) -> None:
        self._settings = settings
        self._on_done = on_done
        self._pending: dict[str, tuple[str, int]] = {}
        self._stale: set[str] = set()
        self._cond = threading.Condition()
        self._stopped = False

    def forget(self, names: Sequence[str]) -> None:
        """These slots were copied again."""
        with self._cond:
            self._stale.difference_update(names)

    def request(self, items: Sequence[tuple[str, str, int]]) -> None:
        with self._cond:
            for name, database, lsn in items:
                self._pending[name] = (database, lsn)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        sessions: dict[str, Session] = {}
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._stopped:
                        self._cond.wait()
                    if self._stopped:
                        return
                    work, self._pending = self._pending, {}
                for name, (database, lsn) in sorted(work.items()):
                    self._advance(sessions, name, database, lsn)
                with self._cond:
                    stale = frozenset(self._stale)
                self._on_done(stale)
        finally:
            for session in sessions.values():
                session.close()

    def _advance(self, sessions: dict[str, Session], name: str, database: str, lsn: int) -> None:
        session = sessions.get(database)
        if session is None:
            params = {**self._settings.local_conn_params(), "dbname": database}
            session = Session(params, timeout=ADVANCE_TIMEOUT_S, application_name="haven-slots", statement_timeout_ms=0)
            sessions[database] = session
        try:
            session.query("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", [name, format_lsn(lsn)])
            log.debug("advanced logical slot %s to %s", name, format_lsn(lsn))
            stale = False
        except SqlError as exc:  # not replayed that far yet, or the slot is gone: the next request tries again
            log.warning("advancing logical slot %s to %s failed: %s", name, format_lsn(lsn), exc)
            stale = exc.sqlstate == WAL_REMOVED
        with self._cond:
            if stale:
                self._stale.add(name)
            else:
                self._stale.discard(name)


# ---- pg.copy_slots --------------------------------------------------------------------------------------------------

_SOURCE_SQL = """
SELECT slot_name, slot_type, database, plugin, pg_read_binary_file('pg_replslot/' || slot_name || '/state') AS state
  FROM pg_replication_slots WHERE slot_name = ANY(%s) AND NOT temporary
"""


def copy_slots(
    ops: Operations,
    desired: DesiredSlots | None,
    source: Upstream,
    names: Sequence[str],
    recopy: Sequence[str] = (),
) -> dict[str, Any]:
    """C32: read each logical slot's state file from the primary (rewind user, else superuser), stop, write it
    into pg_replslot/<name>/state, start again as a replica of the same upstream. A slot is copied only when it is
    wanted here as logical with the same database and plugin as on the source, and is missing here (or in
    `recopy`: its WAL is gone here)."""
    settings = ops.settings
    ops.require_initialized()
    if pg.find_postmaster(settings) is None or not ops.in_recovery():
        raise OperationFailed("copying slots needs a running replica")
    wanted = {n: s for n, s in (desired.slots.items() if desired else ()) if n in names and s.type == "logical"}
    session = Session(settings.local_conn_params(), timeout=SQL_TIMEOUT_S, application_name="haven-slots")
    try:
        _, local = read_slots(session)
    except SqlError as exc:
        raise OperationFailed(f"cannot read the local slots: {exc}")
    finally:
        session.close()
    following = files.read_following(settings)
    files.write_pgpass(settings, [u for u in (following, source) if u is not None], superuser=True)
    states = _read_source_states(settings, source, [n for n in wanted if n not in local or n in recopy])
    copies = {
        row["slot_name"]: bytes(row["state"])
        for row in states
        if row["slot_type"] == "logical"
        and (row["database"], row["plugin"]) == (wanted[row["slot_name"]].database, wanted[row["slot_name"]].plugin)
        and row["state"] is not None
    }
    skipped = sorted(set(names) - set(copies))
    if not copies:
        return {"copied": [], "skipped": skipped}
    ops.progress.phase("restarting")
    ops.stop_postgres("fast", "restart failed")
    for name, state in sorted(copies.items()):
        write_slot_state(settings, name, state)
    ops.progress.phase("starting")
    ops.start_postgres(primary=False, upstream=following)
    log.info("copied logical slots %s from %s", ", ".join(sorted(copies)), source.name)
    return {"copied": sorted(copies), "skipped": skipped}


def _read_source_states(settings: Settings, source: Upstream, names: Sequence[str]) -> list[dict[str, Any]]:
    if not names:
        return []
    user: Mapping[str, str] = settings.rewind_user
    params = settings.remote_conn_params(source.host, source.port, user)
    session = Session(params, timeout=SQL_TIMEOUT_S, application_name="haven-slots")
    try:
        return session.query(_SOURCE_SQL, [list(names)])
    except SqlError as exc:
        raise OperationFailed(f"cannot read the slots of {source.name} as {user.get('username')}: {exc}")
    finally:
        session.close()


def write_slot_state(settings: Settings, name: str, state: bytes) -> None:
    """pg_replslot/<name>/state, mode 0600, made durable (file, then directories) before PostgreSQL starts."""
    replslot = os.path.join(settings.data_dir, "pg_replslot")
    directory = os.path.join(replslot, name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, "state")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, state)
        os.fsync(fd)
    finally:
        os.close(fd)
    for sync_dir in (directory, replslot):
        dir_fd = os.open(sync_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

"""SQL with a deadline on every step: psycopg2 in asynchronous mode, waited on with select(), so that a hung
PostgreSQL (even a stopped process whose kernel still accepts connections) never blocks a thread for longer
than its timeout."""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg2
import psycopg2.extensions

from services.postmaster.core import SqlStatus
from shared.model.member import parse_int

log = logging.getLogger(__name__)


class SqlError(Exception):
    """A query failed or timed out; `fatal` when the connection is gone (or must be dropped); sqlstate when
    PostgreSQL reported the error."""

    def __init__(
        self, message: str, *, fatal: bool = True, timed_out: bool = False, sqlstate: str | None = None
    ) -> None:
        super().__init__(message)
        self.fatal = fatal
        self.timed_out = timed_out
        self.sqlstate = sqlstate


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _from_psycopg(exc: psycopg2.Error, conn: Any) -> SqlError:
    """A statement's error leaves the connection usable; a lost connection (no SQLSTATE, class 08), an
    administrator's shutdown or a cancelled statement (class 57) do not."""
    code = exc.pgcode
    broken = isinstance(exc, psycopg2.InterfaceError) or bool(getattr(conn, "closed", 0))
    fatal = broken or (isinstance(exc, psycopg2.OperationalError) and (code is None or code[:2] in ("08", "57")))
    timed_out = isinstance(exc, psycopg2.extensions.QueryCanceledError)
    return SqlError(_message(exc), fatal=fatal, timed_out=timed_out, sqlstate=code)


class Session:
    """One connection, opened on first use and reopened after a failure. Not thread-safe: one per thread.

    retry: when a connection opened earlier turns out to be gone (PostgreSQL restarted since), run the statement
    once more on a new one. Only for statements that are safe to repeat.
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        timeout: float,
        application_name: str = "haven",
        retry: bool = False,
        statement_timeout_ms: int | None = None,
    ) -> None:
        self.timeout = timeout
        self._retry = retry
        statement_ms = int(timeout * 1000) if statement_timeout_ms is None else statement_timeout_ms
        # synchronous_commit=local: haven's own writes never wait for a synchronous standby (C79)
        self._params = {
            **params,
            "connect_timeout": max(1, int(timeout + 0.999)),
            "application_name": application_name,
            "options": f"-c statement_timeout={statement_ms} -c search_path=pg_catalog -c synchronous_commit=local",
        }
        self._conn: Any = None

    @staticmethod
    def _wait(conn: Any, deadline: float) -> None:
        while True:
            try:
                state = conn.poll()
            except psycopg2.Error as exc:
                raise _from_psycopg(exc, conn)
            if state == psycopg2.extensions.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SqlError("timed out", timed_out=True)
            if state == psycopg2.extensions.POLL_READ:
                select.select([conn], [], [], remaining)
            elif state == psycopg2.extensions.POLL_WRITE:
                select.select([], [conn], [], remaining)
            else:
                raise SqlError(f"unexpected connection state {state}")

    def _connect(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        deadline = time.monotonic() + self.timeout
        try:
            conn = psycopg2.connect(async_=1, **self._params)
        except psycopg2.Error as exc:
            raise SqlError(_message(exc))
        try:
            self._wait(conn, deadline)
        except SqlError as exc:
            conn.close()
            raise SqlError(str(exc), timed_out=exc.timed_out, sqlstate=exc.sqlstate)  # no connection: fatal
        self._conn = conn
        return conn

    def query(
        self, statement: Any, args: Sequence[Any] | None = None, *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Rows as maps (empty for statements without a result). Autocommit, like every async connection."""
        reused = self._conn is not None and not self._conn.closed
        try:
            return self._execute(statement, args, timeout or self.timeout)
        except SqlError as exc:
            if not (self._retry and reused and exc.fatal and not exc.timed_out):
                raise
            log.debug("the connection was gone (%s): reconnecting", exc)
        return self._execute(statement, args, timeout or self.timeout)

    def _execute(self, statement: Any, args: Sequence[Any] | None, timeout: float) -> list[dict[str, Any]]:
        conn = self._connect()
        deadline = time.monotonic() + timeout
        try:
            cursor = conn.cursor()
            cursor.execute(statement, args)
            self._wait(conn, deadline)
            if cursor.description is None:
                return []
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except psycopg2.Error as exc:
            error = _from_psycopg(exc, conn)
        except SqlError as exc:
            error = exc
        if error.fatal:
            self.close()
        raise error

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None


def replication_command(params: Mapping[str, Any], commands: Sequence[str], *, timeout: float) -> list[list[Any]]:
    """Run replication commands (IDENTIFY_SYSTEM, TIMELINE_HISTORY n) over one physical replication connection
    (replication=1): the first row of each, as a list of values. Every step is bounded by `timeout`."""
    from psycopg2.extras import PhysicalReplicationConnection

    deadline = time.monotonic() + timeout
    try:
        conn = psycopg2.connect(
            async_=1,
            connection_factory=PhysicalReplicationConnection,
            connect_timeout=max(1, int(timeout + 0.999)),
            **params,
        )
    except psycopg2.Error as exc:
        raise SqlError(_message(exc))
    try:
        Session._wait(conn, deadline)
        rows: list[list[Any]] = []
        for command in commands:
            cursor = conn.cursor()
            cursor.execute(command)
            Session._wait(conn, deadline)
            row = cursor.fetchone() if cursor.description is not None else None
            rows.append(list(row) if row is not None else [])
        return rows
    except psycopg2.Error as exc:
        raise SqlError(_message(exc))
    finally:
        conn.close()


# One query per poll (C57): recovery state, WAL positions, timeline, replication, the running values of the
# postmaster-context settings (for pending_restart), synchronous_standby_names and the replication slots (temporary
# ones, such as pg_basebackup's, left out).
MONITOR_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint END AS current_lsn,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS primary_timeline,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint AS received_lsn,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replayed_lsn,
       pg_last_xact_replay_timestamp() AS replayed_timestamp,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS paused,
       pg_postmaster_start_time() AS postmaster_start_time,
       current_setting('server_version_num')::int AS server_version,
       (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline,
       current_setting('restore_command') AS restore_command,
       (SELECT row_to_json(w) FROM (SELECT status, received_tli, sender_host, sender_port
                                      FROM pg_stat_wal_receiver) w) AS receiver,
       (SELECT coalesce(json_agg(r), '[]') FROM (
           SELECT usename, application_name, host(client_addr) AS client_addr, state, sync_state, sync_priority
             FROM pg_stat_replication WHERE flush_lsn IS NOT NULL ORDER BY application_name) r) AS replication,
       (SELECT json_object_agg(name, json_build_array(setting, unit, vartype))
          FROM pg_settings WHERE context = 'postmaster') AS postmaster_settings,
       (SELECT bool_or(pending_restart) FROM pg_settings) AS pending_restart,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       (SELECT json_object_agg(application_name, json_build_object(
                   'write', pg_wal_lsn_diff(write_lsn, '0/0')::bigint,
                   'flush', pg_wal_lsn_diff(flush_lsn, '0/0')::bigint,
                   'replay', pg_wal_lsn_diff(replay_lsn, '0/0')::bigint,
                   'sync_state', sync_state))
          FROM pg_stat_replication WHERE flush_lsn IS NOT NULL) AS replication_lsns,
       (SELECT json_object_agg(slot_name, json_build_object(
                   'type', slot_type, 'database', database, 'plugin', plugin,
                   'restart_lsn', pg_wal_lsn_diff(restart_lsn, '0/0')::bigint,
                   'confirmed_flush_lsn', pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint,
                   'active', active))
          FROM pg_replication_slots WHERE NOT temporary) AS slots
"""


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def status_from_row(row: Mapping[str, Any]) -> SqlStatus:
    receiver = row.get("receiver")
    replication = row.get("replication") or []
    return SqlStatus(
        in_recovery=bool(row["in_recovery"]),
        postmaster_start_time=str(row["postmaster_start_time"]),
        server_version=int(row["server_version"]),
        sysid=_text(row.get("sysid")),
        current_lsn=parse_int(row.get("current_lsn")),
        primary_timeline=parse_int(row.get("primary_timeline")),
        received_lsn=parse_int(row.get("received_lsn")),
        replayed_lsn=parse_int(row.get("replayed_lsn")),
        replayed_timestamp=_text(row.get("replayed_timestamp")),
        paused=bool(row.get("paused")),
        checkpoint_timeline=parse_int(row.get("checkpoint_timeline")),
        restore_command=str(row.get("restore_command") or ""),
        receiver=receiver if isinstance(receiver, dict) else None,
        replication=[r for r in replication if isinstance(r, dict)],
        postmaster_settings=row.get("postmaster_settings") or {},
        pending_restart=bool(row.get("pending_restart")),
        synchronous_standby_names=_text(row.get("synchronous_standby_names")),
        replication_lsns=_maps(row.get("replication_lsns")),
        slots=_maps(row.get("slots")),
    )


def _maps(value: Any) -> dict[str, dict[str, Any]]:
    """A json_object_agg of objects (NULL when there is no row)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, dict)}


def fetch_status(session: Session) -> SqlStatus:
    rows = session.query(MONITOR_SQL)
    if not rows:
        raise SqlError("the monitoring query returned no row", fatal=False)
    return status_from_row(rows[0])

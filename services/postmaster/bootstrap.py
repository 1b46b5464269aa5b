"""Creating a data directory: a new cluster with initdb (C2-C4, C8) or a replica with pg_basebackup (C14, C19)."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from typing import Any

from psycopg2 import sql as pgsql

from services.postmaster import files, options, pg, render
from services.postmaster.core import DataDir
from services.postmaster.operations import OperationFailed, Operations
from services.postmaster.render import ConfError, Upstream
from services.postmaster.settings import Settings
from services.postmaster.sql import Session, SqlError

log = logging.getLogger(__name__)

CLONE_ATTEMPTS = 2
CLONE_RETRY_DELAY_S = 5.0

# User creation must not leave passwords in PostgreSQL's logs or statistics, nor wait for synchronous standbys (C3).
_SAFE_SESSION = (
    "SET synchronous_commit TO 'local'",
    "SET log_statement TO 'none'",
    "SET log_min_duration_statement TO -1",
    "SET log_min_error_statement TO 'panic'",
    "SET pg_stat_statements.track_utility TO off",
)
_REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


# ---- bootstrap ----------------------------------------------------------------------------------------------------


def bootstrap(ops: Operations) -> dict[str, Any]:
    """initdb, configuration, start as primary, users, post_bootstrap; on failure PGDATA becomes PGDATA.failed."""
    settings = ops.settings
    try:
        initdb_args = options.initdb_options(settings.initdb)
        if files.data_dir_state(settings) not in (DataDir.MISSING, DataDir.EMPTY):
            raise OperationFailed(f"the data directory {settings.data_dir} is not empty")
        _initdb(settings, initdb_args)
        files.write_dynamic(settings, ops.dynamic)
        ops.start_postgres(primary=True, upstream=None)
        sysid = _create_users(settings)
        _post_bootstrap(settings)
    except (OperationFailed, ConfError, pg.PgError, SqlError, OSError) as exc:
        message = exc.message if isinstance(exc, OperationFailed) else str(exc)
        log.error("bootstrap failed: %s", message)
        _discard(ops)
        raise OperationFailed(message, "initdb failed")
    return {"sysid": sysid}


def _initdb(settings: Settings, args: list[str]) -> None:
    password = settings.superuser.get("password")
    if not password:
        pg.initdb(settings, args, None)
        return
    with files.private_file(settings.run_dir, password + "\n") as pwfile:
        pg.initdb(settings, args, pwfile)


def _ensure_role(session: Session, auth: dict[str, str], attributes: str) -> str:
    name = auth["username"]
    exists = session.query("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (name,))
    statement = pgsql.SQL("{} ROLE {} WITH {}").format(
        pgsql.SQL("ALTER" if exists else "CREATE"), pgsql.Identifier(name), pgsql.SQL(attributes)
    )
    if auth.get("password"):
        session.query(pgsql.SQL("{} PASSWORD %s").format(statement), (auth["password"],))
    else:
        session.query(statement)
    log.info("%s the role %s", "altered" if exists else "created", name)
    return name


def _create_users(settings: Settings) -> str:
    """The replication user, and the rewind user with its GRANTs (C3, J9); returns the system identifier."""
    session = Session(settings.local_conn_params(), timeout=settings.pg_ctl_timeout)
    try:
        for statement in _SAFE_SESSION:
            try:
                session.query(statement)
            except SqlError as exc:
                if exc.fatal:
                    raise
        if settings.replication.get("username"):
            _ensure_role(session, dict(settings.replication), "LOGIN REPLICATION")
        if settings.rewind.get("username"):
            name = _ensure_role(session, dict(settings.rewind), "LOGIN")
            for function in _REWIND_FUNCTIONS:
                session.query(
                    pgsql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(pgsql.SQL(function), pgsql.Identifier(name))
                )
        rows = session.query("SELECT system_identifier::text AS sysid FROM pg_control_system()")
        return str(rows[0]["sysid"])
    finally:
        session.close()


def _post_bootstrap(settings: Settings) -> None:
    """The script gets the superuser's URL (no password); PGPASSFILE points at the pgpass file (C4, C79)."""
    if not settings.post_bootstrap:
        return
    files.write_pgpass(settings, [])
    cmd = [*shlex.split(settings.post_bootstrap), settings.superuser_url()]
    log.info("running post_bootstrap: %s", " ".join(shlex.quote(c) for c in cmd))
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            # C79: its commits do not wait for a synchronous standby (strict mode may have none yet)
            env={**os.environ, "PGPASSFILE": settings.pgpass, "PGOPTIONS": "-c synchronous_commit=local"},
            timeout=pg.LONG_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationFailed(f"post_bootstrap script {cmd[0]} failed: {exc}")
    if proc.returncode != 0:
        raise OperationFailed(f"post_bootstrap script {cmd[0]} exited with code {proc.returncode}")


def _discard(ops: Operations) -> None:
    """After a failed bootstrap: stop PostgreSQL and move the data directory aside (C8)."""
    try:
        if pg.find_postmaster(ops.settings) is not None:
            ops.progress.intend(False)
            pg.pg_ctl_stop(ops.settings, "immediate")
        files.move_to_failed(ops.settings)
    except (pg.PgError, OSError) as exc:
        log.error("cleaning up after the failed bootstrap: %s", exc)


# ---- clone --------------------------------------------------------------------------------------------------------


def replication_conninfo(settings: Settings, source: Upstream) -> str:
    """pg_basebackup's --dbname: the replication user, no password (it comes from the pgpass file)."""
    params: dict[str, Any] = {"host": source.host, "port": source.port, "dbname": "postgres"}
    if settings.replication.get("username"):
        params["user"] = settings.replication["username"]
    params.update(
        {k: v for k, v in settings.replication.items() if k.startswith("ssl") or k in ("gssencmode", "channel_binding")}
    )
    params["application_name"] = f"{settings.name}-basebackup"
    return " ".join(f"{k}={render.conninfo_value(v)}" for k, v in params.items())


def clone(ops: Operations, source: Upstream, leader: Upstream | None) -> dict[str, Any]:
    """pg_basebackup from `source` (2 attempts, 5 s apart), then start as a replica of `leader` (C14, C19)."""
    settings = ops.settings
    if pg.find_postmaster(settings) is not None:
        raise OperationFailed("PostgreSQL is running: stop it before creating a replica")
    basebackup_args, errors = options.basebackup_options(settings.basebackup)
    for error in errors:
        log.error(error)
    files.write_pgpass(settings, [source])
    conninfo = replication_conninfo(settings, source)
    for attempt in range(1, CLONE_ATTEMPTS + 1):
        try:
            if files.data_dir_state(settings) != DataDir.MISSING:
                files.wipe_data_dir(settings)
            files.ensure_data_dir(settings)
            pg.basebackup(settings, conninfo, basebackup_args)
            break
        except (pg.PgError, OSError) as exc:
            log.error("pg_basebackup from %s failed (attempt %d of %d): %s", source.name, attempt, CLONE_ATTEMPTS, exc)
            if attempt == CLONE_ATTEMPTS or ops.progress.stopping():
                _wipe_quietly(settings)
                raise OperationFailed(f"pg_basebackup from {source.name} failed: {exc}")
            log.info("Trying again in %.0f seconds", CLONE_RETRY_DELAY_S)
            ops.progress.phase("creating replica")
            _sleep_unless_stopping(ops, CLONE_RETRY_DELAY_S)
    files.write_dynamic(settings, ops.dynamic)
    ops.progress.phase("starting")
    ops.start_postgres(primary=False, upstream=leader or source)
    return {}


def reinitialize(ops: Operations, source: Upstream, leader: Upstream | None) -> dict[str, Any]:
    """C20: stop a running instance at once, remove the data directory, and create the replica again."""
    if pg.find_postmaster(ops.settings) is not None:
        ops.stop_postgres("immediate")
    ops.progress.phase("creating replica")
    files.wipe_data_dir(ops.settings)
    return clone(ops, source, leader)


def _wipe_quietly(settings: Settings) -> None:
    try:
        files.wipe_data_dir(settings)
    except OSError as exc:
        log.error("cannot wipe %s: %s", settings.data_dir, exc)


def _sleep_unless_stopping(ops: Operations, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ops.progress.stopping():
        time.sleep(0.1)

"""`query` and `dsn` (E7, E15): SQL over libpq (psycopg2) on the chosen member's host and port, and its DSN."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from ctl.cluster_cmds import option_watch, option_watchrefresh, run_watching
from ctl.config import CtlError
from ctl.discovery import CtlContext
from ctl.members import ClusterMember, any_member, arg_cluster_name, require_name, role_choice, timestamp
from ctl.render import ClusterInfo, yaml_text
from ctl.table import render_table

log = logging.getLogger("havenctl")

QUERY_FORMATS = ("pretty", "tsv", "json", "yaml", "yml")
Connect = Callable[..., Any]
_YAML_SCALARS = (str, int, float, bool, bytes, datetime.date, type(None))


def connect_kwargs(member: ClusterMember, parameters: Mapping[str, str]) -> dict[str, Any]:
    """libpq parameters: the member's host and port, the user's options; dbname defaults to the user's name."""
    kwargs: dict[str, Any] = {"host": member.data.get("host"), "port": member.data.get("port") or 5432}
    if "username" in parameters:
        kwargs["user"] = parameters["username"]
    for key in ("password", "dbname"):
        if key in parameters:
            kwargs[key] = parameters[key]
    kwargs.update(fallback_application_name="Patroni ctl", connect_timeout="5")
    return kwargs


def get_cursor(
    info: ClusterInfo, parameters: Mapping[str, str], role: str | None, member_name: str | None, connect: Connect
) -> Any:
    """A cursor on the member chosen by role or name; for primary/replica/standby roles checked against
    pg_is_in_recovery() (the DCS view may be behind). None when no member fits."""
    member = any_member(info, role, member_name)
    if member is None or not member.data.get("host"):
        return None
    conn = connect(**connect_kwargs(member, parameters))
    conn.autocommit = True
    cursor = conn.cursor()
    if role in (None, "any", "leader"):
        return cursor
    cursor.execute("SELECT pg_catalog.pg_is_in_recovery()")
    row = cursor.fetchone()
    in_recovery = not row or row[0]
    if (in_recovery and role in ("replica", "standby", "standby-leader")) or (
        not in_recovery and role in ("primary", "master")
    ):
        return cursor
    conn.close()
    return None


def query_member(
    info: ClusterInfo,
    role: str | None,
    member: str | None,
    sql: str,
    parameters: Mapping[str, str],
    connect: Connect,
    database_error: type[Exception],
) -> tuple[list[list[Any]], list[str] | None]:
    """The rows and column names of `sql` on the member; a row [timestamp, message] when it cannot run."""
    cursor = None
    try:
        cursor = get_cursor(info, parameters, role, member, connect)
        if cursor is None:
            if member is not None:
                message = f"No connection to member {member} is available"
            else:
                message = f"No connection to role={role or 'leader'} is available"
            log.debug(message)
            return [[timestamp(0), message]], None
        cursor.execute(sql)
        rows = [list(row) for row in cursor.fetchall()]
        return rows, [d.name for d in cursor.description] if cursor.description else None
    except database_error as exc:
        log.debug("%s", exc)
        sqlstate = getattr(exc, "pgcode", None)
        message = (sqlstate or str(exc)).replace("\n", " ")
        return [[timestamp(0), f"ERROR, SQLSTATE: {message}"]], None
    finally:
        if cursor is not None and not cursor.connection.closed:
            cursor.connection.close()


def _yaml_safe(value: Any) -> Any:
    return value if isinstance(value, _YAML_SCALARS) else str(value)


def format_query_output(columns: Sequence[str] | None, rows: list[list[Any]], fmt: str, delimiter: str) -> str:
    """patronictl's print_output() for query results; the text ends with a newline."""
    if fmt in ("json", "yaml", "yml"):
        elements = [dict(zip(columns or [], row, strict=False)) for row in rows]
        if fmt == "json":
            return json.dumps(elements, default=str) + "\n"
        return yaml_text([{k: _yaml_safe(v) for k, v in e.items()} for e in elements]) + "\n"
    if fmt == "tsv":
        lines = ([list(columns)] if columns else []) + rows
        return "".join(delimiter.join(map(str, line)) + "\n" for line in lines)
    width = max((len(row) for row in rows), default=0)
    names = list(columns) if columns else [f"Field {i + 1}" for i in range(width)]
    return render_table(names, rows) + "\n"


@click.command("query", help="Query a Patroni PostgreSQL member")
@arg_cluster_name
@click.option("--format", "fmt", help="Output format", default="tsv", type=click.Choice(QUERY_FORMATS))
@click.option("--file", "-f", "p_file", help="Execute the SQL commands from this file", type=click.File("rb"))
@click.option("--password", help="force password prompt", is_flag=True)
@click.option("-U", "--username", help="database user name", type=str)
@option_watch
@option_watchrefresh
@click.option("--role", "-r", help="The role of the query", type=role_choice, default=None)
@click.option("--member", "-m", help="Query a specific member", type=str)
@click.option("--delimiter", help="The column delimiter", default="\t")
@click.option("--command", "-c", help="The SQL commands to execute")
@click.option("-d", "--dbname", help="database name to connect to", type=str)
@click.pass_obj
def query(
    obj: CtlContext,
    cluster_name: str | None,
    fmt: str,
    p_file: Any,
    password: bool,
    username: str | None,
    w: bool,
    watch: float | None,
    role: str | None,
    member: str | None,
    delimiter: str,
    command: str | None,
    dbname: str | None,
) -> None:
    if p_file is not None:
        if command is not None:
            raise CtlError("--file and --command are mutually exclusive options")
        sql = p_file.read().decode("utf-8")
    elif command is None:
        raise CtlError("You need to specify either --command or --file")
    else:
        sql = command
    parameters: dict[str, str] = {}
    if username:
        parameters["username"] = username
    if password:
        parameters["password"] = click.prompt("Password", hide_input=True, type=str)
    if dbname:
        parameters["dbname"] = dbname

    import psycopg2

    name = require_name(cluster_name)
    info = obj.fetch(name)

    def show() -> None:
        rows, columns = query_member(info, role, member, sql, parameters, psycopg2.connect, psycopg2.DatabaseError)
        click.echo(format_query_output(columns, rows, fmt, delimiter), nl=False)

    run_watching(w, watch, show, clear=lambda: None)


@click.command("dsn", help="Generate a dsn for the provided member, defaults to a dsn of the leader")
@click.option("--role", "-r", help="Give a dsn of any member with this role", type=role_choice, default=None)
@click.option("--member", "-m", help="Generate a dsn for this member", type=str)
@arg_cluster_name
@click.pass_obj
def dsn(obj: CtlContext, role: str | None, member: str | None, cluster_name: str | None) -> None:
    info = obj.fetch(require_name(cluster_name))
    chosen = any_member(info, role, member)
    if chosen is None or not chosen.data.get("host"):
        raise CtlError("Can not find a suitable member")
    click.echo("host={} port={}".format(chosen.data["host"], chosen.data.get("port") or 5432))

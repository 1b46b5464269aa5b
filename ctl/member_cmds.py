"""`restart`, `reload`, `reinit` and `flush` (E10, E16, E17, E19, D27, D29-D32): one REST call per chosen member.

`flush CLUSTER switchover` tries DELETE /switchover on each member, the leader first. When none answers,
patronictl clears /failover in the DCS itself; havenctl does not (dcs_proxy is the only program that writes the
cluster's keys, DESIGN.md): it says so and exits with an error, and the scheduled switchover stays.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import click

from ctl.config import CtlError
from ctl.discovery import CtlContext
from ctl.members import (
    ClusterMember,
    call,
    check_response,
    confirm_members_action,
    dynamic_config,
    leader_first,
    next_hour,
    option_force,
    parse_scheduled,
    role_choice,
    select_members,
    try_call,
)
from ctl.rest import LONG_ACTION_TIMEOUT, RestError
from shared.model.member import parse_int

log = logging.getLogger("havenctl")

DEFAULT_LOOP_WAIT = 10
REINIT_POLL_S = 2.0


def postgres_version_to_int(version: str) -> int:
    """9.6.24 -> 90624, 15.4 -> 150004; a version --pg-version does not accept raises CtlError."""
    try:
        parts = [int(p) for p in version.split(".")]
    except ValueError:
        raise CtlError(f"Invalid PostgreSQL version: {version}")
    if len(parts) < 2 or len(parts) > 3 or (len(parts) == 2 and parts[0] < 10):
        raise CtlError(f"Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {version}")
    if len(parts) == 2:
        parts.insert(1, 0)
    return int("".join(f"{p:02d}" for p in parts))


def restart_body(pending: bool, version: str | None, scheduled: str | None, timeout: str | None) -> dict[str, Any]:
    """POST /restart's conditions (W8), in patronictl's order."""
    content: dict[str, Any] = {}
    if pending:
        content["restart_pending"] = True
    if version:
        postgres_version_to_int(version)
        content["postgres_version"] = version
    if scheduled:
        content["schedule"] = scheduled
    if timeout is not None:
        content["timeout"] = timeout
    return content


@click.command("restart", help="Restart cluster member")
@click.argument("cluster_name")
@click.argument("member_names", nargs=-1)
@click.option("--role", "-r", help="Restart only members with this role", type=role_choice, default="any")
@click.option("--any", "p_any", help="Restart a single member only", is_flag=True)
@click.option(
    "--scheduled", help="Timestamp of a scheduled restart in unambiguous format (e.g. ISO 8601)", default=None
)
@click.option(
    "--pg-version", "version", help="Restart if the PostgreSQL version is less than provided (e.g. 9.5.2)", default=None
)
@click.option("--pending", help="Restart if pending", is_flag=True)
@click.option("--timeout", help="Return error and fail over if necessary when restarting takes longer than this.")
@option_force
@click.pass_obj
def restart(
    obj: CtlContext,
    cluster_name: str,
    member_names: tuple[str, ...],
    role: str,
    p_any: bool,
    scheduled: str | None,
    version: str | None,
    pending: bool,
    timeout: str | None,
    force: bool,
) -> None:
    info = obj.fetch(cluster_name)
    members = select_members(info, member_names, role, force, "restart", False)
    if scheduled is None and not force:
        scheduled = click.prompt(
            "When should the restart take place (e.g. " + next_hour() + ") ", type=str, default="now"
        )
    scheduled_at = parse_scheduled(scheduled)
    confirm_members_action(members, force, "restart", scheduled_at)
    if p_any:
        random.shuffle(members)
        members = members[:1]
    if version is None and not force:
        version = click.prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ", type=str, default=""
        )
    if scheduled_at and info.body.get("pause"):
        raise CtlError("Can't schedule restart in the paused state")
    content = restart_body(pending, version, scheduled_at.isoformat() if scheduled_at else None, timeout)

    for member in members:
        if "schedule" in content and force and member.data.get("scheduled_restart"):
            reply = call(obj, member, "DELETE", "restart")
            check_response(reply, member.name, "flush scheduled restart", True)
        reply = call(obj, member, "POST", "restart", content, timeout=LONG_ACTION_TIMEOUT)
        if reply.status == 200:
            click.echo(f"Success: restart on member {member.name}")
        elif reply.status == 202:
            click.echo(f"Success: restart scheduled on member {member.name}")
        elif reply.status == 409:
            click.echo(f"Failed: another restart is already scheduled on member {member.name}")
        else:
            click.echo(f"Failed: restart for member {member.name}, status code={reply.status}, ({reply.text})")


@click.command("reload", help="Reload cluster member configuration")
@click.argument("cluster_name")
@click.argument("member_names", nargs=-1)
@click.option("--role", "-r", help="Reload only members with this role", type=role_choice, default="any")
@option_force
@click.pass_obj
def reload(obj: CtlContext, cluster_name: str, member_names: tuple[str, ...], role: str, force: bool) -> None:
    info = obj.fetch(cluster_name)
    members = select_members(info, member_names, role, force, "reload")
    wait_s: int | None = None
    for member in members:
        reply = call(obj, member, "POST", "reload")
        if reply.status == 200:
            click.echo(f"No changes to apply on member {member.name}")
        elif reply.status == 202:
            if wait_s is None:
                wait_s = parse_int((dynamic_config(obj, info) or {}).get("loop_wait")) or DEFAULT_LOOP_WAIT
            click.echo(
                f"Reload request received for member {member.name} and will be processed within {wait_s} seconds"
            )
        else:
            click.echo(f"Failed: reload for member {member.name}, status code={reply.status}, ({reply.text})")


def wait_for_reinit(
    obj: CtlContext, members: list[ClusterMember], sleep: Callable[[float], object] = time.sleep
) -> None:
    """Until GET /patroni shows a state other than `creating replica` on each member."""
    waiting = list(members)
    shown: list[ClusterMember] = []
    while waiting:
        if waiting != shown:
            click.echo("Waiting for reinitialize to complete on: {}".format(", ".join(m.name for m in waiting)))
            shown = list(waiting)
        sleep(REINIT_POLL_S)
        for member in list(waiting):
            try:
                status = obj.client().get_json(member.url("patroni"))
            except RestError as exc:  # restarting: ask again on the next round
                log.debug("GET /patroni on %s: %s", member.name, exc)
                continue
            if not isinstance(status, dict) or status.get("state") != "creating replica":
                click.echo(f"Reinitialize is completed on: {member.name}")
                waiting.remove(member)


@click.command("reinit", help="Reinitialize cluster member")
@click.argument("cluster_name")
@click.argument("member_names", nargs=-1)
@option_force
@click.option("--wait", help="Wait until reinitialization completes", is_flag=True)
@click.pass_obj
def reinit(obj: CtlContext, cluster_name: str, member_names: tuple[str, ...], force: bool, wait: bool) -> None:
    info = obj.fetch(cluster_name)
    members = select_members(info, member_names, "replica", force, "reinitialize")
    wait_on: list[ClusterMember] = []
    for member in members:
        body = {"force": force}
        while True:
            reply = call(obj, member, "POST", "reinitialize", body)
            started = check_response(reply, member.name, "reinitialize")
            if (
                not started
                and reply.data.endswith(b" already in progress")
                and not force
                and click.confirm("Do you want to cancel it and reinitialize anyway?")
            ):
                body["force"] = True
                continue
            break
        if started and wait:
            wait_on.append(member)
    wait_for_reinit(obj, wait_on)


def flush_switchover(obj: CtlContext, cluster_name: str) -> None:
    info = obj.fetch(cluster_name)
    if not info.body.get("scheduled_switchover"):
        click.echo("No pending scheduled switchover")
        return
    for member in leader_first(info):
        reply = try_call(obj, member, "DELETE", "switchover")
        if reply is None:
            continue
        if reply.status in (200, 404):
            click.echo("{}: {}".format("Success" if reply.status == 200 else "Failed", reply.text))
            return
        click.echo(f"Failed: member={member.name}, status_code={reply.status}, ({reply.text})")
    raise CtlError(
        f"Could not find any accessible member of cluster {cluster_name}, and havenctl does not "
        "clear /failover in the DCS itself (only the nodes' dcs_proxy writes there): the switchover stays scheduled"
    )


@click.command("flush", help="Discard scheduled events")
@click.argument("cluster_name")
@click.argument("member_names", nargs=-1)
@click.argument("target", type=click.Choice(["restart", "switchover"]))
@click.option("--role", "-r", help="Flush only members with this role", type=role_choice, default="any")
@option_force
@click.pass_obj
def flush(
    obj: CtlContext, cluster_name: str, member_names: tuple[str, ...], target: str, role: str, force: bool
) -> None:
    if target == "switchover":
        flush_switchover(obj, cluster_name)
        return
    info = obj.fetch(cluster_name)
    for member in select_members(info, member_names, role, force, "flush"):
        if member.data.get("scheduled_restart"):
            reply = call(obj, member, "DELETE", "restart")
            check_response(reply, member.name, "flush scheduled restart")
        else:
            click.echo(f"No scheduled restart for member {member.name}")

"""`switchover` and `failover` (E9, E21, A26-A31, D26, D28).

The request goes to the leader's REST API (the candidate's when there is no leader). When no REST API can be
reached patronictl writes /failover into the DCS itself ("Could not switchover using Patroni api, falling back
to DCS"); havenctl does not: dcs_proxy is the only program that writes the cluster's keys (DESIGN.md), so it
reports the problem and exits with an error instead.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from ctl.config import CtlError
from ctl.discovery import CtlContext
from ctl.members import (
    ClusterMember,
    arg_cluster_name,
    cluster_members,
    leader_of,
    next_hour,
    option_force,
    output_members,
    parse_scheduled,
    require_name,
    timestamp,
)
from ctl.render import ClusterInfo
from ctl.rest import LONG_ACTION_TIMEOUT, Reply, RestError

log = logging.getLogger("havenctl")

DEPRECATED_LEADER = (
    "Supplying a leader name using this command is deprecated and will be removed in a future version of Patroni, "
    "change your scripts to use `switchover` instead.\nExecuting switchover!"
)
OLD_API_ANSWER = b"Server does not support this operation"


def candidate_names(info: ClusterInfo) -> list[str]:
    """Who may be promoted: neither the leader nor a member tagged nofailover, sorted by name."""
    return sorted(m.name for m in cluster_members(info) if not m.is_leader and not m.nofailover)


def is_async_candidate(info: ClusterInfo, candidate: str) -> bool:
    """In synchronous mode (some member is a sync standby), a candidate that is not one of them."""
    members = cluster_members(info)
    sync = {m.name for m in members if m.role in ("sync_standby", "quorum_standby")}
    return bool(sync) and candidate not in sync


def _ask_leader(info: ClusterInfo, leader: ClusterMember | None, given: str | None, force: bool) -> str:
    if leader is None:
        raise CtlError("This cluster has no leader")
    if given is None:
        if force:
            given = leader.name
        else:
            prompt = "Standby Leader" if leader.role == "standby_leader" else "Primary"
            given = click.prompt(prompt, type=str, default=leader.name)
    if given != leader.name:
        raise CtlError(f"Member {given} is not the leader of cluster {info.name}")
    return given


def _ask_candidate(info: ClusterInfo, action: str, leader: ClusterMember | None, given: str | None, force: bool) -> str:
    names = candidate_names(info)
    if not names:
        raise CtlError(f"No candidates found to {action} to")
    candidate = given
    if candidate is None and not force:
        candidate = click.prompt("Candidate " + str(names), type=str, default="")
    if action == "failover" and not candidate:
        raise CtlError("Failover could be performed only to a specific candidate")
    if candidate and candidate not in names:
        if leader is not None and candidate == leader.name:
            raise CtlError(f"Member {candidate} is already the leader of cluster {info.name}")
        raise CtlError(f"Member {candidate} does not exist in cluster {info.name} or is tagged as nofailover")
    return candidate or ""


def _ask_schedule(info: ClusterInfo, scheduled: str | None, force: bool) -> str | None:
    if scheduled is None and not force:
        scheduled = click.prompt(
            "When should the switchover take place (e.g. " + next_hour() + " ) ", type=str, default="now"
        )
    scheduled_at = parse_scheduled(scheduled)
    if scheduled_at is None:
        return None
    if info.body.get("pause"):
        raise CtlError("Can't schedule switchover in the paused state")
    return scheduled_at.isoformat()


def _confirm(info: ClusterInfo, action: str, leader: str | None, scheduled_at: str | None) -> None:
    demote = f", demoting current leader {leader}" if leader else ""
    if scheduled_at:
        question = f"Are you sure you want to schedule switchover of cluster {info.name} at {scheduled_at}{demote}?"
        if not click.confirm(question):
            raise CtlError("Aborting scheduled " + action)
    elif not click.confirm(f"Are you sure you want to {action} cluster {info.name}{demote}?"):
        raise CtlError("Aborting " + action)


def request_body(action: str, candidate: str, leader: str | None, scheduled_at: str | None) -> dict[str, Any]:
    """POST /switchover or /failover (W8); a switchover without a named candidate leaves the choice to the leader."""
    body: dict[str, Any] = {}
    if action == "switchover":
        body["leader"] = leader
    if candidate:
        body["candidate"] = candidate
    if scheduled_at:
        body["scheduled_at"] = scheduled_at
    return body


def _post(obj: CtlContext, member: ClusterMember, action: str, body: dict[str, Any]) -> Reply:
    client = obj.client()
    reply = client.call("POST", member.url(action), body, timeout=LONG_ACTION_TIMEOUT)
    if reply.status == 501 and action == "switchover" and OLD_API_ANSWER in reply.data:
        reply = client.call("POST", member.url("failover"), body, timeout=LONG_ACTION_TIMEOUT)  # a pre-1.4 API
    return reply


def do_failover_or_switchover(
    obj: CtlContext,
    action: str,
    cluster_name: str,
    candidate: str | None,
    force: bool,
    switchover_leader: str | None = None,
    switchover_scheduled: str | None = None,
) -> None:
    info = obj.fetch(cluster_name)
    click.echo("Current cluster topology")
    output_members(info)
    leader = leader_of(info)
    if action == "switchover":
        switchover_leader = _ask_leader(info, leader, switchover_leader, force)
    chosen = _ask_candidate(info, action, leader, candidate, force)
    asynchronous = not force and action == "failover" and is_async_candidate(info, chosen)
    if asynchronous and not click.confirm(f"Are you sure you want to failover to the asynchronous node {chosen}?"):
        raise CtlError("Aborting " + action)
    scheduled_at = _ask_schedule(info, switchover_scheduled, force) if action == "switchover" else None
    body = request_body(action, chosen, switchover_leader, scheduled_at)
    log.debug("%s", body)
    if not force:
        _confirm(info, action, leader.name if leader else None, scheduled_at)

    target = leader or next((m for m in cluster_members(info) if m.name == chosen), None)
    try:
        if target is None:
            raise RestError(f"member {chosen} is not known")
        reply = _post(obj, target, action, body)
    except RestError as exc:
        raise CtlError(
            f"Could not {action} using Patroni api ({exc}), and havenctl does not fall back to writing /failover "
            "into the DCS (only the nodes' dcs_proxy writes there): retry once the member's REST API answers"
        )
    if reply.status not in (200, 202):
        click.echo(f"{action.title()} failed, details: {reply.status}, {reply.text}")
        return
    click.echo(f"{timestamp()} {reply.text}")
    output_members(obj.fetch(cluster_name))


@click.command("failover", help="Failover to a replica")
@arg_cluster_name
@click.option("--leader", "--primary", "--master", "leader", help="The name of the current leader", default=None)
@click.option("--candidate", help="The name of the candidate", default=None)
@option_force
@click.pass_obj
def failover(obj: CtlContext, cluster_name: str | None, leader: str | None, candidate: str | None, force: bool) -> None:
    action = "failover"
    if leader:
        action = "switchover"
        click.echo(click.style(DEPRECATED_LEADER, fg="red"))
    do_failover_or_switchover(obj, action, require_name(cluster_name), candidate, force, leader)


@click.command("switchover", help="Switchover to a replica")
@arg_cluster_name
@click.option("--leader", "--primary", "--master", "leader", help="The name of the current leader", default=None)
@click.option("--candidate", help="The name of the candidate", default=None)
@click.option(
    "--scheduled", help="Timestamp of a scheduled switchover in unambiguous format (e.g. ISO 8601)", default=None
)
@option_force
@click.pass_obj
def switchover(
    obj: CtlContext,
    cluster_name: str | None,
    leader: str | None,
    candidate: str | None,
    force: bool,
    scheduled: str | None,
) -> None:
    do_failover_or_switchover(obj, "switchover", require_name(cluster_name), candidate, force, leader, scheduled)

"""`pause` and `resume` (E13, E14, A41): PATCH /config {"pause": true} or {"pause": null}, the leader first.

With --wait, patronictl watches the member keys' `pause` field in the DCS for loop_wait + 1 seconds; havenctl asks
each member that has a REST API for GET /patroni, where the same flag is shown (W1), once a second as long.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from ctl.config import CtlError
from ctl.discovery import CtlContext
from ctl.members import ClusterMember, arg_cluster_name, dynamic_config, leader_first, require_name, try_call
from ctl.render import ClusterInfo
from ctl.rest import RestError
from shared.model.member import parse_int

DEFAULT_LOOP_WAIT = 10


def loop_wait(obj: CtlContext, info: ClusterInfo) -> int:
    try:
        config = dynamic_config(obj, info) or {}
    except CtlError:
        config = {}
    return parse_int(config.get("loop_wait")) or DEFAULT_LOOP_WAIT


def member_is_paused(obj: CtlContext, member: ClusterMember) -> bool | None:
    """The member's own view of the pause flag (GET /patroni), or None when it does not answer."""
    try:
        status = obj.client().get_json(member.url("patroni"))
    except RestError:
        return None
    return bool(status.get("pause", False)) if isinstance(status, dict) else None


def wait_until_pause_is_applied(
    obj: CtlContext,
    members: list[ClusterMember],
    paused: bool,
    wait_s: int,
    *,
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    click.echo("'{}' request sent, waiting until it is recognized by all nodes".format("pause" if paused else "resume"))
    deadline = clock() + wait_s + 1
    remaining: list[str] = []
    while True:
        states = {m.name: member_is_paused(obj, m) for m in members}
        # A member that does not answer is not waited for: like a member key that is not updated any more.
        remaining = [name for name, state in states.items() if state is not None and state != paused]
        if not remaining or clock() >= deadline:
            break
        sleep(1)
    if remaining:
        click.echo("{} members didn't recognized pause state after {} seconds".format(", ".join(remaining), wait_s))
        return
    click.echo("Success: cluster management is {}".format("paused" if paused else "resumed"))


def toggle_pause(obj: CtlContext, cluster_name: str, paused: bool, wait: bool) -> None:
    info = obj.fetch(cluster_name)
    if bool(info.body.get("pause")) == paused:
        raise CtlError("Cluster is {} paused".format("already" if paused else "not"))
    members = leader_first(info)
    for member in members:
        reply = try_call(obj, member, "PATCH", "config", {"pause": paused or None})
        if reply is None:
            continue
        if reply.status == 200:
            if wait:
                wait_until_pause_is_applied(obj, members, paused, loop_wait(obj, info))
            else:
                click.echo("Success: cluster management is {}".format("paused" if paused else "resumed"))
        else:
            action = "pause" if paused else "resume"
            click.echo(f"Failed: {action} cluster management status code={reply.status}, ({reply.text})")
        return
    raise CtlError("Can not find accessible cluster member")


@click.command("pause", help="Disable auto failover")
@arg_cluster_name
@click.option("--wait", help="Wait until pause is applied on all nodes", is_flag=True)
@click.pass_obj
def pause(obj: CtlContext, cluster_name: str | None, wait: bool) -> None:
    toggle_pause(obj, require_name(cluster_name), True, wait)


@click.command("resume", help="Resume auto failover")
@arg_cluster_name
@click.option("--wait", help="Wait until pause is cleared on all nodes", is_flag=True)
@click.pass_obj
def resume(obj: CtlContext, cluster_name: str | None, wait: bool) -> None:
    toggle_pause(obj, require_name(cluster_name), False, wait)

"""What several commands share: members of a cluster by role, the leader first, member selection with its prompts
and confirmation, timestamps, scheduled times, and the REST calls made on a member (E3, E6)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import click

from ctl.config import CtlError
from ctl.discovery import CtlContext
from ctl.render import ClusterInfo, render_members
from ctl.rest import ACTION_TIMEOUT, DEFAULT_TIMEOUT, Reply, RestError, endpoint_url
from shared.model.member import Tags

log = logging.getLogger("havenctl")

# -r/--role: patronictl 3.2's choices; `master` is the older name of `primary`.
ROLES = ("leader", "primary", "standby-leader", "replica", "standby", "any", "master")
role_choice = click.Choice(ROLES)
option_force = click.option("--force", is_flag=True, help="Do not ask for confirmation at any point")


def _default_scope() -> str | None:
    obj = click.get_current_context().find_object(CtlContext)
    return obj.scope if obj is not None else None


arg_cluster_name = click.argument("cluster_name", required=False, default=_default_scope)


def require_name(cluster_name: str | None) -> str:
    """The CLUSTER_NAME argument, which defaults to the configuration's scope."""
    if not cluster_name:
        raise CtlError("No cluster name was given and the configuration has no scope")
    return cluster_name


@dataclass(frozen=True)
class ClusterMember(Tags):
    """One member as GET /cluster shows it (W2)."""

    name: str
    role: str  # leader | standby_leader | sync_standby | replica
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, data: Mapping[str, Any]) -> ClusterMember:
        return cls(str(data.get("name", "")), str(data.get("role", "")), data)

    @property
    def tags(self) -> Mapping[str, Any]:
        tags = self.data.get("tags")
        return tags if isinstance(tags, Mapping) else {}

    @property
    def api_url(self) -> str | None:
        value = self.data.get("api_url")
        return value if isinstance(value, str) and value else None

    @property
    def is_leader(self) -> bool:
        return self.role.endswith("leader")

    def url(self, endpoint: str) -> str:
        if self.api_url is None:
            raise RestError(f"member {self.name} has no REST API address (api_url)")
        return endpoint_url(self.api_url, endpoint)


def cluster_members(info: ClusterInfo) -> list[ClusterMember]:
    return [ClusterMember.from_body(m) for m in info.members]


def leader_of(info: ClusterInfo) -> ClusterMember | None:
    return next((m for m in cluster_members(info) if m.is_leader), None)


def members_with_role(info: ClusterInfo, role: str) -> list[ClusterMember]:
    """patronictl's get_all_members(): the leader for leader/primary/standby-leader, the others for
    replica/standby, everyone for any."""
    members = cluster_members(info)
    leader = leader_of(info)
    if role in ("leader", "primary", "master", "standby-leader"):
        if leader is None:
            return []
        is_standby_leader = leader.role == "standby_leader"
        if role == "leader" or (role == "standby-leader") == is_standby_leader:
            return [leader]
        return []
    if role == "any":
        return members
    return [m for m in members if not m.is_leader]


def leader_first(info: ClusterInfo) -> list[ClusterMember]:
    """Members that have a REST API, the leader first (patronictl's get_all_members_leader_first)."""
    members = [m for m in cluster_members(info) if m.api_url]
    return sorted(members, key=lambda m: not m.is_leader)


def any_member(info: ClusterInfo, role: str | None, member: str | None) -> ClusterMember | None:
    """The first member with `role` (named `member`): the leader when neither is given (dsn, query)."""
    if member is not None:
        if role is not None:
            raise CtlError("--role and --member are mutually exclusive options")
        role = "any"
    elif role is None:
        role = "leader"
    return next((m for m in members_with_role(info, role) if member is None or m.name == member), None)


def output_members(info: ClusterInfo, fmt: str = "pretty") -> None:
    click.echo(render_members(info, False, fmt), nl=False)


def select_members(
    info: ClusterInfo,
    member_names: tuple[str, ...],
    role: str,
    force: bool,
    action: str,
    ask_confirmation: bool = True,
) -> list[ClusterMember]:
    """patronictl's get_members(): show the cluster, filter by role and names, ask which member when none is
    named (reinit asks instead of taking everyone), then confirm."""
    members = members_with_role(info, role)
    candidates = [m.name for m in members]
    if not force or role:
        if not member_names and not candidates:
            raise CtlError(f"{info.name} cluster doesn't have any members")
        output_members(info)
    names: list[str]
    if member_names:
        names = [n for n in candidates if n in member_names]
        if not names:
            raise CtlError(f"No {role} among provided members")
    else:
        names = candidates if action != "reinitialize" else []
    if not names and not force:
        answer = click.prompt(f"Which member do you want to {action} [{', '.join(candidates)}]?", type=str, default="")
        names = [answer]
    for name in names:
        if name not in candidates:
            raise CtlError(f"{name} is not a member of cluster")
    chosen = [m for m in members if m.name in names]
    if ask_confirmation:
        confirm_members_action(chosen, force, action)
    return chosen


def confirm_members_action(
    members: list[ClusterMember], force: bool, action: str, scheduled_at: datetime | None = None
) -> None:
    if force:
        return
    names = ", ".join(m.name for m in members)
    if scheduled_at:
        if not click.confirm(f"Are you sure you want to schedule {action} of members {names} at {scheduled_at}?"):
            raise CtlError(f"Aborted scheduled {action}")
    elif not click.confirm(f"Are you sure you want to {action} members {names}?"):
        raise CtlError(f"Aborted {action}")


def call(obj: CtlContext, member: ClusterMember, method: str, endpoint: str, body: Any = None, **kw: Any) -> Reply:
    """An action on one member. A member that cannot be reached ends the command with an error."""
    try:
        return obj.client().call(method, member.url(endpoint), body, **kw)
    except RestError as exc:
        raise CtlError(f"Member {member.name} is not accessible: {exc}")


def try_call(obj: CtlContext, member: ClusterMember, method: str, endpoint: str, body: Any = None) -> Reply | None:
    """An action on one of several members: None (and a warning, as patronictl logs it) when unreachable."""
    timeout = DEFAULT_TIMEOUT if method == "GET" else ACTION_TIMEOUT
    try:
        return obj.client().call(method, member.url(endpoint), body, timeout=timeout)
    except RestError as exc:
        log.warning("%s", exc)
        log.warning("Member %s is not accessible", member.name)
        return None


def check_response(reply: Reply, member_name: str, action_name: str, silent_success: bool = False) -> bool:
    if reply.status >= 400:
        click.echo(f"Failed: {action_name} for member {member_name}, status code={reply.status}, ({reply.text})")
        return False
    if not silent_success:
        click.echo(f"Success: {action_name} for member {member_name}")
    return True


def timestamp(precision: int = 6, now: datetime | None = None) -> str:
    """patronictl's timestamp(): 2023-09-12 11:52:27.50978 (5 digits of the microseconds), or whole seconds."""
    text = (now or datetime.now()).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[: precision - 7]


def next_hour(now: datetime | None = None) -> str:
    """The example in the schedule prompts: an hour from now."""
    return ((now or datetime.now()) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")


def parse_scheduled(scheduled: str | None) -> datetime | None:
    """None for `now` (or nothing); else the time, in the local time zone when it names none."""
    if scheduled is None or (scheduled or "now") == "now":
        return None
    try:
        value = datetime.fromisoformat(scheduled.strip())
    except ValueError:
        raise CtlError(
            f"Unable to parse scheduled timestamp ({scheduled}). It should be in an unambiguous format (e.g. ISO 8601)"
        )
    return value if value.tzinfo is not None else value.astimezone()


def dynamic_config(obj: CtlContext, info: ClusterInfo) -> dict[str, Any] | None:
    """The dynamic configuration: from the DCS keys when the cluster was read there, else GET /config (leader
    first). None when the cluster has none (502)."""
    if info.dcs is not None:
        return dict(info.dcs.config.data) if info.dcs.config is not None else None
    for member in leader_first(info):
        reply = try_call(obj, member, "GET", "config")
        if reply is None:
            continue
        if reply.status == 502:
            return None
        if reply.status == 200:
            value = reply.json()
            if isinstance(value, dict):
                return value
        log.warning("GET /config on member %s: status code=%s, (%s)", member.name, reply.status, reply.text)
    raise CtlError("Can not find accessible cluster member")

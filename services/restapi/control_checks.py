"""The unsafe endpoints' rules as pure functions: body reading (D24), switchover/failover checks in Patroni's order
(D26, D28, A28), the 412 pre-check (A29 as the API applies it), the switchover poll's verdict, restart filters (D29)
and the reading of a finished control. No sockets, no clock: `now` is a parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.restapi.core import ControlRequest, Response, error_page, text_response
from services.restapi.schedule import parse_schedule, parse_seconds, postgres_version_problem
from services.restapi.snapshot import Snapshot, as_map
from shared.model import Cluster, Failover, Member, Tags
from shared.model.cluster_json import dynamic_config, is_paused, synchronous_mode
from shared.model.member import parse_int

SWITCHOVER, FAILOVER = "switchover", "failover"
DEFAULT_LOOP_WAIT = 10
DEFAULT_PRIMARY_START_TIMEOUT = 300
RESTART_ROLES = ("master", "primary", "replica")

# -- request bodies -----------------------------------------------------------------------------------------------


def read_json(request: ControlRequest, *, optional: bool) -> dict[str, Any] | Response:
    """Patroni's _read_json_content(): 411 without Content-Length (unless the body is optional), 400 unless the body
    is a JSON object (non-empty when required). An optional missing or empty body is {}."""
    if "content-length" not in request.headers:
        return {} if optional else error_page(411)
    try:
        length = int(request.headers.get("content-length") or 0)
    except ValueError:
        return error_page(400, "Bad Request: invalid Content-Length")
    if length == 0 and optional:
        return {}
    try:
        value = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return error_page(400, "Bad Request: the body is not valid JSON")
    if not isinstance(value, dict):
        return error_page(400, "Bad Request: the body is not a JSON object")
    if not value and not optional:
        return error_page(400, "Bad Request: the body is an empty JSON object")
    return value


# -- POST /switchover and POST /failover --------------------------------------------------------------------------


@dataclass(frozen=True)
class FailoverPlan:
    """A switchover or failover request that passed the checks that need no other member."""

    action: str  # SWITCHOVER or FAILOVER, after a failover naming a leader became a switchover
    leader: Any
    candidate: Any
    scheduled_at: datetime | None
    converted: bool = False  # a failover request named a leader: performed as a switchover (Patroni logs it)

    def value(self) -> dict[str, Any]:
        """The /failover value to write: only the fields given (W7)."""
        value: dict[str, Any] = {}
        if self.leader:
            value["leader"] = self.leader
        if self.candidate:
            value["member"] = self.candidate
        if self.scheduled_at is not None:
            value["scheduled_at"] = self.scheduled_at.isoformat()
        return value


def check_failover_request(
    body: Mapping[str, Any], action: str, cluster: Cluster, now: float
) -> FailoverPlan | Response:
    """Every check before the pre-check, in Patroni's order: names, schedule, pause, source == target."""
    leader = body.get("leader")
    candidate = body.get("candidate") or body.get("member")
    scheduled = body.get("scheduled_at")
    paused = is_paused(dynamic_config(cluster))
    status, problem = 400, ""
    if action == FAILOVER and not candidate:
        problem = "Failover could be performed only to a specific candidate"
    elif action == SWITCHOVER and not leader:
        problem = "Switchover could be performed only from a specific leader"
    scheduled_at: datetime | None = None
    if not problem and scheduled:
        if action == FAILOVER:
            problem = "Failover can't be scheduled"
        elif paused:
            problem = "Can't schedule switchover in the paused state"
        else:
            parsed = parse_schedule(scheduled, action, now)
            if parsed.error is not None:
                status, problem = parsed.status or 400, parsed.error
            scheduled_at = parsed.at
    if not problem and paused and not candidate:
        problem = "Switchover is possible only to a specific candidate in a paused state"
    converted = action == FAILOVER and bool(leader)
    if converted:
        action = SWITCHOVER
    if not problem and leader == candidate:
        problem = "Switchover target and source are the same"
    if problem:
        return text_response(status, problem)
    return FailoverPlan(action, leader, candidate, scheduled_at, converted)


def _sync_matches(cluster: Cluster, name: Any) -> bool:
    return isinstance(name, str) and cluster.sync.matches(name)


def precheck_targets(cluster: Cluster, plan: FailoverPlan) -> list[Member] | str:
    """The members whose health decides an immediate request, or the 412 text (Patroni's is_failover_possible)."""
    mode = synchronous_mode(dynamic_config(cluster))
    sync_mode = mode != "off"
    leader_name = cluster.leader_name
    if plan.leader and leader_name != plan.leader:
        return "leader name does not match"
    if plan.candidate:
        # In quorum mode any member may be named: the quorum, not /sync, decides whether it can promote.
        if plan.action == SWITCHOVER and mode == "on" and not _sync_matches(cluster, plan.candidate):
            return "candidate name does not match with sync_standby"
        members = [m for m in cluster.members if m.name == plan.candidate]
        if not members:
            return "candidate does not exists"
    elif sync_mode:
        members = [m for m in cluster.members if cluster.sync.matches(m.name)]
        if not members:
            return f"{plan.action} is not possible: can not find sync_standby"
    else:
        members = [m for m in cluster.members if leader_name is None or (m.name != leader_name and m.api_url)]
        if not members:
            return f"{plan.action} is not possible: cluster does not have members except leader"
    return members


@dataclass(frozen=True)
class _ReportedTags(Tags):
    reported: Mapping[str, Any]

    @property
    def tags(self) -> Mapping[str, Any]:
        return self.reported


def candidate_limitation(status: Any) -> str | None:
    """Why a member that answered GET /patroni with `status` (None: no answer) cannot take over, or None.
    Usable answers are JSON objects with an xlog (or wal) object; lag is not checked here (D26)."""
    if not isinstance(status, Mapping):
        return "not reachable"
    wal = status.get("wal", status.get("xlog"))
    tags = status.get("tags", {})
    if not isinstance(wal, Mapping) or not isinstance(tags, Mapping):
        return "not reachable"
    if _ReportedTags(tags).nofailover:
        return "not allowed to promote"
    if status.get("watchdog_failed"):
        return "not watchdog capable"
    return None


def precheck_verdict(action: str, statuses: Iterable[Any]) -> str | None:
    """None when one of the probed members could take over, else the 412 text."""
    if any(candidate_limitation(status) is None for status in statuses):
        return None
    return f"{action} is not possible: no good candidates have been found"


def is_new_failover(before: Failover | None, current: Failover | None) -> bool:
    """`current` is a /failover value written after the request (not the one that was there before)."""
    return current is not None and (before is None or current.version is None or current.version != before.version)


def failover_poll(
    action: str, leader_before: str | None, candidate: Any, cluster: Cluster, failover_gone: bool
) -> tuple[int, str] | None:
    """The verdict on one cluster view while an immediate switchover runs, or None to keep waiting. Success is a
    leader whose name differs from the leader at request time; `failover_gone` means /failover was removed."""
    new_leader = cluster.leader_name
    if new_leader is not None and new_leader != leader_before:
        verb = action[:-4]  # "switch", "fail"
        if not candidate or candidate == new_leader:
            return 200, f'Successfully {verb}ed over to "{new_leader}"'
        return 200, f'{verb.title()}ed over to "{new_leader}" instead of "{candidate}"'
    if failover_gone:
        return 503, f"{action.title()} failed"
    return None


def failover_unknown(action: str) -> tuple[int, str]:
    return 503, f"{action.title()} status unknown"


def loop_wait(snapshot: Snapshot) -> int:
    """The effective loop_wait: as the brain reports it, else from /config, else 10."""
    if snapshot.node_status is not None:
        value = parse_int(snapshot.node_status.get("loop_wait"))
        if value and value > 0:
            return value
    if snapshot.cluster is not None:
        value = parse_int(dynamic_config(snapshot.cluster).get("loop_wait"))
        if value and value > 0:
            return value
    return DEFAULT_LOOP_WAIT


def failover_poll_s(snapshot: Snapshot) -> float:
    """How long an immediate switchover is awaited: Patroni polls 2*max(10, loop_wait) times, once a second."""
    return 2.0 * max(DEFAULT_LOOP_WAIT, loop_wait(snapshot))


# -- POST /restart -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartPlan:
    body: dict[str, Any]  # the ha.restart body
    timeout: int | None  # seconds, when the request gave one

    @property
    def scheduled(self) -> bool:
        return "schedule" in self.body


def check_restart_request(body: Mapping[str, Any], paused: bool, now: float) -> RestartPlan | Response:
    """The filters in the order the request gives them; the first problem answers. In pause, a schedule is refused
    (500) before any of them is looked at."""
    if paused and "schedule" in body:
        return text_response(500, "Can't schedule restart in the paused state")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "schedule":
            parsed = parse_schedule(value, "restart", now)
            if parsed.error is not None or parsed.at is None:
                return text_response(parsed.status or 422, parsed.error or "")
            out["schedule"] = parsed.at.isoformat()
        elif key == "role":
            if value not in RESTART_ROLES:
                return text_response(400, "PostgreSQL role should be either primary or replica")
            out["role"] = value
        elif key == "postgres_version":
            problem = postgres_version_problem(value)
            if problem is not None:
                return text_response(400, problem)
            out["postgres_version"] = str(value)
        elif key == "timeout":
            seconds = parse_seconds(value)
            if seconds is None or seconds <= 0:
                return text_response(400, "Timeout should be a positive number of seconds")
            out["timeout"] = seconds
        elif key == "restart_pending":
            out["restart_pending"] = True  # 3.2.2: the key's presence, whatever its value, makes it a condition
        else:
            return text_response(400, f"Unknown filter for the scheduled restart: {key}")
    timeout = out.get("timeout")
    return RestartPlan(out, timeout if isinstance(timeout, int) else None)


def primary_start_timeout(cluster: Cluster | None) -> int:
    config = dynamic_config(cluster) if cluster is not None else {}
    for key in ("primary_start_timeout", "master_start_timeout"):
        value = parse_int(config.get(key))
        if value is not None and value >= 0:
            return value
    return DEFAULT_PRIMARY_START_TIMEOUT


def restart_wait_s(plan: RestartPlan, snapshot: Snapshot) -> float:
    """How long an immediate restart is awaited: the start timeout (the request's, else primary_start_timeout)
    plus ttl for the stop and the brain's ticks."""
    start = plan.timeout if plan.timeout is not None else primary_start_timeout(snapshot.cluster)
    return float(start + snapshot.ttl)


# -- answers of the brain -------------------------------------------------------------------------------------------


def brain_answer(reply: Mapping[str, Any], default_status: int, default_message: str) -> Response:
    """A {status, message} reply (or a done control) as Patroni's plain-text answer."""
    status = reply.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        status = default_status
    message = reply.get("message")
    return text_response(status, message if isinstance(message, str) else default_message)


def control_result(node_status: Mapping[str, Any] | None, control_id: str) -> Mapping[str, Any] | None:
    """The control `control_id` once the brain reports it done, else None."""
    controls = as_map(node_status.get("controls")) if node_status is not None else {}
    entry = as_map(controls.get(control_id))
    return entry if entry.get("state") == "done" else None


def has_control(node_status: Mapping[str, Any] | None, control_id: str) -> bool:
    controls = as_map(node_status.get("controls")) if node_status is not None else {}
    return control_id in controls

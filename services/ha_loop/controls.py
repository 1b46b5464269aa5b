"""Operator requests that reach the brain: restart (now or scheduled), reload, reinitialize (D29-D32, A52).

The request functions are what the shell calls when a request arrives: they answer at once and put the
work into memory. `run_controls` is the part of decide() that carries the work out. All pure.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime

from services.ha_loop import actions as a
from services.ha_loop.decision import ControlResult, Decision, Memory, Plan, Reason, RestartRequest, Snapshot
from services.ha_loop.views import PgView
from shared.model import Cluster, Member
from shared.model.cluster_json import synchronous_mode


def request_restart(m: Memory, req: RestartRequest, pg: PgView | None) -> tuple[Memory, int | None, str]:
    """A scheduled restart is stored (one at a time); an immediate one waits for the next tick.
    Returns (memory, status, message); status None means: wait for the control result."""
    if req.schedule:
        if m.scheduled_restart is not None:
            return m, 409, "Another restart is already scheduled"
        start_time = str(pg.raw.get("postmaster_start_time") or "") if pg is not None else ""
        return (
            replace(m, scheduled_restart=replace(req, postmaster_start_time=start_time or None)),
            202,
            "Restart scheduled",
        )
    if m.restart is not None:
        return m, 503, "restart already in progress"
    return replace(m, restart=req, restart_op=None), None, ""


def cancel_restart(m: Memory) -> tuple[Memory, int, str]:
    if m.scheduled_restart is None:
        return m, 404, "no restarts are scheduled"
    return replace(m, scheduled_restart=None), 200, "scheduled restart deleted"


def request_reload(m: Memory) -> tuple[Memory, int, str]:
    return replace(m, reload_pending=True), 202, "reload scheduled"


def request_reinitialize(
    m: Memory, cluster: Cluster | None, pg: PgView | None, me: str, req_id: str, force: bool
) -> tuple[Memory, int, str]:
    """D32: replicas only; `force` does not bypass these checks, it cancels the operation in progress."""
    if cluster is not None and cluster.leader_name == me:
        return m, 503, "I am the leader, can not reinitialize"
    if cluster is None or cluster.leader is None:
        return m, 503, "Cluster has no leader, can not reinitialize"
    op = pg.operation if pg is not None else None
    running = op is not None and op.is_running
    if running and not force and op is not None:
        return m, 503, f"{op.name} already in progress"
    return replace(m, reinit=req_id, reinit_force=running), 200, "reinitialize started"


def version_to_int(text: str) -> int | None:
    """'15.2' -> 150002; '9.6.24' -> 90624 (server_version_num)."""
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        return None
    major, minor, patch = (int(g) if g else 0 for g in match.groups())
    return major * 10000 + minor if major >= 10 else major * 10000 + minor * 100 + patch


def restart_matches(req: RestartRequest, pg: PgView) -> bool:
    """A52: role, postgres_version (restart only if running a lower version), restart_pending."""
    if req.role and req.role in ("master", "primary") and not pg.is_primary:
        return False
    if req.role == "replica" and pg.is_primary:
        return False
    if req.postgres_version:
        wanted = version_to_int(req.postgres_version)
        running = pg.raw.get("server_version")
        if wanted is not None and isinstance(running, int) and running >= wanted:
            return False
    return not (req.restart_pending and not pg.pending_restart)


def _restart_due(s: Snapshot, m: Memory) -> Memory:
    """A31/A52: a scheduled restart runs when due within loop_wait; a stale one (or one overtaken by a
    restart from someone else) is dropped. Never while paused."""
    req = m.scheduled_restart
    if req is None or req.schedule_ts is None or s.paused or s.pg is None:
        return m
    delta = req.schedule_ts - s.now
    if delta > 0:
        return m
    if delta < -int(1.5 * s.dynamic.loop_wait):
        return replace(m, scheduled_restart=None)
    start_time = s.pg.raw.get("postmaster_start_time")
    if req.postmaster_start_time and start_time and start_time != req.postmaster_start_time:
        return replace(m, scheduled_restart=None)  # restarted by someone else meanwhile
    if m.restart is not None:
        return m
    return replace(m, scheduled_restart=None, restart=replace(req, id=f"scheduled-{req.schedule}", schedule=None))


def scheduled_restart_wake(s: Snapshot, m: Memory) -> float | None:
    """Seconds until a scheduled restart is due, when that is within loop_wait (so the tick is on time)."""
    req = m.scheduled_restart
    if req is None or req.schedule_ts is None or s.paused:
        return None
    delta = req.schedule_ts - s.now
    return delta if 0 < delta <= s.dynamic.loop_wait else None


def restart_outcome(m: Memory, op_id: str, succeeded: bool) -> tuple[Memory, tuple[ControlResult, ...]]:
    """The restart operation ended: answer the request that asked for it."""
    if m.restart is None or m.restart_op != op_id:
        return m, ()
    result = (
        ControlResult(m.restart.id, 200, "restarted successfully")
        if succeeded
        else ControlResult(m.restart.id, 503, "restart failed")
    )
    return replace(m, restart=None, restart_op=None, releasing_until=None), (result,)


RELEASE_POLL = 2.0  # seconds between two looks at /sync while waiting to be released (A53)


def is_sync_member(s: Snapshot) -> bool:
    """Listed in /sync by the current leader, in synchronous mode `on` or `quorum`."""
    cluster = s.cluster
    if cluster is None or cluster.leader_name is None or cluster.leader_name == s.me:
        return False
    if synchronous_mode(s.dynamic.data) == "off" or s.facts.tags.nosync:
        return False
    return cluster.sync.leader_matches(cluster.leader_name) and cluster.sync.matches(s.me)


def _release_first(p: Plan, s: Snapshot) -> Decision | None:
    """A53: a synchronous standby tags itself nosync and waits, up to 2 x loop_wait, for the leader to drop
    it from /sync before PostgreSQL stops, so commits do not hang on a standby that is going away."""
    if p.m.releasing_until is None:
        if not is_sync_member(s):
            return None
        p.m = replace(p.m, releasing_until=s.now + 2 * s.dynamic.loop_wait)
    elif s.now >= p.m.releasing_until or not is_sync_member(s):
        return None
    return p.done(Reason.RESTART, "Waiting for primary to release us from synchronous standby", wake_in=RELEASE_POLL)


def run_controls(p: Plan, s: Snapshot, lock_steps: list[a.Action]) -> Decision | None:
    """Carry out a pending restart or reinitialize; None when there is nothing to do."""
    assert s.pg is not None and s.cluster is not None
    p.m = _restart_due(s, p.m)
    pg, cluster = s.pg, s.cluster
    if p.m.reinit is not None:
        source = cluster.get_clone_member(s.me)
        leader = cluster.leader
        if leader is None or cluster.leader_name == s.me or source is None or not source.conn_url:
            p.m = replace(p.m, reinit=None)
        else:
            return p.done(
                Reason.REINITIALIZE,
                f"reinitializing from {source.name}",
                a.PgReinitialize(source.as_ref(), _ref(leader.member)),
            )
    req = p.m.restart
    if req is None or p.m.restart_op:
        return None
    answer: str | None = None
    if pg.state == "starting" or (pg.running and not pg.accepting):
        answer = "postgres is still starting"
    elif not restart_matches(req, pg):
        answer = "restart conditions are not satisfied"
    if answer is not None:
        p.m = replace(p.m, restart=None, restart_op=None, releasing_until=None)
        p.results.append(ControlResult(req.id, 503, answer))
        return None
    waiting = _release_first(p, s)
    if waiting is not None:
        return waiting
    upstream = None if cluster.leader_name == s.me or cluster.leader is None else _ref(cluster.leader.member)
    timeout = req.timeout
    if pg.is_primary and timeout is None and s.dynamic.primary_start_timeout > 0:
        timeout = float(s.dynamic.primary_start_timeout)  # A34: a primary's restart is bounded too
    memory = replace(p.m, starting_since=s.now) if pg.is_primary else p.m
    return p.done(Reason.RESTART, "restarting PostgreSQL", *lock_steps, a.PgRestart(upstream, timeout), memory=memory)


def _ref(member: Member | None) -> dict[str, object] | None:
    return member.as_ref() if member is not None and member.conn_url else None


def parse_schedule(value: str) -> float | None:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None

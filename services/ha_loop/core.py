"""The brain: decide(snapshot, memory) -> Decision. Pure: no clock, no I/O, no randomness, no logging.

Each branch below is one rule of features.md group A; the table tests in tests/unit/test_ha_*.py name
them. A Decision is an ordered plan: the shell stops at the first action that fails or is not applied,
records every outcome in memory with `record()`, and decides again at once. The leader's rules are in
leader.py, the race for a free lock in race.py, operator requests in controls.py.
"""

from __future__ import annotations

from dataclasses import replace

from services.ha_loop import actions as a
from services.ha_loop import failsafe, slots, starting
from services.ha_loop.controls import restart_outcome, run_controls, scheduled_restart_wake
from services.ha_loop.decision import (
    ALLOWED_FROM,
    ControlResult,
    Decision,
    Memory,
    Outcome,
    Plan,
    Reason,
    RestartRequest,
    Snapshot,
    fingerprint,
    local_role,
    record,
    slots_fingerprint,
)
from services.ha_loop.leader import history_update, leader, step_down
from services.ha_loop.race import is_healthiest, unlocked
from shared.model import Member

__all__ = [
    "ALLOWED_FROM",
    "ControlResult",
    "Decision",
    "Memory",
    "Outcome",
    "Reason",
    "RestartRequest",
    "Snapshot",
    "decide",
    "fingerprint",
    "history_update",
    "is_healthiest",
    "local_role",
    "record",
]


def _ref(member: Member | None) -> dict[str, object] | None:
    return member.as_ref() if member is not None and member.conn_url else None


def _i_am(s: Snapshot) -> str:
    return f"I am ({s.me})"


def decide(s: Snapshot, m: Memory) -> Decision:
    pg, cluster = s.pg, s.cluster
    if pg is None:
        return Decision(
            (),
            replace(m, lock_ok=False) if m.lock_ok else m,
            Reason.NO_PG_STATE,
            "waiting for the PostgreSQL controller to report",
        )
    if cluster is None:
        return _dcs_unreachable(s, m)
    p = Plan(s, m)
    if cluster.initialize and m.wiped_since is not None:
        p.m = replace(p.m, wiped_since=None)
    op = pg.operation
    if op is not None and op.is_running:
        if p.m.reinit and p.m.reinit_force and p.m.cancelled_op != op.id and cluster.leader_name != s.me:
            p.m = replace(p.m, cancelled_op=op.id)  # D32: once per operation
            return p.done(Reason.REINITIALIZE, f"cancelling {op.name} for a forced reinitialize", a.PgCancel())
        return _operation_running(p, s, op.name)
    if op is not None and op.id != m.handled_op:
        finished = _operation_finished(p, s)
        if finished is not None:
            return finished
    if not pg.has_data:
        return _uninitialized(p, s)
    if pg.data_dir == "invalid":
        return p.done(
            Reason.DATA_DIR_INVALID, "data directory is not empty but has no valid pg_control: reinitialize it"
        )
    if cluster.initialize and pg.sysid and cluster.initialize != pg.sysid:
        return p.done(
            Reason.SYSID_MISMATCH,
            f"data directory belongs to a different cluster: system identifier {pg.sysid} != {cluster.initialize}",
        )
    if p.m.lock_failure and pg.is_primary and pg.running and not s.paused:
        return _demote_after_lock_failure(p, s)
    if p.m.stepping_down and not pg.running and cluster.leader_name == s.me:
        return step_down(p, s)
    extra = _configure_step(s, p.m)
    if p.m.reload_pending and pg.running:
        extra.append(a.PgReload())
    if not s.paused and pg.running and pg.accepting:  # C34: in pause no slot is dropped
        following = failsafe.virtual_leader(s, p.m) if cluster.leader is None else None
        posted = dict(following.slots) if following is not None and following.slots else None  # C85
        wanted, ignore = slots.desired(s, posted), slots.ignore_matchers(s)
        if slots_fingerprint(wanted, ignore) != p.m.slots_sent:
            extra.append(a.PgSyncSlots(wanted, ignore))
    holding = cluster.leader_name == s.me
    lock_steps: list[a.Action] = [a.RefreshLeader(pg.wal_position)] if holding else []
    if pg.running and pg.accepting and p.m.starting_since is not None:
        p.m = replace(p.m, starting_since=None)
    controlled = run_controls(p, s, lock_steps)
    if controlled is not None:
        return controlled
    if not pg.running:
        decision = _start_postgres(p, s, extra)
    elif not pg.accepting:
        decision = starting.still_starting(p, s, extra, lock_steps)
    elif cluster.leader is None:
        decision = unlocked(p, s, extra)
    elif holding:
        decision = leader(p, s, extra)
    else:
        decision = _follower(p, s, extra)
    wake = scheduled_restart_wake(s, decision.memory)
    if wake is not None and (decision.wake_in is None or wake < decision.wake_in):
        decision = replace(decision, wake_in=wake)
    return decision


def _configure_step(s: Snapshot, m: Memory) -> list[a.Action]:
    """Send the dynamic configuration to postmaster when it changed (F1: applied on the next cycle)."""
    if s.cluster is None or s.pg is None:
        return []
    # A51: while /config is missing, its last known value (bootstrap.dcs if none was ever read), not a step back
    dynamic = s.cluster.config.data if s.cluster.config is not None else dict(s.dynamic.source)
    return [a.PgConfigure(dynamic)] if fingerprint(dynamic) != m.configured else []


def _dcs_unreachable(s: Snapshot, m: Memory) -> Decision:
    """A21: a primary that cannot reach the DCS demotes in offline mode; the lock is not touched.
    A43: not in pause."""
    assert s.pg is not None
    mem = replace(m, lock_ok=False)
    if s.pg.is_primary and s.pg.running and not s.paused:
        kept = failsafe.primary_without_dcs(s, m, s.last_cluster)
        if kept is not None:
            return kept
        return Decision(
            (a.PgDemote("offline", None), a.WatchdogDisarm()),
            mem,
            Reason.DCS_LOST_DEMOTE,
            "demoting self because DCS is not accessible and I was a leader",
        )
    return Decision((), mem, Reason.DCS_UNREACHABLE, "DCS is not accessible")


def _demote_after_lock_failure(p: Plan, s: Snapshot) -> Decision:
    """A20: the refresh failed (CAS lost) -> immediate demotion without touching the lock.
    A21: the DCS did not answer within retry_timeout -> offline demotion."""
    assert s.cluster is not None
    if p.m.lock_failure == "lost":
        leader_member = s.cluster.leader.member if s.cluster.leader and s.cluster.leader_name != s.me else None
        return p.done(
            Reason.LOCK_LOST_DEMOTE,
            "demoted self because failed to update leader lock in DCS",
            a.PgDemote("immediate-nolock", _ref(leader_member)),
        )
    kept = failsafe.primary_without_dcs(s, p.m, s.cluster)
    if kept is not None:
        return kept
    return p.done(
        Reason.DCS_LOST_DEMOTE,
        "demoting self because DCS is not accessible and I was a leader",
        a.PgDemote("offline", None),
    )


def _operation_running(p: Plan, s: Snapshot, name: str) -> Decision:
    """A39: long actions run in the background; the leader keeps its lock fresh meanwhile."""
    assert s.cluster is not None and s.pg is not None
    if s.cluster.leader_name == s.me:
        return p.done(
            Reason.LOCK_DURING_OPERATION, f"updated leader lock during {name}", a.RefreshLeader(s.pg.wal_position)
        )
    if name == "bootstrap":
        return p.done(Reason.BOOTSTRAP_RUNNING, "bootstrap in progress")
    return p.done(Reason.OPERATION_RUNNING, f"{name} in progress")


def _operation_finished(p: Plan, s: Snapshot) -> Decision | None:
    """The outcome of a finished operation: our bootstrap decides the initialize and leader keys (C3,
    C8); a restart answers its request; a failed switchover stop keeps the lock."""
    assert s.pg is not None and s.pg.operation is not None and s.cluster is not None
    op = s.pg.operation
    p.m = replace(p.m, handled_op=op.id)
    succeeded = op.state == "succeeded"
    if op.name == "restart":
        p.m, results = restart_outcome(p.m, op.id, succeeded)
        p.results.extend(results)
    if op.name == "stop" and not succeeded and p.m.stepping_down:
        p.m = replace(p.m, stepping_down=False)
    if op.name != "bootstrap" or not p.m.bootstrapping:
        return None
    p.m = replace(p.m, bootstrapping=False)
    if not succeeded or not s.pg.has_data:
        return p.done(
            Reason.BOOTSTRAP_FAILED,
            "removing initialize key after failed attempt to bootstrap the cluster",
            a.CancelInitialization(),
        )
    sysid = str(op.result.get("sysid") or s.pg.sysid or "")
    steps: list[a.Action] = [a.Initialize(create_new=False, sysid=sysid)]
    if s.cluster.config is None:
        steps.append(a.WriteConfig(dict(s.facts.bootstrap_dcs)))
    if not s.facts.tags.nofailover:
        steps.append(a.TakeLeader())
    return p.done(Reason.BOOTSTRAP_DONE, "initialized a new cluster", *steps)


def _uninitialized(p: Plan, s: Snapshot) -> Decision:
    """C1: only the winner of the initialize race bootstraps; C13: others clone once a leader runs.
    No configuration is sent before: initdb and pg_basebackup need an empty data directory.
    A43: nothing happens in pause."""
    cluster = s.cluster
    assert cluster is not None
    steps: list[a.Action] = []
    if cluster.leader_name == s.me:  # A48: no data but holding the lock
        steps.append(a.ReleaseLeader())
    if s.paused:
        return p.done(Reason.PAUSED, "no action: the data directory is empty and the cluster is paused", *steps)
    if cluster.initialize is None and cluster.leader is None:
        if s.facts.tags.nofailover or not s.facts.can_bootstrap:
            return p.done(Reason.BOOTSTRAP_WAIT, "waiting for leader to bootstrap", *steps)
        steps += [a.Initialize(create_new=True, sysid=""), a.PgBootstrap()]
        return p.done(Reason.BOOTSTRAP_RACE, "trying to bootstrap a new cluster", *steps)
    leader_key = cluster.leader
    if cluster.initialize and leader_key is not None:
        source = cluster.get_clone_member(s.me)
        if source is not None and source.conn_url:
            kind = "leader" if source.name == leader_key.name else "replica"
            steps.append(a.PgClone(source.as_ref(), _ref(leader_key.member)))
            return p.done(Reason.CLONE, f"trying to bootstrap from {kind} '{source.name}'", *steps)
    return p.done(Reason.BOOTSTRAP_WAIT, "waiting for leader to bootstrap", *steps)


def _start_postgres(p: Plan, s: Snapshot, extra: list[a.Action]) -> Decision:
    """A23/A35: PostgreSQL is down. With the lock, restart as primary (or as replica to promote next);
    without it, start as a replica of the leader (or with no upstream). A42: in pause nothing is
    started, and a leader whose PostgreSQL is down lets the lock go."""
    assert s.cluster is not None and s.pg is not None
    cluster, pg = s.cluster, s.pg
    holding = cluster.leader_name == s.me
    if s.paused:
        if holding:
            return p.done(
                Reason.PAUSE_RELEASE,
                "removed leader lock because postgres is not running",
                a.ReleaseLeader(pg.wal_position),
                *extra,
            )
        return p.done(Reason.PAUSED, "no action: postgres is not running", *extra)
    if holding:
        return starting.crashed_primary(p, s, extra)
    leader_member = cluster.leader.member if cluster.leader is not None else None
    return p.done(Reason.START_REPLICA, "starting as a secondary", *extra, a.PgStart("replica", _ref(leader_member)))


def divergence_unchecked(s: Snapshot) -> bool:
    """C22: the last start, demote or follow could not tell whether this replica diverged from the leader (the leader
    was unreachable or still promoting): following it again, one loop_wait later, repeats the check."""
    assert s.pg is not None and s.cluster is not None and s.cluster.leader is not None
    op = s.pg.operation
    leader_role = s.cluster.leader.member.data.get("role")
    return (
        leader_role in ("master", "primary")  # a standby leader or one still promoting has nothing to compare with
        and op is not None
        and not op.is_running
        and op.name in ("start", "demote", "follow")
        and op.result.get("rewind") == "unknown"
        and s.pg.running
        and not s.pg.is_primary
        and (op.finished is None or s.now - op.finished >= s.dynamic.loop_wait)
    )


def _follower(p: Plan, s: Snapshot, extra: list[a.Action]) -> Decision:
    """A17, A24: another node holds the lock; a primary here demotes, a replica follows the leader.
    A42: in pause a second primary is only reported, never demoted."""
    assert s.cluster is not None and s.cluster.leader is not None and s.pg is not None
    leader_key = s.cluster.leader
    mem = replace(p.m, lost_race=False)
    target = _ref(leader_key.member)
    if s.pg.is_primary:
        if s.paused:
            return p.done(
                Reason.PAUSED,
                f"continue to run as primary without lock: {leader_key.name} holds the leader key",
                *extra,
                memory=mem,
            )
        return p.done(
            Reason.DEMOTE_NOT_LEADER,
            "demoting self because I do not have the lock and I was a leader",
            *extra,
            a.WatchdogDisarm(),
            a.PgDemote("immediate-nolock", target),
            memory=mem,
        )
    following = f"no action. {_i_am(s)}, a secondary, and following a leader ({leader_key.name})"
    copy = slots.copy_step(s) if not s.paused else []
    if copy and s.pg.following == leader_key.name:
        return p.done(
            Reason.REPLICA_OK,
            f"copying logical slots {', '.join(copy[0].names)} from the leader",  # type: ignore[attr-defined]
            *extra,
            *copy,
            memory=mem,
        )
    if (s.pg.following != leader_key.name or divergence_unchecked(s)) and target is not None:
        detail = following
        reason = Reason.FOLLOW
        if p.m.lost_race:
            detail, reason = (
                "following new leader after trying and failing to obtain lock",
                Reason.FOLLOW_AFTER_LOST_RACE,
            )
        return p.done(reason, detail, *extra, a.PgFollow(target), memory=mem)
    return p.done(Reason.REPLICA_OK, following, *extra, memory=mem)

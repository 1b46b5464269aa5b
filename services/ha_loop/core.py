"""The brain: decide(snapshot, memory) -> Decision. Pure: no clock, no I/O, no randomness, no logging.

Each branch below is one rule of features.md group A; the table tests in tests/unit/test_ha_decide.py
name them. A Decision is an ordered plan: the shell stops at the first action that fails or is not
applied, records every outcome in memory with `record()`, and decides again at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop.status import NodeFacts, member_data
from services.ha_loop.views import PeerStatus, PgView
from shared.config.dynamic import DynamicConfig
from shared.model import Cluster, Member


class Reason(StrEnum):
    NO_PG_STATE = "no_pg_state"
    DCS_UNREACHABLE = "dcs_unreachable"
    DCS_LOST_DEMOTE = "dcs_lost_demote"
    LOCK_LOST_DEMOTE = "lock_lost_demote"
    BOOTSTRAP_RACE = "bootstrap_race"
    BOOTSTRAP_WAIT = "bootstrap_wait"
    BOOTSTRAP_RUNNING = "bootstrap_running"
    BOOTSTRAP_DONE = "bootstrap_done"
    BOOTSTRAP_FAILED = "bootstrap_failed"
    CLONE = "clone"
    OPERATION_RUNNING = "operation_running"
    LOCK_DURING_OPERATION = "lock_during_operation"
    DATA_DIR_INVALID = "data_dir_invalid"
    SYSID_MISMATCH = "sysid_mismatch"
    START_PRIMARY = "start_primary"
    START_REPLICA = "start_replica"
    STARTING = "starting"
    NEED_PEERS = "need_peers"
    PROMOTE = "promote"
    ACQUIRED_LOCK = "acquired_lock"
    PROMOTE_WITH_LOCK = "promote_with_lock"
    NOT_HEALTHIEST = "not_healthiest"
    NOT_ALLOWED = "not_allowed"
    LEADER_OK = "leader_ok"
    DEMOTE_NOT_LEADER = "demote_not_leader"
    FOLLOW = "follow"
    FOLLOW_AFTER_LOST_RACE = "follow_after_lost_race"
    REPLICA_OK = "replica_ok"


@dataclass(frozen=True)
class Snapshot:
    now: float
    facts: NodeFacts
    dynamic: DynamicConfig
    cluster: Cluster | None  # None: the DCS cannot be read now
    pg: PgView | None  # None: the postmaster controller has not answered recently
    peers: Mapping[str, PeerStatus] | None = None  # None: not probed in this tick


@dataclass(frozen=True)
class Memory:
    """Everything that survives between ticks. The initial value is the cautious one."""

    lock_ok: bool = False  # the last take/refresh of the leader key succeeded
    lock_failure: str | None = None  # "lost" (CAS failed) or "unreachable" (DCS error) on the last refresh
    lost_race: bool = False  # the last take_leader attempt found the key taken
    bootstrapping: bool = False  # we won the initialize race and asked for a bootstrap
    handled_op: str | None = None  # the finished pg operation whose outcome was acted on
    configured: str | None = None  # fingerprint of the dynamic config last sent to postmaster


@dataclass(frozen=True)
class Decision:
    actions: tuple[a.Action, ...]
    memory: Memory
    reason: Reason
    detail: str

    @property
    def needs_peers(self) -> bool:
        return any(isinstance(x, a.ProbePeers) for x in self.actions)


@dataclass(frozen=True)
class Outcome:
    """What the shell observed when running one action."""

    ok: bool  # the request was answered without error
    applied: bool | None = None  # for DCS mutations: false = lost race / failed compare-and-set
    error_code: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.ok and self.applied is not False


def fingerprint(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def record(memory: Memory, action: a.Action, outcome: Outcome) -> Memory:
    """Fold one action's outcome into memory (pure)."""
    if isinstance(action, a.TakeLeader):
        if outcome.succeeded:
            return replace(memory, lock_ok=True, lock_failure=None, lost_race=False)
        return replace(memory, lock_ok=False, lost_race=outcome.ok and outcome.applied is False)
    if isinstance(action, a.RefreshLeader):
        if outcome.succeeded:
            return replace(memory, lock_ok=True, lock_failure=None)
        return replace(memory, lock_ok=False, lock_failure="lost" if outcome.ok else "unreachable")
    if isinstance(action, a.ReleaseLeader) and outcome.ok:
        return replace(memory, lock_ok=False)
    if isinstance(action, a.Initialize) and action.create_new and outcome.succeeded:
        return replace(memory, bootstrapping=True)
    if isinstance(action, a.CancelInitialization) and outcome.ok:
        return replace(memory, bootstrapping=False)
    if isinstance(action, a.PgConfigure) and outcome.ok:
        return replace(memory, configured=fingerprint(action.dynamic))
    if isinstance(action, a.PgDemote) and outcome.ok:
        return replace(memory, lock_failure=None, lock_ok=False)
    return memory


# The role transition table: which PostgreSQL action a decision may take from which local role.
# "stopped" means PostgreSQL is not running; decide() never emits a pg action outside this table.
ALLOWED_FROM: dict[type[a.Action], frozenset[str]] = {
    a.PgBootstrap: frozenset({"uninitialized"}),
    a.PgClone: frozenset({"uninitialized"}),
    a.PgStart: frozenset({"stopped"}),
    a.PgPromote: frozenset({"replica"}),
    a.PgDemote: frozenset({"master"}),
    a.PgFollow: frozenset({"replica"}),
    a.PgStop: frozenset({"master", "replica"}),
}


def local_role(pg: PgView) -> str:
    """The row of ALLOWED_FROM this PostgreSQL is in."""
    if not pg.has_data:
        return "uninitialized"
    if not pg.running:
        return "stopped"
    return "master" if pg.is_primary else "replica"


class _Plan:
    """Builds a Decision; the member key is touched last so that a DCS error cannot block the lock refresh."""

    def __init__(self, s: Snapshot, m: Memory) -> None:
        self.s = s
        self.m = m

    def done(self, reason: Reason, detail: str, *steps: a.Action, memory: Memory | None = None) -> Decision:
        mem = memory or self.m
        plan = list(steps)
        if self.s.cluster is not None and not any(isinstance(x, a.ProbePeers) for x in plan):
            plan.append(a.TouchMember(member_data(self.s.facts, self.s.pg, self.s.dynamic.pause)))
        return Decision(tuple(plan), mem, reason, detail)


def _ref(member: Member | None) -> dict[str, Any] | None:
    return member.as_ref() if member is not None and member.conn_url else None


def _i_am(s: Snapshot) -> str:
    return f"I am ({s.facts.name})"


def decide(s: Snapshot, m: Memory) -> Decision:
    p = _Plan(s, m)
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
    configure = _configure_step(s, m)
    op = pg.operation
    if op is not None and op.is_running:
        return _operation_running(p, s, op.name, configure)
    if op is not None and op.id != m.handled_op:
        finished = _operation_finished(p, s, m)
        if finished is not None:
            return finished
        m = replace(m, handled_op=op.id)
        p = _Plan(s, m)
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
    if m.lock_failure and pg.is_primary and pg.running:
        return _demote_after_lock_failure(p, s, m)
    if not pg.running:
        return _start_postgres(p, s, configure)
    if not pg.accepting:
        steps = [a.RefreshLeader(pg.wal_position)] if cluster.leader_name == s.facts.name else []
        return p.done(Reason.STARTING, "PostgreSQL is still starting up", *configure, *steps)
    if cluster.leader is None:
        return _unlocked(p, s, m, configure)
    if cluster.leader_name == s.facts.name:
        return _leader(p, s, configure)
    return _follower(p, s, m, configure)


def _configure_step(s: Snapshot, m: Memory) -> list[a.Action]:
    """Send the dynamic configuration to postmaster when it changed (F1: applied on the next cycle)."""
    if s.cluster is None or s.pg is None:
        return []
    dynamic = s.cluster.config.data if s.cluster.config is not None else dict(s.facts.bootstrap_dcs)
    return [a.PgConfigure(dynamic)] if fingerprint(dynamic) != m.configured else []


def _dcs_unreachable(s: Snapshot, m: Memory) -> Decision:
    """A21: a primary that cannot reach the DCS demotes in offline mode; the lock is not touched."""
    assert s.pg is not None
    mem = replace(m, lock_ok=False)
    if s.pg.is_primary and s.pg.running:
        return Decision(
            (a.PgDemote("offline", None),),
            mem,
            Reason.DCS_LOST_DEMOTE,
            "demoting self because DCS is not accessible and I was a leader",
        )
    return Decision((), mem, Reason.DCS_UNREACHABLE, "DCS is not accessible")


def _demote_after_lock_failure(p: _Plan, s: Snapshot, m: Memory) -> Decision:
    """A20: the refresh failed (CAS lost) -> immediate demotion without touching the lock.
    A21: the DCS did not answer within retry_timeout -> offline demotion."""
    assert s.cluster is not None
    if m.lock_failure == "lost":
        leader = s.cluster.leader.member if s.cluster.leader and s.cluster.leader_name != s.facts.name else None
        return p.done(
            Reason.LOCK_LOST_DEMOTE,
            "demoted self because failed to update leader lock in DCS",
            a.PgDemote("immediate-nolock", _ref(leader)),
        )
    return p.done(
        Reason.DCS_LOST_DEMOTE,
        "demoting self because DCS is not accessible and I was a leader",
        a.PgDemote("offline", None),
    )


def _operation_running(p: _Plan, s: Snapshot, name: str, configure: list[a.Action]) -> Decision:
    """A39: long actions run in the background; the leader keeps its lock fresh meanwhile."""
    assert s.cluster is not None and s.pg is not None
    if s.cluster.leader_name == s.facts.name:
        return p.done(
            Reason.LOCK_DURING_OPERATION, f"updated leader lock during {name}", a.RefreshLeader(s.pg.wal_position)
        )
    if name == "bootstrap":
        return p.done(Reason.BOOTSTRAP_RUNNING, "bootstrap in progress")
    return p.done(Reason.OPERATION_RUNNING, f"{name} in progress")


def _operation_finished(p: _Plan, s: Snapshot, m: Memory) -> Decision | None:
    """C3, C8: the outcome of our bootstrap decides the initialize and leader keys."""
    assert s.pg is not None and s.pg.operation is not None
    op = s.pg.operation
    if op.name != "bootstrap" or not m.bootstrapping:
        return None
    mem = replace(m, handled_op=op.id, bootstrapping=False)
    if op.state != "succeeded" or not s.pg.has_data:
        return p.done(
            Reason.BOOTSTRAP_FAILED,
            "removing initialize key after failed attempt to bootstrap the cluster",
            a.CancelInitialization(),
            memory=mem,
        )
    sysid = str(op.result.get("sysid") or s.pg.sysid or "")
    steps: list[a.Action] = [a.Initialize(create_new=False, sysid=sysid)]
    assert s.cluster is not None
    if s.cluster.config is None:
        steps.append(a.WriteConfig(dict(s.facts.bootstrap_dcs)))
    if not s.facts.tags.nofailover:
        steps.append(a.TakeLeader())
    return p.done(Reason.BOOTSTRAP_DONE, "initialized a new cluster", *steps, memory=mem)


def _uninitialized(p: _Plan, s: Snapshot) -> Decision:
    """C1: only the winner of the initialize race bootstraps; C13: others clone once a leader runs.
    No configuration is sent before: initdb and pg_basebackup need an empty data directory."""
    cluster = s.cluster
    assert cluster is not None
    steps: list[a.Action] = []
    if cluster.leader_name == s.facts.name:  # A48: no data but holding the lock
        steps.append(a.ReleaseLeader())
    if cluster.initialize is None and cluster.leader is None:
        if s.facts.tags.nofailover or not s.facts.can_bootstrap:
            return p.done(Reason.BOOTSTRAP_WAIT, "waiting for leader to bootstrap", *steps)
        steps += [a.Initialize(create_new=True, sysid=""), a.PgBootstrap()]
        return p.done(Reason.BOOTSTRAP_RACE, "trying to bootstrap a new cluster", *steps)
    leader = cluster.leader
    if cluster.initialize and leader is not None:
        source = cluster.get_clone_member(s.facts.name)
        if source is not None and source.conn_url:
            kind = "leader" if leader is not None and source.name == leader.name else "replica"
            steps.append(a.PgClone(source.as_ref(), _ref(leader.member)))
            return p.done(Reason.CLONE, f"trying to bootstrap from {kind} '{source.name}'", *steps)
    return p.done(Reason.BOOTSTRAP_WAIT, "waiting for leader to bootstrap", *steps)


def _start_postgres(p: _Plan, s: Snapshot, configure: list[a.Action]) -> Decision:
    """A23/A35: PostgreSQL is down. With the lock, restart as primary (or as replica to promote next);
    without it, start as a replica of the leader (or with no upstream)."""
    assert s.cluster is not None and s.pg is not None
    cluster, pg = s.cluster, s.pg
    if cluster.leader_name == s.facts.name:
        role = "primary" if pg.is_primary else "replica"
        return p.done(
            Reason.START_PRIMARY,
            "starting primary after failure",
            a.RefreshLeader(pg.wal_position),
            *configure,
            a.PgStart(role, None),
        )
    leader = cluster.leader.member if cluster.leader is not None else None
    return p.done(Reason.START_REPLICA, "starting as a secondary", *configure, a.PgStart("replica", _ref(leader)))


def _unlocked(p: _Plan, s: Snapshot, m: Memory, configure: list[a.Action]) -> Decision:
    """A5, A8-A12, A16: the leader key is missing; race for it if this node is the healthiest."""
    assert s.cluster is not None and s.pg is not None
    pg, cluster = s.pg, s.cluster
    if s.facts.tags.nofailover:
        if pg.is_primary:
            return p.done(
                Reason.NOT_ALLOWED,
                "demoting self because I am not allowed to become master",
                *configure,
                a.PgDemote("immediate-nolock", None),
            )
        return p.done(
            Reason.NOT_ALLOWED, "following a different leader because I am not allowed to promote", *configure
        )
    if s.peers is None:
        names = tuple(mm.name for mm in cluster.members if mm.name != s.facts.name and mm.api_url and not mm.nofailover)
        if names:
            return Decision((a.ProbePeers(names),), m, Reason.NEED_PEERS, "asking the other members for their state")
        peers: Mapping[str, PeerStatus] = {}
    else:
        peers = s.peers
    healthy, why = is_healthiest(s, peers)
    if not healthy:
        if pg.is_primary:
            return p.done(
                Reason.NOT_HEALTHIEST,
                f"demoting self because i am not the healthiest node ({why})",
                *configure,
                a.PgDemote("immediate-nolock", None),
            )
        return p.done(
            Reason.NOT_HEALTHIEST,
            f"following a different leader because i am not the healthiest node ({why})",
            *configure,
        )
    steps: list[a.Action] = [a.TakeLeader()]
    if not cluster.initialize and pg.sysid:  # A51: the DCS was wiped; the running primary restores it
        steps.append(a.Initialize(create_new=True, sysid=pg.sysid))
    steps += configure
    if pg.is_primary:
        steps.append(_watchdog_arm(s))
        return p.done(Reason.ACQUIRED_LOCK, "acquired session lock as a leader", *steps)
    steps += [_watchdog_arm(s), a.PgPromote()]
    return p.done(Reason.PROMOTE, "promoted self to leader by acquiring session lock", *steps)


def is_healthiest(s: Snapshot, peers: Mapping[str, PeerStatus]) -> tuple[bool, str]:
    """A8-A12: drop out if a reachable member is primary, ahead, or equal with a higher priority."""
    assert s.cluster is not None and s.pg is not None
    pg, cluster, cfg = s.pg, s.cluster, s.dynamic
    my_wal = pg.wal_position or 0
    if cluster.last_lsn and cluster.last_lsn - my_wal > cfg.maximum_lag_on_failover:
        return False, "My wal position exceeds maximum replication lag"
    if cfg.check_timeline and cluster.timeline and pg.timeline is not None and pg.timeline < cluster.timeline:
        return False, f"My timeline {pg.timeline} is behind last known cluster timeline {cluster.timeline}"
    if pg.is_primary and cluster.timeline and pg.timeline is not None and pg.timeline < cluster.timeline:
        # A16: a primary that hung while another was promoted must not take the lock back
        return False, f"My timeline {pg.timeline} is behind last known cluster timeline {cluster.timeline}"
    my_priority = s.facts.tags.failover_priority
    for peer in peers.values():
        if not peer.reachable or peer.nofailover or peer.watchdog_failed or peer.name == s.facts.name:
            continue
        if peer.is_primary:
            return False, f"Primary ({peer.name}) is still alive"
        peer_wal = peer.wal_position or 0
        if peer_wal > my_wal:
            return False, f"Wal position of {peer.name} is ahead of my wal position"
        if peer_wal == my_wal and peer.failover_priority > my_priority:
            return False, f"{peer.name} has equally tolerable WAL position and priority {peer.failover_priority}"
    return True, ""


def _watchdog_arm(s: Snapshot) -> a.Action:
    """C88: timeout = ttl - safety_margin; safety_margin -1 means ttl // 2."""
    margin = s.facts.watchdog_safety_margin
    timeout = s.dynamic.ttl // 2 if margin == -1 else s.dynamic.ttl - margin
    return a.WatchdogArm(float(max(timeout, 1)))


def _leader(p: _Plan, s: Snapshot, configure: list[a.Action]) -> Decision:
    """A4: the holder refreshes the lock each tick; holding the lock as a replica means promote."""
    assert s.pg is not None and s.cluster is not None
    pg = s.pg
    if pg.is_primary:
        steps: list[a.Action] = [a.RefreshLeader(pg.wal_position), a.WatchdogKeepalive()]
        if not s.cluster.initialize and pg.sysid:  # B5, A51: a lost or unfinished initialize key
            steps.append(a.Initialize(create_new=s.cluster.initialize is None, sysid=pg.sysid))
        if s.cluster.config is None:  # A51: the leader restores a missing /config
            steps.append(a.WriteConfig(dict(s.facts.bootstrap_dcs)))
        steps += history_update(s)
        return p.done(Reason.LEADER_OK, f"no action. {_i_am(s)}, the leader with the lock", *steps, *configure)
    if s.facts.tags.nofailover:  # A10: the lock is of no use to a node that may not promote
        return p.done(
            Reason.NOT_ALLOWED,
            "released leader key voluntarily as I am not allowed to promote",
            a.ReleaseLeader(pg.wal_position),
            *configure,
        )
    return p.done(
        Reason.PROMOTE_WITH_LOCK,
        "promoted self to leader because I had the session lock",
        a.RefreshLeader(pg.wal_position),
        *configure,
        _watchdog_arm(s),
        a.PgPromote(),
    )


def history_update(s: Snapshot) -> list[a.Action]:
    """B7: the primary keeps /history in step with its timeline history file. Earlier lines keep the
    promotion timestamps and leaders already in the DCS; the newest gets the file's time and our name."""
    assert s.pg is not None and s.cluster is not None
    timeline, known = s.pg.timeline, s.cluster.history
    lines = list(known.lines) if known is not None else []
    version = known.version if known is not None else None
    if timeline is None:
        return []
    if timeline == 1:
        return [a.WriteHistory("[]", version)] if lines else []
    if lines and lines[-1][0] == timeline - 1 and len(lines[-1]) == 5:
        return []
    source = s.pg.timeline_history
    if not source or source.get("timeline") != timeline or not isinstance(source.get("lines"), list):
        return []
    history = [list(line) for line in source["lines"] if isinstance(line, list) and len(line) == 3]
    if s.cluster.config is not None and s.cluster.config.max_timelines_history:
        history = history[-s.cluster.config.max_timelines_history :]
    by_timeline = {line[0]: line for line in lines if line}
    for line in history[:-1]:
        stored = by_timeline.get(line[0], ())
        if len(stored) >= 4 and stored[1] == line[1]:
            line.extend(stored[3:5])
    if history and history[-1][0] == timeline - 1:
        mtime = source.get("mtime")
        stamp = datetime.fromtimestamp(float(mtime), tz=UTC).astimezone().isoformat() if mtime else ""
        history[-1] += [stamp, s.facts.name]
    return [a.WriteHistory(json.dumps(history, separators=(",", ":")), version)] if history else []


def _follower(p: _Plan, s: Snapshot, m: Memory, configure: list[a.Action]) -> Decision:
    """A17, A24: another node holds the lock; a primary here demotes, a replica follows the leader."""
    assert s.cluster is not None and s.cluster.leader is not None and s.pg is not None
    leader = s.cluster.leader
    mem = replace(m, lost_race=False)
    target = _ref(leader.member)
    if s.pg.is_primary:
        return p.done(
            Reason.DEMOTE_NOT_LEADER,
            "demoting self because I do not have the lock and I was a leader",
            *configure,
            a.WatchdogDisarm(),
            a.PgDemote("immediate-nolock", target),
            memory=mem,
        )
    if s.pg.following != leader.name and target is not None:
        if m.lost_race:
            return p.done(
                Reason.FOLLOW_AFTER_LOST_RACE,
                "following new leader after trying and failing to obtain lock",
                *configure,
                a.PgFollow(target),
                memory=mem,
            )
        return p.done(
            Reason.FOLLOW,
            f"no action. {_i_am(s)}, a secondary, and following a leader ({leader.name})",
            *configure,
            a.PgFollow(target),
            memory=mem,
        )
    return p.done(
        Reason.REPLICA_OK,
        f"no action. {_i_am(s)}, a secondary, and following a leader ({leader.name})",
        *configure,
        memory=mem,
    )

"""The leader key is missing: who takes it (A5, A8-A12, A16, A30, A42).

Automatically, the healthiest node races. After a switchover or a manual failover (a /failover key and no
leader), the named candidate takes it if it is healthy; otherwise the others race without the lag check.
In pause no replica is ever promoted: only a running primary takes the free lock, or the candidate of a
manual failover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from services.ha_loop import actions as a
from services.ha_loop import failsafe, sync
from services.ha_loop.decision import Decision, FailsafeLeader, Plan, Reason, Snapshot
from services.ha_loop.views import PeerStatus
from shared.model import Failover, Member


def _i_am(s: Snapshot) -> str:
    return f"I am ({s.me})"


def watchdog_arm(s: Snapshot) -> a.Action:
    """C88: timeout = ttl - safety_margin; safety_margin -1 means ttl // 2."""
    margin = s.facts.watchdog_safety_margin
    timeout = s.dynamic.ttl // 2 if margin == -1 else s.dynamic.ttl - margin
    return a.WatchdogArm(float(max(timeout, 1)))


def is_healthiest(
    s: Snapshot, peers: Mapping[str, PeerStatus], *, check_lag: bool = True, exclude: str | None = None
) -> tuple[bool, str]:
    """A8-A12, A16: drop out if a reachable member is primary, ahead, or equal with a higher priority."""
    assert s.cluster is not None and s.pg is not None
    pg, cluster, cfg = s.pg, s.cluster, s.dynamic
    my_wal = pg.wal_position or 0
    if check_lag and cluster.last_lsn and cluster.last_lsn - my_wal > cfg.maximum_lag_on_failover:
        return False, "My wal position exceeds maximum replication lag"
    if cfg.check_timeline and cluster.timeline and pg.timeline is not None and pg.timeline < cluster.timeline:
        return False, f"My timeline {pg.timeline} is behind last known cluster timeline {cluster.timeline}"
    if pg.is_primary and cluster.timeline and pg.timeline is not None and pg.timeline < cluster.timeline:
        # A16: a primary that hung while another was promoted must not take the lock back
        return False, f"My timeline {pg.timeline} is behind last known cluster timeline {cluster.timeline}"
    my_priority = s.facts.tags.failover_priority
    for peer in peers.values():
        if not peer.reachable or peer.nofailover or peer.watchdog_failed or peer.name in (s.me, exclude):
            continue
        if peer.is_primary:
            return False, f"Primary ({peer.name}) is still alive"
        peer_wal = peer.wal_position or 0
        if peer_wal > my_wal:
            return False, f"Wal position of {peer.name} is ahead of my wal position"
        if peer_wal == my_wal and peer.failover_priority > my_priority:
            return False, f"{peer.name} has equally tolerable WAL position and priority {peer.failover_priority}"
    return True, ""


def candidate_is_healthy(s: Snapshot, peer: PeerStatus | None, *, check_lag: bool) -> bool:
    """A29: reachable, not nofailover, watchdog fine, lag within maximum_lag_on_failover, timeline current."""
    assert s.cluster is not None
    if peer is None or not peer.reachable or peer.nofailover or peer.watchdog_failed:
        return False
    cluster, cfg = s.cluster, s.dynamic
    if check_lag and cluster.last_lsn and cluster.last_lsn - (peer.wal_position or 0) > cfg.maximum_lag_on_failover:
        return False
    return not (
        cfg.check_timeline and cluster.timeline and peer.timeline is not None and peer.timeline < cluster.timeline
    )


def _racers(s: Snapshot) -> tuple[str, ...]:
    assert s.cluster is not None
    names = [m.name for m in s.cluster.members if m.name != s.me and m.api_url and not m.nofailover]
    return tuple(names + sorted(failsafe.extra_racers(s)))


def unlocked(p: Plan, s: Snapshot, extra: list[a.Action]) -> Decision:
    assert s.cluster is not None and s.pg is not None
    pg, cluster = s.pg, s.cluster
    failover = cluster.failover  # a scheduled switchover the leader carried out counts as much as an immediate one
    if s.paused:
        return _paused(p, s, extra, failover if failover is not None and not failover.scheduled_at else None)
    if s.facts.tags.nofailover:
        if pg.is_primary:
            return p.done(
                Reason.NOT_ALLOWED,
                "demoting self because I am not allowed to become master",
                *extra,
                a.PgDemote("immediate-nolock", None),
            )
        return p.done(Reason.NOT_ALLOWED, "following a different leader because I am not allowed to promote", *extra)
    following = failsafe.virtual_leader(s, p.m)
    if following is not None:
        return _follow_failsafe_leader(p, s, extra, following)
    if not failsafe.may_take_lock(s):
        return p.done(Reason.NOT_ALLOWED, f"{_i_am(s)} not in /failsafe: I may not become the leader", *extra)
    if failover is not None and failover.candidate == s.me:
        return _take(p, s, extra, failover)  # A30: the named candidate does not need to ask anyone
    waiting = _wait_for_the_primary_after_a_wipe(p, s, extra)
    if waiting is not None:
        return waiting
    if pg.is_primary:
        return _running_primary(p, s, extra, failover)
    names = _racers(s)
    if s.peers is None and names:
        return p.probe(names)
    peers = s.peers or {}
    if failover is not None:
        healthy, why = _manual_failover_race(s, failover, peers)
    else:
        healthy, why = _automatic_race(s, peers)
    if not healthy:
        if pg.is_primary:
            return p.done(
                Reason.NOT_HEALTHIEST,
                f"demoting self because i am not the healthiest node ({why})",
                *extra,
                a.PgDemote("immediate-nolock", None),
            )
        return p.done(
            Reason.NOT_HEALTHIEST, f"following a different leader because i am not the healthiest node ({why})", *extra
        )
    return _take(p, s, extra, failover)


def _running_primary(p: Plan, s: Snapshot, extra: list[a.Action], failover: Failover | None) -> Decision:
    """A8, A16 [src: patroni/ha.py:Ha.is_healthiest_node]: a running primary is the healthiest node without asking
    the others (their positions, read later than its own, may show WAL it has already written), unless its
    timeline is behind the cluster's: then another node was promoted meanwhile, and it must not take the lock back."""
    assert s.cluster is not None and s.pg is not None
    timeline, cluster_timeline = s.pg.timeline, s.cluster.timeline
    if cluster_timeline and timeline is not None and timeline < cluster_timeline:
        why = f"My timeline {timeline} is behind last known cluster timeline {cluster_timeline}"
        return p.done(
            Reason.NOT_HEALTHIEST,
            f"demoting self because i am not the healthiest node ({why})",
            *extra,
            a.PgDemote("immediate-nolock", None),
        )
    return _take(p, s, extra, failover)


def _wait_for_the_primary_after_a_wipe(p: Plan, s: Snapshot, extra: list[a.Action]) -> Decision | None:
    """A51: after a DCS wipe (no /initialize) the running primary takes the lock again. The wipe also removed the
    member keys, so a replica's race could not see that primary; it gives the primary ttl seconds first."""
    assert s.cluster is not None and s.pg is not None
    if s.cluster.initialize or s.pg.is_primary:
        return None
    since = p.m.wiped_since if p.m.wiped_since is not None else s.now
    p.m = replace(p.m, wiped_since=since)
    left = s.dynamic.ttl - (s.now - since)
    if left <= 0:
        return None
    detail = f"the cluster has no /initialize key: waiting {left:.1f} s for a running primary to take the lock"
    return p.done(Reason.NOT_HEALTHIEST, detail, *extra, wake_in=left)


def _follow_failsafe_leader(p: Plan, s: Snapshot, extra: list[a.Action], leader: FailsafeLeader) -> Decision:
    """C85: a primary called POST /failsafe within ttl: it is alive, so nobody races; replicas follow it."""
    assert s.pg is not None
    detail = f"no action. {_i_am(s)}, a secondary, and following a leader in failsafe mode ({leader.name})"
    target = leader.as_ref()
    steps: list[a.Action] = list(extra)
    if not s.pg.is_primary and s.pg.following != leader.name and target is not None:
        steps.append(a.PgFollow(target))
    return p.done(Reason.FAILSAFE_FOLLOW, detail, *steps)


def _automatic_race(s: Snapshot, peers: Mapping[str, PeerStatus]) -> tuple[bool, str]:
    """A14: with synchronous mode active, only the last leader and the synchronous standbys race (`on`), and
    they compare themselves with those only; in quorum mode a racer also needs enough voters' answers."""
    assert s.cluster is not None
    settings = sync.settings_of(s)
    if not sync.may_race(settings, s.cluster, s.me):
        return False, "I am not a synchronous standby"
    members = sync.race_members(settings, s.cluster)
    if members is not None:
        peers = {name: peer for name, peer in peers.items() if name.lower() in members}
    healthy, why = is_healthiest(s, peers)
    if healthy and settings.mode == "quorum":
        voters = {n.lower() for n in s.cluster.sync.members}
        seen = sum(1 for p in peers.values() if p.reachable and p.name.lower() in voters and p.name != s.me)
        if not sync.quorum_votes_ok(settings, s.cluster, s.me, seen):
            return False, f"only {seen} synchronous standbys answered, the quorum is {s.cluster.sync.quorum}"
    return healthy, why


def _manual_failover_race(s: Snapshot, failover: Failover, peers: Mapping[str, PeerStatus]) -> tuple[bool, str]:
    """A30: the named candidate takes the lock if it is healthy; else the others race without the lag
    check, the former leader being excluded from the comparison."""
    assert s.cluster is not None
    if failover.candidate == s.me:
        return True, ""
    if failover.candidate:
        if s.dynamic.synchronous_mode and s.cluster.sync.leader and not s.cluster.sync.matches(s.me):
            return False, f"{failover.candidate} is the candidate and I am not a synchronous standby"
        candidate: Member | None = s.cluster.get_member(failover.candidate, fallback_to_leader=False)
        if candidate is not None and candidate_is_healthy(s, peers.get(candidate.name), check_lag=False):
            return False, f"the candidate {failover.candidate} is healthy"
    return is_healthiest(s, peers, check_lag=False, exclude=failover.leader)


def _take(p: Plan, s: Snapshot, extra: list[a.Action], failover: Failover | None) -> Decision:
    """Take the lock; the new leader clears /failover (A18, A33) and restores a wiped /initialize (A51)."""
    assert s.cluster is not None and s.pg is not None
    pg, cluster = s.pg, s.cluster
    # C89: in required mode the watchdog is armed first, so that a node without one never takes the lock
    arm_first = s.facts.watchdog_required and not s.paused
    steps: list[a.Action] = [watchdog_arm(s)] if arm_first else []
    steps.append(a.TakeLeader())
    if cluster.failover is not None:
        steps.append(a.ClearFailover(cluster.failover.version))
    if not cluster.initialize and pg.sysid:
        steps.append(a.Initialize(create_new=True, sysid=pg.sysid))
    if cluster.config is None:  # A51: restored together with /initialize, from the last known value
        steps.append(a.WriteConfig(dict(s.dynamic.source)))
    steps += extra
    if not s.paused and not arm_first:
        steps.append(watchdog_arm(s))
    if pg.is_primary:
        return p.done(Reason.ACQUIRED_LOCK, "acquired session lock as a leader", *steps)
    steps += sync.on_promotion(sync.settings_of(s), cluster, s.me)
    detail = "promoted self to leader by acquiring session lock"
    if failover is not None:
        detail = f"{'switchover' if failover.leader else 'manual failover'}: {detail}"
    return p.done(Reason.PROMOTE, detail, *steps, a.PgPromote())


def _paused(p: Plan, s: Snapshot, extra: list[a.Action], failover: Failover | None) -> Decision:
    """A42, A43: a running primary takes a free lock (if its sysid matches); a replica is promoted only
    as the named candidate of a manual failover."""
    assert s.cluster is not None and s.pg is not None
    pg, cluster = s.pg, s.cluster
    if failover is not None and failover.candidate == s.me and not s.facts.tags.nofailover:
        return _take(p, s, extra, failover)
    if pg.is_primary and (not cluster.initialize or cluster.initialize == pg.sysid):
        return _take(p, s, extra, None)
    return p.done(Reason.PAUSED, f"no action. {_i_am(s)}, a secondary, and the cluster has no leader", *extra)

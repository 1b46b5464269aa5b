"""A primary that holds the lock while PostgreSQL starts or crashed (A34, A35, A38). Pure.

A crashed primary that holds the lock starts again as a primary (A35), but only for primary_start_timeout
seconds (or the timeout of the POST /restart that restarted it): once that has passed and another member
could take over, PostgreSQL is stopped and the lock released. With primary_start_timeout 0 a crashed primary
lets the lock go at once when a healthy candidate exists.
"""

from __future__ import annotations

from dataclasses import replace

from services.ha_loop import actions as a
from services.ha_loop.decision import Decision, Memory, Plan, Reason, Snapshot
from services.ha_loop.race import candidate_is_healthy


def start_timeout(s: Snapshot, m: Memory) -> float:
    """A38: the restart's own timeout when one was given, else primary_start_timeout."""
    if m.restart is not None and m.restart.timeout is not None:
        return float(m.restart.timeout)
    return float(s.dynamic.primary_start_timeout)


def _candidates(s: Snapshot) -> tuple[str, ...]:
    assert s.cluster is not None
    return tuple(m.name for m in s.cluster.members if m.name != s.me and m.api_url and not m.nofailover)


def failover_possible(s: Snapshot) -> bool | None:
    """Whether a probed member could take over; None when the members must be probed first."""
    names = _candidates(s)
    if not names:
        return False
    if s.peers is None:
        return None
    return any(candidate_is_healthy(s, s.peers.get(name), check_lag=True) for name in names)


def crashed_primary(p: Plan, s: Snapshot, extra: list[a.Action]) -> Decision:
    """A34/A35: PostgreSQL is down and we hold the lock. Start it as a primary with a bounded wait, or, with
    primary_start_timeout 0 and a healthy candidate, release the lock and start as a replica."""
    assert s.pg is not None
    pg = s.pg
    if pg.is_primary and s.dynamic.primary_start_timeout == 0:
        possible = failover_possible(s)
        if possible is None:
            return p.probe(_candidates(s), "primary crashed and primary_start_timeout is 0: checking the candidates")
        if possible:
            return p.done(
                Reason.START_TIMEOUT,
                "released leader key voluntarily as postgres crashed and primary_start_timeout is 0",
                a.ReleaseLeader(pg.wal_position),
                *extra,
                a.PgStart("replica", None),
            )
    role = "primary" if pg.is_primary else "replica"
    timeout = start_timeout(s, p.m) if pg.is_primary and s.dynamic.primary_start_timeout > 0 else None
    return p.done(
        Reason.START_PRIMARY,
        "starting primary after failure",
        a.RefreshLeader(pg.wal_position),
        *extra,
        a.PgStart(role, None, timeout),
        memory=replace(p.m, starting_since=s.now),
    )


def still_starting(p: Plan, s: Snapshot, extra: list[a.Action], lock_steps: list[a.Action]) -> Decision:
    """A38: PostgreSQL runs but does not accept connections yet."""
    assert s.pg is not None and s.cluster is not None
    if s.cluster.leader_name != s.me or not s.pg.is_primary:
        detail = "Still starting up as a standby." if not s.pg.is_primary else "PostgreSQL is still starting up"
        return p.done(Reason.STARTING, detail, *extra, *lock_steps)
    since = p.m.starting_since if p.m.starting_since is not None else s.now
    p.m = replace(p.m, starting_since=since)
    remaining = since + start_timeout(s, p.m) - s.now
    if remaining > 0 or s.paused:
        wake = remaining if 0 < remaining < s.dynamic.loop_wait else None
        detail = f"PostgreSQL is still starting up, {int(remaining)} seconds until timeout"
        return p.done(Reason.STARTING, detail, *lock_steps, *extra, wake_in=wake)
    possible = failover_possible(s)
    if possible is None:
        return p.probe(_candidates(s), "primary start has timed out: checking the candidates")
    if not possible:
        return p.done(
            Reason.STARTING,
            "primary start has timed out, but continuing to wait because failover is not possible",
            *lock_steps,
            *extra,
        )
    # Not accepting connections, so nobody can write to it: the lock may go as soon as the stop is asked for.
    return p.done(
        Reason.START_TIMEOUT,
        "stopped PostgreSQL because of startup timeout",
        a.PgDemote("immediate", None),
        a.ReleaseLeader(None),
        memory=replace(p.m, starting_since=None),
    )

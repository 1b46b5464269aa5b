"""This node holds the leader key (A4, A18, A26, A31, A33, A42, B7, A51).

Each tick the leader refreshes the lock, keeps /initialize, /config and /history right, and looks at
/failover: a switchover or manual failover it can honour makes it stop PostgreSQL gracefully and, once
PostgreSQL is down, release the lock to the candidate; a request it cannot honour is cleaned up.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from services.ha_loop import actions as a
from services.ha_loop import failsafe, sync
from services.ha_loop.decision import Decision, Plan, Reason, Snapshot
from services.ha_loop.race import candidate_is_healthy, watchdog_arm
from services.ha_loop.slots import published_positions
from shared.model import Failover


def _i_am(s: Snapshot) -> str:
    return f"I am ({s.me})"


def leader(p: Plan, s: Snapshot, extra: list[a.Action]) -> Decision:
    assert s.pg is not None and s.cluster is not None
    pg = s.pg
    if not pg.is_primary:
        return _not_primary(p, s, extra)
    steps: list[a.Action] = [a.RefreshLeader(pg.wal_position, published_positions(s), failsafe.topology(s))]
    if not s.paused:
        if p.m.watchdog_lost and s.facts.watchdog_required:
            return _watchdog_lost(p, s, steps, extra)
        steps.append(a.WatchdogKeepalive() if p.m.watchdog_armed else watchdog_arm(s))
    if not s.cluster.initialize and pg.sysid:  # B5, A51: a lost or unfinished initialize key
        steps.append(a.Initialize(create_new=s.cluster.initialize is None, sysid=pg.sysid))
    if s.cluster.config is None:  # A51: the leader restores a missing /config with its last known value
        steps.append(a.WriteConfig(dict(s.dynamic.source)))
    steps += history_update(s)
    steps += sync_steps(s, p.m.sync_lsn)
    if s.cluster.failover is not None:
        decision = _failover_request(p, s, s.cluster.failover, steps, extra)
        if decision is not None:
            return decision
    detail = f"no action. {_i_am(s)}, the leader with the lock"
    if p.m.watchdog_lost and not s.paused:  # automatic mode: carry on, and say so (C89)
        detail += "; the watchdog stopped answering: arming it again"
    return p.done(Reason.LEADER_OK, detail, *steps, *extra)


def _watchdog_lost(p: Plan, s: Snapshot, steps: list[a.Action], extra: list[a.Action]) -> Decision:
    """C89, required mode: a keepalive failed, so for a while nothing could fence this primary. It steps down
    the way a switchover does: PostgreSQL stops with a checkpoint, then the lock is released."""
    return p.done(
        Reason.WATCHDOG_STEP_DOWN,
        "stepping down: the watchdog stopped answering and watchdog mode is required",
        *steps,
        *extra,
        a.WatchdogDisarm(),
        a.PgStop("fast", checkpoint=True),
        memory=replace(p.m, stepping_down=True),
    )


def _not_primary(p: Plan, s: Snapshot, extra: list[a.Action]) -> Decision:
    """Holding the lock as a replica: promote (A18); in pause, or with nofailover, let the lock go."""
    assert s.pg is not None and s.cluster is not None
    pg = s.pg
    if s.paused:
        return p.done(
            Reason.PAUSE_RELEASE,
            "removed leader lock because postgres is not running as primary",
            a.ReleaseLeader(pg.wal_position),
            *extra,
        )
    if s.facts.watchdog_required and p.m.watchdog_refused:  # C89: no watchdog, no leadership
        return p.done(
            Reason.NOT_ALLOWED,
            "released leader key voluntarily as the watchdog could not be activated and it is required",
            a.ReleaseLeader(pg.wal_position),
            *extra,
        )
    if s.facts.tags.nofailover:  # A10: the lock is of no use to a node that may not promote
        return p.done(
            Reason.NOT_ALLOWED,
            "released leader key voluntarily as I am not allowed to promote",
            a.ReleaseLeader(pg.wal_position),
            *extra,
        )
    return p.done(
        Reason.PROMOTE_WITH_LOCK,
        "promoted self to leader because I had the session lock",
        a.RefreshLeader(pg.wal_position),
        *sync.on_promotion(sync.settings_of(s), s.cluster, s.me),
        *extra,
        watchdog_arm(s),
        a.PgPromote(),
    )


def sync_steps(s: Snapshot, sync_lsn: int | None) -> list[a.Action]:
    """C71-C79: the leader keeps synchronous_standby_names and /sync in step, in the right order."""
    assert s.pg is not None and s.cluster is not None
    settings = sync.settings_of(s)
    if settings.mode == "on":
        return sync.plan_on(settings, s.cluster, s.pg, s.me, sync_lsn)
    if settings.mode == "quorum":
        return sync.plan_quorum(settings, s.cluster, s.pg, s.me)
    return sync.plan_off(s.cluster, s.pg)


def _failover_request(
    p: Plan, s: Snapshot, failover: Failover, steps: list[a.Action], extra: list[a.Action]
) -> Decision | None:
    """A26, A31, A33: act on /failover, or clean it up with the reason Patroni logs."""
    assert s.cluster is not None
    action = "switchover" if failover.leader else "manual failover"
    bare = "switchover" if failover.leader else "failover"
    ok_detail = f"no action. {_i_am(s)}, the leader with the lock"

    def cleanup(why: str) -> Decision:
        return p.done(
            Reason.FAILOVER_KEY_CLEANUP,
            f"{why}; cleaning up failover key",
            *steps,
            a.ClearFailover(failover.version),
            *extra,
        )

    if failover.scheduled_at is not None:
        if s.paused:
            return None  # A31: scheduled actions are ignored while paused
        when = failover.scheduled_at.isoformat()
        delta = failover.scheduled_at.timestamp() - s.now
        if delta < -int(1.5 * s.dynamic.loop_wait):
            return cleanup(f"Found a stale {action} value: {when}")
        if delta > 0:
            wake = delta if delta <= s.dynamic.loop_wait else None
            return p.done(
                Reason.SWITCHOVER_AWAIT,
                f"{ok_detail}; awaiting {action} at {when} (in {int(delta)} seconds)",
                *steps,
                *extra,
                wake_in=wake,
            )
    if failover.leader and failover.leader != s.me:
        return cleanup(f"{action}: leader name does not match: {failover.leader} != {s.me}")
    if failover.candidate == s.me:
        return cleanup(f"{action}: I am already the leader, no need to {bare}")
    if not failover.candidate and s.paused:
        return cleanup(f"{action.capitalize()} is possible only to a specific candidate in a paused state")
    candidates = tuple(
        m.name
        for m in s.cluster.members
        if m.name != s.me
        and m.api_url
        and not m.nofailover
        and (not failover.candidate or m.name == failover.candidate)
    )
    if s.peers is None and candidates:
        return p.probe(candidates, f"{action}: checking the candidates")
    peers = s.peers or {}
    if not any(candidate_is_healthy(s, peers.get(name), check_lag=True) for name in candidates):
        return cleanup(f"{action}: no healthy members found, {bare} is not possible")
    return p.done(
        Reason.SWITCHOVER_DEMOTE,
        f"{action}: demoting myself",
        *steps,
        *extra,
        a.WatchdogDisarm(),
        a.PgStop("fast", checkpoint=True),
        memory=replace(p.m, stepping_down=True),
    )


def step_down(p: Plan, s: Snapshot) -> Decision:
    """A26: PostgreSQL stopped for a switchover: hand the lock over with the shutdown checkpoint's LSN."""
    assert s.pg is not None
    checkpoint = (
        s.pg.raw.get("controldata", {}).get("checkpoint_lsn") if isinstance(s.pg.raw.get("controldata"), dict) else None
    )
    lsn = checkpoint if isinstance(checkpoint, int) else s.pg.wal_position
    return p.done(Reason.SWITCHOVER_RELEASE, "released the leader key after a graceful demotion", a.ReleaseLeader(lsn))


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
        history[-1] += [stamp, s.me]
    return [a.WriteHistory(json.dumps(history, separators=(",", ":")), version)] if history else []

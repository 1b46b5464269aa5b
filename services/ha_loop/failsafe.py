"""DCS failsafe mode (features.md C82-C86, A15, D33). Pure.

With `failsafe_mode: true` the leader keeps `/failsafe` = {member name: api_url} up to date. When it can no
longer refresh the leader key because the DCS does not answer (not because it lost a compare-and-set), it
POSTs /failsafe to every other member listed there, each cycle; only if all of them answer `Accepted` does
it stay primary. A replica that accepted such a call treats the caller as its leader for ttl seconds and does
not race for the lock meanwhile; a node missing from `/failsafe` never takes the lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop.decision import Decision, FailsafeLeader, Memory, Reason, Snapshot
from services.ha_loop.slots import published_positions
from services.ha_loop.views import PgView
from shared.model import Cluster
from shared.model.member import parse_bool, slot_name_from_member_name

ACCEPTED = "Accepted"


def enabled(dynamic_data: Mapping[str, Any]) -> bool:
    return bool(parse_bool(dynamic_data.get("failsafe_mode")))


def _listed(cluster: Cluster | None) -> dict[str, str] | None:
    value = cluster.failsafe if cluster is not None else None
    if not isinstance(value, Mapping):
        return None
    return {str(k): str(v) for k, v in value.items()}


def topology(s: Snapshot) -> dict[str, str] | None:
    """C83: what the leader writes to /failsafe with each refresh, when failsafe mode is on and it changed."""
    if s.cluster is None or not enabled(s.dynamic.data):
        return None
    value = {m.name: m.api_url for m in s.cluster.members if m.api_url}
    value.setdefault(s.me, s.facts.api_url)
    return None if _listed(s.cluster) == value else value


def may_take_lock(s: Snapshot) -> bool:
    """A15: with failsafe mode on and a valid /failsafe, only a listed node may become leader."""
    listed = _listed(s.cluster)
    return not enabled(s.dynamic.data) or not listed or s.me in listed


def extra_racers(s: Snapshot) -> dict[str, str]:
    """A15: members listed in /failsafe whose member key is gone are compared in the race too."""
    listed = _listed(s.cluster) if enabled(s.dynamic.data) else None
    if not listed or s.cluster is None:
        return {}
    known = {m.name for m in s.cluster.members}
    return {name: url for name, url in listed.items() if name not in known and name != s.me}


def virtual_leader(s: Snapshot, m: Memory) -> FailsafeLeader | None:
    """C85: a primary that called us within ttl, while failsafe mode is on."""
    leader = m.failsafe_leader
    if leader is None or leader.until <= s.now or not enabled(s.dynamic.data) or leader.name == s.me:
        return None
    return leader


def is_active(s: Snapshot, m: Memory) -> bool:
    """`failsafe_mode_is_active` in /patroni: a primary kept alive by its members, or a replica following one."""
    return m.failsafe_active or virtual_leader(s, m) is not None


def call_body(s: Snapshot) -> dict[str, Any]:
    """D33: the caller's name, conn_url, api_url and slots: the permanent slots' positions (as /status has
    them) and its own physical slot at its current position, for the replicas to advance theirs (C85)."""
    assert s.pg is not None
    slots: dict[str, int] = dict(published_positions(s) or {})
    if s.pg.wal_position is not None:
        slots[slot_name_from_member_name(s.me)] = s.pg.wal_position
    return {"name": s.me, "conn_url": s.facts.conn_url, "api_url": s.facts.api_url, "slots": slots}


def primary_without_dcs(s: Snapshot, m: Memory, last: Cluster | None) -> Decision | None:
    """C84: the DCS does not answer and this primary would demote. With failsafe mode on and a /failsafe that
    lists it, ask every other listed member; stay primary only if all accept. None: demote as usual."""
    if not enabled(s.dynamic.data):
        return None
    listed = _listed(last)
    if not listed or s.me not in listed:
        return None
    others = {name: url for name, url in listed.items() if name != s.me}
    if others and s.failsafe_acks is None:
        return Decision(
            (a.CallFailsafe(tuple(sorted(others.items())), call_body(s)),),
            m,
            Reason.NEED_PEERS,
            "asking the members in /failsafe whether they still see me",
        )
    acks = s.failsafe_acks or {}
    missing = sorted(name for name in others if not acks.get(name))
    if missing:
        return Decision(
            (a.PgDemote("offline", None), a.WatchdogDisarm()),
            replace(m, lock_ok=False, failsafe_active=False),
            Reason.DCS_LOST_DEMOTE,
            f"demoting self because DCS is not accessible and failsafe members {', '.join(missing)} did not answer",
        )
    steps: list[a.Action] = [] if s.paused else [a.WatchdogKeepalive()]
    return Decision(
        tuple(steps),
        replace(m, lock_ok=True, lock_failure=None, failsafe_active=True),
        Reason.FAILSAFE_ACTIVE,
        "continue to run as a leader because failsafe mode is enabled and all members are accessible",
    )


def request(
    m: Memory, body: Mapping[str, Any], now: float, ttl: float, pg: PgView | None, mode_on: bool
) -> tuple[Memory, int, str]:
    """D33, the replica side of POST /failsafe: (memory, HTTP status, text)."""
    if not mode_on:
        return m, 502, ""
    if pg is not None and pg.is_primary and pg.running:
        return m, 500, "Running as a leader"
    slots = body.get("slots")
    leader = FailsafeLeader(
        name=str(body.get("name") or ""),
        conn_url=str(body["conn_url"]) if body.get("conn_url") else None,
        api_url=str(body["api_url"]) if body.get("api_url") else None,
        slots={str(k): int(v) for k, v in slots.items() if isinstance(v, int)} if isinstance(slots, Mapping) else {},
        until=now + ttl,
    )
    if not leader.name:
        return m, 400, "name is required"
    return replace(m, failsafe_leader=leader), 200, ACCEPTED

"""Which replication slots this node keeps (C29-C34), and the slot positions the leader publishes. Pure.

The primary keeps a physical slot for each member that replicates from it; a cascading replica for each
member whose replicatefrom names it. Permanent slots from the dynamic `slots` exist on every node that may
become leader: on replicas they are advanced to the positions the leader publishes in /status, and logical
ones are first copied from the primary. A node never keeps a permanent slot named after itself, and a
nofailover node keeps none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop.decision import Snapshot
from shared.model.member import parse_bool, parse_int, slot_name_from_member_name


def use_slots(s: Snapshot) -> bool:
    local = s.facts.use_slots
    if local is not None:
        return local
    value = s.dynamic.postgresql.get("use_slots", True)
    return bool(parse_bool(value)) if value is not None else True


def permanent_slots(s: Snapshot) -> dict[str, dict[str, Any]]:
    raw = s.dynamic.data.get("slots")
    result: dict[str, dict[str, Any]] = {}
    if not isinstance(raw, Mapping):
        return result
    standby_cluster = bool(s.dynamic.data.get("standby_cluster"))
    for name, spec in raw.items():
        spec = spec if isinstance(spec, Mapping) else {}
        kind = str(spec.get("type") or "physical")
        if kind == "logical":
            if standby_cluster or not spec.get("database") or not spec.get("plugin"):
                continue  # C34: only physical permanent slots in a standby cluster
            result[str(name)] = {"type": "logical", "database": spec["database"], "plugin": spec["plugin"]}
        elif kind == "physical":
            result[str(name)] = {"type": "physical"}
    return result


def desired(s: Snapshot, positions: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """The slots this node keeps now; on a replica, with the positions to advance them to: those the leader
    publishes in /status, or `positions` (C85: those a failsafe primary posted)."""
    assert s.cluster is not None and s.pg is not None
    if not use_slots(s):
        return {}
    cluster, me = s.cluster, s.me
    leader = cluster.leader_name
    primary = leader == me and s.pg.is_primary
    slots: dict[str, dict[str, Any]] = {}
    for member in cluster.members:
        if member.name == me:
            continue
        upstream = member.replicatefrom
        if primary:
            elsewhere = upstream and upstream not in (me, leader) and cluster.has_member(upstream)
            if not elsewhere:
                slots[slot_name_from_member_name(member.name)] = {"type": "physical"}
        elif upstream == me:
            slots[slot_name_from_member_name(member.name)] = {"type": "physical"}
    if s.facts.tags.nofailover and not primary:
        return slots
    if positions is None:
        positions = cluster.status.slots or {}
    own = {me, slot_name_from_member_name(me)}
    for name, spec in permanent_slots(s).items():
        if name in own:
            continue  # C31: a permanent slot named after a member is never created on that member
        entry = dict(spec)
        if not primary:
            lsn = parse_int(positions.get(name))
            if lsn:
                entry["lsn"] = lsn
        slots[name] = entry
    return slots


def ignore_matchers(s: Snapshot) -> tuple[Any, ...]:
    raw = s.dynamic.data.get("ignore_slots")
    return tuple(m for m in raw if isinstance(m, Mapping)) if isinstance(raw, list) else ()


def published_positions(s: Snapshot) -> dict[str, int] | None:
    """B10: the leader's permanent slots' positions for /status (logical: confirmed_flush, physical: restart)."""
    assert s.pg is not None
    local = s.pg.raw.get("slots")
    if not isinstance(local, Mapping):
        return None
    result: dict[str, int] = {}
    for name in permanent_slots(s):
        info = local.get(name)
        if not isinstance(info, Mapping):
            continue
        lsn = info.get("confirmed_flush_lsn") if info.get("type") == "logical" else info.get("restart_lsn")
        value = parse_int(lsn)
        if value:
            result[name] = value
    return result or None


def slot_steps(s: Snapshot, sent: str | None, fingerprint: str) -> list[a.Action]:
    """PgSyncSlots when the wanted set (or a position to advance to) changed since it was last sent."""
    assert s.pg is not None
    if not s.pg.running or not s.pg.accepting or fingerprint == sent:
        return []
    return [a.PgSyncSlots(desired(s), ignore_matchers(s))]


def copy_step(s: Snapshot) -> list[a.Action]:
    """C32: logical slots wanted on this replica that it does not have yet are copied from the leader."""
    assert s.pg is not None and s.cluster is not None
    missing = s.pg.raw.get("slots_to_copy")
    leader = s.cluster.leader
    if s.pg.is_primary or not isinstance(missing, list) or not missing or leader is None or not leader.conn_url:
        return []
    return [a.PgCopySlots(leader.member.as_ref(), tuple(str(n) for n in missing))]

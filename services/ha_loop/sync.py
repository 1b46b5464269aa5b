"""Synchronous replication managed by the leader (C71-C79), in Patroni's `on` mode and in the `quorum` mode
Patroni 4.0 added. Pure.

`on`: `/sync` lists the standbys PostgreSQL waits for (synchronous_standby_names = 'num (a,b)'); only the
last leader and those may be promoted automatically. Order (C73): a standby is added to PostgreSQL first and
published in `/sync` only once it is synchronous and has caught up; it is removed from `/sync` first.

`quorum`: PostgreSQL waits for ANY k of a set S; `/sync` publishes voters V and a quorum q. A candidate may
be promoted when it sees q other voters (q + 1 if it is not a voter) and none is ahead of it. That is safe
as long as q + k >= |V + S| at every moment: any q + 1 voters then include one of the k nodes that
acknowledged the last commit. Changes go DCS-wide first, then PostgreSQL, then DCS-narrow, each step
keeping that invariant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop.decision import Snapshot
from services.ha_loop.views import PgView
from shared.model import Cluster
from shared.model.cluster_json import synchronous_mode
from shared.model.member import parse_int

_ANY = re.compile(r"^\s*ANY\s+(\d+)\s*\((.*)\)\s*$", re.IGNORECASE)
_FIRST = re.compile(r"^\s*(?:FIRST\s+)?(\d+)\s*\((.*)\)\s*$", re.IGNORECASE)


def settings_of(s: Snapshot) -> SyncSettings:
    return SyncSettings.from_config(s.dynamic.data)


@dataclass(frozen=True)
class SyncSettings:
    mode: str  # "off" | "on" | "quorum"
    strict: bool
    count: int  # synchronous_node_count
    max_lag: int  # maximum_lag_on_syncnode; <= 0: off

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> SyncSettings:
        mode = synchronous_mode(data)  # "off" inside a standby cluster (C68)
        return cls(
            mode=mode,
            strict=bool(data.get("synchronous_mode_strict")),
            count=max(1, parse_int(data.get("synchronous_node_count")) or 1),
            max_lag=parse_int(data.get("maximum_lag_on_syncnode")) or -1,
        )


def parse_names(value: str | None) -> tuple[str, int, tuple[str, ...]]:
    """(kind, num, names) of a synchronous_standby_names value; kind is "off", "any", "first" or "star"."""
    text = (value or "").strip()
    if not text:
        return "off", 0, ()
    if text == "*":
        return "star", 1, ()
    match = _ANY.match(text)
    kind = "any"
    if match is None:
        match, kind = _FIRST.match(text), "first"
    if match is None:
        names = tuple(n.strip().strip('"') for n in text.split(",") if n.strip())
        return "first", 1, names
    names = tuple(n.strip().strip('"') for n in match.group(2).split(",") if n.strip() and n.strip() != "*")
    return kind, int(match.group(1)), names


def candidates(s_cluster: Cluster, pg: PgView, me: str, current: Sequence[str], max_lag: int) -> list[str]:
    """C72: streaming standbys registered in the DCS and not tagged nosync; a current sync standby that is
    still connected stays first; the others by how far they got; nofailover members last; a standby lagging
    more than maximum_lag_on_syncnode is not kept (C77)."""
    lsns = _lsns(pg)
    members = {m.name.lower(): m for m in s_cluster.members if m.name != me}
    top = max((v.get("flush", 0) for v in lsns.values()), default=0)
    reference = top if len(lsns) > 1 else (pg.wal_position or top)
    eligible = []
    for name, row in lsns.items():
        member = members.get(name.lower())
        if member is None or member.nosync:
            continue
        lagging = max_lag > 0 and reference - row.get("flush", 0) > max_lag
        eligible.append((member.name, row.get("flush", 0), member.nofailover, lagging))
    current_lower = {c.lower() for c in current}

    def order(item: tuple[str, int, bool, bool]) -> tuple[int, int, int, int, str]:
        name, flush, nofailover, lagging = item
        keep = name.lower() in current_lower and not lagging
        return (0 if keep else 1, 1 if lagging else 0, int(nofailover), -flush, name)

    return [item[0] for item in sorted(eligible, key=order)]


def _lsns(pg: PgView) -> dict[str, dict[str, Any]]:
    raw = pg.raw.get("replication_lsns")
    return {str(k): dict(v) for k, v in raw.items() if isinstance(v, Mapping)} if isinstance(raw, Mapping) else {}


def confirmed(pg: PgView, names: Sequence[str], since_lsn: int | None) -> list[str]:
    """C73: names PostgreSQL treats as synchronous that have flushed past the primary's position at the time
    synchronous_standby_names last changed (so they hold every commit acknowledged before)."""
    lsns = {k.lower(): v for k, v in _lsns(pg).items()}
    result = []
    for name in names:
        row = lsns.get(name.lower())
        if row is None or str(row.get("sync_state")) not in ("sync", "quorum"):
            continue
        if since_lsn is not None and int(row.get("flush") or 0) < since_lsn:
            continue
        result.append(name)
    return result


def same(a_names: Sequence[str], b_names: Sequence[str]) -> bool:
    return {n.lower() for n in a_names} == {n.lower() for n in b_names}


def plan_on(settings: SyncSettings, cluster: Cluster, pg: PgView, me: str, sync_lsn: int | None) -> list[a.Action]:
    """One tick of `on` mode: at most one PostgreSQL change; DCS removals before it, additions after."""
    sync = cluster.sync
    version = sync.version
    current = sync.members if sync.leader_matches(me) else []
    steps: list[a.Action] = []
    if not sync.leader_matches(me):
        steps.append(a.WriteSync((), None, version))
        version = None
    picked = candidates(cluster, pg, me, current, settings.max_lag)[: settings.count]
    kind, num, in_pg = parse_names(pg.raw.get("synchronous_standby_names"))
    good = confirmed(pg, in_pg, sync_lsn) if kind == "first" else []
    keep = [n for n in current if n.lower() in {g.lower() for g in good}]
    if not same(keep, current):
        steps.append(a.WriteSync(tuple(keep), None, version))
        version = None
        current = keep
    if not picked:
        pg_ok = kind == ("star" if settings.strict else "off")
    else:
        pg_ok = kind == "first" and same(in_pg, picked) and num == len(picked)
    if not pg_ok:
        steps.append(a.PgSetSync("on", len(picked), tuple(picked), settings.strict, pg.wal_position))
        return steps
    publish = [n for n in picked if n.lower() in {g.lower() for g in good}]
    if not same(publish, current):
        steps.append(a.WriteSync(tuple(publish), None, version))
    return steps


def plan_quorum(settings: SyncSettings, cluster: Cluster, pg: PgView, me: str) -> list[a.Action]:
    """One tick of `quorum` mode: DCS widen, then PostgreSQL, then (next tick) DCS narrow; every step keeps
    q + k >= |V + S| true for what is stored at that moment."""
    sync = cluster.sync
    version = sync.version
    voters = list(sync.members) if sync.leader_matches(me) else []
    quorum = sync.quorum if sync.leader_matches(me) else 0
    steps: list[a.Action] = []
    if not sync.leader_matches(me):
        voters, quorum = [], 0
    target = candidates(cluster, pg, me, voters, settings.max_lag)
    k2 = min(settings.count, len(target))
    kind, k, in_pg = parse_names(pg.raw.get("synchronous_standby_names"))
    if kind not in ("any",):
        k, in_pg = (0, ()) if kind != "star" else (1, ())
    pg_ok = same(in_pg, target) and k == k2 and (kind == "any" or not target)
    if settings.strict and not target:
        pg_ok = kind == "star"
    if not pg_ok:
        widened = _union(voters, target)
        q1 = max(len(_union(widened, in_pg)) - k, len(_union(widened, target)) - k2, quorum, 0)
        if not same(widened, voters) or q1 != quorum or not sync.leader_matches(me):
            steps.append(a.WriteSync(tuple(widened), q1, version))
        steps.append(a.PgSetSync("quorum", k2, tuple(target), settings.strict, pg.wal_position))
        return steps
    q2 = len(target) - k2
    if not same(voters, target) or quorum != q2 or not sync.leader_matches(me):
        steps.append(a.WriteSync(tuple(target), q2, version))
    return steps


def _union(first: Sequence[str], second: Sequence[str]) -> list[str]:
    seen = {n.lower() for n in first}
    return list(first) + [n for n in second if n.lower() not in seen]


def plan_off(cluster: Cluster, pg: PgView) -> list[a.Action]:
    """C78: synchronous mode switched off: the leader deletes /sync, then clears the parameter."""
    steps: list[a.Action] = []
    if cluster.sync.leader:
        steps.append(a.DeleteSync(cluster.sync.version))
    kind, _, _ = parse_names(pg.raw.get("synchronous_standby_names"))
    if kind != "off":
        steps.append(a.PgSetSync("off", 0, (), False))
    return steps


def on_promotion(settings: SyncSettings, cluster: Cluster, me: str) -> list[a.Action]:
    """A18: before promoting, /sync names this node as leader with no standby, and PostgreSQL waits for none
    (or for any, `*`, when strict): commits are not acknowledged before the standbys are confirmed again."""
    if settings.mode == "off":
        return []
    quorum = 0 if settings.mode == "quorum" else None
    return [
        a.WriteSync((), quorum, cluster.sync.version),
        a.PgSetSync(settings.mode, 0, (), settings.strict),
    ]


def may_race(settings: SyncSettings, cluster: Cluster, me: str) -> bool:
    """A14: with synchronous mode active (a leader in /sync), only the last leader and the listed standbys
    race in `on` mode; in quorum mode everyone may, with enough votes (see quorum_votes_ok)."""
    if settings.mode != "on" or not cluster.sync.leader:
        return True
    return cluster.sync.leader_matches(me) or cluster.sync.matches(me)


def race_members(settings: SyncSettings, cluster: Cluster) -> set[str] | None:
    """The members a racer compares itself with when synchronous mode is active (None: everybody)."""
    if settings.mode == "off" or not cluster.sync.leader:
        return None
    return {n.lower() for n in cluster.sync.members} | {cluster.sync.leader.lower()}


def quorum_votes_ok(settings: SyncSettings, cluster: Cluster, me: str, reachable_voters: int) -> bool:
    """Quorum mode: a candidate needs q other voters (q + 1 when it is not a voter itself), none ahead of it."""
    if settings.mode != "quorum" or not cluster.sync.leader or cluster.sync.leader_matches(me):
        return True
    needed = cluster.sync.quorum + (0 if cluster.sync.matches(me) else 1)
    return reachable_voters >= needed

"""Health-check status codes (D5-D18): pure rules over a Snapshot, the query parameters and the clock."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.restapi.snapshot import Snapshot, as_map
from shared.model.cluster_json import dynamic_config, is_standby_cluster, synchronous_mode
from shared.model.member import parse_bool, parse_int

OK, UNAVAILABLE = 200, 503
Query = Mapping[str, Sequence[str]]

# D9: max-lag in bytes, or with a PostgreSQL memory unit (case-sensitive, as PostgreSQL's).
_LAG_UNITS = {"B": 1, "kB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_LAG = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")
_TAG_PREFIX = "tag_"


def parse_max_lag(value: str | None) -> int | None:
    """Bytes; None (no limit) when absent or unparsable (D9)."""
    if value is None:
        return None
    match = _LAG.match(value)
    if not match or match.group(2) not in ("", *_LAG_UNITS):
        return None
    try:
        number = float(match.group(1)) if any(c in match.group(1) for c in ".eE") else int(match.group(1))
    except (ValueError, OverflowError):
        return None
    try:
        return round(number * _LAG_UNITS.get(match.group(2) or "B", 1))
    except (ValueError, OverflowError):
        return None


def _first(query: Query, key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


@dataclass(frozen=True)
class Codes:
    """The four base answers from which every health endpoint is derived."""

    leader: int
    primary: int
    standby_leader: int
    replica: int
    running: bool
    view_fresh: bool
    is_sync_standby: bool  # listed in /sync in synchronous_mode `on`
    is_quorum_standby: bool = False  # listed in /sync in synchronous_mode `quorum` (4.x)


def _xlog_int(status: Mapping[str, Any], key: str) -> int:
    return parse_int(as_map(status.get("xlog")).get(key)) or 0


def holds_lock(snapshot: Snapshot) -> bool:
    """The brain holds the leader key, its last refresh worked, and the DCS still names this node (D5, D7);
    or it runs in failsafe mode with every member's acknowledgement (C84)."""
    ns = snapshot.node_status
    if ns is None or not ns.get("has_lock") or not ns.get("lock_ok"):
        return False
    if as_map(ns.get("patroni")).get("failsafe_mode_is_active"):
        return True  # C84: the DCS is gone and every member in /failsafe accepted this primary
    return snapshot.cluster is not None and snapshot.cluster.leader_name == snapshot.identity.name


def evaluate(snapshot: Snapshot, status: Mapping[str, Any], query: Query, now: float) -> Codes:
    """`status` is snapshot.status_body(now), computed once per request by the caller."""
    ns = snapshot.node_status or {}
    role = str(ns.get("role") or status.get("role") or "")
    running = status.get("state") == "running"
    view_fresh = snapshot.is_view_fresh(now)
    cluster = snapshot.cluster if view_fresh else None
    tags = as_map(status.get("tags"))

    # D9: the leader position from /status (refreshed every loop_wait), only while the view is valid.
    leader_optime = cluster.last_lsn if cluster is not None else 0
    max_lag = parse_max_lag(_first(query, "lag"))
    lagging = (
        bool(leader_optime) and max_lag is not None and leader_optime > _xlog_int(status, "replayed_location") + max_lag
    )
    noloadbalance = bool(parse_bool(tags.get("noloadbalance")))
    replica = OK if (status.get("role") == "replica" and running and not noloadbalance and not lagging) else UNAVAILABLE

    config = dynamic_config(snapshot.cluster) if snapshot.cluster is not None else {}
    standby_cluster = is_standby_cluster(config) or role == "standby_leader"
    if snapshot.node_status is None:
        leader = primary = standby_leader = replica = UNAVAILABLE
    elif not view_fresh and snapshot.paused:
        # Paused with no valid DCS view: the node's own role decides (Patroni does the same).
        leader = OK if role in ("master", "primary", "standby_leader") else UNAVAILABLE
        primary = OK if role in ("master", "primary") else UNAVAILABLE
        standby_leader = OK if role == "standby_leader" else UNAVAILABLE
    elif holds_lock(snapshot):
        leader = OK
        if standby_cluster:
            primary = replica = UNAVAILABLE
            standby_leader = OK if role in ("replica", "standby_leader") else UNAVAILABLE
        else:
            primary = OK if role == "master" and running else UNAVAILABLE
            standby_leader = UNAVAILABLE
    else:
        leader = primary = standby_leader = UNAVAILABLE

    listed = cluster is not None and cluster.sync.matches(snapshot.identity.name)
    mode = synchronous_mode(config)
    return Codes(
        leader,
        primary,
        standby_leader,
        replica,
        running,
        view_fresh,
        listed and mode == "on",
        listed and mode == "quorum",
    )


def _tags_match(status: Mapping[str, Any], query: Query) -> bool:
    """D10: every ?tag_<key>=<value> must equal the node's tag (non-strings compared as lower-case text)."""
    tags = as_map(status.get("tags"))
    for key, values in query.items():
        if not key.startswith(_TAG_PREFIX) or not values:
            continue
        value = tags.get(key[len(_TAG_PREFIX) :])
        if value is None:
            return False
        text = value if isinstance(value, str) else str(value).lower()
        if text != values[0]:
            return False
    return True


def status_code(
    path: str, query: Query, snapshot: Snapshot, now: float, status: Mapping[str, Any] | None = None
) -> int:
    """The generic handler (D5-D15, D18): the path is matched by substring, in Patroni's order."""
    if snapshot.node_status is None:
        return UNAVAILABLE
    path = "/primary" if path == "/" else path
    status = snapshot.status_body(now) if status is None else status
    codes = evaluate(snapshot, status, query, now)
    ignore_tags = False
    code = UNAVAILABLE
    if "standby_leader" in path or "standby-leader" in path:
        code, ignore_tags = codes.standby_leader, True
    elif "leader" in path:
        code, ignore_tags = codes.leader, True
    elif "master" in path or "primary" in path or "read-write" in path:
        code, ignore_tags = codes.primary, True
    elif "replica" in path:
        code = codes.replica
    elif "read-only" in path and "sync" not in path and "quorum" not in path:
        code = OK if OK in (codes.primary, codes.standby_leader) else codes.replica
    elif "health" in path:
        code = OK if codes.running else UNAVAILABLE
    elif codes.view_fresh:
        sync, quorum = codes.is_sync_standby, codes.is_quorum_standby
        if (
            (path in ("/sync", "/synchronous") and sync)
            or (path == "/quorum" and quorum)
            or (path in ("/async", "/asynchronous") and not sync and not quorum)
        ):
            code = codes.replica
        elif path in ("/read-only-sync", "/read-only-synchronous", "/read-only-quorum"):
            if OK in (codes.primary, codes.standby_leader):
                code = OK
            elif quorum if path == "/read-only-quorum" else sync:
                code = codes.replica
    if code == OK and not ignore_tags and not _tags_match(status, query):
        code = UNAVAILABLE
    return code


def liveness(snapshot: Snapshot, now: float) -> int:
    """D16: the brain's next tick is not overdue by more than ttl (running primary) or 2*ttl; always OK paused."""
    ns = snapshot.node_status
    if ns is None:
        return UNAVAILABLE
    if snapshot.paused:
        return OK
    tick = ns.get("tick")
    next_run = tick.get("next") if isinstance(tick, Mapping) else None
    if isinstance(next_run, bool) or not isinstance(next_run, int | float):
        return UNAVAILABLE
    status = snapshot.status_body()  # what the brain last said, stale or not: its lateness is the question
    is_primary = ns.get("role") == "master" and status.get("state") == "running"
    threshold = snapshot.ttl * (1 if is_primary else 2)
    return OK if now <= next_run + threshold else UNAVAILABLE


def readiness(snapshot: Snapshot, now: float) -> int:
    """D17: the lock holder is ready; anyone else when PostgreSQL runs and the DCS view is valid."""
    if snapshot.node_status is None:
        return UNAVAILABLE
    if holds_lock(snapshot):
        return OK
    if snapshot.status_body(now).get("state") == "running" and snapshot.is_view_fresh(now):
        return OK
    return UNAVAILABLE

"""The REST API's whole knowledge of the world: the latest node_status and cluster_view, as one immutable value.

The subscriber thread builds a new Snapshot for every event and swaps it in with one assignment; request
threads read the current one once per request. Nothing here does I/O, so it is unit-tested without sockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from shared.model import Cluster
from shared.model.member import parse_bool, parse_int
from shared.protocol.endpoints import Topic
from shared.version import PATRONI_API_VERSION

DEFAULT_TTL = 30

# W1: where dcs_last_seen sits in the GET /patroni body (before these keys, in this order of preference).
_AFTER_DCS_LAST_SEEN = ("tags", "database_system_identifier", "pending_restart", "patroni")


# W1 keys that come from PostgreSQL itself: dropped from a stale report.
_PG_FACTS = frozenset(
    {
        "postmaster_start_time",
        "server_version",
        "xlog",
        "timeline",
        "replication",
        "replication_state",
        "sync_standby",
        "quorum_standby",
    }
)


def as_map(value: Any) -> Mapping[str, Any]:
    """`value` when it is a map, else an empty one: published bodies are read tolerantly."""
    return value if isinstance(value, Mapping) else {}


class MalformedEvent(ValueError):
    """An event body that does not have the shape docs/protocol.md gives it: dropped and logged, never served."""


@dataclass(frozen=True)
class Identity:
    """Who this REST API answers for, from the local configuration."""

    name: str
    scope: str


@dataclass(frozen=True)
class Snapshot:
    identity: Identity
    node_status: Mapping[str, Any] | None = None
    node_status_at: float | None = None  # when it arrived (epoch)
    view: Mapping[str, Any] | None = None  # the latest cluster_view body
    view_at: float | None = None
    cluster: Cluster | None = None  # the latest view's keys, parsed once
    ok_view_at: float | None = None  # when the latest view with ok=true arrived

    # -- derived facts used by the handlers -------------------------------------------------------------------

    @property
    def has_node_status(self) -> bool:
        return self.node_status is not None

    @property
    def ttl(self) -> int:
        """The HA ttl: as the brain last reported it, else from the cluster's dynamic config, else 30."""
        if self.node_status is not None:
            ttl = parse_int(self.node_status.get("ttl"))
            if ttl and ttl > 0:
                return ttl
        if self.cluster is not None and self.cluster.config is not None:
            ttl = parse_int(self.cluster.config.data.get("ttl"))
            if ttl and ttl > 0:
                return ttl
        return DEFAULT_TTL

    def is_view_fresh(self, now: float) -> bool:
        """Patroni's "cached cluster is valid": the DCS answered (ok=true) within the last ttl seconds."""
        return self.ok_view_at is not None and now - self.ok_view_at <= self.ttl

    @property
    def dcs_last_seen(self) -> int | None:
        if self.view is None:
            return None
        value = self.view.get("last_seen")
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return None
        return int(value)

    @property
    def paused(self) -> bool:
        if self.node_status is not None and "pause" in self.node_status:
            return bool(parse_bool(self.node_status.get("pause")))
        return bool(self.cluster and self.cluster.pause)

    def is_node_status_stale(self, now: float) -> bool:
        """The brain has not published for longer than ttl: it is hung or gone, and what it said about
        PostgreSQL may no longer be true (a fenced primary must not keep looking alive to the leader race)."""
        return self.node_status_at is not None and now - self.node_status_at > self.ttl

    def status_body(self, now: float | None = None) -> dict[str, Any]:
        """The GET /patroni body (W1): the brain's, with dcs_last_seen from the freshest cluster view.
        When the brain's report is stale, PostgreSQL's facts are dropped and the state is "unknown", the way
        Patroni answers when its status query fails (W1)."""
        patroni = self.node_status.get("patroni") if self.node_status is not None else None
        if isinstance(patroni, Mapping) and patroni:
            body = dict(patroni)
            if now is not None and self.is_node_status_stale(now):
                body = {"state": "unknown", **{k: v for k, v in body.items() if k not in _PG_FACTS and k != "state"}}
        else:
            body = {"state": "unknown", "role": "uninitialized"}
            body["patroni"] = {"version": PATRONI_API_VERSION, "scope": self.identity.scope, "name": self.identity.name}
        last_seen = self.dcs_last_seen
        if last_seen is not None:
            body = _with_dcs_last_seen(body, last_seen)
        return body


def _with_dcs_last_seen(body: dict[str, Any], last_seen: int) -> dict[str, Any]:
    if "dcs_last_seen" in body:
        body["dcs_last_seen"] = last_seen
        return body
    anchor = next((k for k in _AFTER_DCS_LAST_SEEN if k in body), None)
    if anchor is None:
        body["dcs_last_seen"] = last_seen
        return body
    result: dict[str, Any] = {}
    for key, value in body.items():
        if key == anchor:
            result["dcs_last_seen"] = last_seen
        result[key] = value
    return result


def initial(identity: Identity) -> Snapshot:
    return Snapshot(identity)


def with_node_status(snapshot: Snapshot, body: Any, now: float) -> Snapshot:
    if not isinstance(body, Mapping):
        raise MalformedEvent("node_status body is not a map")
    name = body.get("name")
    if name is not None and name != snapshot.identity.name:
        raise MalformedEvent(f"node_status of {name!r}, this REST API serves {snapshot.identity.name!r}")
    patroni = body.get("patroni")
    if patroni is not None and not isinstance(patroni, Mapping):
        raise MalformedEvent("node_status.patroni is not a map")
    tick = body.get("tick")
    if tick is not None and not isinstance(tick, Mapping):
        raise MalformedEvent("node_status.tick is not a map")
    return replace(snapshot, node_status=dict(body), node_status_at=now)


def with_cluster_view(snapshot: Snapshot, body: Any, now: float) -> Snapshot:
    if not isinstance(body, Mapping):
        raise MalformedEvent("cluster_view body is not a map")
    keys = body.get("keys")
    if not isinstance(keys, Mapping):
        raise MalformedEvent("cluster_view.keys is not a map")
    scope = body.get("scope")
    if scope is not None and scope != snapshot.identity.scope:
        raise MalformedEvent(f"cluster_view of scope {scope!r}, this REST API serves {snapshot.identity.scope!r}")
    ok = body.get("ok")
    if not isinstance(ok, bool):
        raise MalformedEvent("cluster_view.ok is not a boolean")
    try:
        cluster = Cluster.from_wire(keys)
    except Exception as exc:  # the model is tolerant; anything left is a shape we cannot serve
        raise MalformedEvent(f"cluster_view.keys cannot be parsed: {type(exc).__name__}")
    return replace(
        snapshot,
        view=dict(body),
        view_at=now,
        cluster=cluster,
        ok_view_at=now if ok else snapshot.ok_view_at,
    )


def apply_event(snapshot: Snapshot, topic: str, body: Any, now: float) -> Snapshot:
    """The next snapshot after one event; MalformedEvent leaves the caller's snapshot untouched."""
    if topic == Topic.NODE_STATUS:
        return with_node_status(snapshot, body, now)
    if topic == Topic.CLUSTER_VIEW:
        return with_cluster_view(snapshot, body, now)
    raise MalformedEvent(f"unexpected topic {topic!r}")

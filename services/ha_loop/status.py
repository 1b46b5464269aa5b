"""What the node publishes about itself: its member key (W6) and the body of GET /patroni (W1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.ha_loop.views import PgView
from shared.model import Cluster
from shared.model.member import LocalTags
from shared.version import PATRONI_API_VERSION

# States in which the member key carries xlog_location and timeline (W6).
_POSITION_STATES = ("running", "restarting", "starting")


@dataclass(frozen=True)
class NodeFacts:
    """What the brain knows about its own node from the local configuration; fixed for its lifetime."""

    name: str
    scope: str
    conn_url: str
    api_url: str
    tags: LocalTags = field(default_factory=LocalTags)
    published_tags: Mapping[str, Any] = field(default_factory=dict)
    can_bootstrap: bool = True  # a bootstrap section is configured (C1)
    bootstrap_dcs: Mapping[str, Any] = field(default_factory=dict)
    proxy_url: str | None = None
    watchdog_required: bool = False
    watchdog_safety_margin: int = 5
    use_slots: bool | None = None  # the local postgresql.use_slots, which overrides the dynamic one


def node_role(pg: PgView | None) -> str:
    if pg is None:
        return "uninitialized"
    if not pg.has_data:
        return "uninitialized"
    return pg.role if pg.role in ("master", "replica", "standby_leader", "demoted") else "replica"


def member_data(facts: NodeFacts, pg: PgView | None, pause: bool, nosync: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "conn_url": facts.conn_url,
        "api_url": facts.api_url,
        "state": pg.state if pg else "unknown",
        "role": node_role(pg),
        "version": PATRONI_API_VERSION,
    }
    if facts.proxy_url:
        data["proxy_url"] = facts.proxy_url
    busy = pg is not None and pg.operation is not None and pg.operation.is_running
    busy_other = busy and pg is not None and pg.operation is not None and pg.operation.name != "promote"
    if pg and pg.running and pg.state in _POSITION_STATES and not busy_other:
        if pg.wal_position is not None:
            data["xlog_location"] = pg.wal_position
        if pg.timeline is not None:
            data["timeline"] = pg.timeline
    if pg and pg.role == "replica" and pg.raw.get("replication_state"):
        data["replication_state"] = pg.raw["replication_state"]
    tags = dict(facts.published_tags)
    if nosync:  # A53: a synchronous standby about to stop asks the leader to release it first
        tags["nosync"] = True
    if tags:
        data["tags"] = tags
    if pg and pg.pending_restart:
        data["pending_restart"] = True
    if pause:
        data["pause"] = True
    return data


def patroni_body(
    facts: NodeFacts,
    pg: PgView | None,
    cluster: Cluster | None,
    pause: bool,
    watchdog_failed: bool = False,
    scheduled_restart: Mapping[str, Any] | None = None,
    sync_role: str | None = None,
    failsafe_active: bool = False,
) -> dict[str, Any]:
    """GET /patroni (W1). dcs_last_seen is added by the REST API from the freshest cluster view."""
    raw = pg.raw if pg else {}
    body: dict[str, Any] = {"state": pg.state if pg else "unknown"}
    running = pg is not None and pg.running and pg.accepting
    if running and raw.get("postmaster_start_time"):
        body["postmaster_start_time"] = raw["postmaster_start_time"]
    body["role"] = node_role(pg)
    if running:
        if raw.get("server_version"):
            body["server_version"] = raw["server_version"]
        if isinstance(raw.get("xlog"), Mapping):
            body["xlog"] = dict(raw["xlog"])
        if pg is not None and pg.timeline is not None:
            body["timeline"] = pg.timeline
        if raw.get("replication"):
            body["replication"] = list(raw["replication"])
        if pg is not None and pg.role == "replica" and raw.get("replication_state"):
            body["replication_state"] = raw["replication_state"]
        if pg is not None and pg.role == "replica" and sync_role:
            body[sync_role] = True  # sync_standby (`on`) or quorum_standby (`quorum`, 4.x)
    if cluster is not None and cluster.is_unlocked:
        body["cluster_unlocked"] = True
    if failsafe_active:
        body["failsafe_mode_is_active"] = True
    if pause:
        body["pause"] = True
    if pg is not None and pg.pending_restart:
        body["pending_restart"] = True
    if watchdog_failed:
        body["watchdog_failed"] = True
    if facts.published_tags:
        body["tags"] = dict(facts.published_tags)
    if pg is not None and pg.sysid:
        body["database_system_identifier"] = pg.sysid
    body["patroni"] = {"version": PATRONI_API_VERSION, "scope": facts.scope, "name": facts.name}
    if scheduled_restart:
        body["scheduled_restart"] = dict(scheduled_restart)
    return body

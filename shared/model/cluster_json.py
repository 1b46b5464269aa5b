"""GET /cluster (W2, D21): the cluster snapshot as Patroni 3.2 shows it; used by the REST API and havenctl. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from shared.model import Cluster, Member
from shared.model.member import parse_bool, parse_int

# Copied from the member key as they are, when present (W2).
_OPTIONAL_ATTRIBUTES = ("timeline", "pending_restart", "scheduled_restart", "tags")
_DEFAULT_PG_PORT = 5432


def dynamic_config(cluster: Cluster) -> Mapping[str, Any]:
    return cluster.config.data if cluster.config is not None else {}


def is_standby_cluster(config: Mapping[str, Any]) -> bool:
    """A standby_cluster section that names a source (host, port or restore_command) (C.7)."""
    section = config.get("standby_cluster")
    return isinstance(section, Mapping) and any(section.get(k) for k in ("host", "port", "restore_command"))


def synchronous_mode(config: Mapping[str, Any]) -> str:
    """ "off", "on" or "quorum" (4.x); never synchronous inside a standby cluster (C68)."""
    raw = config.get("synchronous_mode")
    if is_standby_cluster(config):
        return "off"
    if isinstance(raw, str) and raw.strip().lower() == "quorum":
        return "quorum"
    return "on" if parse_bool(raw) else "off"


def is_synchronous_mode(config: Mapping[str, Any]) -> bool:
    return synchronous_mode(config) != "off"


def is_paused(config: Mapping[str, Any]) -> bool:
    return bool(parse_bool(config.get("pause")))


def _host_port(member: Member) -> tuple[str | None, int | None]:
    """host and port of the member's PostgreSQL, from conn_kwargs when published, else from conn_url."""
    kwargs = member.data.get("conn_kwargs")
    if isinstance(kwargs, Mapping) and kwargs.get("host"):
        return str(kwargs["host"]), parse_int(kwargs.get("port")) or _DEFAULT_PG_PORT
    if not member.conn_url:
        return None, None
    try:
        parsed = urlparse(member.conn_url)
        return parsed.hostname, parsed.port or _DEFAULT_PG_PORT
    except ValueError:  # a malformed port in the URL
        return None, None


def _role(member: Member, leader_name: str | None, cluster: Cluster, config: Mapping[str, Any]) -> str:
    if member.name == leader_name:
        return "standby_leader" if is_standby_cluster(config) else "leader"
    mode = synchronous_mode(config)
    if mode != "off" and cluster.sync.matches(member.name):
        return "quorum_standby" if mode == "quorum" else "sync_standby"
    return "replica"


def member_json(member: Member, cluster: Cluster, config: Mapping[str, Any]) -> dict[str, Any]:
    leader_name = cluster.leader_name
    role = _role(member, leader_name, cluster, config)
    # Replicas (and a standby leader) show how they replicate; the primary shows its PostgreSQL state.
    replication_state = (member.replication_state or "") if role != "leader" else ""
    state = replication_state or str(member.data.get("state", ""))
    body: dict[str, Any] = {"name": member.name, "role": role, "state": state, "api_url": member.api_url}
    host, port = _host_port(member)
    if host:
        body["host"] = host
        if port:
            body["port"] = port
    body.update({key: member.data[key] for key in _OPTIONAL_ATTRIBUTES if key in member.data})
    if member.name != leader_name:
        lsn = member.lsn
        if lsn is None:
            body["lag"] = "unknown"
        else:
            body["lag"] = max(cluster.last_lsn - lsn, 0)
    return body


def cluster_as_json(cluster: Cluster, scope: str) -> dict[str, Any]:
    config = dynamic_config(cluster)
    members = sorted((member_json(m, cluster, config) for m in cluster.members), key=lambda m: str(m["name"]))
    body: dict[str, Any] = {"members": members, "scope": scope}
    if is_paused(config):
        body["pause"] = True
    failover = cluster.failover
    if failover is not None and failover.scheduled_at is not None:
        scheduled: dict[str, Any] = {"at": failover.scheduled_at.isoformat()}
        if failover.leader:
            scheduled["from"] = failover.leader
        if failover.candidate:
            scheduled["to"] = failover.candidate
        body["scheduled_switchover"] = scheduled
    return body

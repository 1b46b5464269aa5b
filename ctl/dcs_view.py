"""A GET /cluster body (W2) built from a cluster read in the DCS, for a configuration that names only the cluster:
what patronictl shows from the DCS, in the shape havenctl renders. Pure.

The same rules as the REST API's own GET /cluster (services/restapi/cluster_json.py), which havenctl may not import
(programs share only shared/): keep the two in step, or move that module under shared/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from shared.model import Cluster, Member
from shared.model.member import parse_bool, parse_int

_OPTIONAL_ATTRIBUTES = ("timeline", "pending_restart", "scheduled_restart", "tags")
_DEFAULT_PG_PORT = 5432


def is_standby_cluster(config: Mapping[str, Any]) -> bool:
    section = config.get("standby_cluster")
    return isinstance(section, Mapping) and any(section.get(k) for k in ("host", "port", "restore_command"))


def is_synchronous_mode(config: Mapping[str, Any]) -> bool:
    return bool(parse_bool(config.get("synchronous_mode"))) and not is_standby_cluster(config)


def _host_port(member: Member) -> tuple[str | None, int | None]:
    kwargs = member.data.get("conn_kwargs")
    if isinstance(kwargs, Mapping) and kwargs.get("host"):
        return str(kwargs["host"]), parse_int(kwargs.get("port")) or _DEFAULT_PG_PORT
    if not member.conn_url:
        return None, None
    try:
        parsed = urlparse(member.conn_url)
        return parsed.hostname, parsed.port or _DEFAULT_PG_PORT
    except ValueError:
        return None, None


def _member_body(member: Member, cluster: Cluster, config: Mapping[str, Any]) -> dict[str, Any]:
    leader_name = cluster.leader_name
    if member.name == leader_name:
        role = "standby_leader" if is_standby_cluster(config) else "leader"
    elif is_synchronous_mode(config) and cluster.sync.matches(member.name):
        role = "sync_standby"
    else:
        role = "replica"
    replication_state = (member.replication_state or "") if role != "leader" else ""
    body: dict[str, Any] = {
        "name": member.name,
        "role": role,
        "state": replication_state or str(member.data.get("state", "")),
        "api_url": member.api_url,
    }
    host, port = _host_port(member)
    if host:
        body["host"] = host
        if port:
            body["port"] = port
    body.update({key: member.data[key] for key in _OPTIONAL_ATTRIBUTES if key in member.data})
    if member.name != leader_name:
        lsn = member.lsn
        body["lag"] = "unknown" if lsn is None else max(cluster.last_lsn - lsn, 0)
    return body


def cluster_body(cluster: Cluster, scope: str) -> dict[str, Any]:
    config = cluster.config.data if cluster.config is not None else {}
    members = sorted((_member_body(m, cluster, config) for m in cluster.members), key=lambda m: str(m["name"]))
    body: dict[str, Any] = {"members": members, "scope": scope}
    if parse_bool(config.get("pause")):
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


def sysid_label(cluster: Cluster) -> str:
    """The header's system identifier: the initialize key, or what patronictl writes when it is missing/empty."""
    if cluster.initialize is None:
        return "uninitialized"
    return cluster.initialize or "initializing"

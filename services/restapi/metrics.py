"""GET /metrics (D20, W5): Prometheus text built from the GET /patroni body. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.restapi.snapshot import as_map
from shared.model.member import parse_int
from shared.version import PATRONI_API_VERSION

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_seconds(value: Any) -> float | int:
    """'2023-08-18 11:03:37.966359+00:00' -> seconds since the epoch; 0 when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return 0
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH).total_seconds()


def _padded_semver(version: str) -> str:
    """3.2.2 -> 030202."""
    return "".join(part.zfill(2) for part in version.split("."))


def render(status: Mapping[str, Any], scope: str, name: str) -> str:
    xlog = as_map(status.get("xlog"))
    role = status.get("role")
    server_version = parse_int(status.get("server_version")) or 0
    labels = f'{{scope="{scope}",name="{name}"}}'
    lines: list[str] = []

    def metric(metric_name: str, kind: str, help_text: str, value: Any, sep: str = "") -> None:
        lines.append(f"# HELP {metric_name} {help_text}")
        lines.append(f"# TYPE {metric_name} {kind}")
        lines.append(f"{metric_name}{sep}{labels} {value}")

    metric("patroni_version", "gauge", "Patroni semver without periods.", _padded_semver(PATRONI_API_VERSION))
    metric(
        "patroni_postgres_running",
        "gauge",
        "Value is 1 if Postgres is running, 0 otherwise.",
        int(status.get("state") == "running"),
    )
    metric(
        "patroni_postmaster_start_time",
        "gauge",
        "Epoch seconds since Postgres started.",
        _epoch_seconds(status.get("postmaster_start_time")),
    )
    is_primary = int(role in ("master", "primary"))
    metric("patroni_master", "gauge", "Value is 1 if this node is the leader, 0 otherwise.", is_primary)
    metric("patroni_primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise.", is_primary)
    metric(
        "patroni_xlog_location",
        "counter",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        parse_int(xlog.get("location")) or 0,
    )
    metric(
        "patroni_standby_leader",
        "gauge",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        int(role == "standby_leader"),
    )
    metric("patroni_replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise.", int(role == "replica"))
    metric(
        "patroni_sync_standby",
        "gauge",
        "Value is 1 if this node is a sync standby replica, 0 otherwise.",
        int(bool(status.get("sync_standby"))),
    )
    metric(
        "patroni_xlog_received_location",
        "counter",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        parse_int(xlog.get("received_location")) or 0,
    )
    metric(
        "patroni_xlog_replayed_location",
        "counter",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        parse_int(xlog.get("replayed_location")) or 0,
    )
    metric(
        "patroni_xlog_replayed_timestamp",
        "gauge",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        _epoch_seconds(xlog.get("replayed_timestamp")),
    )
    metric(
        "patroni_xlog_paused",
        "gauge",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        int(xlog.get("paused") is True),
    )
    if server_version >= 90600:
        replication_state = status.get("replication_state")
        metric(
            "patroni_postgres_streaming",
            "gauge",
            "Value is 1 if Postgres is streaming, 0 otherwise.",
            int(replication_state == "streaming"),
        )
        metric(
            "patroni_postgres_in_archive_recovery",
            "gauge",
            "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            int(replication_state == "in archive recovery"),
        )
    # Patroni 3.2 writes a space between this one metric's name and its labels; scrapers accept it.
    metric(
        "patroni_postgres_server_version",
        "gauge",
        "Version of Postgres (if running), 0 otherwise.",
        server_version,
        sep=" ",
    )
    metric(
        "patroni_cluster_unlocked",
        "gauge",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        int(bool(status.get("cluster_unlocked"))),
    )
    metric(
        "patroni_failsafe_mode_is_active",
        "gauge",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        int(bool(status.get("failsafe_mode_is_active"))),
    )
    metric(
        "patroni_postgres_timeline",
        "counter",
        "Postgres timeline of this node (if running), 0 otherwise.",
        parse_int(status.get("timeline")) or 0,
    )
    metric(
        "patroni_dcs_last_seen",
        "gauge",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        parse_int(status.get("dcs_last_seen")) or 0,
    )
    metric(
        "patroni_pending_restart",
        "gauge",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        int(bool(status.get("pending_restart"))),
    )
    metric(
        "patroni_is_paused",
        "gauge",
        "Value is 1 if auto failover is disabled, 0 otherwise.",
        int(bool(status.get("pause"))),
    )
    return "\n".join(lines) + "\n"

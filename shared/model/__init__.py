"""The cluster as Patroni stores it in the DCS: immutable snapshots parsed tolerantly from raw values."""

from shared.model.cluster import Cluster, KeyValue
from shared.model.member import Member, Tags
from shared.model.objects import ClusterConfig, Failover, Leader, Status, SyncState, TimelineHistory

__all__ = [
    "Cluster",
    "ClusterConfig",
    "Failover",
    "KeyValue",
    "Leader",
    "Member",
    "Status",
    "SyncState",
    "Tags",
    "TimelineHistory",
]

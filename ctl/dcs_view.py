"""A GET /cluster body (W2) built from a cluster read in the DCS, for a configuration that names only the
cluster: what patronictl shows from the DCS, with the same rules as the REST API's GET /cluster."""

from __future__ import annotations

from typing import Any

from shared.model import Cluster
from shared.model.cluster_json import cluster_as_json


def cluster_body(cluster: Cluster, scope: str) -> dict[str, Any]:
    return cluster_as_json(cluster, scope)


def sysid_label(cluster: Cluster) -> str:
    """The header's system identifier: the initialize key, or what patronictl writes when it is missing/empty."""
    if cluster.initialize is None:
        return "uninitialized"
    return cluster.initialize or "initializing"

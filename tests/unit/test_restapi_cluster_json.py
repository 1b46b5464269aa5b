"""GET /cluster (W2, D21) and GET /metrics (W5, D20): golden bodies from realistic cluster views."""

from __future__ import annotations

import json
from typing import Any

from services.restapi import core
from services.restapi.snapshot import Identity, apply_event, initial
from shared.protocol.endpoints import Topic
from tests.unit.test_restapi_core import MB, NOW, cluster_view, key, member, node_status, snap

# patroni-docs.txt, "Cluster status endpoints": `curl -s http://localhost:8008/cluster | jq .`
DOCS_CLUSTER = """\
{
  "members": [
    {
      "name": "patroni1",
      "role": "leader",
      "state": "running",
      "api_url": "http://10.89.0.4:8008/patroni",
      "host": "10.89.0.4",
      "port": 5432,
      "timeline": 5,
      "tags": {
        "clonefrom": true
      }
    },
    {
      "name": "patroni2",
      "role": "replica",
      "state": "streaming",
      "api_url": "http://10.89.0.6:8008/patroni",
      "host": "10.89.0.6",
      "port": 5433,
      "timeline": 5,
      "tags": {
        "clonefrom": true
      },
      "lag": 0
    }
  ],
  "scope": "demo",
  "scheduled_switchover": {
    "at": "2023-09-24T10:36:00+02:00",
    "from": "patroni1",
    "to": "patroni3"
  }
}"""


def get(snapshot: Any, path: str) -> bytes:
    response = core.respond("GET", path, "", snapshot, NOW)
    assert response.status == 200
    assert response.body is not None
    return response.body


def test_w2_cluster_reproduces_the_documented_example() -> None:
    members = {
        "patroni2": member(
            "patroni2",
            host="10.89.0.6",
            port=5433,
            state="running",
            replication_state="streaming",
            timeline=5,
            tags={"clonefrom": True},
            xlog_location=67420024,
        ),
        "patroni1": member(
            "patroni1",
            role="master",
            host="10.89.0.4",
            timeline=5,
            tags={"clonefrom": True},
            xlog_location=67420024,
        ),
    }
    view = cluster_view(
        "patroni1",
        members=members,
        optime=67420024,
        failover={"leader": "patroni1", "member": "patroni3", "scheduled_at": "2023-09-24T10:36:00+02:00"},
    )
    snapshot = apply_event(initial(Identity("patroni1", "demo")), Topic.CLUSTER_VIEW, view, NOW)
    assert json.dumps(json.loads(get(snapshot, "/cluster")), indent=2) == DOCS_CLUSTER


# A three-node cluster in synchronous mode, paused, with a scheduled restart and a replica that stopped.
SYNC_VIEW = cluster_view(
    "pg1",
    members={
        "pg1": member(
            "pg1", role="master", host="10.0.0.1", timeline=3, xlog_location=200 * MB, replication_state="ignored"
        ),
        "pg3": member(
            "pg3",
            host="10.0.0.3",
            state="stopped",
            xlog_location=None,
            pending_restart=True,
            tags={"nofailover": True, "zone": "b"},
        ),
        "pg2": member(
            "pg2",
            host="10.0.0.2",
            replication_state="streaming",
            timeline=3,
            xlog_location=180 * MB,
            scheduled_restart={"schedule": "2023-09-12T17:17:00+00:00", "postgres_version": "15.4"},
        ),
        "pg4": member(
            "pg4", host="10.0.0.4", replication_state="in archive recovery", timeline=3, xlog_location=300 * MB
        ),
    },
    optime=200 * MB,
    config={"ttl": 30, "synchronous_mode": True, "pause": True},
    sync={"leader": "pg1", "sync_standby": "pg2"},
)

SYNC_GOLDEN = (
    '{"members": ['
    '{"name": "pg1", "role": "leader", "state": "running", "api_url": "http://10.0.0.1:8008/patroni", '
    '"host": "10.0.0.1", "port": 5432, "timeline": 3}, '
    '{"name": "pg2", "role": "sync_standby", "state": "streaming", "api_url": "http://10.0.0.2:8008/patroni", '
    '"host": "10.0.0.2", "port": 5432, "timeline": 3, '
    '"scheduled_restart": {"schedule": "2023-09-12T17:17:00+00:00", "postgres_version": "15.4"}, "lag": 20971520}, '
    '{"name": "pg3", "role": "replica", "state": "stopped", "api_url": "http://10.0.0.3:8008/patroni", '
    '"host": "10.0.0.3", "port": 5432, "pending_restart": true, "tags": {"nofailover": true, "zone": "b"}, '
    '"lag": "unknown"}, '
    '{"name": "pg4", "role": "replica", "state": "in archive recovery", "api_url": "http://10.0.0.4:8008/patroni", '
    '"host": "10.0.0.4", "port": 5432, "timeline": 3, "lag": 0}'
    '], "scope": "demo", "pause": true}'
)


def test_w2_cluster_golden_sync_mode_paused() -> None:
    """sync_standby from /sync in synchronous mode, replication_state for replicas, lag floored at 0 (D21)."""
    assert get(snap(node_status(), SYNC_VIEW), "/cluster").decode() == SYNC_GOLDEN


def test_w2_sync_standby_needs_synchronous_mode() -> None:
    view = json.loads(json.dumps(SYNC_VIEW))
    view["keys"]["config"] = key({"ttl": 30})
    roles = {m["name"]: m["role"] for m in json.loads(get(snap(node_status(), view), "/cluster"))["members"]}
    assert roles == {"pg1": "leader", "pg2": "replica", "pg3": "replica", "pg4": "replica"}


def test_w2_quorum_mode_members_are_quorum_standbys_C81() -> None:
    view = json.loads(json.dumps(SYNC_VIEW))
    view["keys"]["config"] = key({"ttl": 30, "synchronous_mode": "quorum"})
    roles = {m["name"]: m["role"] for m in json.loads(get(snap(node_status(), view), "/cluster"))["members"]}
    assert roles == {"pg1": "leader", "pg2": "quorum_standby", "pg3": "replica", "pg4": "replica"}


def test_w2_standby_cluster_leader_and_members_without_addresses() -> None:
    view = cluster_view(
        "pg1",
        members={
            "pg1": member("pg1", role="standby_leader", replication_state="streaming"),
            "pg2": {"state": "running", "role": "replica"},  # no conn_url, no api_url, no position
            "pg0": {"conn_url": "postgres://[fe80::1]:6543/postgres", "state": "starting"},
        },
        config={"standby_cluster": {"host": "10.9.9.9", "port": 5432}},
        failover={"member": "pg2", "scheduled_at": "2030-01-01T00:00:00Z"},
    )
    got = json.loads(get(snap(node_status("standby_leader"), view), "/cluster"))
    assert got == {
        "members": [
            {
                "name": "pg0",
                "role": "replica",
                "state": "starting",
                "api_url": None,
                "host": "fe80::1",
                "port": 6543,
                "lag": "unknown",
            },
            {
                "name": "pg1",
                "role": "standby_leader",
                "state": "streaming",
                "api_url": "http://10.0.0.1:8008/patroni",
                "host": "10.0.0.1",
                "port": 5432,
            },
            {"name": "pg2", "role": "replica", "state": "running", "api_url": None, "lag": "unknown"},
        ],
        "scope": "demo",
        "scheduled_switchover": {"at": "2030-01-01T00:00:00+00:00", "to": "pg2"},
    }


def test_w2_cluster_without_a_leader_and_a_failover_without_schedule() -> None:
    view = cluster_view(None, members={"pg2": member("pg2")}, failover={"member": "pg2"})
    got = json.loads(get(snap(node_status("replica"), view), "/cluster"))
    assert got["members"][0]["role"] == "replica"
    assert got["members"][0]["lag"] == 0
    assert "scheduled_switchover" not in got


# -- W5 / D20 -----------------------------------------------------------------------------------------------------

METRICS_GOLDEN = """\
# HELP patroni_version Patroni semver without periods.
# TYPE patroni_version gauge
patroni_version{scope="demo",name="pg1"} 030202
# HELP patroni_postgres_running Value is 1 if Postgres is running, 0 otherwise.
# TYPE patroni_postgres_running gauge
patroni_postgres_running{scope="demo",name="pg1"} 1
# HELP patroni_postmaster_start_time Epoch seconds since Postgres started.
# TYPE patroni_postmaster_start_time gauge
patroni_postmaster_start_time{scope="demo",name="pg1"} 1692356617.966359
# HELP patroni_master Value is 1 if this node is the leader, 0 otherwise.
# TYPE patroni_master gauge
patroni_master{scope="demo",name="pg1"} 0
# HELP patroni_primary Value is 1 if this node is the leader, 0 otherwise.
# TYPE patroni_primary gauge
patroni_primary{scope="demo",name="pg1"} 0
# HELP patroni_xlog_location Current location of the Postgres transaction log, 0 if this node is not the leader.
# TYPE patroni_xlog_location counter
patroni_xlog_location{scope="demo",name="pg1"} 0
# HELP patroni_standby_leader Value is 1 if this node is the standby_leader, 0 otherwise.
# TYPE patroni_standby_leader gauge
patroni_standby_leader{scope="demo",name="pg1"} 0
# HELP patroni_replica Value is 1 if this node is a replica, 0 otherwise.
# TYPE patroni_replica gauge
patroni_replica{scope="demo",name="pg1"} 1
# HELP patroni_sync_standby Value is 1 if this node is a sync standby replica, 0 otherwise.
# TYPE patroni_sync_standby gauge
patroni_sync_standby{scope="demo",name="pg1"} 0
# HELP patroni_xlog_received_location Current location of the received Postgres transaction log, 0 if this node is not a replica.
# TYPE patroni_xlog_received_location counter
patroni_xlog_received_location{scope="demo",name="pg1"} 104857600
# HELP patroni_xlog_replayed_location Current location of the replayed Postgres transaction log, 0 if this node is not a replica.
# TYPE patroni_xlog_replayed_location counter
patroni_xlog_replayed_location{scope="demo",name="pg1"} 104857600
# HELP patroni_xlog_replayed_timestamp Current timestamp of the replayed Postgres transaction log, 0 if null.
# TYPE patroni_xlog_replayed_timestamp gauge
patroni_xlog_replayed_timestamp{scope="demo",name="pg1"} 0
# HELP patroni_xlog_paused Value is 1 if the Postgres xlog is paused, 0 otherwise.
# TYPE patroni_xlog_paused gauge
patroni_xlog_paused{scope="demo",name="pg1"} 0
# HELP patroni_postgres_streaming Value is 1 if Postgres is streaming, 0 otherwise.
# TYPE patroni_postgres_streaming gauge
patroni_postgres_streaming{scope="demo",name="pg1"} 1
# HELP patroni_postgres_in_archive_recovery Value is 1 if Postgres is replicating from archive, 0 otherwise.
# TYPE patroni_postgres_in_archive_recovery gauge
patroni_postgres_in_archive_recovery{scope="demo",name="pg1"} 0
# HELP patroni_postgres_server_version Version of Postgres (if running), 0 otherwise.
# TYPE patroni_postgres_server_version gauge
patroni_postgres_server_version {scope="demo",name="pg1"} 150004
# HELP patroni_cluster_unlocked Value is 1 if the cluster is unlocked, 0 if locked.
# TYPE patroni_cluster_unlocked gauge
patroni_cluster_unlocked{scope="demo",name="pg1"} 0
# HELP patroni_failsafe_mode_is_active Value is 1 if failsafe mode is active, 0 if inactive.
# TYPE patroni_failsafe_mode_is_active gauge
patroni_failsafe_mode_is_active{scope="demo",name="pg1"} 0
# HELP patroni_postgres_timeline Postgres timeline of this node (if running), 0 otherwise.
# TYPE patroni_postgres_timeline counter
patroni_postgres_timeline{scope="demo",name="pg1"} 1
# HELP patroni_dcs_last_seen Epoch timestamp when DCS was last contacted successfully by Patroni.
# TYPE patroni_dcs_last_seen gauge
patroni_dcs_last_seen{scope="demo",name="pg1"} 1699999999
# HELP patroni_pending_restart Value is 1 if the node needs a restart, 0 otherwise.
# TYPE patroni_pending_restart gauge
patroni_pending_restart{scope="demo",name="pg1"} 0
# HELP patroni_is_paused Value is 1 if auto failover is disabled, 0 otherwise.
# TYPE patroni_is_paused gauge
patroni_is_paused{scope="demo",name="pg1"} 0
"""  # noqa: E501


def test_w5_metrics_golden_for_a_streaming_replica() -> None:
    ns = node_status("replica")
    ns["patroni"] = {
        "state": "running",
        "postmaster_start_time": "2023-08-18 11:03:37.966359+00:00",
        **ns["patroni"],
        "replication_state": "streaming",
    }
    view = cluster_view("pg0", members={"pg0": member("pg0", role="master")})
    response = core.respond("GET", "/metrics", "", snap(ns, view), NOW)
    assert response.status == 200
    assert response.headers == {"Content-Type": "text/plain"}
    assert response.body is not None
    assert response.body.decode() == METRICS_GOLDEN

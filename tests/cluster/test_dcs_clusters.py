"""A 3-node cluster on each real external DCS (etcd v3, etcd v2, ZooKeeper): bootstrap, the Patroni key
layout, replication, and a failover when the leader node is lost (B28, B29, B31)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster, running_cluster
from tests.support.dcs_servers import DcsServer, make_server
from tests.support.layout import assert_matches_golden, raw_keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.cluster

TTL, LOOP_WAIT = 20, 2


@pytest.fixture(scope="module", params=["etcd3", "etcd", "zookeeper"])
def dcs_cluster(request: pytest.FixtureRequest) -> Iterator[tuple[DcsServer, Cluster]]:
    server = make_server(request.param)
    server.start()
    try:
        with running_cluster(3, scope=f"{request.param}-batman", dcs_server=server) as cluster:
            try:
                yield server, cluster
            except BaseException:
                print(cluster.logs())
                raise
    finally:
        server.close()


def test_bootstrap_layout_and_replication(dcs_cluster: tuple[DcsServer, Cluster]) -> None:
    _, cluster = dcs_cluster
    leader = cluster.wait_healthy(timeout=120)
    wait_until(lambda: "status" in raw_keys(leader.run_dir), 10, what="the leader's /status")
    assert_matches_golden(raw_keys(leader.run_dir), leader.name)
    token = uuid.uuid4().hex
    leader.sql("CREATE TABLE IF NOT EXISTS t (v text)")
    leader.sql("INSERT INTO t VALUES (%s)", token)
    for replica in (n for n in cluster.nodes if n is not leader):
        wait_until(
            lambda r=replica: r.sql("SELECT count(*) FROM t WHERE v = %s", token)[0][0] == 1,
            15,
            what=f"the row on {replica.name}",
        )


def test_losing_the_leader_node_fails_over_A5(dcs_cluster: tuple[DcsServer, Cluster]) -> None:
    server, cluster = dcs_cluster
    old = cluster.wait_healthy()
    survivors = [n for n in cluster.nodes if n is not old]
    old.kill_all()
    killed_at = time.monotonic()
    new = wait_until(
        lambda: next((n for n in survivors if n.accepts_writes()), None),
        TTL + LOOP_WAIT + 10,
        interval=0.2,
        what="a survivor accepting writes",
    )
    elapsed = time.monotonic() - killed_at
    print(f"{server.kind}: {new.name} accepted a write {elapsed:.1f}s after the leader node was killed")
    assert elapsed <= TTL + LOOP_WAIT + 5
    old.start()
    cluster.wait_healthy(timeout=120)
    assert cluster.leader() is new


def test_a_three_member_etcd_loses_a_member_and_haven_carries_on_without_a_failover_B29() -> None:
    """The etcd member that is etcd's own Raft leader is killed: haven keeps its leader and keeps writing."""
    from tests.support.etcd_server import Etcd3Server

    server = Etcd3Server(members=3)
    server.start()
    try:
        with running_cluster(3, scope="etcd3-members", dcs_server=server) as cluster:
            try:
                leader = cluster.wait_healthy(timeout=120)
                victim = wait_until(
                    lambda: [i for i in [server.raft_leader()] if i is not None], 10, what="etcd's leader"
                )[0]
                server.kill_member(victim)
                start = leader.ticks()
                deadline = time.monotonic() + 4 * (LOOP_WAIT + 2) + 20
                # several lock refreshes must pass through the two surviving members without a failover
                while leader.ticks() < start + 4:
                    assert cluster.leader() is leader, "the leader changed after one etcd member died"
                    assert time.monotonic() < deadline, "the leader stopped ticking"
                    time.sleep(0.2)
                assert leader.accepts_writes()
                server.start_member(victim)
                server.wait_member(victim)
                cluster.wait_healthy(timeout=60)
                assert cluster.leader() is leader
            except BaseException:
                print(cluster.logs())
                raise
    finally:
        server.close()

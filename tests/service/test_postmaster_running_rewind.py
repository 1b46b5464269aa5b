"""A running replica that follows a new leader checks whether it diverged from it (C22-C23), against real
PostgreSQL 15: the asynchronous replica of a primary that went on writing after another replica was promoted has
received WAL past the new leader's switchpoint, and cannot stream from it until it is rewound.

A story in file order, on three nodes: rr1 bootstraps with use_pg_rewind on (dynamic); rr2 and rr3 are its replicas.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.test_postmaster import NO_SLOTS, Node, started_node, story_dir, wait_state, zmq_context
from tests.service.test_postmaster_rewind import DCS
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[Node, Node, Node]]:
    with (
        zmq_context() as ctx,
        story_dir("haven-pmrunrw-", "rr") as base,
        started_node(ctx, base, "rr1", postgresql=NO_SLOTS, dcs=DCS) as rr1,
        started_node(ctx, base, "rr2", postgresql=NO_SLOTS, dcs=DCS) as rr2,
        started_node(ctx, base, "rr3", postgresql=NO_SLOTS, dcs=DCS) as rr3,
    ):
        yield rr1, rr2, rr3


def received(node: Node) -> int:
    return int(node.status()["xlog"]["received_location"] or 0)


def test_setup_a_primary_and_two_replicas(nodes: tuple[Node, Node, Node]) -> None:
    rr1, rr2, rr3 = nodes
    rr1.expect_ok("pg.bootstrap")
    rr1.sql("CREATE TABLE shared (x int); INSERT INTO shared VALUES (1)")
    for replica in (rr2, rr3):
        replica.expect_ok("pg.clone", {"source": rr1.ref()})
        wait_state(replica, "streaming", replication_state="streaming")


def test_a_running_replica_that_follows_the_same_timeline_needs_no_rewind_C22(nodes: tuple[Node, Node, Node]) -> None:
    rr1, _, rr3 = nodes
    state = rr3.expect_ok("pg.follow", {"leader": rr1.ref()})
    assert state["operation"]["result"] == {"restarted": False, "rewind": "not needed"}
    assert state["postmaster_start_time"] is not None


def test_a_running_replica_ahead_of_the_new_leaders_switchpoint_is_rewound_C22_C23(
    nodes: tuple[Node, Node, Node],
) -> None:
    rr1, rr2, rr3 = nodes
    started = rr3.status()["postmaster_start_time"]
    rr2.expect_ok("pg.promote")  # rr1 goes on as a primary: rr3 receives WAL that rr2's timeline 2 does not have
    rr1.sql("CREATE TABLE lost_on_rr1 AS SELECT generate_series(1, 1000) AS x")
    target = rr1.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0]
    wait_until(lambda: received(rr3) >= target, 10, what="rr1's last WAL on rr3")
    rr1.expect_ok("pg.stop", {"mode": "immediate"})
    state = rr3.expect_ok("pg.follow", {"leader": rr2.ref()})
    assert state["operation"]["result"] == {"restarted": True, "rewind": "done"}
    assert "pg_rewind from rr2" in rr3.log_path.read_text()
    state = wait_state(rr3, "streaming from rr2", replication_state="streaming", timeline=2, following="rr2")
    assert state["postmaster_start_time"] != started
    assert rr3.sql("SELECT to_regclass('lost_on_rr1') IS NULL") == [(True,)], "the diverged rows are gone"
    rr2.sql("INSERT INTO shared VALUES (2)")
    wait_until(lambda: rr3.sql("SELECT count(*) FROM shared") == [(2,)], 10, what="rr2's row on rr3")


def test_a_check_that_cannot_reach_the_leader_is_unknown_C22(nodes: tuple[Node, Node, Node]) -> None:
    rr1, rr2, rr3 = nodes  # rr1 is stopped: nothing answers on its port
    state = rr3.expect_ok("pg.follow", {"leader": rr1.ref()})
    assert state["operation"]["result"] == {"restarted": False, "rewind": "unknown"}
    state = rr3.expect_ok("pg.follow", {"leader": rr2.ref()})
    assert state["operation"]["result"] == {"restarted": False, "rewind": "not needed"}
    wait_state(rr3, "streaming from rr2 again", replication_state="streaming", following="rr2")

"""pg_rewind and divergence against real PostgreSQL 15 (C22-C25; docs/protocol.md, the rewind paragraph).

A story in file order, on two nodes: rw1 bootstraps with use_pg_rewind on (dynamic), rw2 is its replica.
1. rw2 is promoted while rw1 still runs and takes writes: rw1 diverged; stopped, then started as a replica of rw2,
   it is rewound, streams from rw2 and has lost its diverged rows.
2. rw1, a replica that did not diverge, is stopped and started again: no rewind.
3. rw1 is promoted while rw2 runs; rw2 crashes (demote immediate): crash recovery in single-user mode, then rewind.
4. A switchover: rw1 stops cleanly, rw2 is promoted; rw1 ends exactly where rw2's new timeline starts (the end of its
   shutdown checkpoint, read with pg_waldump): no rewind.
5. rw1 is promoted while rw2 runs; rw2 diverges with use_pg_rewind off and remove_data_directory_on_diverged_timelines
   on (local): its data directory is removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.service.test_postmaster import NO_SLOTS, TIMINGS, Node, started_node, story_dir, wait_state, zmq_context
from tests.support.waiting import wait_until

DCS = {"postgresql": {"use_pg_rewind": True, "parameters": {"max_connections": 40}}}


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context[Any]]:
    with zmq_context() as context:
        yield context


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with story_dir("haven-pmrewind-", "rw") as path:
        yield path


@pytest.fixture(scope="module")
def rw1(ctx: zmq.Context[Any], base: Path) -> Iterator[Node]:
    # wal_log_hints only, no data checksums
    with started_node(ctx, base, "rw1", postgresql=NO_SLOTS, dcs=DCS, initdb=[{"encoding": "UTF8"}]) as node:
        yield node


@pytest.fixture(scope="module")
def rw2(ctx: zmq.Context[Any], base: Path) -> Iterator[Node]:
    local = {**NO_SLOTS, "remove_data_directory_on_diverged_timelines": True}
    with started_node(ctx, base, "rw2", postgresql=local, dcs=DCS) as node:
        yield node


def diverge(new_primary: Node, old_primary: Node, table: str) -> None:
    """Promote the replica while the old primary still runs, then write on the old primary only."""
    new_primary.expect_ok("pg.promote")
    old_primary.sql(f"CREATE TABLE {table} AS SELECT generate_series(1, 1000) AS x")


def test_setup_a_primary_and_its_replica(rw1: Node, rw2: Node) -> None:
    rw1.expect_ok("pg.bootstrap")
    rw1.sql("CREATE TABLE shared (x int); INSERT INTO shared VALUES (1)")
    rw2.expect_ok("pg.clone", {"source": rw1.ref()})
    wait_state(rw2, "streaming", replication_state="streaming")
    wait_until(lambda: rw2.sql("SELECT count(*) FROM shared") == [(1,)], 10, what="the row on rw2")


def test_a_diverged_former_primary_is_rewound_and_follows(rw1: Node, rw2: Node) -> None:
    diverge(rw2, rw1, "lost_on_rw1")
    rw1.expect_ok("pg.stop", {"mode": "fast"})
    state = rw1.expect_ok("pg.start", {"role": "replica", "leader": rw2.ref()})
    TIMINGS["rw1 rewind (check, checkpoint, pg_rewind, start)"] = (
        state["operation"]["finished"] - state["operation"]["started"]
    )
    assert state["operation"]["result"] == {"rewind": "done"}
    assert (state["role"], state["following"]) == ("replica", "rw2")
    wait_state(rw1, "streaming from rw2", replication_state="streaming", timeline=2)
    assert rw1.sql("SELECT to_regclass('lost_on_rw1') IS NULL") == [(True,)], "the diverged rows are gone"
    rw2.sql("INSERT INTO shared VALUES (2)")
    wait_until(lambda: rw1.sql("SELECT count(*) FROM shared") == [(2,)], 10, what="rw2's row on rw1")
    conf = (rw1.data_dir / "postgresql.conf").read_text()
    assert f"port = '{rw1.port}'" in conf and "# haven: following rw2" in conf, "haven's files, not rw2's copies"


def test_a_replica_that_did_not_diverge_needs_no_rewind(rw1: Node, rw2: Node) -> None:
    rw1.expect_ok("pg.stop", {"mode": "fast"})
    state = rw1.expect_ok("pg.start", {"role": "replica", "leader": rw2.ref()})
    assert state["operation"]["result"] == {"rewind": "not needed"}
    wait_state(rw1, "streaming from rw2", replication_state="streaming")


def test_a_crashed_primary_recovers_in_single_user_mode_then_is_rewound(rw1: Node, rw2: Node) -> None:
    diverge(rw1, rw2, "lost_on_rw2")
    state = rw2.expect_ok("pg.demote", {"mode": "immediate", "leader": rw1.ref()})
    TIMINGS["rw2 demote immediate + crash recovery + rewind"] = (
        state["operation"]["finished"] - state["operation"]["started"]
    )
    assert state["operation"]["result"] == {"rewind": "done"}
    wait_state(rw2, "streaming from rw1", replication_state="streaming", timeline=3)
    assert rw2.sql("SELECT to_regclass('lost_on_rw2') IS NULL") == [(True,)]


def test_a_clean_switchover_needs_no_rewind(rw1: Node, rw2: Node) -> None:
    rw1.sql("INSERT INTO shared VALUES (3)")
    rw1.expect_ok("pg.stop", {"mode": "fast"})
    end = rw1.status()["controldata"]["checkpoint_lsn"]
    wait_until(lambda: rw2.status()["xlog"]["replayed_location"] > end, 10, what="rw1's shutdown checkpoint on rw2")
    rw2.expect_ok("pg.promote")
    state = rw1.expect_ok("pg.start", {"role": "replica", "leader": rw2.ref()})
    assert state["operation"]["result"] == {"rewind": "not needed"}
    wait_state(rw1, "streaming from rw2", replication_state="streaming", timeline=4)
    assert rw1.sql("SELECT count(*) FROM shared") == [(3,)]


def test_diverged_without_rewind_removes_the_data_directory(rw1: Node, rw2: Node) -> None:
    diverge(rw1, rw2, "lost_again")
    rw2.expect_ok("pg.stop", {"mode": "fast"})
    rw2.call("pg.configure", {"dynamic": {"postgresql": {"use_pg_rewind": False}}})
    state = rw2.expect_ok("pg.start", {"role": "replica", "leader": rw1.ref()})
    assert state["operation"]["result"] == {"rewind": "removed"}
    assert (state["data_dir"], state["running"], state["state"]) == ("empty", False, "stopped")
    assert rw2.data_dir.is_dir() and not list(rw2.data_dir.iterdir())

"""pg.set_sync against real PostgreSQL 15 (C74, C76, C79; docs/protocol.md "pg.set_sync").

A story in file order: bootstrap sync1, render every mode, keep the value across pg.configure, a restart of
PostgreSQL and of the controller; clone sync2 and prove at the PostgreSQL level that a commit waits while the named
standby is down and completes when it returns; a strict bootstrap with '*' never hangs haven's own SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import zmq

from shared.protocol.errors import ErrorCode
from tests.service.test_postmaster import (
    NO_SLOTS,
    SU_PASSWORD,
    Node,
    started_node,
    story_dir,
    wait_state,
    zmq_context,
)
from tests.support.pg_helpers import stop_postmaster
from tests.support.postgres import pg_bin_dir
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context[Any]]:
    with zmq_context() as context:
        yield context


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with story_dir("haven-pmsync-", "sync") as path:
        yield path


@pytest.fixture(scope="module")
def sync1(ctx: zmq.Context[Any], base: Path) -> Iterator[Node]:
    with started_node(ctx, base, "sync1", postgresql=NO_SLOTS) as node:
        yield node


@pytest.fixture(scope="module")
def sync2(ctx: zmq.Context[Any], base: Path) -> Iterator[Node]:
    with started_node(ctx, base, "sync2", postgresql=NO_SLOTS) as node:
        yield node


def set_sync(node: Node, mode: str, num: int, names: list[str], strict: bool = False) -> str:
    reply = node.call("pg.set_sync", {"mode": mode, "num": num, "names": names, "strict": strict})
    value: str = reply["value"]
    assert node.sql("SHOW synchronous_standby_names") == [(value,)], "visible when the reply arrives"
    return value


@pytest.mark.parametrize(
    ("mode", "num", "names", "strict", "expected"),
    [
        ("on", 1, ["sync2"], False, "sync2"),
        ("on", 1, ["Node-2"], False, '"Node-2"'),
        ("on", 2, ["sync2", "Node-3"], False, '2 (sync2,"Node-3")'),
        ("on", 1, ["a", "b"], False, "1 (a,b)"),
        ("quorum", 1, ["sync2", "Upper_Case$1"], False, "ANY 1 (sync2,Upper_Case$1)"),
        ("quorum", 2, ["x y", 'q"t', "z"], False, 'ANY 2 ("x y","q""t",z)'),
        ("off", 0, [], True, "*"),
        ("on", 0, [], True, "*"),
        ("off", 0, [], False, ""),
    ],
)
def test_set_sync_renders_every_mode_and_quotes_only_when_needed(
    sync1: Node, mode: str, num: int, names: list[str], strict: bool, expected: str
) -> None:
    if sync1.status()["data_dir"] != "initialized":
        sync1.expect_ok("pg.bootstrap")
    assert set_sync(sync1, mode, num, names, strict) == expected
    state = wait_state(sync1, "the value in pg_state", synchronous_standby_names=expected)
    assert state["replication_lsns"] == {}
    conf = (sync1.data_dir / "postgresql.conf").read_text()
    assert ("synchronous_standby_names" in conf) == bool(expected), "mode off without strict removes the parameter"


@pytest.mark.parametrize(
    "body",
    [
        {"mode": "first", "num": 1, "names": ["a"]},
        {"mode": "on", "num": 3, "names": ["a", "b"]},
        {"mode": "on", "num": 0, "names": ["a"]},
        {"mode": "on", "num": 1, "names": ["a", "A"]},
        {"mode": "on", "num": 1, "names": [""]},
        {"mode": "on", "num": 1, "names": [1]},
    ],
)
def test_invalid_set_sync_bodies(sync1: Node, body: dict[str, Any]) -> None:
    sync1.expect_error(ErrorCode.INVALID_BODY, "pg.set_sync", body)


def test_the_value_survives_configure_and_restarts(sync1: Node) -> None:
    set_sync(sync1, "on", 1, ["sync2"])
    dynamic = {"synchronous_mode": True, "postgresql": {"parameters": {"synchronous_standby_names": "someone"}}}
    sync1.call("pg.configure", {"dynamic": dynamic})
    assert sync1.sql("SHOW synchronous_standby_names") == [("sync2",)], "haven's value wins over the configuration"
    sync1.expect_ok("pg.restart")
    assert sync1.sql("SHOW synchronous_standby_names") == [("sync2",)]
    sync1.close()  # a new controller reads the value back from PGDATA
    sync1.start()
    sync1.expect_ok("pg.restart")
    assert sync1.sql("SHOW synchronous_standby_names") == [("sync2",)]
    state = wait_state(sync1, "the value in pg_state", synchronous_standby_names="sync2")
    assert state["state"] == "running"


def test_a_commit_waits_for_the_named_standby_and_completes_when_it_returns(sync1: Node, sync2: Node) -> None:
    sync2.expect_ok("pg.clone", {"source": sync1.ref()})
    wait_state(sync2, "streaming", replication_state="streaming")
    set_sync(sync1, "on", 1, ["sync2"], strict=True)

    def synchronous() -> dict[str, Any] | None:
        row = sync1.status()["replication_lsns"].get("sync2")
        return row if row and row["sync_state"] == "sync" else None

    row = wait_until(synchronous, 10, what="sync2 to be a synchronous standby")
    assert all(isinstance(row[k], int) and row[k] > 0 for k in ("write", "flush", "replay"))
    sync1.sql("CREATE TABLE t (x int)")
    sync2.expect_ok("pg.stop", {"mode": "fast"})
    conn = psycopg2.connect(
        host="127.0.0.1", port=sync1.port, user="postgres", password=SU_PASSWORD, dbname="postgres", async_=1
    )
    try:
        wait_until(lambda: conn.poll() == psycopg2.extensions.POLL_OK, 5, what="the async connection")
        pid = conn.get_backend_pid()
        conn.cursor().execute("INSERT INTO t VALUES (1)")
        waiting = "SELECT wait_event FROM pg_stat_activity WHERE pid = %s"
        wait_until(lambda: sync1.sql(waiting, (pid,)) == [("SyncRep",)], 10, what="the commit to wait for sync2")
        assert conn.poll() != psycopg2.extensions.POLL_OK, "not acknowledged while sync2 is down"
        sync2.expect_ok("pg.start", {"role": "replica", "leader": sync1.ref()})
        wait_until(lambda: conn.poll() == psycopg2.extensions.POLL_OK, 15, what="the commit once sync2 is back")
    finally:
        conn.close()
    wait_until(lambda: sync2.sql("SELECT count(*) FROM t") == [(1,)], 10, what="the row on sync2")


def test_strict_mode_without_standby_never_hangs_a_bootstrap_C79(ctx: zmq.Context[Any], base: Path) -> None:
    script = base / "post_bootstrap_sync.sh"
    script.write_text(f'#!/bin/sh\nset -e\n"{pg_bin_dir()}/psql" "$1" -v ON_ERROR_STOP=1 -qc "CREATE TABLE ran()"\n')
    script.chmod(0o755)
    dcs = {"synchronous_mode": True, "synchronous_mode_strict": True}
    node = Node(ctx, base, "sync3", postgresql=NO_SLOTS, dcs=dcs, post_bootstrap=str(script))
    try:
        node.start()
        state = node.expect_ok("pg.bootstrap")
        assert state["synchronous_standby_names"] == "*", "strict synchronous mode before any pg.set_sync"
        assert node.sql("SELECT to_regclass('ran') IS NOT NULL") == [(True,)]
    finally:
        node.close()
        stop_postmaster(node.data_dir)

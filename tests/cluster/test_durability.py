"""Durability on real clusters, proved by a writer that books every acknowledged commit (features.md C.3, C.4,
C.8, A.12, A.14, A.16): writes go through HAProxy, routed by GET /primary, while leader nodes are killed.

- synchronous mode: SIGKILL of the whole leader node under load loses no acknowledged row (2 rounds here,
  5 in `make test-long`); strict mode with no standby left blocks commits instead of accepting them;
- asynchronous mode: a loss stays within maximum_lag_on_failover; a former primary with diverged WAL rejoins
  through pg_rewind and streams; a permanent logical slot survives a failover and its consumer resumes;
- quorum mode (4.x) with three replicas: the leader and one replica die together and nothing is lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import psycopg2
import pytest

from tests.support.cluster import SUPERUSER, Cluster, Node, freeze_then_kill, running_cluster
from tests.support.dcs_servers import make_server
from tests.support.haproxy import HAProxy, backends_for
from tests.support.waiting import wait_until
from tests.support.writer import Writer, WriterReport

pytestmark = pytest.mark.cluster

FAST = {"ttl": 10, "loop_wait": 1, "retry_timeout": 3}
MAX_LAG = 1048576
REWIND = {"use_pg_rewind": True, "use_slots": True}
# Each autocommitted INSERT writes a heap record, an index record and a commit record: well over 100 bytes.
MIN_WAL_PER_ROW = 100


@contextlib.contextmanager
def logs_on_failure(cluster: Cluster, proxy: HAProxy | None = None) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(cluster.logs())
        if proxy is not None:
            print("===== haproxy =====\n" + proxy.logs()[-5000:])
        raise


@contextlib.contextmanager
def proxied_writer(cluster: Cluster, clients: int = 4) -> Iterator[tuple[HAProxy, Writer]]:
    with HAProxy(backends_for(cluster.nodes)) as proxy:
        writer = Writer(
            proxy.dsn(user=SUPERUSER[0], password=SUPERUSER[1], dbname="postgres"), clients=clients, pause_s=0.002
        )
        writer.setup()
        writer.start()
        try:
            yield proxy, writer
        finally:
            writer.stop()


def node_dsn(node: Node) -> str:
    return f"host=127.0.0.1 port={node.spec.pg_port} user={SUPERUSER[0]} password={SUPERUSER[1]} dbname=postgres"


def more_commits(writer: Writer, count: int = 50, timeout: float = 60) -> None:
    target = writer.acknowledged + count
    wait_until(lambda: writer.acknowledged >= target, timeout, interval=0.1, what=f"{count} more commits")


def kill_together(nodes: list[Node]) -> None:
    """Freeze every process of every node, then SIGKILL them all: the nodes die at the same moment."""
    procs = [p for node in nodes for p in node.all_processes()]
    freeze_then_kill(procs)
    psutil.wait_procs(procs, timeout=10)
    for node in nodes:
        if node.proc is not None:
            with contextlib.suppress(Exception):
                node.proc.wait(timeout=10)


def new_writable(survivors: list[Node], timeout: float = 60) -> Node:
    node: Node | None = wait_until(
        lambda: next((n for n in survivors if n.accepts_writes()), None),
        timeout,
        interval=0.2,
        what="a survivor accepting writes",
    )
    assert node is not None
    return node


def roles(cluster: Cluster) -> dict[str, str]:
    return {m["name"]: m["role"] for m in (cluster.cluster_json() or {}).get("members", [])}


def finish(writer: Writer, primary: Node) -> WriterReport:
    writer.stop()
    report = writer.verify(node_dsn(primary))
    print(report.summary())
    return report


# --- synchronous mode `on` ------------------------------------------------------------------------------------

SYNC = {**FAST, "maximum_lag_on_failover": MAX_LAG, "synchronous_mode": True, "postgresql": REWIND}


def _sync_kills(rounds: int) -> None:
    with running_cluster(3, scope="sync", dcs=SYNC) as cluster, logs_on_failure(cluster):
        cluster.wait_healthy(timeout=120)
        with proxied_writer(cluster) as (proxy, writer), logs_on_failure(cluster, proxy):
            for number in range(rounds):
                leader = cluster.wait_healthy(timeout=120)
                wait_until(lambda: "sync_standby" in roles(cluster).values(), 30, what="a synchronous standby")
                more_commits(writer)
                leader.kill_all()
                new = new_writable([n for n in cluster.nodes if n is not leader])
                more_commits(writer)  # the writer found the new primary through HAProxy
                print(f"round {number + 1}: {leader.name} killed, {new.name} promoted, {writer.acknowledged} acked")
                leader.start()  # the former primary rejoins, rewound if its WAL diverged
            final = cluster.wait_healthy(timeout=120)
            report = finish(writer, final)
        assert report.acknowledged > 0 and report.lost == (), report.summary()
        assert report.longest_gap is not None
        print(f"sync mode, {rounds} leader kills: longest write gap {report.longest_gap.seconds:.1f}s")


def test_sync_mode_loses_no_acknowledged_commit_when_the_leader_node_is_killed_C71_C73_A14() -> None:
    _sync_kills(2)


@pytest.mark.long
def test_sync_mode_loses_no_acknowledged_commit_over_five_leader_kills_C71_C73_A14() -> None:
    _sync_kills(5)


@pytest.fixture
def etcd() -> Iterator[Any]:
    """An etcd v3 server: with two of four nodes gone, or one of two, the embedded Raft would lose its majority."""
    server = make_server("etcd3")
    server.start()
    try:
        yield server
    finally:
        server.close()


def test_strict_sync_mode_blocks_commits_when_no_standby_is_left_C76(etcd: Any) -> None:
    config = {**SYNC, "synchronous_mode_strict": True}
    with running_cluster(2, scope="strict", dcs=config, dcs_server=etcd) as cluster, logs_on_failure(cluster):
        leader = cluster.wait_healthy(timeout=120)
        replica = next(n for n in cluster.nodes if n is not leader)
        wait_until(lambda: roles(cluster).get(replica.name) == "sync_standby", 30, what="a synchronous standby")
        leader.sql("CREATE TABLE strict_t (v int)")
        replica.kill_all()
        done = threading.Event()
        errors: list[BaseException] = []

        def insert() -> None:
            try:
                with psycopg2.connect(node_dsn(leader)) as conn, conn.cursor() as cur:
                    cur.execute("INSERT INTO strict_t VALUES (1)")
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=insert, daemon=True)
        thread.start()
        # The commit waits for a synchronous standby that is not there (C76: never `''`, keep `*`).
        wait_until(
            lambda: leader.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")[0][0] == 1,
            30,
            what="the commit to wait for a synchronous standby",
        )
        ssn = leader.sql("SHOW synchronous_standby_names")[0][0]
        assert ssn and not done.is_set(), ssn
        # Several loops later, the leader still has not given up on synchronous replication.
        ticks = leader.ticks()
        wait_until(lambda: leader.ticks() >= ticks + 3, 30, what="three more brain ticks")
        assert not done.is_set() and leader.sql("SHOW synchronous_standby_names")[0][0]
        replica.start()
        wait_until(done.is_set, 120, what="the blocked commit to complete once a standby is back")
        assert not errors, errors
        assert leader.sql("SELECT count(*) FROM strict_t")[0][0] == 1


# --- asynchronous mode: bounded loss, pg_rewind, logical slot failover ---------------------------------------

ASYNC = {
    **FAST,
    "maximum_lag_on_failover": MAX_LAG,
    "postgresql": {**REWIND, "parameters": {"wal_level": "logical"}},
    "slots": {"cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}},
}


@pytest.fixture(scope="module")
def async_cluster() -> Iterator[Cluster]:
    with running_cluster(3, scope="async", dcs=ASYNC) as cluster, logs_on_failure(cluster):
        cluster.wait_healthy(timeout=120)
        yield cluster


def test_async_mode_loss_stays_within_maximum_lag_on_failover_A10(async_cluster: Cluster) -> None:
    cluster = async_cluster
    with proxied_writer(cluster) as (proxy, writer), logs_on_failure(cluster, proxy):
        leader = cluster.wait_healthy(timeout=120)
        more_commits(writer, 200)
        leader.kill_all()
        new = new_writable([n for n in cluster.nodes if n is not leader])
        more_commits(writer)
        report = finish(writer, new)
    leader.start()
    cluster.wait_healthy(timeout=120)
    assert report.lost is not None, "the final primary could not be read"
    print(f"async mode: {len(report.lost)} acknowledged rows lost of {report.acknowledged}")
    assert report.acknowledged > 200
    assert len(report.lost) * MIN_WAL_PER_ROW <= MAX_LAG, report.summary()


def _walsenders(node: Node) -> list[psutil.Process]:
    pid = node.postmaster_pid()
    if pid is None:
        return []
    children = psutil.Process(pid).children()
    return [p for p in children if "walsender" in " ".join(p.cmdline())]


def test_a_former_primary_with_diverged_wal_rejoins_through_pg_rewind_C21_C22(async_cluster: Cluster) -> None:
    cluster = async_cluster
    leader = cluster.wait_healthy(timeout=120)
    replicas = [n for n in cluster.nodes if n is not leader]
    leader.sql("CREATE TABLE IF NOT EXISTS diverged (v int)")
    wait_until(lambda: all(r.sql("SELECT to_regclass('diverged')")[0][0] for r in replicas), 15, what="the table")
    frozen = _walsenders(leader)
    assert len(frozen) == 2, frozen
    for p in frozen:  # the leader stops sending: what it writes now is its own
        p.send_signal(signal.SIGSTOP)
    leader.sql("INSERT INTO diverged SELECT generate_series(1, 1000)")
    leader.kill_all()
    new = new_writable(replicas)
    new.sql("INSERT INTO diverged VALUES (-1)")
    leader.start()
    cluster.wait_healthy(timeout=180)
    assert cluster.leader() is new
    log = leader.log_path.read_text(errors="replace")
    assert "pg_rewind" in log, log[-5000:]
    wait_until(lambda: leader.sql("SELECT count(*), min(v) FROM diverged")[0] == (1, -1), 30, what="the new timeline")
    status: dict[str, Any] = leader.patroni()
    assert status["role"] == "replica" and status["timeline"] == new.patroni()["timeline"]


def test_a_permanent_logical_slot_survives_a_failover_and_its_consumer_resumes_C31_C32(
    async_cluster: Cluster,
) -> None:
    cluster = async_cluster
    leader = cluster.wait_healthy(timeout=120)
    replicas = [n for n in cluster.nodes if n is not leader]
    leader.sql("CREATE TABLE IF NOT EXISTS cdc_t (v int)")
    wait_until(
        lambda: leader.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'")[0][0] == 1,
        30,
        what="the permanent logical slot on the primary",
    )
    leader.sql("INSERT INTO cdc_t VALUES (1)")
    consumed = [row[0] for row in leader.sql("SELECT data FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")]
    assert any("cdc_t" in d and "v[integer]:1" in d for d in consumed), consumed
    confirmed = leader.sql("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc'")[0][0]

    def copied_and_advanced(node: Node) -> bool:
        rows = node.sql(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = 'cdc'", confirmed
        )
        return bool(rows and rows[0][0])

    wait_until(lambda: all(copied_and_advanced(r) for r in replicas), 90, what="the slot copied and advanced")
    leader.sql("INSERT INTO cdc_t VALUES (2)")
    wait_until(lambda: all(r.sql("SELECT count(*) FROM cdc_t")[0][0] == 2 for r in replicas), 15, what="row 2")
    leader.kill_all()
    new = new_writable(replicas)
    new.sql("INSERT INTO cdc_t VALUES (3)")
    changes = [row[0] for row in new.sql("SELECT data FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")]
    values = [d for d in changes if "cdc_t" in d]
    assert any("v[integer]:2" in d for d in values) and any("v[integer]:3" in d for d in values), changes
    assert not any("v[integer]:1" in d for d in values), changes  # consumed before the failover
    leader.start()
    cluster.wait_healthy(timeout=180)


# --- quorum mode (4.x) ------------------------------------------------------------------------------------------

QUORUM = {
    **FAST,
    "maximum_lag_on_failover": MAX_LAG,
    "synchronous_mode": "quorum",
    "synchronous_node_count": 2,
    "postgresql": REWIND,
}


def test_quorum_mode_loses_nothing_when_the_leader_and_one_replica_die_together_C81(etcd: Any) -> None:
    with running_cluster(4, scope="quorum", dcs=QUORUM, dcs_server=etcd) as cluster, logs_on_failure(cluster):
        cluster.wait_healthy(timeout=180)
        with proxied_writer(cluster) as (proxy, writer), logs_on_failure(cluster, proxy):
            leader = cluster.wait_healthy(timeout=120)
            wait_until(lambda: list(roles(cluster).values()).count("quorum_standby") == 3, 60, what="three voters")
            ssn = leader.sql("SHOW synchronous_standby_names")[0][0]
            assert ssn.startswith("ANY 2 ("), ssn
            more_commits(writer, 200)
            victim = next(n for n in cluster.nodes if n is not leader)
            kill_together([leader, victim])
            survivors = [n for n in cluster.nodes if n not in (leader, victim)]
            new = new_writable(survivors)
            more_commits(writer)
            report = finish(writer, new)
        print(f"quorum mode: leader and {victim.name} killed, {new.name} promoted; {report.summary()}")
        assert report.acknowledged > 200 and report.lost == (), report.summary()

"""A real 3-node cluster on the embedded Raft DCS: bootstrap, replication, failover, program restarts.

The tests share one cluster and run in file order; each leaves the cluster healthy for the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import msgpack
import psutil
import pytest
import zmq

from shared.protocol import envelope
from shared.protocol.endpoints import Service
from tests.support.cluster import Cluster, havenctl_binary, running_cluster
from tests.support.layout import assert_matches_golden, raw_keys
from tests.support.waiting import wait_until

pytestmark = pytest.mark.cluster

TTL, LOOP_WAIT = 20, 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(3, scope="batman") as c:
        try:
            yield c
        except BaseException:
            print(c.logs())
            raise


def _dump_logs_on_failure(cluster: Cluster) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except BaseException:
            print(cluster.logs())
            raise

    return guard()


def test_three_nodes_bootstrap_to_one_leader_and_two_streaming_replicas_A5_C1_C13(cluster: Cluster) -> None:
    with _dump_logs_on_failure(cluster):
        leader = cluster.wait_healthy(timeout=120)
        replicas = [n for n in cluster.nodes if n is not leader]
        body = cluster.cluster_json()
        assert body is not None and body["scope"] == "batman"
        roles = {m["name"]: (m["role"], m["state"]) for m in body["members"]}
        assert roles[leader.name] == ("leader", "running")
        assert all(roles[r.name] == ("replica", "streaming") for r in replicas)
        status = leader.patroni()
        assert status["role"] == "master" and status["state"] == "running"
        assert status["patroni"] == {"version": "3.2.2", "scope": "batman", "name": leader.name}
        sysid = status["database_system_identifier"]
        assert all(r.patroni()["database_system_identifier"] == sysid for r in replicas)
        assert all(r.rest("/replica")[0] == 200 and r.rest("/primary")[0] == 503 for r in replicas)


def test_the_dcs_holds_patronis_keys_and_value_shapes_B1_W6_W7(cluster: Cluster) -> None:
    leader = cluster.wait_healthy()
    wait_until(lambda: "status" in raw_keys(leader.run_dir), 10, what="the leader's /status")
    assert_matches_golden(raw_keys(leader.run_dir), leader.name)


def test_a_row_written_on_the_leader_is_read_on_both_replicas(cluster: Cluster) -> None:
    with _dump_logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        token = uuid.uuid4().hex
        leader.sql("CREATE TABLE IF NOT EXISTS t (v text)")
        leader.sql("INSERT INTO t VALUES (%s)", token)
        for replica in (n for n in cluster.nodes if n is not leader):
            wait_until(
                lambda r=replica: r.sql("SELECT count(*) FROM t WHERE v = %s", token)[0][0] == 1,
                15,
                what=f"the row on {replica.name}",
            )


def test_havenctl_list_shows_the_cluster_like_patronictl_E12(cluster: Cluster) -> None:
    leader = cluster.wait_healthy()
    result = subprocess.run(
        [havenctl_binary(), "-c", str(leader.config_path), "list", "-f", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {r["Member"]: r for r in json.loads(result.stdout)}
    assert rows[leader.name]["Role"] == "Leader" and rows[leader.name]["State"] == "running"
    assert {r["Role"] for n, r in rows.items() if n != leader.name} == {"Replica"}
    pretty = subprocess.run(
        [havenctl_binary(), "-c", str(leader.config_path), "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert pretty.stdout.startswith("+ Cluster: batman (") and "| Member" in pretty.stdout


def _send_raw(path: str, payload: bytes, timeout: float = 3.0) -> envelope.Reply | None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{path}")
    try:
        sock.send(payload)
        if not sock.poll(int(timeout * 1000)):
            return None
        return envelope.decode_reply(sock.recv())
    finally:
        sock.close(0)


def _valid_status_request(service: Service) -> bytes:
    op = {
        Service.DCS_PROXY: "dcs.get_cluster",
        Service.POSTMASTER: "pg.status",
        Service.HA_LOOP: "ha.status",
        Service.WATCHDOGD: "wd.status",
    }[service]
    return envelope.encode_request(envelope.Request(op=op, body={}, deadline=time.time() + 5))


@pytest.mark.parametrize("service", [Service.DCS_PROXY, Service.POSTMASTER, Service.HA_LOOP, Service.WATCHDOGD])
def test_malformed_oversized_and_unknown_messages_do_not_stop_a_service(cluster: Cluster, service: Service) -> None:
    node = cluster.nodes[0]
    path = str(node.run_dir / f"{service}.sock")
    before = node.program(str(service))
    assert before is not None
    garbage = _send_raw(path, b"\xc1\xc1 not msgpack")
    assert garbage is not None and not garbage.ok and garbage.error_code == "bad_message"
    unknown = _send_raw(path, envelope.encode_request(envelope.Request(op="x.nope", body={}, deadline=time.time() + 5)))
    assert unknown is not None and unknown.error_code == "unknown_op"
    wrong_body = msgpack.packb({"v": 1, "id": "q", "op": "pg.status", "deadline": time.time() + 5, "body": [1]})
    reply = _send_raw(path, wrong_body)
    assert reply is not None and reply.error_code in ("invalid_body", "unknown_op")
    oversized = _send_raw(path, b"\x00" * (envelope.MAX_MESSAGE_BYTES + 1), timeout=2)
    assert oversized is None or oversized.error_code == "bad_message"  # answered, or dropped by libzmq
    ok = _send_raw(path, _valid_status_request(service))
    assert ok is not None and ok.ok, ok
    after = node.program(str(service))
    assert after is not None and after.pid == before.pid  # the same process kept serving


def test_killing_ha_loop_on_the_leader_restarts_it_and_keeps_the_lock(cluster: Cluster) -> None:
    with _dump_logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        brain = leader.program("ha_loop")
        pg_pid = leader.postmaster_pid()
        assert brain is not None and pg_pid is not None
        brain.kill()
        wait_until(
            lambda: (p := leader.program("ha_loop")) is not None and p.pid != brain.pid,
            20,
            what="supervisord to restart ha_loop",
        )
        restarted = leader.program("ha_loop")
        assert restarted is not None
        # it ticks again and still holds the lock: no failover, PostgreSQL untouched
        wait_until(
            lambda: leader.patroni().get("role") == "master" and leader.rest("/primary")[0] == 200,
            30,
            what="the restarted brain to confirm the lock",
        )
        deadline = time.monotonic() + 2 * LOOP_WAIT + 1
        while time.monotonic() < deadline:
            assert cluster.leader() is leader
            time.sleep(0.2)
        assert leader.postmaster_pid() == pg_pid


def test_killing_the_postmaster_controller_leaves_postgres_running_and_it_is_readopted(cluster: Cluster) -> None:
    with _dump_logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        controller = leader.program("postmaster")
        pg_pid = leader.postmaster_pid()
        start_time = leader.patroni()["postmaster_start_time"]
        assert controller is not None and pg_pid is not None
        controller.kill()
        wait_until(
            lambda: (p := leader.program("postmaster")) is not None and p.pid != controller.pid,
            20,
            what="supervisord to restart postmaster",
        )
        wait_until(
            lambda: leader.patroni().get("postmaster_start_time") == start_time,
            20,
            what="the controller to re-adopt PostgreSQL",
        )
        assert leader.postmaster_pid() == pg_pid and cluster.leader() is leader


def test_losing_the_leader_node_fails_over_within_ttl_plus_loop_wait_A5(cluster: Cluster) -> None:
    with _dump_logs_on_failure(cluster):
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
        print(f"failover: {new.name} accepted a write {elapsed:.1f}s after the leader node was killed")
        assert elapsed <= TTL + LOOP_WAIT + 5  # ttl + loop_wait, plus the time to notice and promote
        cluster.wait_healthy(timeout=60, among=survivors)
        assert cluster.leader(survivors) is new
        # B7, W3: the promotion is in /history with the switchpoint, a timestamp and the new leader
        history = wait_until(lambda: (h := new.rest("/history")[1]) and h, 15, what="a /history entry")
        assert history[-1][0] == 1 and history[-1][1] > 0 and history[-1][4] == new.name


def test_the_killed_node_comes_back_as_a_streaming_replica_A23(cluster: Cluster) -> None:
    with _dump_logs_on_failure(cluster):
        down = next(n for n in cluster.nodes if not n.is_running)
        leader = cluster.leader()
        assert leader is not None
        down.start()
        cluster.wait_healthy(timeout=120)
        assert cluster.leader() is leader
        members = {m["name"]: m for m in (cluster.cluster_json() or {}).get("members", [])}
        assert members[down.name]["state"] == "streaming"


def test_sigterm_stops_a_node_cleanly_postgres_included_A50(cluster: Cluster) -> None:
    with _dump_logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        replica = next(n for n in cluster.nodes if n is not leader)
        pg_pid = replica.postmaster_pid()
        procs = replica.all_processes()
        assert replica.proc is not None and pg_pid is not None
        replica.proc.send_signal(signal.SIGTERM)
        replica.proc.wait(timeout=90)
        _, alive = psutil.wait_procs(procs, timeout=30)
        assert not alive, [p.pid for p in alive]
        assert not psutil.pid_exists(pg_pid)
        assert not os.path.exists(replica.data_dir / "postmaster.pid")
        assert cluster.leader() is leader
        replica.start()
        cluster.wait_healthy(timeout=90)

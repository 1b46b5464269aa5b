"""The control plane on a real 3-node cluster, through the REST API (features.md A.4, A.6, A.8, D.4):
switchover now and scheduled, failover, dynamic configuration, pause, restart, reload, reinitialize,
and the protection of the unsafe endpoints. The tests share one cluster and run in file order."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.support.cluster import Cluster, Node, running_cluster
from tests.support.waiting import wait_until

pytestmark = pytest.mark.cluster

AUTH = ("admin", "s3cret")
TTL, LOOP_WAIT = 20, 2


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    extra = {"restapi": {"authentication": {"username": AUTH[0], "password": AUTH[1]}}}
    with running_cluster(3, scope="control", extra=extra) as c:
        try:
            c.wait_healthy(timeout=120)
            yield c
        except BaseException:
            print(c.logs())
            raise


@contextlib.contextmanager
def logs_on_failure(cluster: Cluster) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(cluster.logs())
        raise


def replicas(cluster: Cluster, leader: Node) -> list[Node]:
    return [n for n in cluster.nodes if n is not leader and n.is_running]


def test_unsafe_endpoints_refuse_requests_without_credentials_D36(cluster: Cluster) -> None:
    leader = cluster.wait_healthy()
    status, body = leader.rest("/switchover", "POST", body={"leader": leader.name})
    assert status == 401 and "no auth header received" in str(body)
    status, body = leader.rest("/switchover", "POST", body={"leader": leader.name}, auth=("admin", "wrong"))
    assert status == 401 and "not authenticated" in str(body)
    status, _ = leader.rest("/config", "PATCH", raw=b"{not json", auth=AUTH)
    assert status == 400
    assert leader.rest("/patroni")[0] == 200  # safe methods need no credentials


def test_switchover_hands_the_lock_to_the_candidate_and_the_old_primary_streams_again_A26(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        old = cluster.wait_healthy()
        candidate = replicas(cluster, old)[0]
        started = time.monotonic()
        status, body = old.rest(
            "/switchover", "POST", body={"leader": old.name, "candidate": candidate.name}, auth=AUTH, timeout=60
        )
        assert (status, body) == (200, f'Successfully switched over to "{candidate.name}"')
        print(f"switchover: {candidate.name} leads {time.monotonic() - started:.2f}s after the request")
        assert cluster.wait_healthy(timeout=60) is candidate
        members = {m["name"]: m for m in (cluster.cluster_json() or {})["members"]}
        assert members[old.name]["state"] == "streaming" and members[old.name]["role"] == "replica"
        assert "failover" not in (cluster.cluster_json() or {})  # the request was cleaned up
        history = candidate.rest("/history")[1]
        assert history and history[-1][4] == candidate.name


def test_a_scheduled_switchover_happens_at_its_time_and_not_before_A31(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        old = cluster.wait_healthy()
        candidate = replicas(cluster, old)[0]
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
        status, body = old.rest(
            "/switchover",
            "POST",
            auth=AUTH,
            body={"leader": old.name, "candidate": candidate.name, "scheduled_at": when.isoformat()},
        )
        assert (status, body) == (202, "Switchover scheduled")
        scheduled = wait_until(
            lambda: (cluster.cluster_json() or {}).get("scheduled_switchover"),
            5,
            what="the scheduled switchover in GET /cluster",
        )
        assert scheduled["from"] == old.name and scheduled["to"] == candidate.name
        while datetime.now(UTC) < when - timedelta(seconds=1):
            assert cluster.leader() is old, "the switchover happened before its time"
            time.sleep(0.2)
        wait_until(lambda: cluster.leader() is candidate, 30, what="the scheduled switchover")
        assert datetime.now(UTC) >= when
        cluster.wait_healthy(timeout=60)


def test_a_cancelled_scheduled_switchover_does_not_happen_A32_D27(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        candidate = replicas(cluster, leader)[0]
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
        status, _ = leader.rest(
            "/switchover",
            "POST",
            auth=AUTH,
            body={"leader": leader.name, "candidate": candidate.name, "scheduled_at": when.isoformat()},
        )
        assert status == 202
        assert leader.rest("/switchover", "DELETE", auth=AUTH) == (200, "scheduled switchover deleted")
        assert leader.rest("/switchover", "DELETE", auth=AUTH)[0] == 404
        deadline = when + timedelta(seconds=2 * LOOP_WAIT + 2)
        while datetime.now(UTC) < deadline:
            assert cluster.leader() is leader
            time.sleep(0.3)


def test_failover_to_a_named_candidate_A27_D28(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        old = cluster.wait_healthy()
        candidate = replicas(cluster, old)[-1]
        status, body = candidate.rest("/failover", "POST", body={"candidate": candidate.name}, auth=AUTH, timeout=60)
        assert (status, body) == (200, f'Successfully failed over to "{candidate.name}"')
        assert cluster.wait_healthy(timeout=60) is candidate


def test_a_dynamic_parameter_reaches_every_node_with_a_reload_C46_D24(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        status, config = leader.rest(
            "/config", "PATCH", auth=AUTH, body={"postgresql": {"parameters": {"work_mem": "7MB"}}}
        )
        assert status == 200 and config["postgresql"]["parameters"]["work_mem"] == "7MB"
        for node in cluster.nodes:
            wait_until(lambda n=node: n.sql("SHOW work_mem")[0][0] == "7MB", 30, what=f"work_mem on {node.name}")


def test_a_restart_only_parameter_is_pending_until_a_restart_C45_D29(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        status, _ = leader.rest(
            "/config", "PATCH", auth=AUTH, body={"postgresql": {"parameters": {"max_prepared_transactions": 5}}}
        )
        assert status == 200
        for node in cluster.nodes:
            wait_until(
                lambda n=node: n.patroni().get("pending_restart") is True, 30, what=f"pending_restart on {node.name}"
            )
        replica = replicas(cluster, leader)[0]
        status, body = replica.rest("/restart", "POST", auth=AUTH, body={"restart_pending": True}, timeout=90)
        assert (status, body) == (200, "restarted successfully")
        assert replica.sql("SHOW max_prepared_transactions")[0][0] == "5"
        assert "pending_restart" not in replica.patroni()


def test_reload_and_sighup_reread_the_configuration_file_D31(cluster: Cluster) -> None:
    leader = cluster.wait_healthy()
    node = replicas(cluster, leader)[0]
    original = node.config_path.read_text()
    changed = yaml.safe_load(original)
    changed.setdefault("tags", {})["zone"] = "b"
    before = node.sql("SHOW maintenance_work_mem")[0][0]
    changed["postgresql"].setdefault("parameters", {})["maintenance_work_mem"] = "77MB"
    node.config_path.write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        assert node.rest("/reload", "POST", auth=AUTH) == (202, "reload scheduled")
        wait_until(lambda: node.patroni().get("tags", {}).get("zone") == "b", 30, what="the new tag in GET /patroni")
        wait_until(lambda: node.sql("SHOW maintenance_work_mem")[0][0] == "77MB", 30, what="the local parameter")
        assert leader.sql("SHOW maintenance_work_mem")[0][0] == before, "only the reloaded node's file changed"
    finally:
        node.config_path.write_text(original)
    # SIGHUP to the node, as systemd's ExecReload sends it: the same reload, and no program is restarted
    programs = {name: node.program(name) for name in ("ha_loop", "postmaster", "restapi", "dcs_proxy")}
    postgres = node.postmaster_pid()
    assert node.proc is not None and all(programs.values())
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "zone" not in node.patroni().get("tags", {}), 30, what="the tag gone again")
    wait_until(lambda: node.sql("SHOW maintenance_work_mem")[0][0] == before, 30, what="the parameter back")
    assert {name: node.program(name) for name in programs} == programs and node.postmaster_pid() == postgres


def test_reinitialize_rebuilds_a_replica_which_streams_again_C20_D32(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        replica = replicas(cluster, leader)[0]
        assert leader.rest("/reinitialize", "POST", auth=AUTH, body={})[0] == 503  # never the leader
        before = replica.patroni()["postmaster_start_time"]
        assert replica.rest("/reinitialize", "POST", auth=AUTH, body={"force": True}) == (200, "reinitialize started")
        wait_until(
            lambda: replica.patroni().get("postmaster_start_time") not in (None, before),
            60,
            what="the rebuilt replica to start",
        )
        cluster.wait_healthy(timeout=60)


def while_ticking(nodes: list[Node], ticks: int, check: Callable[[], None]) -> None:
    """Run `check` until every node's brain has ticked `ticks` more times: an absence observed over ticks."""
    start = {n.name: n.ticks() for n in nodes}
    deadline = time.monotonic() + ticks * (LOOP_WAIT + 2) + 10
    while any(n.ticks() < start[n.name] + ticks for n in nodes):
        check()
        assert time.monotonic() < deadline, "the brains stopped ticking"
        time.sleep(0.2)
    check()


def test_pause_leaves_postgres_alone_and_resume_restores_one_leader_A42(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        assert leader.rest("/config", "PATCH", auth=AUTH, body={"pause": True})[0] == 200
        for node in cluster.nodes:
            wait_until(lambda n=node: n.patroni().get("pause") is True, 30, what=f"pause on {node.name}")
        stopped, promoted = replicas(cluster, leader)
        subprocess_pg_ctl(stopped, "stop", "-m", "immediate")

        def still_stopped() -> None:
            assert stopped.postmaster_pid() is None, "PostgreSQL was restarted in pause"

        while_ticking([stopped], 2, still_stopped)
        subprocess_pg_ctl(promoted, "promote")  # a manual promote is tolerated: nobody is demoted
        wait_until(lambda: promoted.sql("SELECT pg_is_in_recovery()")[0][0] is False, 30, what="the manual promote")

        def two_primaries() -> None:
            assert leader.sql("SELECT pg_is_in_recovery()")[0][0] is False
            assert promoted.sql("SELECT pg_is_in_recovery()")[0][0] is False

        while_ticking([leader, promoted], 2, two_primaries)
        assert leader.rest("/config", "PATCH", auth=AUTH, body={"pause": None})[0] == 200
        # resumed: the primary without the lock is demoted, the stopped replica started again
        wait_until(
            lambda: cluster.leader() is leader and promoted.sql("SELECT pg_is_in_recovery()")[0][0],
            60,
            what="one leader again",
        )
        wait_until(lambda: stopped.postmaster_pid() is not None, 30, what="the stopped replica to be started")
        # the promoted node's timeline diverged: rebuild it (pg_rewind is the durability work)
        assert promoted.rest("/reinitialize", "POST", auth=AUTH, body={"force": True})[0] == 200
        cluster.wait_healthy(timeout=120)


def subprocess_pg_ctl(node: Node, *args: str) -> None:
    import subprocess

    from tests.support.postgres import as_pg_user, pg_bin_dir

    subprocess.run(
        as_pg_user([f"{pg_bin_dir()}/pg_ctl", *args, "-D", str(node.data_dir)]),
        check=True,
        capture_output=True,
        timeout=60,
    )

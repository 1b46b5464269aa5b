"""havenctl against a real 3-node cluster: every patronictl command of E.2 changes what it should and
prints what patronictl prints. The tests share one cluster and run in file order."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.support.cluster import SUPERUSER, Cluster, Node, havenctl_binary, running_cluster
from tests.support.layout import raw_view
from tests.support.waiting import wait_until

pytestmark = pytest.mark.cluster

AUTH = ("admin", "s3cret")
TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    extra = {"restapi": {"authentication": {"username": AUTH[0], "password": AUTH[1]}}}
    with running_cluster(3, scope="ctl", extra=extra) as c:
        try:
            c.wait_healthy(timeout=120)
            yield c
        except BaseException:
            print(c.logs())
            raise


def ctl(
    cluster: Cluster, *args: str, input: str | None = None, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    config = cluster.nodes[0].config_path
    result = subprocess.run(
        [havenctl_binary(), "-c", str(config), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if ok:
        assert result.returncode == 0, f"havenctl {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@contextlib.contextmanager
def logs_on_failure(cluster: Cluster) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(cluster.logs())
        raise


def others(cluster: Cluster, leader: Node) -> list[Node]:
    return [n for n in cluster.nodes if n is not leader]


def test_list_and_topology_in_every_format_E12_E22(cluster: Cluster) -> None:
    leader = cluster.wait_healthy()
    pretty = ctl(cluster, "list").stdout
    assert re.match(r"\+ Cluster: ctl \(\d+\) [-+]", pretty)
    assert f"| {leader.name} " in pretty and "| Leader  |" in pretty and "streaming" in pretty
    rows = json.loads(ctl(cluster, "list", "-f", "json").stdout)
    assert {r["Member"]: r["Role"] for r in rows} == {
        n.name: "Leader" if n is leader else "Replica" for n in cluster.nodes
    }
    assert all(r["Cluster"] == "ctl" for r in rows)
    assert yaml.safe_load(ctl(cluster, "list", "-f", "yaml").stdout) == rows
    tsv = ctl(cluster, "list", "-f", "tsv").stdout.splitlines()
    assert tsv[0].split("\t") == ["Cluster", "Member", "Host", "Role", "State", "TL", "Lag in MB"]
    topology = ctl(cluster, "topology").stdout
    assert f"| {leader.name} " in topology and all(f"| + {n.name} " in topology for n in others(cluster, leader))


def test_switchover_with_force_E21(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        old = cluster.wait_healthy()
        candidate = others(cluster, old)[0]
        out = ctl(cluster, "switchover", "--leader", old.name, "--candidate", candidate.name, "--force").stdout
        assert "Current cluster topology" in out
        assert re.search(rf"{TIMESTAMP} Successfully switched over to \"{candidate.name}\"", out), out
        assert cluster.wait_healthy(timeout=60) is candidate


def test_scheduled_switchover_shows_in_list_and_flush_cancels_it_E10_E21(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        candidate = others(cluster, leader)[0]
        when = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0).isoformat()
        out = ctl(
            cluster,
            "switchover",
            "--leader",
            leader.name,
            "--candidate",
            candidate.name,
            "--scheduled",
            when,
            "--force",
        ).stdout
        assert "Switchover scheduled" in out
        wait_until(lambda: "Switchover scheduled at:" in ctl(cluster, "list").stdout, 10, what="the footer")
        assert "Success: scheduled switchover deleted" in ctl(cluster, "flush", "ctl", "switchover", "--force").stdout
        wait_until(lambda: "Switchover scheduled at:" not in ctl(cluster, "list").stdout, 10, what="the flush")


def test_failover_with_force_E9(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        old = cluster.wait_healthy()
        candidate = others(cluster, old)[-1]
        out = ctl(cluster, "failover", "--candidate", candidate.name, "--force").stdout
        assert re.search(rf"{TIMESTAMP} Successfully failed over to \"{candidate.name}\"", out), out
        assert cluster.wait_healthy(timeout=60) is candidate


def test_edit_config_and_show_config_E8_E20(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        cluster.wait_healthy()
        out = ctl(cluster, "edit-config", "-s", "maximum_lag_on_failover=2097152", "-p", "work_mem=9MB", "--force")
        assert "Configuration changed" in out.stdout
        config = yaml.safe_load(ctl(cluster, "show-config").stdout)
        assert config["maximum_lag_on_failover"] == 2097152
        assert config["postgresql"]["parameters"]["work_mem"] == "9MB"
        for node in cluster.nodes:
            wait_until(lambda n=node: n.sql("SHOW work_mem")[0][0] == "9MB", 30, what=f"work_mem on {node.name}")
        assert "Not changed" in ctl(cluster, "edit-config", "-p", "work_mem=9MB", "--force").stdout


def test_restart_pending_parameter_then_restart_pending_E19_C45(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        cluster.wait_healthy()
        ctl(cluster, "edit-config", "-p", "max_prepared_transactions=7", "--force")
        wait_until(lambda: "Pending restart" in ctl(cluster, "list").stdout, 30, what="the pending restart column")
        out = ctl(cluster, "restart", "ctl", "--pending", "--force").stdout
        assert all(f"Success: restart on member {n.name}" in out for n in cluster.nodes), out
        wait_until(lambda: "Pending restart" not in ctl(cluster, "list").stdout, 30, what="the restarts")
        assert all(n.sql("SHOW max_prepared_transactions")[0][0] == "7" for n in cluster.nodes)


def test_reload_E17(cluster: Cluster) -> None:
    cluster.wait_healthy()
    out = ctl(cluster, "reload", "ctl", "--force").stdout
    assert all(
        f"Reload request received for member {n.name} and will be processed within 2 seconds" in out
        for n in cluster.nodes
    ), out


def test_reinit_with_wait_E16_C20(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        replica = others(cluster, leader)[0]
        out = ctl(cluster, "reinit", "ctl", replica.name, "--force", "--wait").stdout
        assert f"Success: reinitialize for member {replica.name}" in out
        assert f"Reinitialize is completed on: {replica.name}" in out
        cluster.wait_healthy(timeout=60)


def test_pause_and_resume_with_wait_E13_E14(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        cluster.wait_healthy()
        out = ctl(cluster, "pause", "--wait").stdout
        assert "Success: cluster management is paused" in out
        assert " Maintenance mode: on" in ctl(cluster, "list").stdout
        assert ctl(cluster, "pause", ok=False).returncode != 0
        assert "Success: cluster management is resumed" in ctl(cluster, "resume", "--wait").stdout


def test_history_query_dsn_and_version_E7_E11_E15_E23(cluster: Cluster) -> None:
    leader = cluster.wait_healthy()
    history = json.loads(ctl(cluster, "history", "-f", "json").stdout)
    assert history and set(history[0]) == {"TL", "LSN", "Reason", "Timestamp", "New Leader"}
    env_dsn = ctl(cluster, "dsn").stdout.strip()
    assert env_dsn == f"host=127.0.0.1 port={leader.spec.pg_port}"
    query = ctl(
        cluster, "query", "-U", SUPERUSER[0], "-d", "postgres", "-c", "SELECT 41 + 1", env={"PGPASSWORD": SUPERUSER[1]}
    )
    assert query.stdout.splitlines()[-1] == "42"
    assert ctl(cluster, "version").stdout.startswith("havenctl version ")


def test_remove_asks_for_confirmation_and_a_running_cluster_restores_itself_E18_A51(cluster: Cluster) -> None:
    with logs_on_failure(cluster):
        leader = cluster.wait_healthy()
        refused = ctl(cluster, "remove", "ctl", input="wrong\n", ok=False)
        assert refused.returncode != 0 and "Cluster names specified do not match" in refused.stderr
        before = raw_view(leader.run_dir)["keys"]["initialize"]["version"]
        out = ctl(cluster, "remove", "ctl", input=f"ctl\nYes I am aware\n{leader.name}\n").stdout
        assert "Please confirm the cluster name to remove" in out
        # every key was deleted: /initialize comes back as a new key (a higher version)
        wait_until(
            lambda: raw_view(leader.run_dir)["keys"].get("initialize", {}).get("version", 0) > before,
            30,
            what="/initialize to be re-created",
        )
        # the DCS was wiped; the running primary takes the lock again and restores /initialize and /config
        cluster.wait_healthy(timeout=90)
        assert cluster.leader() is leader
        shown = wait_until(lambda: yaml.safe_load(ctl(cluster, "show-config").stdout), 30, what="/config restored")
        assert shown["ttl"] == 20

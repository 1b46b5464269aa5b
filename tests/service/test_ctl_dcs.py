"""havenctl with a configuration that names only the cluster (E1, E2, E18): it reads the cluster from a real DCS,
the embedded Raft of three in-process nodes n1..n3 (shared.dcs.get_backend), joining it as a read-only member, and
then talks to the members' REST APIs found in their keys (played by local HTTP servers). `remove` deletes the
cluster's keys: the one DCS write havenctl makes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import NodeConfig
from shared.dcs import Backend, get_backend
from tests.support.dcs_servers import RaftServer
from tests.support.fake_members import NAMES, FakeCluster, havenctl, table
from tests.support.ports import free_port
from tests.support.waiting import wait_until

SYSID = "7277694203142172922"
TTL = 600  # the keys must outlive the module
HISTORY = [[1, 24392648, "no recovery target specified", "2023-09-11T22:11:27.125527+00:00", "postgresql0"]]
CONFIG = {"loop_wait": 10, "ttl": 30, "retry_timeout": 10}


class Raft:
    def __init__(self) -> None:
        self.server = RaftServer()
        self.nodes: list[Backend] = []

    def start(self) -> None:
        for name in ("n1", "n2", "n3"):
            config = {"name": name, "scope": "batman", "namespace": "/service", "raft": self.server.section(name)}
            backend = get_backend(NodeConfig(config), lambda: None)
            backend.start()
            self.nodes.append(backend)
        for backend in self.nodes:
            wait_until(backend.is_healthy, 30, what="the Raft nodes to form a cluster")

    def client(self, scope: str) -> Backend:
        """A started read-only member of the Raft (no self_addr) for cluster `scope`: it can read and write."""
        config = {"scope": scope, "namespace": "/service", "raft": self.section()}
        backend = get_backend(NodeConfig(config), lambda: None)
        backend.start()
        wait_until(backend.is_healthy, 30, what="a read-only Raft client")
        return backend

    def section(self, **extra: Any) -> dict[str, Any]:
        """What a havenctl user writes: every node's address, the password, no self_addr."""
        addrs = [f"127.0.0.1:{self.server.ports[n]}" for n in ("n1", "n2", "n3")]
        return {"partner_addrs": addrs, "password": self.server.section("n1")["password"], **extra}

    def close(self) -> None:
        for backend in self.nodes:
            backend.close()
        self.server.close()


def populate(writer: Backend, members: FakeCluster | None, leader: str | None = "postgresql0") -> None:
    """The keys a running 3.2 cluster has: three members (api_url: the fakes), the leader, config, history..."""
    for i, name in enumerate(NAMES):
        value = {
            "conn_url": f"postgres://127.0.0.1:{5432 + i}/postgres",
            "api_url": members[name].api_url if members else f"http://127.0.0.1:{free_port()}/patroni",
            "state": "running",
            "role": "master" if name == leader else "replica",
            "version": "3.2.2",
            "xlog_location": 50331648 - i * 1048576,
            "timeline": 5,
        }
        if name != leader:
            value["replication_state"] = "streaming"
        writer.touch_member(name, json.dumps(value), TTL, timeout=5)
    if leader:
        writer.take_leader(leader, TTL, timeout=5)
    writer.initialize(True, SYSID, timeout=5)
    writer.write("config", json.dumps(CONFIG), None, None, timeout=5)
    writer.write("history", json.dumps(HISTORY), None, None, timeout=5)
    writer.write("status", json.dumps({"optime": 50331648}), None, None, timeout=5)


@pytest.fixture(scope="module")
def raft() -> Iterator[Raft]:
    raft = Raft()
    raft.start()
    yield raft
    raft.close()


@pytest.fixture(scope="module")
def shared_members(raft: Raft) -> Iterator[FakeCluster]:
    cluster = FakeCluster(NAMES)
    populate(raft.nodes[0], cluster)
    yield cluster
    cluster.close()


@pytest.fixture
def members(shared_members: FakeCluster) -> FakeCluster:
    for member in shared_members:
        member.requests.clear()
    return shared_members


def write(tmp_path: Path, config: dict[str, Any]) -> str:
    path = tmp_path / "ctl.yml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


FROM_DCS = table(
    " Cluster: batman (7277694203142172922) ",
    [
        "| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |           |",
        "| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |         1 |",
        "| postgresql2 | 127.0.0.1:5434 | Replica | streaming |  5 |         2 |",
    ],
)


def test_e1_list_reads_the_cluster_from_the_dcs(raft: Raft, members: FakeCluster, tmp_path: Path) -> None:
    config = write(tmp_path, {"scope": "batman", "namespace": "/service", "raft": raft.section()})
    result = havenctl(config, "list")
    assert (result.exit_code, result.stdout) == (0, FROM_DCS), result.output
    assert all(not m.calls() for m in members)  # the table comes from the DCS, as patronictl's
    assert havenctl(config, "history").stdout.split("\n")[3] == (
        "|  1 | 24392648 | no recovery target specified | 2023-09-11T22:11:27.125527+00:00 | postgresql0 |"
    )
    assert havenctl(config, "show-config").stdout == "loop_wait: 10\nretry_timeout: 10\nttl: 30\n\n"
    assert havenctl(config, "dsn", "-r", "replica").stdout == "host=127.0.0.1 port=5433\n"


def test_e2_dcs_url_names_the_dcs_and_the_namespace(raft: Raft, members: FakeCluster, tmp_path: Path) -> None:
    # The address and the namespace come from -d; the password stays from the configuration's raft section.
    password = raft.section()["password"]
    config = write(tmp_path, {"scope": "batman", "raft": {"partner_addrs": ["192.0.2.1:1"], "password": password}})
    # A read-only Raft member learns everything from the leader: the one address must be the leader's.
    leader = next(name for name, node in zip(("n1", "n2", "n3"), raft.nodes, strict=True) if node.health().is_leader)
    url = f"raft://127.0.0.1:{raft.server.ports[leader]}/service"
    result = havenctl(config, "-d", url, "list")
    assert (result.exit_code, result.stdout) == (0, FROM_DCS), result.output
    wrong = havenctl(config, "-d", url, "list", "gotham")
    assert (wrong.exit_code, wrong.stderr) == (
        1,
        'Error: Cluster "gotham" not found in the DCS: no key under /service/gotham/\n',
    )


def test_e13_actions_go_to_the_rest_apis_named_in_the_dcs(raft: Raft, members: FakeCluster, tmp_path: Path) -> None:
    members["postgresql0"].route("PATCH", "/config", (200, {"pause": True}))
    config = write(tmp_path, {"scope": "batman", "namespace": "/service", "raft": raft.section()})
    result = havenctl(config, "pause")
    assert (result.exit_code, result.stdout) == (0, "Success: cluster management is paused\n"), result.output
    assert members.unsafe_calls() == {"postgresql0": [("PATCH", "/config")]}


def test_e1_a_nodes_own_configuration_falls_back_to_the_dcs(raft: Raft, members: FakeCluster, tmp_path: Path) -> None:
    """Its REST API is down; its raft section names its own self_addr, where havenctl must not listen."""
    node = raft.server.section("n1")  # self_addr, bind_addr (none), the other two partners, data_dir, password
    config = write(
        tmp_path,
        {"scope": "batman", "namespace": "/service", "name": "postgresql0", "raft": node,
         "restapi": {"connect_address": f"127.0.0.1:{free_port()}", "listen": "0.0.0.0:8008"}},
    )  # fmt: skip
    result = havenctl(config, "list")
    assert (result.exit_code, result.stdout) == (0, FROM_DCS), result.output


def test_e18_remove_asks_three_times_then_deletes_every_key(raft: Raft, tmp_path: Path) -> None:
    gotham = raft.client("gotham")
    try:
        populate(gotham, None)
    finally:
        gotham.close()
    observer = raft.client("gotham")
    try:
        wait_until(lambda: observer.load().keys, 5, what="the gotham keys")
        config = write(tmp_path, {"scope": "batman", "namespace": "/service", "raft": raft.section()})
        refusals = {
            "batman\n": "Error: Cluster names specified do not match\n",
            "gotham\nyes\n": 'Error: You did not exactly type "Yes I am aware"\n',
            "gotham\nYes I am aware\npostgresql1\n": "Error: You did not specify the current leader of the cluster\n",
        }
        for answers, error in refusals.items():
            result = havenctl(config, "remove", "gotham", input=answers)
            assert (result.exit_code, result.stderr) == (1, error)
        assert observer.load().keys
        result = havenctl(config, "remove", "gotham", input="gotham\nYes I am aware\npostgresql0\n")
        assert result.exit_code == 0, result.output
        assert result.stdout == FROM_DCS.replace("batman", "gotham") + (
            "Please confirm the cluster name to remove: gotham\n"
            'You are about to remove all information in DCS for gotham, please type: "Yes I am aware": Yes I am aware\n'
            "This cluster currently is healthy. Please specify the leader name to continue: postgresql0\n"
        )  # patroni-docs.txt L3370-3388
        wait_until(lambda: not observer.load().keys, 5, what="the gotham keys to go")
    finally:
        observer.close()
    assert raft.nodes[2].load().keys  # batman's keys stay

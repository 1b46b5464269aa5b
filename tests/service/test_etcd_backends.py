"""The etcd v3 (`etcd3`) and v2 (`etcd`) backends against real etcd 3.4, for what the contract suite does not
cover: Patroni's key layout as a raw client sees it, authentication, a three-member etcd losing the member the
clients talk to, and the lease rule (only refresh_leader keeps the leader key alive)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.config import NodeConfig
from shared.dcs import Backend, BackendError, DCSUnavailable, get_backend
from shared.dcs.etcd_base import WatchingBackend
from shared.dcs.etcd_common import Endpoint, peer_client_endpoints
from tests.support.etcd_server import Etcd2Server, Etcd3Server, EtcdServer
from tests.support.ports import free_port
from tests.support.waiting import wait_until

KINDS = ("etcd3", "etcd")
SERVERS: dict[str, type[EtcdServer]] = {"etcd3": Etcd3Server, "etcd": Etcd2Server}
TIMEOUT = 5.0
MEMBER = json.dumps({"conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": "http://127.0.0.1:8008/patroni"})

Make = Callable[..., Backend]
Servers = Callable[..., EtcdServer]


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[EtcdServer]:
    s = SERVERS[request.param]()
    s.start()
    yield s
    s.close()


@pytest.fixture
def servers() -> Iterator[Callable[..., EtcdServer]]:
    """servers(kind, **options) -> a started server of its own, stopped after the test's backends are closed."""
    made: list[EtcdServer] = []

    def factory(kind: str, **options: Any) -> EtcdServer:
        s = SERVERS[kind](**options)
        made.append(s)
        s.start()
        return s

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def make() -> Iterator[Make]:
    """make(kind, section, name=..., scope=...) -> a started backend, closed after the test."""
    made: list[Backend] = []
    default_scope = f"etcd-{uuid.uuid4().hex[:8]}"

    def factory(kind: str, section: dict[str, Any], name: str = "n1", scope: str = default_scope) -> Backend:
        config = NodeConfig({"name": name, "scope": scope, kind: section})
        backend = get_backend(config, lambda: None)
        backend.start()
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.close()


def healthy(*backends: Backend, timeout: float = 15) -> None:
    for b in backends:
        wait_until(b.is_healthy, timeout, what=f"{b.name} backend to be healthy")


def values(backend: Backend) -> dict[str, str]:
    return {k: v.value for k, v in backend.load().keys.items()}


def raw_keys(server: EtcdServer, prefix: str) -> dict[str, dict[str, Any]]:
    """key -> {value, version, ttl or lease} as an independent client reads them (v3 gateway or v2 HTTP)."""
    if server.kind == "etcd3":
        return {
            k: {"value": kv["value"], "version": int(kv["mod_revision"]), "lease": int(kv.get("lease", 0))}
            for k, kv in server.v3_range(prefix).items()
        }
    status, body = server.v2("GET", f"/v2/keys{prefix}", recursive="true")
    assert status == 200, body

    def leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [x for c in node.get("nodes", []) for x in leaves(c)] if node.get("dir") else [node]

    return {
        n["key"]: {"value": n["value"], "version": n["modifiedIndex"], "ttl": n.get("ttl")}
        for n in leaves(body["node"])
    }


def test_keys_and_values_are_patronis_as_a_raw_client_sees_them_B1_B29(server: EtcdServer, make: Make) -> None:
    scope = f"layout-{uuid.uuid4().hex[:6]}"
    b = make(server.kind, server.section("n1"), scope=scope)
    healthy(b)
    config = json.dumps({"ttl": 30, "loop_wait": 10})
    assert b.take_leader("n1", 30, timeout=TIMEOUT)
    assert b.touch_member("n1", MEMBER, 30, timeout=TIMEOUT)
    assert b.initialize(True, "7268616322854375442", timeout=TIMEOUT)
    applied, version = b.write("config", config, None, None, timeout=TIMEOUT)
    assert applied

    prefix = f"/service/{scope}/"
    raw = raw_keys(server, prefix)
    assert {k: v["value"] for k, v in raw.items()} == {
        prefix + "leader": "n1",
        prefix + "members/n1": MEMBER,
        prefix + "initialize": "7268616322854375442",
        prefix + "config": config,
    }
    assert raw[prefix + "config"]["version"] == version
    assert {k: v.version for k, v in b.load().keys.items()} == {k[len(prefix) :]: v["version"] for k, v in raw.items()}
    if server.kind == "etcd3":
        leader_lease, member_lease = raw[prefix + "leader"]["lease"], raw[prefix + "members/n1"]["lease"]
        assert leader_lease and member_lease and leader_lease != member_lease  # touch_member never extends the lock
        assert raw[prefix + "config"]["lease"] == 0 and raw[prefix + "initialize"]["lease"] == 0
        assert server.v3("/v3/lease/timetolive", {"ID": leader_lease})["grantedTTL"] == "30"
    else:
        assert 28 <= raw[prefix + "leader"]["ttl"] <= 30 and 28 <= raw[prefix + "members/n1"]["ttl"] <= 30
        assert raw[prefix + "config"]["ttl"] is None
    ttl_left = wait_until(lambda: b.load().keys["leader"].ttl or 0.0, 5, what="the leader's ttl to be known")
    assert 26 <= ttl_left <= 30
    assert b.load().keys["config"].ttl is None


def test_the_etcd_section_on_a_server_without_the_v2_api_says_so_B29(servers: Servers, make: Make) -> None:
    server = servers("etcd3")
    b = make("etcd", server.section("n1"))
    with pytest.raises(DCSUnavailable, match="no v2 API here"):
        b.take_leader("n1", 30, timeout=2.0)
    assert not b.is_healthy()


def test_a_dead_first_host_is_skipped(server: EtcdServer, make: Make) -> None:
    live = server.section("n1")["host"]
    b = make(server.kind, {"hosts": f"127.0.0.1:{free_port()}, {live}"})
    healthy(b, timeout=10)
    assert b.take_leader("n1", 30, timeout=TIMEOUT)
    assert values(b)["leader"] == "n1"


def test_a_leader_that_stops_refreshing_loses_the_key_after_ttl_while_it_keeps_touching_its_member_key_A4(
    server: EtcdServer, make: Make
) -> None:
    holder = make(server.kind, server.section("n1"), name="n1")
    watcher = make(server.kind, server.section("n2"), name="n2", scope=holder.config.scope)
    healthy(holder, watcher)
    ttl = 3.0
    assert holder.take_leader("n1", ttl, timeout=TIMEOUT)
    taken = time.monotonic()

    def lock_gone() -> bool:  # alive and connected: the member key is touched, the lock is not refreshed
        assert holder.touch_member("n1", MEMBER, ttl, timeout=TIMEOUT)
        return "leader" not in values(watcher)

    wait_until(lock_gone, ttl + 5, interval=0.25, what="the unrefreshed lock to expire")
    gone_after = time.monotonic() - taken
    assert ttl - 0.5 <= gone_after <= ttl + 2.0, gone_after
    assert values(watcher).get("members/n1") == MEMBER
    assert holder.is_healthy()
    assert watcher.take_leader("n2", ttl, timeout=TIMEOUT)


@pytest.mark.parametrize("kind", KINDS)
def test_authentication_with_username_and_password_B29(kind: str, servers: Servers, make: Make) -> None:
    server = servers(kind)
    server.enable_auth("haven", "s3cret", "/service/")
    section = server.section("n1")
    good = make(kind, {**section, "username": "haven", "password": "s3cret"})
    healthy(good)
    assert good.take_leader("n1", 30, timeout=TIMEOUT)
    assert values(good)["leader"] == "n1"
    for wrong in ({**section, "username": "haven", "password": "wrong"}, section):
        b = make(kind, wrong, name="n2", scope=good.config.scope)
        started = time.monotonic()
        with pytest.raises(DCSUnavailable):
            b.take_leader("n2", 30, timeout=2.0)
        assert time.monotonic() - started < 3.5
        assert not b.is_healthy()
        with pytest.raises(DCSUnavailable):
            b.load()


@pytest.mark.parametrize("kind", KINDS)
def test_tls_with_a_client_certificate_F32(kind: str, servers: Servers, make: Make) -> None:
    server = servers(kind, tls=True)
    section = server.section("n1")
    b = make(kind, section)
    healthy(b)
    assert b.take_leader("n1", 30, timeout=TIMEOUT)
    assert values(b)["leader"] == "n1"
    without_certificate = make(kind, {k: v for k, v in section.items() if k not in ("cert", "key")}, name="n2")
    with pytest.raises(DCSUnavailable):
        without_certificate.take_leader("n2", 30, timeout=2.0)
    with pytest.raises(BackendError, match="cannot read"):
        make(kind, {**section, "cacert": str(server.dir / "missing.pem")})


@pytest.mark.parametrize("kind", KINDS)
def test_the_backend_survives_the_loss_of_the_etcd_member_it_talks_to(kind: str, servers: Servers, make: Make) -> None:
    """3 members; the one the clients use, also etcd's Raft leader, is killed: the lock is neither lost nor
    seen lost, and calls succeed again through the survivors. The watcher is given only the doomed member: it
    knows the others from the members API (B28)."""
    server = servers(kind, members=3)
    first = wait_until(lambda: [i for i in [server.raft_leader()] if i is not None], 10, what="a leader")[0]
    order = [first, *(i for i in range(3) if i != first)]
    section = {"hosts": [f"127.0.0.1:{server.members[i].client_port}" for i in order]}
    holder = make(kind, section, name="n1")
    watcher = make(kind, {"host": section["hosts"][0]}, name="n2", scope=holder.config.scope)
    healthy(holder, watcher)
    clients = {Endpoint("127.0.0.1", m.client_port) for m in server.members}
    assert isinstance(watcher, WatchingBackend)
    wait_until(lambda: set(watcher.endpoints.known()) == clients, 5, what="the members to be found")
    assert set(peer_client_endpoints("http", [Endpoint("127.0.0.1", server.members[1].peer_port)], None)) == clients
    ttl = 10.0
    assert holder.take_leader("n1", ttl, timeout=TIMEOUT)
    wait_until(lambda: values(watcher).get("leader") == "n1", 5, what="the watcher to see the lock")

    seen: list[str | None] = []
    stop = threading.Event()

    def observe() -> None:  # what the other node sees, every 50 ms, throughout
        while not stop.wait(0.05):
            try:
                seen.append(values(watcher).get("leader"))
            except DCSUnavailable:
                pass

    observer = threading.Thread(target=observe)
    observer.start()
    try:
        server.kill_member(first)
        killed = time.monotonic()

        def refreshed() -> bool:  # DCSUnavailable means "not yet"; False would be a lost lock
            assert holder.refresh_leader("n1", ttl, timeout=TIMEOUT), "the lock was lost"
            return holder.write("status", '{"optime":1}', None, None, timeout=TIMEOUT)[0]

        wait_until(refreshed, 15, interval=0.2, fail_on=AssertionError, what="a refresh through the survivors")
        recovered_s = time.monotonic() - killed
        for i in range(3):
            assert holder.refresh_leader("n1", ttl, timeout=TIMEOUT)
            assert holder.write("status", f'{{"optime":{i + 2}}}', None, None, timeout=TIMEOUT)[0]
        healthy(holder, watcher, timeout=10)
        wait_until(lambda: values(watcher).get("status") == '{"optime":4}', 5, what="the last write")
    finally:
        stop.set()
        observer.join()
    assert seen and set(seen) == {"n1"}, f"the lock was seen as {set(seen)}"
    assert recovered_s < 10, recovered_s

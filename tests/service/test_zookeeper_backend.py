"""The ZooKeeper and Exhibitor backends against a real ZooKeeper, for what the contract suite does not see:
the znode layout as a raw kazoo client sees it, the leader lease, lost sessions, ttl changes, ACLs over TLS
and Exhibitor ensemble changes (B31, B32, DESIGN.md "a hung brain loses the key")."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import make_acl

from shared.config import NodeConfig
from shared.dcs import get_backend
from shared.dcs.zookeeper import ZooKeeperBackend
from tests.support.ci import requires
from tests.support.exhibitor_server import ExhibitorServer, TcpForwarder
from tests.support.waiting import wait_until
from tests.support.zookeeper_server import CLIENT_PRINCIPAL, ZooKeeperServer

pytestmark = requires(os.path.exists("/usr/share/java/zookeeper.jar"), "ZooKeeper")

TIMEOUT = 5.0
TTL = 2.0  # the server allows sessions from 0.5 s


@pytest.fixture(scope="module")
def zk() -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer()
    server.start()
    yield server
    server.close()


def raw_client(hosts: list[str], **kwargs: Any) -> KazooClient:
    client = KazooClient(hosts=",".join(hosts), timeout=10, **kwargs)
    client.start(timeout=15)
    return client


@pytest.fixture
def raw(zk: ZooKeeperServer) -> Iterator[KazooClient]:
    client = raw_client(zk.hosts)
    yield client
    client.stop()
    client.close()


Factory = Callable[..., ZooKeeperBackend]


@pytest.fixture
def backends() -> Iterator[Factory]:
    made: list[ZooKeeperBackend] = []
    scope = f"zk-{uuid.uuid4().hex[:8]}"

    def make(kind: str, section: dict[str, Any], name: str = "n1") -> ZooKeeperBackend:
        config = NodeConfig({"name": name, "scope": scope, kind: section})
        backend = get_backend(config, lambda: None)
        assert isinstance(backend, ZooKeeperBackend)
        backend.start()
        made.append(backend)
        wait_until(backend.is_healthy, 20, what=f"the {kind} backend to be healthy")
        return backend

    yield make
    for backend in made:
        backend.close()


def session_of(backend: ZooKeeperBackend) -> int:
    session = backend._session
    assert session is not None and session.session_id is not None
    return session.session_id


def test_keys_are_znodes_with_raw_values_leader_and_member_ephemeral_of_our_session_B31(
    zk: ZooKeeperServer, raw: KazooClient, backends: Factory
) -> None:
    backend = backends("zookeeper", zk.section("n1"))
    config = json.dumps({"ttl": 30, "loop_wait": 10})
    assert backend.take_leader("n1", 30, timeout=TIMEOUT)
    assert backend.touch_member("n1", '{"state":"running"}', 30, timeout=TIMEOUT)
    assert backend.initialize(True, "7268616322854375442", timeout=TIMEOUT)
    assert backend.write("config", config, None, None, timeout=TIMEOUT) == (True, 0)
    root = f"/service/{backend.config.scope}"
    me = session_of(backend)
    data, stat = raw.get(f"{root}/leader")
    assert (data, stat.ephemeralOwner) == (b"n1", me)
    data, stat = raw.get(f"{root}/members/n1")
    assert (data, stat.ephemeralOwner) == (b'{"state":"running"}', me)
    for key, value in (("config", config.encode()), ("initialize", b"7268616322854375442")):
        data, stat = raw.get(f"{root}/{key}")
        assert (data, stat.ephemeralOwner) == (value, 0), key
    keys = backend.load().keys
    assert sorted(keys) == ["config", "initialize", "leader", "members/n1"]  # parent znodes are not keys
    assert keys["leader"].session == str(me) and keys["config"].session is None
    raw.set(f"{root}/config", b"{}")  # versions are znode versions
    wait_until(lambda: backend.load().keys["config"].version == 1, 5, what="the new version")


def test_a_holder_that_stops_refreshing_loses_the_lock_after_ttl_while_its_session_lives(
    zk: ZooKeeperServer, raw: KazooClient, backends: Factory
) -> None:
    backend = backends("zookeeper", zk.section("n1"))
    assert backend.touch_member("n1", "{}", TTL, timeout=TIMEOUT)
    session = session_of(backend)
    leader = f"/service/{backend.config.scope}/leader"
    before = time.monotonic()
    assert backend.take_leader("n1", TTL, timeout=TIMEOUT)
    assert backend.refresh_leader("n1", TTL, timeout=TIMEOUT)  # the lease runs from the start of this call
    refreshed = time.monotonic()
    wait_until(lambda: raw.exists(leader) is None, TTL + 3, interval=0.02, what="the lease to run out")
    gone = time.monotonic()
    assert gone - before >= TTL and gone - refreshed <= TTL + 1.0, (gone - before, gone - refreshed)
    # the session lived on all along: the member key and the session are still there
    assert session_of(backend) == session and backend.is_healthy()
    assert raw.get(f"/service/{backend.config.scope}/members/n1")[1].ephemeralOwner == session
    assert not backend.refresh_leader("n1", TTL, timeout=TIMEOUT)
    assert raw.exists(leader) is None
    assert backend.take_leader("n1", TTL, timeout=TIMEOUT)  # the next race may be won again


def test_a_lost_session_is_lost_leadership_and_nothing_is_recreated_behind_the_brain(
    zk: ZooKeeperServer, raw: KazooClient, backends: Factory
) -> None:
    backend = backends("zookeeper", zk.section("n1"))
    assert backend.take_leader("n1", 30, timeout=TIMEOUT)
    assert backend.touch_member("n1", "{}", 30, timeout=TIMEOUT)
    old = session_of(backend)
    session = backend._session
    assert session is not None
    # Another client attaches to our session and closes it: ZooKeeper expires it, kazoo reports LOST.
    thief = KazooClient(hosts=",".join(zk.hosts), client_id=session.client.client_id, timeout=30)
    thief.start(timeout=15)
    thief.stop()
    thief.close()
    wait_until(lambda: backend.is_healthy() and session_of(backend) != old, 15, what="a new session")
    leader = f"/service/{backend.config.scope}/leader"
    assert raw.exists(leader) is None
    assert not backend.refresh_leader("n1", 30, timeout=TIMEOUT)
    assert raw.exists(leader) is None and "leader" not in backend.load().keys
    assert "members/n1" not in backend.load().keys  # until the brain touches it again
    assert backend.touch_member("n1", "{}", 30, timeout=TIMEOUT)
    assert raw.get(f"/service/{backend.config.scope}/members/n1")[1].ephemeralOwner == session_of(backend)


def test_a_ttl_change_moves_the_lock_and_the_member_to_a_new_session_in_one_step(
    zk: ZooKeeperServer, raw: KazooClient, backends: Factory
) -> None:
    backend = backends("zookeeper", zk.section("n1"))
    assert backend.take_leader("n1", 4, timeout=TIMEOUT)
    assert backend.touch_member("n1", "{}", 4, timeout=TIMEOUT)
    old = session_of(backend)
    root = f"/service/{backend.config.scope}"
    assert backend.refresh_leader("n1", 6, timeout=TIMEOUT)
    new = session_of(backend)
    assert new != old
    for key in ("leader", "members/n1"):
        assert raw.get(f"{root}/{key}")[1].ephemeralOwner == new, key
    assert backend.load().keys["leader"].session == str(new)
    assert backend.refresh_leader("n1", 6, timeout=TIMEOUT)


def test_an_unchanged_member_is_not_written_again_B4(zk: ZooKeeperServer, raw: KazooClient, backends: Factory) -> None:
    backend = backends("zookeeper", zk.section("n1"))
    path = f"/service/{backend.config.scope}/members/n1"
    assert backend.touch_member("n1", '{"state":"running"}', 30, timeout=TIMEOUT)
    for _ in range(3):
        assert backend.touch_member("n1", '{"state":"running"}', 30, timeout=TIMEOUT)
    assert raw.get(path)[1].version == 0
    assert backend.touch_member("n1", '{"state":"stopped"}', 30, timeout=TIMEOUT)
    assert raw.get(path)[0] == b'{"state":"stopped"}'


def test_set_acls_apply_x509_acls_to_every_znode_we_create_F33(backends: Factory) -> None:
    server = ZooKeeperServer(tls=True)
    server.start()
    try:
        acls = {CLIENT_PRINCIPAL: ["all"], "CN=reader": ["READ"]}
        backend = backends("zookeeper", {**server.tls_section(), "set_acls": acls})
        assert backend.take_leader("n1", 30, timeout=TIMEOUT)
        assert backend.write("config", "{}", None, None, timeout=TIMEOUT)[0]
        tls = server.tls_section()
        secure = raw_client(tls["hosts"], use_ssl=True, ca=tls["cacert"], certfile=tls["cert"], keyfile=tls["key"])
        plain = raw_client(server.hosts)
        try:
            for path in (
                "/service",
                f"/service/{backend.config.scope}/config",
                f"/service/{backend.config.scope}/leader",
            ):
                assert secure.get_acls(path)[0] == [
                    make_acl("x509", CLIENT_PRINCIPAL, all=True),
                    make_acl("x509", "CN=reader", read=True),
                ], path
            with pytest.raises(NoAuthError):
                plain.get(f"/service/{backend.config.scope}/config")
        finally:
            for client in (secure, plain):
                client.stop()
                client.close()
    finally:
        server.close()


def test_exhibitor_follows_an_ensemble_change_and_keeps_the_lock_B32(backends: Factory) -> None:
    server = ExhibitorServer()
    server.start()
    forwarder = TcpForwarder(server.zookeeper.port)  # the same ZooKeeper at another address
    try:
        backend = backends("exhibitor", server.section("n1"))
        assert backend.take_leader("n1", 30, timeout=TIMEOUT)
        assert backend.touch_member("n1", "{}", 30, timeout=TIMEOUT)
        assert backend._session is not None and backend._session.endpoint == server.zookeeper.hosts[0]
        server.set_ensemble(["127.0.0.1"], forwarder.port)
        moved_to = f"127.0.0.1:{forwarder.port}"
        wait_until(
            lambda: backend._session is not None and backend._session.endpoint == moved_to and backend.is_healthy(),
            10,
            what="the backend to reconnect to the new ensemble",
        )
        assert forwarder.connections >= 1
        assert backend.refresh_leader("n1", 30, timeout=TIMEOUT)  # the lock moved along with the session
        owner = str(session_of(backend))
        wait_until(lambda: backend.load().keys["leader"].session == owner, 5, what="the view to show the new owner")
    finally:
        forwarder.close()
        server.close()

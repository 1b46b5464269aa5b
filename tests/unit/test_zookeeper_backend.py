"""The ZooKeeper and Exhibitor backends' parts that need no server: settings, hosts and ACLs, timeouts,
the leader lease rule, the view built from the znode cache, Exhibitor's answer."""

from __future__ import annotations

from typing import Any

import pytest
from kazoo.security import make_acl

from shared.config import NodeConfig
from shared.dcs import BackendError, get_backend
from shared.dcs.exhibitor import ExhibitorBackend, parse_cluster_list, parse_exhibitors
from shared.dcs.zookeeper import (
    Lease,
    Znode,
    ZooKeeperBackend,
    ZooKeeperSettings,
    is_ours,
    parse_acls,
    parse_hosts,
    snapshot_of,
    timings,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["h1:2181", "h2:2182"], ("h1:2181", "h2:2182")),
        ("h1:2181,h2:2182", ("h1:2181", "h2:2182")),
        ("'h1:2181','h2:2182'", ("h1:2181", "h2:2182")),  # PATRONI_ZOOKEEPER_HOSTS quotes each item
        ("['h1:1', 'h2']", ("h1:1", "h2:2181")),
        (" h1 , h1:2181 ,, ", ("h1:2181",)),
        (["::1", "[::1]:2182"], ("[::1]:2181", "[::1]:2182")),
        (None, ()),
    ],
)
def test_hosts_come_as_a_list_or_a_string_and_each_gets_a_port(value: Any, expected: tuple[str, ...]) -> None:
    assert parse_hosts(value) == expected


def test_set_acls_become_x509_acls_with_the_named_permissions() -> None:
    acls = parse_acls({"CN=principal1": ["CREATE", "read"], "CN=principal2": ["ALL"], "CN=p3": "WRITE"})
    assert acls == (
        make_acl("x509", "CN=principal1", create=True, read=True),
        make_acl("x509", "CN=principal2", all=True),
        make_acl("x509", "CN=p3", write=True),
    )
    assert parse_acls(None) == () and parse_acls({}) == ()


@pytest.mark.parametrize("value", [{"CN=x": ["READ", "FLY"]}, {"CN=x": []}, ["CN=x"]])
def test_a_bad_set_acls_is_a_clear_error(value: Any) -> None:
    with pytest.raises(BackendError, match="set_acls"):
        parse_acls(value)


def test_ssl_settings_are_used_only_with_use_ssl() -> None:
    section = {"hosts": "h1:2281", "cacert": "/ca.pem", "cert": "/c.crt", "key": "/c.key", "key_password": "pw"}
    assert ZooKeeperSettings.from_section(section).client_kwargs() == {}
    settings = ZooKeeperSettings.from_section({**section, "use_ssl": "true", "verify": "off"})
    assert settings.client_kwargs() == {
        "use_ssl": True,
        "ca": "/ca.pem",
        "certfile": "/c.crt",
        "keyfile": "/c.key",
        "keyfile_password": "pw",
        "verify_certs": False,
    }
    assert ZooKeeperSettings.from_section({"hosts": "h1", "use_ssl": True}).verify is True  # verify defaults on


def test_timeouts_notice_a_dead_server_within_loop_wait_and_connect_early_B31() -> None:
    assert timings(ttl=30, loop_wait=10, retry_timeout=10) == timings(30, 10, 10)
    t = timings(ttl=30, loop_wait=10, retry_timeout=10)
    assert (t.read_s, t.connect_s) == (8.0, 2.5)  # Patroni: loop_wait - 2
    t = timings(ttl=4, loop_wait=1, retry_timeout=1)
    assert (t.read_s, t.connect_s) == (1.0, 0.5)  # floors


def test_a_lease_is_due_at_its_deadline_and_not_before() -> None:
    lease = Lease("n1", deadline=100.0)
    assert not lease.is_due(99.99) and lease.seconds_left(99.5) == 0.5
    assert lease.is_due(100.0) and lease.seconds_left(101.0) == 0.0


@pytest.mark.parametrize(
    ("data", "owner", "session", "ours"),
    [
        (b"n1", 7, 7, True),
        (b"n2", 7, 7, False),  # another member's name
        (b"n1", 8, 7, False),  # another session: a new one after LOST, or another process
        (b"n1", 7, None, False),  # not connected
        (None, 7, 7, False),
    ],
)
def test_the_lease_only_ever_deletes_or_refreshes_our_own_leader_znode(
    data: bytes | None, owner: int, session: int | None, ours: bool
) -> None:
    assert is_ours("n1", data, owner, session) is ours


def test_the_view_holds_keys_with_raw_values_znode_versions_and_sessions_not_parent_znodes() -> None:
    root = "/service/batman"
    nodes = {
        root: Znode(b"", 0, 0, frozenset({"leader", "members", "optime", "config"})),
        f"{root}/leader": Znode(b"pg1", 0, 0x1234, frozenset()),
        f"{root}/config": Znode(b'{"ttl":30}', 3, 0, frozenset()),
        f"{root}/members": Znode(b"", 0, 0, frozenset()),  # empty parent: still not a key
        f"{root}/optime": Znode(b"", 0, 0, frozenset({"leader"})),
        f"{root}/optime/leader": Znode(b"67108864", 5, 0, frozenset()),
        "/service/batman2/leader": Znode(b"other", 0, 0, frozenset()),
    }
    snapshot = snapshot_of(nodes, root, 42)
    assert snapshot.revision == 42
    assert sorted(snapshot.keys) == ["config", "leader", "optime/leader"]
    assert snapshot.keys["leader"].session == str(0x1234) and snapshot.keys["leader"].value == "pg1"
    assert (snapshot.keys["config"].version, snapshot.keys["config"].session) == (3, None)


def test_the_configuration_section_picks_the_backend_and_hosts_are_required() -> None:
    backend = get_backend(NodeConfig({"name": "n1", "scope": "s", "zookeeper": {"hosts": "h1:2181"}}), lambda: None)
    assert isinstance(backend, ZooKeeperBackend) and backend.root == "/service/s"
    assert backend.settings.hosts == ("h1:2181",)
    with pytest.raises(BackendError, match="hosts"):
        get_backend(NodeConfig({"name": "n1", "scope": "s", "zookeeper": {}}), lambda: None)
    section = {"hosts": "e1, e2", "port": 8181}
    exhibitor = get_backend(NodeConfig({"name": "n1", "scope": "s", "exhibitor": section}), lambda: None)
    assert isinstance(exhibitor, ExhibitorBackend)
    assert (exhibitor.exhibitors, exhibitor.exhibitor_port, exhibitor.poll_interval) == (("e1", "e2"), 8181, 300.0)
    with pytest.raises(BackendError, match="port"):
        get_backend(NodeConfig({"name": "n1", "scope": "s", "exhibitor": {"hosts": "e1"}}), lambda: None)


def test_the_session_timeout_starts_from_the_configured_ttl() -> None:
    config = NodeConfig({"name": "n1", "scope": "s", "ttl": 40, "loop_wait": 5, "zookeeper": {"hosts": "h"}})
    backend = get_backend(config, lambda: None)
    assert isinstance(backend, ZooKeeperBackend)
    assert (backend._ttl, backend.timings(40).read_s) == (40.0, 3.0)


def test_exhibitor_answers_give_the_zookeeper_hosts_B32() -> None:
    assert parse_exhibitors("'e1','e2',e1") == ("e1", "e2")
    body = b'{"servers": ["zk1", "zk2"], "port": 2181}'
    assert parse_cluster_list(body) == (("zk1", "zk2"), ("zk1:2181", "zk2:2181"))
    for bad in (b"[]", b'{"servers": [], "port": 2181}', b'{"servers": ["zk1"]}', b"<html>"):
        with pytest.raises(ValueError):
            parse_cluster_list(bad)

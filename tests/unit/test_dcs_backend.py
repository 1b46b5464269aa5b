"""The backend contract (shared/dcs/base.py) as implemented over the KV store, and the backend factory.
Several MemoryBackends sharing one KVState stand for several nodes of one DCS."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import NodeConfig
from shared.dcs import BACKENDS, BackendError, DCSUnavailable, get_backend
from shared.dcs.kv import KVState
from shared.dcs.memory import MemoryBackend

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def node_config(name: str = "pg1", scope: str = "batman", **extra: Any) -> NodeConfig:
    return NodeConfig({"name": name, "scope": scope, **extra})


class Node:
    def __init__(self, state: KVState, clock: Clock, name: str, scope: str = "batman") -> None:
        self.changes = 0
        self.backend = MemoryBackend(node_config(name, scope), self._changed, state=state, clock=clock)

    def _changed(self) -> None:
        self.changes += 1


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def nodes(clock: Clock) -> list[MemoryBackend]:
    state = KVState()
    return [Node(state, clock, f"pg{i}").backend for i in (1, 2, 3)]


def test_keys_live_under_namespace_and_scope() -> None:
    backend = MemoryBackend(node_config(namespace="/custom/"), lambda: None)
    assert backend.prefix == "/custom/batman/"
    assert backend.path("members/pg1") == "/custom/batman/members/pg1"
    assert backend.relative("/custom/batman/leader") == "leader"
    assert backend.relative("/custom/batmobile/leader") is None
    assert MemoryBackend(node_config(), lambda: None).prefix == "/service/batman/"


def test_leader_race_has_one_winner_and_everyone_sees_it(nodes: list[MemoryBackend]) -> None:
    results = [b.take_leader(b.config.name, 30, timeout=1) for b in nodes]
    assert results == [True, False, False]
    for b in nodes:
        assert b.load().keys["leader"].value == "pg1"


def test_refresh_leader_is_a_compare_and_set_on_the_holder_name(nodes: list[MemoryBackend], clock: Clock) -> None:
    pg1, pg2, _ = nodes
    assert not pg1.refresh_leader("pg1", 30, timeout=1)  # no key: nothing to refresh
    pg1.take_leader("pg1", 30, timeout=1)
    version = pg1.load().keys["leader"].version
    clock.now += 10
    assert not pg2.refresh_leader("pg2", 30, timeout=1)
    assert pg1.refresh_leader("pg1", 30, timeout=1)
    leader = pg2.load().keys["leader"]
    assert leader.ttl == 30 and leader.version is not None and version is not None and leader.version > version


def test_leader_expires_when_not_refreshed(nodes: list[MemoryBackend], clock: Clock) -> None:
    pg1, pg2, _ = nodes
    pg1.take_leader("pg1", 30, timeout=1)
    clock.now += 29.9
    assert pg1.expire_due() == 0
    assert pg2.load().keys["leader"].ttl == pytest.approx(0.1)
    clock.now += 0.2
    assert pg1.expire_due() == 1
    assert "leader" not in pg2.load().keys
    assert pg2.take_leader("pg2", 30, timeout=1)


def test_release_leader_is_a_compare_and_delete(nodes: list[MemoryBackend]) -> None:
    pg1, pg2, _ = nodes
    pg1.take_leader("pg1", 30, timeout=1)
    assert not pg2.release_leader("pg2", timeout=1)
    assert pg1.release_leader("pg1", timeout=1)
    assert not pg1.release_leader("pg1", timeout=1)


def test_initialize_race_and_overwrite(nodes: list[MemoryBackend]) -> None:
    pg1, pg2, _ = nodes
    assert pg1.initialize(True, "", timeout=1)
    assert not pg2.initialize(True, "", timeout=1)
    assert pg1.initialize(False, "7123", timeout=1)  # B5: the sysid is written after the bootstrap
    assert pg2.load().keys["initialize"].value == "7123"
    assert pg1.cancel_initialization(timeout=1)
    assert not pg1.cancel_initialization(timeout=1)
    assert pg2.initialize(True, "7999", timeout=1)


def test_member_keys_carry_a_ttl(nodes: list[MemoryBackend], clock: Clock) -> None:
    pg1, pg2, _ = nodes
    assert pg1.touch_member("pg1", '{"state":"running"}', 30, timeout=1)
    assert pg2.touch_member("pg2", "{}", 30, timeout=1)
    clock.now += 20
    pg2.touch_member("pg2", "{}", 30, timeout=1)
    clock.now += 15
    pg1.expire_due()
    assert sorted(pg1.load().keys) == ["members/pg2"]


def test_write_with_a_version_is_a_compare_and_set(nodes: list[MemoryBackend]) -> None:
    pg1, pg2, _ = nodes
    applied, v1 = pg1.write("config", '{"ttl":30}', None, None, timeout=1)
    assert applied and v1 is not None
    assert pg2.write("config", '{"ttl":40}', v1, None, timeout=1)[0]
    assert pg1.write("config", '{"ttl":50}', v1, None, timeout=1) == (False, None)
    assert pg1.load().keys["config"].value == '{"ttl":40}'
    assert pg1.load().keys["config"].ttl is None


def test_delete_with_a_version_is_a_compare_and_delete(nodes: list[MemoryBackend]) -> None:
    pg1, _, _ = nodes
    _, version = pg1.write("sync", "{}", None, None, timeout=1)
    assert version is not None
    assert not pg1.delete("sync", version + 1, timeout=1)
    assert pg1.delete("sync", version, timeout=1)
    assert not pg1.delete("sync", None, timeout=1)


def test_delete_cluster_spares_other_clusters_sharing_the_dcs(clock: Clock) -> None:
    state = KVState()
    batman = Node(state, clock, "pg1", "batman")
    robin = Node(state, clock, "pg1", "robin")
    batman.backend.take_leader("pg1", 30, timeout=1)
    robin.backend.take_leader("pg1", 30, timeout=1)
    assert robin.changes == 1 and batman.changes == 1  # each hears only of its own cluster
    assert batman.backend.delete_cluster(timeout=1)
    assert batman.backend.load().keys == {}
    assert list(robin.backend.load().keys) == ["leader"]
    assert robin.changes == 1


def test_revision_grows_with_every_change(nodes: list[MemoryBackend]) -> None:
    pg1, _, _ = nodes
    r0 = pg1.load().revision
    pg1.take_leader("pg1", 30, timeout=1)
    r1 = pg1.load().revision
    pg1.release_leader("pg1", timeout=1)
    assert r0 < r1 < pg1.load().revision


def test_an_unavailable_dcs_raises_instead_of_answering_false(nodes: list[MemoryBackend]) -> None:
    pg1, _, _ = nodes
    pg1.available = False
    with pytest.raises(DCSUnavailable):
        pg1.take_leader("pg1", 30, timeout=1)
    with pytest.raises(DCSUnavailable):
        pg1.load()
    assert not pg1.is_healthy()


def test_factory_picks_raft_from_its_section() -> None:
    config = node_config(raft={"self_addr": "127.0.0.1:2222", "partner_addrs": ["127.0.0.1:2223"]})
    backend = get_backend(config, lambda: None)
    assert backend.name == "raft"
    assert backend.prefix == "/service/batman/"


def test_factory_refuses_a_backend_whose_module_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "zookeeper", "shared.dcs.no_such_module:X")
    with pytest.raises(BackendError, match="DCS backend zookeeper is not available yet"):
        get_backend(NodeConfig({"name": "pg1", "scope": "batman", "zookeeper": {"hosts": "h:1"}}), lambda: None)


@pytest.mark.parametrize("section", ["raft", "etcd", "etcd3", "zookeeper", "exhibitor", "consul", "kubernetes"])
def test_every_backend_of_the_documentation_is_registered_B24(section: str) -> None:
    assert section in BACKENDS


def test_factory_needs_a_dcs_section() -> None:
    with pytest.raises(BackendError, match="no DCS section"):
        get_backend(node_config(), lambda: None)

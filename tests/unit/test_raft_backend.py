"""The Raft backend's parts that need no network: settings, the replicated commands applied locally,
log-compaction dumps, the pysyncobj configuration and the health rule."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from shared.config import NodeConfig
from shared.dcs import BackendError, DCSUnavailable, kv
from shared.dcs.kv import KVState
from shared.dcs.raft import RaftBackend, RaftHealth, RaftSettings, RaftStore, parse_addrs

T0 = 1_700_000_000.0


@pytest.fixture
def tmp_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="haven-raft-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def raft_config(raft: dict[str, Any]) -> NodeConfig:
    return NodeConfig({"name": "pg1", "scope": "batman", "raft": raft})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["127.0.0.1:2223", "127.0.0.1:2224"], ("127.0.0.1:2223", "127.0.0.1:2224")),
        ("'127.0.0.1:2223','127.0.0.1:2224'", ("127.0.0.1:2223", "127.0.0.1:2224")),  # PATRONI_RAFT_PARTNER_ADDRS
        ("['h1:1', 'h2:2']", ("h1:1", "h2:2")),
        ("h1:1, h2:2", ("h1:1", "h2:2")),
        (None, ()),
        ("", ()),
    ],
)
def test_partner_addrs_are_read_from_a_list_or_the_environment_string(value: Any, expected: tuple[str, ...]) -> None:
    assert parse_addrs(value) == expected


def test_settings_drop_self_from_partners_and_resolve_data_dir() -> None:
    s = RaftSettings.from_section(
        {"self_addr": "10.0.0.1:2222", "partner_addrs": ["10.0.0.1:2222", "10.0.0.2:2222"], "data_dir": "raft"},
        "/var/lib/haven",
    )
    assert s.partner_addrs == ("10.0.0.2:2222",)
    assert s.data_dir == "/var/lib/haven/raft"
    assert s.file_base == "/var/lib/haven/raft/10.0.0.1_2222"
    assert s.password is None and s.bind_addr is None


def test_a_node_without_self_addr_is_read_only_and_keeps_no_files() -> None:
    s = RaftSettings.from_section({"partner_addrs": ["10.0.0.2:2222"]}, "/tmp")
    assert s.self_addr is None and s.file_base is None


def test_settings_need_some_address() -> None:
    with pytest.raises(BackendError):
        RaftSettings.from_section({}, "/tmp")


def test_replicated_commands_apply_to_the_state_like_the_log_would() -> None:
    state = KVState()
    store = RaftStore(state)
    # _doApply=True is how pysyncobj calls a committed command on every node.
    assert store.put("/s/c/leader", "pg1", 30.0, T0, kv.ABSENT, _doApply=True) == 1
    assert store.put("/s/c/leader", "pg2", 30.0, T0, kv.ABSENT, _doApply=True) is None
    assert store.expire("/s/c/leader", 99, _doApply=True) is False
    assert store.expire("/s/c/leader", 1, _doApply=True) is True
    store.put("/s/c/a", "1", None, T0, kv.ANY, _doApply=True)
    assert store.remove("/s/c/a", kv.if_value("2"), _doApply=True) is False
    assert store.remove_prefix("/s/c/", _doApply=True) == 1
    assert state.revision == 4


def test_log_compaction_dumps_plain_data_and_restores_it() -> None:
    state = KVState()
    state.put("/s/c/leader", "pg1", 30, T0)
    dump = RaftStore(state)._serialize()
    assert dump == state.dump()
    other = KVState()
    RaftStore(other)._deserialize(dump)
    assert other.items() == state.items()


def test_pysyncobj_binds_self_addr_never_all_interfaces(tmp_dir: str) -> None:
    data_dir = os.path.join(tmp_dir, "missing", "raft")
    backend = RaftBackend(
        raft_config({"self_addr": "127.0.0.1:2222", "partner_addrs": ["127.0.0.1:2223"], "data_dir": data_dir}),
        lambda: None,
    )
    conf = backend._conf()
    assert conf.bindAddress == "127.0.0.1:2222"
    assert conf.useFork is False
    assert conf.commandsWaitLeader is False
    assert conf.journalFile == os.path.join(data_dir, "127.0.0.1_2222.journal")
    assert conf.fullDumpFile == os.path.join(data_dir, "127.0.0.1_2222.dump")
    assert os.path.isdir(data_dir)  # created when missing (B34)


def test_bind_addr_and_password_are_passed_to_pysyncobj(tmp_dir: str) -> None:
    backend = RaftBackend(
        raft_config(
            {
                "self_addr": "192.0.2.1:2222",
                "bind_addr": "127.0.0.1:2222",
                "partner_addrs": "'127.0.0.1:2223'",
                "data_dir": tmp_dir,
                "password": "secret",
            }
        ),
        lambda: None,
    )
    conf = backend._conf()
    assert conf.bindAddress == "127.0.0.1:2222" and conf.password == "secret"


def test_an_unwritable_data_dir_is_a_clear_error(tmp_dir: str) -> None:
    blocker = os.path.join(tmp_dir, "file")
    with open(blocker, "w"):
        pass
    backend = RaftBackend(
        raft_config({"self_addr": "127.0.0.1:2222", "data_dir": os.path.join(blocker, "raft")}), lambda: None
    )
    with pytest.raises(BackendError, match="data_dir"):
        backend._conf()


@pytest.mark.parametrize(
    ("health", "healthy"),
    [
        (RaftHealth(at=1, ready=False, leader="a", is_leader=True, has_quorum=True), False),
        (RaftHealth(at=1, ready=True, leader=None), False),
        (RaftHealth(at=1, ready=True, leader="me", is_leader=True, has_quorum=True, leader_connected=True), True),
        (RaftHealth(at=1, ready=True, leader="me", is_leader=True, has_quorum=False, leader_connected=True), False),
        (RaftHealth(at=1, ready=True, leader="other", leader_connected=True), True),
        (RaftHealth(at=1, ready=True, leader="other", has_quorum=True, leader_connected=False), False),
    ],
)
def test_healthy_means_a_leader_with_quorum_or_contact_with_the_leader(health: RaftHealth, healthy: bool) -> None:
    assert health.healthy is healthy


def test_a_backend_that_never_started_is_unavailable() -> None:
    backend = RaftBackend(raft_config({"partner_addrs": ["127.0.0.1:2223"]}), lambda: None)
    assert not backend.is_healthy()
    with pytest.raises(DCSUnavailable):
        backend.load()
    with pytest.raises(DCSUnavailable):
        backend.take_leader("pg1", 30, timeout=0.1)


def test_an_address_already_in_use_is_a_clear_error_at_start(tmp_dir: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        addr = f"127.0.0.1:{holder.getsockname()[1]}"
        backend = RaftBackend(raft_config({"self_addr": addr, "data_dir": tmp_dir}), lambda: None)
        with pytest.raises(BackendError, match="cannot listen"):
            backend.start()
    backend.close()

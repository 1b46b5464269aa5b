"""dcs_proxy's core: views, request timeouts, and each dcs.* op as backend calls (on the in-memory backend)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.dcs_proxy.core import (
    REPLY_MARGIN_S,
    Operations,
    ReplyCache,
    ViewTracker,
    build_view,
    request_timeout,
    retry_timeout_of,
)
from shared.config import NodeConfig
from shared.dcs.base import KeyValueTTL, Snapshot
from shared.dcs.kv import KVState
from shared.dcs.memory import MemoryBackend
from shared.model import Cluster
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError

T0 = 1_700_000_000.0
BOOTSTRAP = {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Proxy:
    """The core wired as main.py wires it, over a MemoryBackend."""

    def __init__(self, state: KVState | None = None, name: str = "pg1") -> None:
        self.clock = Clock()
        config = NodeConfig({"name": name, "scope": "batman"})
        self.backend = MemoryBackend(config, lambda: None, state=state, clock=self.clock)
        self.tracker = ViewTracker("batman", "/service", "memory", BOOTSTRAP)
        self.ops = Operations(self.backend, self.view, lambda: self.tracker.retry_timeout, clock=self.clock)
        self.handlers = self.ops.handlers()

    def view(self) -> dict[str, Any]:
        try:
            snapshot: Snapshot | None = self.backend.load()
        except Exception:
            snapshot = None
        return self.tracker.update(snapshot, self.backend.is_healthy(), self.clock())

    def call(self, op: str, body: dict[str, Any] | None = None, deadline_in: float = 10.0) -> dict[str, Any]:
        req = Request(op=op, body=body or {}, deadline=self.clock() + deadline_in)
        return self.handlers[op](req.body, req)

    def view_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = self.view()["keys"]
        return keys

    def timeouts(self) -> list[float]:
        return [timeout for _, _, timeout in self.backend.calls]


@pytest.fixture
def proxy() -> Proxy:
    return Proxy()


def test_request_timeout_is_the_deadline_less_a_margin_capped_by_retry_timeout() -> None:
    assert request_timeout(T0 + 2, T0, 5) == pytest.approx(2 - REPLY_MARGIN_S)
    assert request_timeout(T0 + 60, T0, 5) == 5
    with pytest.raises(OpError) as err:
        request_timeout(T0 + 0.01, T0, 5)
    assert err.value.code == ErrorCode.DEADLINE_EXCEEDED


def test_retry_timeout_comes_from_the_dcs_config_else_bootstrap_dcs() -> None:
    assert retry_timeout_of(None, BOOTSTRAP) == 5
    assert retry_timeout_of(None, {}) == 10  # the default
    assert retry_timeout_of('{"ttl":30,"loop_wait":10,"retry_timeout":7}', BOOTSTRAP) == 7
    assert retry_timeout_of("not json", BOOTSTRAP) == 5
    assert retry_timeout_of('{"retry_timeout":100}', BOOTSTRAP) == 14  # A6: adjusted to (ttl-1)//2


def test_view_has_exactly_the_documented_fields() -> None:
    snapshot = Snapshot({"leader": KeyValueTTL("pg1", 7, None, 12.34567), "config": KeyValueTTL("{}", 3)}, revision=9)
    view = build_view("batman", "/service", "raft", snapshot, True, T0)
    assert view == {
        "scope": "batman",
        "namespace": "/service",
        "backend": "raft",
        "ok": True,
        "last_seen": T0,
        "revision": 9,
        "keys": {
            "config": {"value": "{}", "version": 3, "session": None, "ttl": None},
            "leader": {"value": "pg1", "version": 7, "session": None, "ttl": 12.346},
        },
    }
    assert Cluster.from_wire(view["keys"]).leader_name == "pg1"


def test_a_failed_read_keeps_the_last_keys_and_last_seen_with_ok_false() -> None:
    tracker = ViewTracker("batman", "/service", "raft", BOOTSTRAP)
    good = tracker.update(Snapshot({"leader": KeyValueTTL("pg1", 1)}, 1), True, T0)
    assert good["ok"] and good["last_seen"] == T0
    bad = tracker.update(None, False, T0 + 5)
    assert not bad["ok"] and bad["last_seen"] == T0 and bad["keys"] == good["keys"]
    stale = tracker.update(Snapshot({}, 2), False, T0 + 6)  # readable but not current (no quorum)
    assert not stale["ok"] and stale["last_seen"] == T0 and stale["keys"] == {}


def test_retry_timeout_follows_the_config_key(proxy: Proxy) -> None:
    assert proxy.tracker.retry_timeout == 5
    proxy.call("dcs.write", {"key": "config", "value": json.dumps({"ttl": 30, "retry_timeout": 8})})
    proxy.view()
    assert proxy.tracker.retry_timeout == 8
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30}, deadline_in=60)
    assert proxy.timeouts()[-1] == 8


def test_take_leader_timeout_is_bounded_by_the_request_deadline(proxy: Proxy) -> None:
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30}, deadline_in=1.0)
    assert proxy.timeouts() == [pytest.approx(1.0 - REPLY_MARGIN_S)]


def test_refresh_leader_writes_status_and_failsafe_only_after_the_cas_succeeded(proxy: Proxy) -> None:
    body = {"name": "pg1", "ttl": 30, "last_lsn": 5000, "slots": {"pg2": 4000}, "failsafe": {"pg1": "http://a"}}
    assert proxy.call("dcs.refresh_leader", body) == {"applied": False}
    assert proxy.view_keys() == {}
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30})
    assert proxy.call("dcs.refresh_leader", body) == {"applied": True}
    keys = proxy.view_keys()
    assert keys["status"]["value"] == '{"optime":5000,"slots":{"pg2":4000}}'
    assert keys["failsafe"]["value"] == '{"pg1":"http://a"}'
    assert keys["status"]["ttl"] is None and keys["leader"]["ttl"] == 30
    assert [c[0] for c in proxy.backend.calls] == ["put", "put", "put", "put", "put"]


def test_refresh_leader_by_another_name_fails_and_writes_nothing(proxy: Proxy) -> None:
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30})
    assert proxy.call("dcs.refresh_leader", {"name": "pg2", "ttl": 30, "last_lsn": 1}) == {"applied": False}
    assert "status" not in proxy.view_keys()


def test_refresh_leader_without_lsn_leaves_status_alone(proxy: Proxy) -> None:
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30})
    assert proxy.call("dcs.refresh_leader", {"name": "pg1", "ttl": 30, "last_lsn": None, "failsafe": None})["applied"]
    assert sorted(proxy.view_keys()) == ["leader"]


def test_invalid_slots_are_refused_before_anything_is_written(proxy: Proxy) -> None:
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30})
    version = proxy.view_keys()["leader"]["version"]
    with pytest.raises(OpError) as err:
        proxy.call("dcs.refresh_leader", {"name": "pg1", "ttl": 30, "last_lsn": 1, "slots": {"s": "x"}})
    assert err.value.code == ErrorCode.INVALID_BODY
    assert proxy.view_keys()["leader"]["version"] == version


def test_release_leader_writes_status_then_compare_and_deletes(proxy: Proxy) -> None:
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30})
    assert proxy.call("dcs.release_leader", {"name": "pg2", "last_lsn": 7}) == {"applied": False}
    assert proxy.call("dcs.release_leader", {"name": "pg1", "last_lsn": 9}) == {"applied": True}
    keys = proxy.view_keys()
    assert "leader" not in keys and keys["status"]["value"] == '{"optime":9}'


def test_touch_member_stores_compact_json_with_a_ttl(proxy: Proxy) -> None:
    data = {"conn_url": "postgres://h:5432/postgres", "state": "running", "role": "replica"}
    assert proxy.call("dcs.touch_member", {"name": "pg2", "data": data, "ttl": 20}) == {"applied": True}
    member = proxy.view_keys()["members/pg2"]
    assert member["value"] == json.dumps(data, separators=(",", ":")) and member["ttl"] == 20


def test_write_with_a_stale_version_is_not_applied(proxy: Proxy) -> None:
    first = proxy.call("dcs.write", {"key": "failover", "value": "{}"})
    assert first["applied"] and isinstance(first["version"], int)
    second = proxy.call("dcs.write", {"key": "failover", "value": '{"a":1}', "version": first["version"]})
    assert second["applied"] and second["version"] > first["version"]
    stale = proxy.call("dcs.write", {"key": "failover", "value": "{}", "version": first["version"]})
    assert stale == {"applied": False, "version": None}


@pytest.mark.parametrize("op", ["dcs.write", "dcs.delete"])
@pytest.mark.parametrize("key", ["leader", "members/pg1", "initialize", "../other/leader", ""])
def test_only_the_writable_keys_may_be_written_or_deleted(proxy: Proxy, op: str, key: str) -> None:
    with pytest.raises(OpError) as err:
        proxy.call(op, {"key": key, "value": "x"})
    assert err.value.code == ErrorCode.INVALID_BODY
    assert proxy.backend.calls == []


def test_delete_with_version(proxy: Proxy) -> None:
    version = proxy.call("dcs.write", {"key": "sync", "value": "{}"})["version"]
    assert proxy.call("dcs.delete", {"key": "sync", "version": version + 1}) == {"applied": False}
    assert proxy.call("dcs.delete", {"key": "sync", "version": version}) == {"applied": True}


def test_initialize_race_and_cancel() -> None:
    state = KVState()
    pg1, pg2 = Proxy(state, "pg1"), Proxy(state, "pg2")
    assert pg1.call("dcs.initialize", {"create_new": True, "sysid": ""}) == {"applied": True}
    assert pg2.call("dcs.initialize", {"create_new": True, "sysid": ""}) == {"applied": False}
    assert pg1.call("dcs.initialize", {"create_new": False, "sysid": "7311"}) == {"applied": True}
    assert pg2.view_keys()["initialize"]["value"] == "7311"
    assert pg2.call("dcs.cancel_initialization") == {"applied": True}
    assert "initialize" not in pg1.view_keys()


def test_delete_cluster(proxy: Proxy) -> None:
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30})
    proxy.call("dcs.write", {"key": "config", "value": "{}"})
    assert proxy.call("dcs.delete_cluster") == {"applied": True}
    assert proxy.view_keys() == {}


@pytest.mark.parametrize(
    ("op", "body"),
    [("dcs.take_leader", {"name": "pg1", "ttl": 0}), ("dcs.touch_member", {"name": "", "data": {}, "ttl": 30})],
)
def test_nonsense_names_and_ttls_are_invalid(proxy: Proxy, op: str, body: dict[str, Any]) -> None:
    with pytest.raises(OpError) as err:
        proxy.call(op, body)
    assert err.value.code == ErrorCode.INVALID_BODY


def test_an_unreachable_dcs_is_the_error_unavailable_never_applied_false(proxy: Proxy) -> None:
    proxy.backend.available = False
    calls: list[tuple[str, dict[str, Any]]] = [
        ("dcs.take_leader", {"name": "pg1", "ttl": 30}),
        ("dcs.write", {"key": "config", "value": "{}"}),
        ("dcs.get_cluster", {}),
    ]
    for op, body in calls:
        with pytest.raises(OpError) as err:
            proxy.call(op, body)
        assert err.value.code == ErrorCode.UNAVAILABLE


def test_a_request_past_its_deadline_does_no_work(proxy: Proxy) -> None:
    with pytest.raises(OpError) as err:
        proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30}, deadline_in=0.0)
    assert err.value.code == ErrorCode.DEADLINE_EXCEEDED
    assert proxy.backend.calls == []


def test_get_cluster_answers_the_current_view(proxy: Proxy) -> None:
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30})
    view = proxy.call("dcs.get_cluster")
    assert view["ok"] and view["keys"]["leader"]["value"] == "pg1" and view["backend"] == "memory"


def test_a_mutating_request_sent_again_gets_its_first_answer_without_running_twice(proxy: Proxy) -> None:
    req = Request(op="dcs.take_leader", body={"name": "pg1", "ttl": 30}, deadline=proxy.clock() + 5)
    assert proxy.handlers[req.op](req.body, req) == {"applied": True}
    assert proxy.handlers[req.op](req.body, req) == {"applied": True}  # not "lost the race to itself"
    assert len(proxy.backend.calls) == 1
    other = Request(op="dcs.take_leader", body={"name": "pg1", "ttl": 30}, deadline=proxy.clock() + 5)
    assert proxy.handlers[other.op](other.body, other) == {"applied": False}


def test_reply_cache_forgets_old_and_surplus_replies() -> None:
    now = [0.0]
    cache = ReplyCache(size=2, keep_s=10, clock=lambda: now[0])
    cache.put("a", {"applied": True})
    cache.put("b", {"applied": False})
    cache.put("c", {"applied": True})
    assert cache.get("a") is None and cache.get("b") == {"applied": False}
    now[0] = 11
    assert cache.get("c") is None


def test_values_that_are_not_json_are_invalid_and_nothing_is_written(proxy: Proxy) -> None:
    proxy.call("dcs.take_leader", {"name": "pg1", "ttl": 30})
    calls = len(proxy.backend.calls)
    for op, body in [
        ("dcs.touch_member", {"name": "pg1", "data": {"raw": b"\x00"}, "ttl": 30}),
        ("dcs.refresh_leader", {"name": "pg1", "ttl": 30, "failsafe": {"pg1": b"\x00"}}),
    ]:
        with pytest.raises(OpError) as err:
            proxy.call(op, body)
        assert err.value.code == ErrorCode.INVALID_BODY
    assert len(proxy.backend.calls) == calls

"""The Consul backend against the Consul test server, for what the contract suite does not cover: the exact
KV paths and values a raw Consul client sees (B1, B2), the session (TTL = ttl/2, behavior delete, short
lock-delay, no serfHealth: B30), the lease rule, a restarted keeper taking its keys over, service
registration (B30), retries, and the token."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3

from shared.config import NodeConfig
from shared.dcs import DCSUnavailable
from shared.dcs.consul import ConsulBackend
from tests.support.consul_server import ConsulServer
from tests.support.waiting import wait_until

TIMEOUT = 5.0
MEMBER = {
    "conn_url": "postgres://10.0.0.1:5432/postgres",
    "api_url": "http://10.0.0.1:8008/patroni",
    "state": "running",
    "role": "master",
    "version": "3.2.2",
}


@pytest.fixture(scope="module")
def server() -> Iterator[ConsulServer]:
    s = ConsulServer()
    s.start()
    yield s
    s.close()


@pytest.fixture
def scope() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def backends(server: ConsulServer, scope: str) -> Iterator[Callable[..., ConsulBackend]]:
    made: list[ConsulBackend] = []

    def make(name: str = "n1", **extra: Any) -> ConsulBackend:
        config = NodeConfig({"name": name, "scope": scope, "consul": {**server.section(name), **extra}})
        backend = ConsulBackend(config, lambda: None)
        backend.start()
        made.append(backend)
        wait_until(backend.is_healthy, 10, what=f"{name} to be healthy")
        return backend

    yield make
    for backend in made:
        backend.close()


def raw(server: ConsulServer, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    r = urllib3.request(method, server.url + path, body=data, headers={"X-Consul-Token": server.TOKEN}, timeout=5)
    return json.loads(r.data) if r.status == 200 and r.data else None


def kv(server: ConsulServer, key: str) -> dict[str, Any] | None:
    found = raw(server, "GET", f"/v1/kv/{key}")
    if not found:
        return None
    entry: dict[str, Any] = found[0]
    entry["Value"] = base64.b64decode(entry["Value"]).decode() if entry["Value"] else ""
    return entry


def test_keys_and_values_are_where_a_consul_client_expects_them(
    server: ConsulServer, scope: str, backends: Callable[..., ConsulBackend]
) -> None:
    b = backends()
    member = json.dumps(MEMBER, separators=(",", ":"))
    assert b.touch_member("n1", member, 30, timeout=TIMEOUT)
    assert b.take_leader("n1", 30, timeout=TIMEOUT)
    assert b.initialize(True, "7268616322854375442", timeout=TIMEOUT)
    applied, version = b.write("config", '{"ttl":30}', None, None, timeout=TIMEOUT)
    leader, member_entry = kv(server, f"service/{scope}/leader"), kv(server, f"service/{scope}/members/n1")
    config = kv(server, f"service/{scope}/config")
    assert leader is not None and member_entry is not None and config is not None
    assert leader["Value"] == "n1" and member_entry["Value"] == member
    assert leader["Session"] == member_entry["Session"]  # one session per node binds both
    assert kv(server, f"service/{scope}/initialize")["Value"] == "7268616322854375442"  # type: ignore[index]
    assert applied and version == config["ModifyIndex"] and "Session" not in config
    keys = b.load().keys
    assert keys["leader"].version == leader["ModifyIndex"] and keys["leader"].session == leader["Session"]


def test_the_session_has_half_the_ttl_behavior_delete_a_short_lock_delay_and_no_serf_check(
    server: ConsulServer, backends: Callable[..., ConsulBackend]
) -> None:
    b = backends()
    assert b.take_leader("n1", 4, timeout=TIMEOUT)
    session = b.load().keys["leader"].session
    info = raw(server, "GET", f"/v1/session/info/{session}")[0]
    assert info["TTL"] == "2s" and info["Behavior"] == "delete" and info["NodeChecks"] == []
    assert info["LockDelay"] == 1_000_000  # 1 ms, in nanoseconds
    small = backends("n2", min_session_ttl=10)  # a real agent's minimum: small ttls are raised to it
    assert small.touch_member("n2", "{}", 4, timeout=TIMEOUT)
    session = small.load().keys["members/n2"].session
    assert raw(server, "GET", f"/v1/session/info/{session}")[0]["TTL"] == "10s"


def test_a_holder_that_stops_refreshing_loses_the_lock_after_ttl_although_it_lives(
    backends: Callable[..., ConsulBackend],
) -> None:
    holder, other = backends("n1"), backends("n2")
    assert holder.take_leader("n1", 4, timeout=TIMEOUT)
    taken = time.monotonic()
    wait_until(lambda: "leader" in other.load().keys, 5, interval=0.02, what="the other node to see the lock")
    wait_until(lambda: "leader" not in other.load().keys, 10, interval=0.05, what="the lock to expire")
    assert time.monotonic() - taken >= 3.5  # 2 x (ttl/2), although holder's watch thread kept running
    assert holder.is_healthy()
    assert not holder.refresh_leader("n1", 4, timeout=TIMEOUT)  # its session is gone: leadership is lost
    assert other.take_leader("n2", 4, timeout=TIMEOUT)  # lock-delay is only 1 ms


def test_a_restarted_keeper_takes_its_keys_over_into_its_new_session(backends: Callable[..., ConsulBackend]) -> None:
    before = backends("n1")
    assert before.take_leader("n1", 30, timeout=TIMEOUT)
    assert before.touch_member("n1", "{}", 30, timeout=TIMEOUT)
    old_session = before.load().keys["leader"].session
    before.close()  # dcs_proxy restarts; the old session lives on until it expires
    after = backends("n1")
    assert after.refresh_leader("n1", 30, timeout=TIMEOUT)
    assert after.touch_member("n1", '{"state":"running"}', 30, timeout=TIMEOUT)
    keys = after.load().keys
    assert keys["leader"].session != old_session and keys["leader"].session == keys["members/n1"].session
    other = backends("n2")
    assert not other.take_leader("n2", 30, timeout=TIMEOUT)


def test_the_service_is_registered_with_the_role_tags_and_an_api_check(
    server: ConsulServer, scope: str, backends: Callable[..., ConsulBackend]
) -> None:
    b = backends(register_service=True, service_tags=["pg"], service_check_tls_server_name="pg.example")
    assert b.take_leader("n1", 30, timeout=TIMEOUT)
    assert b.touch_member("n1", json.dumps(MEMBER), 30, timeout=TIMEOUT)
    service = raw(server, "GET", "/v1/agent/services")[f"{scope}/n1"]
    assert service["Service"] == scope and service["Tags"] == ["pg", "master", "primary"]
    assert (service["Address"], service["Port"]) == ("10.0.0.1", 5432)
    check = raw(server, "GET", "/v1/agent/checks")[f"service:{scope}/n1"]
    assert check["HTTP"] == "http://10.0.0.1:8008/master" and check["Interval"] == "5s"
    assert check["DeregisterCriticalServiceAfter"] == "150s" and check["TLSServerName"] == "pg.example"
    assert b.touch_member("n1", json.dumps({**MEMBER, "role": "replica"}), 30, timeout=TIMEOUT)
    assert raw(server, "GET", "/v1/agent/services")[f"{scope}/n1"]["Tags"] == ["pg", "replica"]
    assert b.touch_member("n1", json.dumps({**MEMBER, "role": "standby_leader"}), 30, timeout=TIMEOUT)
    assert raw(server, "GET", "/v1/agent/services")[f"{scope}/n1"]["Tags"] == ["pg", "standby-leader"]
    assert b.touch_member("n1", json.dumps({**MEMBER, "state": "stopped"}), 30, timeout=TIMEOUT)
    assert f"{scope}/n1" not in raw(server, "GET", "/v1/agent/services")


def test_no_cluster_leader_is_retried_within_the_timeout(
    server: ConsulServer, backends: Callable[..., ConsulBackend]
) -> None:
    b = backends()
    fault = server.http.inject(2, 500, b"No cluster leader", methods=("PUT",))
    assert b.write("config", "{}", None, None, timeout=TIMEOUT)[0]
    assert fault.hits == 2
    server.http.inject(100, 500, b"No cluster leader", methods=("PUT",))
    started = time.monotonic()
    with pytest.raises(DCSUnavailable):
        b.write("config", "{}", None, None, timeout=1.0)
    assert time.monotonic() - started < 2.0
    server.http.faults.clear()


def test_without_the_token_nothing_is_read_or_written(server: ConsulServer, scope: str) -> None:
    section = {k: v for k, v in server.section("n1").items() if k != "token"}
    b = ConsulBackend(NodeConfig({"name": "n1", "scope": scope, "consul": section}), lambda: None)
    b.start()
    try:
        with pytest.raises(DCSUnavailable, match="403"):
            b.write("config", "{}", None, None, timeout=1.0)
        assert not b.is_healthy()
        with pytest.raises(DCSUnavailable):
            b.load()
    finally:
        b.close()

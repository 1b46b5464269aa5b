"""The Consul test server is only worth something if it is faithful: blocking queries that really block,
sessions that really expire (after 2 x TTL) and release or delete their locks, lock-delay, check-and-set
on ModifyIndex, ACL tokens, and a restart that keeps the data."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3

from tests.support.consul_server import ConsulServer
from tests.support.waiting import wait_until

TOKEN = ConsulServer.TOKEN


@pytest.fixture
def server() -> Iterator[ConsulServer]:
    s = ConsulServer()
    s.state.session_ttl_min = 0.2
    s.start()
    yield s
    s.close()


class Api:
    def __init__(self, server: ConsulServer, token: str | None = TOKEN) -> None:
        self.url = server.url
        self.http = urllib3.PoolManager(retries=False)
        self.headers = {"X-Consul-Token": token} if token else {}

    def call(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> urllib3.BaseHTTPResponse:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        return self.http.request(method, self.url + path, body=data, headers=self.headers, timeout=timeout)

    def put(self, key: str, value: str, **params: Any) -> bool:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        r = self.call("PUT", f"/v1/kv/{key}?{query}", value.encode())
        assert r.status == 200, r.data
        return bool(json.loads(r.data))

    def get(self, key: str, **params: Any) -> tuple[int, dict[str, Any] | None]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        r = self.call("GET", f"/v1/kv/{key}?{query}", timeout=30)
        index = int(r.headers["X-Consul-Index"])
        return index, (json.loads(r.data)[0] if r.status == 200 else None)

    def session(self, **body: Any) -> str:
        r = self.call("PUT", "/v1/session/create", body)
        assert r.status == 200, r.data
        return str(json.loads(r.data)["ID"])


def value_of(entry: dict[str, Any] | None) -> str | None:
    return None if entry is None else base64.b64decode(entry["Value"]).decode()


def test_a_blocking_query_waits_for_a_change_of_its_key_and_returns_the_new_index(server: ConsulServer) -> None:
    api = Api(server)
    api.put("service/c/leader", "n1")
    index, _ = api.get("service/c/leader")
    result: dict[str, Any] = {}

    def block() -> None:
        started = time.monotonic()
        result["answer"] = api.get("service/c/leader", index=index, wait="5s")
        result["took"] = time.monotonic() - started

    waiter = threading.Thread(target=block)
    waiter.start()
    time.sleep(0.3)
    api.put("service/other", "x")  # another key: the query goes on blocking
    time.sleep(0.3)
    api.put("service/c/leader", "n2")
    waiter.join(5)
    new_index, entry = result["answer"]
    assert new_index > index and value_of(entry) == "n2"
    assert 0.6 <= result["took"] < 3


def test_a_blocking_query_without_a_change_returns_after_its_wait_with_the_same_index(server: ConsulServer) -> None:
    api = Api(server)
    api.put("service/c/config", "{}")
    index, _ = api.get("service/c/", recurse="")
    started = time.monotonic()
    again, _ = api.get("service/c/", recurse="", index=index, wait="1s")
    took = time.monotonic() - started
    assert again == index
    assert 1.0 <= took < 1.0 + 1 / 16 + 0.5  # wait plus at most wait/16 of jitter


def test_check_and_set_on_modify_index(server: ConsulServer) -> None:
    api = Api(server)
    assert api.put("k", "a", cas=0)
    assert not api.put("k", "b", cas=0)  # cas=0: only when absent
    _, entry = api.get("k")
    assert entry is not None
    assert not api.put("k", "b", cas=entry["ModifyIndex"] - 1)
    assert api.put("k", "b", cas=entry["ModifyIndex"])
    assert json.loads(api.call("DELETE", f"/v1/kv/k?cas={entry['ModifyIndex']}").data) is False
    _, entry = api.get("k")
    assert entry is not None and value_of(entry) == "b" and entry["CreateIndex"] < entry["ModifyIndex"]
    assert json.loads(api.call("DELETE", f"/v1/kv/k?cas={entry['ModifyIndex']}").data) is True
    assert api.get("k")[1] is None


def test_a_lock_belongs_to_one_session_until_released(server: ConsulServer) -> None:
    api = Api(server)
    s1, s2 = api.session(TTL="10s"), api.session(TTL="10s")
    assert api.put("lock", "n1", acquire=s1)
    assert not api.put("lock", "n2", acquire=s2)
    assert api.put("lock", "n1", acquire=s1)  # the holder may acquire again
    _, entry = api.get("lock")
    assert entry is not None and entry["Session"] == s1 and entry["LockIndex"] == 1
    assert not api.put("lock", "x", release=s2)
    assert api.put("lock", "n1", release=s1)
    assert api.put("lock", "n2", acquire=s2)
    _, entry = api.get("lock")
    assert entry is not None and entry["Session"] == s2 and entry["LockIndex"] == 2
    r = api.call("PUT", "/v1/kv/lock?acquire=no-such-session", b"x")
    assert r.status == 500 and b"invalid session" in r.data.lower()


def test_a_session_not_renewed_expires_after_twice_its_ttl_and_deletes_its_keys(server: ConsulServer) -> None:
    api = Api(server)
    session = api.session(TTL="0.5s", Behavior="delete", LockDelay="0s", Checks=[])
    assert api.put("service/c/leader", "n1", acquire=session)
    created = time.monotonic()
    wait_until(lambda: api.get("service/c/leader")[1] is None, 5, interval=0.02, what="the key to go")
    assert time.monotonic() - created >= 0.95  # 2 x TTL
    assert api.call("PUT", f"/v1/session/renew/{session}").status == 404


def test_renewing_keeps_a_session_alive(server: ConsulServer) -> None:
    api = Api(server)
    session = api.session(TTL="0.3s", Behavior="delete", Checks=[])
    assert api.put("k", "v", acquire=session)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert api.call("PUT", f"/v1/session/renew/{session}").status == 200
        time.sleep(0.2)
    assert api.get("k")[1] is not None


def test_an_invalidated_release_session_frees_its_locks_and_lock_delay_holds_them(server: ConsulServer) -> None:
    api = Api(server)
    s1, s2 = api.session(TTL="10s", LockDelay="1s"), api.session(TTL="10s")
    assert api.put("lock", "n1", acquire=s1)
    assert api.call("PUT", f"/v1/session/destroy/{s1}").status == 200
    _, entry = api.get("lock")
    assert entry is not None and "Session" not in entry  # behavior release keeps the key
    destroyed = time.monotonic()
    assert not api.put("lock", "n2", acquire=s2)  # lock-delay
    wait_until(lambda: api.put("lock", "n2", acquire=s2), 3, interval=0.05, what="the lock-delay to pass")
    assert time.monotonic() - destroyed >= 0.9


def test_session_ttls_outside_the_allowed_range_are_refused(server: ConsulServer) -> None:
    api = Api(server)
    r = api.call("PUT", "/v1/session/create", {"TTL": "0.1s"})
    assert r.status == 400 and b"Invalid Session TTL" in r.data
    assert api.call("PUT", "/v1/session/create", {"TTL": "100000s"}).status == 400
    assert api.call("PUT", "/v1/session/create", {"Checks": ["no-such-check"]}).status == 500


def test_requests_without_the_token_are_refused(server: ConsulServer) -> None:
    assert Api(server, token=None).call("GET", "/v1/kv/k").status == 403
    assert Api(server, token="wrong").call("GET", "/v1/kv/k").status == 403
    assert Api(server, token=None).call("GET", "/v1/status/leader").status == 200
    assert Api(server).call("GET", "/v1/kv/k?dc=elsewhere").status == 500


def test_a_restart_keeps_the_data_and_stop_cuts_blocking_queries(server: ConsulServer) -> None:
    api = Api(server)
    api.put("k", "v")
    index, _ = api.get("k")
    errors: list[BaseException] = []

    def block() -> None:
        try:
            api.get("k", index=index, wait="30s")
        except Exception as exc:
            errors.append(exc)

    waiter = threading.Thread(target=block)
    waiter.start()
    time.sleep(0.2)
    server.stop()
    waiter.join(3)
    assert not waiter.is_alive() and errors
    server.start()
    _, entry = api.get("k")
    assert value_of(entry) == "v"

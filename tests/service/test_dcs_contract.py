"""The DCS contract (shared/dcs/base.py), run the same way against every backend (features.md group B):
atomic create-if-absent and compare-and-set, TTL expiry, watches, value round-trips, and the two failure
kinds - a lost race is an answer, an unreachable DCS an error within the timeout."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.config import NodeConfig
from shared.dcs import Backend, DCSUnavailable, get_backend
from tests.support.dcs_servers import SERVERS, DcsServer, make_server
from tests.support.waiting import wait_until

KINDS = list(SERVERS)
TIMEOUT = 5.0  # retry_timeout of the calls in this suite
NAMES = ("n1", "n2", "n3")


@pytest.fixture(scope="module", params=KINDS)
def shared_server(request: pytest.FixtureRequest) -> Iterator[DcsServer]:
    server = make_server(request.param)
    server.start()
    yield server
    server.close()


@pytest.fixture
def server(shared_server: DcsServer) -> Iterator[DcsServer]:
    """The module's server; a fresh one for embedded DCSs, whose clients are the servers."""
    if shared_server.has_server:
        yield shared_server
        return
    own = make_server(shared_server.kind)
    own.start()
    yield own
    own.close()


@dataclass
class Client:
    name: str
    backend: Backend
    changes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def changed(self) -> None:
        with self.lock:
            self.changes += 1

    def read(self) -> dict[str, str]:
        return {k: v.value for k, v in self.backend.load().keys.items()}


@pytest.fixture
def clients(server: DcsServer) -> Iterator[Callable[..., list[Client]]]:
    made: list[Client] = []
    scope = f"contract-{uuid.uuid4().hex[:8]}"

    def make(names: tuple[str, ...] = NAMES) -> list[Client]:
        result = []
        for name in names:
            config = NodeConfig(
                {"name": name, "scope": scope, "namespace": "/service", server.kind: server.section(name)}
            )
            holder: dict[str, Client] = {}
            backend = get_backend(config, lambda h=holder: h["c"].changed() if "c" in h else None)
            client = Client(name, backend)
            holder["c"] = client
            backend.start()
            result.append(client)
        made.extend(result)
        for client in result:
            wait_until(client.backend.is_healthy, 30, what=f"{server.kind} client {client.name} to be healthy")
        return result

    yield make
    for client in made:
        client.backend.close()


def ttl_for(server: DcsServer) -> float:
    return max(server.min_ttl, 4.0)


def test_three_clients_race_for_the_lock_and_exactly_one_wins_A5_B3(clients: Callable[..., list[Client]]) -> None:
    racers = clients()
    results: dict[str, bool] = {}
    barrier = threading.Barrier(len(racers))

    def race(c: Client) -> None:
        barrier.wait()
        results[c.name] = c.backend.take_leader(c.name, 30, timeout=TIMEOUT)

    threads = [threading.Thread(target=race, args=(c,)) for c in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, won in results.items() if won]
    assert len(winners) == 1, results
    for c in racers:
        wait_until(lambda c=c: c.read().get("leader") == winners[0], 5, what=f"{c.name} to see the winner")


def test_the_lock_expires_after_ttl_when_not_refreshed_and_not_before_A4(
    server: DcsServer, clients: Callable[..., list[Client]]
) -> None:
    holder, watcher = clients(NAMES[:2]) if server.has_server else clients()[:2]
    ttl = ttl_for(server)
    assert holder.backend.take_leader(holder.name, ttl, timeout=TIMEOUT)
    taken = time.monotonic()
    wait_until(lambda: watcher.read().get("leader") == holder.name, 5, what="the watcher to see the lock")
    while time.monotonic() - taken < ttl - 1.5:
        assert watcher.read().get("leader") == holder.name, f"the lock vanished {time.monotonic() - taken:.1f}s in"
        time.sleep(0.2)
    wait_until(lambda: "leader" not in watcher.read(), ttl + 5, interval=0.1, what="the lock to expire")
    gone_after = time.monotonic() - taken
    assert gone_after >= ttl - 1.5, gone_after
    assert watcher.backend.take_leader(watcher.name, ttl, timeout=TIMEOUT)


def test_only_the_owner_refreshes_or_releases_the_lock_A4_R1(
    server: DcsServer, clients: Callable[..., list[Client]]
) -> None:
    a, b = clients(NAMES[:2]) if server.has_server else clients()[:2]
    ttl = ttl_for(server)
    assert a.backend.take_leader(a.name, ttl, timeout=TIMEOUT)
    assert not b.backend.take_leader(b.name, ttl, timeout=TIMEOUT)
    assert not b.backend.refresh_leader(b.name, ttl, timeout=TIMEOUT)
    assert not b.backend.release_leader(b.name, timeout=TIMEOUT)
    deadline = time.monotonic() + ttl + 2  # refreshing keeps it past its first ttl
    while time.monotonic() < deadline:
        assert a.backend.refresh_leader(a.name, ttl, timeout=TIMEOUT)
        time.sleep(ttl / 4)
    assert b.read().get("leader") == a.name
    assert a.backend.release_leader(a.name, timeout=TIMEOUT)
    wait_until(lambda: "leader" not in b.read(), 5, what="the release to be seen")
    assert not a.backend.refresh_leader(a.name, ttl, timeout=TIMEOUT)


def test_initialize_race_has_one_winner_B5(server: DcsServer, clients: Callable[..., list[Client]]) -> None:
    racers = clients()
    results = [c.backend.initialize(True, "", timeout=TIMEOUT) for c in racers]
    assert results.count(True) == 1
    winner = racers[results.index(True)]
    assert winner.backend.initialize(False, "7268616322854375442", timeout=TIMEOUT)
    for c in racers:
        wait_until(lambda c=c: c.read().get("initialize") == "7268616322854375442", 5, what="the system id")
    assert winner.backend.cancel_initialization(timeout=TIMEOUT)
    wait_until(lambda: "initialize" not in racers[0].read(), 5, what="initialize to be deleted")


def test_compare_and_set_conflicts_are_lost_races_not_errors_B6(
    server: DcsServer, clients: Callable[..., list[Client]]
) -> None:
    a, b = clients(NAMES[:2]) if server.has_server else clients()[:2]
    applied, first = a.backend.write("config", '{"ttl":30}', None, None, timeout=TIMEOUT)
    assert applied and first is not None
    applied, second = b.backend.write("config", '{"ttl":40}', first, None, timeout=TIMEOUT)
    assert applied and second is not None and second != first
    assert a.backend.write("config", '{"ttl":50}', first, None, timeout=TIMEOUT) == (False, None)  # stale version
    assert not a.backend.delete("config", first, timeout=TIMEOUT)
    wait_until(lambda: a.read().get("config") == '{"ttl":40}', 5, what="the second write")
    assert b.backend.delete("config", second, timeout=TIMEOUT)


def test_a_change_wakes_the_other_clients_B26(server: DcsServer, clients: Callable[..., list[Client]]) -> None:
    a, b = clients(NAMES[:2]) if server.has_server else clients()[:2]
    before = b.changes
    started = time.monotonic()
    assert a.backend.take_leader(a.name, 30, timeout=TIMEOUT)
    wait_until(
        lambda: b.changes > before and b.read().get("leader") == a.name,
        5,
        interval=0.02,
        what="the other client to be told",
    )
    assert time.monotonic() - started < 3


VALUES: dict[str, str] = {
    "config": json.dumps({"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"work_mem": "8MB"}}}),
    "history": json.dumps([[1, 25623960, "no recovery target specified", "2019-09-23T16:57:57+02:00", "n1"]]),
    "sync": json.dumps({"leader": "n1", "sync_standby": "n2"}),
    "failover": json.dumps({"leader": "n1", "member": "n2", "scheduled_at": "2026-01-14T10:09:57+00:00"}),
    "status": json.dumps({"optime": 67395656, "slots": {"n2": 67395656}}),
    "failsafe": json.dumps({"n1": "http://10.0.0.1:8008/patroni", "n2": "http://10.0.0.2:8008/patroni"}),
}


def test_every_key_round_trips_exactly_W6_W7(server: DcsServer, clients: Callable[..., list[Client]]) -> None:
    a, b = clients(NAMES[:2]) if server.has_server else clients()[:2]
    member = json.dumps(
        {
            "conn_url": "postgres://10.0.0.1:5432/postgres",
            "api_url": "http://10.0.0.1:8008/patroni",
            "state": "running",
            "role": "master",
            "version": "3.2.2",
            "xlog_location": 1,
            "timeline": 1,
        }
    )
    assert a.backend.touch_member(a.name, member, 30, timeout=TIMEOUT)
    assert a.backend.initialize(True, "7268616322854375442", timeout=TIMEOUT)
    for key, value in VALUES.items():
        applied, version = a.backend.write(key, value, None, None, timeout=TIMEOUT)
        assert applied and version is not None, key
    expected = {**VALUES, f"members/{a.name}": member, "initialize": "7268616322854375442"}
    wait_until(lambda: all(b.read().get(k) == v for k, v in expected.items()), 5, what="every key on the other client")
    assert a.backend.delete_cluster(timeout=TIMEOUT)
    wait_until(lambda: not set(expected) & set(b.read()), 5, what="delete_cluster to remove every key")


def test_member_keys_vanish_when_not_touched_B27(server: DcsServer, clients: Callable[..., list[Client]]) -> None:
    a, b = clients(NAMES[:2]) if server.has_server else clients()[:2]
    ttl = ttl_for(server)
    assert a.backend.touch_member(a.name, '{"state":"running"}', ttl, timeout=TIMEOUT)
    wait_until(lambda: f"members/{a.name}" in b.read(), 5, what="the member key")
    a.backend.close()  # the node is gone: nobody touches its key, nobody keeps a session for it
    wait_until(lambda: f"members/{a.name}" not in b.read(), ttl * 2 + 10, interval=0.2, what="the member key to expire")


def test_while_the_server_is_down_calls_fail_within_the_timeout_and_the_client_recovers_A7(
    server: DcsServer, clients: Callable[..., list[Client]]
) -> None:
    if not server.has_server:
        # The embedded Raft has no server: losing the quorum is its outage.
        racers = clients()
        for c in racers[1:]:
            c.backend.close()
        down: list[Client] = [racers[0]]
    else:
        down = clients(NAMES[:1])
        server.stop()
    c = down[0]
    try:
        wait_until(lambda: not c.backend.is_healthy(), 15, what="the client to notice the outage")
        calls: list[Callable[[], Any]] = [
            lambda: c.backend.take_leader(c.name, 30, timeout=2.0),
            lambda: c.backend.write("config", "{}", None, None, timeout=2.0),
            lambda: c.backend.touch_member(c.name, "{}", 30, timeout=2.0),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(DCSUnavailable):
                call()
            assert time.monotonic() - started < 2.0 + 1.5
        if server.has_server:  # an embedded Raft still reads its local, now stale, replica
            with pytest.raises(DCSUnavailable):
                c.backend.load()
    finally:
        if server.has_server:
            server.start()
    if server.has_server:
        wait_until(c.backend.is_healthy, 30, what="the client to recover after the restart")
        assert c.backend.take_leader(c.name, 30, timeout=TIMEOUT)
        assert c.read().get("leader") == c.name

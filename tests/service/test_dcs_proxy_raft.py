"""Three real dcs_proxy processes on the embedded Raft, driven over their sockets (DESIGN.md test layer 2).

The tests share one Raft cluster and run in file order: the last ones kill and restart proxies."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml
import zmq
from pysyncobj.utility import TcpUtility

from shared.protocol import envelope
from shared.protocol.endpoints import Service, Topic, pub_path, router_path
from shared.protocol.errors import ErrorCode, RemoteError
from shared.protocol.transport import Client, Subscriber
from tests.support.ports import free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
SCOPE = "svc-raft"
PASSWORD = "test-secret"
CALL_S = 8.0  # request deadline: above retry_timeout (5 s), so a Raft re-election fits in one call


class Proxy:
    """One dcs_proxy process with its configuration, run directory and log."""

    def __init__(self, base: str, name: str, raft_addr: str, partners: list[str]) -> None:
        self.name = name
        self.raft_addr = raft_addr
        self.run_dir = os.path.join(base, name)
        os.makedirs(self.run_dir)
        self.log_path = os.path.join(self.run_dir, "log")
        self.config_path = os.path.join(self.run_dir, "haven.yml")
        config = {
            "name": name,
            "scope": SCOPE,
            "restapi": {"listen": f"127.0.0.1:{free_port()}", "connect_address": f"127.0.0.1:{free_port()}"},
            "postgresql": {
                "data_dir": os.path.join(self.run_dir, "pg"),
                "listen": f"127.0.0.1:{free_port()}",
                "connect_address": f"127.0.0.1:{free_port()}",
            },
            "bootstrap": {"dcs": {"ttl": 20, "loop_wait": 2, "retry_timeout": 5}},
            "raft": {
                "self_addr": raft_addr,
                "partner_addrs": partners,
                "data_dir": os.path.join(self.run_dir, "raft"),
                "password": PASSWORD,
            },
        }
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def router(self) -> str:
        return router_path(self.run_dir, Service.DCS_PROXY)

    @property
    def pub(self) -> str:
        return pub_path(self.run_dir, Service.DCS_PROXY)

    def start(self) -> None:
        cmd = [sys.executable, "-m", "services.dcs_proxy", "--config", self.config_path, "--run-dir", self.run_dir]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


class RaftCluster:
    def __init__(self, base: str) -> None:
        addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        self.proxies = [Proxy(base, f"n{i + 1}", addr, [a for a in addrs if a != addr]) for i, addr in enumerate(addrs)]
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.clients = {p.name: Client(self.ctx, p.router) for p in self.proxies}
        self.started = time.monotonic()
        for p in self.proxies:
            p.start()

    def call(self, name: str, op: str, body: dict[str, Any] | None = None, timeout: float = CALL_S) -> dict[str, Any]:
        return self.clients[name].call(op, body or {}, timeout=timeout)

    def view(self, name: str) -> dict[str, Any]:
        return self.call(name, "dcs.get_cluster", timeout=2)

    def all_views(self, names: tuple[str, ...] = ("n1", "n2", "n3")) -> list[dict[str, Any]]:
        return [self.view(n) for n in names]

    def subscribe(self, name: str) -> Subscriber:
        proxy = next(p for p in self.proxies if p.name == name)
        return Subscriber(self.ctx, [proxy.pub], [Topic.CLUSTER_VIEW])

    def close(self) -> None:
        for p in self.proxies:
            p.stop()
        for c in self.clients.values():
            c.close()
        self.ctx.destroy(linger=0)


@pytest.fixture(scope="module")
def raft() -> Iterator[RaftCluster]:
    base = tempfile.mkdtemp(prefix="hv-dcs-")  # short: ipc paths are limited to 107 bytes
    cluster = RaftCluster(base)
    try:
        yield cluster
    finally:
        cluster.close()
        for p in cluster.proxies:
            with open(p.log_path, "rb") as f:
                sys.stdout.write(f"--- {p.name} log (tail) ---\n{f.read()[-3000:].decode(errors='replace')}\n")
        shutil.rmtree(base, ignore_errors=True)


def race(raft: RaftCluster, op: str, body_of: Callable[[str], dict[str, Any]]) -> dict[str, bool]:
    """Each proxy's own client thread sends `op` at the same moment; returns name -> applied."""
    barrier = threading.Barrier(3)
    results: dict[str, bool] = {}

    def run(proxy: Proxy) -> None:
        client = Client(raft.ctx, proxy.router)
        try:
            barrier.wait()
            results[proxy.name] = client.call(op, body_of(proxy.name), timeout=CALL_S)["applied"]
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(p,)) for p in raft.proxies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def leader_everywhere(raft: RaftCluster) -> str | None:
    values = {v["keys"].get("leader", {}).get("value") for v in raft.all_views()}
    return values.pop() if len(values) == 1 else None


def test_raft_forms_and_every_view_is_ok(raft: RaftCluster) -> None:
    wait_until(lambda: all(v["ok"] for v in raft.all_views()), 20, what="three healthy views")
    print(f"\nRaft of 3 dcs_proxy processes healthy {time.monotonic() - raft.started:.2f}s after spawn")
    for view in raft.all_views():
        assert view["scope"] == SCOPE and view["namespace"] == "/service" and view["backend"] == "raft"


def test_leader_race_has_exactly_one_winner_seen_by_all(raft: RaftCluster) -> None:
    results = race(raft, "dcs.take_leader", lambda name: {"name": name, "ttl": 20})
    winners = [name for name, applied in results.items() if applied]
    assert len(winners) == 1, results
    assert wait_until(lambda: leader_everywhere(raft), 3, what="agreement on the leader") == winners[0]


def test_refresh_succeeds_for_the_holder_only(raft: RaftCluster) -> None:
    holder = raft.view("n1")["keys"]["leader"]["value"]
    other = next(n for n in ("n1", "n2", "n3") if n != holder)
    before = raft.view(holder)["keys"]["leader"]["version"]
    assert raft.call(other, "dcs.refresh_leader", {"name": other, "ttl": 20})["applied"] is False
    assert raft.call(other, "dcs.refresh_leader", {"name": holder, "ttl": 20, "last_lsn": 123})["applied"] is True
    keys = wait_until(lambda: raft.view(holder)["keys"], 2, what="the refreshed view")
    assert keys["leader"]["version"] > before and keys["status"]["value"] == '{"optime":123}'
    assert raft.call(holder, "dcs.release_leader", {"name": holder})["applied"] is True


def test_leader_key_expires_ttl_after_the_last_refresh_and_not_before(raft: RaftCluster) -> None:
    ttl = 3.0
    assert raft.call("n1", "dcs.take_leader", {"name": "n1", "ttl": ttl})["applied"]
    sent = time.time()
    assert raft.call("n2", "dcs.refresh_leader", {"name": "n1", "ttl": ttl})["applied"]
    last_present, gone = 0.0, 0.0

    def expired() -> bool:
        nonlocal last_present, gone
        now = time.time()
        if all("leader" in v["keys"] for v in raft.all_views()):
            last_present = now
            return False
        gone = now
        return True

    wait_until(expired, ttl + 3, interval=0.02, what="the leader key to expire")
    print(f"\nleader key (ttl {ttl}s) present until +{last_present - sent:.2f}s, gone at +{gone - sent:.2f}s")
    assert gone >= sent + ttl  # never before the TTL
    assert last_present >= sent + ttl - 0.5  # still there shortly before it
    assert gone <= sent + ttl + 2.0


def test_initialize_race_has_one_winner(raft: RaftCluster) -> None:
    results = race(raft, "dcs.initialize", lambda name: {"create_new": True, "sysid": ""})
    assert sorted(results.values()) == [False, False, True], results
    winner = next(n for n, applied in results.items() if applied)
    assert raft.call(winner, "dcs.initialize", {"create_new": False, "sysid": "7300000000000000001"})["applied"]
    wait_until(lambda: all(v["keys"]["initialize"]["value"] == "7300000000000000001" for v in raft.all_views()), 2)


def test_member_keys_appear_everywhere_and_expire_when_not_refreshed(raft: RaftCluster) -> None:
    for name, ttl in (("n1", 30), ("n2", 2), ("n3", 2)):
        assert raft.call(name, "dcs.touch_member", {"name": name, "data": {"state": "running"}, "ttl": ttl})["applied"]

    def members() -> list[set[str]]:
        return [{k for k in v["keys"] if k.startswith("members/")} for v in raft.all_views()]

    everyone = {"members/n1", "members/n2", "members/n3"}
    wait_until(lambda: all(m == everyone for m in members()), 2, what="all members in every view")
    wait_until(lambda: all(m == {"members/n1"} for m in members()), 5, what="the unrefreshed members to expire")


def test_write_with_a_stale_version_is_not_applied(raft: RaftCluster) -> None:
    first = raft.call("n1", "dcs.write", {"key": "config", "value": '{"ttl":20}'})
    assert first["applied"]
    second = raft.call("n2", "dcs.write", {"key": "config", "value": '{"ttl":21}', "version": first["version"]})
    assert second["applied"] and second["version"] > first["version"]
    stale = raft.call("n3", "dcs.write", {"key": "config", "value": '{"ttl":22}', "version": first["version"]})
    assert stale == {"applied": False, "version": None}
    assert wait_until(lambda: raft.view("n3")["keys"]["config"]["value"] == '{"ttl":21}', 2)


def test_views_are_published_promptly_on_change(raft: RaftCluster) -> None:
    subs = {n: raft.subscribe(n) for n in ("n1", "n2", "n3")}
    try:
        for sub in subs.values():  # joined: a heartbeat has arrived
            wait_until(sub.drain, 3, what="a first view")
        assert raft.call("n2", "dcs.take_leader", {"name": "n2", "ttl": 20})["applied"]
        acked = time.monotonic()
        for name, sub in subs.items():

            def seen(sub: Subscriber = sub) -> bool:
                return any(e.body["keys"].get("leader", {}).get("value") == "n2" for e in sub.drain())

            wait_until(seen, 1.0, interval=0.01, what=f"{name} to publish the new leader")
        print(f"\nall three views showed the new leader {time.monotonic() - acked:.3f}s after the ack")
        assert raft.call("n2", "dcs.release_leader", {"name": "n2"})["applied"]
    finally:
        for sub in subs.values():
            sub.close()


def raw_call(raft: RaftCluster, payload: bytes) -> envelope.Reply:
    sock = raft.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{raft.proxies[0].router}")
        sock.send(payload)
        assert sock.poll(3000), "no reply"
        return envelope.decode_reply(sock.recv())
    finally:
        sock.close(0)


def request(op: str, body: Any, **extra: Any) -> bytes:
    msg = {"v": 1, "id": "t-1", "op": op, "deadline": time.time() + 5, "body": body, **extra}
    return bytes(msgpack.packb(msg, use_bin_type=True))


BAD_MESSAGES: dict[str, tuple[Callable[[], bytes], ErrorCode]] = {
    "not-msgpack": (lambda: b"\xc1not msgpack", ErrorCode.BAD_MESSAGE),
    "not-a-map": (lambda: bytes(msgpack.packb([1, 2, 3])), ErrorCode.BAD_MESSAGE),
    "no-deadline": (lambda: request("dcs.get_cluster", {}, deadline="soon"), ErrorCode.BAD_MESSAGE),
    "wrong-version": (lambda: request("dcs.get_cluster", {}, v=99), ErrorCode.BAD_MESSAGE),
    "unknown-op": (lambda: request("dcs.nope", {}), ErrorCode.UNKNOWN_OP),
    "wrong-type": (lambda: request("dcs.take_leader", {"name": 5, "ttl": 20}), ErrorCode.INVALID_BODY),
    "missing-field": (lambda: request("dcs.take_leader", {"name": "n1"}), ErrorCode.INVALID_BODY),
    "not-writable": (lambda: request("dcs.write", {"key": "leader", "value": "n1"}), ErrorCode.INVALID_BODY),
    "oversized": (
        lambda: request("dcs.write", {"key": "config", "value": "x" * (5 * 1024 * 1024)}),
        ErrorCode.BAD_MESSAGE,
    ),
    "expired": (
        lambda: request("dcs.take_leader", {"name": "n1", "ttl": 20}, deadline=time.time() - 1),
        ErrorCode.DEADLINE_EXCEEDED,
    ),
}


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_bad_messages_get_error_replies_and_the_proxy_keeps_serving(raft: RaftCluster, case: str) -> None:
    make, code = BAD_MESSAGES[case]
    reply = raw_call(raft, make())
    assert not reply.ok and reply.error_code == code, reply
    assert reply.id == ("" if case in ("not-msgpack", "not-a-map") else "t-1")
    assert raft.view("n1")["ok"]


def raft_leader(raft: RaftCluster) -> Proxy:
    """The proxy whose node is the Raft leader, asked through pysyncobj's admin interface."""
    for proxy in raft.proxies:
        status = TcpUtility(PASSWORD, timeout=2).executeCommand(proxy.raft_addr, ["status"])
        if status and status.get("leader") is not None:
            return next(p for p in raft.proxies if p.raft_addr == str(status["leader"]))
    raise AssertionError("no Raft leader")


def test_killing_the_raft_leader_leaves_the_other_two_working(raft: RaftCluster) -> None:
    victim = raft_leader(raft)
    others = tuple(p.name for p in raft.proxies if p is not victim)
    victim.kill()
    killed = time.monotonic()
    write_surely(raft, others[0], "dcs.take_leader", {"name": others[0], "ttl": 20}, "leader", others[0])
    print(f"\nRaft leader {victim.name} killed: the next write committed after {time.monotonic() - killed:.2f}s")
    write_surely(raft, others[1], "dcs.write", {"key": "failover", "value": "{}"}, "failover", "{}")
    wait_until(lambda: all(v["ok"] for v in raft.all_views(others)), 5, what="the survivors healthy")
    assert leader_everywhere_of(raft, others) == others[0]


def write_surely(raft: RaftCluster, name: str, op: str, body: dict[str, Any], key: str, value: str) -> None:
    """A write through a Raft re-election may be answered "the outcome is unknown" (UNAVAILABLE) although it
    committed: like ha_loop, the caller then reads the view. Retry until the view holds the value; a write that
    answers applied=False without the value being there fails the test."""

    def done() -> bool:
        try:
            reply = raft.call(name, op, body)
        except RemoteError as err:
            assert err.code == ErrorCode.UNAVAILABLE, err
            try:
                return raft.view(name)["keys"].get(key, {}).get("value") == value
            except RemoteError:
                return False
        assert reply["applied"] or raft.view(name)["keys"].get(key, {}).get("value") == value, reply
        return True

    wait_until(done, 3 * CALL_S, what=f"{op} on {name} committed", fail_on=AssertionError)


def leader_everywhere_of(raft: RaftCluster, names: tuple[str, ...]) -> str | None:
    values = {v["keys"].get("leader", {}).get("value") for v in raft.all_views(names)}
    return values.pop() if len(values) == 1 else None


def test_without_quorum_writes_are_unavailable_within_the_request_timeout(raft: RaftCluster) -> None:
    alive = [p for p in raft.proxies if p.process is not None]
    alive[0].kill()
    last = alive[1].name
    sub = raft.subscribe(last)
    try:
        started = time.monotonic()
        with pytest.raises(RemoteError) as err:
            raft.call(last, "dcs.take_leader", {"name": last, "ttl": 20}, timeout=2.0)
        elapsed = time.monotonic() - started
        assert err.value.code == ErrorCode.UNAVAILABLE, err.value
        assert elapsed < 2.0
        with pytest.raises(RemoteError) as err:
            raft.call(last, "dcs.write", {"key": "config", "value": "{}"}, timeout=1.0)
        assert err.value.code == ErrorCode.UNAVAILABLE

        def published_not_ok() -> bool:
            return any(not e.body["ok"] for e in sub.drain())

        wait_until(published_not_ok, 5, what="a view with ok false")
        with pytest.raises(RemoteError) as err:
            raft.view(last)
        assert err.value.code == ErrorCode.UNAVAILABLE
    finally:
        sub.close()


def test_restarted_proxies_rejoin_and_catch_up(raft: RaftCluster) -> None:
    dead = [p for p in raft.proxies if p.process is None]
    live = next(p.name for p in raft.proxies if p.process is not None)
    first, second = dead
    restarted = time.monotonic()
    first.start()
    pair = tuple(sorted((live, first.name)))
    wait_until(lambda: all(v["ok"] for v in raft.all_views(pair)), 15, what="quorum again")
    print(f"\n{first.name} restarted: quorum again after {time.monotonic() - restarted:.2f}s")
    history = '[[1,100,"no recovery target"]]'
    write_surely(raft, live, "dcs.write", {"key": "history", "value": history}, "history", history)
    leader = raft.view(live)["keys"]["leader"]["value"]
    second.start()  # it missed at least the history write
    wait_until(lambda: raft.view(second.name)["ok"], 15, what=f"{second.name} healthy again")
    keys = raft.view(second.name)["keys"]
    assert keys["history"]["value"] == history
    assert keys["failover"]["value"] == "{}"
    assert keys["leader"]["value"] == leader
    assert raft.call(second.name, "dcs.refresh_leader", {"name": leader, "ttl": 20})["applied"]

"""The restapi program alone: a real process on a free port, fed by test publishers over ipc:// (D1, D3, D5, W1, W2).

The test plays ha_loop and dcs_proxy: it binds their PUB sockets in a temporary run directory and publishes
node_status and cluster_view bodies repeatedly, as they do on their heartbeat.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from shared.protocol.endpoints import Service, Topic, pub_path
from shared.protocol.transport import Publisher
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.unit.test_restapi_core import MB, cluster_view, member, node_status

ROOT = Path(__file__).resolve().parents[2]
NAME, SCOPE = "pg1", "demo"


class FakePeers:
    """ha_loop's and dcs_proxy's PUB sockets, publishing the current bodies every 50 ms."""

    def __init__(self, run_dir: str) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.run_dir = run_dir
        self.node_status: dict[str, Any] | None = None
        self.cluster_view: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ha_loop: Publisher | None = None
        self.dcs_proxy: Publisher | None = None

    def start(self) -> None:
        self.ha_loop = Publisher(self.ctx, pub_path(self.run_dir, Service.HA_LOOP))
        self.dcs_proxy = Publisher(self.ctx, pub_path(self.run_dir, Service.DCS_PROXY))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            now = time.time()
            if self.node_status is not None and self.ha_loop is not None:
                body = dict(self.node_status)
                body["tick"] = {**body["tick"], "next": now + 1}
                self.ha_loop.publish(Topic.NODE_STATUS, body)
            if self.cluster_view is not None and self.dcs_proxy is not None:
                self.dcs_proxy.publish(Topic.CLUSTER_VIEW, {**self.cluster_view, "last_seen": now})

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for publisher in (self.ha_loop, self.dcs_proxy):
            if publisher is not None:
                publisher.close()
        self.ha_loop = self.dcs_proxy = None

    def close(self) -> None:
        self.stop()
        self.ctx.destroy(linger=0)


def write_config(path: Path, port: int, data_dir: str, restapi: Mapping[str, Any] | None = None) -> None:
    """restapi: more keys of the restapi section (authentication, certfile, ...)."""
    config = {
        "name": NAME,
        "scope": SCOPE,
        "raft": {"self_addr": "127.0.0.1:5010", "data_dir": data_dir},
        "restapi": {"listen": f"127.0.0.1:{port}", "connect_address": f"127.0.0.1:{port}", **(restapi or {})},
        "postgresql": {"listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432", "data_dir": data_dir},
        "haven": {"source_config": str(path)},  # as the launcher records it: what POST /reload reads again (D31)
    }
    path.write_text(yaml.safe_dump(config))


@dataclass
class Started:
    run_dir: str
    port: int
    proc: subprocess.Popen[bytes]
    peers: FakePeers
    log_path: Path


@contextlib.contextmanager
def restapi_process(
    restapi: Mapping[str, Any] | None = None, before: Callable[[str], Any] = lambda run_dir: None
) -> Iterator[Started]:
    """The restapi program with the published events of FakePeers; `before(run_dir)` runs before it starts
    (to bind a fake brain). Stopped, and its directory removed, at the end."""
    run_dir = tempfile.mkdtemp(prefix="hv-", dir="/tmp")  # short: ipc paths are limited to 107 bytes
    port = free_port()
    config = Path(run_dir) / "node.yml"
    write_config(config, port, os.path.join(run_dir, "data"), restapi)
    before(run_dir)
    peers = FakePeers(run_dir)
    peers.start()
    log_path = Path(run_dir) / "restapi.log"
    proc = start_restapi(config, run_dir, log_path)
    try:
        yield Started(run_dir, port, proc, peers, log_path)
    finally:
        stop_process(proc)
        peers.close()
        if os.environ.get("KEEP_TEST_LOGS"):
            print(log_path.read_text())
        shutil.rmtree(run_dir, ignore_errors=True)


def start_restapi(config: Path, run_dir: str, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "services.restapi", "--config", str(config), "--run-dir", run_dir],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            return proc.wait()
    return proc.returncode


class Node:
    def __init__(self, port: int, proc: subprocess.Popen[bytes], peers: FakePeers, log_path: Path) -> None:
        self.port, self.proc, self.peers, self.log_path = port, proc, peers, log_path

    def request(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def status(self, method: str, path: str) -> int:
        return self.request(method, path)[0]

    def json(self, path: str) -> Any:
        status, headers, body = self.request("GET", path)
        assert headers.get("content-type") == "application/json", (status, headers, body)
        return json.loads(body)


PRIMARY_VIEW = cluster_view(
    NAME,
    members={
        NAME: member(NAME, role="master", host="127.0.0.1", timeline=1),
        "pg2": member("pg2", host="127.0.0.2", replication_state="streaming", timeline=1, xlog_location=99 * MB),
    },
)


@pytest.fixture
def node() -> Iterator[Node]:
    with restapi_process() as started:
        node = Node(started.port, started.proc, started.peers, started.log_path)
        wait_until(lambda: node.status("GET", "/patroni") == 200, 15, what="the REST API to answer")
        yield node


def test_answers_before_any_event_then_from_the_published_state(node: Node) -> None:
    """Until the brain publishes, /patroni is 'unknown' and every health check is 503 (W1, D5)."""
    assert node.json("/patroni") == {
        "state": "unknown",
        "role": "uninitialized",
        "patroni": {"version": "3.2.2", "scope": SCOPE, "name": NAME},
    }
    assert node.status("OPTIONS", "/primary") == 503

    node.peers.cluster_view = PRIMARY_VIEW
    node.peers.node_status = node_status("master")
    wait_until(lambda: node.status("GET", "/primary") == 200, 10, what="the primary check to pass")

    for method in ("GET", "HEAD", "OPTIONS"):
        for path in ("/", "/primary", "/read-write", "/master", "/leader", "/health", "/read-only"):
            assert node.status(method, path) == 200, (method, path)
        for path in ("/replica", "/standby-leader", "/async", "/sync", "/nothing"):
            assert node.status(method, path) == 503, (method, path)


def test_get_bodies_and_status_only_answers(node: Node) -> None:
    node.peers.cluster_view = PRIMARY_VIEW
    node.peers.node_status = node_status("master")
    wait_until(lambda: "dcs_last_seen" in node.json("/patroni"), 10, what="both events to arrive")

    patroni = node.json("/patroni")
    last_seen = patroni.pop("dcs_last_seen")
    assert isinstance(last_seen, int) and abs(last_seen - time.time()) < 30
    assert patroni == node_status("master")["patroni"]

    status, headers, body = node.request("GET", "/replica")  # D3: the status JSON with the code
    assert status == 503 and headers["content-type"] == "application/json"
    assert json.loads(body)["role"] == "master"
    for method in ("OPTIONS", "HEAD"):  # D3: status code only
        status, headers, body = node.request(method, "/primary")
        assert (status, body, headers.get("content-length")) == (200, b"", "0")

    cluster = node.json("/cluster")
    assert cluster["scope"] == SCOPE
    assert [(m["name"], m["role"], m["state"], m.get("lag")) for m in cluster["members"]] == [
        ("pg1", "leader", "running", None),
        ("pg2", "replica", "streaming", 1 * MB),
    ]
    assert node.json("/history") == []
    assert node.json("/config") == {"ttl": 30, "loop_wait": 10}
    assert node.request("GET", "/liveness")[::2] == (200, b"")
    assert node.request("GET", "/readiness")[::2] == (200, b"")
    status, _, body = node.request("POST", "/nothing")  # unknown unsafe paths: http.server's 501 (D18)
    assert status == 501 and b"Unsupported method ('POST')" in body


def test_follows_a_role_change(node: Node) -> None:
    node.peers.cluster_view = PRIMARY_VIEW
    node.peers.node_status = node_status("master")
    wait_until(lambda: node.status("OPTIONS", "/primary") == 200, 10, what="primary")
    node.peers.cluster_view = cluster_view(
        "pg2", members={NAME: member(NAME, host="127.0.0.1"), "pg2": member("pg2", role="master", host="127.0.0.2")}
    )
    node.peers.node_status = node_status("replica")
    wait_until(lambda: node.status("OPTIONS", "/replica") == 200, 10, what="replica")
    assert node.status("OPTIONS", "/primary") == 503


def test_keeps_answering_while_publishers_stop_and_reconnects(node: Node) -> None:
    status = node_status("master")
    status["ttl"] = 1  # so that /liveness notices the silent brain within seconds
    node.peers.cluster_view = PRIMARY_VIEW
    node.peers.node_status = status
    wait_until(lambda: node.status("GET", "/liveness") == 200, 10, what="liveness")
    before = node.json("/patroni")

    node.peers.stop()  # both publishers gone: sockets closed
    for _ in range(20):
        assert node.status("GET", "/patroni") == 200
    assert node.json("/patroni") == before
    wait_until(lambda: node.status("GET", "/liveness") == 503, 10, what="liveness to fail without ticks")
    assert node.status("GET", "/cluster") == 200

    node.peers.node_status = node_status("replica")
    node.peers.start()  # a restarted ha_loop binds its socket again
    wait_until(lambda: node.json("/patroni")["role"] == "replica", 10, what="events after the restart")
    assert node.status("GET", "/liveness") == 200


def test_malformed_events_are_dropped_and_the_service_keeps_serving(node: Node) -> None:
    node.peers.cluster_view = PRIMARY_VIEW
    node.peers.node_status = node_status("master")
    wait_until(lambda: node.status("GET", "/primary") == 200, 10, what="primary")
    node.peers.stop()
    node.peers.ha_loop = Publisher(node.peers.ctx, pub_path(node.peers.run_dir, Service.HA_LOOP))
    publisher = node.peers.ha_loop
    bad_bodies: list[Any] = [
        {**node_status("replica"), "patroni": "not a map"},
        {**node_status("replica"), "name": "intruder"},
    ]

    def garbage_sent() -> bool:
        topic = Topic.NODE_STATUS.encode()
        publisher.socket.send_multipart([topic, b"\xc1 not msgpack"])
        publisher.socket.send_multipart([topic, b"\x93\x01\x02\x03"])  # msgpack, but not a map
        for body in bad_bodies:
            publisher.publish(Topic.NODE_STATUS, body)
        return "dropped a ha_loop.node_status event" in node.log_path.read_text()

    wait_until(garbage_sent, 10, interval=0.1, what="the malformed events to be dropped and logged")
    assert node.proc.poll() is None
    assert node.status("GET", "/primary") == 200  # still the last good state
    assert node.json("/patroni")["role"] == "master"

    def good_event_applied() -> bool:
        publisher.publish(Topic.NODE_STATUS, node_status("replica"))
        return node.status("GET", "/replica") == 200

    wait_until(good_event_applied, 10, what="a good event after the bad ones")


def test_sigterm_stops_cleanly(node: Node) -> None:
    assert stop_process(node.proc) == 0
    assert "stopped" in node.log_path.read_text()


def test_a_busy_port_is_a_clear_error(node: Node) -> None:
    """D1: a helpful message when the listen address is taken."""
    config = Path(tempfile.mkdtemp(prefix="hv-", dir="/tmp"))
    try:
        write_config(config / "node.yml", node.port, str(config / "data"))
        proc = start_restapi(config / "node.yml", str(config), config / "log")
        assert proc.wait(timeout=15) == 1
        assert f"cannot listen on 127.0.0.1:{node.port}" in (config / "log").read_text()
    finally:
        shutil.rmtree(config, ignore_errors=True)

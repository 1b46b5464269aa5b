"""ha_loop alone, against test peers speaking the real protocol: the shell gathers, decides, acts and wakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from shared.protocol.endpoints import Service, Topic, pub_path
from shared.protocol.transport import Subscriber
from tests.support.fakes import FakeDcs, FakePostmaster, FakeWatchdog
from tests.support.ports import free_port
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


class Harness:
    def __init__(self, tmp: Path, loop_wait: int) -> None:
        self.run_dir = tmp / "run"
        self.run_dir.mkdir()
        self.dcs = FakeDcs(self.run_dir)
        self.pg = FakePostmaster(self.run_dir, "n1")
        self.wd = FakeWatchdog(self.run_dir)
        self.dcs.put("initialize", "7000")
        self.ttl = max(20, loop_wait + 10)
        dynamic = {"ttl": self.ttl, "loop_wait": loop_wait, "retry_timeout": 5}
        self.dcs.put("config", json.dumps(dynamic))
        config = {
            "scope": "batman",
            "name": "n1",
            "restapi": {"listen": f"127.0.0.1:{free_port()}", "connect_address": "127.0.0.1:8001"},
            "raft": {"self_addr": f"127.0.0.1:{free_port()}"},
            "bootstrap": {"dcs": dynamic},
            "postgresql": {"listen": "127.0.0.1:5001", "connect_address": "127.0.0.1:5001", "data_dir": str(tmp / "d")},
            "watchdog": {"mode": "off"},
        }
        self.config_path = tmp / "n1.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log = open(tmp / "ha_loop.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.ha_loop",
                "--config",
                str(self.config_path),
                "--run-dir",
                str(self.run_dir),
                "--text-log",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
        )
        self.log_path = tmp / "ha_loop.log"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        for fake in (self.dcs, self.pg, self.wd):
            if not fake.closed:
                fake.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def harness_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def make(loop_wait: int = 1) -> Harness:
        h = Harness(tmp_path, loop_wait)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()
        if os.environ.get("HAVEN_SHOW_LOGS"):
            print(h.output())


def member(name: str, api_port: int) -> str:
    return json.dumps(
        {
            "conn_url": f"postgres://127.0.0.1:{api_port + 1}/postgres",
            "api_url": f"http://127.0.0.1:{api_port}/patroni",
            "state": "running",
            "role": "master",
        }
    )


def test_a_lone_healthy_replica_takes_the_lock_and_promotes_A5(harness_factory: Any) -> None:
    h = harness_factory()
    promoted = wait_until(lambda: h.pg.ops("pg.promote"), 10, what="pg.promote")
    assert promoted and h.dcs.view()["keys"]["leader"]["value"] == "n1"
    order = [op for op, _ in h.dcs.calls if op != "dcs.get_cluster"]
    assert order[0] == "dcs.take_leader"
    wait_until(lambda: "promoted self to leader by acquiring session lock" in h.output(), 5, what="the log line")


def test_the_leader_refreshes_its_lock_every_loop_wait_A4(harness_factory: Any) -> None:
    h = harness_factory(loop_wait=1)
    h.dcs.put("leader", "n1")
    h.pg.update(role="master", xlog={"location": 500}, wal_position=500)
    wait_until(lambda: len(h.dcs.ops("dcs.refresh_leader")) >= 3, 10, what="three refreshes")
    refresh = h.dcs.ops("dcs.refresh_leader")[-1]
    assert refresh["name"] == "n1" and refresh["ttl"] == 20 and refresh["last_lsn"] == 500
    touch = h.dcs.ops("dcs.touch_member")[-1]
    assert touch["data"]["role"] == "master" and touch["data"]["xlog_location"] == 500


def test_a_refresh_that_loses_its_compare_and_set_demotes_at_once_A20(harness_factory: Any) -> None:
    h = harness_factory(loop_wait=10)
    h.dcs.put("leader", "n1")
    h.pg.update(role="master", xlog={"location": 500}, wal_position=500)
    wait_until(lambda: h.dcs.ops("dcs.refresh_leader"), 10, what="the first refresh")
    h.dcs.refresh_result = False
    h.dcs.put("leader", "n2")  # another node took the key: the view change wakes the brain
    demote = wait_until(lambda: h.pg.ops("pg.demote"), 5, what="pg.demote")
    assert demote[0]["mode"] == "immediate-nolock"


def test_a_vanished_leader_key_wakes_the_brain_before_loop_wait_A2(harness_factory: Any) -> None:
    h = harness_factory(loop_wait=30)
    dead_api = free_port()  # nobody listens there: the probe fails fast
    h.dcs.put("members/n2", member("n2", dead_api))
    h.dcs.put("leader", "n2")
    h.pg.update(following="n2")
    wait_until(lambda: "following a leader (n2)" in h.output(), 10, what="the first tick")
    removed_at = time.monotonic()
    h.dcs.remove("leader")
    wait_until(lambda: h.dcs.ops("dcs.take_leader"), 10, interval=0.01, what="take_leader")
    elapsed = time.monotonic() - removed_at
    assert elapsed < 5, f"the brain took {elapsed:.2f}s to react; loop_wait is 30"


def test_node_status_carries_the_GET_patroni_body_W1(harness_factory: Any) -> None:
    h = harness_factory()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = Subscriber(ctx, [pub_path(str(h.run_dir), Service.HA_LOOP)], [Topic.NODE_STATUS])
    try:

        def status() -> dict[str, Any] | None:
            sub.socket.poll(200)
            events = sub.drain()
            return events[-1].body if events and events[-1].body["tick"]["count"] > 0 else None

        body = wait_until(status, 10, what="node_status")
        patroni = body["patroni"]
        assert patroni["patroni"] == {"version": "3.2.2", "scope": "batman", "name": "n1"}
        assert patroni["state"] == "running" and patroni["database_system_identifier"] == "7000"
        assert body["ttl"] == 20 and body["loop_wait"] == 1 and body["tick"]["next"] >= body["tick"]["finished"]
    finally:
        sub.close()
        ctx.destroy(linger=0)


def test_a_leader_that_loses_its_dcs_keeper_demotes_offline_A21(harness_factory: Any) -> None:
    h = harness_factory(loop_wait=1)
    h.dcs.put("leader", "n1")
    h.pg.update(role="master", xlog={"location": 500}, wal_position=500)
    wait_until(lambda: h.dcs.ops("dcs.refresh_leader"), 10, what="the first refresh")
    h.dcs.close()  # dcs_proxy is gone: no view can be read
    demote = wait_until(lambda: h.pg.ops("pg.demote"), 10, what="pg.demote")
    assert demote[0]["mode"] == "offline" and demote[0]["leader"] is None
    wait_until(
        lambda: "demoting self because DCS is not accessible and I was a leader" in h.output(), 5, what="the log line"
    )


def brain_client(h: Harness) -> tuple[Any, Any]:
    from shared.protocol.endpoints import router_path
    from shared.protocol.transport import Client

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    return ctx, Client(ctx, router_path(str(h.run_dir), Service.HA_LOOP))


def test_control_requests_write_failover_and_config_and_wake_the_brain_A26_D24(harness_factory: Any) -> None:
    h = harness_factory(loop_wait=30)
    h.dcs.put("leader", "n1")
    h.pg.update(role="master", xlog={"location": 500}, wal_position=500)
    wait_until(lambda: h.dcs.ops("dcs.refresh_leader"), 10, what="the first tick")
    ctx, client = brain_client(h)
    try:
        assert client.call("ha.write_failover", {"value": {"leader": "n1", "member": "n2"}}, timeout=5) == {
            "applied": True
        }
        assert json.loads(h.dcs.view()["keys"]["failover"]["value"]) == {"leader": "n1", "member": "n2"}
        # the brain woke at once (loop_wait is 30 s) and, with no such member, cleaned the request up
        wait_until(lambda: h.dcs.view()["keys"]["failover"]["value"] == "{}", 5, what="the cleanup")
        reply = client.call("ha.config", {"mode": "patch", "value": {"pause": True, "ttl": None}}, timeout=5)
        assert reply["applied"] and reply["config"]["pause"] is True and "ttl" not in reply["config"]
        assert json.loads(h.dcs.view()["keys"]["config"]["value"]) == reply["config"]
    finally:
        client.close()
        ctx.destroy(linger=0)


def test_an_immediate_restart_is_answered_through_node_status_D29(harness_factory: Any) -> None:
    h = harness_factory(loop_wait=30)
    h.dcs.put("leader", "n1")
    h.pg.update(role="master", xlog={"location": 500}, wal_position=500)
    wait_until(lambda: h.dcs.ops("dcs.refresh_leader"), 10, what="the first tick")
    ctx, client = brain_client(h)
    sub = Subscriber(ctx, [pub_path(str(h.run_dir), Service.HA_LOOP)], [Topic.NODE_STATUS])
    try:
        control = client.call("ha.restart", {}, timeout=5)["control"]
        wait_until(lambda: h.pg.ops("pg.restart"), 5, what="pg.restart")

        def result() -> dict[str, Any] | None:
            sub.socket.poll(100)
            for event in reversed(sub.drain()):
                entry = event.body.get("controls", {}).get(control)
                if entry and entry["state"] == "done":
                    return dict(entry)
            h.pg.publish(dict(h.pg.state))  # a pg_state event wakes the brain to look at the finished operation
            return None

        assert wait_until(result, 10, what="the restart result") == {
            "state": "done",
            "status": 200,
            "message": "restarted successfully",
        }
        scheduled = client.call("ha.restart", {"schedule": "2099-01-01T00:00:00+00:00"}, timeout=5)
        assert scheduled == {"status": 202, "message": "Restart scheduled"}
        assert client.call("ha.restart", {"schedule": "2099-01-02T00:00:00+00:00"}, timeout=5)["status"] == 409
        assert client.call("ha.cancel_restart", {}, timeout=5) == {
            "status": 200,
            "message": "scheduled restart deleted",
        }
        assert client.call("ha.reload", {}, timeout=5) == {"status": 202, "message": "reload scheduled"}
    finally:
        sub.close()
        client.close()
        ctx.destroy(linger=0)


def test_a_dcs_outage_shorter_than_retry_timeout_does_not_demote_A7(harness_factory: Any) -> None:
    h = harness_factory(loop_wait=1)
    h.dcs.put("leader", "n1")
    h.pg.update(role="master", xlog={"location": 500}, wal_position=500)
    wait_until(lambda: h.dcs.ops("dcs.refresh_leader"), 10, what="the first refresh")
    h.dcs.available = False  # the DCS answers "not current" (e.g. an etcd leader election)
    refreshes = len(h.dcs.ops("dcs.refresh_leader"))
    wait_until(
        lambda: "cannot read" in h.output() or len(h.dcs.ops("dcs.get_cluster")) > 20, 5, what="the brain to try again"
    )
    h.dcs.available = True  # back within retry_timeout (5 s)
    wait_until(lambda: len(h.dcs.ops("dcs.refresh_leader")) > refreshes + 1, 10, what="refreshes to resume")
    assert not h.pg.ops("pg.demote")

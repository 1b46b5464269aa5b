"""Test peers over ipc:// for a program under test: a DCS keeper, a PostgreSQL controller and a watchdog
that speak the real protocol (docs/protocol.md) and record every request they get."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from shared.protocol.endpoints import Service, Topic, pub_path, router_path
from shared.protocol.envelope import Request
from shared.protocol.transport import Publisher, RouterServer

Handler = Callable[[dict[str, Any], Request], dict[str, Any]]


class FakeService:
    """A ROUTER (and optionally a PUB) served by one background thread."""

    def __init__(self, run_dir: Path, service: Service, handlers: dict[str, Handler], topic: str | None = None) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        wrapped = {op: self._recording(op, h) for op, h in handlers.items()}
        self._server = RouterServer(self.ctx, router_path(str(run_dir), service), wrapped)
        self._publisher = Publisher(self.ctx, pub_path(str(run_dir), service)) if topic else None
        self._topic = topic
        self._outbox: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _recording(self, op: str, handler: Handler) -> Handler:
        def run(body: dict[str, Any], req: Request) -> dict[str, Any]:
            with self._lock:
                self.calls.append((op, body))
            return handler(body, req)

        return run

    def ops(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [body for op, body in self.calls if name is None or op == name]

    def publish(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._outbox.append(body)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._server.socket.poll(20):
                self._server.process()
            with self._lock:
                outbox, self._outbox = self._outbox, []
            if self._publisher is not None and self._topic is not None:
                for body in outbox:
                    self._publisher.publish(self._topic, body)

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()
        if self._publisher is not None:
            self._publisher.close()
        self.ctx.destroy(linger=0)


class FakeDcs(FakeService):
    """An in-memory DCS with the atomic semantics of the contract (no TTL expiry: tests delete keys)."""

    def __init__(self, run_dir: Path, scope: str = "batman") -> None:
        self.scope = scope
        self.keys: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.refresh_result = True  # set False to make refresh_leader lose its compare-and-set
        self.available = True
        self.kv_lock = threading.Lock()
        super().__init__(
            run_dir,
            Service.DCS_PROXY,
            {
                "dcs.get_cluster": lambda b, r: self.view(),
                "dcs.initialize": self._initialize,
                "dcs.cancel_initialization": lambda b, r: self._delete("initialize"),
                "dcs.take_leader": lambda b, r: self._create("leader", b["name"]),
                "dcs.refresh_leader": self._refresh,
                "dcs.release_leader": lambda b, r: self._delete("leader"),
                "dcs.touch_member": lambda b, r: self._set(f"members/{b['name']}", json.dumps(b["data"])),
                "dcs.write": lambda b, r: self._set(b["key"], b["value"]),
                "dcs.delete": lambda b, r: self._delete(b["key"]),
            },
            topic=Topic.CLUSTER_VIEW,
        )

    def view(self) -> dict[str, Any]:
        with self.kv_lock:
            keys = {k: dict(v) for k, v in self.keys.items()}
            revision = self.version
        return {
            "scope": self.scope,
            "namespace": "/service",
            "backend": "fake",
            "ok": self.available,
            "last_seen": time.time(),
            "revision": revision,
            "keys": keys,
        }

    def _bump(self) -> int:
        self.version += 1
        return self.version

    def _changed(self) -> None:
        self.publish(self.view())

    def put(self, key: str, value: str) -> None:
        with self.kv_lock:
            self.keys[key] = {"value": value, "version": self._bump(), "session": None, "ttl": None}
        self._changed()

    def remove(self, key: str) -> None:
        with self.kv_lock:
            self.keys.pop(key, None)
            self._bump()
        self._changed()

    def _set(self, key: str, value: str) -> dict[str, Any]:
        self.put(key, value)
        return {"applied": True, "version": self.version}

    def _create(self, key: str, value: str) -> dict[str, Any]:
        with self.kv_lock:
            if key in self.keys:
                return {"applied": False}
            self.keys[key] = {"value": value, "version": self._bump(), "session": None, "ttl": None}
        self._changed()
        return {"applied": True}

    def _delete(self, key: str) -> dict[str, Any]:
        self.remove(key)
        return {"applied": True}

    def _initialize(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        if body["create_new"]:
            return self._create("initialize", body["sysid"])
        return self._set("initialize", body["sysid"])

    def _refresh(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        with self.kv_lock:
            current = self.keys.get("leader", {}).get("value")
        if not self.refresh_result or current != body["name"]:
            return {"applied": False}
        self.put("leader", body["name"])
        return {"applied": True}


def pg_state(name: str, **kw: Any) -> dict[str, Any]:
    state: dict[str, Any] = {
        "name": name,
        "ts": time.time(),
        "data_dir": "initialized",
        "sysid": "7000",
        "server_version": 150004,
        "running": True,
        "accepting": True,
        "state": "running",
        "role": "replica",
        "postmaster_start_time": "2024-01-01 00:00:00.000000+00:00",
        "timeline": 1,
        "xlog": {"received_location": 100, "replayed_location": 100, "replayed_timestamp": None, "paused": False},
        "wal_position": 100,
        "replication": [],
        "replication_state": "streaming",
        "following": None,
        "pending_restart": False,
        "controldata": {},
        "operation": None,
    }
    state.update(kw)
    return state


class FakePostmaster(FakeService):
    """Answers pg.status with `state`; long ops are accepted and recorded, and may be scripted by tests."""

    def __init__(self, run_dir: Path, name: str, **state: Any) -> None:
        self.state = pg_state(name, **state)
        self.on_op: Callable[[str, dict[str, Any]], None] | None = None
        handlers: dict[str, Handler] = {"pg.status": lambda b, r: dict(self.state)}
        for op in ("pg.configure", "pg.reload"):
            handlers[op] = lambda b, r: {"reloaded": False, "pending_restart": False}
        handlers["pg.sync_slots"] = lambda b, r: {"created": [], "dropped": [], "advanced": []}
        for op in (
            "pg.bootstrap",
            "pg.clone",
            "pg.start",
            "pg.stop",
            "pg.restart",
            "pg.promote",
            "pg.demote",
            "pg.follow",
        ):
            handlers[op] = self._long(op)
        super().__init__(run_dir, Service.POSTMASTER, handlers, topic=Topic.PG_STATE)

    def _long(self, op: str) -> Handler:
        def accept(body: dict[str, Any], req: Request) -> dict[str, Any]:
            if self.on_op is not None:
                self.on_op(op, body)
            # every operation succeeds at once; a stop leaves PostgreSQL stopped
            done = {
                "id": req.id,
                "name": op.split(".")[1],
                "state": "succeeded",
                "error": None,
                "started": time.time(),
                "finished": time.time(),
                "result": {},
            }
            extra: dict[str, Any] = (
                {"running": False, "accepting": False, "state": "stopped"} if op == "pg.stop" else {}
            )
            self.state = {**self.state, **extra, "operation": done}
            return {"accepted": True, "operation": req.id}

        return accept

    def update(self, **kw: Any) -> None:
        self.state = {**self.state, **kw, "ts": time.time()}
        self.publish(dict(self.state))


class FakeWatchdog(FakeService):
    def __init__(self, run_dir: Path) -> None:
        super().__init__(
            run_dir,
            Service.WATCHDOGD,
            {
                "wd.arm": lambda b, r: {"active": False, "reason": "test"},
                "wd.keepalive": lambda b, r: {"active": False},
                "wd.disarm": lambda b, r: {"active": False},
                "wd.status": lambda b, r: {"mode": "off", "active": False},
            },
        )

"""The leader key `/<namespace>/<scope>/leader` as an independent etcd client sees it, through etcd's v3 HTTP
gateway (JSON, keys and values base64, fields with default values left out, so a PUT event has no "type").

LeaderWatch keeps one watch stream open in a thread and timestamps every event on arrival (monotonic clock):
that is when the key disappeared (lease expired, deleted) or changed holder, to within a millisecond or so.
poll_leader() reads the key once (for the soak's 0.5 s poll).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def leader_key(scope: str, namespace: str = "/service") -> str:
    return f"{namespace.rstrip('/')}/{scope}/leader"


def _post(port: int, path: str, body: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"etcd {path}: {response.status} {data[:200]!r}")
        result: dict[str, Any] = json.loads(data)
        return result
    finally:
        conn.close()


def poll_leader(port: int, key: str, timeout: float = 2.0) -> tuple[str | None, int]:
    """(the key's value or None when absent, the store revision of the answer)."""
    data = _post(port, "/v3/kv/range", {"key": _b64(key)}, timeout)
    revision = int(data.get("header", {}).get("revision", 0))
    kvs = data.get("kvs") or []
    return (_unb64(kvs[0].get("value", "")) if kvs else None), revision


@dataclass(frozen=True)
class Event:
    at: float  # time.monotonic() on arrival
    kind: str  # "PUT" or "DELETE"
    value: str | None  # the holder after the event (None after a DELETE)
    revision: int


class LeaderWatch:
    """Watch one key from the current revision on; `events` grows as they arrive.

    with LeaderWatch(port, key) as watch:
        watch.initial            # the value when the watch started (None: absent)
        ...
        watch.first(lambda e: e.value != "node1", after=t0)
    """

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.key = key
        self.initial: str | None = None
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._conn: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self, timeout: float = 10.0) -> LeaderWatch:
        self.initial, revision = poll_leader(self.port, self.key)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        body = {"create_request": {"key": _b64(self.key), "start_revision": str(revision + 1)}}
        conn.request("POST", "/v3/watch", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"etcd watch: {response.status} {response.read()[:200]!r}")
        first = json.loads(response.readline())
        if not first.get("result", {}).get("created"):
            raise RuntimeError(f"etcd watch not created: {first}")
        if conn.sock is not None:
            conn.sock.settimeout(None)  # the stream is quiet for as long as nothing changes
        self._conn, self._response = conn, response
        self._thread = threading.Thread(target=self._run, name="leader-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._response is not None
        try:
            while True:
                line = self._response.readline()
                if not line:
                    raise ConnectionError("the etcd watch stream ended")
                now = time.monotonic()
                message = json.loads(line)
                result = message.get("result", {})
                if "error" in message:
                    raise RuntimeError(f"etcd watch: {message['error']}")
                for raw in result.get("events", []):
                    kind = raw.get("type", "PUT")
                    kv = raw.get("kv", {})
                    value = _unb64(kv.get("value", "")) if kind == "PUT" else None
                    event = Event(now, kind, value, int(kv.get("mod_revision", 0)))
                    with self._cond:
                        self.events.append(event)
                        self._cond.notify_all()
        except BaseException as exc:  # recorded, read by the waiters
            if not self._stopping:
                self.error = exc
            with self._cond:
                self._cond.notify_all()

    def first(self, predicate: Any, after: float = 0.0) -> Event | None:
        with self._cond:
            return next((e for e in self.events if e.at >= after and predicate(e)), None)

    def wait_for(self, predicate: Any, timeout: float, after: float = 0.0) -> Event | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((e for e in self.events if e.at >= after and predicate(e)), None)
                if found is not None or self.error is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.5))

    def holder_changes(self, start: float, end: float) -> int:
        """How often the holder lost the key in [start, end): a DELETE, or a PUT naming someone else."""
        with self._cond:
            events = list(self.events)
        holder = self.initial
        for e in events:
            if e.at >= start:
                break
            holder = e.value
        changes = 0
        for e in events:
            if e.at < start:
                continue
            if e.at >= end:
                break
            if holder is not None and e.value != holder:
                changes += 1
            holder = e.value
        return changes

    def stop(self) -> None:
        self._stopping = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        if conn is not None:
            conn.close()

    def __enter__(self) -> LeaderWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

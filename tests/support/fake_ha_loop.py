"""Test peers for the REST API's control plane: ha_loop's ROUTER answering the control ops of docs/protocol.md (and
recording them), and tiny HTTP servers playing the other members' GET /patroni."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shared.protocol.endpoints import Service
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError
from tests.support.fakes import FakeService

Reply = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] | OpError

CONTROL_OPS = (
    "ha.status",
    "ha.wakeup",
    "ha.write_failover",
    "ha.clear_failover",
    "ha.config",
    "ha.restart",
    "ha.cancel_restart",
    "ha.reload",
    "ha.reinitialize",
)


def default_replies() -> dict[str, Reply]:
    return {
        "ha.status": {},
        "ha.wakeup": {"woken": True},
        "ha.write_failover": {"applied": True},
        "ha.clear_failover": {"applied": True},
        "ha.config": lambda body: {"applied": True, "config": body["value"]},
        "ha.restart": {"control": "restart-1"},
        "ha.cancel_restart": {"status": 404, "message": "no restarts are scheduled"},
        "ha.reload": {"status": 202, "message": "reload scheduled"},
        "ha.reinitialize": {"status": 200, "message": "reinitialize started"},
    }


class FakeHaLoop(FakeService):
    """ha_loop's ROUTER. `replies[op]` is a reply body, a function of the request body, or an OpError to raise."""

    def __init__(self, run_dir: Path | str) -> None:
        self.replies: dict[str, Reply] = default_replies()
        super().__init__(Path(run_dir), Service.HA_LOOP, {op: self._answer(op) for op in CONTROL_OPS})

    def _answer(self, op: str) -> Callable[[dict[str, Any], Request], dict[str, Any]]:
        def run(body: dict[str, Any], req: Request) -> dict[str, Any]:
            reply = self.replies.get(op)
            if reply is None:
                raise OpError(ErrorCode.UNKNOWN_OP, op)
            if isinstance(reply, OpError):
                raise reply
            if callable(reply):
                return reply(body)
            return dict(reply)

        return run

    def reset(self) -> None:
        self.replies = default_replies()
        with self._lock:
            self.calls.clear()


class MemberApi:
    """An HTTP server answering GET /patroni with `status` (None: 503 with no JSON, like a member that is down)."""

    def __init__(self, status: Any = None) -> None:
        self.status = status
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.status is None:
                    self.send_error(503)
                    return
                data = json.dumps(outer.status).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/patroni"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def replica_status(name: str, **extra: Any) -> dict[str, Any]:
    """A healthy replica's GET /patroni body (W1)."""
    body: dict[str, Any] = {
        "state": "running",
        "role": "replica",
        "server_version": 150004,
        "xlog": {"received_location": 100, "replayed_location": 100, "replayed_timestamp": None, "paused": False},
        "timeline": 1,
        "patroni": {"version": "3.2.2", "scope": "demo", "name": name},
    }
    body.update(extra)
    return body

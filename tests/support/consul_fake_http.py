"""A restartable threaded HTTP/1.1 server for the in-process test servers (Consul: consul_server.py,
Kubernetes API: kubernetes_server.py).

- Binds 127.0.0.1 on a port chosen once (tests.support.ports.free_port); stop() then start() serves the
  same port again, as a real server restarted with its data directory would.
- stop() closes the listening socket AND every open connection, long polls and watch streams included,
  so that clients see the outage at once (connection reset, then connection refused).
- TCP_NODELAY on every connection (http.server + keep-alive otherwise stalls 40 ms per request).
- Fault injection: `inject(count, status, ...)` answers the next `count` matching requests with an error
  before they reach the API (for retry tests: a 503 with Retry-After, a 500 "No cluster leader").
- `answered`: (method, path with query, status) of the last requests, for tests that must prove a request
  happened (a 409, a new LIST).
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.support.ports import free_port


@dataclass
class Fault:
    """An error answered instead of the next `count` requests whose method is in `methods` (all if empty)."""

    count: int
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    methods: frozenset[str] = frozenset()
    hits: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: HttpTestServer) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner.lock:
            self.owner.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.owner.lock:
            self.owner.connections.discard(request)
        super().shutdown_request(request)


class HttpTestServer:
    """Runs `handler` (a JsonHandler subclass) in threads; `handler.api` is set to `api` for every request."""

    def __init__(self, handler: type[JsonHandler], api: Any, port: int | None = None) -> None:
        self.handler = handler
        self.api = api
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.faults: list[Fault] = []
        self.answered: deque[tuple[str, str, int]] = deque(maxlen=2000)
        self.on_stop: list[Callable[[], None]] = []
        self.running = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self.port), self.handler, self)
        self._server = server
        self.running.set()
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            open_connections, self.connections = list(self.connections), set()
        for conn in open_connections:  # cut them before waking the long polls, so none gets an answer
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.running.clear()
        for hook in self.on_stop:
            hook()
        if self._thread is not None:
            self._thread.join(5)

    def inject(
        self,
        count: int,
        status: int,
        body: Any = b"",
        headers: dict[str, str] | None = None,
        methods: tuple[str, ...] = (),
    ) -> Fault:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        fault = Fault(count, status, raw, dict(headers or {}), frozenset(m.upper() for m in methods))
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and (not fault.methods or method in fault.methods):
                    fault.count -= 1
                    fault.hits += 1
                    return fault
        return None


class JsonHandler(BaseHTTPRequestHandler):
    """Parses the request line once; subclasses implement `route(method)`."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def owner(self) -> HttpTestServer:
        return self.server.owner

    @property
    def api(self) -> Any:
        return self.server.owner.api

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.url_path = unquote(parts.path)  # as Go's net/http and the API servers see it
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        fault = self.owner.take_fault(method)
        if fault is not None:
            self.send_raw(fault.status, fault.body, fault.headers)
            return
        try:
            self.route(method)
        except OSError:  # the client went away, or stop() cut the connection
            self.close_connection = True

    def route(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def send_response(self, code: int, message: str | None = None) -> None:
        self.owner.answered.append((self.command, self.path, code))
        super().send_response(code, message)

    def send_raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        merged = {"Content-Type": "application/json", **(headers or {})}
        for name, value in merged.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(status, json.dumps(value).encode(), headers)

    def start_chunked(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

"""The Consul client's plumbing (used by consul.py): settings from the `consul:` section, and calls over
urllib3 with a deadline each. A call is retried while time remains only when it certainly did not happen
(no connection, or Consul answered "No cluster leader"); a blocking query runs on its own connection so
that close() can cut it short.

Why not py-consul: its session.create refuses TTLs under 10 s, and its client has one timeout for all calls.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from shared.dcs.base import BackendError, DCSUnavailable

CONNECT_TIMEOUT_S = 2.0
RETRY_PAUSE_S = 0.1
# urllib3's own options (TCP_NODELAY: no 40 ms Nagle stalls) plus keepalives
_KEEPALIVE = [*HTTPConnection.default_socket_options, (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]


def go_duration(seconds: float) -> str:
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def service_name(scope: str) -> str:
    """A scope as a DNS label for Consul: lower case, ' ' and '_' become '-', other characters outside
    [a-z0-9.-] become u<code point>, at most 230 characters (253 - len('replica.') - len('.service.consul'))."""

    def swap(match: re.Match[str]) -> str:
        c = match.group(0)
        return "-" if c in " _" else f"u{ord(c):04d}"

    return re.sub(r"[^a-z0-9\-.]", swap, scope.lower())[:230]


@dataclass(frozen=True)
class ConsulSettings:
    scheme: str
    host: str
    port: int
    token: str | None = None
    verify: bool = True
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    dc: str | None = None
    consistency: str = "default"
    checks: tuple[str, ...] = ()
    register_service: bool = False
    service_tags: tuple[str, ...] = ()
    service_check_interval: str = "5s"
    service_check_tls_server_name: str | None = None
    min_session_ttl: float = 10.0
    lock_delay: float = 0.001

    @classmethod
    def from_section(cls, s: dict[str, Any]) -> ConsulSettings:
        url, host = str(s.get("url") or "").strip(), str(s.get("host") or "").strip()
        if not url and not host:
            raise BackendError("consul: host or url is required")
        parts = urlsplit(url if "://" in url else f"{s.get('scheme') or 'http'}://{url or host}")
        if not parts.hostname:
            raise BackendError(f"consul: cannot read an address from {url or host!r}")

        def opt(name: str) -> str | None:
            return str(s[name]) if s.get(name) not in (None, "") else None

        def strings(name: str) -> tuple[str, ...]:
            value = s.get(name) or ()
            return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)

        # url: its own port wins; host ("h" or "h:p"): the port key wins, as in Patroni
        port = (parts.port or s.get("port")) if url else (s.get("port") or parts.port)
        return cls(
            scheme=parts.scheme or "http",
            host=parts.hostname,
            port=int(port or 8500),
            token=opt("token"),
            verify=bool(s.get("verify", True)) or bool(s.get("cacert")),
            cacert=opt("cacert"),
            cert=opt("cert"),
            key=opt("key"),
            dc=opt("dc"),
            consistency=str(s.get("consistency") or "default"),
            checks=strings("checks"),
            register_service=bool(s.get("register_service", False)),
            service_tags=strings("service_tags"),
            service_check_interval=str(s.get("service_check_interval") or "5s"),
            service_check_tls_server_name=opt("service_check_tls_server_name"),
            min_session_ttl=float(s.get("min_session_ttl") or 10.0),
            lock_delay=float(s.get("lock_delay", 0.001)),
        )


@dataclass(frozen=True)
class Reply:
    status: int
    index: int
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            raise DCSUnavailable(f"consul: an answer that is not JSON: {self.text[:200]!r}")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class Entry:
    value: str
    index: int
    session: str | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Entry:
        value = base64.b64decode(raw["Value"]).decode("utf-8", "replace") if raw.get("Value") else ""
        return cls(value, int(raw.get("ModifyIndex") or 0), raw.get("Session") or None)


class InvalidSession(Exception):
    pass


class ConsulHttp:
    """Calls with deadlines over a pool, and blocking queries over their own connection so close() can cut them."""

    def __init__(self, s: ConsulSettings) -> None:
        self.s = s
        self.tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if s.verify else "CERT_NONE", "ca_certs": s.cacert}
        self.tls.update({"cert_file": s.cert, "key_file": s.key} if s.cert else {})
        tls = self.tls if s.scheme == "https" else {}
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=4, retries=False, socket_options=_KEEPALIVE, **tls)
        self.headers = {"User-Agent": "haven", **({"X-Consul-Token": s.token} if s.token else {})}
        self._lock = threading.Lock()
        self._watch_conn: HTTPConnection | None = None
        self._aborted = False

    def target(self, path: str, params: dict[str, Any] | None) -> str:
        query = {**(params or {}), **({"dc": self.s.dc} if self.s.dc else {})}
        return quote(path) + (f"?{urlencode(query)}" if query else "")

    def call(
        self, method: str, path: str, deadline: float, params: dict[str, Any] | None = None, body: Any = None
    ) -> Reply:
        """One call; retried while time remains only when it certainly did not happen."""
        url = f"{self.s.scheme}://{self.s.host}:{self.s.port}{self.target(path, params)}"
        problem = "no time left"
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                timeout = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, remaining), read=remaining)
                r = self.pool.request(method, url, body=body, headers=self.headers, timeout=timeout)
            except (NewConnectionError, ConnectTimeoutError) as exc:
                problem = f"cannot connect: {exc}"
                time.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))
                continue
            except HTTPError as exc:
                raise DCSUnavailable(f"consul: {method} {path}: {exc}; the outcome is unknown")
            reply = Reply(r.status, int(r.headers.get("X-Consul-Index") or 0), r.data)
            if reply.status >= 400 and "invalid session" in reply.text.lower():
                raise InvalidSession(reply.text)
            if reply.status >= 500 and (method == "GET" or "no cluster leader" in reply.text.lower()):
                problem = f"{reply.status} {reply.text}"
                time.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))
                continue
            if reply.status >= 500 or reply.status in (401, 403):
                raise DCSUnavailable(f"consul: {method} {path}: {reply.status} {reply.text}")
            return reply
        raise DCSUnavailable(f"consul: {method} {path}: {problem}")

    def blocking_get(self, path: str, params: dict[str, Any], wait_s: float) -> Reply:
        conn_class = HTTPSConnection if self.s.scheme == "https" else HTTPConnection
        extra: dict[str, Any] = self.tls if self.s.scheme == "https" else {}
        conn = conn_class(self.s.host, self.s.port, timeout=CONNECT_TIMEOUT_S, **extra)
        try:
            conn.connect()
            with self._lock:  # registered only once it has a socket, so that abort_watch() always cuts it
                if self._aborted:
                    raise DCSUnavailable("consul: closed")
                self._watch_conn = conn
            conn.timeout = wait_s + max(wait_s / 15, 1.0)  # urllib3 applies it to the socket before each read
            conn.request("GET", self.target(path, {**params, "wait": go_duration(wait_s)}), headers=self.headers)
            r = conn.getresponse()
            return Reply(r.status, int(r.headers.get("X-Consul-Index") or 0), r.data)
        finally:
            with self._lock:
                self._watch_conn = None
            conn.close()

    def abort_watch(self) -> None:
        """Cut the blocking query in flight, and refuse any later one (close() calls it)."""
        with self._lock:
            self._aborted = True
            conn = self._watch_conn
            sock = conn.sock if conn is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.abort_watch()
        self.pool.clear()

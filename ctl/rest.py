"""A small HTTP(S) client for the members' REST APIs: timeouts on every call, Basic auth and TLS from `ctl`."""

from __future__ import annotations

import base64
import http.client
import json
import platform
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.version import PATRONI_API_VERSION

DEFAULT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
ACTION_TIMEOUT = 60.0  # PATCH /config, POST /reload... : answered once the node's brain took the request
# POST /switchover, /failover and /restart answer when the action is over (about 2 x loop_wait for a switchover,
# up to primary_start_timeout for a restart); patronictl waits without a limit, havenctl for this long.
LONG_ACTION_TIMEOUT = 900.0
USER_AGENT = f"Patroni/{PATRONI_API_VERSION} Python/{platform.python_version()} {platform.system()}"  # D4


class RestError(Exception):
    """The member did not answer, or answered something other than the expected JSON."""


@dataclass(frozen=True)
class RestOptions:
    username: str | None = None
    password: str | None = None
    cacert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    insecure: bool = False
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: the status and the raw body."""

    status: int
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            raise RestError("the answer is not JSON")


def endpoint_url(api_url: str, endpoint: str) -> str:
    """http://host:port/patroni -> http://host:port/<endpoint>."""
    parts = urlsplit(api_url)
    return f"{parts.scheme or 'http'}://{parts.netloc}/{endpoint.lstrip('/')}"


class RestClient:
    def __init__(self, options: RestOptions) -> None:
        self.options = options
        self._context: ssl.SSLContext | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            context = ssl.create_default_context(cafile=self.options.cacert)
            if self.options.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.options.certfile:
                context.load_cert_chain(
                    self.options.certfile, self.options.keyfile, self.options.keyfile_password or None
                )
            self._context = context
        return self._context

    def _headers(self, has_body: bool) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if has_body:
            headers["Content-Type"] = "application/json"
        if self.options.username is not None:  # E5: always sent when configured
            token = f"{self.options.username}:{self.options.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        return headers

    def request(
        self, method: str, url: str, timeout: float | None = None, *, body: Any = None, connect_timeout: float = 0.0
    ) -> tuple[int, bytes]:
        """One request; `body` (any JSON value but None) is sent as JSON. `timeout` bounds each read once
        connected, `connect_timeout` (default: the same) the connection."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RestError(f"not an http(s) URL: {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise RestError(f"bad port in {url!r}")
        wait = self.options.timeout if timeout is None else timeout
        connect_wait = connect_timeout or wait
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        conn: http.client.HTTPConnection
        try:
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(
                    parts.hostname, port, timeout=connect_wait, context=self._ssl_context()
                )
            else:
                conn = http.client.HTTPConnection(parts.hostname, port, timeout=connect_wait)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(wait)
                headers = self._headers(payload is not None)
                if payload is None and method in ("POST", "PUT", "PATCH", "DELETE"):
                    headers["Content-Length"] = "0"
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            raise RestError(str(exc) or type(exc).__name__)

    def call(self, method: str, url: str, body: Any = None, *, timeout: float = ACTION_TIMEOUT) -> Reply:
        """An action on a member: any status is an answer; only a failure to talk raises RestError."""
        status, data = self.request(method.upper(), url, timeout, body=body, connect_timeout=CONNECT_TIMEOUT)
        return Reply(status, data)

    def get_json(self, url: str, timeout: float | None = None) -> Any:
        status, body = self.request("GET", url, timeout)
        if status != 200:
            raise RestError(f"HTTP {status}")
        try:
            return json.loads(body)
        except ValueError:
            raise RestError("the answer is not JSON")

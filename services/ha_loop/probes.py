"""Calls to the other members' REST APIs, in parallel, with a short deadline: the leader-race probe
(GET /patroni, A8, D4) and the failsafe call (POST /failsafe, C84, D33)."""

from __future__ import annotations

import http.client
import json
import platform
import socket
import ssl
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlparse

from services.ha_loop.views import PeerStatus
from shared.model import Cluster
from shared.version import PATRONI_API_VERSION

USER_AGENT = f"Patroni/{PATRONI_API_VERSION} Python/{platform.python_version()} {platform.system()}"
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")


def _request(
    method: str,
    url: str,
    timeout: float,
    path: str | None = None,
    body: bytes | None = None,
    auth: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """tls: the context for https members (shared/tls.py member_client_context)."""
    parsed = urlparse(url)
    host = parsed.hostname or "localhost"
    conn: http.client.HTTPConnection
    if parsed.scheme == "https":
        conn = http.client.HTTPSConnection(host, parsed.port, timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(host, parsed.port, timeout=timeout)
    headers = {"User-Agent": USER_AGENT, "Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if auth:
        headers["Authorization"] = auth
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.request(method, path or parsed.path or "/patroni", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(1 << 20)
    finally:
        conn.close()


def fetch_json(url: str, timeout: float, tls: ssl.SSLContext | None = None) -> Any:
    return json.loads(_request("GET", url, timeout, tls=tls)[1])


def _probe(name: str, api_url: str | None, timeout: float, tls: ssl.SSLContext | None) -> PeerStatus:
    if not api_url:
        return PeerStatus.unreachable(name)
    try:
        return PeerStatus.from_patroni(name, fetch_json(api_url, timeout, tls))
    except (OSError, ValueError, http.client.HTTPException):
        return PeerStatus.unreachable(name)


def probe_members(
    targets: Iterable[tuple[str, str | None]], timeout: float = 2.0, tls: ssl.SSLContext | None = None
) -> dict[str, PeerStatus]:
    """All (name, api_url) at once; whoever has not answered within `timeout` counts as unreachable (no retries)."""
    futures = {_pool.submit(_probe, name, url, timeout, tls): name for name, url in targets}
    done, _ = wait(futures, timeout=timeout + 0.5)
    result = {name: PeerStatus.unreachable(name) for name in futures.values()}
    for future in done:
        status = future.result()
        result[status.name] = status
    return result


def _failsafe_call(api_url: str, data: bytes, timeout: float, auth: str | None, tls: ssl.SSLContext | None) -> bool:
    """D33: success is exactly 200 with the body `Accepted`; one retry."""
    for _ in range(2):
        try:
            status, body = _request("POST", api_url, timeout, path="/failsafe", body=data, auth=auth, tls=tls)
        except (OSError, http.client.HTTPException):
            continue
        return status == 200 and body.decode(errors="replace") == "Accepted"
    return False


def call_failsafe(
    targets: Iterable[tuple[str, str]],
    body: Mapping[str, Any],
    auth: str | None = None,
    timeout: float = 2.0,
    tls: ssl.SSLContext | None = None,
) -> dict[str, bool]:
    """POST /failsafe to every (name, api_url) at once (C84)."""
    data = json.dumps(body, separators=(",", ":")).encode()
    futures = {_pool.submit(_failsafe_call, url, data, timeout, auth, tls): name for name, url in targets}
    done, _ = wait(futures, timeout=2 * timeout + 0.5)
    result = dict.fromkeys(futures.values(), False)
    for future in done:
        result[futures[future]] = bool(future.result())
    return result


def race_targets(cluster: Cluster, names: Iterable[str], failsafe: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """(name, api_url) of the members to probe; A15: a name only in /failsafe is reached at its listed api_url."""
    members = {m.name: m.api_url for m in cluster.members}
    return [(name, members[name] if name in members else failsafe.get(name)) for name in names]

"""The leader-race probe: GET /patroni of the other members, in parallel, with a short deadline (A8, D4)."""

from __future__ import annotations

import http.client
import json
import platform
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlparse

from services.ha_loop.views import PeerStatus
from shared.model import Member
from shared.version import PATRONI_API_VERSION

USER_AGENT = f"Patroni/{PATRONI_API_VERSION} Python/{platform.python_version()} {platform.system()}"
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")


def fetch_json(url: str, timeout: float) -> Any:
    parsed = urlparse(url)
    conn_cls = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parsed.hostname or "localhost", parsed.port, timeout=timeout)
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.request("GET", parsed.path or "/patroni", headers={"User-Agent": USER_AGENT, "Connection": "close"})
        response = conn.getresponse()
        data = response.read(1 << 20)
    finally:
        conn.close()
    return json.loads(data)


def _probe(member: Member, timeout: float) -> PeerStatus:
    if not member.api_url:
        return PeerStatus.unreachable(member.name)
    try:
        return PeerStatus.from_patroni(member.name, fetch_json(member.api_url, timeout))
    except (OSError, ValueError, http.client.HTTPException):
        return PeerStatus.unreachable(member.name)


def probe_members(members: Iterable[Member], timeout: float = 2.0) -> dict[str, PeerStatus]:
    """All members at once; whoever has not answered within `timeout` counts as unreachable (no retries)."""
    members = list(members)
    futures = {_pool.submit(_probe, m, timeout): m.name for m in members}
    done, _ = wait(futures, timeout=timeout + 0.5)
    result = {name: PeerStatus.unreachable(name) for name in futures.values()}
    for future in done:
        status = future.result()
        result[status.name] = status
    return result

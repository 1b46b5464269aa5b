"""GET /patroni of other members, in parallel, with a short timeout and no retry: the switchover pre-check (A29).

Anything but a JSON answer within the timeout counts as no answer (None); control_checks judges the answers.
"""

from __future__ import annotations

import http.client
import json
import platform
import socket
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

from shared.model import Member
from shared.tls import member_client_context
from shared.version import PATRONI_API_VERSION

USER_AGENT = f"Patroni/{PATRONI_API_VERSION} Python/{platform.python_version()} {platform.system()}"
PROBE_TIMEOUT_S = 2.0
MAX_ANSWER_BYTES = 1 << 20


def fetch_status(api_url: str, timeout: float, tls: ssl.SSLContext | None = None) -> Any:
    """The parsed JSON of GET <api_url>; raises OSError, ValueError or HTTPException.
    tls: the context for https members (shared/tls.py member_client_context)."""
    parts = urlsplit(api_url)
    host, port = parts.hostname or "localhost", parts.port
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls or member_client_context({}))
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.connect()
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.request("GET", parts.path or "/patroni", headers={"User-Agent": USER_AGENT, "Connection": "close"})
        data = conn.getresponse().read(MAX_ANSWER_BYTES)
    finally:
        conn.close()
    return json.loads(data)


class PeerProber:
    """Asks members for their GET /patroni at once; whoever has not answered within the timeout is None."""

    def __init__(self, workers: int = 8, tls: ssl.SSLContext | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restapi-probe")
        self.tls = tls  # replaced by a reload (D31)

    def _one(self, member: Member, timeout: float) -> Any:
        if not member.api_url:
            return None
        try:
            return fetch_status(member.api_url, timeout, self.tls)
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def __call__(self, members: Sequence[Member], timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
        futures = {self._pool.submit(self._one, member, timeout): member.name for member in members}
        done, _ = wait(futures, timeout=timeout + 0.5)
        return {name: (future.result() if future in done else None) for future, name in futures.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

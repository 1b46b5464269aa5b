"""Free TCP ports on loopback, never the well-known defaults."""

from __future__ import annotations

import socket

_AVOID = {2181, 2379, 2380, 5432, 5433, 5434, 8008, 8009, 8010, 8080, 8500}
_handed_out: set[int] = set()


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _AVOID and port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")

"""One ZooKeeper session on kazoo: a client that sends no request while disconnected, TCP connects bounded by
the connect timeout, pings bounded by the read timeout (B31), and the session's state and watch events handed
to its backend."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import ConnectionLoss
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent

if TYPE_CHECKING:
    from shared.dcs.zookeeper.backend import ZooKeeperBackend

log = logging.getLogger("shared.dcs.zookeeper")  # one logger for the package's modules


def time_left(deadline: float) -> float:
    """The time left before `deadline` (time.monotonic()), as a kazoo timeout."""
    return max(0.001, deadline - time.monotonic())


class NotSent(ConnectionLoss):  # type: ignore[misc]
    """The request was not sent: there was no connection."""


class _Client(KazooClient):  # type: ignore[misc]
    """kazoo queues requests made while reconnecting and sends them later: here they fail at once."""

    def _call(self, request: Any, async_object: Any) -> Any:
        if self._state != KeeperState.CONNECTED:
            async_object.set_exception(NotSent())
            return False
        return super()._call(request, async_object)


class _Handler(SequentialThreadingHandler):  # type: ignore[misc]
    """TCP connects time out after `connect_s()`, not after the whole session timeout."""

    def __init__(self, connect_s: Callable[[], float]) -> None:
        super().__init__()
        self.connect_s = connect_s

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = min(float(kwargs.get("timeout") or 60.0), self.connect_s())
        return super().create_connection(*args, **kwargs)


class Session:
    """One kazoo client and its ZooKeeper session. `gen` tells its events from those of a replaced one."""

    def __init__(self, backend: ZooKeeperBackend, gen: int, ttl: float, hosts: tuple[str, ...]) -> None:
        self.backend, self.gen, self.ttl, self.hosts = backend, gen, ttl, hosts
        self.live = threading.Event()
        self.epoch = 0  # counts state changes: a cache loaded at an older epoch is stale
        self.session_id: int | None = None
        self.endpoint: str | None = None  # host:port we are connected to
        self.client = _Client(
            hosts=",".join(hosts),
            timeout=ttl,
            handler=_Handler(lambda: backend.timings(ttl).connect_s),
            default_acl=list(backend.settings.acls) or None,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 1.5, "max_jitter": 0.1, "max_delay": 1.0},
            **backend.settings.client_kwargs(),
        )
        kazoo_connect = self.client._connection._connect

        def connect(host: str, hostip: str, port: int) -> tuple[float, float]:
            self.endpoint = f"{host}:{port}"
            read_ms, connect_ms = kazoo_connect(host, hostip, port)
            if read_ms * 1.5 > ttl * 1000 + 1:  # kazoo's read timeout is 2/3 of the negotiated session timeout
                log.warning("zookeeper: %s allows no session shorter than %.1fs (ttl %gs)", host, read_ms * 1.5e-3, ttl)
            return min(read_ms, backend.timings(ttl).read_s * 1000), connect_ms

        # kazoo derives the ping timeout from the session timeout only; Patroni does the same (B31).
        self.client._connection._connect = connect
        self.client.add_listener(self.on_state)

    def on_state(self, state: str) -> bool:
        """kazoo's connection thread: must not block."""
        self.epoch += 1
        if state == KazooState.CONNECTED:
            client_id = self.client.client_id
            self.session_id = client_id[0] if client_id else None
            self.live.set()
        else:
            self.live.clear()
        self.backend._session_state(self, state)
        return False

    def on_watch(self, event: WatchedEvent) -> None:
        if event.type != EventType.NONE and event.path:
            self.backend._events.put((self.gen, event.path))

    def discard(self) -> None:
        """Close the session (its ephemeral znodes vanish) without waiting for it."""
        self.client.remove_listener(self.on_state)
        threading.Thread(target=self.stop, name="zk-close", daemon=True).start()

    def stop(self) -> None:
        try:
            self.client.stop()
            self.client.close()
        except Exception as exc:  # a client that never connected, a writer that would not close...
            log.debug("zookeeper: closing a session: %r", exc)

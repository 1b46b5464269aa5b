"""ZeroMQ helpers: a ROUTER server that never dies of a bad message, a DEALER client that never waits
forever, and PUB/SUB for full-state events.

Every socket lives on an ipc:// path in the node's run directory. The socket file's mode and group
decide who may connect (see DESIGN.md "Messages").
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import zmq

from shared.protocol import envelope
from shared.protocol.endpoints import ipc
from shared.protocol.envelope import Event, Reply, Request
from shared.protocol.errors import ErrorCode, OpError, ProtocolError, RemoteError
from shared.protocol.schema import OpSchema

Handler = Callable[[dict[str, Any], Request], dict[str, Any]]

log = logging.getLogger(__name__)

# Frames above this are dropped by libzmq itself (the peer is disconnected); frames between
# MAX_MESSAGE_BYTES and this get an error reply.
_ZMQ_MAXMSGSIZE = 2 * envelope.MAX_MESSAGE_BYTES


class SocketInUse(RuntimeError):
    """Another live process already serves this socket path."""


def _guard(path: str) -> int:
    """Hold an exclusive lock beside the socket: a second bind() on an ipc path would silently steal it."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SocketInUse(f"{path} is served by another process")
    return fd


def _restrict(sock: zmq.Socket[bytes], uids: Iterable[int] | None) -> None:
    """Accept ipc peers only with these user ids (peer credentials, checked by libzmq)."""
    for uid in uids or ():
        sock.setsockopt(zmq.IPC_FILTER_UID, uid)


def _set_access(path: str, mode: int, group: int | None) -> None:
    if group is not None and group >= 0:
        try:
            os.chown(path, -1, group)
        except PermissionError:
            log.warning("cannot give %s to group %d", path, group)
    os.chmod(path, mode)


class RouterServer:
    """Serves requests on one ROUTER socket. The owner polls `socket` and calls `process()`."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        path: str,
        handlers: Mapping[str, Handler],
        schemas: Mapping[str, OpSchema] | None = None,
        *,
        mode: int = 0o660,
        group: int | None = None,
        allowed_uids: Iterable[int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._handlers = dict(handlers)
        self._schemas = dict(schemas or {})
        self._clock = clock
        self._lock_fd = _guard(path)
        self.socket: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, _ZMQ_MAXMSGSIZE)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)
        _restrict(self.socket, allowed_uids)
        self.socket.bind(ipc(path))
        _set_access(path, mode, group)
        self.served = 0
        self.rejected = 0

    def process(self, limit: int = 100) -> int:
        """Answer every request waiting on the socket (at most `limit`); return how many."""
        count = 0
        while count < limit:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            count += 1
            if len(frames) < 2:
                self.rejected += 1
                continue
            self._handle(tuple(frames[:-1]), frames[-1])
        return count

    def _handle(self, route: tuple[bytes, ...], payload: bytes) -> None:
        """One request: `route` is the peer's identity and the frames before the payload."""
        self._send(route, self._dispatch(payload))

    def _send(self, route: tuple[bytes, ...], reply: Reply) -> None:
        try:
            self.socket.send_multipart([*route, envelope.encode_reply(reply)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer went away
            log.debug("reply to %r dropped: %s", route[:1], exc)

    def _dispatch(self, payload: bytes) -> Reply:
        try:
            req = envelope.decode_request(payload)
        except ProtocolError as exc:
            self.rejected += 1
            log.warning("rejected a malformed request: %s", exc.message)
            return Reply(
                id=envelope.request_id_of(payload) or "", ok=False, error_code=exc.code, error_message=exc.message
            )
        handler = self._handlers.get(req.op)
        if handler is None:
            self.rejected += 1
            return Reply(id=req.id, ok=False, error_code=ErrorCode.UNKNOWN_OP, error_message=f"unknown op {req.op!r}")
        if req.is_expired(self._clock()):
            return Reply(
                id=req.id,
                ok=False,
                error_code=ErrorCode.DEADLINE_EXCEEDED,
                error_message=f"{req.op}: deadline passed before the work started",
            )
        try:
            schema = self._schemas.get(req.op)
            if schema is not None:
                schema.validate(req.body)
            body = handler(req.body, req)
        except (OpError, ProtocolError) as exc:
            return Reply(id=req.id, ok=False, error_code=exc.code, error_message=exc.message)
        except Exception:
            log.exception("handler for %s failed", req.op)
            return Reply(id=req.id, ok=False, error_code=ErrorCode.INTERNAL, error_message=f"{req.op} failed")
        self.served += 1
        return Reply(id=req.id, ok=True, body=body)

    def close(self) -> None:
        self.socket.close(0)
        os.close(self._lock_fd)


class Client:
    """A DEALER for one server. One thread per Client. Calls never wait past their timeout."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], path: str) -> None:
        self.path = path
        self._ctx = ctx
        self._socket = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # do not queue requests for a server that is not there
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        sock.setsockopt(zmq.MAXMSGSIZE, _ZMQ_MAXMSGSIZE)
        sock.connect(ipc(self.path))
        return sock

    def call(self, op: str, body: dict[str, Any] | None = None, *, timeout: float) -> dict[str, Any]:
        """Send one request; return the reply body or raise RemoteError."""
        deadline = time.time() + timeout
        req = Request(op=op, body=body or {}, deadline=deadline)
        # A connection being (re)established after a server restart takes a few ms: retry the send.
        while True:
            try:
                self._socket.send(envelope.encode_request(req), zmq.NOBLOCK)
                break
            except zmq.Again:
                if time.time() + 0.01 >= deadline:
                    raise RemoteError(ErrorCode.UNAVAILABLE, f"{op}: no connection to {self.path}")
                time.sleep(0.01)
        while True:
            remaining = deadline - time.time()
            if remaining <= 0 or not self._socket.poll(int(remaining * 1000) + 1, zmq.POLLIN):
                if time.time() >= deadline:
                    raise RemoteError(ErrorCode.DEADLINE_EXCEEDED, f"{op}: no answer within {timeout:.3f}s")
                continue
            try:
                reply = envelope.decode_reply(self._socket.recv(zmq.NOBLOCK))
            except ProtocolError as exc:
                log.warning("malformed reply from %s: %s", self.path, exc.message)
                continue
            except zmq.Again:
                continue
            if reply.id != req.id:
                continue  # the late answer to an earlier call that timed out
            if reply.ok:
                return reply.body
            raise RemoteError(reply.error_code or ErrorCode.INTERNAL, reply.error_message or "")

    def close(self) -> None:
        self._socket.close(0)


class Publisher:
    """Publishes full-state events; subscribers that miss one get the next (see the heartbeat)."""

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        path: str,
        *,
        mode: int = 0o660,
        group: int | None = None,
        allowed_uids: Iterable[int] | None = None,
    ) -> None:
        self.path = path
        self._lock_fd = _guard(path)
        self.socket: zmq.Socket[bytes] = ctx.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 100)
        _restrict(self.socket, allowed_uids)
        self.socket.bind(ipc(path))
        _set_access(path, mode, group)
        self._seq = 0

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        self._seq += 1
        data = envelope.encode_event(Event(topic=topic, seq=self._seq, ts=time.time(), body=body))
        try:
            self.socket.send_multipart([topic.encode(), data], zmq.NOBLOCK)
        except zmq.Again:  # PUB never blocks; this only happens while the context terminates
            pass

    def close(self) -> None:
        self.socket.close(0)
        os.close(self._lock_fd)


class Subscriber:
    """Receives events from one or more publishers; malformed events are dropped and logged."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], paths: Iterable[str], topics: Iterable[str]) -> None:
        self.socket: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, 100)
        self.socket.setsockopt(zmq.MAXMSGSIZE, _ZMQ_MAXMSGSIZE)
        self.socket.setsockopt(zmq.RECONNECT_IVL, 50)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for path in paths:
            self.socket.connect(ipc(path))
        self.dropped = 0

    def drain(self) -> list[Event]:
        """Every event waiting now, oldest first."""
        events: list[Event] = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return events
            try:
                event = envelope.decode_event(frames[-1])
            except ProtocolError as exc:
                self.dropped += 1
                log.warning("dropped a malformed event: %s", exc.message)
                continue
            if len(frames) >= 2 and frames[0].decode(errors="replace") != event.topic:
                self.dropped += 1
                log.warning("dropped an event whose topic frame does not match its envelope")
                continue
            events.append(event)

    def close(self) -> None:
        self.socket.close(0)

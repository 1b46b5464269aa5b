"""A ROUTER whose handlers may answer later: a short request that needs SQL (pg.set_sync waits until PostgreSQL
shows the new value; pg.sync_slots creates and drops slots) must not make the loop wait, so its handler takes a
Pending, hands the work to a thread, and returns DEFERRED; the thread's result is sent from the loop with
answer()."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import zmq

from shared.protocol import envelope
from shared.protocol.envelope import Reply
from shared.protocol.errors import ErrorCode
from shared.protocol.transport import RouterServer

log = logging.getLogger(__name__)

DEFERRED: dict[str, Any] = {}  # returned by a handler that answers later (compared by identity)


@dataclass(frozen=True)
class Pending:
    """Where a deferred reply goes."""

    frames: tuple[bytes, ...]  # the peer's identity and route
    request_id: str
    op: str


class DeferringRouter(RouterServer):
    _current: tuple[bytes, ...] = ()

    def process(self, limit: int = 100) -> int:
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
            self._current = tuple(frames[:-1])
            try:
                reply = self._dispatch(frames[-1])
            finally:
                self._current = ()
            if reply.ok and reply.body is DEFERRED:
                continue
            self._send(tuple(frames[:-1]), reply)
        return count

    def defer(self, request_id: str, op: str) -> Pending:
        """Only inside a handler: the reply to the request being handled will be sent by answer()."""
        assert self._current, "defer() outside a handler"
        return Pending(self._current, request_id, op)

    def answer(
        self, pending: Pending, body: dict[str, Any] | None = None, error: tuple[ErrorCode, str] | None = None
    ) -> None:
        if error is not None:
            reply = Reply(id=pending.request_id, ok=False, error_code=error[0], error_message=error[1])
        else:
            reply = Reply(id=pending.request_id, ok=True, body=body or {})
        self._send(pending.frames, reply)

    def _send(self, frames: tuple[bytes, ...], reply: Reply) -> None:
        try:
            self.socket.send_multipart([*frames, envelope.encode_reply(reply)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer went away
            log.debug("reply to %r dropped: %s", frames[:1], exc)

"""A ROUTER whose handlers may answer later: a short request that needs SQL (pg.set_sync waits until PostgreSQL
shows the new value; pg.sync_slots creates and drops slots) must not make the loop wait, so its handler takes a
Pending, hands the work to a thread, and returns DEFERRED; the thread's result is sent from the loop with
answer()."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.protocol.envelope import Reply
from shared.protocol.errors import ErrorCode
from shared.protocol.transport import RouterServer

DEFERRED: dict[str, Any] = {}  # returned by a handler that answers later (compared by identity)


@dataclass(frozen=True)
class Pending:
    """Where a deferred reply goes."""

    frames: tuple[bytes, ...]  # the peer's identity and route
    request_id: str
    op: str


class DeferringRouter(RouterServer):
    _current: tuple[bytes, ...] = ()

    def _handle(self, route: tuple[bytes, ...], payload: bytes) -> None:
        self._current = route
        try:
            reply = self._dispatch(payload)
        finally:
            self._current = ()
        if reply.ok and reply.body is DEFERRED:
            return
        self._send(route, reply)

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

"""The msgpack envelope of every request, reply and event.

Request:  {"v": 1, "id": str, "op": str, "deadline": float (epoch seconds), "body": map}
Reply:    {"v": 1, "id": <request id>, "ok": bool, "body": map} or {..., "ok": false, "error": {code, message}}
Event:    {"v": 1, "topic": "<svc>.<event>", "seq": int, "ts": float, "body": map}

Unknown fields are ignored, so that a newer peer can add fields without breaking an older one.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shared.protocol.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
# A cluster view of a few hundred members is well under 1 MiB; anything bigger is a mistake or an attack.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

_ids = itertools.count(1)
_id_prefix = f"{os.getpid():x}-{int(time.time() * 1000) & 0xFFFFFF:x}"


def new_request_id() -> str:
    return f"{_id_prefix}-{next(_ids)}"


@dataclass(frozen=True)
class Request:
    op: str
    body: dict[str, Any]
    deadline: float
    id: str = field(default_factory=new_request_id)

    def is_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.deadline


@dataclass(frozen=True)
class Reply:
    id: str
    ok: bool
    body: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Event:
    topic: str
    seq: int
    ts: float
    body: dict[str, Any]


def pack(value: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpack_map(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"not a msgpack message: {type(exc).__name__}")
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message is not a map")
    return value


def encode_request(req: Request) -> bytes:
    return pack({"v": PROTOCOL_VERSION, "id": req.id, "op": req.op, "deadline": req.deadline, "body": req.body})


def decode_request(data: bytes) -> Request:
    msg = unpack_map(data)
    req_id, op, deadline, body = msg.get("id"), msg.get("op"), msg.get("deadline"), msg.get("body", {})
    if not isinstance(req_id, str) or not req_id:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "missing request id")
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"unsupported protocol version {msg.get('v')!r}")
    if not isinstance(op, str) or not op:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "missing op")
    if not isinstance(deadline, int | float) or isinstance(deadline, bool):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "missing deadline")
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.INVALID_BODY, "body is not a map")
    return Request(op=op, body=body, deadline=float(deadline), id=req_id)


def request_id_of(data: bytes) -> str | None:
    """Best effort: the id of a message that failed to decode, so the error reply can carry it."""
    try:
        msg = msgpack.unpackb(data, raw=False)
    except Exception:
        return None
    if isinstance(msg, dict) and isinstance(msg.get("id"), str):
        return str(msg["id"])
    return None


def encode_reply(reply: Reply) -> bytes:
    msg: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": reply.id, "ok": reply.ok}
    if reply.ok:
        msg["body"] = reply.body
    else:
        msg["error"] = {"code": reply.error_code, "message": reply.error_message}
    return pack(msg)


def decode_reply(data: bytes) -> Reply:
    msg = unpack_map(data)
    req_id, ok = msg.get("id"), msg.get("ok")
    if not isinstance(req_id, str) or not isinstance(ok, bool):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "reply without id or ok")
    if ok:
        body = msg.get("body", {})
        if not isinstance(body, dict):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "reply body is not a map")
        return Reply(id=req_id, ok=True, body=body)
    error = msg.get("error") or {}
    if not isinstance(error, dict):
        error = {}
    return Reply(
        id=req_id,
        ok=False,
        error_code=str(error.get("code") or ErrorCode.INTERNAL),
        error_message=str(error.get("message") or ""),
    )


def encode_event(event: Event) -> bytes:
    return pack({"v": PROTOCOL_VERSION, "topic": event.topic, "seq": event.seq, "ts": event.ts, "body": event.body})


def decode_event(data: bytes) -> Event:
    msg = unpack_map(data)
    topic, seq, ts, body = msg.get("topic"), msg.get("seq"), msg.get("ts"), msg.get("body")
    if not isinstance(topic, str) or not isinstance(seq, int) or not isinstance(ts, int | float):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "event without topic, seq or ts")
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "event body is not a map")
    return Event(topic=topic, seq=seq, ts=float(ts), body=body)

"""The transport never dies of bad input and never waits forever (DESIGN.md "Messages")."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from shared.protocol import envelope
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError, RemoteError
from shared.protocol.ops import DCS
from shared.protocol.transport import Client, Publisher, RouterServer, SocketInUse, Subscriber


@pytest.fixture
def ctx() -> Any:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


class Served:
    """A ROUTER served by a background thread, as a service's loop would."""

    def __init__(self, ctx: Any, path: str, handlers: dict[str, Any], schemas: Any = None) -> None:
        self.server = RouterServer(ctx, path, handlers, schemas)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.server.socket.poll(50):
                self.server.process()

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        self.server.close()


def echo(body: dict[str, Any], req: Request) -> dict[str, Any]:
    return {"echo": body}


def refuse(body: dict[str, Any], req: Request) -> dict[str, Any]:
    raise OpError(ErrorCode.PRECONDITION_FAILED, "no")


def crash(body: dict[str, Any], req: Request) -> dict[str, Any]:
    raise RuntimeError("bug")


def raw_request(ctx: Any, path: str, payload: bytes, timeout: float = 2.0) -> envelope.Reply:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{path}")
    sock.send(payload)
    assert sock.poll(int(timeout * 1000)), "no reply"
    reply = envelope.decode_reply(sock.recv())
    sock.close(0)
    return reply


def test_request_reply_round_trip(ctx: Any, tmp_path: Path) -> None:
    served = Served(ctx, str(tmp_path / "s.sock"), {"t.echo": echo})
    try:
        client = Client(ctx, served.server.path)
        assert client.call("t.echo", {"a": 1}, timeout=2) == {"echo": {"a": 1}}
        client.close()
    finally:
        served.close()


def test_handler_errors_become_error_replies_and_the_server_goes_on(ctx: Any, tmp_path: Path) -> None:
    served = Served(ctx, str(tmp_path / "s.sock"), {"t.echo": echo, "t.refuse": refuse, "t.crash": crash})
    try:
        client = Client(ctx, served.server.path)
        with pytest.raises(RemoteError) as refused:
            client.call("t.refuse", {}, timeout=2)
        assert refused.value.code == ErrorCode.PRECONDITION_FAILED
        with pytest.raises(RemoteError) as crashed:
            client.call("t.crash", {}, timeout=2)
        assert crashed.value.code == ErrorCode.INTERNAL
        with pytest.raises(RemoteError) as unknown:
            client.call("t.nope", {}, timeout=2)
        assert unknown.value.code == ErrorCode.UNKNOWN_OP
        assert client.call("t.echo", {"still": "alive"}, timeout=2) == {"echo": {"still": "alive"}}
        client.close()
    finally:
        served.close()


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"\xc1 not msgpack", ErrorCode.BAD_MESSAGE),
        (msgpack.packb([1, 2, 3]), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"v": 1, "id": "x", "op": "t.echo"}), ErrorCode.BAD_MESSAGE),  # no deadline
        (msgpack.packb({"v": 99, "id": "x", "op": "t.echo", "deadline": 1e12}), ErrorCode.BAD_MESSAGE),
        (msgpack.packb({"v": 1, "id": "x", "op": "t.echo", "deadline": 1e12, "body": [1]}), ErrorCode.INVALID_BODY),
        (msgpack.packb({"v": 1, "id": "x", "op": "t.echo", "deadline": 1.0, "body": {}}), ErrorCode.DEADLINE_EXCEEDED),
        (b"\0" * (envelope.MAX_MESSAGE_BYTES + 10), ErrorCode.BAD_MESSAGE),
    ],
    ids=["garbage", "not-a-map", "no-deadline", "wrong-version", "body-not-map", "expired", "oversized"],
)
def test_malformed_requests_get_an_error_reply(ctx: Any, tmp_path: Path, payload: bytes, code: ErrorCode) -> None:
    served = Served(ctx, str(tmp_path / "s.sock"), {"t.echo": echo})
    try:
        reply = raw_request(ctx, served.server.path, payload)
        assert not reply.ok and reply.error_code == code
        assert Client(ctx, served.server.path).call("t.echo", {}, timeout=2) == {"echo": {}}
    finally:
        served.close()


def test_schema_violations_are_invalid_body(ctx: Any, tmp_path: Path) -> None:
    served = Served(ctx, str(tmp_path / "s.sock"), {"dcs.take_leader": echo}, DCS)
    try:
        client = Client(ctx, served.server.path)
        with pytest.raises(RemoteError) as exc:
            client.call("dcs.take_leader", {"name": 1, "ttl": 30}, timeout=2)
        assert exc.value.code == ErrorCode.INVALID_BODY and "'name'" in exc.value.message
        assert client.call("dcs.take_leader", {"name": "n1", "ttl": 30}, timeout=2)["echo"]["name"] == "n1"
    finally:
        served.close()


def test_a_call_to_an_absent_server_fails_within_its_timeout(ctx: Any, tmp_path: Path) -> None:
    client = Client(ctx, str(tmp_path / "nobody.sock"))
    started = time.monotonic()
    with pytest.raises(RemoteError) as exc:
        client.call("t.echo", {}, timeout=0.3)
    assert exc.value.code == ErrorCode.UNAVAILABLE
    assert time.monotonic() - started < 1.0


def test_a_second_server_on_the_same_path_is_refused(ctx: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    first = RouterServer(ctx, path, {})
    try:
        with pytest.raises(SocketInUse):
            RouterServer(ctx, path, {})
    finally:
        first.close()


def test_events_reach_subscribers_and_malformed_ones_are_dropped(ctx: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "p.pub")
    pub = Publisher(ctx, path)
    sub = Subscriber(ctx, [path], ["x.state"])
    raw = ctx.socket(zmq.PUB)
    raw_path = str(tmp_path / "raw.pub")
    raw.bind(f"ipc://{raw_path}")
    sub.socket.connect(f"ipc://{raw_path}")
    try:
        events: list[Any] = []
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:  # the subscription takes a moment to propagate
            pub.publish("x.state", {"n": 1})
            raw.send_multipart([b"x.state", b"\xc1garbage"])
            sub.socket.poll(50)
            events = sub.drain()
        assert events and events[0].body == {"n": 1} and events[0].topic == "x.state"
        deadline = time.monotonic() + 2
        while sub.dropped == 0 and time.monotonic() < deadline:
            raw.send_multipart([b"x.state", b"\xc1garbage"])
            sub.socket.poll(50)
            sub.drain()
        assert sub.dropped > 0
    finally:
        raw.close(0)
        pub.close()
        sub.close()

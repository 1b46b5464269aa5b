"""watchdogd as a program, over its ipc socket (docs/protocol.md, "watchdogd"): a test device path (a regular
file and a FIFO) sees the keepalives and the magic 'V'; an unusable fence is refused in required mode and
reported in automatic mode; malformed messages get error replies and the service goes on.
The software fence against a real PostgreSQL is in test_watchdogd_fence.py."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml
import zmq

from shared.protocol.endpoints import Service, router_path
from shared.protocol.envelope import MAX_MESSAGE_BYTES
from shared.protocol.errors import ErrorCode, RemoteError
from shared.protocol.transport import Client
from tests.support.pg_helpers import pg_user_env, pg_user_popen_kwargs, stop_process
from tests.support.ports import free_port
from tests.support.postgres import is_root, make_shared_tmpdir
from tests.support.waiting import wait_until

PYTHON = Path(sys.executable)


class Watchdogd:
    """One watchdogd process with its own run directory; `as_pg_user` runs it as the PostgreSQL user."""

    def __init__(self, base: Path, name: str, watchdog: dict[str, Any], data_dir: str, *, as_pg_user: bool = False):
        self.dir = base / name
        self.dir.mkdir(mode=0o755)
        if as_pg_user and is_root():
            os.chown(self.dir, *_pg_ids())
        self.log_path = self.dir / "watchdogd.log"
        self.config_path = self.dir / "haven.yml"
        port = free_port()
        config = {
            "name": name,
            "scope": "wdtest",
            "raft": {"self_addr": f"127.0.0.1:{free_port()}"},
            "restapi": {"listen": f"127.0.0.1:{free_port()}", "connect_address": f"127.0.0.1:{free_port()}"},
            "postgresql": {"data_dir": data_dir, "listen": f"127.0.0.1:{port}", "connect_address": f"127.0.0.1:{port}"},
            "watchdog": watchdog,
            "haven": {"run_dir": str(self.dir)},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.ctx: zmq.Context[Any] = zmq.Context()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(PYTHON), "-m", "services.watchdogd", "--config", str(self.config_path), "--text-log"],
                cwd=self.dir,
                env=pg_user_env(self.dir) if as_pg_user else None,
                stdout=log,
                stderr=subprocess.STDOUT,
                **(pg_user_popen_kwargs() if as_pg_user else {}),
            )
        self.sock = router_path(str(self.dir), Service.WATCHDOGD)
        self.client = Client(self.ctx, self.sock)
        wait_until(self.status, 15, what=f"watchdogd {name} to answer")

    def call(self, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.client.call(op, body or {}, timeout=3)

    def status(self) -> dict[str, Any]:
        return self.call("wd.status")

    def error(self, op: str, body: dict[str, Any] | None = None) -> RemoteError:
        with pytest.raises(RemoteError) as info:
            self.call(op, body)
        return info.value

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        stop_process(self.proc)
        self.client.close()
        self.ctx.destroy(linger=0)


def _pg_ids() -> tuple[int, int]:
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


@pytest.fixture
def base() -> Iterator[Path]:
    path = make_shared_tmpdir("haven-wd-")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def started(base: Path) -> Iterator[list[Watchdogd]]:
    procs: list[Watchdogd] = []
    yield procs
    for p in procs:
        p.close()


def _start(started: list[Watchdogd], *args: Any, **kwargs: Any) -> Watchdogd:
    wd = Watchdogd(*args, **kwargs)
    started.append(wd)
    return wd


def test_a_test_device_file_sees_keepalives_and_the_magic_close(base: Path, started: list[Watchdogd]) -> None:
    device = base / "watchdog"
    device.touch()
    wd = _start(started, base, "dev", {"mode": "automatic", "device": str(device)}, str(base / "data"))
    reply = wd.call("wd.arm", {"timeout": 10})
    assert (reply["active"], reply["driver"], reply["timeout"]) == (True, "device", None)
    assert "cannot set the timeout" in reply["reason"] and "unknown" in reply["reason"]  # ENOTTY on a file
    assert device.read_bytes() == b"1"  # arming feeds at once
    for _ in range(3):
        assert wd.call("wd.keepalive")["active"] is True
    assert device.read_bytes() == b"1111"
    status = wd.status()
    assert {k: status[k] for k in ("mode", "driver", "armed", "active", "healthy", "identity")} == {
        "mode": "automatic", "driver": "device", "armed": True, "active": True, "healthy": True, "identity": None,
    }  # fmt: skip
    assert wd.call("wd.disarm") == {"active": False}
    assert device.read_bytes() == b"1111V"
    assert wd.error("wd.keepalive").code == ErrorCode.PRECONDITION_FAILED
    assert device.read_bytes() == b"1111V"  # nothing else happened


def test_a_fifo_device_is_fed_through_its_reader(base: Path, started: list[Watchdogd]) -> None:
    fifo = base / "watchdog.fifo"
    os.mkfifo(fifo)
    wd = _start(started, base, "fifo", {"mode": "auto", "device": str(fifo)}, str(base / "data"))
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    seen = bytearray()

    def received(expected: bytes) -> bool:
        try:
            seen.extend(os.read(reader, 64))
        except BlockingIOError:
            pass
        return bytes(seen) == expected

    try:
        assert wd.call("wd.arm", {"timeout": 5})["driver"] == "device"
        wd.call("wd.keepalive")
        wait_until(lambda: received(b"11"), 5, interval=0.01, what="two keepalives in the FIFO")
        wd.call("wd.disarm")
        wait_until(lambda: received(b"11V"), 5, interval=0.01, what="the magic close in the FIFO")
    finally:
        os.close(reader)


def test_required_mode_refuses_a_device_whose_timeout_is_unknown(base: Path, started: list[Watchdogd]) -> None:
    device = base / "watchdog"
    device.touch()
    wd = _start(started, base, "req", {"mode": "require", "device": str(device)}, str(base / "data"))
    err = wd.error("wd.arm", {"timeout": 10})
    assert err.code == ErrorCode.UNAVAILABLE and "unknown" in err.message
    assert device.read_bytes() == b"V"  # opened, found wanting, closed again
    status = wd.status()
    assert (status["mode"], status["armed"], status["healthy"]) == ("required", False, False)
    wait_until(lambda: "Configuration requires watchdog" in wd.log(), 5, what="the log line")  # logs are async


def _root_owned_data_dir(base: Path) -> tuple[str, bool]:
    """A data directory watchdogd cannot guard: it runs as another user than the directory's owner."""
    if is_root():
        path = base / "rootowned"
        path.mkdir(mode=0o755)
        return str(path / "data"), True  # watchdogd runs as postgres
    return "/", False  # a non-root test run: / belongs to root


def test_required_mode_answers_an_error_when_the_fence_is_unusable(base: Path, started: list[Watchdogd]) -> None:
    data_dir, as_pg = _root_owned_data_dir(base)
    device = str(base / "no-such-watchdog")
    wd = _start(started, base, "req", {"mode": "required", "device": device}, data_dir, as_pg_user=as_pg)
    err = wd.error("wd.arm", {"timeout": 10})
    assert err.code == ErrorCode.UNAVAILABLE
    assert "software fence unusable" in err.message and "belongs to uid 0" in err.message
    status = wd.status()
    assert (status["armed"], status["active"], status["healthy"]) == (False, False, False)
    assert wd.error("wd.keepalive").code == ErrorCode.PRECONDITION_FAILED
    line = f"watchdog device {device} unavailable (No such file or directory); using the software fence"
    wait_until(lambda: line in wd.log(), 5, what="the log line")  # log records are written by a background thread


def test_automatic_mode_answers_inactive_with_the_reason(base: Path, started: list[Watchdogd]) -> None:
    data_dir, as_pg = _root_owned_data_dir(base)
    wd = _start(started, base, "auto", {"mode": "automatic", "driver": "software"}, data_dir, as_pg_user=as_pg)
    reply = wd.call("wd.arm", {"timeout": 10})
    assert reply["active"] is False and "belongs to uid 0" in reply["reason"]
    assert wd.call("wd.keepalive") == {"active": False, "deadline": None}
    status = wd.status()
    assert (status["armed"], status["active"], status["healthy"], status["driver"]) == (True, False, True, None)
    assert "using the software fence" not in wd.log()  # the software driver never looks for a device


def test_malformed_messages_get_error_replies_and_the_service_goes_on(base: Path, started: list[Watchdogd]) -> None:
    wd = _start(started, base, "bad", {"mode": "off"}, str(base / "data"))
    raw = wd.ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"ipc://{wd.sock}")
    try:
        oversized = b"\x00" * (MAX_MESSAGE_BYTES + 1024)
        for payload in (b"\xc1not msgpack", msgpack.packb([1, 2, 3]), msgpack.packb({"v": 1, "id": "x"}), oversized):
            raw.send(payload)
            assert raw.poll(3000), "no reply to a malformed request"
            reply = msgpack.unpackb(raw.recv())
            assert reply["ok"] is False and reply["error"]["code"] == "bad_message"
    finally:
        raw.close(0)
    assert wd.error("wd.explode").code == ErrorCode.UNKNOWN_OP
    assert wd.error("wd.arm", {"timeout": "soon"}).code == ErrorCode.INVALID_BODY
    assert wd.error("wd.arm", {}).code == ErrorCode.INVALID_BODY
    assert wd.error("wd.arm", {"timeout": -3}).code == ErrorCode.INVALID_BODY
    assert wd.call("wd.arm", {"timeout": 10}) == {"active": False, "reason": "watchdog is off", "driver": None,
                                                  "timeout": None, "deadline": None}  # fmt: skip
    assert wd.status()["mode"] == "off" and wd.proc.poll() is None

"""watchdogd's pieces without a process: ioctl numbers per architecture, the device driver against an
injected ioctl, mode and driver parsing, and the pure state transitions (C87-C89)."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from services.watchdogd import core
from services.watchdogd.core import DriverChoice, Mode, WatchdogState, device_seconds, parse_driver, parse_mode
from services.watchdogd.device import Device, WatchdogError
from services.watchdogd.ioctl import ALTERNATE, GENERIC, layout_for, watchdog_requests
from shared.config import validate_node

REQ = watchdog_requests("x86_64")


# --- ioctl numbers ----------------------------------------------------------------------------------


def test_x86_64_numbers_match_linux_headers_C89() -> None:
    assert REQ.settimeout == 0xC0045706
    assert REQ.gettimeout == 0x80045707
    assert REQ.keepalive == 0x80045705
    assert REQ.getsupport == 0x80285700


@pytest.mark.parametrize("machine", ["x86_64", "i686", "aarch64", "armv7l", "riscv64", "s390x"])
def test_generic_layout_architectures(machine: str) -> None:
    assert layout_for(machine) is GENERIC
    assert watchdog_requests(machine) == REQ


@pytest.mark.parametrize("machine", ["ppc64le", "ppc64", "ppc", "mips", "mips64el", "sparc64", "alpha"])
def test_powerpc_mips_sparc_use_their_own_layout_C89(machine: str) -> None:
    assert layout_for(machine) is ALTERNATE
    req = watchdog_requests(machine)
    assert req.keepalive == 0x40045705  # _IOR: READ=2 in 3 direction bits above 13 size bits
    assert req.gettimeout == 0x40045707
    assert req.getsupport == 0x40285700
    assert req.settimeout == 0xC0045706  # _IOWR: READ|WRITE = 6 << 29


def test_a_size_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError):
        ALTERNATE.ioc(ALTERNATE.read, ord("W"), 0, 1 << 13)


# --- the device driver with an injected ioctl ----------------------------------------------------------


class FakeIoctl:
    """A watchdog driver as seen through ioctl(2): each request either answers or raises an errno."""

    def __init__(self, *, accept: int | None = None, current: int = 60, errors: dict[int, int] | None = None) -> None:
        self.accept = accept  # what SETTIMEOUT settles on (None: whatever was asked)
        self.current = current
        self.errors = errors or {}
        self.calls: list[int] = []

    def __call__(self, fd: int, request: int, buf: bytearray) -> int:
        self.calls.append(request)
        if request in self.errors:
            raise OSError(self.errors[request], "fake")
        if request == REQ.getsupport:
            buf[:] = struct.pack("II32s", 0x8180, 7, b"Fake Watchdog")
        elif request == REQ.settimeout:
            asked = struct.unpack("i", buf)[0]
            self.current = self.accept if self.accept is not None else asked
            buf[:] = struct.pack("i", self.current)
        elif request == REQ.gettimeout:
            buf[:] = struct.pack("i", self.current)
        return 0


def device(path: Path, fake: FakeIoctl) -> Device:
    path.touch()
    dev = Device(str(path), ioctl=fake, requests=REQ)
    dev.open()
    return dev


def test_set_timeout_success_reads_back_the_timeout_in_force(tmp_path: Path) -> None:
    fake = FakeIoctl()
    dev = device(tmp_path / "wd", fake)
    assert (dev.identity, dev.has_magic_close) == ("Fake Watchdog", True)
    result = dev.set_timeout(25)
    assert (result.timeout, result.safe, result.warning) == (25, True, "")
    assert fake.calls == [REQ.getsupport, REQ.settimeout, REQ.gettimeout]
    dev.keepalive()
    assert fake.calls[-1] == REQ.keepalive
    dev.close()
    assert (tmp_path / "wd").read_bytes() == b"V"  # keepalives went by ioctl, the magic close by write
    assert not dev.is_open


@pytest.mark.parametrize("code", [errno.ENOTTY, errno.EINVAL])
def test_a_device_that_cannot_set_or_read_its_timeout_reports_it_unknown(tmp_path: Path, code: int) -> None:
    fake = FakeIoctl(errors={REQ.settimeout: code, REQ.gettimeout: code})
    result = device(tmp_path / "wd", fake).set_timeout(10)
    assert (result.timeout, result.safe) == (None, False)
    assert "cannot set the timeout" in result.warning and "unknown" in result.warning


def test_a_refused_timeout_is_safe_when_the_one_in_force_is_shorter(tmp_path: Path) -> None:
    fake = FakeIoctl(current=8, errors={REQ.settimeout: errno.EINVAL})
    result = device(tmp_path / "wd", fake).set_timeout(10)
    assert (result.timeout, result.safe) == (8, True)
    assert "cannot set the timeout" in result.warning


def test_a_device_whose_effective_timeout_is_longer_is_not_safe(tmp_path: Path) -> None:
    result = device(tmp_path / "wd", FakeIoctl(accept=60)).set_timeout(25)
    assert (result.timeout, result.safe) == (60, False)
    assert "longer than the requested 25 s: not safe" in result.warning


def test_keepalive_falls_back_to_a_write_once_the_ioctl_is_refused(tmp_path: Path) -> None:
    fake = FakeIoctl(errors={REQ.keepalive: errno.ENOTTY, REQ.getsupport: errno.ENOTTY})
    dev = device(tmp_path / "wd", fake)
    assert (dev.identity, dev.has_magic_close) == (None, None)
    dev.keepalive()
    dev.keepalive()
    dev.close()
    assert (tmp_path / "wd").read_bytes() == b"11V"
    assert fake.calls.count(REQ.keepalive) == 1  # not retried on every keepalive


def test_open_failures_are_watchdog_errors(tmp_path: Path) -> None:
    with pytest.raises(WatchdogError, match="No such file"):
        Device(str(tmp_path / "missing"), ioctl=FakeIoctl()).open()


def test_a_fifo_without_reader_fails_instead_of_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(WatchdogError):
        Device(str(fifo), ioctl=FakeIoctl()).open()


def test_keepalive_on_a_closed_device_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WatchdogError):
        Device(str(tmp_path / "wd")).keepalive()


# --- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, mode, warned",
    [
        ("off", Mode.OFF, False),
        ("Disabled", Mode.OFF, False),
        ("disable", Mode.OFF, False),
        (False, Mode.OFF, False),
        ("auto", Mode.AUTOMATIC, False),
        ("AUTOMATIC", Mode.AUTOMATIC, False),
        (None, Mode.AUTOMATIC, False),
        ("require", Mode.REQUIRED, False),
        (" Required ", Mode.REQUIRED, False),
        ("sometimes", Mode.OFF, True),
    ],
)
def test_mode_aliases_C87(value: Any, mode: Mode, warned: bool) -> None:
    parsed, warning = parse_mode(value)
    assert parsed == mode
    assert (warning is not None) == warned
    if warned:
        assert warning == f"Watchdog mode {value} not recognized, disabling watchdog"


def test_driver_parsing() -> None:
    assert parse_driver(None) == DriverChoice.DEFAULT
    assert parse_driver("default") == DriverChoice.DEFAULT
    assert parse_driver("Software") == DriverChoice.SOFTWARE


def _node(watchdog: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "n1",
        "scope": "s",
        "raft": {"self_addr": "127.0.0.1:1"},
        "restapi": {"listen": "127.0.0.1:18008", "connect_address": "127.0.0.1:18008"},
        "postgresql": {"data_dir": "/tmp/d", "listen": "127.0.0.1:15432", "connect_address": "127.0.0.1:15432"},
        "watchdog": watchdog,
    }


def test_driver_config_is_validated_by_key() -> None:
    ok = [p for p in validate_node(_node({"mode": "required", "driver": "software"})) if p.severity == "error"]
    assert ok == []
    bad = [p for p in validate_node(_node({"driver": "hardware"})) if p.severity == "error"]
    assert [(p.key, "must be one of default, software" in p.rule) for p in bad] == [("watchdog.driver", True)]


def test_device_timeouts_round_down_to_whole_seconds() -> None:
    assert [device_seconds(t) for t in (25.0, 2.9, 0.5)] == [25, 2, 1]


# --- state transitions --------------------------------------------------------------------------------


def test_arm_keepalive_fire_and_rearm() -> None:
    s = WatchdogState(Mode.REQUIRED, "/dev/watchdog")
    s = core.armed(s, core.SOFTWARE, 2.0, now=1000.0, mono=10.0)
    assert (s.armed, s.active, s.deadline, s.due) == (True, True, 1002.0, 12.0)
    s = core.kept_alive(s, now=1001.5, mono=11.5)
    assert (s.deadline, core.expired(s, 13.4), core.expired(s, 13.5)) == (1003.5, False, True)
    s = core.fired(s, now=1003.6, pid=42, reason="fired")
    assert (s.armed, s.active, s.fired, s.fired_pid, s.last_keepalive, s.deadline) == (
        False, False, True, 42, 1001.5, None,
    )  # fmt: skip
    assert not core.expired(s, 99.0)
    s = core.armed(s, core.SOFTWARE, 2.0, now=1010.0, mono=20.0)
    assert (s.fired, s.fired_pid, s.armed) == (False, None, True)


def test_a_device_never_expires_in_watchdogd_and_unknown_timeouts_have_no_deadline() -> None:
    s = core.armed(WatchdogState(Mode.AUTOMATIC, "/x"), core.DEVICE, None, now=5.0, mono=5.0)
    assert (s.deadline, s.due, core.expired(s, 1e9)) == (None, None, False)
    s = core.armed(s, core.DEVICE, 3.0, now=5.0, mono=5.0)
    assert not core.expired(s, 1e9)  # the kernel fires, not us


def test_inactive_and_disarmed_states_report_their_reason() -> None:
    s = core.armed_inactive(WatchdogState(Mode.AUTOMATIC, "/x"), "no fence")
    assert (s.armed, s.active, s.reason) == (True, False, "no fence")
    body = core.disarmed(s).as_body(healthy=True)
    assert {k: body[k] for k in ("armed", "active", "driver", "deadline", "reason", "healthy")} == {
        "armed": False, "active": False, "driver": None, "deadline": None, "reason": "", "healthy": True,
    }  # fmt: skip

"""The wd.* handlers with a fake clock, a fake fence and a test device file (injected ioctl): modes,
the device/software choice and its fallback, refusals, the fence's deadline (C87-C89)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import pytest

from services.watchdogd.core import DriverChoice, Mode
from services.watchdogd.device import Device
from services.watchdogd.feeder import Feeder
from services.watchdogd.fence import Fence, FenceResult
from shared.protocol.errors import ErrorCode, OpError
from tests.unit.test_watchdogd import REQ, FakeIoctl


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def wall(self) -> float:
        return self.now

    def mono(self) -> float:
        return self.now - 999_000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeFence(Fence):
    def __init__(self, unusable: str | None = None) -> None:
        super().__init__("/nowhere")
        self.unusable = unusable
        self.fired: list[float] = []

    def unusable_reason(self) -> str | None:
        return self.unusable

    def fire(self) -> FenceResult:
        self.fired.append(len(self.fired))
        return FenceResult(4242, (4242, 4243))


def feeder(
    tmp_path: Path,
    mode: Mode = Mode.AUTOMATIC,
    driver: DriverChoice = DriverChoice.DEFAULT,
    *,
    fence: FakeFence | None = None,
    ioctl: FakeIoctl | None = None,
    device: str = "missing",
) -> tuple[Feeder, Clock, FakeFence]:
    clock, fake_fence = Clock(), fence or FakeFence()
    fake_ioctl = ioctl or FakeIoctl()
    f = Feeder(
        mode,
        driver,
        str(tmp_path / device),
        fake_fence,
        device_factory=lambda path: Device(path, ioctl=fake_ioctl, requests=REQ),
        wall=clock.wall,
        mono=clock.mono,
    )
    return f, clock, fake_fence


def error_of(call: Any, *args: Any) -> OpError:
    with pytest.raises(OpError) as info:
        call(*args)
    return info.value


def test_off_answers_inactive_and_keepalives_do_nothing(tmp_path: Path) -> None:
    f, _, fence = feeder(tmp_path, Mode.OFF)
    assert f.arm({"timeout": 25}) == {"active": False, "reason": "watchdog is off", "driver": None,
                                      "timeout": None, "deadline": None}  # fmt: skip
    assert f.keepalive({})["active"] is False
    assert f.status({})["healthy"] is True
    assert f.disarm({}) == {"active": False}
    assert fence.fired == []


def test_keepalive_when_not_armed_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    f, _, fence = feeder(tmp_path)
    before = f.state
    assert error_of(f.keepalive, {}).code == ErrorCode.PRECONDITION_FAILED
    assert f.state == before and fence.fired == []


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_nonsense_timeouts_are_invalid(tmp_path: Path, timeout: float) -> None:
    f, _, _ = feeder(tmp_path)
    assert error_of(f.arm, {"timeout": timeout}).code == ErrorCode.INVALID_BODY
    assert not f.state.armed


def test_software_fence_fires_once_when_the_deadline_passes(tmp_path: Path, caplog: Any) -> None:
    f, clock, fence = feeder(tmp_path, driver=DriverChoice.SOFTWARE)
    reply = f.arm({"timeout": 2})
    assert (reply["active"], reply["driver"], reply["timeout"], reply["deadline"]) == (True, "software", 2.0,
                                                                                       clock.now + 2)  # fmt: skip
    clock.advance(1.9)
    assert f.keepalive({}) == {"active": True, "deadline": clock.now + 2}
    clock.advance(1.99)
    f.check()
    assert fence.fired == []
    clock.advance(0.02)
    with caplog.at_level(logging.CRITICAL, logger="watchdogd"):
        f.check()
        f.check()
    assert fence.fired == [0]
    assert "software watchdog fired: keepalives stopped for 2.01 s; PostgreSQL (pid 4242) killed" in caplog.text
    status = f.status({})
    assert {k: status[k] for k in ("armed", "active", "fired", "fired_pid", "driver")} == {
        "armed": False, "active": False, "fired": True, "fired_pid": 4242, "driver": None,
    }  # fmt: skip
    assert status["fired_at"] - status["last_keepalive"] == pytest.approx(2.01)
    assert "fired" in error_of(f.keepalive, {}).message
    assert f.arm({"timeout": 2})["active"] is True and f.status({})["fired"] is False


def test_a_late_keepalive_cannot_revive_an_expired_fence(tmp_path: Path) -> None:
    f, clock, fence = feeder(tmp_path, driver=DriverChoice.SOFTWARE)
    f.arm({"timeout": 2})
    clock.advance(2.05)  # the timer has not run yet
    assert error_of(f.keepalive, {}).code == ErrorCode.PRECONDITION_FAILED
    assert fence.fired == [0]


def test_disarm_before_the_deadline_never_fires(tmp_path: Path) -> None:
    f, clock, fence = feeder(tmp_path, driver=DriverChoice.SOFTWARE)
    f.arm({"timeout": 2})
    clock.advance(1.5)
    f.disarm({})
    clock.advance(100)
    f.check()
    assert fence.fired == [] and f.state.deadline is None


@pytest.mark.parametrize("mode", [Mode.AUTOMATIC, Mode.REQUIRED])
def test_default_driver_falls_back_to_the_fence_and_says_so_once(tmp_path: Path, mode: Mode, caplog: Any) -> None:
    f, _, _ = feeder(tmp_path, mode)
    with caplog.at_level(logging.WARNING, logger="watchdogd"):
        assert f.arm({"timeout": 10})["driver"] == "software"
        f.disarm({})
        assert f.arm({"timeout": 10})["driver"] == "software"
    path = tmp_path / "missing"
    expected = f"watchdog device {path} unavailable (No such file or directory); using the software fence"
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_required_mode_refuses_an_unusable_fence(tmp_path: Path) -> None:
    f, _, _ = feeder(tmp_path, Mode.REQUIRED, fence=FakeFence("no data directory"))
    err = error_of(f.arm, {"timeout": 10})
    assert (err.code, "no data directory" in err.message) == (ErrorCode.UNAVAILABLE, True)
    status = f.status({})
    assert (status["armed"], status["active"], status["healthy"]) == (False, False, False)
    assert "no data directory" in status["reason"]
    assert error_of(f.keepalive, {}).code == ErrorCode.PRECONDITION_FAILED


def test_automatic_mode_goes_on_without_an_unusable_fence(tmp_path: Path) -> None:
    f, _, _ = feeder(tmp_path, Mode.AUTOMATIC, fence=FakeFence("no data directory"))
    reply = f.arm({"timeout": 10})
    assert (reply["active"], "no data directory" in reply["reason"]) == (False, True)
    assert f.keepalive({}) == {"active": False, "deadline": None}
    assert f.status({})["healthy"] is True


def test_device_driver_arms_feeds_and_magic_closes(tmp_path: Path) -> None:
    (tmp_path / "wd").touch()
    fake = FakeIoctl()
    f, clock, fence = feeder(tmp_path, Mode.REQUIRED, ioctl=fake, device="wd")
    reply = f.arm({"timeout": 25.7})
    assert (reply["active"], reply["driver"], reply["timeout"]) == (True, "device", 25.0)
    assert f.status({})["identity"] == "Fake Watchdog"
    f.keepalive({})
    assert fake.calls.count(REQ.keepalive) == 2  # one on arm, one on request
    clock.advance(100)
    f.check()
    assert fence.fired == []  # the device fires by itself, watchdogd never fences
    f.disarm({})
    assert (tmp_path / "wd").read_bytes() == b"V"
    assert f.device is None


def test_automatic_mode_keeps_a_device_without_timeout_control_as_unknown(tmp_path: Path) -> None:
    (tmp_path / "wd").touch()
    fake = FakeIoctl(errors={r: errno.ENOTTY for r in (REQ.getsupport, REQ.settimeout, REQ.gettimeout, REQ.keepalive)})
    f, _, _ = feeder(tmp_path, Mode.AUTOMATIC, ioctl=fake, device="wd")
    reply = f.arm({"timeout": 10})
    assert (reply["active"], reply["timeout"], reply["deadline"]) == (True, None, None)
    assert "unknown" in reply["reason"]
    f.keepalive({})
    f.disarm({})
    assert (tmp_path / "wd").read_bytes() == b"11V"


@pytest.mark.parametrize(
    "ioctl, words",
    [
        (FakeIoctl(errors={REQ.settimeout: errno.ENOTTY, REQ.gettimeout: errno.ENOTTY}), "unknown"),
        (FakeIoctl(accept=60), "not safe"),
    ],
)
def test_required_mode_refuses_a_device_it_cannot_trust(tmp_path: Path, ioctl: FakeIoctl, words: str) -> None:
    (tmp_path / "wd").touch()
    f, _, _ = feeder(tmp_path, Mode.REQUIRED, ioctl=ioctl, device="wd")
    err = error_of(f.arm, {"timeout": 25})
    assert (err.code, words in err.message) == (ErrorCode.UNAVAILABLE, True)
    assert (tmp_path / "wd").read_bytes() == b"V"  # closed again at once
    assert f.status({})["healthy"] is False
    ioctl.accept, ioctl.errors = None, {}  # the device behaves now: a new arm succeeds and heals the status
    assert f.arm({"timeout": 25})["active"] is True
    assert f.status({})["healthy"] is True


def test_automatic_mode_warns_about_a_longer_device_timeout_but_goes_on(tmp_path: Path) -> None:
    (tmp_path / "wd").touch()
    f, _, _ = feeder(tmp_path, Mode.AUTOMATIC, ioctl=FakeIoctl(accept=60), device="wd")
    reply = f.arm({"timeout": 25})
    assert (reply["active"], reply["timeout"], "not safe" in reply["reason"]) == (True, 60.0, True)


def test_required_health_follows_the_usable_watchdog(tmp_path: Path) -> None:
    fence = FakeFence("nope")
    f, _, _ = feeder(tmp_path, Mode.REQUIRED, fence=fence)
    assert f.status({})["healthy"] is False
    fence.unusable = None
    assert f.status({})["healthy"] is True
    sw, _, _ = feeder(tmp_path, Mode.REQUIRED, DriverChoice.SOFTWARE, fence=FakeFence("nope"))
    (tmp_path / "missing").touch()  # a device exists, but the software driver never uses it
    assert sw.status({})["healthy"] is False

"""The watchdog feeder's state: mode and driver parsing (C87) and the arm/keepalive/disarm/fire
transitions (C89). Pure: times come in as arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    OFF = "off"
    AUTOMATIC = "automatic"
    REQUIRED = "required"


class DriverChoice(StrEnum):
    DEFAULT = "default"  # the Linux device; the software fence when it cannot be opened
    SOFTWARE = "software"  # the software fence only


DEVICE = "device"
SOFTWARE = "software"

_ALIASES = {
    "off": Mode.OFF,
    "disable": Mode.OFF,
    "disabled": Mode.OFF,
    "false": Mode.OFF,
    "automatic": Mode.AUTOMATIC,
    "auto": Mode.AUTOMATIC,
    "required": Mode.REQUIRED,
    "require": Mode.REQUIRED,
}


def parse_mode(value: Any) -> tuple[Mode, str | None]:
    """C87: aliases, case-insensitive; YAML false is off; anything else is off with a warning."""
    if value is False:
        return Mode.OFF, None
    if value is None:
        return Mode.AUTOMATIC, None
    mode = _ALIASES.get(str(value).strip().lower())
    if mode is None:
        return Mode.OFF, f"Watchdog mode {value} not recognized, disabling watchdog"
    return mode, None


def parse_driver(value: Any) -> DriverChoice:
    """`watchdog.driver`; validation rejects other values, so anything else here means the default."""
    text = str(value or "").strip().lower()
    return DriverChoice.SOFTWARE if text == SOFTWARE else DriverChoice.DEFAULT


def device_seconds(timeout: float) -> int:
    """A device counts whole seconds: round down (firing early is safe, late is not), at least 1."""
    return max(1, math.floor(timeout))


@dataclass(frozen=True)
class WatchdogState:
    mode: Mode
    device: str
    driver_choice: DriverChoice = DriverChoice.DEFAULT
    armed: bool = False  # between wd.arm and wd.disarm (or the fence firing)
    active: bool = False  # armed with a working watchdog
    driver: str | None = None  # DEVICE or SOFTWARE while active
    timeout: float | None = None  # the timeout in force; None when a device would not tell
    last_keepalive: float | None = None  # epoch of the last arm or keepalive
    deadline: float | None = None  # epoch at which the watchdog fires without a keepalive
    due: float | None = None  # the same on the monotonic clock, for the fence's timer
    fired: bool = False
    fired_at: float | None = None
    fired_pid: int | None = None
    reason: str = ""
    identity: str | None = None  # what the device says it is (WDIOC_GETSUPPORT)

    def as_body(self, healthy: bool) -> dict[str, Any]:
        return {
            "mode": str(self.mode),
            "driver": self.driver,
            "device": self.device,
            "identity": self.identity,
            "active": self.active,
            "armed": self.armed,
            "timeout": self.timeout,
            "last_keepalive": self.last_keepalive,
            "deadline": self.deadline,
            "fired": self.fired,
            "fired_at": self.fired_at,
            "fired_pid": self.fired_pid,
            "reason": self.reason,
            "healthy": healthy,
        }


def armed(
    state: WatchdogState,
    driver: str,
    timeout: float | None,
    now: float,
    mono: float,
    *,
    reason: str = "",
    identity: str | None = None,
) -> WatchdogState:
    cleared = replace(state, fired=False, fired_at=None, fired_pid=None)
    on = replace(cleared, armed=True, active=True, driver=driver, timeout=timeout, reason=reason, identity=identity)
    return kept_alive(on, now, mono)


def armed_inactive(state: WatchdogState, reason: str) -> WatchdogState:
    """Automatic mode (or off) without a usable watchdog: the brain may go on, nothing guards it."""
    off = disarmed(replace(state, fired=False, fired_at=None, fired_pid=None))
    return replace(off, armed=True, reason=reason)


def kept_alive(state: WatchdogState, now: float, mono: float) -> WatchdogState:
    if state.timeout is None:
        return replace(state, last_keepalive=now, deadline=None, due=None)
    return replace(state, last_keepalive=now, deadline=now + state.timeout, due=mono + state.timeout)


def disarmed(state: WatchdogState, reason: str = "") -> WatchdogState:
    """Also what a refused arm leaves behind (with its reason)."""
    return replace(state, armed=False, active=False, driver=None, timeout=None, deadline=None, due=None, reason=reason)


def expired(state: WatchdogState, mono: float) -> bool:
    """The software fence's deadline has passed."""
    return state.active and state.driver == SOFTWARE and state.due is not None and mono >= state.due


def fired(state: WatchdogState, now: float, pid: int | None, reason: str) -> WatchdogState:
    return replace(disarmed(state, reason), fired=True, fired_at=now, fired_pid=pid)

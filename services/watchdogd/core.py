"""The watchdog feeder's state: mode parsing (C87) and the arm/keepalive/disarm rules (C89). Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    OFF = "off"
    AUTOMATIC = "automatic"
    REQUIRED = "required"


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


@dataclass(frozen=True)
class WatchdogState:
    mode: Mode
    device: str
    active: bool = False
    timeout: float | None = None
    last_keepalive: float | None = None
    reason: str = ""

    def as_body(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode),
            "active": self.active,
            "device": self.device,
            "timeout": self.timeout,
            "last_keepalive": self.last_keepalive,
            "reason": self.reason,
        }


def armed(state: WatchdogState, timeout: float, now: float) -> WatchdogState:
    return replace(state, active=True, timeout=timeout, last_keepalive=now, reason="")


def unavailable(state: WatchdogState, reason: str) -> WatchdogState:
    return replace(state, active=False, reason=reason)


def disarmed(state: WatchdogState) -> WatchdogState:
    return replace(state, active=False, timeout=None, reason="")

"""The wd.* request handlers and the fence's timer (docs/protocol.md, "watchdogd"). No sockets here:
main.py wires them to the ROUTER and the loop; tests drive them with fake clocks and devices."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

from services.watchdogd import core
from services.watchdogd.core import DEVICE, SOFTWARE, DriverChoice, Mode, WatchdogState
from services.watchdogd.device import Device, WatchdogError
from services.watchdogd.fence import Fence
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError

log = logging.getLogger("watchdogd")


class Feeder:
    def __init__(
        self,
        mode: Mode,
        driver_choice: DriverChoice,
        device_path: str,
        fence: Fence,
        *,
        device_factory: Callable[[str], Device] = Device,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = WatchdogState(mode=mode, device=device_path, driver_choice=driver_choice)
        self.fence = fence
        self.device: Device | None = None
        self._device_factory = device_factory
        self._wall = wall
        self._mono = mono
        self._device_refusal: str | None = None  # the open device's timeout was not safe (required mode)
        self._logged: set[str] = set()

    def handlers(self) -> dict[str, Callable[[dict[str, Any], Request | None], dict[str, Any]]]:
        return {"wd.arm": self.arm, "wd.keepalive": self.keepalive, "wd.disarm": self.disarm, "wd.status": self.status}

    def _log_once(self, level: int, message: str) -> None:
        if message not in self._logged:
            self._logged.add(message)
            log.log(level, "%s", message)

    # --- wd.arm -----------------------------------------------------------------------------------

    def arm(self, body: dict[str, Any], req: Request | None = None) -> dict[str, Any]:
        timeout = float(body["timeout"])
        if not math.isfinite(timeout) or timeout <= 0:
            raise OpError(
                ErrorCode.INVALID_BODY, f"wd.arm: timeout must be a positive number of seconds, got {timeout}"
            )
        if self.state.mode == Mode.OFF:
            self.state = core.armed_inactive(self.state, "watchdog is off")
            return self._arm_reply()
        self.check()  # a deadline that passed before this request is honoured first
        if self._choose_driver() == DEVICE:
            return self._arm_device(timeout)
        return self._arm_fence(timeout)

    def _choose_driver(self) -> str:
        if self.device is not None and self.device.is_open:
            return DEVICE
        if self.state.driver_choice == DriverChoice.SOFTWARE:
            return SOFTWARE
        device = self._device_factory(self.state.device)
        try:
            device.open()
        except WatchdogError as exc:
            self._log_once(
                logging.WARNING, f"watchdog device {self.state.device} unavailable ({exc}); using the software fence"
            )
            return SOFTWARE
        self.device = device
        return DEVICE

    def _arm_device(self, timeout: float) -> dict[str, Any]:
        assert self.device is not None
        result = self.device.set_timeout(core.device_seconds(timeout))
        if not result.safe and self.state.mode == Mode.REQUIRED:
            self._close_device()
            self._device_refusal = result.warning
            return self._refuse(result.warning)
        if result.warning:
            log.warning("%s", result.warning)
        try:
            self.device.keepalive()
        except WatchdogError as exc:
            self._close_device()
            return self._not_active(str(exc))
        self._device_refusal = None
        if self.device.has_magic_close is False:
            self._log_once(logging.WARNING, f"{self.state.device} does not support magic close: disarm cannot stop it")
        wall, mono = self._wall(), self._mono()
        timeout_in_force = float(result.timeout) if result.timeout is not None else None
        self.state = core.armed(
            self.state, DEVICE, timeout_in_force, wall, mono, reason=result.warning, identity=self.device.identity
        )
        log.info("watchdog %s (%s) armed, timeout %s s", self.state.device, self.device.identity, result.timeout)
        return self._arm_reply()

    def _arm_fence(self, timeout: float) -> dict[str, Any]:
        why = self.fence.unusable_reason()
        if why is not None:
            return self._not_active(f"software fence unusable: {why}")
        was_active = self.state.active and self.state.driver == SOFTWARE
        if not was_active:
            self.fence.prepare()
        self.state = core.armed(self.state, SOFTWARE, timeout, self._wall(), self._mono())
        if not was_active:
            log.info("software fence armed: PostgreSQL in %s is killed %.1f s after the last keepalive",
                     self.fence.data_dir, timeout)  # fmt: skip
        return self._arm_reply()

    def _not_active(self, why: str) -> dict[str, Any]:
        """No usable watchdog: required mode refuses, automatic mode goes on unguarded."""
        if self.state.mode == Mode.REQUIRED:
            return self._refuse(why)
        self._log_once(logging.WARNING, f"watchdog not active: {why}")
        self.state = core.armed_inactive(self.state, why)
        return self._arm_reply()

    def _refuse(self, why: str) -> dict[str, Any]:
        log.error("Configuration requires watchdog, but it could not be activated: %s", why)
        self.state = core.disarmed(self.state, why)
        raise OpError(ErrorCode.UNAVAILABLE, why)

    def _arm_reply(self) -> dict[str, Any]:
        s = self.state
        return {
            "active": s.active,
            "reason": s.reason,
            "driver": s.driver,
            "timeout": s.timeout,
            "deadline": s.deadline,
        }

    # --- wd.keepalive / wd.disarm / wd.status -----------------------------------------------------

    def keepalive(self, body: dict[str, Any], req: Request | None = None) -> dict[str, Any]:
        self.check()
        if not self.state.armed:
            fired = f": the software watchdog fired at {self.state.fired_at:.3f}" if self.state.fired_at else ""
            raise OpError(ErrorCode.PRECONDITION_FAILED, f"watchdog is not armed{fired}; send wd.arm first")
        if self.state.active and self.state.driver == DEVICE:
            assert self.device is not None
            try:
                self.device.keepalive()
            except WatchdogError as exc:
                log.error("%s", exc)
                raise OpError(ErrorCode.UNAVAILABLE, str(exc))
        if self.state.active:
            self.state = core.kept_alive(self.state, self._wall(), self._mono())
        return {"active": self.state.active, "deadline": self.state.deadline}

    def disarm(self, body: dict[str, Any], req: Request | None = None) -> dict[str, Any]:
        if self.state.active:
            log.info("watchdog disarmed (%s)", self.state.driver)
        self._close_device()
        self.state = core.disarmed(self.state)
        return {"active": False}

    def status(self, body: dict[str, Any], req: Request | None = None) -> dict[str, Any]:
        return self.state.as_body(self.healthy())

    def healthy(self) -> bool:
        """False only in required mode when no usable watchdog exists (feeds watchdog_failed, C89)."""
        if self.state.mode != Mode.REQUIRED or self.state.active:
            return True
        path = self.state.device
        if self.state.driver_choice == DriverChoice.DEFAULT and os.path.exists(path) and os.access(path, os.W_OK):
            return self._device_refusal is None
        return self.fence.unusable_reason() is None

    # --- the fence's timer and shutdown ------------------------------------------------------------

    def next_check(self) -> float | None:
        """When (time.monotonic()) the fence's timer must call check(): its deadline while the software fence is
        active; None when nothing is due (disarmed, fired, or the device fires by itself)."""
        s = self.state
        if s.active and s.driver == SOFTWARE and s.due is not None:
            return s.due
        return None

    def check(self) -> None:
        """Called by the loop's timer (and before each request): fence PostgreSQL once the deadline passed."""
        if not core.expired(self.state, self._mono()):
            return
        now = self._wall()
        silent = now - (self.state.last_keepalive or now)
        result = self.fence.fire()
        if result.pid is not None:
            reason = (
                f"software watchdog fired: keepalives stopped for {silent:.2f} s; PostgreSQL (pid {result.pid}) killed"
            )
            log.critical("%s (with %d child processes)", reason, len(result.killed) - 1)
        else:
            reason = f"software watchdog fired: keepalives stopped for {silent:.2f} s; nothing killed: {result.detail}"
            log.critical("%s", reason)
        self.state = core.fired(self.state, now, result.pid, reason)

    def _close_device(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None

    def stop(self) -> None:
        if self.state.active and self.state.driver == SOFTWARE:
            log.warning("stopping while armed: PostgreSQL in %s is no longer fenced", self.fence.data_dir)
        self._close_device()

"""watchdogd: feeds the watchdog device while the brain keeps asking (runs as root).

With `watchdog.mode: off`, or `automatic` on a host without a device, it answers that the watchdog
is not active and the node works without one. The software fence for hosts without a device, and
the required-mode refusals, are part of the watchdog work (features.md C.10).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from services.watchdogd.core import Mode, WatchdogState, armed, disarmed, parse_mode, unavailable
from services.watchdogd.device import Device, WatchdogError
from shared.config.defaults import DEFAULT_WATCHDOG_DEVICE
from shared.protocol.endpoints import Service, router_path
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, OpError
from shared.protocol.ops import WD
from shared.protocol.transport import RouterServer
from shared.runtime import Loop, Runtime, parse_args

log = logging.getLogger("watchdogd")


class Feeder:
    def __init__(self, runtime: Runtime) -> None:
        cfg = runtime.config.watchdog
        mode, warning = parse_mode(cfg.get("mode", "automatic"))
        if warning:
            log.warning(warning)
        self.state = WatchdogState(mode=mode, device=str(cfg.get("device") or DEFAULT_WATCHDOG_DEVICE))
        self.device = Device(self.state.device)
        self.loop = Loop()
        self.server = RouterServer(
            self.loop.ctx,
            router_path(runtime.run_dir, Service.WATCHDOGD),
            {"wd.arm": self.arm, "wd.keepalive": self.keepalive, "wd.disarm": self.disarm, "wd.status": self.status},
            WD,
            group=runtime.group,
            allowed_uids=runtime.trusted_uids,
        )

    def arm(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        if self.state.mode == Mode.OFF:
            return {"active": False, "reason": "watchdog is off"}
        timeout = float(body["timeout"])
        if not self.device.is_open:
            try:
                timeout = float(self.device.open(int(timeout)))
            except WatchdogError as exc:
                self.state = unavailable(self.state, str(exc))
                if self.state.mode == Mode.REQUIRED:
                    raise OpError(ErrorCode.UNAVAILABLE, str(exc))
                log.info("watchdog not active: %s", exc)
                return {"active": False, "reason": str(exc)}
        self.state = armed(self.state, timeout, time.time())
        return {"active": True, "reason": ""}

    def keepalive(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        if self.device.is_open:
            try:
                self.device.keepalive()
                self.state = armed(self.state, self.state.timeout or 0.0, time.time())
            except WatchdogError as exc:
                log.error("%s", exc)
                raise OpError(ErrorCode.UNAVAILABLE, str(exc))
        return {"active": self.state.active}

    def disarm(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        self.device.close()
        self.state = disarmed(self.state)
        return {"active": False}

    def status(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        return self.state.as_body()


def run(runtime: Runtime) -> None:
    feeder = Feeder(runtime)
    feeder.loop.add_reader(feeder.server.socket, feeder.server.process)
    feeder.loop.install_signal_handlers()
    feeder.loop.on_stop(feeder.device.close)
    log.info("watchdogd started: mode %s, device %s", feeder.state.mode, feeder.state.device)
    try:
        feeder.loop.run()
    finally:
        feeder.loop.close()


def main(argv: list[str] | None = None) -> None:
    run(parse_args(Service.WATCHDOGD, argv))

"""watchdogd: feeds the watchdog while the brain keeps asking (runs as root; features.md C.10).

The Linux device (watchdog.device) fires by itself when keepalives stop. On hosts without one, or with
`watchdog.driver: software`, the software fence does the firing: a timer in this loop kills PostgreSQL
once the deadline (last keepalive + timeout) has passed. That timer is set for the deadline itself (again after
every request, since a keepalive moves it) and exists only while the fence is active: an idle or device-driven
watchdogd sleeps until a request arrives.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from services.watchdogd.core import parse_driver, parse_mode
from services.watchdogd.feeder import Feeder
from services.watchdogd.fence import Fence
from shared.config.defaults import DEFAULT_WATCHDOG_DEVICE
from shared.protocol.endpoints import Service, router_path
from shared.protocol.ops import WD
from shared.protocol.transport import RouterServer
from shared.runtime import Loop, Runtime, parse_args

log = logging.getLogger("watchdogd")

FIRE_LATE_S = 0.001  # the fence's timer is set this long after the deadline (the poll waits whole milliseconds)


class FenceTimer:
    """One timer, set for the software fence's deadline while it is active; re-set after every request."""

    def __init__(self, loop: Loop, feeder: Feeder) -> None:
        self._loop = loop
        self._feeder = feeder
        self._timer: Any = None
        self._due: float | None = None

    def reschedule(self) -> None:
        due = self._feeder.next_check()
        if due == self._due and (due is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancelled = True
            self._timer = None
        self._due = due
        if due is not None:
            self._timer = self._loop.call_later(max(0.0, due - time.monotonic()) + FIRE_LATE_S, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._due = None
        self._feeder.check()
        self.reschedule()


def build_feeder(runtime: Runtime) -> Feeder:
    cfg = runtime.config.watchdog
    mode, warning = parse_mode(cfg.get("mode", "automatic"))
    if warning:
        log.warning(warning)
    device = str(cfg.get("device") or DEFAULT_WATCHDOG_DEVICE)
    data_dir = runtime.config.postgresql.get("data_dir")
    return Feeder(mode, parse_driver(cfg.get("driver")), device, Fence(str(data_dir) if data_dir else None))


def run(runtime: Runtime) -> None:
    feeder = build_feeder(runtime)
    loop = Loop()
    server = RouterServer(
        loop.ctx,
        router_path(runtime.run_dir, Service.WATCHDOGD),
        feeder.handlers(),
        WD,
        group=runtime.group,
        allowed_uids=runtime.trusted_uids,
    )
    fence_timer = FenceTimer(loop, feeder)

    def serve() -> None:
        server.process()
        fence_timer.reschedule()  # an arm, keepalive or disarm moved (or removed) the deadline

    loop.add_reader(server.socket, serve)
    loop.install_signal_handlers()
    loop.on_stop(feeder.stop)
    loop.on_stop(server.close)
    state = feeder.state
    log.info("watchdogd started: mode %s, driver %s, device %s", state.mode, state.driver_choice, state.device)
    try:
        loop.run()
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> None:
    run(parse_args(Service.WATCHDOGD, argv))

"""watchdogd: feeds the watchdog while the brain keeps asking (runs as root; features.md C.10).

The Linux device (watchdog.device) fires by itself when keepalives stop. On hosts without one, or with
`watchdog.driver: software`, the software fence does the firing: a timer in this loop kills PostgreSQL
once the deadline (last keepalive + timeout) has passed.
"""

from __future__ import annotations

import logging

from services.watchdogd.core import parse_driver, parse_mode
from services.watchdogd.feeder import Feeder
from services.watchdogd.fence import Fence
from shared.config.defaults import DEFAULT_WATCHDOG_DEVICE
from shared.protocol.endpoints import Service, router_path
from shared.protocol.ops import WD
from shared.protocol.transport import RouterServer
from shared.runtime import Loop, Runtime, parse_args

log = logging.getLogger("watchdogd")

CHECK_INTERVAL = 0.05  # the fence's deadline is checked at least this often, whatever the requests do


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
    loop.add_reader(server.socket, server.process)
    loop.call_later(CHECK_INTERVAL, feeder.check, repeat=True)
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

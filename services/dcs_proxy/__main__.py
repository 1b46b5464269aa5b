"""python -m services.dcs_proxy --config FILE [--run-dir DIR]: the DCS session keeper of one node."""

from __future__ import annotations

from services.dcs_proxy import main
from shared import log as haven_log
from shared.protocol.endpoints import Service
from shared.runtime import parse_args


def entry() -> None:
    runtime = parse_args(Service.DCS_PROXY)
    try:
        code = main.run(runtime)
    finally:
        haven_log.shutdown()
    raise SystemExit(code)


if __name__ == "__main__":
    entry()

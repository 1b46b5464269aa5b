"""python -m services.restapi --config FILE [--run-dir DIR]"""

from __future__ import annotations

from services.restapi import main
from shared.protocol.endpoints import Service
from shared.runtime import parse_args


def entry() -> None:
    raise SystemExit(main.run(parse_args(Service.RESTAPI)))


if __name__ == "__main__":
    entry()

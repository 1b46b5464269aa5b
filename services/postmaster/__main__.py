"""python -m services.postmaster --config FILE --run-dir DIR: the PostgreSQL controller (runs as postgres)."""

from services.postmaster import main
from shared.protocol.endpoints import Service
from shared.runtime import parse_args

if __name__ == "__main__":
    raise SystemExit(main.run(parse_args(Service.POSTMASTER)))

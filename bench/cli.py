"""python -m bench [--reps N] [--only SCENARIO[,SCENARIO]] [--soak-minutes M] [--idle-seconds S] [--json PATH]

Starts one etcd (v3 API) on free loopback ports, runs the scenarios on 3-node haven clusters (and on Patroni
clusters too when BENCH_PATRONI names a patroni executable), prints one table per flavour (and the ratios
haven/Patroni), and writes the figures as JSON. Exit status: 0 when every selected scenario ran to the end,
1 when one failed (its error is in the table and the JSON), 2 for a setup problem (a missing program).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench.context import Bench, Options, keep_dirs, log
from bench.flavours import EXTRA, PROFILES, BenchSetupError, flavours_from_env
from bench.results import SCENARIOS, Results, ratio_table, ratios, table, write_json
from bench.scenarios import RUN_ORDER, SCENARIO_FUNCTIONS
from tests.support.etcd_server import Etcd3Server, etcd_binary
from tests.support.haproxy import HAPROXY_BIN
from tests.support.postgres import pg_bin_dir


def _scenarios(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    return names


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="haven benchmarks: bootstrap, switchover, failover, soak, health checks, footprint.",
        epilog="BENCH_PATRONI=/path/to/patroni also runs every scenario on Patroni and prints haven/Patroni ratios. "
        "HAVEN_KEEP_TEST_DIRS=1 keeps the clusters' directories.",
    )
    parser.add_argument("--reps", type=_positive_int, default=3, help="repetitions per scenario (default 3)")
    parser.add_argument(
        "--only", type=_scenarios, default=list(SCENARIOS), help=f"a subset: {','.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument(
        "--soak-minutes", type=_non_negative, default=20.0, help="soak duration, counted in --reps windows (0 skips)"
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="footprint: each idle window (default 60)")
    parser.add_argument("--wrk-seconds", type=_positive_int, default=10, help="health: each wrk run (default 10)")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="default bench-results.json")
    args = parser.parse_args(argv)
    if args.idle_seconds <= 0:
        parser.error("--idle-seconds must be above 0")
    return args


def preflight(selected: list[str], soak_minutes: float) -> None:
    """Every program the selected scenarios need, before anything starts."""
    etcd_binary()
    pg_bin_dir()
    if "health" in selected:
        from bench.wrk import wrk_binary

        wrk_binary()
    if "soak" in selected and soak_minutes > 0:
        if not os.access(HAPROXY_BIN, os.X_OK) and shutil.which("haproxy") is None:
            raise BenchSetupError("haproxy is missing: run `make setup-test`")
        if not os.access(os.path.join(pg_bin_dir(), "pgbench"), os.X_OK):
            raise BenchSetupError("pgbench is missing from the PostgreSQL 15 binaries")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = [name for name in RUN_ORDER if name in args.only]
    options = Options(
        reps=args.reps,
        soak_minutes=args.soak_minutes,
        idle_seconds=args.idle_seconds,
        wrk_seconds=args.wrk_seconds,
        keep_dirs=keep_dirs(),
    )
    flavours = flavours_from_env()
    try:
        preflight(selected, args.soak_minutes)
        for flavour in flavours:
            flavour.preflight()
    except (BenchSetupError, RuntimeError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _raise_interrupt)
    meta: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "options": {
            "reps": args.reps,
            "only": selected,
            "soak_minutes": args.soak_minutes,
            "idle_seconds": args.idle_seconds,
            "wrk_seconds": args.wrk_seconds,
        },
        "profiles": PROFILES,
        "extra_config": EXTRA,
        "flavours": [f.name for f in flavours],
    }
    runs: list[Results] = []
    etcd = Etcd3Server()
    started = time.monotonic()
    interrupted = False
    try:
        etcd.start()
        log(f"etcd (v3) on 127.0.0.1:{etcd.members[0].client_port}, pid {etcd.members[0].process.pid}")  # type: ignore[union-attr]
        for flavour in flavours:
            bench = Bench(options, flavour, etcd)
            runs.append(bench.results)
            try:
                for name in selected:
                    log(f"== {flavour.name}: {name}")
                    try:
                        SCENARIO_FUNCTIONS[name](bench)
                    except Exception as exc:
                        bench.fail(name, exc)
                        bench.close()  # the next scenario starts on fresh clusters
                    meta["elapsed_s"] = round(time.monotonic() - started, 1)
                    write_json(args.json, meta, runs, None)
            finally:
                bench.close()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping everything the bench started")
    finally:
        if options.keep_dirs:
            etcd.stop()
            log(f"kept {etcd.dir}")
        else:
            etcd.close()

    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["interrupted"] = interrupted
    ratio_rows = ratios(runs[0], runs[1]) if len(runs) == 2 else None
    write_json(args.json, meta, runs, ratio_rows)
    for results in runs:
        print(f"\n{results.flavour} — {args.reps} repetition(s); min / median / max")
        print(table(results))
    if ratio_rows is not None:
        print("\nhaven / Patroni (medians)")
        print(ratio_table(ratio_rows))
    print(f"\nJSON: {args.json}")
    failed = interrupted or any(r.errors for r in runs)
    return 1 if failed else 0

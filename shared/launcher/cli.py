"""`haven`: run one node in the foreground, or check a configuration.

haven FILE                    render the node's supervisord configuration and run it (SIGTERM stops the node)
haven --validate-config FILE  print each problem with its key and rule; exit 1 when there are errors
haven --version
"""

from __future__ import annotations

import argparse
import os
import sys

from shared.config import ConfigError, NodeConfig
from shared.config.load import read_sources
from shared.config.schema import validate_node
from shared.launcher import accounts as acc
from shared.launcher.render import default_run_dir, render, write_node_config
from shared.protocol.endpoints import check_run_dir
from shared.version import PATRONI_API_VERSION, __version__


def validate(path: str | None) -> int:
    try:
        data = read_sources(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    problems = validate_node(data)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if any(p.severity == "error" for p in problems) else 0


def run_node(path: str | None) -> int:
    try:
        config = NodeConfig.load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"haven: {problem}", file=sys.stderr)
        return 1
    run_dir = default_run_dir(config)
    if reason := check_run_dir(run_dir):
        print(f"haven: haven.run_dir {run_dir!r}: {reason}", file=sys.stderr)
        return 1
    accounts, problems = acc.resolve(config)
    for problem in problems:
        print(f"haven: {problem}", file=sys.stderr)
    if problems:
        return 1
    log_dir = str(config.haven.get("log_dir") or run_dir)
    acc.prepare(config, accounts, run_dir, log_dir)
    config_path = write_node_config(config, accounts, run_dir, path)
    conf = os.path.join(run_dir, "supervisord.conf")
    with open(conf, "w") as f:
        f.write(render(config, accounts, run_dir, log_dir, config_path))
    os.chmod(conf, 0o600)
    sys.stdout.flush()
    # supervisord in this Python, with SIGHUP as a reload of the node (shared/launcher/supervise.py)
    os.execv(sys.executable, [sys.executable, "-m", "shared.launcher.supervise", "-n", "-c", conf])
    return 0  # not reached


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="haven", description="Run one haven node in the foreground.")
    parser.add_argument("config", nargs="?", help="YAML configuration file or directory (else PATRONI_* environment)")
    parser.add_argument("--validate-config", action="store_true", help="check the configuration and exit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    args = parser.parse_args(argv)
    if args.version:
        print(f"haven {__version__} (Patroni {PATRONI_API_VERSION} compatible)")
        raise SystemExit(0)
    if args.validate_config:
        raise SystemExit(validate(args.config))
    raise SystemExit(run_node(args.config))

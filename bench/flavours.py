"""What is benchmarked: haven nodes (`haven FILE`, tests/support/cluster.py) or Patroni nodes (`patroni FILE`)
configured the same way: the same node_config() (Patroni's YAML is the format haven reads), the same etcd,
PostgreSQL settings and DCS profile, their own scope and ports. Only the start of a node differs."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from typing import Any

import yaml

from tests.support.cluster import REPO, Cluster, Node, haven_binary
from tests.support.dcs_servers import DcsServer
from tests.support.postgres import is_root

PATRONI_DEFAULTS = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10}
HAVEN_FAST = {"ttl": 6, "loop_wait": 1, "retry_timeout": 2}
PROFILES: dict[str, dict[str, Any]] = {
    "defaults": {**PATRONI_DEFAULTS, "maximum_lag_on_failover": 1048576},
    "fast": {**HAVEN_FAST, "maximum_lag_on_failover": 1048576},
}
# merged into every node's configuration, for both flavours: a former primary rejoins through pg_rewind
EXTRA: dict[str, Any] = {"postgresql": {"use_pg_rewind": True}}


class BenchSetupError(RuntimeError):
    pass


class Flavour:
    """haven: the nodes of tests/support/cluster.py as they are."""

    name = "haven"

    def preflight(self) -> None:
        binary = haven_binary()
        if shutil.which(binary) is None:
            raise BenchSetupError(f"{binary} not found: run `make setup-test` first")

    def cluster(self, server: DcsServer, profile: str, tag: str) -> Cluster:
        scope = f"bench-{self.name}-{tag}-{uuid.uuid4().hex[:6]}"
        return Cluster(3, scope=scope, dcs=dict(PROFILES[profile]), dcs_server=server, extra=EXTRA)


class PatroniNode(Node):
    """A Node started as `patroni FILE` (as the postgres user when we are root: PostgreSQL refuses root)."""

    patroni_binary: str = "patroni"

    def start(self) -> None:
        self.log_path = self.base / f"{self.name}.log"
        node_dir = self.base / self.name
        for path in (node_dir, self.run_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            if is_root():
                pw = pwd.getpwnam("postgres")
                os.chown(path, pw.pw_uid, pw.pw_gid)
        cmd = [self.patroni_binary, str(self.config_path)]
        env = dict(os.environ)
        if is_root():
            pw = pwd.getpwnam("postgres")
            cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--", *cmd]
            env.update(HOME=pw.pw_dir, USER="postgres", LOGNAME="postgres")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps the file
        self.proc = subprocess.Popen(  # setpriv execs: proc.pid is patroni's pid
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env, start_new_session=True
        )
        log.close()


class PatroniFlavour(Flavour):
    name = "patroni"

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def preflight(self) -> None:
        found = shutil.which(self.binary)
        if found is None or not os.access(found, os.X_OK):
            raise BenchSetupError(
                f"BENCH_PATRONI={self.binary!r} is not an executable: install Patroni with its etcd3 extra "
                "(pip install 'patroni[etcd3]' into a virtualenv the postgres user can read) and point BENCH_PATRONI "
                "at its `patroni`, or unset BENCH_PATRONI"
            )
        self.binary = os.path.abspath(found)
        cmd = [self.binary, "--version"]
        if is_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchSetupError(f"`{' '.join(cmd)}` failed: {exc}") from None
        if done.returncode != 0:
            raise BenchSetupError(
                f"`{' '.join(cmd)}` failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:500]}"
                + (" (the postgres user must be able to run it)" if is_root() else "")
            )

    def cluster(self, server: DcsServer, profile: str, tag: str) -> Cluster:
        cluster = super().cluster(server, profile, tag)
        nodes: list[Node] = []
        for node in cluster.nodes:
            config = yaml.safe_load(node.config_path.read_text())
            patroni_config(config, node)
            node.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            patroni_node = PatroniNode(node.spec, node.config_path, node.base)
            patroni_node.patroni_binary = self.binary
            nodes.append(patroni_node)
        cluster.nodes = nodes
        return cluster


def patroni_config(config: dict[str, Any], node: Node) -> None:
    """haven's configuration of a node made Patroni's: the `haven` section goes (Patroni has none), and the
    socket directory haven picks by default (the run directory) is set explicitly."""
    config.pop("haven", None)
    parameters = config.setdefault("postgresql", {}).setdefault("parameters", {})
    parameters.setdefault("unix_socket_directories", str(node.run_dir))


def flavours_from_env() -> list[Flavour]:
    flavours: list[Flavour] = [Flavour()]
    patroni = os.environ.get("BENCH_PATRONI")
    if patroni:
        flavours.append(PatroniFlavour(patroni))
    return flavours

"""What the scenarios share: the options, the etcd server, the clusters (one per DCS profile, started when first
asked for and reused by the scenarios that follow), and cleanup."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass

from bench.flavours import Flavour
from bench.probes import create_probe_table
from bench.results import Results
from tests.support.cluster import Cluster, Node, NodeDied
from tests.support.etcd_server import Etcd3Server
from tests.support.waiting import wait_until

HEALTHY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Options:
    reps: int
    soak_minutes: float
    idle_seconds: float
    wrk_seconds: int
    keep_dirs: bool


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_healthy(cluster: Cluster, timeout: float = HEALTHY_TIMEOUT_S, interval: float = 0.05) -> Node:
    """One leader and every running node a streaming replica (Cluster.healthy), failing fast if a node exits."""
    started = [n for n in cluster.nodes if n.proc is not None]

    def check() -> bool:
        dead = [n.name for n in started if not n.is_running]
        if dead:
            raise NodeDied(f"nodes exited: {', '.join(dead)}")
        return cluster.healthy()

    wait_until(check, timeout, interval=interval, what="one leader and streaming replicas", fail_on=NodeDied)
    leader = wait_until(cluster.leader, 10, interval=interval, what="the leader's GET /primary")
    assert leader is not None
    return leader


def log_tail(cluster: Cluster, lines: int = 40) -> str:
    out = []
    for node in cluster.nodes:
        with contextlib.suppress(OSError):
            text = node.log_path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"===== {node.name} ({node.log_path}) =====\n" + "\n".join(text))
    return "\n".join(out)


class Bench:
    def __init__(self, options: Options, flavour: Flavour, etcd: Etcd3Server) -> None:
        self.options = options
        self.flavour = flavour
        self.etcd = etcd
        self.results = Results(flavour.name)
        self._clusters: dict[str, Cluster] = {}

    @property
    def etcd_port(self) -> int:
        return self.etcd.members[0].client_port

    def etcd_pid(self) -> int:
        process = self.etcd.members[0].process
        if process is None or process.poll() is not None:
            raise RuntimeError("the bench's etcd is not running")
        return process.pid

    # --- clusters -------------------------------------------------------------------------------

    def new_cluster(self, profile: str, tag: str) -> Cluster:
        return self.flavour.cluster(self.etcd, profile, tag)

    def running(self, profile: str) -> Cluster:
        """The shared cluster of this DCS profile, healthy, with the probe table created."""
        cluster = self._clusters.get(profile)
        if cluster is None:
            cluster = self.new_cluster(profile, profile)
            self._clusters[profile] = cluster
            log(f"{self.flavour.name}: starting a 3-node cluster, profile {profile} (scope {cluster.scope})")
            cluster.start()
        leader = wait_healthy(cluster)
        create_probe_table(leader)
        return cluster

    def discard(self, profile: str) -> None:
        cluster = self._clusters.pop(profile, None)
        if cluster is not None:
            self.destroy(cluster)

    def destroy(self, cluster: Cluster) -> None:
        cluster.stop()
        if not self.options.keep_dirs:
            subprocess.run(["rm", "-rf", str(cluster.base)], check=False)
        else:
            log(f"kept {cluster.base}")

    def fail(self, name: str, exc: BaseException) -> None:
        """Record a scenario's failure, log it with the tails of the clusters' logs."""
        self.results.errors.setdefault(name, f"{type(exc).__name__}: {exc}")
        log(f"{self.flavour.name} {name} FAILED: {exc}\n{traceback.format_exc()}")
        for cluster in self._clusters.values():
            log(log_tail(cluster))

    def close(self) -> None:
        for profile in list(self._clusters):
            self.discard(profile)


def keep_dirs() -> bool:
    return os.environ.get("HAVEN_KEEP_TEST_DIRS") == "1"

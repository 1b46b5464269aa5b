"""`make demo`: three haven nodes on 127.0.0.1 with the embedded Raft DCS.

REST API on 8008, 8009, 8010; PostgreSQL on 5432, 5433, 5434; Raft on 2222, 2223, 2224. It waits for one
leader and two streaming replicas, prints `havenctl list`, and runs until Ctrl-C, then stops every process
it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.cluster import Cluster, NodeSpec, havenctl_binary  # noqa: E402
from tests.support.postgres import make_shared_tmpdir  # noqa: E402
from tests.support.waiting import Timeout  # noqa: E402

SPECS = [NodeSpec(f"node{i + 1}", 8008 + i, 5432 + i, 2222 + i) for i in range(3)]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> int:
    busy = [p for s in SPECS for p in (s.rest_port, s.pg_port, s.raft_port) if port_in_use(p)]
    if busy:
        print(f"demo: ports {busy} are in use on 127.0.0.1; stop what uses them and try again", file=sys.stderr)
        return 1
    base = Path(os.environ.get("HAVEN_DEMO_DIR") or make_shared_tmpdir("haven-demo-"))
    cluster = Cluster(
        scope="demo",
        base=base,
        specs=SPECS,
        dcs={"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576},
    )
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"demo: starting 3 nodes in {base} (logs: {base}/node*.log)")
    cluster.start()
    try:
        try:
            leader = cluster.wait_healthy(timeout=120)
        except Timeout:
            print("demo: the cluster did not become healthy within 120 s; see the logs above", file=sys.stderr)
            return 1
        ctl = [havenctl_binary(), "-c", str(cluster.nodes[0].config_path)]
        subprocess.run([*ctl, "list"], check=False)
        pids = {n.name: n.proc.pid for n in cluster.nodes if n.proc}
        print(
            f"""
The cluster is up: {leader.name} is the leader. Things to try in another terminal:
  {" ".join(ctl)} list -W
      watch the cluster
  curl -s http://127.0.0.1:{leader.spec.rest_port}/patroni
      the leader's status (GET /patroni)
  psql -h 127.0.0.1 -p {leader.spec.pg_port} -U postgres
      connect to the leader (password: postgres-secret)
  kill -TERM {pids[leader.name]}
      stop the leader node cleanly: a replica takes over at once
  pkill -KILL -f {base}/{leader.name}
      lose the leader node: a replica takes over once its leader key expires (ttl 30 s)
Press Ctrl-C to stop every node."""
        )
        while not stopping:
            time.sleep(0.5)
    finally:
        print("demo: stopping the nodes")
        cluster.stop()
        if not os.environ.get("HAVEN_DEMO_DIR"):
            subprocess.run(["rm", "-rf", str(base)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

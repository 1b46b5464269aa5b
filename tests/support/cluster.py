"""Real haven nodes for tests and the demo: each node is `haven FILE` (supervisord + five programs) with
its own ports, data and run directories. Everything started here is stopped here, by pid."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from shared.config import deep_merge
from tests.support.ports import free_port
from tests.support.postgres import make_shared_tmpdir, pg_bin_dir
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SUPERUSER = ("postgres", "postgres-secret")
REPLICATION = ("replicator", "replicator-secret")


def haven_binary() -> str:
    candidate = Path(sys.executable).parent / "haven"
    return str(candidate) if candidate.exists() else "haven"


def havenctl_binary() -> str:
    candidate = Path(sys.executable).parent / "havenctl"
    return str(candidate) if candidate.exists() else "havenctl"


def freeze_then_kill(procs: list[psutil.Process]) -> None:
    """SIGSTOP every process first, then SIGKILL them all: none of them gets to react to the others' death."""
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGSTOP)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)


class NodeDied(Exception):
    pass


@dataclass
class NodeSpec:
    name: str
    rest_port: int
    pg_port: int
    raft_port: int


def node_config(
    spec: NodeSpec,
    partners: list[int],
    base: Path,
    scope: str,
    dcs: dict[str, Any],
    dcs_section: tuple[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A node's configuration; the DCS is the embedded Raft unless `dcs_section` = (kind, section) is given."""
    node_dir = base / spec.name
    kind, section = dcs_section or (
        "raft",
        {
            "self_addr": f"127.0.0.1:{spec.raft_port}",
            "partner_addrs": [f"127.0.0.1:{p}" for p in partners],
            "data_dir": str(node_dir / "raft"),
            "password": "raft-secret",
        },
    )
    return {
        "scope": scope,
        "namespace": "/service",
        "name": spec.name,
        "restapi": {"listen": f"127.0.0.1:{spec.rest_port}", "connect_address": f"127.0.0.1:{spec.rest_port}"},
        kind: section,
        "bootstrap": {
            "dcs": dcs,
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{spec.pg_port}",
            "connect_address": f"127.0.0.1:{spec.pg_port}",
            "data_dir": str(node_dir / "data"),
            "bin_dir": pg_bin_dir(),
            "pgpass": str(node_dir / "run" / "pgpass"),
            "authentication": {
                "superuser": {"username": SUPERUSER[0], "password": SUPERUSER[1]},
                "replication": {"username": REPLICATION[0], "password": REPLICATION[1]},
            },
            "parameters": {"max_wal_senders": 10, "wal_keep_size": "128MB", "shared_buffers": "32MB"},
            "pg_hba": [
                "local all all trust",
                "host all all 127.0.0.1/32 md5",
                "host replication replicator 127.0.0.1/32 md5",
            ],
        },
        "watchdog": {"mode": "off"},
        "haven": {"run_dir": str(node_dir / "run")},
    }


@dataclass
class Node:
    spec: NodeSpec
    config_path: Path
    base: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    tls: ssl.SSLContext | None = None  # the client context when the node's REST API serves HTTPS

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def data_dir(self) -> Path:
        return self.base / self.name / "data"

    @property
    def run_dir(self) -> Path:
        return self.base / self.name / "run"

    # --- processes ------------------------------------------------------------------------------

    def start(self) -> None:
        self.log_path = self.base / f"{self.name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps the file
        self.proc = subprocess.Popen(
            [haven_binary(), str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
            start_new_session=True,
        )
        log.close()

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def supervisord(self) -> psutil.Process | None:
        if not self.is_running or self.proc is None:
            return None
        try:
            return psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            return None

    def program(self, name: str) -> psutil.Process | None:
        """The live process of one program (dcs_proxy, postmaster, ha_loop, restapi, watchdogd)."""
        sup = self.supervisord()
        if sup is None:
            return None
        for child in sup.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if f"services.{name}" in " ".join(child.cmdline()):
                    return child
        return None

    def postmaster_pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def all_processes(self) -> list[psutil.Process]:
        procs: list[psutil.Process] = []
        sup = self.supervisord()
        if sup is not None:
            procs.append(sup)
            with contextlib.suppress(psutil.NoSuchProcess):
                procs += sup.children(recursive=True)
        pm = self.postmaster_pid()
        if pm is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                post = psutil.Process(pm)
                procs += [post, *post.children(recursive=True)]
        return procs

    def kill_all(self) -> None:
        """Node loss: freeze every process of the node, then SIGKILL them all (no one gets to react)."""
        procs = self.all_processes()
        freeze_then_kill(procs)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        psutil.wait_procs(procs, timeout=10)

    def stop(self, timeout: float = 90) -> None:
        """SIGTERM to the node (supervisord), wait; whatever is left is killed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        leftovers = self.all_processes()
        for p in leftovers:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(leftovers, timeout=10)

    # --- clients --------------------------------------------------------------------------------

    def rest(
        self,
        path: str,
        method: str = "GET",
        timeout: float = 2.0,
        body: Any = None,
        auth: tuple[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        scheme = "https" if self.tls is not None else "http"
        req = urllib.request.Request(f"{scheme}://127.0.0.1:{self.spec.rest_port}{path}", method=method, data=data)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.tls) as resp:
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode(errors="replace")

    def brain_status(self) -> dict[str, Any]:
        """node_status straight from the node's ha_loop (the tests run as root or as the node's user)."""
        import zmq

        from shared.protocol.endpoints import Service, router_path
        from shared.protocol.transport import Client

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            client = Client(ctx, router_path(str(self.run_dir), Service.HA_LOOP))
            status = client.call("ha.status", {}, timeout=5)
            client.close()
            return status
        finally:
            ctx.destroy(linger=0)

    def ticks(self) -> int:
        return int(self.brain_status()["tick"]["count"])

    def patroni(self) -> dict[str, Any]:
        status, body = self.rest("/patroni")
        assert status == 200 and isinstance(body, dict)
        return body

    def connect(self, dbname: str = "postgres", timeout: int = 3) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.spec.pg_port,
            user=SUPERUSER[0],
            password=SUPERUSER[1],
            dbname=dbname,
            connect_timeout=timeout,
        )

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(query, args or None)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def accepts_writes(self) -> bool:
        try:
            self.sql("CREATE TABLE IF NOT EXISTS haven_probe (id int); INSERT INTO haven_probe VALUES (1)")
            return True
        except Exception:
            return False


_QUIET = ('"reason": "replica_ok"', '"reason": "leader_ok"')


class Cluster:
    def __init__(
        self,
        size: int = 3,
        *,
        scope: str = "batman",
        dcs: dict[str, Any] | None = None,
        base: Path | None = None,
        specs: list[NodeSpec] | None = None,
        dcs_server: Any = None,
        extra: dict[str, Any] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """dcs_server: a started tests.support.dcs_servers.DcsServer; None for the embedded Raft.
        extra: configuration merged into every node's (e.g. restapi.authentication).
        tls: the tests' client context when extra makes the REST APIs serve HTTPS."""
        self.base = base or make_shared_tmpdir("haven-cluster-")
        self.scope = scope
        self.dcs = dcs or {"ttl": 20, "loop_wait": 2, "retry_timeout": 5, "maximum_lag_on_failover": 1048576}
        specs = specs or [NodeSpec(f"node{i + 1}", free_port(), free_port(), free_port()) for i in range(size)]
        self.nodes: list[Node] = []
        for spec in specs:
            partners = [s.raft_port for s in specs if s is not spec]
            path = self.base / f"{spec.name}.yml"
            section = (dcs_server.kind, dcs_server.section(spec.name)) if dcs_server is not None else None
            config = deep_merge(node_config(spec, partners, self.base, scope, self.dcs, section), extra or {})
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            self.nodes.append(Node(spec, path, self.base, tls=tls))

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cluster_json(self, nodes: list[Node] | None = None) -> dict[str, Any] | None:
        for node in nodes or self.nodes:
            if not node.is_running:
                continue
            with contextlib.suppress(Exception):
                status, body = node.rest("/cluster")
                if status == 200 and isinstance(body, dict):
                    return body
        return None

    def leader(self, among: list[Node] | None = None) -> Node | None:
        """The node whose GET /primary answers 200, if exactly one does."""
        leaders = []
        for node in among or self.nodes:
            if not node.is_running:
                continue
            with contextlib.suppress(Exception):
                if node.rest("/primary")[0] == 200:
                    leaders.append(node)
        return leaders[0] if len(leaders) == 1 else None

    def healthy(self, among: list[Node] | None = None) -> bool:
        """One leader and every other running node a streaming replica, as /cluster shows it."""
        nodes = [n for n in (among or self.nodes) if n.is_running]
        body = self.cluster_json(nodes)
        if body is None:
            return False
        members = {m["name"]: m for m in body.get("members", [])}
        if len(members) < len(nodes):
            return False
        leaders = [m for m in members.values() if m["role"] == "leader" and m["state"] == "running"]
        standbys = ("replica", "sync_standby", "quorum_standby")
        streaming = [m for m in members.values() if m["role"] in standbys and m["state"] == "streaming"]
        return len(leaders) == 1 and len(streaming) == len(nodes) - 1 and self.leader(nodes) is not None

    def wait_healthy(self, timeout: float = 90, among: list[Node] | None = None) -> Node:
        started = [n for n in (among or self.nodes) if n.proc is not None]

        def check() -> bool:
            dead = [n.name for n in started if not n.is_running]
            if dead:
                raise NodeDied(f"nodes exited: {', '.join(dead)}")
            return self.healthy(among)

        try:
            wait_until(check, timeout, interval=0.25, what="one leader and streaming replicas", fail_on=NodeDied)
        except NodeDied as exc:
            raise AssertionError(str(exc)) from None
        leader = self.leader(among)
        assert leader is not None
        return leader

    def logs(self) -> str:
        """The tail of every node's log, without the steady-state tick lines that would crowd out the story."""
        out = []
        for node in self.nodes:
            with contextlib.suppress(OSError):
                lines = node.log_path.read_text(errors="replace").splitlines()
                kept = [line for line in lines if not any(quiet in line for quiet in _QUIET)]
                out.append(f"===== {node.name} =====\n" + "\n".join(kept)[-30000:])
        return "\n".join(out)


@contextlib.contextmanager
def running_cluster(size: int = 3, **kw: Any) -> Iterator[Cluster]:
    cluster = Cluster(size, **kw)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if os.environ.get("HAVEN_KEEP_TEST_DIRS") != "1":
            subprocess.run(["rm", "-rf", str(cluster.base)], check=False)

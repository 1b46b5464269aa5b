"""Probes that timestamp the first moment something became true, each polling in its own thread.

WriteProbe: one PostgreSQL connection per node (kept across attempts: a replica's session can write as soon as
it is promoted), an autocommitted INSERT every `interval`; the first acknowledged INSERT wins.
StreamingProbe: GET /patroni (and GET /cluster) of a node until it shows that node as a streaming replica.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Self

import psycopg2

from tests.support.cluster import SUPERUSER, Cluster, Node

PROBE_TABLE = "bench_probe"
STANDBY_ROLES = ("replica", "sync_standby", "quorum_standby", "standby_leader")


def create_probe_table(leader: Node) -> None:
    leader.sql(f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} (at timestamptz DEFAULT now(), node text)")


class _Poller:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.at: float | None = None  # monotonic time of the first success
        self.winner: str | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _succeeded(self, who: str) -> None:
        now = time.monotonic()
        with self._lock:
            if self.at is None:
                self.at, self.winner = now, who
        self._done.set()

    def start(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def wait(self, timeout: float) -> float | None:
        self._done.wait(timeout)
        return self.at

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WriteProbe(_Poller):
    """The first acknowledged INSERT on any of `nodes`."""

    def __init__(self, nodes: list[Node], interval: float = 0.01) -> None:
        super().__init__(interval)
        self.nodes = nodes
        self.attempts = 0
        self.last_errors: dict[str, str] = {}
        for node in nodes:
            self._threads.append(threading.Thread(target=self._run, args=(node,), daemon=True, name=f"w-{node.name}"))

    def _run(self, node: Node) -> None:
        conn: Any = None
        try:
            while not self._stop.is_set() and not self._done.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = psycopg2.connect(
                            host="127.0.0.1",
                            port=node.spec.pg_port,
                            user=SUPERUSER[0],
                            password=SUPERUSER[1],
                            dbname="postgres",
                            connect_timeout=1,
                            options="-c statement_timeout=1000",
                        )
                        conn.autocommit = True
                    with conn.cursor() as cur:
                        with self._lock:
                            self.attempts += 1
                        cur.execute(f"INSERT INTO {PROBE_TABLE} (node) VALUES (%s)", (node.name,))
                    self._succeeded(node.name)
                    return
                except psycopg2.Error as exc:
                    self.last_errors[node.name] = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    if conn is not None and (conn.closed or isinstance(exc, psycopg2.OperationalError)):
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
                self._stop.wait(self.interval)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


def is_streaming_replica(cluster: Cluster, node: Node) -> bool:
    """The node's own GET /patroni says replica + replication_state streaming, or GET /cluster says so."""
    with contextlib.suppress(Exception):
        status, body = node.rest("/patroni", timeout=1.0)
        if (
            status == 200
            and isinstance(body, dict)
            and body.get("role") in STANDBY_ROLES
            and body.get("replication_state") == "streaming"
        ):
            return True
    with contextlib.suppress(Exception):
        status, body = node.rest("/cluster", timeout=1.0)
        if status == 200 and isinstance(body, dict):
            for member in body.get("members", []):
                if member.get("name") == node.name:
                    return bool(member.get("role") in STANDBY_ROLES and member.get("state") == "streaming")
    return False


class StreamingProbe(_Poller):
    """The first moment `node` shows as a streaming replica."""

    def __init__(self, cluster: Cluster, node: Node, interval: float = 0.02) -> None:
        super().__init__(interval)
        self.cluster = cluster
        self.node = node
        self._threads.append(threading.Thread(target=self._run, daemon=True, name=f"s-{node.name}"))

    def _run(self) -> None:
        while not self._stop.is_set():
            if is_streaming_replica(self.cluster, self.node):
                self._succeeded(self.node.name)
                return
            self._stop.wait(self.interval)

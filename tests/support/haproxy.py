"""HAProxy in front of PostgreSQL servers, routed by the REST health checks (features.md K1), for durability tests
and benchmarks.

One `listen` section in TCP mode on a free loopback port; every server is health-checked with
`option httpchk <method> <path>` + `http-check expect status 200` against its REST port, with
`inter 100ms fall 2 rise 2 on-marked-down shutdown-sessions`. HAProxy runs in the foreground (`-db`), as our
child, in its own temporary directory (haproxy.cfg, haproxy.pid, haproxy.log, the stats socket); it is stopped by
pid. Server states come from the admin socket (`show stat`); a stats page is served on a second free port too.

    with HAProxy([Backend("node1", pg_port=..., rest_port=...)]) as proxy:
        proxy.up_servers()      # ["node1"] once its GET /primary answers 200
        proxy.dsn(user="postgres", dbname="postgres")
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from tests.support.ports import free_port
from tests.support.waiting import wait_until

HAPROXY_BIN = os.environ.get("HAVEN_HAPROXY_BIN", "/usr/sbin/haproxy")
_NOT_CHECKED = {"", "INI"}  # check_status before the first check has completed ("* " marks a check in progress)


class HAProxyDied(Exception):
    pass


@dataclass(frozen=True)
class Backend:
    """One PostgreSQL server and the REST API that decides whether it gets traffic."""

    name: str
    pg_port: int
    rest_port: int
    pg_host: str = "127.0.0.1"
    rest_host: str = "127.0.0.1"


class _Spec(Protocol):
    @property
    def pg_port(self) -> int: ...

    @property
    def rest_port(self) -> int: ...


class _NodeLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> _Spec: ...


def backends_for(nodes: Iterable[_NodeLike]) -> list[Backend]:
    """Backends for tests.support.cluster nodes (everything on 127.0.0.1)."""
    return [Backend(node.name, node.spec.pg_port, node.spec.rest_port) for node in nodes]


def render_config(
    backends: Sequence[Backend],
    *,
    port: int,
    stats_port: int,
    stats_socket: Path,
    listen_name: str = "primary",
    check_method: str = "GET",
    check_path: str = "/primary",
    inter_ms: int = 100,
    fall: int = 2,
    rise: int = 2,
) -> str:
    """haproxy.cfg text: one TCP listener for the role, one stats page, an admin socket."""
    servers = []
    for b in backends:
        addr = "" if b.rest_host == b.pg_host else f" addr {b.rest_host}"
        servers.append(f"    server {b.name} {b.pg_host}:{b.pg_port} maxconn 100 check{addr} port {b.rest_port}")
    return "\n".join(
        [
            "global",
            "    maxconn 1000",
            f"    stats socket {stats_socket} mode 600 level admin",
            "",
            "defaults",
            "    mode tcp",
            "    retries 2",
            "    timeout connect 1s",
            "    timeout client 30m",
            "    timeout server 30m",
            "    timeout check 1s",
            "",
            "listen stats",
            "    mode http",
            f"    bind 127.0.0.1:{stats_port}",
            "    stats enable",
            "    stats uri /",
            "    stats refresh 1s",
            "",
            f"listen {listen_name}",
            f"    bind 127.0.0.1:{port}",
            f"    option httpchk {check_method} {check_path}",
            "    http-check expect status 200",
            f"    default-server inter {inter_ms}ms fall {fall} rise {rise} on-marked-down shutdown-sessions",
            *servers,
            "",
        ]
    )


class HAProxy:
    """A private HAProxy: start() it (or use `with`), read `port`, ask up_servers(), stop() it."""

    def __init__(
        self,
        backends: Sequence[Backend],
        *,
        check_path: str = "/primary",
        check_method: str = "GET",
        listen_name: str | None = None,
        inter_ms: int = 100,
        fall: int = 2,
        rise: int = 2,
        binary: str = HAPROXY_BIN,
    ) -> None:
        """check_path: "/primary" routes to the leader, "/replica" (or "/read-only", ...) to the others.
        check_method: "GET" or "OPTIONS" (both answer the same status in the REST API).
        listen_name: the proxy's name in the stats (default: the check path without its slash)."""
        if not backends:
            raise ValueError("HAProxy needs at least one backend")
        self.backends = list(backends)
        self.binary = binary
        self.listen_name = listen_name or check_path.strip("/").replace("/", "_") or "primary"
        self.port = free_port()
        self.stats_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="haven-haproxy-"))
        self.config_path = self.dir / "haproxy.cfg"
        self.pid_path = self.dir / "haproxy.pid"
        self.log_path = self.dir / "haproxy.log"
        self.socket_path = self.dir / "admin.sock"
        self.config_path.write_text(
            render_config(
                self.backends,
                port=self.port,
                stats_port=self.stats_port,
                stats_socket=self.socket_path,
                listen_name=self.listen_name,
                check_method=check_method,
                check_path=check_path,
                inter_ms=inter_ms,
                fall=fall,
                rise=rise,
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}/"

    def start(self, timeout: float = 10.0, *, wait_checked: bool = True) -> HAProxy:
        """Run HAProxy; return once it accepts TCP on `port` and, with wait_checked, once every server has had
        its first health check (until then HAProxy shows every server "UP 1/2" and routes to it whatever its REST API
        says)."""
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy.cfg rejected: {check.stderr.strip() or check.stdout.strip()}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self.proc.pid}\n")  # -db writes no pidfile of its own
        try:
            wait_until(self._accepts, timeout, what=f"HAProxy on port {self.port}", fail_on=HAProxyDied)
            if wait_checked:
                wait_until(self._all_checked, timeout, what="the first health check of every server")
        except BaseException:
            self.stop()
            raise
        return self

    def _accepts(self) -> bool:
        if not self.is_running:
            raise HAProxyDied(f"HAProxy exited: {self.logs()[-2000:]}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def _all_checked(self) -> bool:
        rows = self._server_rows()
        return len(rows) == len(self.backends) and all(
            r["check_status"].removeprefix("* ") not in _NOT_CHECKED for r in rows
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (HAProxy's hard stop: sessions are closed at once), then SIGKILL; remove the directory."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        if os.environ.get("HAVEN_KEEP_TEST_DIRS") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what it sees ---------------------------------------------------------------------------

    def admin(self, command: str, timeout: float = 2.0) -> str:
        """One command on the admin socket ("show stat", "disable server primary/node1", ...); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def _server_rows(self) -> list[dict[str, str]]:
        text = self.admin("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return [
            r for r in rows if r.get("pxname") == self.listen_name and r.get("svname") not in ("FRONTEND", "BACKEND")
        ]

    def server_states(self) -> dict[str, str]:
        """HAProxy's status of every server: "UP", "DOWN", "UP 1/2" (going down), "DOWN 1/2" (going up), "MAINT"."""
        return {r["svname"]: r["status"] for r in self._server_rows()}

    def up_servers(self) -> list[str]:
        """The servers HAProxy routes new connections to (UP, including UP-but-going-down), in config order."""
        states = self.server_states()
        return [b.name for b in self.backends if states.get(b.name, "").startswith("UP")]

    def wait_up(self, names: Iterable[str], timeout: float = 10.0) -> float:
        """Wait until exactly `names` are UP; the seconds it took."""
        wanted = sorted(names)
        started = time.monotonic()
        wait_until(lambda: sorted(self.up_servers()) == wanted, timeout, interval=0.01, what=f"UP servers {wanted}")
        return time.monotonic() - started

    def dsn(self, **params: str | int) -> str:
        """A libpq DSN for the frontend: host and port, plus `params` (user, dbname, password, ...)."""
        parts = {"host": "127.0.0.1", "port": self.port, **params}
        return " ".join(f"{k}={_quote(str(v))}" for k, v in parts.items())

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _quote(value: str) -> str:
    if value and not any(c in value for c in " '\\"):
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"

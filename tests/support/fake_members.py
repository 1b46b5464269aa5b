"""Small local HTTP servers playing cluster members' REST APIs for havenctl tests: each answers the routes a test
sets, (status, body) or a function of the request, and records every request with its headers and JSON body.
Also the docs' batman cluster played by such members, and the helpers to run havenctl against it."""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from ctl.main import ctl
from tests.support.ports import free_port


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the JSON body, None when there was none

    @property
    def call(self) -> tuple[str, str]:
        return self.method, self.path


Answer = tuple[int, Any]  # body: JSON-able value, or str/bytes sent as text/plain
Route = Answer | Callable[[Request], Answer]


class FakeMember:
    """One member's REST API on a free loopback port."""

    def __init__(self, name: str = "member", tls: tuple[str, str] | None = None) -> None:
        """tls: (certfile, keyfile) to answer HTTPS."""
        self.name = name
        self.scheme = "https" if tls else "http"
        self.port = free_port()
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[Request] = []
        self.closed = False
        self._lock = threading.Lock()
        member = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                request = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with member._lock:
                    member.requests.append(request)
                    route = member.routes.get((self.command, self.path))
                if route is None:
                    status, answer = 404, {"error": "not here"}
                elif callable(route):
                    status, answer = route(request)
                else:
                    status, answer = route
                if isinstance(answer, bytes | str):
                    data = answer.encode() if isinstance(answer, str) else answer
                    kind = "text/plain"
                else:
                    data, kind = json.dumps(answer).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def api_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/patroni"

    def route(self, method: str, path: str, answer: Route) -> None:
        with self._lock:
            self.routes[(method, path)] = answer

    def calls(self, *, unsafe_only: bool = False) -> list[tuple[str, str]]:
        with self._lock:
            return [r.call for r in self.requests if not unsafe_only or r.method != "GET"]

    def bodies(self, method: str, path: str) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests if r.call == (method, path)]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class FakeCluster:
    """Members sharing one GET /cluster body, /config and /history; each also answers GET /patroni."""

    def __init__(self, names: tuple[str, ...], scope: str = "batman") -> None:
        self.scope = scope
        self.members = {name: FakeMember(name) for name in names}
        self.config: dict[str, Any] = {}
        self.history: list[list[Any]] = []
        self.body: dict[str, Any] = {"members": [], "scope": scope}
        self.sysid = "7277694203142172922"
        for member in self.members.values():
            member.route("GET", "/cluster", lambda _r: (200, self.body))
            member.route("GET", "/config", lambda _r: (200, self.config))
            member.route("GET", "/history", lambda _r: (200, self.history))
            member.route("GET", "/patroni", lambda _r, m=member: (200, self.status(m.name)))

    def __getitem__(self, name: str) -> FakeMember:
        return self.members[name]

    def __iter__(self) -> Iterator[FakeMember]:
        return iter(self.members.values())

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = {
            "state": "running",
            "database_system_identifier": self.sysid,
            "patroni": {"version": "3.2.2", "scope": self.scope, "name": name},
        }
        if self.body.get("pause"):
            status["pause"] = True
        return status

    def set_members(self, *members: dict[str, Any], **extra: Any) -> None:
        """The /cluster members; each names its fake by `name` (api_url filled in unless given)."""
        listed = []
        for member in members:
            member = dict(member)
            if member["name"] in self.members:
                member.setdefault("api_url", self.members[member["name"]].api_url)
            listed.append(member)
        self.body = {"members": listed, "scope": self.scope, **extra}

    def unsafe_calls(self) -> dict[str, list[tuple[str, str]]]:
        return {name: m.calls(unsafe_only=True) for name, m in self.members.items() if m.calls(unsafe_only=True)}

    def close(self) -> None:
        for member in self.members.values():
            member.close()


def node(
    name: str, port: int, role: str = "replica", state: str = "streaming", tl: int | None = 5, **extra: Any
) -> Any:
    """A /cluster member as a 3.2 node answers it; the docs' clusters run on 127.0.0.1:5432..5434."""
    member: dict[str, Any] = {"name": name, "role": role, "state": state, "host": "127.0.0.1", "port": port}
    if tl is not None:
        member["timeline"] = tl
    if not role.endswith("leader"):
        member["lag"] = 0
    member.update(extra)
    return member


# -- the docs' batman cluster ------------------------------------------------------------------------------------

NAMES = ("postgresql0", "postgresql1", "postgresql2")
_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{5})? ", re.MULTILINE)
_NEXT_HOUR = re.compile(r"\(e\.g\. \d{4}-\d\d-\d\dT\d\d:\d\d")


def batman_members(tl: int = 5, **extra: Any) -> list[dict[str, Any]]:
    """postgres0.yml, postgres1.yml and postgres2.yml of Patroni's repository on one host (the docs' examples)."""
    return [
        node("postgresql0", 5432, "leader", "running", tl, **extra),
        node("postgresql1", 5433, tl=tl, **extra),
        node("postgresql2", 5434, tl=tl, **extra),
    ]


@pytest.fixture
def batman() -> Iterator[FakeCluster]:
    cluster = FakeCluster(NAMES)
    cluster.set_members(*batman_members())
    cluster.config = {
        "loop_wait": 10,
        "maximum_lag_on_failover": 1048576,
        "postgresql": {
            "pg_hba": ["host replication replicator 127.0.0.1/32 md5", "host all all 0.0.0.0/0 md5"],
            "use_pg_rewind": True,
        },
        "retry_timeout": 10,
        "ttl": 30,
    }
    yield cluster
    cluster.close()


def config_file(tmp_path: Path, cluster: FakeCluster, via: str = "postgresql1", **extra: Any) -> str:
    """A node's configuration: havenctl starts from that node's REST API."""
    path = tmp_path / "postgres.yml"
    config = {"scope": cluster.scope, "restapi": {"connect_address": f"127.0.0.1:{cluster[via].port}"}, **extra}
    path.write_text(yaml.safe_dump(config))
    return str(path)


def havenctl(config: str, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(ctl, ["-c", config, *args], input=input, env=env, prog_name="havenctl")


def normalized(text: str) -> str:
    """Timestamps as TS, the example time of the schedule prompts as (e.g. NEXT-HOUR."""
    return _NEXT_HOUR.sub("(e.g. NEXT-HOUR", _TS.sub("TS ", text))


def table(
    title: str,
    rows: list[str],
    columns: str = "| Member      | Host           | Role    | State     | TL | Lag in MB |",
) -> str:
    """A pretty table of the batman cluster as the docs print it: `rows` are the member lines."""
    rule = re.sub(r"[^|]", "-", columns).replace("|", "+")
    top = rule[0] + title + rule[1 + len(title) :]
    return "\n".join([top, columns, rule, *rows, rule]) + "\n"


TITLE = " Cluster: batman (7277694203142172922) "
HEALTHY = table(
    TITLE,
    [
        "| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |           |",
        "| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |         0 |",
        "| postgresql2 | 127.0.0.1:5434 | Replica | streaming |  5 |         0 |",
    ],
)

"""The postmaster controller as a program, against real PostgreSQL 15 (docs/protocol.md, "postmaster").

Two controllers share one module fixture and these tests run in file order, as one story: bootstrap pm1, clone
pm2 from it, switch over to pm2, follow, re-adopt after a SIGKILL of the controller, stop. Each test says what it
leaves behind. Every process is stopped by pid at the end (controllers, then postmasters from postmaster.pid).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import psycopg2
import pytest
import yaml
import zmq

from services.postmaster.sql import Session, SqlError
from shared.protocol import envelope
from shared.protocol.endpoints import Service, Topic, pub_path, router_path
from shared.protocol.envelope import Request
from shared.protocol.errors import ErrorCode, RemoteError
from shared.protocol.transport import Client, Subscriber
from tests.support.pg_helpers import (
    pg_user_env,
    pg_user_popen_kwargs,
    postmaster_pid,
    stop_postmaster,
    stop_process,
)
from tests.support.ports import free_port
from tests.support.postgres import is_root, make_shared_tmpdir, pg_bin_dir
from tests.support.waiting import wait_until

PYTHON = Path(sys.executable)  # the virtualenv running the tests; readable by postgres (scripts/setup.sh)
SU_PASSWORD = "su'pa%ss\\x"  # a quote, a percent sign and a backslash: quoting must hold everywhere
REPL_PASSWORD = "rep pass:1"
HBA = [
    "local all all trust",
    "host all all 127.0.0.1/32 md5",
    "host replication replicator 127.0.0.1/32 md5",
]
MARKERS = {"HAVEN_TEST_MARKER": "1", "PATRONI_TESTMARKER": "1", "KUBERNETES_TEST_MARKER": "1"}
TIMINGS: dict[str, float] = {}
NO_SLOTS = {"use_slots": False}  # this story has no brain to create the replicas' slots (test_postmaster_slots.py)


class Node:
    """One controller (a subprocess running as postgres) with its own run and data directories."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        base: Path,
        name: str,
        parameters: dict[str, Any] | None = None,
        *,
        postgresql: dict[str, Any] | None = None,
        dcs: dict[str, Any] | None = None,
        **bootstrap: Any,
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.dir = base / name
        self.dir.mkdir(mode=0o755)
        if is_root():
            shutil.chown(self.dir, "postgres", "postgres")
        self.data_dir = self.dir / "data"
        self.port = free_port()
        self.config_path = self.dir / "haven.yml"
        self.log_path = self.dir / "controller.log"
        self.parameters = {"max_connections": 500, "shared_buffers": "16MB", **(parameters or {})}
        config = self._config(bootstrap)
        config["postgresql"].update(postgresql or {})
        config["bootstrap"]["dcs"].update(dcs or {})
        self.config_path.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Client | None = None

    def _config(self, bootstrap: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": self.name,
            "scope": "pmtest",
            "raft": {"self_addr": f"127.0.0.1:{free_port()}"},
            "restapi": {"listen": f"127.0.0.1:{free_port()}", "connect_address": f"127.0.0.1:{free_port()}"},
            "bootstrap": {
                "dcs": {
                    "ttl": 30,
                    "loop_wait": 10,
                    "retry_timeout": 10,
                    "postgresql": {"parameters": {"max_connections": 40}},
                },
                "initdb": ["data-checksums", {"encoding": "UTF8"}],
                **bootstrap,
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port}",
                "connect_address": f"127.0.0.1:{self.port}",
                "data_dir": str(self.data_dir),
                "bin_dir": pg_bin_dir(),
                "pg_ctl_timeout": 30,
                "authentication": {
                    "superuser": {"username": "postgres", "password": SU_PASSWORD},
                    "replication": {"username": "replicator", "password": REPL_PASSWORD},
                    "rewind": {"username": "rewinder", "password": "rw"},
                },
                "parameters": self.parameters,
                "pg_hba": HBA,
            },
            "haven": {"run_dir": str(self.dir)},
        }

    @property
    def sock(self) -> str:
        return router_path(str(self.dir), Service.POSTMASTER)

    def ref(self) -> dict[str, Any]:
        return {"name": self.name, "conn_url": f"postgres://127.0.0.1:{self.port}/postgres", "api_url": None}

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(PYTHON),
                    "-m",
                    "services.postmaster",
                    "--config",
                    str(self.config_path),
                    "--run-dir",
                    str(self.dir),
                    "--text-log",
                ],
                cwd=self.dir,
                env=pg_user_env(self.dir, MARKERS),
                stdout=log,
                stderr=subprocess.STDOUT,
                **pg_user_popen_kwargs(),
            )
        if self._client is None:
            self._client = Client(self.ctx, self.sock)
        wait_until(self.status, 15, what=f"{self.name}'s controller to answer")

    def call(self, op: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        assert self._client is not None
        return self._client.call(op, body or {}, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return self.call("pg.status")

    def run_op(self, op: str, body: dict[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Send a long operation, wait until it ends; return the pg_state that reports its end."""
        reply = self.call(op, body)
        assert reply == {"accepted": True, "operation": reply["operation"]}

        def finished() -> dict[str, Any] | None:
            state = self.status()
            done = state["operation"] and state["operation"]["id"] == reply["operation"]
            return state if done and state["operation"]["state"] != "running" else None

        state = wait_until(finished, timeout, interval=0.02, what=f"{op} on {self.name}")
        operation = state["operation"]
        TIMINGS[f"{self.name} {op}"] = operation["finished"] - operation["started"]
        return state

    def expect_ok(self, op: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        state = self.run_op(op, body)
        assert state["operation"]["state"] == "succeeded", f"{op}: {state['operation']['error']}\n{self.log_tail()}"
        return state

    def expect_error(self, code: ErrorCode, op: str, body: dict[str, Any] | None = None) -> str:
        with pytest.raises(RemoteError) as info:
            self.call(op, body)
        assert info.value.code == code, info.value.message
        return info.value.message

    def sql(self, query: str, args: Any = None) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=SU_PASSWORD,
            dbname="postgres",
            connect_timeout=3,
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(query, args)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""

    def close(self) -> None:
        stop_process(self.proc)
        if self._client is not None:
            self._client.close()
            self._client = None


# --- fixtures shared by the postmaster stories (test_postmaster_*.py) -------------------------------------


@contextlib.contextmanager
def zmq_context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@contextlib.contextmanager
def story_dir(prefix: str, timings: str = "") -> Iterator[Path]:
    """A directory for one story's nodes; every postmaster under it is stopped at the end, and the TIMINGS whose
    names start with `timings` are printed."""
    path = make_shared_tmpdir(prefix)
    try:
        yield path
    finally:
        for data_dir in path.glob("*/data*"):
            stop_postmaster(data_dir)
        shutil.rmtree(path, ignore_errors=True)
        print("\ntimings (s):", {k: round(v, 3) for k, v in TIMINGS.items() if k.startswith(timings)})


@contextlib.contextmanager
def started_node(ctx: zmq.Context[Any], base: Path, name: str, **kw: Any) -> Iterator[Node]:
    """A postmaster controller (Node's keyword arguments), started; closed and its PostgreSQL stopped at the end."""
    node = Node(ctx, base, name, **kw)
    node.start()
    try:
        yield node
    finally:
        node.close()
        stop_postmaster(node.data_dir)


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context[Any]]:
    with zmq_context() as context:
        yield context


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with story_dir("haven-pm-") as path:
        yield path


@pytest.fixture(scope="module")
def pm1(ctx: zmq.Context[Any], base: Path) -> Iterator[Node]:
    script = base / "post_bootstrap.sh"
    script.write_text(
        "#!/bin/sh\nset -e\n"
        f'"{pg_bin_dir()}/psql" "$1" -v ON_ERROR_STOP=1 -qc "CREATE TABLE post_bootstrap_ran(url text)"\n'
        f'"{pg_bin_dir()}/psql" "$1" -qc "INSERT INTO post_bootstrap_ran VALUES (\'$1\')"\n'
    )
    script.chmod(0o755)
    node = Node(ctx, base, "pm1", postgresql=NO_SLOTS, post_bootstrap=str(script))
    node.start()
    yield node
    node.close()
    stop_postmaster(node.data_dir)


@pytest.fixture(scope="module")
def pm2(ctx: zmq.Context[Any], base: Path) -> Iterator[Node]:
    node = Node(ctx, base, "pm2", postgresql=NO_SLOTS)
    node.start()
    yield node
    node.close()
    stop_postmaster(node.data_dir)


def wait_state(node: Node, what: str, timeout: float = 20, **expected: Any) -> dict[str, Any]:
    def matches() -> dict[str, Any] | None:
        state = node.status()
        return state if all(state.get(k) == v for k, v in expected.items()) else None

    return wait_until(matches, timeout, what=f"{node.name}: {what} {expected}")


# ---- bootstrap ----------------------------------------------------------------------------------------------------


def test_bootstrap_starts_a_primary_and_reports_its_sysid(ctx: zmq.Context[Any], pm1: Node) -> None:
    before = pm1.status()
    assert (before["data_dir"], before["role"], before["state"], before["running"]) == (
        "missing",
        "uninitialized",
        "stopped",
        False,
    )
    sub = Subscriber(ctx, [pub_path(str(pm1.dir), Service.POSTMASTER)], [Topic.PG_STATE])
    events: list[dict[str, Any]] = []

    def final_event() -> bool:
        events.extend(e.body for e in sub.drain())
        return bool(events) and (events[-1]["operation"] or {}).get("state") == "succeeded"

    try:
        wait_until(sub.drain, 5, what="a first pg_state heartbeat")
        state = pm1.expect_ok("pg.bootstrap")
        wait_until(final_event, 5, what="the event that reports the end of the bootstrap")
    finally:
        sub.close()
    assert "initializing new cluster" in [e["state"] for e in events], "the operation's start is published at once"
    assert (events[-1]["state"], events[-1]["role"]) == ("running", "master")
    assert (state["running"], state["accepting"], state["state"], state["role"]) == (True, True, "running", "master")
    assert state["operation"]["name"] == "bootstrap", "the verb, as ha_loop reads it"
    sysid = pm1.sql("SELECT system_identifier::text FROM pg_control_system()")[0][0]
    assert state["sysid"] == state["operation"]["result"]["sysid"] == sysid
    assert state["timeline"] == 1 and isinstance(state["xlog"]["location"], int)
    assert state["server_version"] >= 150000 and state["following"] is None


def test_bootstrap_creates_users_and_runs_post_bootstrap(pm1: Node) -> None:
    (url,) = pm1.sql("SELECT url FROM post_bootstrap_ran")[0]
    assert url == f"postgres://postgres@127.0.0.1:{pm1.port}/postgres"  # no password: it came from PGPASSFILE
    assert pm1.sql("SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = 'replicator'") == [(True, True)]
    grant = (
        "has_function_privilege('rewinder', 'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)', 'execute')"
    )
    assert pm1.sql(f"SELECT {grant}") == [(True,)]
    # DCS-only max_connections comes from the dynamic configuration (the local 500 is ignored); others are local
    assert pm1.sql("SHOW max_connections") == [("40",)] and pm1.sql("SHOW shared_buffers") == [("16MB",)]


def test_configuration_files_are_patroni_style(pm1: Node) -> None:
    conf = (pm1.data_dir / "postgresql.conf").read_text()
    assert conf.startswith("# Do not edit this file manually!\n# It will be overwritten by haven!\n")
    assert f"include '{pm1.data_dir}/postgresql.base.conf'" in conf
    assert f"port = '{pm1.port}'" in conf and "# recovery.conf" not in conf
    assert (pm1.data_dir / "postgresql.base.conf").exists()
    assert (pm1.data_dir / "pg_hba.conf").read_text().splitlines()[2:] == HBA
    assert (pm1.data_dir / "patroni.dynamic.json").exists()
    for path in (pm1.data_dir / "postgresql.conf", pm1.dir / "pgpass"):
        assert path.stat().st_mode & 0o777 == 0o600
    pid = postmaster_pid(pm1.data_dir)
    assert pid is not None
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.split(b"=")[0].decode() in MARKERS], "J8: the environment is cleaned"


def test_bootstrap_of_an_initialized_data_dir_is_refused(pm1: Node) -> None:
    assert "initialized" in pm1.expect_error(ErrorCode.PRECONDITION_FAILED, "pg.bootstrap")


# ---- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("pg.stop", {"mode": "bogus"}),
        ("pg.stop", {}),
        ("pg.start", {"role": "leader"}),
        ("pg.start", {"role": "replica", "leader": {"name": "x"}}),
        ("pg.demote", {"mode": "gracefully"}),
        ("pg.follow", {"leader": {"name": "x", "conn_url": "http://127.0.0.1:1/"}}),
        ("pg.follow", {"leader": "pm2"}),
        ("pg.clone", {}),
        ("pg.clone", {"source": {"conn_url": "postgres://127.0.0.1:1/postgres"}}),
        ("pg.restart", {"leader": {"name": "", "conn_url": "postgres://h:1/postgres"}}),
        ("pg.configure", {"dynamic": {"postgresql": {"parameters": ["max_connections"]}}}),
        ("pg.configure", {"dynamic": {"postgresql": "on"}}),
    ],
)
def test_invalid_bodies_get_invalid_body(pm1: Node, op: str, body: dict[str, Any]) -> None:
    pm1.expect_error(ErrorCode.INVALID_BODY, op, body)


def raw_call(ctx: zmq.Context[Any], path: str, payload: bytes) -> envelope.Reply:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{path}")
    try:
        sock.send(payload)
        assert sock.poll(3000), "no reply"
        return envelope.decode_reply(sock.recv())
    finally:
        sock.close(0)


def test_malformed_and_unknown_messages_get_error_replies(ctx: zmq.Context[Any], pm1: Node) -> None:
    deadline = time.time() + 5
    bad = {
        b"\xc1\xff not msgpack": ErrorCode.BAD_MESSAGE,
        msgpack.packb([1, 2, 3]): ErrorCode.BAD_MESSAGE,
        msgpack.packb({"v": 99, "id": "a", "op": "pg.status", "deadline": deadline, "body": {}}): ErrorCode.BAD_MESSAGE,
        msgpack.packb({"v": 1, "id": "b", "op": "pg.status", "body": {}}): ErrorCode.BAD_MESSAGE,
        msgpack.packb({"v": 1, "id": "c", "op": "pg.nope", "deadline": deadline, "body": {}}): ErrorCode.UNKNOWN_OP,
        msgpack.packb({"v": 1, "id": "d", "op": "pg.stop", "deadline": deadline, "body": []}): ErrorCode.INVALID_BODY,
        msgpack.packb({"v": 1, "id": "e", "op": "pg.stop", "deadline": 1.0, "body": {}}): ErrorCode.DEADLINE_EXCEEDED,
        msgpack.packb(
            {"v": 1, "id": "f", "op": "pg.stop", "deadline": deadline, "body": {"mode": b"\x00"}}
        ): ErrorCode.INVALID_BODY,
    }
    for payload, code in bad.items():
        reply = raw_call(ctx, pm1.sock, payload)
        assert (reply.ok, reply.error_code) == (False, code), payload
    assert pm1.proc is not None and pm1.proc.poll() is None
    assert pm1.status()["state"] == "running"


# ---- replicas -----------------------------------------------------------------------------------------------------


def test_clone_streams_from_the_source(pm1: Node, pm2: Node) -> None:
    state = pm2.expect_ok("pg.clone", {"source": pm1.ref()})
    assert (state["role"], state["state"], state["following"]) == ("replica", "running", "pm1")
    assert state["sysid"] == pm1.status()["sysid"]
    assert f"port = '{pm2.port}'" in (pm2.data_dir / "postgresql.conf").read_text()
    assert (pm2.data_dir / "standby.signal").exists()
    wait_state(pm2, "streaming", replication_state="streaming")
    pm1.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    wait_until(lambda: pm2.sql("SELECT count(*) FROM t") == [(1,)], 10, what="the row on the replica")

    def replica_row() -> dict[str, Any] | None:
        return next((r for r in pm1.status()["replication"] if r["application_name"] == "pm2"), None)

    row = wait_until(replica_row, 10, what="pm1 to list its replica")
    assert (row["usename"], row["client_addr"], row["state"]) == ("replicator", "127.0.0.1", "streaming")
    assert set(pm2.status()["xlog"]) == {"received_location", "replayed_location", "replayed_timestamp", "paused"}


def test_a_second_long_operation_is_busy_and_a_retry_is_accepted(ctx: zmq.Context[Any], pm2: Node) -> None:
    started = pm2.status()["postmaster_start_time"]
    request = Request(op="pg.restart", body={}, deadline=time.time() + 5)
    first = raw_call(ctx, pm2.sock, envelope.encode_request(request))
    assert first.body == {"accepted": True, "operation": request.id}
    assert "restart" in pm2.expect_error(ErrorCode.BUSY, "pg.stop", {"mode": "fast"})
    again = raw_call(ctx, pm2.sock, envelope.encode_request(request))
    assert again.body == {"accepted": True, "operation": request.id}, "the same request id is idempotent"
    state = wait_until(
        lambda: (s := pm2.status())["operation"]["state"] != "running" and s, 30, what="the restart to finish"
    )
    assert state["operation"]["state"] == "succeeded", state["operation"]["error"]
    state = wait_state(pm2, "streaming again", replication_state="streaming", following="pm1")
    assert state["postmaster_start_time"] != started


def test_follow_on_a_running_primary_is_refused(pm1: Node, pm2: Node) -> None:
    assert "primary" in pm1.expect_error(ErrorCode.PRECONDITION_FAILED, "pg.follow", {"leader": pm2.ref()})


def test_switchover_demote_then_promote(pm1: Node, pm2: Node) -> None:
    state = pm1.expect_ok("pg.demote", {"mode": "graceful", "leader": pm2.ref()})
    assert (state["role"], state["state"], state["following"]) == ("replica", "running", "pm2")
    promoted = pm2.expect_ok("pg.promote")
    assert (promoted["role"], promoted["timeline"], promoted["following"]) == ("master", 2, None)
    assert not (pm2.data_dir / "standby.signal").exists()
    wait_state(pm1, "following the new timeline", timeline=2, replication_state="streaming")
    pm2.sql("INSERT INTO t VALUES (2)")
    wait_until(lambda: pm1.sql("SELECT count(*) FROM t") == [(2,)], 10, what="the new primary's row on pm1")


def test_follow_without_restart(pm1: Node, pm2: Node) -> None:
    started = pm1.status()["postmaster_start_time"]
    state = pm1.expect_ok("pg.follow", {"leader": None})
    assert state["operation"]["result"] == {"restarted": False} and state["following"] is None
    wait_state(pm1, "without upstream", replication_state=None, state="running")
    state = pm1.expect_ok("pg.follow", {"leader": pm2.ref()})
    assert state["following"] == "pm2"
    state = wait_state(pm1, "streaming again", replication_state="streaming")
    assert state["postmaster_start_time"] == started


def test_killed_controller_readopts_the_running_postmaster(pm1: Node) -> None:
    before = pm1.status()
    pid = postmaster_pid(pm1.data_dir)
    assert pm1.proc is not None
    pm1.proc.send_signal(signal.SIGKILL)
    pm1.proc.wait(10)
    assert postmaster_pid(pm1.data_dir) == pid and psutil.pid_exists(pid or 0), "PostgreSQL survives the controller"
    pm1.start()
    state = wait_state(pm1, "re-adopted", state="running", accepting=True)
    assert state["postmaster_start_time"] == before["postmaster_start_time"], "not restarted"
    assert (state["role"], state["following"]) == ("replica", "pm2"), "following survives in postgresql.conf"
    assert postmaster_pid(pm1.data_dir) == pid


def test_configure_reloads_and_reports_pending_restart(ctx: zmq.Context[Any], pm2: Node) -> None:
    dynamic = {"ttl": 30, "postgresql": {"parameters": {"max_connections": 60, "work_mem": "8MB"}}}
    reply = pm2.call("pg.configure", {"dynamic": dynamic})
    assert reply == {"reloaded": True, "pending_restart": True}
    wait_until(lambda: pm2.sql("SHOW work_mem") == [("8MB",)], 10, what="work_mem reloaded")
    assert '"max_connections":60' in (pm2.data_dir / "patroni.dynamic.json").read_text()
    wait_state(pm2, "pending restart", pending_restart=True)
    assert pm2.call("pg.reload")["reloaded"] is True
    params = {"host": "127.0.0.1", "port": pm2.port, "user": "postgres", "password": SU_PASSWORD, "dbname": "postgres"}
    sessions = {retry: Session(params, timeout=2.0, retry=retry) for retry in (True, False)}
    for session in sessions.values():
        assert session.query("SELECT 1 AS one") == [{"one": 1}]
    sub = Subscriber(ctx, [pub_path(str(pm2.dir), Service.POSTMASTER)], [Topic.PG_STATE])
    try:
        wait_until(sub.drain, 5, what="a first pg_state heartbeat")
        state = pm2.expect_ok("pg.restart")
        assert (state["role"], state["pending_restart"]) == ("master", False)
        after: list[dict[str, Any]] = []

        def two_readings_after_the_restart() -> bool:
            after.extend(e.body for e in sub.drain() if e.body["ts"] > state["operation"]["finished"])
            return len({e["ts"] for e in after}) >= 2

        wait_until(two_readings_after_the_restart, 5, what="two monitor readings after the restart")
        assert all(e["accepting"] for e in after), "no accepting=false flicker from the connection the restart broke"
        assert sessions[True].query("SELECT 1 AS one") == [{"one": 1}], "a session reconnects after a restart"
        with pytest.raises(SqlError) as info:
            sessions[False].query("SELECT 1 AS one")
        assert info.value.fatal
    finally:
        sub.close()
        for session in sessions.values():
            session.close()
    assert pm2.sql("SHOW max_connections") == [("60",)]


def test_a_hung_postgres_never_blocks_the_controller(pm2: Node) -> None:
    pid = postmaster_pid(pm2.data_dir)
    assert pid is not None
    postmaster = psutil.Process(pid)
    frozen = [postmaster, *postmaster.children(recursive=True)]  # backends setsid(): no process group to stop
    for proc in frozen:
        proc.suspend()
    try:
        for _ in range(5):
            started = time.monotonic()
            pm2.status()
            assert time.monotonic() - started < 0.5
        state = wait_state(pm2, "the query to time out", timeout=10, running=True, accepting=False)
        assert state["state"] == "running"
    finally:
        for proc in frozen:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.resume()
    wait_state(pm2, "accepting again", accepting=True, state="running")


def test_stop_fast_and_immediate_report_stopped_and_follow_starts_again(pm1: Node, pm2: Node) -> None:
    state = pm1.expect_ok("pg.stop", {"mode": "fast"})
    assert (state["running"], state["state"], state["role"]) == (False, "stopped", "replica")
    assert state["controldata"]["state"] == "shut down in recovery" and state["postmaster_start_time"] is None
    pm1.expect_ok("pg.start", {"role": "replica", "leader": pm2.ref()})
    wait_state(pm1, "streaming after the start", replication_state="streaming")
    state = pm1.expect_ok("pg.stop", {"mode": "immediate"})
    assert (state["running"], state["state"], state["role"]) == (False, "stopped", "replica")
    assert state["controldata"]["state"] == "in archive recovery"
    assert pm1.expect_ok("pg.stop", {"mode": "fast"})["operation"]["result"] == {"already_stopped": True}
    state = pm1.expect_ok("pg.follow", {"leader": pm2.ref()})
    assert state["operation"]["result"] == {"restarted": True}, "follow starts a stopped replica"
    assert (state["running"], state["role"], state["following"]) == (True, "replica", "pm2")


def test_postmaster_killed_behind_our_back_is_crashed(pm2: Node) -> None:
    pid = postmaster_pid(pm2.data_dir)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    state = wait_state(pm2, "crash noticed", running=False, state="crashed")
    assert state["role"] == "master" and state["controldata"]["state"] == "in production"


def test_no_password_in_any_log(pm1: Node, pm2: Node) -> None:
    for node in (pm1, pm2):
        for path in (node.log_path, node.dir / "postgresql.log"):
            text = path.read_text()
            assert text and SU_PASSWORD not in text and REPL_PASSWORD not in text, path


# ---- failed bootstraps --------------------------------------------------------------------------------------------


def test_refused_initdb_option_fails_the_bootstrap(ctx: zmq.Context[Any], base: Path) -> None:
    node = Node(ctx, base, "pm3", initdb=["nosync"])
    try:
        node.start()
        state = node.run_op("pg.bootstrap")
        assert state["operation"]["error"] == "nosync option for initdb is not allowed"
        assert (state["state"], state["role"], state["data_dir"]) == ("initdb failed", "uninitialized", "missing")
        node.expect_error(ErrorCode.PRECONDITION_FAILED, "pg.start", {"role": "primary"})
    finally:
        node.close()


def test_failed_post_bootstrap_moves_the_data_dir_aside(ctx: zmq.Context[Any], base: Path) -> None:
    node = Node(ctx, base, "pm4", post_bootstrap="/bin/false")
    try:
        node.start()
        state = node.run_op("pg.bootstrap")
        assert "post_bootstrap" in state["operation"]["error"]
        assert (state["state"], state["running"], state["data_dir"]) == ("initdb failed", False, "missing")
        failed = Path(f"{node.data_dir}.failed")
        assert (failed / "PG_VERSION").exists() and postmaster_pid(failed) is None
    finally:
        node.close()


def test_a_postgres_that_cannot_start_fails_at_once_with_its_log(ctx: zmq.Context[Any], base: Path) -> None:
    node = Node(ctx, base, "pm5", parameters={"shared_buffers": "lots"})
    try:
        node.start()
        state = node.run_op("pg.bootstrap")
        error = state["operation"]["error"]
        assert error.startswith("PostgreSQL exited while starting") and 'parameter "shared_buffers"' in error
        assert state["operation"]["finished"] - state["operation"]["started"] < 10, "not after pg_ctl_timeout (30 s)"
        assert (state["state"], state["data_dir"]) == ("initdb failed", "missing")
    finally:
        node.close()

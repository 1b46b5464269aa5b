"""The write-load tools against real servers, without haven: a PostgreSQL 15 primary, a tiny HTTP server playing
the node's REST API (GET/OPTIONS /primary answers 200 or 503 as the test says), HAProxy in front routing by that
health check (tests/support/haproxy.py), and the Writer (tests/support/writer.py) keeping the books.

Each test gets its own database (so its own haven_writes table) on the one module-wide server. Every process
started here is stopped by pid: HAProxy by HAProxy.stop(), the postmaster from its postmaster.pid."""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.support.ci import requires
from tests.support.haproxy import HAPROXY_BIN, Backend, HAProxy
from tests.support.pg_helpers import trust_primary
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.support.writer import Writer

pytestmark = requires(Path(HAPROXY_BIN).exists(), "HAProxy")
TIMINGS: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def pg_port() -> Iterator[int]:
    """A throwaway primary on 127.0.0.1 with trust authentication; its port."""
    with trust_primary("haven-writer-") as port:
        yield port
    if TIMINGS:
        print("\nHAProxy timings (s): " + ", ".join(f"{k}={[round(v, 3) for v in vs]}" for k, vs in TIMINGS.items()))


def sql(port: int, query: str, *args: Any, dbname: str = "postgres") -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname, connect_timeout=3)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query, args or None)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def dbname(pg_port: int) -> Iterator[str]:
    name = f"writer_{uuid.uuid4().hex[:12]}"
    sql(pg_port, f"CREATE DATABASE {name}")
    yield name
    sql(pg_port, f"DROP DATABASE {name} WITH (FORCE)")


def direct_dsn(pg_port: int, dbname: str) -> str:
    return f"host=127.0.0.1 port={pg_port} user=postgres dbname={dbname}"


class RestApi:
    """GET/OPTIONS/HEAD <path> answer `statuses[path]` (503 for any other path), like a node's health checks."""

    def __init__(self, statuses: dict[str, int]) -> None:
        self.statuses = dict(statuses)
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.send_response(api.statuses.get(self.path, 503))
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_OPTIONS = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def rest() -> Iterator[RestApi]:
    api = RestApi({"/primary": 200})
    yield api
    api.close()


@pytest.fixture
def proxy(pg_port: int, rest: RestApi) -> Iterator[HAProxy]:
    with HAProxy([Backend("pg1", pg_port, rest.port)]) as haproxy:
        yield haproxy


def backend_pids(pg_port: int, dbname: str, where: str) -> list[int]:
    rows = sql(pg_port, f"SELECT pid FROM pg_stat_activity WHERE datname = %s AND {where}", dbname)
    return [int(r[0]) for r in rows]


def writer_pids(pg_port: int, dbname: str, where: str = "true") -> list[int]:
    return backend_pids(pg_port, dbname, f"application_name LIKE 'haven-writer-%%' AND {where}")


def test_haproxy_routes_to_a_server_only_while_its_health_check_answers_200(pg_port: int, rest: RestApi) -> None:
    rest.statuses = {"/primary": 503, "/replica": 200}
    with HAProxy([Backend("pg1", pg_port, rest.port)], check_path="/replica", check_method="OPTIONS") as replicas:
        assert replicas.up_servers() == ["pg1"]  # start() waited for the first check
        assert sql(replicas.port, "SELECT 1") == [(1,)]
        rest.statuses["/replica"] = 503
        TIMINGS.setdefault("marked_down", []).append(replicas.wait_up([], timeout=5))
        assert replicas.server_states() == {"pg1": "DOWN"}
        with pytest.raises(psycopg2.OperationalError):
            sql(replicas.port, "SELECT 1")
        rest.statuses["/replica"] = 200
        TIMINGS.setdefault("marked_up", []).append(replicas.wait_up(["pg1"], timeout=5))
        assert sql(replicas.port, "SELECT 1") == [(1,)]
        pid = replicas.pid
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert not replicas.dir.exists() or os.environ.get("HAVEN_KEEP_TEST_DIRS") == "1"


def test_writer_through_haproxy_acknowledges_commits_and_verify_finds_none_lost(
    pg_port: int, dbname: str, proxy: HAProxy
) -> None:
    writer = Writer(proxy.dsn(user="postgres", dbname=dbname), clients=4)
    writer.setup()
    writer.start()
    wait_until(lambda: writer.acknowledged >= 400, 20, what="400 acknowledged commits")
    report = writer.stop()
    assert report.acknowledged >= 400 and report.clients == 4
    assert (report.in_doubt, report.failed, report.errors, report.stuck_clients) == (0, 0, 0, ()), report.error_log
    assert {i // 10**9 for i in report.acknowledged_ids} == {1, 2, 3, 4}
    assert report.longest_gap is not None and report.longest_gap.seconds < 1.0
    assert not report.is_verified
    verified = writer.verify(direct_dsn(pg_port, dbname))
    assert (verified.lost, verified.duplicates, verified.phantoms) == ((), (), ()), verified.summary()
    rows = sql(pg_port, "SELECT count(*), count(DISTINCT client) FROM haven_writes", dbname=dbname)
    assert rows == [(report.acknowledged, 4)]
    assert writer_pids(pg_port, dbname) == []  # every client closed its connection


def test_a_server_marked_down_stops_the_commits_and_the_longest_gap_covers_the_outage(
    pg_port: int, dbname: str, rest: RestApi, proxy: HAProxy
) -> None:
    writer = Writer(proxy.dsn(user="postgres", dbname=dbname), clients=2, pause_s=0.002)
    writer.setup()
    writer.start()
    try:
        wait_until(lambda: writer.acknowledged >= 50, 20, what="commits before the outage")
        rest.statuses["/primary"] = 503
        t_503 = time.monotonic()
        proxy.wait_up([], timeout=5)
        t_down = time.monotonic()
        errors = writer.errors
        wait_until(lambda: writer.errors >= errors + 10, 10, what="the clients failing during the outage")
        rest.statuses["/primary"] = 200
        t_200 = time.monotonic()
        proxy.wait_up(["pg1"], timeout=5)
        t_up = time.monotonic()
        acks = writer.acknowledged
        wait_until(lambda: writer.acknowledged >= acks + 50, 20, what="commits after the outage")
    finally:
        report = writer.stop()
    TIMINGS.setdefault("marked_down", []).append(t_down - t_503)
    TIMINGS.setdefault("marked_up", []).append(t_up - t_200)
    gap = report.longest_gap
    assert gap is not None
    TIMINGS.setdefault("write_gap", []).append(gap.seconds)
    # sessions are shut when the server is marked down; nothing commits again before the check answers 200
    assert gap.start <= t_down + 0.1 and gap.end > t_200, (str(gap), t_503, t_down, t_200, t_up)
    assert report.acks_between(t_down + 0.1, t_200) == 0
    assert gap.seconds >= t_200 - t_down
    assert report.errors >= 10 and report.stuck_clients == ()
    verified = writer.verify(direct_dsn(pg_port, dbname))
    assert (verified.lost, verified.duplicates, verified.phantoms) == ((), (), ()), verified.summary()


def test_verify_reports_a_deleted_acknowledged_row_as_lost(pg_port: int, dbname: str) -> None:
    dsn = direct_dsn(pg_port, dbname)
    writer = Writer(dsn, clients=2)
    writer.setup()
    writer.start()
    wait_until(lambda: writer.acknowledged >= 20, 20, what="20 acknowledged commits")
    report = writer.stop()
    victim = sorted(report.acknowledged_ids)[len(report.acknowledged_ids) // 2]
    sql(pg_port, "DELETE FROM haven_writes WHERE id = %s", victim, dbname=dbname)
    verified = writer.verify()
    assert verified.lost == (victim,)
    assert (verified.duplicates, verified.phantoms, verified.in_doubt_committed) == ((), (), ())
    assert "lost=1" in verified.summary()


SLOW_INSERTS = """
CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$;
CREATE TRIGGER slow BEFORE INSERT ON haven_writes FOR EACH ROW EXECUTE FUNCTION slow_insert();
"""


def test_a_backend_terminated_mid_insert_leaves_the_insert_in_doubt_and_the_client_goes_on(
    pg_port: int, dbname: str
) -> None:
    writer = Writer(direct_dsn(pg_port, dbname), clients=1)
    writer.setup()
    sql(pg_port, SLOW_INSERTS, dbname=dbname)
    writer.start()
    try:
        sleeping = wait_until(
            lambda: writer_pids(pg_port, dbname, "state = 'active' AND wait_event = 'PgSleep'"), 10, what="an INSERT"
        )
        assert sql(pg_port, "SELECT pg_terminate_backend(%s)", sleeping[0]) == [(True,)]
        wait_until(lambda: writer.in_doubt == 1, 10, what="the terminated INSERT counted in doubt")
        acks = writer.acknowledged
        wait_until(lambda: writer.acknowledged >= acks + 2, 10, what="commits on a new connection")
    finally:
        report = writer.stop()
    (doubtful,) = report.in_doubt_ids
    assert doubtful not in report.acknowledged_ids
    assert doubtful + 1 in report.acknowledged_ids  # the client went on with the next id
    # libpq reports the FATAL 57P01 as a closed connection (OperationalError without a SQLSTATE), or as AdminShutdown
    assert [k.startswith("insert: ") for k in report.error_kinds] == [True] and report.errors == 1, report.error_log
    verified = writer.verify()
    assert (verified.lost, verified.in_doubt_committed, verified.phantoms) == ((), (), ())  # killed before the row


def test_stop_returns_within_seconds_when_clients_are_blocked_and_their_inserts_stay_in_doubt(
    pg_port: int, dbname: str
) -> None:
    writer = Writer(direct_dsn(pg_port, dbname), clients=2)
    writer.setup()
    locker = psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname=dbname, connect_timeout=3)
    try:
        writer.start()
        wait_until(lambda: writer.acknowledged >= 10, 10, what="commits before the lock")
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE haven_writes IN ACCESS EXCLUSIVE MODE")  # held until rollback
        wait_until(lambda: len(writer_pids(pg_port, dbname, "wait_event_type = 'Lock'")) == 2, 10, what="blocked")
        started = time.monotonic()
        report = writer.stop(grace_s=0.5)
        elapsed = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
    assert 0.5 <= elapsed < 2.0, elapsed
    assert (report.in_doubt, report.stuck_clients) == (2, ())
    assert report.in_doubt_ids.isdisjoint(report.acknowledged_ids)
    assert report.trailing_gap_s >= 0
    # the server never noticed the clients were gone: once the lock is released the "in doubt" inserts commit
    wait_until(lambda: writer_pids(pg_port, dbname) == [], 10, what="the abandoned backends to end")
    verified = writer.verify()
    assert verified.lost == () and set(verified.in_doubt_committed or ()) == report.in_doubt_ids


def test_writer_counts_connection_failures_as_errors_while_no_server_listens(dbname: str) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        writer = Writer(f"host=127.0.0.1 port={dead.getsockname()[1]} user=postgres dbname={dbname}", clients=2)
        writer.start()
        wait_until(lambda: writer.errors >= 4, 10, what="refused connections counted")
        report = writer.stop()
    finally:
        dead.close()
    assert (report.acknowledged, report.in_doubt, report.failed) == (0, 0, 0)
    assert set(report.error_kinds) == {"connect: OperationalError"}
    assert report.longest_gap is None and report.leading_gap_s == pytest.approx(report.duration_s)

"""The software fence against a real PostgreSQL 15: while keepalives come, PostgreSQL runs; when they stop,
watchdogd kills the postmaster and its backends between `timeout` and `timeout + 0.5 s` after the last one;
a disarm before the deadline never kills. watchdogd runs as root and as the PostgreSQL user."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.service.test_watchdogd import Watchdogd
from tests.support.pg_helpers import pg_user_env, pg_user_popen_kwargs, stop_postmaster, stop_process
from tests.support.ports import free_port
from tests.support.postgres import is_root, make_shared_tmpdir, pg_bin_dir, run_as_pg
from tests.support.waiting import wait_until

TIMEOUT = 2.0
TIMINGS: dict[str, float] = {}


class Postgres:
    """A PostgreSQL 15 postmaster started as a child of this test (so its pid is ours to wait on)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.data_dir = base / "data"
        self.port = free_port()
        init = run_as_pg([f"{pg_bin_dir()}/initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                          "-E", "UTF8", "--no-sync"])  # fmt: skip
        assert init.returncode == 0, init.stderr
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.base / "postgres.log", "ab") as log:
            self.proc = subprocess.Popen(
                [f"{pg_bin_dir()}/postgres", "-D", str(self.data_dir), "-p", str(self.port), "-k", str(self.base),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=16MB"],
                env=pg_user_env(self.base),
                stdout=log,
                stderr=subprocess.STDOUT,
                **pg_user_popen_kwargs(),
            )  # fmt: skip
        wait_until(self.connect, 20, what="PostgreSQL to accept connections")

    def connect(self) -> Any:
        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=2)

    def query(self, sql: str) -> Any:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0]
        finally:
            conn.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        """Fast shutdown (SIGINT) by pid; immediate by postmaster.pid if that fails."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        stop_process(self.proc)
        stop_postmaster(self.data_dir)


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    base = make_shared_tmpdir("haven-wdpg-")
    server = Postgres(base)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)
    print("\ntimings (s):", {k: round(v, 3) for k, v in TIMINGS.items()})


@pytest.fixture
def running(pg: Postgres) -> Iterator[Postgres]:
    if pg.proc is None or pg.exited():
        pg.start()
    yield pg


@pytest.fixture
def wd_base() -> Iterator[Path]:
    path = make_shared_tmpdir("haven-wdf-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


USERS = ["root", "postgres"] if is_root() else ["self"]


@pytest.mark.parametrize("user", USERS)
def test_the_fence_kills_postgresql_when_keepalives_stop(running: Postgres, wd_base: Path, user: str) -> None:
    pg = running
    wd = Watchdogd(wd_base, "fence", {"mode": "required", "driver": "software"}, str(pg.data_dir),
                   as_pg_user=user == "postgres")  # fmt: skip
    held = pg.connect()  # an open session: its backend must die too
    try:
        reply = wd.call("wd.arm", {"timeout": TIMEOUT})
        assert (reply["active"], reply["driver"], reply["timeout"]) == (True, "software", TIMEOUT)
        fed_until = time.monotonic() + 1.5 * TIMEOUT
        while time.monotonic() < fed_until:  # feeding for longer than the timeout keeps PostgreSQL alive
            assert wd.call("wd.keepalive")["active"] is True
            assert pg.query("SELECT 1") == 1 and not pg.exited()
            time.sleep(TIMEOUT / 4)
        sent = time.monotonic()
        wd.call("wd.keepalive")
        answered = time.monotonic()
        wait_until(pg.exited, TIMEOUT + 3, interval=0.005, what="the postmaster to be killed")
        killed = time.monotonic()
        TIMINGS[f"kill after last keepalive ({user})"] = killed - sent
        assert killed - sent >= TIMEOUT and killed - answered < TIMEOUT + 0.5
        assert pg.proc is not None and pg.proc.returncode == -9
        with pytest.raises(psycopg2.Error), held.cursor() as cur:
            cur.execute("SELECT 1")  # the backend of the held session was killed with its postmaster
        status = wd.status()
        assert {k: status[k] for k in ("armed", "active", "fired", "fired_pid", "driver")} == {
            "armed": False, "active": False, "fired": True, "fired_pid": pg.pid, "driver": None,
        }  # fmt: skip
        assert TIMEOUT <= status["fired_at"] - status["last_keepalive"] < TIMEOUT + 0.5
        line = f"software watchdog fired: keepalives stopped for {status['fired_at'] - status['last_keepalive']:.2f}"
        # log records are written by a background thread: wait for them
        wait_until(lambda: line in wd.log(), 5, what="the fence's log line")
        assert f"PostgreSQL (pid {pg.pid}) killed" in wd.log() and "CRITICAL" in wd.log()
        assert wd.error("wd.keepalive").message.startswith("watchdog is not armed: the software watchdog fired")
    finally:
        held.close()
        wd.close()


def test_disarm_before_the_deadline_never_kills(running: Postgres, wd_base: Path) -> None:
    pg = running
    wd = Watchdogd(wd_base, "disarm", {"mode": "automatic", "driver": "software"}, str(pg.data_dir))
    try:
        armed = wd.call("wd.arm", {"timeout": TIMEOUT})
        assert armed["active"] is True
        assert wd.call("wd.disarm") == {"active": False}
        watch_until = time.monotonic() + TIMEOUT + 1.0  # well past the deadline the arm had set
        while time.monotonic() < watch_until:
            assert not pg.exited() and pg.query("SELECT 1") == 1
            assert wd.status()["fired"] is False
            time.sleep(0.1)
        again = wd.call("wd.arm", {"timeout": 30})  # a fresh arm is a fresh deadline
        assert again["active"] is True and again["deadline"] > time.time() + 25
        wd.call("wd.disarm")
    finally:
        wd.close()
    assert not pg.exited()

"""A write load that keeps the books: N client threads insert unique ids through one DSN (usually the HAProxy
frontend), one autocommitted INSERT per transaction, and record what happened to each id.

- acknowledged: the INSERT returned without error, so the commit is promised;
- failed: the server answered with an ERROR on a connection that stayed up, so the statement was rolled back;
- in doubt: the statement was sent and the connection broke before an answer (the commit may or may not have
  happened: a backend terminated while waiting for a synchronous standby has committed locally).

After any error a client reconnects and goes on with its NEXT id (ids are client * 10^9 + seq, never reused).
verify() re-reads the table from the final primary: an acknowledged id that is missing is lost.

    writer = Writer(proxy.dsn(user="postgres", dbname="postgres"), clients=4)
    writer.setup()
    writer.start()
    ...                                 # failover, kill, partition
    writer.stop()
    report = writer.verify(primary_dsn)
    assert report.lost == ()

stop() never hangs on a stuck connection: after `grace_s` it shuts the socket of every client still busy (the
statement becomes in doubt), and a thread that still does not finish is reported in `stuck_clients`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import psycopg2

TABLE = "haven_writes"
CREATE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigint PRIMARY KEY, client int NOT NULL, ts timestamptz DEFAULT now())"
)
INSERT_SQL = f"INSERT INTO {TABLE}(id, client, ts) VALUES (%s, %s, now())"
ID_STRIDE = 10**9  # id = client * ID_STRIDE + seq
ERROR_LOG_MAX = 1000  # error_log keeps the first ones; error_kinds counts them all


def write_id(client: int, seq: int) -> int:
    return client * ID_STRIDE + seq


# --- the report (pure) ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """The time between two consecutive acknowledged commits (any clients): from `start` to `end`, monotonic."""

    start: float
    end: float
    run_start: float  # the writer's start, monotonic
    run_start_wall: datetime

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def start_offset_s(self) -> float:
        """Seconds from the writer's start to the last commit before the gap."""
        return self.start - self.run_start

    @property
    def start_wall(self) -> datetime:
        return self.run_start_wall + timedelta(seconds=self.start_offset_s)

    def __str__(self) -> str:
        return f"{self.seconds:.3f}s from t+{self.start_offset_s:.3f}s ({self.start_wall.isoformat()})"


@dataclass(frozen=True)
class Throughput:
    """Acknowledged commits in each whole second of the run (the last, partial second left out)."""

    per_second: tuple[int, ...]

    @property
    def min(self) -> int:
        return min(self.per_second, default=0)

    @property
    def max(self) -> int:
        return max(self.per_second, default=0)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_second) if self.per_second else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.per_second) if self.per_second else 0.0

    @property
    def zero_seconds(self) -> int:
        return sum(1 for n in self.per_second if n == 0)

    def __str__(self) -> str:
        return f"{self.mean:.0f}/s mean, {self.median:.0f} median, {self.min}..{self.max}, {self.zero_seconds}s at 0"


@dataclass(frozen=True)
class WriterReport:
    clients: int
    started: float  # monotonic
    started_wall: datetime
    duration_s: float  # from start() to stop()
    acknowledged_ids: frozenset[int]
    in_doubt_ids: frozenset[int]
    failed_ids: frozenset[int]
    ack_times: tuple[float, ...]  # monotonic, sorted
    warned_ids: frozenset[int]  # acknowledged, but with a WARNING (e.g. the wait for a sync standby canceled)
    duplicates: tuple[int, ...]  # ids acknowledged twice, or present twice in the table (after verify)
    errors: int
    error_kinds: dict[str, int]
    error_log: tuple[tuple[float, int, str], ...]  # (monotonic, client, "kind: message"), the first ERROR_LOG_MAX
    stuck_clients: tuple[int, ...]  # threads still alive when stop() returned
    longest_gap: Gap | None  # between two acknowledged commits; None with fewer than two
    leading_gap_s: float  # from start() to the first acknowledged commit (the whole run if none)
    trailing_gap_s: float  # from the last acknowledged commit to stop()
    throughput: Throughput
    # filled by Writer.verify(); None before
    lost: tuple[int, ...] | None = None  # acknowledged, absent from the final primary
    in_doubt_committed: tuple[int, ...] | None = None  # in doubt, present: those commits did happen
    phantoms: tuple[int, ...] | None = None  # present although the server had rejected them (must never happen)

    @property
    def acknowledged(self) -> int:
        return len(self.acknowledged_ids)

    @property
    def in_doubt(self) -> int:
        return len(self.in_doubt_ids)

    @property
    def failed(self) -> int:
        return len(self.failed_ids)

    @property
    def is_verified(self) -> bool:
        return self.lost is not None

    def acks_between(self, start: float, end: float) -> int:
        """Acknowledged commits with start <= time < end (monotonic)."""
        return sum(1 for t in self.ack_times if start <= t < end)

    def summary(self) -> str:
        verified = (
            f"lost={len(self.lost)} in_doubt_committed={len(self.in_doubt_committed or ())} "
            f"phantoms={len(self.phantoms or ())} "
            if self.lost is not None
            else "unverified "
        )
        return (
            f"{self.acknowledged} acknowledged, {self.in_doubt} in doubt, {self.failed} failed, {self.errors} errors "
            f"in {self.duration_s:.1f}s by {self.clients} clients; {verified}duplicates={len(self.duplicates)}; "
            f"longest gap {self.longest_gap or 'n/a'}; throughput {self.throughput}"
        )


def longest_gap(times: Sequence[float], run_start: float, run_start_wall: datetime) -> Gap | None:
    """The longest interval between consecutive times (sorted)."""
    if len(times) < 2:
        return None
    i = max(range(1, len(times)), key=lambda k: times[k] - times[k - 1])
    return Gap(times[i - 1], times[i], run_start, run_start_wall)


def per_second(times: Iterable[float], start: float, end: float) -> Throughput:
    seconds = int(end - start)
    counts = [0] * seconds
    for t in times:
        k = int(t - start)
        if 0 <= k < seconds:
            counts[k] += 1
    return Throughput(tuple(counts))


def compare(report: WriterReport, rows: dict[int, int]) -> WriterReport:
    """The report with what the table holds (`rows`: id -> number of rows with that id) set against it."""
    present = set(rows)
    return dataclasses.replace(
        report,
        lost=tuple(sorted(report.acknowledged_ids - present)),
        in_doubt_committed=tuple(sorted(report.in_doubt_ids & present)),
        phantoms=tuple(sorted(report.failed_ids & present)),
        duplicates=tuple(sorted(set(report.duplicates) | {i for i, n in rows.items() if n > 1})),
    )


# --- the clients --------------------------------------------------------------------------------------------------


class _Client:
    """One thread's books. Lists are appended by the thread and read by others (safe under the GIL)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.acks: list[tuple[int, float]] = []
        self.in_doubt: list[int] = []
        self.failed: list[int] = []
        self.warned: list[int] = []
        self.errors: list[tuple[float, int, str]] = []
        self.error_kinds: Counter[str] = Counter()
        self.in_flight: int | None = None
        self.conn: Any = None
        self.lock = threading.Lock()  # guards replacing/closing `conn` against interrupt()
        self.thread: threading.Thread | None = None

    def error(self, kind: str, exc: BaseException) -> None:
        self.error_kinds[kind] += 1
        if len(self.errors) < ERROR_LOG_MAX:
            message = str(exc).strip().replace("\n", " | ")
            self.errors.append((time.monotonic(), self.number, f"{kind}: {message}"))

    def drop_connection(self) -> None:
        with self.lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def interrupt(self) -> None:
        """Shut the socket under a blocked libpq call: it returns at once with a connection error."""
        with self.lock:
            conn = self.conn
            if conn is None or conn.closed:
                return
            try:
                fd = os.dup(conn.fileno())
            except (OSError, psycopg2.Error):
                return
        with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def error_kind(stage: str, exc: BaseException) -> str:
    code = getattr(exc, "pgcode", None)
    return f"{stage}: {type(exc).__name__}" + (f" {code}" if code else "")


def is_rejected(exc: BaseException, conn: Any) -> bool:
    """True when the statement certainly did not commit: an ERROR answered on a connection still open, or a
    failure of psycopg2 before anything was sent (InterfaceError). Anything else leaves the outcome unknown."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    return isinstance(exc, psycopg2.Error) and getattr(exc, "pgcode", None) is not None and conn.closed == 0


class Writer:
    def __init__(
        self,
        dsn: str,
        *,
        clients: int = 4,
        first_client: int = 1,
        pause_s: float = 0.0,
        connect_timeout_s: int = 1,
        statement_timeout_ms: int = 5000,
        reconnect_pause_s: float = 0.05,
    ) -> None:
        """dsn: a libpq DSN (host, port, user, dbname, password); the writer adds timeouts and keepalives.
        first_client: clients are numbered first_client .. first_client + clients - 1, which sets their ids:
        two writers on one table need disjoint numbers. pause_s: a pause after each commit (0: full speed)."""
        self.dsn = dsn
        self.first_client = first_client
        self.pause_s = pause_s
        self.reconnect_pause_s = reconnect_pause_s
        self.connect_timeout_s = connect_timeout_s
        self.connect_params: dict[str, Any] = {
            "connect_timeout": connect_timeout_s,
            "options": f"-c statement_timeout={statement_timeout_ms}",
            "keepalives": 1,
            "keepalives_idle": 1,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": 3000,
        }
        self._clients = [_Client(first_client + i) for i in range(clients)]
        self._stop = threading.Event()
        self._started: float | None = None
        self._started_wall = datetime.now(UTC)
        self.report: WriterReport | None = None  # set by stop(), completed by verify()

    @property
    def client_numbers(self) -> list[int]:
        return [c.number for c in self._clients]

    # --- table ----------------------------------------------------------------------------------

    def _connect(self, dsn: str, application_name: str) -> Any:
        conn = psycopg2.connect(dsn, application_name=application_name, **self.connect_params)
        conn.autocommit = True
        return conn

    def setup(self, dsn: str | None = None) -> None:
        """Create the table if it is missing and delete the rows of this writer's client numbers."""
        conn = self._connect(dsn or self.dsn, "haven-writer-setup")
        try:
            with conn.cursor() as cur:
                cur.execute(CREATE_SQL)
                cur.execute(f"DELETE FROM {TABLE} WHERE client = ANY(%s)", (self.client_numbers,))
        finally:
            conn.close()

    def verify(self, dsn: str | None = None, *, timeout: float = 10.0) -> WriterReport:
        """Re-read this writer's rows (from the final primary; default: the writer's DSN) and set them against the
        report of stop(). Connecting is retried until `timeout` (a new primary may be a moment away)."""
        if self.report is None:
            raise RuntimeError("verify() needs the report of stop()")
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = self._connect(dsn or self.dsn, "haven-writer-verify")
                break
            except psycopg2.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        try:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = 0")
                cur.execute(
                    f"SELECT id, count(*) FROM {TABLE} WHERE client = ANY(%s) GROUP BY id", (self.client_numbers,)
                )
                rows = {int(i): int(n) for i, n in cur.fetchall()}
        finally:
            conn.close()
        self.report = compare(self.report, rows)
        return self.report

    # --- running --------------------------------------------------------------------------------

    def start(self) -> Writer:
        if self._started is not None:
            raise RuntimeError("a Writer runs once")
        self._started = time.monotonic()
        self._started_wall = datetime.now(UTC)
        for client in self._clients:
            client.thread = threading.Thread(
                target=self._run, args=(client,), name=f"haven-writer-{client.number}", daemon=True
            )
            client.thread.start()
        return self

    def _run(self, client: _Client) -> None:
        seq = 0
        while not self._stop.is_set():
            if client.conn is None:
                try:
                    conn = self._connect(self.dsn, f"haven-writer-{client.number}")
                except Exception as exc:
                    client.error(error_kind("connect", exc), exc)
                    self._stop.wait(self.reconnect_pause_s)
                    continue
                with client.lock:
                    client.conn = conn
            seq += 1
            wid = write_id(client.number, seq)
            client.in_flight = wid
            try:
                with client.conn.cursor() as cur:
                    cur.execute(INSERT_SQL, (wid, client.number))
            except Exception as exc:
                (client.failed if is_rejected(exc, client.conn) else client.in_doubt).append(wid)
                client.in_flight = None
                client.error(error_kind("insert", exc), exc)
                client.drop_connection()
                self._stop.wait(self.reconnect_pause_s)
                continue
            client.acks.append((wid, time.monotonic()))
            client.in_flight = None
            if client.conn.notices:
                if any("WARNING" in n for n in client.conn.notices):
                    client.warned.append(wid)
                del client.conn.notices[:]
            if self.pause_s:
                self._stop.wait(self.pause_s)
        client.drop_connection()

    @property
    def acknowledged(self) -> int:
        """Acknowledged commits so far (live)."""
        return sum(len(c.acks) for c in self._clients)

    @property
    def in_doubt(self) -> int:
        return sum(len(c.in_doubt) for c in self._clients)

    @property
    def errors(self) -> int:
        return sum(c.error_kinds.total() for c in self._clients)

    @property
    def last_ack(self) -> float | None:
        """Monotonic time of the latest acknowledged commit (live)."""
        times = [c.acks[-1][1] for c in self._clients if c.acks]
        return max(times, default=None)

    def stop(self, grace_s: float = 1.0) -> WriterReport:
        """Stop the clients; after grace_s, interrupt those still blocked. Returns within about
        grace_s + connect_timeout_s + 1 s. Commits acknowledged during that time count too."""
        if self._started is None:
            raise RuntimeError("the Writer was not started")
        stopped = time.monotonic()
        self._stop.set()
        self._join(stopped + grace_s)
        for client in self._clients:
            if client.thread is not None and client.thread.is_alive():
                client.interrupt()
        self._join(time.monotonic() + self.connect_timeout_s + 1.0)
        self.report = self._report(stopped)
        return self.report

    def _join(self, deadline: float) -> None:
        for client in self._clients:
            if client.thread is not None:
                client.thread.join(max(0.0, deadline - time.monotonic()))

    def _report(self, stopped: float) -> WriterReport:
        assert self._started is not None
        stuck = [c for c in self._clients if c.thread is not None and c.thread.is_alive()]
        acks = [a for c in self._clients for a in list(c.acks)]
        ack_ids = Counter(i for i, _ in acks)
        in_doubt = {i for c in self._clients for i in list(c.in_doubt)}
        in_doubt |= {c.in_flight for c in stuck if c.in_flight is not None}
        times = tuple(sorted(t for _, t in acks))
        kinds: Counter[str] = Counter()
        for c in self._clients:
            kinds.update(c.error_kinds)
        return WriterReport(
            clients=len(self._clients),
            started=self._started,
            started_wall=self._started_wall,
            duration_s=stopped - self._started,
            acknowledged_ids=frozenset(ack_ids),
            in_doubt_ids=frozenset(in_doubt),
            failed_ids=frozenset(i for c in self._clients for i in list(c.failed)),
            ack_times=times,
            warned_ids=frozenset(i for c in self._clients for i in list(c.warned)),
            duplicates=tuple(sorted(i for i, n in ack_ids.items() if n > 1)),
            errors=kinds.total(),
            error_kinds=dict(kinds),
            error_log=tuple(sorted(e for c in self._clients for e in list(c.errors))),
            stuck_clients=tuple(c.number for c in stuck),
            longest_gap=longest_gap(times, self._started, self._started_wall),
            leading_gap_s=(times[0] if times else stopped) - self._started,
            trailing_gap_s=max(0.0, stopped - (times[-1] if times else self._started)),
            throughput=per_second(times, self._started, stopped),
        )

    def __enter__(self) -> Writer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started is not None and not self._stop.is_set():
            self.stop()

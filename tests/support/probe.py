"""Probes for fault tests: who accepted writes when, and how fast the health checks answered.

WriteProbe: one thread per node; every `interval` (50 ms) it tries one autocommitted
`INSERT INTO haven_probe(node, ts, t_sent) ...` on that node's own PostgreSQL (a direct connection, kept across
attempts so that a replica's session can write as soon as it is promoted; a short connect deadline and
statement_timeout, and a client-side deadline on every answer, so no attempt can hang). Each attempt is recorded
as an Attempt(node, t_sent, t_answered, ok) on the monotonic clock. After the run:

- overlaps(): every pair of successful writes on two different nodes whose [t_sent, t_answered] intervals
  overlap: both commits may have happened at the same instant, so two nodes accepted writes at once (the
  split-brain violation). Conservative: a slow answer widens its interval.
- writers_timeline(): per node, the periods in which it accepted writes (maximal runs of successful attempts).

HealthSampler: one thread per node; every `interval` (20 ms) it sends the next of that node's REST paths
(round-robin) on a new connection with a 1 s timeout, as a load balancer's health check does, and records
the latency and the status code (or the error). summary() gives count, p50, p99, max and errors per node/path,
optionally for a time window only.

The analysis (find_overlaps, writer_periods, latency_stats, ...) is pure and unit-tested in
tests/unit/test_probe.py.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import math
import select
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

TABLE = "haven_probe"
# `id` first: Node.accepts_writes() runs `CREATE TABLE IF NOT EXISTS haven_probe (id int); INSERT ... VALUES (1)`.
CREATE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id int, node text, ts timestamptz, t_sent double precision);"
    f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS node text, ADD COLUMN IF NOT EXISTS ts timestamptz,"
    " ADD COLUMN IF NOT EXISTS t_sent double precision"
)
INSERT_SQL = f"INSERT INTO {TABLE}(node, ts, t_sent) VALUES (%s, clock_timestamp(), %s)"


# --- records and their analysis (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One write attempt on one node; times are time.monotonic()."""

    node: str
    t_sent: float
    t_answered: float
    ok: bool
    error: str = ""  # the first line of the error when not ok
    in_doubt: bool = False  # sent, then no answer (timeout or broken connection): it may have committed

    @property
    def seconds(self) -> float:
        return self.t_answered - self.t_sent


def overlapping(a: Attempt, b: Attempt) -> bool:
    """Closed intervals: touching ends count as overlapping (both commits could be at that instant)."""
    return a.t_sent <= b.t_answered and b.t_sent <= a.t_answered


def find_overlaps(attempts: Iterable[Attempt]) -> list[tuple[Attempt, Attempt]]:
    """Every pair of successful attempts on two different nodes whose intervals overlap, each pair once,
    ordered by the earlier attempt's t_sent (the later-sent one second)."""
    oks = sorted((x for x in attempts if x.ok), key=lambda x: (x.t_sent, x.t_answered))
    pairs: list[tuple[Attempt, Attempt]] = []
    active: list[Attempt] = []  # successes sent before the current one that may still overlap it
    for current in oks:
        active = [x for x in active if x.t_answered >= current.t_sent]
        pairs += [(x, current) for x in active if x.node != current.node]
        active.append(current)
    return pairs


@dataclass(frozen=True)
class Period:
    """A node accepting writes: from the first success's t_sent to the last one's t_answered, no failure between."""

    node: str
    start: float
    end: float
    writes: int


def writer_periods(attempts: Iterable[Attempt]) -> dict[str, list[Period]]:
    """Per node, the maximal runs of successful attempts (in t_sent order); a failed attempt ends a run."""
    by_node: dict[str, list[Attempt]] = {}
    for x in attempts:
        by_node.setdefault(x.node, []).append(x)
    result: dict[str, list[Period]] = {}
    for node in sorted(by_node):
        periods: list[Period] = []
        run: list[Attempt] = []
        for x in sorted(by_node[node], key=lambda y: y.t_sent):
            if x.ok:
                run.append(x)
                continue
            if run:
                periods.append(Period(node, run[0].t_sent, max(y.t_answered for y in run), len(run)))
                run = []
        if run:
            periods.append(Period(node, run[0].t_sent, max(y.t_answered for y in run), len(run)))
        result[node] = periods
    return result


def longest_gap(attempts: Iterable[Attempt], node: str, since: float, until: float) -> float:
    """The longest time in [since, until] during which `node` acknowledged no write (answer to answer)."""
    times = sorted(x.t_answered for x in attempts if x.ok and x.node == node and since <= x.t_answered <= until)
    edges = [since, *times, until]
    return max(b - a for a, b in itertools.pairwise(edges))


def format_timeline(
    attempts: Sequence[Attempt], t0: float, marks: Mapping[str, float] | None = None, max_periods: int = 12
) -> str:
    """Per node: its writing periods (seconds from t0), attempts, successes, failures by kind; then the marks."""
    lines: list[str] = []
    periods = writer_periods(attempts)
    for node, node_periods in periods.items():
        mine = [x for x in attempts if x.node == node]
        ok = sum(1 for x in mine if x.ok)
        doubt = sum(1 for x in mine if x.in_doubt)
        kinds = Counter(_error_kind(x.error) for x in mine if not x.ok)
        shown = node_periods if len(node_periods) <= max_periods else node_periods[: max_periods // 2]
        spans = ", ".join(f"[{p.start - t0:+.2f}s .. {p.end - t0:+.2f}s] x{p.writes}" for p in shown)
        if len(node_periods) > len(shown):
            rest = node_periods[-(max_periods // 2) :]
            spans += f", ... ({len(node_periods) - len(shown) - len(rest)} more), "
            spans += ", ".join(f"[{p.start - t0:+.2f}s .. {p.end - t0:+.2f}s] x{p.writes}" for p in rest)
        lines.append(f"  {node}: {len(mine)} attempts, {ok} ok, {doubt} in doubt; writing: {spans or 'never'}")
        if kinds:
            lines.append("    failures: " + "; ".join(f"{n} x {k}" for k, n in kinds.most_common(4)))
    for label, at in sorted((marks or {}).items(), key=lambda kv: kv[1]):
        lines.append(f"  {at - t0:+8.2f}s  {label}")
    return "\n".join(lines)


def _error_kind(error: str) -> str:
    text = error.strip().splitlines()[0] if error.strip() else "?"
    return text[:90]


@dataclass(frozen=True)
class Sample:
    """One health-check request: `t` when it was sent (monotonic), its latency in seconds, status or error."""

    node: str
    path: str
    t: float
    latency: float
    status: int | None
    error: str = ""


@dataclass(frozen=True)
class LatencyStats:
    count: int
    errors: int  # no HTTP answer within the timeout (timeouts, refused or broken connections)
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: Mapping[int, int] = field(default_factory=dict)

    def __str__(self) -> str:
        codes = ",".join(f"{k}x{v}" for k, v in sorted(self.statuses.items()))
        return (
            f"n={self.count:5d} p50={self.p50_ms:6.2f}ms p99={self.p99_ms:7.2f}ms max={self.max_ms:7.2f}ms "
            f"errors={self.errors} [{codes}]"
        )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_stats(samples: Iterable[Sample]) -> LatencyStats:
    """Latencies of the answered requests; errors counted apart."""
    items = list(samples)
    answered = [s.latency * 1000.0 for s in items if s.status is not None]
    errors = sum(1 for s in items if s.status is None)
    statuses = Counter(s.status for s in items if s.status is not None)
    if not answered:
        return LatencyStats(errors, errors, math.nan, math.nan, math.nan, dict(statuses))
    return LatencyStats(
        len(answered) + errors,
        errors,
        percentile(answered, 50),
        percentile(answered, 99),
        max(answered),
        dict(statuses),
    )


def summarize(
    samples: Iterable[Sample], since: float | None = None, until: float | None = None
) -> dict[tuple[str, str], LatencyStats]:
    """(node, path) -> stats of the samples sent in [since, until]."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        if (since is None or s.t >= since) and (until is None or s.t <= until):
            groups.setdefault((s.node, s.path), []).append(s)
    return {key: latency_stats(groups[key]) for key in sorted(groups)}


def format_summary(stats: Mapping[tuple[str, str], LatencyStats]) -> str:
    return "\n".join(f"  {node:8s} {path:12s} {value}" for (node, path), value in stats.items())


# --- the write probe --------------------------------------------------------------------------------------------


class _Timeout(Exception):
    pass


def _wait(conn: Any, deadline: float) -> None:
    """Drive an asynchronous psycopg2 connection until its current operation completes, or _Timeout."""
    import psycopg2.extensions as ext

    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Timeout()
        poller = select.poll()
        if state == ext.POLL_READ:
            poller.register(conn.fileno(), select.POLLIN)
        elif state == ext.POLL_WRITE:
            poller.register(conn.fileno(), select.POLLOUT)
        else:
            raise RuntimeError(f"unexpected poll state {state}")
        poller.poll(remaining * 1000.0)


@dataclass(frozen=True)
class Target:
    """A node the probe writes to: its name and a libpq DSN (without timeouts: the probe adds its own)."""

    name: str
    dsn: str


class ProbeLog:
    """Thread-safe list of attempts, and the questions the tests ask about it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []
        self.t0 = time.monotonic()

    def add(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts.append(attempt)

    def attempts(
        self, since: float | None = None, until: float | None = None, node: str | None = None
    ) -> list[Attempt]:
        """Attempts answered at or after `since` and sent at or before `until`."""
        with self._lock:
            items = list(self._attempts)
        return [
            x
            for x in items
            if (since is None or x.t_answered >= since)
            and (until is None or x.t_sent <= until)
            and (node is None or x.node == node)
        ]

    def overlaps(self, since: float | None = None, until: float | None = None) -> list[tuple[Attempt, Attempt]]:
        return find_overlaps(self.attempts(since, until))

    def writers_timeline(self, since: float | None = None, until: float | None = None) -> dict[str, list[Period]]:
        return writer_periods(self.attempts(since, until))

    def writers(self, since: float | None = None, until: float | None = None) -> set[str]:
        """Nodes that acknowledged at least one write answered in [since, until]."""
        return {
            x.node
            for x in self.attempts(since, until)
            if x.ok and (since is None or x.t_answered >= since) and (until is None or x.t_answered <= until)
        }

    def last_ok(self, node: str, since: float | None = None) -> Attempt | None:
        oks = [x for x in self.attempts(since, node=node) if x.ok]
        return max(oks, key=lambda x: x.t_answered) if oks else None

    def first_ok(self, node: str, after: float) -> Attempt | None:
        """The first success on `node` sent at or after `after`."""
        oks = [x for x in self.attempts(after, node=node) if x.ok and x.t_sent >= after]
        return min(oks, key=lambda x: x.t_sent) if oks else None

    def first_ok_any(self, nodes: Iterable[str], after: float) -> Attempt | None:
        found = [a for a in (self.first_ok(n, after) for n in nodes) if a is not None]
        return min(found, key=lambda x: x.t_sent) if found else None

    def longest_gap(self, node: str, since: float, until: float) -> float:
        return longest_gap(self.attempts(since, until, node), node, since, until)

    def timeline(
        self, since: float | None = None, until: float | None = None, marks: Mapping[str, float] | None = None
    ) -> str:
        t0 = since if since is not None else self.t0
        return format_timeline(self.attempts(since, until), t0, marks)


class WriteProbe(ProbeLog):
    """Tries an INSERT on every target every `interval` seconds, each in its own thread (see the module doc)."""

    def __init__(
        self,
        targets: Sequence[Target],
        interval: float = 0.05,
        connect_timeout: float = 1.0,
        statement_timeout_ms: int = 500,
        answer_timeout: float = 1.5,
    ) -> None:
        super().__init__()
        self.targets = list(targets)
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.answer_timeout = answer_timeout
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(t,), daemon=True, name=f"probe-{t.name}") for t in self.targets
        ]

    @staticmethod
    def setup(create: Callable[[str], object], readers: Sequence[Callable[[str], list[tuple[Any, ...]]]]) -> None:
        """Create the table through `create` (the leader's sql), then wait until every reader (the replicas' sql)
        sees it with its columns."""
        from tests.support.waiting import wait_until

        create(CREATE_SQL)
        query = (
            f"SELECT count(*) FROM information_schema.columns WHERE table_name = '{TABLE}' AND column_name IN "
            "('node', 'ts', 't_sent')"
        )
        for read in readers:

            def replicated(r: Callable[[str], list[tuple[Any, ...]]] = read) -> bool:
                return bool(r(query)[0][0] == 3)

            wait_until(replicated, 60, interval=0.1, what=f"{TABLE} replicated")

    def start(self) -> Self:
        self.t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.connect_timeout + self.answer_timeout + 5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _connect(self, target: Target) -> Any:
        import psycopg2

        options = f"-c statement_timeout={self.statement_timeout_ms}"
        conn = psycopg2.connect(target.dsn, async_=True, options=options, application_name="haven-probe")
        try:
            _wait(conn, time.monotonic() + self.connect_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        return conn

    def _run(self, target: Target) -> None:
        import psycopg2

        conn: Any = None
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                start = time.monotonic()
                if conn is None or conn.closed:
                    try:
                        conn = self._connect(target)
                    except (psycopg2.Error, _Timeout, OSError) as exc:
                        conn = None
                        self.add(Attempt(target.name, start, time.monotonic(), False, f"connect: {_describe(exc)}"))
                        next_at = self._pause(next_at)
                        continue
                sent = time.monotonic()
                try:
                    with conn.cursor() as cur:
                        cur.execute(INSERT_SQL, (target.name, sent))
                        _wait(conn, sent + self.answer_timeout)
                    self.add(Attempt(target.name, sent, time.monotonic(), True))
                except _Timeout:
                    self.add(Attempt(target.name, sent, time.monotonic(), False, "no answer in time", in_doubt=True))
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = None
                except psycopg2.Error as exc:
                    answered = time.monotonic()
                    # no SQLSTATE: the connection broke before an answer, so the INSERT may have committed
                    doubt = exc.pgcode is None
                    broken = bool(conn.closed) or (isinstance(exc, psycopg2.OperationalError) and doubt)
                    self.add(Attempt(target.name, sent, answered, False, _describe(exc), in_doubt=doubt))
                    if broken:
                        with contextlib.suppress(Exception):
                            conn.close()
                        conn = None
                next_at = self._pause(next_at)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _pause(self, next_at: float) -> float:
        next_at = max(next_at + self.interval, time.monotonic())
        self._stop.wait(max(0.0, next_at - time.monotonic()))
        return next_at


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the health sampler -----------------------------------------------------------------------------------------


class HealthSampler:
    """GET the given paths of every node (round-robin per node) every `interval`; see the module doc."""

    def __init__(
        self, targets: Mapping[str, tuple[int, Sequence[str]]], interval: float = 0.02, timeout: float = 1.0
    ) -> None:
        """targets: node name -> (REST port on 127.0.0.1, paths)."""
        self.targets = {name: (port, list(paths)) for name, (port, paths) in targets.items()}
        self.interval = interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(name,), daemon=True, name=f"health-{name}")
            for name in self.targets
        ]
        self.t0 = time.monotonic()

    def start(self) -> Self:
        self.t0 = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def samples(
        self, since: float | None = None, until: float | None = None, node: str | None = None, path: str | None = None
    ) -> list[Sample]:
        with self._lock:
            items = list(self._samples)
        return [
            s
            for s in items
            if (since is None or s.t >= since)
            and (until is None or s.t <= until)
            and (node is None or s.node == node)
            and (path is None or s.path == path)
        ]

    def summary(self, since: float | None = None, until: float | None = None) -> dict[tuple[str, str], LatencyStats]:
        return summarize(self.samples(), since, until)

    def _run(self, name: str) -> None:
        port, paths = self.targets[name]
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            path = paths[i % len(paths)]
            i += 1
            self._record(self.get(name, port, path))
            next_at = max(next_at + self.interval, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)

    def get(self, name: str, port: int, path: str) -> Sample:
        """One request on a new connection, as a load balancer's health check makes it."""
        start = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            return Sample(name, path, start, time.monotonic() - start, response.status)
        except (OSError, http.client.HTTPException) as exc:
            return Sample(name, path, start, time.monotonic() - start, None, _describe(exc) or type(exc).__name__)
        finally:
            conn.close()

"""The six scenarios. Each records its figures in bench.results (one value per repetition) and raises when it
cannot go on; every wait is on a condition with a timeout (sleeps only pace polling or are the measured window)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from bench import footprint as fp
from bench import wrk
from bench.context import Bench, log, log_tail, wait_healthy
from bench.flavours import PROFILES
from bench.leader_key import LeaderWatch, leader_key, poll_leader
from bench.probes import StreamingProbe, WriteProbe
from bench.results import Target
from tests.support.cluster import SUPERUSER, Cluster, Node
from tests.support.haproxy import HAProxy, backends_for
from tests.support.postgres import pg_bin_dir
from tests.support.waiting import wait_until

# the project's targets (README, "Benchmarks")
T_FAILOVER_FAST = Target("median", "<=", 6.5)
T_KEY_GONE_TO_WRITABLE = Target("median", "<=", 0.08)
T_SWITCHOVER_WRITABLE = Target("median", "<=", 0.5)
T_SWITCHOVER_STREAMING = Target("median", "<=", 1.5)
T_PRIMARY_RPS = Target("median", ">=", 2400)
T_PRIMARY_P99 = Target("median", "<=", 5.0)
T_NODE_PSS = Target("max", "<=", 63)
T_IDLE_CPU = Target("max", "<=", 0.08)
T_UNREQUESTED = Target("max", "<=", 0)

SETTLE_S = 5.0  # footprint: let the first checkpoints and ticks after a start pass before the idle window


def _replicas(cluster: Cluster, leader: Node) -> list[Node]:
    return sorted((n for n in cluster.nodes if n is not leader and n.is_running), key=lambda n: n.name)


def rest_auth(node: Node) -> tuple[str, str] | None:
    """The REST API credentials of the node's configuration, if it has any (the unsafe endpoints need them)."""
    config = yaml.safe_load(node.config_path.read_text()) or {}
    auth = (config.get("restapi") or {}).get("authentication") or {}
    if auth.get("username") and auth.get("password"):
        return str(auth["username"]), str(auth["password"])
    return None


def _wait_attempts(probe: WriteProbe, count: int) -> None:
    """The probe's connections are up and it has tried (and failed) at least `count` INSERTs."""
    wait_until(lambda: probe.attempts >= count, 10, interval=0.01, what="the write probe's first attempts")


# --- 1. bootstrap ---------------------------------------------------------------------------------------------


def bootstrap(b: Bench) -> None:
    metric = b.results.metric("bootstrap", "start → leader + 2 streaming", "s", note="fast profile, fresh data dirs")
    for rep in range(b.options.reps):
        cluster = b.new_cluster("fast", "boot")
        try:
            started = time.monotonic()
            cluster.start()
            wait_healthy(cluster, interval=0.05)
            elapsed = time.monotonic() - started
            metric.add(elapsed)
            log(f"{b.flavour.name} bootstrap {rep + 1}/{b.options.reps}: {elapsed:.2f} s")
        except BaseException:
            log(log_tail(cluster))
            raise
        finally:
            b.destroy(cluster)


# --- 2. planned switchover ------------------------------------------------------------------------------------


def switchover(b: Bench) -> None:
    cluster = b.running("fast")
    writable = b.results.metric("switchover", "POST → new primary INSERT", "s", T_SWITCHOVER_WRITABLE)
    streaming = b.results.metric("switchover", "POST → old primary streaming", "s", T_SWITCHOVER_STREAMING)
    answered = b.results.metric("switchover", "POST → 200 answer", "s")
    for rep in range(b.options.reps):
        leader = wait_healthy(cluster)
        candidate = _replicas(cluster, leader)[rep % 2]
        with WriteProbe([candidate]).start() as wp, StreamingProbe(cluster, leader).start() as sp:
            _wait_attempts(wp, 1)
            started = time.monotonic()
            status, body = leader.rest(
                "/switchover",
                "POST",
                timeout=120,
                body={"leader": leader.name, "candidate": candidate.name},
                auth=rest_auth(leader),
            )
            answer_at = time.monotonic()
            if status != 200:
                raise RuntimeError(f"POST /switchover {leader.name} -> {candidate.name}: {status} {body}")
            wrote_at = wp.wait(60)
            streamed_at = sp.wait(120)
        if wrote_at is None:
            raise RuntimeError(f"{candidate.name} accepted no INSERT within 60 s: {wp.last_errors}")
        if streamed_at is None:
            raise RuntimeError(f"{leader.name} did not show as a streaming replica within 120 s")
        writable.add(wrote_at - started)
        streaming.add(streamed_at - started)
        answered.add(answer_at - started)
        log(
            f"{b.flavour.name} switchover {rep + 1}/{b.options.reps} {leader.name} -> {candidate.name}: "
            f"INSERT {wrote_at - started:.3f} s, streaming {streamed_at - started:.3f} s, "
            f"answer {answer_at - started:.3f} s"
        )
    wait_healthy(cluster)


# --- 3. unplanned failover ------------------------------------------------------------------------------------


def failover(b: Bench) -> None:
    """Both profiles, each on its own cluster; a failure of one is recorded and the other still runs."""
    for profile in ("defaults", "fast"):
        try:
            _failover(b, profile)
        except Exception as exc:
            b.fail(f"failover ({profile})", exc)
            b.discard(profile)
        finally:
            if profile == "defaults":
                b.discard(profile)  # only this scenario uses Patroni's defaults: free the machine for the rest


def _failover(b: Bench, profile: str) -> None:
    cluster = b.running(profile)
    dcs = PROFILES[profile]
    label = f"{profile} (ttl {dcs['ttl']}, loop_wait {dcs['loop_wait']}, retry_timeout {dcs['retry_timeout']})"
    to_write = b.results.metric(
        "failover", f"{profile}: kill → INSERT", "s", T_FAILOVER_FAST if profile == "fast" else None, note=label
    )
    key_to_write = b.results.metric("failover", f"{profile}: key gone → INSERT", "s", T_KEY_GONE_TO_WRITABLE)
    to_key = b.results.metric("failover", f"{profile}: kill → key gone", "s")
    rejoin = b.results.metric("failover", f"{profile}: restart → healthy", "s")
    key = leader_key(cluster.scope)
    limit = float(dcs["ttl"] + dcs["loop_wait"] + dcs["retry_timeout"] + 60)
    for rep in range(b.options.reps):
        leader = wait_healthy(cluster)
        survivors = _replicas(cluster, leader)
        with LeaderWatch(b.etcd_port, key) as watch, WriteProbe(survivors).start() as wp:
            if watch.initial != leader.name:
                raise RuntimeError(f"the leader key names {watch.initial!r}, GET /primary answers on {leader.name}")
            _wait_attempts(wp, len(survivors))
            killed_at = time.monotonic()
            leader.kill_all()
            wrote_at = wp.wait(limit)
            if wrote_at is None:
                raise RuntimeError(f"no survivor accepted an INSERT within {limit:.0f} s: {wp.last_errors}")
            gone = watch.wait_for(lambda e, name=leader.name: e.value != name, 5, after=killed_at)
        to_write.add(wrote_at - killed_at)
        detail = f"{wp.winner} INSERT {wrote_at - killed_at:.3f} s after the kill"
        if gone is not None:
            key_to_write.add(wrote_at - gone.at)
            to_key.add(gone.at - killed_at)
            detail += f", {wrote_at - gone.at:.3f} s after the leader key went ({gone.kind})"
        else:
            detail += ", the leader key's disappearance was not seen"
            b.results.details.setdefault("failover_notes", []).append(f"{profile} rep {rep + 1}: {detail}")
        log(f"{b.flavour.name} failover {profile} {rep + 1}/{b.options.reps}: {leader.name} killed; {detail}")
        restarted = time.monotonic()
        leader.start()
        wait_healthy(cluster)
        rejoin.add(time.monotonic() - restarted)


# --- 4. soak --------------------------------------------------------------------------------------------------


@dataclass
class _Pgbench:
    """pgbench -c 4 through HAProxy, started again for the time left whenever its clients all aborted."""

    port: int
    end: float
    proc: subprocess.Popen[str] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": SUPERUSER[1], "PGCONNECT_TIMEOUT": "2"}

    def start(self) -> None:
        seconds = int(self.end - time.monotonic())
        if seconds < 2:
            return
        cmd = [
            os.path.join(pg_bin_dir(), "pgbench"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER[0],
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            str(seconds),
            "postgres",
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env(), start_new_session=True
        )

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self._collect()
            self.start()

    def _collect(self) -> None:
        assert self.proc is not None
        output = self.proc.communicate()[0] if self.proc.stdout is not None else ""
        tps = re.search(r"^tps = ([0-9.]+)", output, re.M)
        done = re.search(r"number of transactions actually processed: (\d+)", output)
        self.runs.append(
            {
                "exit": self.proc.returncode,
                "tps": float(tps.group(1)) if tps else None,
                "transactions": int(done.group(1)) if done else 0,
                "tail": output.strip().splitlines()[-3:],
            }
        )
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGINT)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.proc.pid, signal.SIGKILL)
            self._collect()


def _nice_zero() -> None:
    with contextlib.suppress(OSError):  # only root may lower a niceness the bench itself runs with
        os.setpriority(os.PRIO_PROCESS, 0, 0)


@contextlib.contextmanager
def cpu_hog() -> Iterator[subprocess.Popen[bytes]]:
    """One busy Python process at niceness 0 (ours, stopped by pid)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=_nice_zero)
    try:
        yield hog
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hog.pid, signal.SIGKILL)
        hog.wait(10)


def soak(b: Bench) -> None:
    if b.options.soak_minutes <= 0:
        log(f"{b.flavour.name} soak: skipped (--soak-minutes 0)")
        return
    cluster = b.running("fast")
    leader = wait_healthy(cluster)
    init = subprocess.run(
        [
            *(os.path.join(pg_bin_dir(), "pgbench"), "-i", "-q", "-s", "1"),
            *("-h", "127.0.0.1", "-p", str(leader.spec.pg_port), "-U", SUPERUSER[0], "postgres"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": SUPERUSER[1]},
        timeout=300,
        check=False,
    )
    if init.returncode != 0:
        raise RuntimeError(f"pgbench -i failed: {init.stderr.strip() or init.stdout.strip()}")
    changes = b.results.metric("soak", "unrequested leader changes", "count", T_UNREQUESTED)
    polled = b.results.metric("soak", "leader changes (0.5 s poll)", "count", T_UNREQUESTED)
    tps = b.results.metric("soak", "pgbench tps (-c 4, via HAProxy)", "tps")
    key = leader_key(cluster.scope)
    duration = b.options.soak_minutes * 60
    windows = b.options.reps
    samples: list[tuple[float, str | None]] = []
    with HAProxy(backends_for(cluster.nodes)) as proxy:
        proxy.wait_up([leader.name], timeout=30)
        with LeaderWatch(b.etcd_port, key) as watch, cpu_hog() as hog:
            started = time.monotonic()
            load = _Pgbench(proxy.port, started + duration)
            load.start()
            log(
                f"{b.flavour.name} soak: {b.options.soak_minutes:g} min, pgbench -c 4 via HAProxy :{proxy.port}, "
                f"CPU hog pid {hog.pid}, leader {leader.name}"
            )
            try:
                tick = started
                while (now := time.monotonic()) < started + duration:
                    with contextlib.suppress(Exception):
                        samples.append((now, poll_leader(b.etcd_port, key, timeout=1.0)[0]))
                    load.check()
                    if watch.error is not None:
                        raise RuntimeError(f"the leader key watch failed: {watch.error}")
                    tick += 0.5
                    time.sleep(max(0.0, tick - time.monotonic()))
            finally:
                load.stop()
            ended = time.monotonic()
            window = (ended - started) / windows
            for i in range(windows):
                start, end = started + i * window, started + (i + 1) * window
                changes.add(watch.holder_changes(start, end))
                polled.add(_polled_changes(samples, start, end))
            holders = [
                (round(e.at - started, 3), e.kind, e.value)
                for e in watch.events
                if e.kind == "DELETE" or e.value != leader.name
            ]
    for run in load.runs:
        if run["tps"] is not None:
            tps.add(run["tps"])
    b.results.details["soak"] = {
        "minutes": b.options.soak_minutes,
        "windows": windows,
        "pgbench_runs": load.runs,
        "leader_key_events_not_the_first_leader": holders[:200],
    }
    log(f"{b.flavour.name} soak: {sum(changes.values):.0f} unrequested leader change(s), pgbench runs {load.runs}")
    wait_healthy(cluster)


def _polled_changes(samples: list[tuple[float, str | None]], start: float, end: float) -> int:
    holder: str | None = None
    for at, value in samples:
        if at >= start:
            break
        holder = value
    count = 0
    for at, value in samples:
        if not start <= at < end:
            continue
        if holder is not None and value != holder:
            count += 1
        holder = value
    return count


# --- 5. health checks -----------------------------------------------------------------------------------------


def health(b: Bench) -> None:
    cluster = b.running("fast")
    leader = wait_healthy(cluster)
    replica = _replicas(cluster, leader)[0]
    seconds = b.options.wrk_seconds
    runs: list[dict[str, Any]] = []

    def measure(label: str, node: Node, path: str, fault: bool = False) -> None:
        primary = path == "/primary"
        rps = b.results.metric("health", f"{label} req/s", "req/s", T_PRIMARY_RPS if primary else None)
        p99 = b.results.metric("health", f"{label} p99", "ms", T_PRIMARY_P99 if primary else None)
        # under a fault the answer may change (a leader that cannot reach the DCS demotes itself): how often
        not_ok = b.results.metric("health", f"{label} non-2xx", "%") if fault else None
        for rep in range(b.options.reps):
            result = wrk.run(f"http://127.0.0.1:{node.spec.rest_port}{path}", seconds=seconds)
            rps.add(result.requests_per_s)
            p99.add(result.p99_ms)
            if not_ok is not None:
                not_ok.add(100.0 * result.non_2xx / max(1, result.requests))
            runs.append(
                {
                    "what": label,
                    "node": node.name,
                    "requests_per_s": result.requests_per_s,
                    "p50_ms": result.p50_ms,
                    "p99_ms": result.p99_ms,
                    "requests": result.requests,
                    "non_2xx": result.non_2xx,
                    "socket_errors": result.socket_errors,
                }
            )
            log(
                f"{b.flavour.name} health {label} {rep + 1}/{b.options.reps}: {result.requests_per_s:.0f} req/s, "
                f"p99 {result.p99_ms} ms, non-2xx {result.non_2xx}/{result.requests}, "
                f"socket errors {result.socket_errors}"
            )

    for role, node in (("leader", leader), ("replica", replica)):
        for path in ("/primary", "/replica", "/patroni"):
            measure(f"{role} GET {path}", node, path)

    etcd_pid = b.etcd_pid()
    with _stopped(etcd_pid, "etcd"):
        measure("leader GET /primary, etcd SIGSTOPped", leader, "/primary", fault=True)
    leader = wait_healthy(cluster)

    postmaster = leader.postmaster_pid()
    if postmaster is None:
        raise RuntimeError(f"{leader.name} has no postmaster.pid")
    with _stopped(postmaster, f"{leader.name}'s postmaster"):
        measure("leader GET /primary, postmaster SIGSTOPped", leader, "/primary", fault=True)
    wait_healthy(cluster)
    b.results.details["health"] = {"wrk": f"-t2 -c16 -d{seconds}s --latency", "runs": runs}


@contextlib.contextmanager
def _stopped(pid: int, what: str) -> Iterator[None]:
    log(f"SIGSTOP {what} (pid {pid})")
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        log(f"SIGCONT {what} (pid {pid})")


# --- 6. footprint ---------------------------------------------------------------------------------------------


def footprint(b: Bench) -> None:
    """Patroni's defaults first (the targets: Patroni's own figures were measured at its defaults), with only that
    cluster running; then the fast profile, reported without a target (it ticks ten times as often)."""
    for profile in ("defaults", "fast"):
        try:
            _footprint(b, profile)
        except Exception as exc:
            b.fail(f"footprint ({profile})", exc)
        finally:
            if profile == "defaults":
                b.discard(profile)  # measure the fast profile alone too; the failover scenario starts its own


def _footprint(b: Bench, profile: str) -> None:
    cluster = b.running(profile)
    wait_healthy(cluster)
    time.sleep(SETTLE_S)
    dcs = PROFILES[profile]
    label = f"ttl {dcs['ttl']}, loop_wait {dcs['loop_wait']}, retry_timeout {dcs['retry_timeout']}"
    targeted = profile == "defaults"
    prefix = "" if targeted else f"{profile} profile: "
    note = f"Patroni's defaults ({label})" if targeted else f"haven's {profile} profile ({label}), no target"
    rss = b.results.metric("footprint", f"{prefix}node RSS", "MB", note=note)
    pss = b.results.metric("footprint", f"{prefix}node PSS", "MB", T_NODE_PSS if targeted else None, note=note)
    uss = b.results.metric("footprint", f"{prefix}node USS", "MB", note=note)
    cpu = b.results.metric(
        "footprint", f"{prefix}node CPU per idle minute", "CPU-s", T_IDLE_CPU if targeted else None, note=note
    )
    pg_rss = b.results.metric("footprint", f"{prefix}PostgreSQL RSS", "MB", note=note)
    pg_pss = b.results.metric("footprint", f"{prefix}PostgreSQL PSS", "MB", note=note)
    pg_uss = b.results.metric("footprint", f"{prefix}PostgreSQL USS", "MB", note=note)
    pg_cpu = b.results.metric("footprint", f"{prefix}PostgreSQL CPU per idle minute", "CPU-s", note=note)
    details: list[dict[str, Any]] = b.results.details.setdefault("footprint", [])
    groups: dict[str, Callable[[Node], list[Any]]] = {
        "manager": fp.manager_processes,
        "postgres": fp.postgres_processes,
    }
    for rep in range(b.options.reps):
        before = {(n.name, g): fp.cpu_times(f(n)) for n in cluster.nodes for g, f in groups.items()}
        started = time.monotonic()
        time.sleep(b.options.idle_seconds)  # the measured idle window
        elapsed = time.monotonic() - started
        for node in cluster.nodes:
            row: dict[str, Any] = {"profile": profile, "rep": rep + 1, "node": node.name, "window_s": round(elapsed, 2)}
            for group, procs_of in groups.items():
                procs = procs_of(node)
                mem = fp.memory(procs)
                after = fp.cpu_times(procs)
                spent = fp.cpu_delta(before[(node.name, group)], after) * 60.0 / elapsed
                row[group] = {
                    "processes": mem.processes,
                    "rss_mb": mem.rss / fp.MB,
                    "pss_mb": mem.pss / fp.MB,
                    "uss_mb": mem.uss / fp.MB,
                    "cpu_s_per_min": spent,
                }
                if group == "manager":  # where it goes: each program's share
                    row[group]["programs"] = fp.per_program(procs, before[(node.name, group)], after, elapsed)
                targets = (rss, pss, uss, cpu) if group == "manager" else (pg_rss, pg_pss, pg_uss, pg_cpu)
                for metric, value in zip(targets, (mem.rss, mem.pss, mem.uss), strict=False):
                    metric.add(value / fp.MB)
                targets[3].add(spent)
            details.append(row)
            programs = ", ".join(
                f"{name} {p['pss_mb']:.1f} MB {p['cpu_s_per_min']:.3f}"
                for name, p in row["manager"]["programs"].items()
            )
            log(
                f"{b.flavour.name} footprint {profile} {rep + 1}/{b.options.reps} {node.name}: "
                f"{row['manager']['processes']} processes, PSS {row['manager']['pss_mb']:.1f} MB, "
                f"{row['manager']['cpu_s_per_min']:.3f} CPU-s/min ({programs}); "
                f"PostgreSQL {row['postgres']['processes']} processes, PSS {row['postgres']['pss_mb']:.1f} MB"
            )
        if not cluster.healthy():
            b.results.details.setdefault("footprint_notes", []).append(
                f"{profile} rep {rep + 1}: cluster not healthy after"
            )


SCENARIO_FUNCTIONS: dict[str, Callable[[Bench], None]] = {
    "bootstrap": bootstrap,
    "switchover": switchover,
    "failover": failover,
    "soak": soak,
    "health": health,
    "footprint": footprint,
}
# the order they run in: the idle footprint before the load of the other scenarios, the soak last
RUN_ORDER = ("bootstrap", "footprint", "switchover", "failover", "health", "soak")

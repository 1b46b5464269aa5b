"""A node's processes, split into the HA manager's own (haven: supervisord and its five programs, with anything
they run; Patroni: the patroni process and its helpers) and PostgreSQL's (the postmaster named by the data
directory's postmaster.pid and its children), with their memory and CPU time."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psutil

from tests.support.cluster import Node

MB = 1_000_000


def postgres_processes(node: Node) -> list[psutil.Process]:
    pid = node.postmaster_pid()
    if pid is None:
        return []
    try:
        postmaster = psutil.Process(pid)
        return [postmaster, *postmaster.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def manager_processes(node: Node) -> list[psutil.Process]:
    """The node's root process (what `haven FILE` / `patroni FILE` became) and its descendants, minus PostgreSQL."""
    root = node.supervisord()
    if root is None:
        return []
    exclude = {p.pid for p in postgres_processes(node)}
    procs = [root]
    with contextlib.suppress(psutil.NoSuchProcess):
        procs += root.children(recursive=True)
    return [p for p in procs if p.pid not in exclude]


@dataclass(frozen=True)
class Memory:
    processes: int
    rss: int
    pss: int
    uss: int


def memory(procs: list[psutil.Process]) -> Memory:
    rss = pss = uss = count = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", 0)
            uss += info.uss
            count += 1
    return Memory(count, rss, pss, uss)


def cpu_times(procs: list[psutil.Process]) -> dict[tuple[int, float], float]:
    """(pid, create_time) -> user+system seconds, including the reaped children of each process (the short-lived
    helpers a program runs)."""
    out: dict[tuple[int, float], float] = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            t = p.cpu_times()
            out[(p.pid, p.create_time())] = t.user + t.system + t.children_user + t.children_system
    return out


def cpu_delta(before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]) -> float:
    """CPU seconds spent between two samples by the processes alive at the second one (a process born in between
    counts from zero)."""
    return sum(max(0.0, t - before.get(key, 0.0)) for key, t in after.items())


def program_name(proc: psutil.Process) -> str:
    """haven: supervisord or the program (services.<name>); Patroni: the executable's name."""
    try:
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    for i, arg in enumerate(cmdline):
        if arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1].startswith("services."):
            return cmdline[i + 1].removeprefix("services.")
        if arg.endswith("supervisord") or arg == "shared.launcher.supervise":
            return "supervisord"
    with contextlib.suppress(psutil.Error):
        return proc.name()
    return "?"


def per_program(
    procs: list[psutil.Process],
    before: dict[tuple[int, float], float],
    after: dict[tuple[int, float], float],
    elapsed: float,
) -> dict[str, dict[str, float]]:
    """name -> PSS (MB) and CPU seconds per idle minute of each process (processes of the same name summed)."""
    out: dict[str, dict[str, float]] = {}
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            key = (p.pid, p.create_time())
            pss = getattr(p.memory_full_info(), "pss", 0) / MB
            spent = max(0.0, after.get(key, 0.0) - before.get(key, 0.0)) * 60.0 / elapsed if key in after else 0.0
            entry = out.setdefault(program_name(p), {"pss_mb": 0.0, "cpu_s_per_min": 0.0})
            entry["pss_mb"] += pss
            entry["cpu_s_per_min"] += spent
    return out

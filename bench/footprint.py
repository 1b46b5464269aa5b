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

"""pg.cancel ends the long operation in progress (D32: a forced reinitialize cancels it first), against a real
pg_basebackup that waits forever on a source which accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from tests.service.test_postmaster import Node, started_node, story_dir, zmq_context
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    with zmq_context() as ctx, story_dir("haven-pmcancel-") as base, started_node(ctx, base, "pc1") as node:
        yield node


@pytest.fixture
def silent_source() -> Iterator[int]:
    """A TCP port that accepts connections and never says anything."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for sock in accepted:
            sock.close()
        listener.close()


def basebackups(node: Node) -> list[psutil.Process]:
    def ours(proc: psutil.Process) -> bool:
        try:
            return proc.name() == "pg_basebackup" and str(node.data_dir) in " ".join(proc.cmdline())
        except psutil.Error:
            return False

    return [p for p in psutil.process_iter() if ours(p)]


def test_nothing_to_cancel(node: Node) -> None:
    assert node.call("pg.cancel") == {"cancelled": None}


def test_cancel_ends_a_clone_that_would_wait_forever_D32(node: Node, silent_source: int) -> None:
    source = {"name": "silent", "conn_url": f"postgres://127.0.0.1:{silent_source}/postgres"}
    reply: dict[str, Any] = node.call("pg.clone", {"source": source})
    wait_until(lambda: basebackups(node), 20, what="pg_basebackup to run")
    asked = time.monotonic()
    assert node.call("pg.cancel") == {"cancelled": reply["operation"]}

    def finished() -> dict[str, Any] | None:
        op = node.status()["operation"]
        return op if op["id"] == reply["operation"] and op["state"] != "running" else None

    op = wait_until(finished, 20, what="the clone to end")
    print(f"\nclone cancelled in {time.monotonic() - asked:.2f}s")
    assert op["state"] == "failed" and op["error"].startswith("cancelled"), op
    wait_until(lambda: not basebackups(node), 10, what="pg_basebackup to be gone")
    assert node.status()["data_dir"] in ("empty", "missing")  # a failed clone leaves no half-copied data

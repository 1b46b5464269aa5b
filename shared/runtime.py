"""What every program's shell shares: argument parsing, the poll loop with timers and signals, and a
thread-safe way for worker threads to hand results back to the loop."""

from __future__ import annotations

import argparse
import collections
import heapq
import itertools
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from shared import log as haven_log
from shared.config import ConfigError, NodeConfig
from shared.protocol.endpoints import Service

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    service: Service
    config: NodeConfig
    run_dir: str
    group: int | None
    trusted_uids: list[int]


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when supervisord (our parent) dies: an orphaned program shuts down cleanly."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def parse_args(service: Service, argv: list[str] | None = None) -> Runtime:
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    parser.add_argument("--config", required=True, help="the node's configuration file")
    parser.add_argument("--run-dir", help="override haven.run_dir")
    parser.add_argument("--text-log", action="store_true", help="human-readable log lines instead of JSON")
    args = parser.parse_args(argv)
    if os.environ.get("SUPERVISOR_ENABLED"):
        die_with_parent()
    try:
        config = NodeConfig.load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{service}: {problem}", flush=True)
        raise SystemExit(2)
    run_dir = args.run_dir or config.run_dir
    haven_log.setup(str(service), config.name, config.section("log"), json_lines=not args.text_log)
    group_env = os.environ.get("HAVEN_GROUP_ID")
    uids = [int(u) for u in os.environ.get("HAVEN_TRUSTED_UIDS", "").split(",") if u.strip().isdigit()]
    return Runtime(service, config, run_dir, int(group_env) if group_env else None, uids)


@dataclass(order=True)
class _Timer:
    due: float
    seq: int
    callback: Callable[[], Any] = field(compare=False)
    interval: float | None = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)


class Loop:
    """A single-threaded poll loop: sockets, timers, signals and calls handed over by other threads."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._handlers: dict[Any, Callable[[], Any]] = {}
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._calls: collections.deque[Callable[[], Any]] = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller.register(self._wake_r.fileno(), zmq.POLLIN)
        self._handlers[self._wake_r.fileno()] = self._run_calls
        self.stopping = False
        self._stop_callbacks: list[Callable[[], Any]] = []

    def add_reader(self, sock: zmq.Socket[bytes] | int, callback: Callable[[], Any]) -> None:
        self._poller.register(sock, zmq.POLLIN)
        self._handlers[sock] = callback

    def remove_reader(self, sock: zmq.Socket[bytes] | int) -> None:
        self._poller.unregister(sock)
        self._handlers.pop(sock, None)

    def call_later(self, delay: float, callback: Callable[[], Any], *, repeat: bool = False) -> _Timer:
        timer = _Timer(time.monotonic() + delay, next(self._seq), callback, delay if repeat else None)
        heapq.heappush(self._timers, timer)
        return timer

    def call_from_thread(self, callback: Callable[[], Any]) -> None:
        """Thread-safe: run `callback` in the loop's thread as soon as possible."""
        self._calls.append(callback)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is already awake

    def _run_calls(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while self._calls:
            self._safe(self._calls.popleft())

    def on_stop(self, callback: Callable[[], Any]) -> None:
        self._stop_callbacks.append(callback)

    def stop(self) -> None:
        self.stopping = True
        self.call_from_thread(lambda: None)

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            logger.info("received %s", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    @staticmethod
    def _safe(callback: Callable[[], Any]) -> None:
        try:
            callback()
        except Exception:
            logger.exception("unhandled error in the loop; carrying on")

    def run_once(self, max_wait: float = 1.0) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        timeout = max_wait
        if self._timers:
            timeout = max(0.0, min(timeout, self._timers[0].due - now))
        # Rounded up to the next millisecond: a timer due in 0.4 ms must not turn into poll(0) calls that spin
        # until it is due.
        for sock, _ in self._poller.poll(math.ceil(timeout * 1000)):
            callback = self._handlers.get(sock)
            if callback is not None:
                self._safe(callback)
        now = time.monotonic()
        while self._timers and self._timers[0].due <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.due = now + timer.interval
                heapq.heappush(self._timers, timer)
            self._safe(timer.callback)

    def run(self) -> None:
        while not self.stopping:
            self.run_once()
        for callback in self._stop_callbacks:
            self._safe(callback)

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()
        self.ctx.destroy(linger=0)


def start_thread(name: str, target: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread

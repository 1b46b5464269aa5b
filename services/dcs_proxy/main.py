"""dcs_proxy's shell: the DCS backend, the ROUTER that serves dcs.* requests, and the PUB of cluster views.

Threads:
- the loop (shared.runtime.Loop) owns the PUB: it publishes a view at most PUBLISH_MIN_INTERVAL_S after
  every change the backend reports, when the backend's health flips, and at least every HEARTBEAT_S. One
  timer does the last two: it is set for the next heartbeat, or earlier for the moment the backend says its
  health may flip without telling (Backend.health_check_in), so an idle proxy wakes once a second;
- one request thread owns the ROUTER and runs each request to completion: a DCS call may block up to
  the request's timeout (retry_timeout), and must not hold back the views meanwhile. It sleeps in a poll
  of the ROUTER and of a wake-up socket that stop() writes to;
- the backend's own threads (pysyncobj's) report changes through Loop.call_from_thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from services.dcs_proxy.core import Operations, ViewTracker
from shared.dcs import Backend, BackendError, DCSUnavailable, OnChange, get_backend
from shared.protocol.endpoints import Service, Topic, pub_path, router_path
from shared.protocol.ops import DCS
from shared.protocol.transport import Publisher, RouterServer, SocketInUse
from shared.runtime import Loop, Runtime, start_thread

log = logging.getLogger(__name__)

PUBLISH_MIN_INTERVAL_S = 0.02  # changes closer together than this are coalesced into one view
HEARTBEAT_S = 1.0  # a view is published at least this often

BackendFactory = Callable[[Any, OnChange], Backend]


class DcsProxy:
    def __init__(self, runtime: Runtime, loop: Loop, backend_factory: BackendFactory = get_backend) -> None:
        self.runtime = runtime
        self.loop = loop
        config = runtime.config
        self.backend = backend_factory(config, lambda: loop.call_from_thread(self.changed))
        self.tracker = ViewTracker(config.scope, config.namespace, self.backend.name, config.bootstrap_dcs)
        self._view_lock = threading.Lock()
        self.ops = Operations(self.backend, self.read_view, lambda: self.tracker.retry_timeout)
        self.router: RouterServer | None = None
        self.publisher: Publisher | None = None
        self._stopping = threading.Event()
        self._request_thread: threading.Thread | None = None
        self._publish_timer: Any = None
        self._check_timer: Any = None
        self._stop_r, self._stop_w = socket.socketpair()  # wakes the request thread for stop()
        self._last_publish = 0.0
        self._last_ok: bool | None = None

    def read_view(self) -> dict[str, Any]:
        """A view read now (any thread)."""
        with self._view_lock:
            healthy = self.backend.is_healthy()
            try:
                snapshot = self.backend.load()
            except DCSUnavailable as exc:
                log.debug("cannot read the DCS: %s", exc)
                snapshot = None
            return self.tracker.update(snapshot, healthy, time.time())

    def start(self) -> None:
        run_dir = self.runtime.run_dir
        os.makedirs(run_dir, mode=0o750, exist_ok=True)
        self.router = RouterServer(
            self.loop.ctx,
            router_path(run_dir, Service.DCS_PROXY),
            self.ops.handlers(),
            DCS,
            group=self.runtime.group,
            allowed_uids=self.runtime.trusted_uids,
        )
        # protocol.md: the REST API's user reads dcs_proxy.pub, so no uid filter here: the group decides.
        self.publisher = Publisher(self.loop.ctx, pub_path(run_dir, Service.DCS_PROXY), group=self.runtime.group)
        self.backend.start()
        self._request_thread = start_thread("dcs_proxy-requests", self._serve_requests)
        self.changed()
        log.info("dcs_proxy serving %s (backend %s)", self.router.path, self.backend.name)

    def _serve_requests(self) -> None:
        router = self.router
        assert router is not None
        poller = zmq.Poller()
        poller.register(router.socket, zmq.POLLIN)
        poller.register(self._stop_r.fileno(), zmq.POLLIN)
        while not self._stopping.is_set():
            try:
                if dict(poller.poll()).get(router.socket):
                    router.process()
            except zmq.ZMQError as exc:
                if self._stopping.is_set():
                    break
                log.error("request socket error: %s", exc)
                time.sleep(0.1)
            except Exception:  # RouterServer answers handler errors itself; this is a bug in the loop
                log.exception("unexpected error serving requests; carrying on")

    def changed(self) -> None:
        """Loop thread: something may have changed; publish soon, at most every PUBLISH_MIN_INTERVAL_S."""
        if self._publish_timer is not None or self.loop.stopping:
            return
        delay = max(0.0, self._last_publish + PUBLISH_MIN_INTERVAL_S - time.monotonic())
        self._publish_timer = self.loop.call_later(delay, self._publish)

    def _publish(self) -> None:
        self._publish_timer = None
        view = self.read_view()
        if self.publisher is not None:
            self.publisher.publish(Topic.CLUSTER_VIEW, view)
        self._last_publish = time.monotonic()
        if view["ok"] != self._last_ok:
            log.info("DCS view is %s", "current" if view["ok"] else "NOT current")
            self._last_ok = view["ok"]
        self._arm_check()

    def _arm_check(self) -> None:
        """Loop thread: one timer for the next heartbeat, or for when the backend's health may flip unannounced."""
        if self._check_timer is not None:
            self._check_timer.cancelled = True
        if self.loop.stopping:
            self._check_timer = None
            return
        delay = self._last_publish + HEARTBEAT_S - time.monotonic()
        health_in = self.backend.health_check_in()
        if health_in is not None:
            delay = min(delay, health_in)
        self._check_timer = self.loop.call_later(max(0.0, delay), self._check)

    def _check(self) -> None:
        self._check_timer = None
        due = time.monotonic() - self._last_publish >= HEARTBEAT_S - 0.001
        if due or self.backend.is_healthy() != self._last_ok:
            self.changed()
        else:
            self._arm_check()

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._stop_w.send(b"\0")
        except OSError:
            pass
        if self._request_thread is not None:
            self._request_thread.join()
        self._stop_r.close()
        self._stop_w.close()
        if self.router is not None:
            self.router.close()
        if self.publisher is not None:
            self.publisher.close()
        self.backend.close()


def run(runtime: Runtime) -> int:
    loop = Loop()
    proxy: DcsProxy | None = None
    try:
        proxy = DcsProxy(runtime, loop)
        proxy.start()
    except (BackendError, SocketInUse) as exc:
        log.error("dcs_proxy cannot start: %s", exc)
        if proxy is not None:
            proxy.stop()
        loop.close()
        return 2 if isinstance(exc, BackendError) else 1
    loop.install_signal_handlers()
    loop.on_stop(proxy.stop)
    try:
        loop.run()
    finally:
        loop.close()
    log.info("dcs_proxy stopped")
    return 0

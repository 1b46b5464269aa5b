"""The base of the etcd v3 (etcd3.py) and v2 (etcd.py) backends (WatchingBackend): the section read and checked,
the key cache that load() serves, and the two threads each backend runs: one keeps the cache current (a full
read, then a watch), the other proves contact every POLL_INTERVAL_S and moves the watch to the next endpoint
after HEALTH_STALE_S of silence."""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import abstractmethod

from shared.config import NodeConfig
from shared.dcs.base import Backend, BackendError, OnChange, Snapshot
from shared.dcs.etcd_common import EndpointError, Endpoints, KeyCache
from shared.dcs.etcd_config import SETUP_TIMEOUT_S, Endpoint, EtcdSettings

log = logging.getLogger("shared.dcs.etcd_common")  # the name these records had before etcd_base.py

POLL_INTERVAL_S = 1.0
HEALTH_STALE_S = 3.0
WRITE_VISIBLE_S = 1.0  # at most this long waiting for our own write to come back through the watch
MAX_BACKOFF_S = 1.0


class WatchingBackend(Backend):
    """A backend whose reads come from a KeyCache that a watch thread keeps current."""

    def __init__(self, config: NodeConfig, on_change: OnChange) -> None:
        super().__init__(config, on_change)
        self.settings = EtcdSettings.from_section(config.dcs, self.name).resolve()
        for path in (self.settings.cacert, self.settings.cert, self.settings.key):
            if path is not None and not os.access(path, os.R_OK):
                raise BackendError(f"{self.name}: cannot read {path}")
        self.endpoints = Endpoints(self.settings.endpoints)
        self.cache = KeyCache(on_change)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @abstractmethod
    def _watch(self, endpoint: Endpoint) -> tuple[str, bool]:
        """Read everything, then follow changes until a failure or _interrupt(); (why it stopped, whether it ran)."""

    @abstractmethod
    def _poll(self, endpoint: Endpoint) -> None:
        """A quorum read (and whatever the backend refreshes with it); EndpointError when there is no answer."""

    @abstractmethod
    def _interrupt(self) -> None:
        """Make _watch() return soon."""

    def start(self) -> None:
        for target, role in ((self._watch_loop, "watch"), (self._poll_loop, "poll")):
            thread = threading.Thread(target=target, name=f"{self.name}-{role}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self.cache.closed = True
        self._interrupt()
        for thread in self._threads:
            thread.join(timeout=SETUP_TIMEOUT_S + 1)

    def is_healthy(self) -> bool:
        return self.cache.is_healthy(HEALTH_STALE_S)

    def health_check_in(self) -> float | None:
        """Healthy turns unhealthy by itself HEALTH_STALE_S after the last contact; every other flip of
        `current` calls on_change (KeyCache.set_current)."""
        return self.cache.stale_in(HEALTH_STALE_S)

    def load(self) -> Snapshot:
        return self.cache.snapshot(self.name)

    def _wait_visible(self, revision: int, started: float, timeout: float) -> None:
        """Read-your-writes: return once the watch has brought our write into the cache."""
        self.cache.wait_revision(revision, min(WRITE_VISIBLE_S, started + timeout - time.monotonic()))

    def _watch_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            endpoint = self.endpoints.current()
            try:
                problem, established = self._watch(endpoint)
            except Exception as exc:  # an unexpected answer must not end the watch for good
                log.exception("%s: the watch failed", self.name)
                problem, established = f"{endpoint}: {type(exc).__name__}: {exc}", False
            if self._stop.is_set():
                break
            log.log(logging.WARNING if self.cache.current else logging.DEBUG, "%s: %s", self.name, problem)
            self.cache.set_current(False, problem)
            self.endpoints.failed(endpoint)
            backoff = 0.1 if established else min(MAX_BACKOFF_S, backoff * 2)
            self._stop.wait(backoff)

    def _poll_loop(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            endpoint = self.endpoints.current()
            try:
                self._poll(endpoint)
                self.cache.contact()
            except EndpointError as exc:
                log.debug("%s: no answer: %s", self.name, exc)
            except Exception:
                log.exception("%s: the contact check failed", self.name)
            silent_s = time.monotonic() - self.cache.last_contact
            if self.cache.current and silent_s > HEALTH_STALE_S:
                log.warning("%s: no answer from %s for %.1fs: watching another endpoint", self.name, endpoint, silent_s)
                self.cache.set_current(False, f"no answer from {endpoint} for {silent_s:.1f}s")
                self.endpoints.failed(endpoint)
                self._interrupt()

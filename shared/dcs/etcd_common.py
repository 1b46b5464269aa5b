"""What the etcd v3 (etcd3.py) and v2 (etcd.py) backends share besides their section (etcd_config.py) and their
base class (etcd_base.py): the classification of failures, the walk over endpoints within a deadline, and the
watched key cache.

Failure kinds, per attempt on one endpoint:
    NOT_SENT  the request certainly did not reach the store (connection refused, no leader): try the next endpoint.
    UNKNOWN   it may have been applied (timeout, connection lost mid-call): try again only if the operation is
              idempotent; otherwise the caller gets DCSUnavailable and reads the next view (base.py).
    RETRY     refused before being applied for a reason the backend just fixed (expired token, lost lease).
    FATAL     retrying cannot help (bad credentials, no permission, a full database).
A compare that fails is not a failure: the backend answers False.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from shared.dcs.base import BackendError, DCSUnavailable, KeyValueTTL, OnChange, Snapshot

# The section's names, defined here before etcd_config.py: still importable from this module.
from shared.dcs.etcd_config import DEFAULT_PORT as DEFAULT_PORT
from shared.dcs.etcd_config import SETUP_TIMEOUT_S as SETUP_TIMEOUT_S
from shared.dcs.etcd_config import SRV_SERVICES as SRV_SERVICES
from shared.dcs.etcd_config import Endpoint as Endpoint
from shared.dcs.etcd_config import EtcdSettings as EtcdSettings
from shared.dcs.etcd_config import parse_endpoint as parse_endpoint
from shared.dcs.etcd_config import parse_hosts as parse_hosts
from shared.dcs.etcd_config import peer_client_endpoints as peer_client_endpoints
from shared.dcs.etcd_config import resolve_srv as resolve_srv
from shared.dcs.etcd_config import srv_names as srv_names

T = TypeVar("T")

RETRY_PAUSE_S = 0.1  # between two rounds over every endpoint
MIN_ATTEMPT_S = 1.0


def lease_ttl(ttl: float) -> int:
    """etcd counts whole seconds: round up, so that a key never lives shorter than asked."""
    return max(1, math.ceil(ttl - 1e-9))


class Failure(StrEnum):
    NOT_SENT = "not_sent"
    UNKNOWN = "unknown"
    RETRY = "retry"
    FATAL = "fatal"


class EndpointError(Exception):
    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


class Endpoints:
    """The endpoint in use and the order to try the others in; shared by every thread of a backend."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self._all = list(dict.fromkeys(endpoints))
        if not self._all:
            raise BackendError("etcd: no endpoint")
        self._index = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._all)

    def known(self) -> tuple[Endpoint, ...]:
        with self._lock:
            return tuple(self._all)

    def current(self) -> Endpoint:
        with self._lock:
            return self._all[self._index]

    def extend(self, found: Iterable[Endpoint]) -> list[Endpoint]:
        """Add the members' client endpoints learnt from the members API (B28); returns the new ones."""
        with self._lock:
            added = [e for e in dict.fromkeys(found) if e not in self._all]
            self._all.extend(added)
            return added

    def failed(self, endpoint: Endpoint) -> None:
        """Move on to the next endpoint, unless another thread already did."""
        with self._lock:
            if self._all[self._index] == endpoint:
                self._index = (self._index + 1) % len(self._all)


def attempt_seconds(remaining: float, idempotent: bool) -> float:
    """How long one attempt may take. An idempotent one leaves time for another try elsewhere: a member that
    lost its Raft leader holds a request until etcd's own timeout (7 s), long after a new leader is elected."""
    return max(min(remaining, MIN_ATTEMPT_S), remaining / 2) if idempotent else remaining


def call_with_retries(
    endpoints: Endpoints,
    attempt: Callable[[Endpoint, float], T],
    *,
    timeout: float,
    idempotent: bool,
    what: str,
) -> T:
    """Run `attempt(endpoint, seconds_left)` until it returns, across endpoints, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    problem = "no answer"
    failures = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DCSUnavailable(f"{what}: {problem} (within {timeout:.2f}s)")
        endpoint = endpoints.current()
        try:
            return attempt(endpoint, attempt_seconds(remaining, idempotent))
        except EndpointError as exc:
            problem = str(exc)
            if exc.failure is Failure.FATAL:
                raise DCSUnavailable(f"{what}: {problem}")
            if exc.failure is not Failure.RETRY:
                endpoints.failed(endpoint)
            if exc.failure is Failure.UNKNOWN and not idempotent:
                raise DCSUnavailable(f"{what}: {problem}; the outcome is unknown")
            failures += 1
            if failures % max(1, len(endpoints)) == 0:
                time.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class CachedKey:
    value: str
    version: int
    lease: int = 0  # v3: the lease the key is bound to
    expires_at: float | None = None  # v2: time.monotonic() when it expires


class KeyCache:
    """Every key under the prefix (relative names), fed by a full read then a watch. It is `current` only
    while the watch runs; load() refuses to serve it otherwise."""

    def __init__(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._cond = threading.Condition()
        self._keys: dict[str, CachedKey] = {}
        self._leases: dict[int, tuple[float, float]] = {}  # lease id -> (seconds left, time.monotonic())
        self.revision = 0
        self.current = False
        self.problem = "not loaded yet"
        self.last_contact = 0.0
        self.closed = False

    def changed(self) -> None:
        if not self.closed:
            self._on_change()

    def contact(self) -> None:
        self.last_contact = time.monotonic()

    def replace(self, keys: Mapping[str, CachedKey], revision: int) -> None:
        """A full read: becomes current with set_current(True) once the watch from `revision` runs."""
        with self._cond:
            self._keys = dict(keys)
            self.revision = revision
            self._cond.notify_all()
        self.contact()

    def apply(self, puts: Mapping[str, CachedKey], deleted: Iterable[str], revision: int) -> None:
        """A watch batch. A deleted name ending in '/' (or '') removes everything under it."""
        with self._cond:
            for name in deleted:
                if name == "" or name.endswith("/"):
                    for key in [k for k in self._keys if k.startswith(name)]:
                        del self._keys[key]
                else:
                    self._keys.pop(name, None)
            self._keys.update(puts)
            self.revision = max(self.revision, revision)
            self._cond.notify_all()
        self.contact()
        self.changed()

    def set_current(self, current: bool, problem: str = "") -> None:
        with self._cond:
            was, self.current = self.current, current
            self.problem = problem
            self._cond.notify_all()
        if was != current:
            self.changed()

    def wait_revision(self, revision: int, timeout: float) -> bool:
        """Read-your-writes: wait until the watch has delivered `revision`."""
        with self._cond:
            return self._cond.wait_for(lambda: not self.current or self.revision >= revision, max(0.0, timeout))

    def note_lease(self, lease: int, seconds_left: float) -> None:
        with self._cond:
            self._leases[lease] = (seconds_left, time.monotonic())

    def leases(self) -> set[int]:
        with self._cond:
            return {k.lease for k in self._keys.values() if k.lease}

    def leases_due(self, others_every_s: float) -> set[int]:
        """The leases whose TTL left to ask for now: the leader key's always (the lock's expiry matters), the
        others' (member keys: informational) when their last reading is `others_every_s` old or missing."""
        now = time.monotonic()
        with self._cond:
            leader = self._keys.get("leader")
            due = set()
            for key in self._keys.values():
                if not key.lease:
                    continue
                known = self._leases.get(key.lease)
                if key is leader or known is None or now - known[1] >= others_every_s:
                    due.add(key.lease)
            return due

    def forget_leases(self, keep: set[int]) -> None:
        with self._cond:
            self._leases = {lease: known for lease, known in self._leases.items() if lease in keep}

    def _ttl(self, key: CachedKey, now: float) -> float | None:
        if key.expires_at is not None:
            return max(0.0, key.expires_at - now)
        known = self._leases.get(key.lease) if key.lease else None
        return None if known is None else max(0.0, known[0] - (now - known[1]))

    def snapshot(self, what: str) -> Snapshot:
        now = time.monotonic()
        with self._cond:
            if not self.current:
                raise DCSUnavailable(f"{what}: the view is not current ({self.problem})")
            keys = {k: KeyValueTTL(v.value, v.version, None, self._ttl(v, now)) for k, v in self._keys.items()}
            return Snapshot(keys, self.revision)

    def is_healthy(self, stale_s: float) -> bool:
        return self.current and not self.closed and time.monotonic() - self.last_contact < stale_s

    def stale_in(self, stale_s: float) -> float | None:
        """Seconds until is_healthy(stale_s) turns false for want of contact; None while it is false already."""
        if not self.is_healthy(stale_s):
            return None
        return max(0.0, self.last_contact + stale_s - time.monotonic())

"""What the etcd v3 (etcd3.py) and v2 (etcd.py) backends share: the `etcd:`/`etcd3:` section (F32, B28), the
classification of failures, the walk over endpoints within a deadline, the watched key cache, and the two
threads each backend runs (WatchingBackend): one keeps the cache current (a full read, then a watch), the other
proves contact every POLL_INTERVAL_S and moves the watch to the next endpoint after HEALTH_STALE_S of silence.

Failure kinds, per attempt on one endpoint:
    NOT_SENT  the request certainly did not reach the store (connection refused, no leader): try the next endpoint.
    UNKNOWN   it may have been applied (timeout, connection lost mid-call): try again only if the operation is
              idempotent; otherwise the caller gets DCSUnavailable and reads the next view (base.py).
    RETRY     refused before being applied for a reason the backend just fixed (expired token, lost lease).
    FATAL     retrying cannot help (bad credentials, no permission, a full database).
A compare that fails is not a failure: the backend answers False.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import urllib3

from shared.config import NodeConfig
from shared.dcs.base import Backend, BackendError, DCSUnavailable, KeyValueTTL, OnChange, Snapshot

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_PORT = 2379
# Patroni's order (B28): the two *-server records name peers, whose client URLs are then asked for.
SRV_SERVICES = ("etcd-client-ssl", "etcd-client", "etcd-ssl", "etcd", "etcd-server-ssl", "etcd-server")
RETRY_PAUSE_S = 0.1  # between two rounds over every endpoint
MIN_ATTEMPT_S = 1.0
SETUP_TIMEOUT_S = 2.0  # background calls: the full read, the contact probe, authentication
POLL_INTERVAL_S = 1.0
HEALTH_STALE_S = 3.0
WRITE_VISIBLE_S = 1.0  # at most this long waiting for our own write to come back through the watch
MAX_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> Endpoint:
    """ "host", "host:port", "[v6]:port" or "http(s)://host:port" (the scheme is the caller's business)."""
    text = text.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rsplit("@", 1)[-1].split("/", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise BackendError(f"etcd: no host in {text!r}")
    try:
        return Endpoint(host, int(port) if port else default_port)
    except ValueError:
        raise BackendError(f"etcd: bad port in {text!r}")


def parse_hosts(value: Any) -> tuple[Endpoint, ...]:
    """`hosts` as a YAML list or "h1:p1,h2:p2" (spaces and quotes tolerated); duplicates dropped (B28)."""
    items: list[Any] = list(value) if isinstance(value, list | tuple) else str(value or "").strip("[] ").split(",")
    seen: dict[Endpoint, None] = {}
    for item in items:
        text = str(item).strip().strip("'\"").strip()
        if text:
            seen.setdefault(parse_endpoint(text), None)
    return tuple(seen)


def srv_names(domain: str, suffix: str | None) -> list[str]:
    """The SRV names asked, in order: _etcd-client-ssl[-suffix]._tcp.<domain>, ..."""
    tail = f"-{suffix}" if suffix else ""
    return [f"_{service}{tail}._tcp.{domain}" for service in SRV_SERVICES]


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[Endpoint, ...]
    protocol: str = "http"
    username: str | None = None
    password: str | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    use_proxies: bool = False
    srv: str | None = None
    srv_suffix: str | None = None

    @property
    def tls(self) -> bool:
        return self.protocol == "https"

    def url(self, endpoint: Endpoint) -> str:
        return f"{self.protocol}://{endpoint}"

    def resolve(self) -> EtcdSettings:
        """The endpoints, looked up in the DNS when the section gives `srv` only."""
        if self.endpoints or not self.srv:
            return self
        protocol, endpoints = resolve_srv(self.srv, self.srv_suffix, self.cacert)
        return replace(self, endpoints=endpoints, protocol=protocol)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], kind: str = "etcd") -> EtcdSettings:
        """One of host/hosts/url/proxy/srv (F32); url and proxy give the protocol and may carry user:password."""

        def text(name: str) -> str | None:
            value = section.get(name)
            return None if value is None or str(value).strip() == "" else str(value).strip()

        protocol, username, password = text("protocol"), text("username"), text("password")
        use_proxies = str(section.get("use_proxies", "")).lower() in ("1", "true", "yes", "on")
        endpoints: tuple[Endpoint, ...] = ()
        link = text("proxy") or text("url")
        if link:
            parts = urlsplit(link if "://" in link else f"http://{link}")
            protocol = parts.scheme or protocol
            username = username or (unquote(parts.username) if parts.username else None)
            password = password or (unquote(parts.password) if parts.password else None)
            endpoints = (parse_endpoint(link),)
            use_proxies = use_proxies or bool(text("proxy"))
        elif text("hosts"):
            endpoints = parse_hosts(section["hosts"])
        elif text("host"):
            endpoints = parse_hosts(section["host"])
        elif not text("srv"):
            raise BackendError(f"{kind}: one of host, hosts, url, proxy or srv is required")
        protocol = (protocol or ("https" if text("cacert") or text("cert") else "http")).lower()
        if protocol not in ("http", "https"):
            raise BackendError(f"{kind}: protocol must be http or https, not {protocol!r}")
        if (username is None) != (password is None):
            raise BackendError(f"{kind}: username and password go together")
        return cls(
            endpoints=endpoints,
            protocol=protocol,
            username=username,
            password=password,
            cacert=text("cacert"),
            cert=text("cert"),
            key=text("key"),
            use_proxies=use_proxies,
            srv=None if endpoints else text("srv"),
            srv_suffix=text("srv_suffix"),
        )


def resolve_srv(domain: str, suffix: str | None, cacert: str | None = None) -> tuple[str, tuple[Endpoint, ...]]:
    """(protocol, endpoints) from the first SRV name that answers; needs dnspython."""
    try:
        import dns.resolver  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise BackendError("etcd: `srv` needs the dnspython package")
    for name in srv_names(domain, suffix):
        try:
            answers = dns.resolver.resolve(name, "SRV")
        except Exception:  # NXDOMAIN, no answer, timeout: try the next name
            continue
        protocol = "https" if "-ssl" in name else "http"
        found = tuple(Endpoint(str(a.target).rstrip("."), int(a.port)) for a in answers)
        if found and "-server" in name:
            found = peer_client_endpoints(protocol, found, cacert)
        if found:
            return protocol, found
    raise BackendError(f"etcd: no SRV record for {domain}")


def peer_client_endpoints(protocol: str, peers: Iterable[Endpoint], cacert: str | None) -> tuple[Endpoint, ...]:
    """The members' client URLs, asked of the peers' /members (the *-server SRV records)."""
    http = urllib3.PoolManager(retries=False, timeout=SETUP_TIMEOUT_S, ca_certs=cacert)
    for peer in peers:
        try:
            members = json.loads(http.request("GET", f"{protocol}://{peer}/members").data)
            found = tuple(dict.fromkeys(parse_endpoint(u) for m in members for u in m["clientURLs"]))
        except (urllib3.exceptions.HTTPError, ValueError, TypeError, KeyError, BackendError):
            continue
        if found:
            return found
    return ()


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

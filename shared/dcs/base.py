"""The contract every DCS backend implements (raft now; etcd v3, etcd v2, ZooKeeper, Exhibitor, Consul and
Kubernetes later). dcs_proxy maps each `dcs.*` op (docs/protocol.md) onto exactly one method here, except
dcs.refresh_leader and dcs.release_leader, which also write `status`/`failsafe` with `write()`.

Keys
    Every key lives under `/<namespace>/<scope>/` (B1). The contract speaks only relative names: "leader",
    "initialize", "config", "members/pg1", "optime/leader"... A backend maps them onto its own key space
    (a full path in Raft and etcd, a znode in ZooKeeper, an annotation in Kubernetes).

Atomicity
    Every mutating method is ONE atomic operation in the DCS, never read-then-write on the client side:
      initialize(create_new=True)  create-if-absent                   (the initialization race, B5)
      take_leader                  create-if-absent with a TTL          (the leader race, A5)
      refresh_leader               compare-and-set on value == name, TTL renewed (A4)
      release_leader               compare-and-delete on value == name (B3)
      write(version=N)             compare-and-set on the key's version (config, failover, sync... B6-B9)
      delete(version=N)            compare-and-delete on the key's version
    The other writes (initialize(create_new=False), touch_member, write/delete without a version,
    cancel_initialization, delete_cluster) are unconditional.

Versions
    A version is the backend's modification index of a key (Raft: the store revision of the write; etcd:
    mod_revision; ZooKeeper: the znode version...). It changes on every write of the key, so that a
    compare-and-set on it detects any concurrent writer. `Snapshot.revision` grows with every change.

TTL and sessions
    A TTL (seconds) makes a key disappear when it is not written again within that time: the leader key,
    because the brain must refresh it every loop (A4), and member keys, so that a dead node vanishes (B27).
    Backends built on sessions (ZooKeeper ephemeral nodes, Consul sessions) bind such keys to the
    session instead and report its id in `KeyValueTTL.session`; the others report `session=None`.
    A backend never extends a TTL on its own: only take_leader/refresh_leader (the leader key) and
    touch_member (the member key only) do (DESIGN.md); touch_member never extends the leader key.

Reads
    `load()` is called by dcs_proxy's publishing loop on every change and every second, so it must be
    quick: Raft reads its local replica; a backend with a remote store serves it from a cache fed by its
    watch and raises DCSUnavailable while that cache is not current.

Change delivery
    `on_change()` (given at construction) is called, from any thread and possibly many times per change,
    whenever a key under our prefix may have changed or the backend's health changed. It must return at
    once; the caller coalesces and calls `load()` to see what changed. It carries no data on purpose.

The two failure kinds
    False (or applied=False): the DCS answered, and the operation lost a race or its compare failed.
        This is an answer, never an outage.
    DCSUnavailable: the DCS could not answer within `timeout` (no connection, no quorum, timed out).
        The outcome of a write that timed out is unknown: the caller must read the next view.

Timeouts
    Every mutating method takes `timeout` (seconds): the backend returns or raises within about that
    time, retrying transient errors internally while time remains (A7).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from shared.config import NodeConfig

OnChange = Callable[[], None]

HEALTH_POLL_S = 0.25  # how often dcs_proxy asks is_healthy() of a backend that cannot say when it may change


class DCSUnavailable(Exception):
    """The DCS cannot be reached, has no quorum, or did not answer in time. dcs_proxy answers `unavailable`."""


class BackendError(Exception):
    """The backend cannot be created: not implemented yet, its library is missing, or its settings are wrong."""


@dataclass(frozen=True)
class KeyValueTTL:
    """One key as the backend sees it now. `ttl` is the seconds left before it expires, when known."""

    value: str
    version: int | None = None
    session: str | None = None
    ttl: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Every key of the cluster (relative names) and the DCS revision they were read at."""

    keys: Mapping[str, KeyValueTTL] = field(default_factory=dict)
    revision: int = 0


class Backend(ABC):
    """One DCS client for one cluster (namespace + scope). Methods may be called from any thread."""

    name: ClassVar[str]

    def __init__(self, config: NodeConfig, on_change: OnChange) -> None:
        self.config = config
        self.on_change = on_change
        self.prefix = f"{config.namespace.rstrip('/')}/{config.scope}/"

    def path(self, key: str) -> str:
        """The full DCS path of a relative key name."""
        return self.prefix + key

    def relative(self, path: str) -> str | None:
        """The relative name of a full path, or None when it is not under our prefix."""
        return path[len(self.prefix) :] if path.startswith(self.prefix) else None

    @abstractmethod
    def start(self) -> None:
        """Begin connecting; returns at once. The backend becomes healthy when the DCS answers."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and threads. on_change is not called after close() returns."""

    @abstractmethod
    def is_healthy(self) -> bool:
        """Whether the DCS is reachable now, so that a view read now is current and writes can succeed."""

    def health_check_in(self) -> float | None:
        """Seconds until is_healthy() may change without on_change() being called (a time-based staleness, a
        status polled from a library); None when every change of health calls on_change(). dcs_proxy looks
        again at that moment; this default makes it look every HEALTH_POLL_S."""
        return HEALTH_POLL_S

    @abstractmethod
    def load(self) -> Snapshot:
        """All keys under our prefix. Raises DCSUnavailable when they cannot be read."""

    @abstractmethod
    def initialize(self, create_new: bool, sysid: str, *, timeout: float) -> bool:
        """create_new: atomic create-if-absent of `initialize` = sysid; else overwrite it."""

    @abstractmethod
    def cancel_initialization(self, *, timeout: float) -> bool:
        """Delete `initialize`; False when it did not exist."""

    @abstractmethod
    def take_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        """Atomic create-if-absent of `leader` = name with a TTL of `ttl` seconds."""

    @abstractmethod
    def refresh_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        """Compare-and-set `leader` on value == name, renewing its TTL; False when absent or held by another."""

    @abstractmethod
    def release_leader(self, name: str, *, timeout: float) -> bool:
        """Compare-and-delete `leader` on value == name."""

    @abstractmethod
    def touch_member(self, name: str, data_json: str, ttl: float, *, timeout: float) -> bool:
        """`members/<name>` = data_json with a TTL (or bound to the session)."""

    @abstractmethod
    def write(
        self, key: str, value: str, version: int | None, ttl: float | None, *, timeout: float
    ) -> tuple[bool, int | None]:
        """Write `key`; with `version`, compare-and-set on it. Returns (applied, new version or None)."""

    @abstractmethod
    def delete(self, key: str, version: int | None, *, timeout: float) -> bool:
        """Delete `key`; with `version`, compare-and-delete on it. False when absent or the compare failed."""

    @abstractmethod
    def delete_cluster(self, *, timeout: float) -> bool:
        """Remove every key under our prefix."""

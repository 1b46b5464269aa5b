"""The embedded Raft DCS (section `raft:`, B34/F36): a replicated KVState (kv.py) on pysyncobj.

- Every node holds the whole store; reads are local. Writes go through the Raft log (sync, with the
  caller's timeout); they are refused as `DCSUnavailable` when this node knows no leader with quorum.
- TTL expiry: the Raft leader, while it has quorum, looks every EXPIRE_INTERVAL_S for keys whose absolute
  expire time has passed and proposes `expire(key, version)`; the apply deletes the key only if its
  version is unchanged, so a refresh committed before the expiry wins. Expire times are the proposer's
  wall clock plus the TTL: keep the nodes' clocks in sync (as for any TTL-based DCS).
- Transport: pysyncobj binds `bind_addr`, else `self_addr` (never 0.0.0.0 unless configured so). Its
  wire format is pickle: set `password` (encrypted and authenticated, needs `cryptography`), otherwise
  anyone who can reach the port can run code in this process.
- Files: `<data_dir>/<host>_<port>.journal` (+ `.meta`) and `.dump`; log compaction runs in the Raft
  thread (useFork off: forking a process that holds ZeroMQ sockets is unsafe).
- A node without `self_addr` is a read-only member: it does not vote and keeps no journal.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, SyncObjException, replicated

from shared.config import NodeConfig
from shared.dcs import kv
from shared.dcs.base import HEALTH_POLL_S, BackendError, DCSUnavailable, OnChange
from shared.dcs.kvbackend import COMMANDS, KVBackend

log = logging.getLogger(__name__)

EXPIRE_INTERVAL_S = 0.2  # how often the leader looks for expired keys
EXPIRE_RETRY_S = 1.0  # an expire proposed but not yet applied is proposed again after this
HEALTH_STALE_S = 1.0  # a health reading older than this (the Raft thread is stuck) counts as unhealthy
RETRY_PAUSE_S = 0.05

# Failures where the command was certainly not applied: safe to submit again while time remains.
_RETRYABLE = {FAIL_REASON.QUEUE_FULL, FAIL_REASON.MISSING_LEADER, FAIL_REASON.DISCARDED, FAIL_REASON.NOT_LEADER}
_FAIL_NAMES = {
    FAIL_REASON.QUEUE_FULL: "the command queue is full",
    FAIL_REASON.MISSING_LEADER: "no Raft leader",
    FAIL_REASON.DISCARDED: "the command was discarded by a new leader",
    FAIL_REASON.NOT_LEADER: "the node asked is not the leader",
    FAIL_REASON.LEADER_CHANGED: "the leader changed before the commit",
    FAIL_REASON.REQUEST_DENIED: "the command was denied",
    FAIL_REASON.UNKNOWN_OUTCOME: "unknown outcome",
    "Timeout": "no commit in time",
}


def parse_addrs(value: Any) -> tuple[str, ...]:
    """partner_addrs as a YAML list, or PATRONI_RAFT_PARTNER_ADDRS's "'ip1:port1','ip2:port2'" string."""
    items: list[Any] = list(value) if isinstance(value, list | tuple) else str(value or "").strip("[] ").split(",")
    addrs = (str(a).strip().strip("'\"").strip() for a in items)
    return tuple(a for a in addrs if a)


def check_bindable(addr: str) -> None:
    """Fail loudly now: pysyncobj retries a failed bind forever without a word."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    except (OSError, ValueError) as exc:
        raise BackendError(f"raft: cannot listen on {addr}: {getattr(exc, 'strerror', None) or exc}")


@dataclass(frozen=True)
class RaftSettings:
    self_addr: str | None
    bind_addr: str | None
    partner_addrs: tuple[str, ...]
    data_dir: str
    password: str | None

    @classmethod
    def from_section(cls, section: Mapping[str, Any], cwd: str) -> RaftSettings:
        self_addr = str(section.get("self_addr") or "").strip() or None
        partners = tuple(a for a in parse_addrs(section.get("partner_addrs")) if a != self_addr)
        if not partners and not self_addr:
            raise BackendError("raft: neither self_addr nor partner_addrs is set")
        return cls(
            self_addr=self_addr,
            bind_addr=str(section.get("bind_addr") or "").strip() or None,
            partner_addrs=partners,
            data_dir=os.path.join(cwd, str(section.get("data_dir") or "")),
            password=str(section["password"]) if section.get("password") else None,
        )

    @property
    def file_base(self) -> str | None:
        """Journal and dump files share this path; a read-only member keeps none."""
        if not self.self_addr:
            return None
        return os.path.join(self.data_dir, self.self_addr.replace(":", "_").replace("/", "_"))


class RaftStore(SyncObjConsumer):  # type: ignore[misc]
    """The replicated commands: each applies one KVState mutation on every node, in log order."""

    def __init__(self, state: kv.KVState) -> None:
        super().__init__()
        self.state = state

    @replicated  # type: ignore[untyped-decorator]
    def put(self, key: str, value: str, ttl_s: float | None, now: float, cond: Sequence[Any]) -> int | None:
        return self.state.put(key, value, ttl_s, now, cond)

    @replicated  # type: ignore[untyped-decorator]
    def remove(self, key: str, cond: Sequence[Any]) -> bool:
        return self.state.remove(key, cond)

    @replicated  # type: ignore[untyped-decorator]
    def remove_prefix(self, prefix: str) -> int:
        return self.state.remove_prefix(prefix)

    @replicated  # type: ignore[untyped-decorator]
    def expire(self, key: str, version: int) -> bool:
        return self.state.expire(key, version)

    def _serialize(self) -> dict[str, Any]:
        return self.state.dump()

    def _deserialize(self, data: dict[str, Any]) -> None:
        self.state.restore(data)


@dataclass(frozen=True)
class RaftHealth:
    """What the Raft thread saw on its last tick."""

    at: float = 0.0  # time.monotonic()
    ready: bool = False  # caught up with the leader at least once
    leader: str | None = None
    is_leader: bool = False
    has_quorum: bool = False
    leader_connected: bool = False

    @property
    def healthy(self) -> bool:
        if not self.ready or self.leader is None:
            return False
        return self.has_quorum if self.is_leader else self.leader_connected

    def describe(self) -> str:
        if not self.ready:
            return "not synced with the Raft cluster"
        if self.leader is None:
            return "no Raft leader"
        if self.is_leader:
            return "Raft leader with quorum" if self.has_quorum else "Raft leader without quorum"
        return f"following {self.leader}" if self.leader_connected else f"lost contact with the leader {self.leader}"


class RaftBackend(KVBackend):
    name = "raft"

    def __init__(
        self,
        config: NodeConfig,
        on_change: OnChange,
        *,
        dynamic_membership: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, on_change, clock=clock)
        self.settings = RaftSettings.from_section(config.dcs, os.getcwd())
        self.dynamic_membership = dynamic_membership
        self._store = RaftStore(self.state)
        self._sync: Any = None
        self._health = RaftHealth()
        self._last_expire_check = 0.0
        self._pending_expiry: dict[tuple[str, int], float] = {}
        self._closed = False

    def _conf(self) -> SyncObjConf:
        s = self.settings
        base = s.file_base
        if base is not None:
            try:
                os.makedirs(s.data_dir, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise BackendError(f"raft: cannot create data_dir {s.data_dir}: {exc.strerror}")
            if not os.access(s.data_dir, os.W_OK | os.X_OK):
                raise BackendError(f"raft: data_dir {s.data_dir} is not writable")
        if s.password is None:
            log.warning("raft.password is not set: Raft traffic is unauthenticated pickle")
        return SyncObjConf(
            password=s.password,
            bindAddress=(s.bind_addr or s.self_addr) if s.self_addr else None,
            journalFile=None if base is None else base + ".journal",
            fullDumpFile=None if base is None else base + ".dump",
            useFork=False,
            dynamicMembershipChange=self.dynamic_membership,
            commandsWaitLeader=False,  # no queued command may commit long after its caller gave up
            connectionRetryTime=1.0,  # a restarted partner is reconnected within a second
            onStateChanged=lambda old, new: self.on_change(),
        )

    def start(self) -> None:
        conf = self._conf()
        if conf.bindAddress:
            check_bindable(conf.bindAddress)
        try:
            self._sync = SyncObj(self.settings.self_addr, list(self.settings.partner_addrs), conf, [self._store])
        except Exception as exc:  # no cryptography for the password, an unreadable journal, a bad address...
            raise BackendError(f"raft: cannot start: {type(exc).__name__}: {exc}")
        self._sync.addOnTickCallback(self._on_tick)
        log.info(
            "raft: node %s with partners %s, data in %s",
            self.settings.self_addr or "(read-only)",
            ",".join(self.settings.partner_addrs),
            self.settings.data_dir,
        )

    def close(self) -> None:
        self._closed = True
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.removeOnTickCallback(self._on_tick)
            sync.destroy_synchronous()
        self.state.remove_listener(self._state_changed)

    # --- the Raft thread ---

    @staticmethod
    def _read_health(sync: Any) -> RaftHealth:
        leader = sync._getLeader()
        is_leader = bool(sync._isLeader())
        return RaftHealth(
            at=time.monotonic(),
            ready=bool(sync.isReady()),
            leader=None if leader is None else str(leader),
            is_leader=is_leader,
            has_quorum=bool(sync.hasQuorum),
            leader_connected=leader is not None and (is_leader or bool(sync.isNodeConnected(leader))),
        )

    def _on_tick(self) -> None:
        """Runs in pysyncobj's thread after every tick: record health, expire keys when leader."""
        sync = self._sync
        if sync is None:
            return
        health = self._read_health(sync)
        previous, self._health = self._health, health
        if previous.healthy != health.healthy:
            if health.healthy:
                log.info("raft: available (%s)", health.describe())
            else:
                log.warning("raft: unavailable (%s)", health.describe())
            self.on_change()
        if health.is_leader and health.has_quorum and health.at - self._last_expire_check >= EXPIRE_INTERVAL_S:
            self._last_expire_check = health.at
            self._propose_expiry(health.at)

    def _propose_expiry(self, now_mono: float) -> None:
        pending = {k: t for k, t in self._pending_expiry.items() if now_mono - t < EXPIRE_RETRY_S}
        for key, version in self.state.expired(self.clock()):
            if (key, version) not in pending:
                pending[(key, version)] = now_mono
                self._store.expire(key, version)  # asynchronous: applied in log order on every node
        self._pending_expiry = pending

    # --- any thread ---

    def health(self) -> RaftHealth:
        health = self._health
        if self._closed or time.monotonic() - health.at > HEALTH_STALE_S:
            return RaftHealth()
        return health

    def is_healthy(self) -> bool:
        return self.health().healthy

    def health_check_in(self) -> float | None:
        """Every flip seen by a tick calls on_change (_on_tick); only ticks that stop coming (and start again) go
        unannounced."""
        health = self.health()
        if health.healthy:
            return max(0.0, health.at + HEALTH_STALE_S - time.monotonic())
        return HEALTH_POLL_S if self._health.healthy else None  # stale: the next tick flips it back silently

    def _check_readable(self) -> None:
        if not self.health().ready:
            raise DCSUnavailable("raft: not synced with the Raft cluster yet")

    def _submit(self, command: str, args: tuple[Any, ...], timeout: float) -> Any:
        if command not in COMMANDS:
            raise ValueError(f"unknown store command {command!r}")
        method = getattr(self._store, command)
        deadline = time.monotonic() + timeout
        problem = "no Raft leader with quorum"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DCSUnavailable(f"raft: {problem} within {timeout:.2f}s")
            if self._sync is None:
                raise DCSUnavailable("raft: the backend is not running")
            health = self.health()
            if not health.healthy:
                problem = health.describe()
                time.sleep(min(RETRY_PAUSE_S, remaining))
                continue
            try:
                return method(*args, sync=True, timeout=remaining)
            except SyncObjException as exc:
                code = exc.errorCode
                problem = _FAIL_NAMES.get(code, str(code))
                if code not in _RETRYABLE:
                    raise DCSUnavailable(f"raft: {problem}; the outcome of {command} is unknown")
                time.sleep(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))

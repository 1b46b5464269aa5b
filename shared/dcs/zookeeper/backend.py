"""ZooKeeperBackend: its sessions, the contract's operations and the leader lease (the rules are in the package
docstring, shared/dcs/zookeeper/__init__.py)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooState
from kazoo.exceptions import BadVersionError, KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from shared.config import NodeConfig
from shared.config.dynamic import effective
from shared.dcs.base import BackendError, DCSUnavailable, OnChange
from shared.dcs.zookeeper.cache import Znode
from shared.dcs.zookeeper.calls import ZooKeeperCalls
from shared.dcs.zookeeper.session import Session, time_left
from shared.dcs.zookeeper.settings import Timings, ZooKeeperSettings, timings

log = logging.getLogger("shared.dcs.zookeeper")  # one logger for the package's modules

LEASE_CALL_TIMEOUT_S = 1.0
LEASE_RETRY_S = 0.2


@dataclass(frozen=True)
class Lease:
    """The brain's hold of the leader znode: unless refreshed before `deadline` (time.monotonic()), it is deleted."""

    name: str
    deadline: float

    def is_due(self, now: float) -> bool:
        return now >= self.deadline

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.deadline - now)


def is_ours(name: str, data: bytes | None, owner: int, session_id: int | None) -> bool:
    """Whether a leader znode is `name`'s and bound to our current session."""
    return session_id is not None and owner == session_id and (data or b"") == name.encode()


class ZooKeeperBackend(ZooKeeperCalls):
    name = "zookeeper"

    def __init__(self, config: NodeConfig, on_change: OnChange) -> None:
        super().__init__(config, on_change)
        self.root = self.prefix.rstrip("/")
        self.settings = self._read_settings(config.dcs)
        top: dict[str, Any] = {k: config.data[k] for k in ("ttl", "loop_wait", "retry_timeout") if k in config.data}
        self._bootstrap: dict[str, Any] = {**config.bootstrap_dcs, **top}
        dynamic = effective(None, self._bootstrap)
        self._ttl, self._loop_wait, self._retry_timeout = map(
            float, (dynamic.ttl, dynamic.loop_wait, dynamic.retry_timeout)
        )
        self._hosts = self.settings.hosts
        self._acl = list(self.settings.acls) or None
        self._session: Session | None = None
        self._gen = 0
        self._session_lock = threading.Lock()
        self._events: queue.Queue[tuple[int, str | None]] = queue.Queue()  # (gen, path); path None = everything
        self._nodes: dict[str, Znode] = {}  # replaced, never changed in place: readers need no lock
        self._cache_lock = threading.Lock()
        self._loaded_at: tuple[int, int] | None = None  # (gen, epoch) of the session the cache was read in
        self._revision = 0
        self._config_seen: bytes | None = None
        self._lease: Lease | None = None
        self._lease_cond = threading.Condition()  # guards the lease and serializes the leader operations
        self._members: frozenset[str] = frozenset()  # names touched here: their znodes move with the session
        self._closed = False
        self._notify_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _read_settings(self, section: Mapping[str, Any]) -> ZooKeeperSettings:
        settings = ZooKeeperSettings.from_section(section)
        if not settings.hosts:
            raise BackendError("zookeeper: hosts is not set")
        return settings

    def timings(self, ttl: float) -> Timings:
        return timings(ttl, self._loop_wait, self._retry_timeout)

    # --- sessions ---

    def start(self) -> None:
        for target, name in ((self._cache_loop, "zk-cache"), (self._lease_loop, "zk-lease")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._hosts:
            self._use_hosts(self._hosts)

    def close(self) -> None:
        with self._notify_lock:
            self._closed = True
        with self._lease_cond:
            self._lease_cond.notify_all()
        self._events.put((-1, None))
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.client.remove_listener(session.on_state)
            session.stop()  # closes the session: our ephemeral znodes vanish now
        for thread in self._threads:
            thread.join(timeout=5)

    def _new_session(self, ttl: float, hosts: tuple[str, ...]) -> Session:
        self._gen += 1
        return Session(self, self._gen, ttl, hosts)

    def _use_hosts(self, hosts: tuple[str, ...], timeout: float = 0.0) -> None:
        """Connect to `hosts`: the first session, or a new one when ours is not with one of them (Exhibitor)."""
        with self._session_lock:
            session = self._session
            if self._closed:
                return
            if session is None:
                self._hosts = hosts
                self._session = self._new_session(self._ttl, hosts)
                self._session.client.start_async()
                return
        if session.live.is_set() and session.endpoint in hosts:
            session.client.set_hosts(",".join(hosts))  # used from the next reconnection on
            session.hosts = self._hosts = hosts
            return
        self._replace_session(session.ttl, hosts, time.monotonic() + timeout, "the ensemble changed")

    def _use_ttl(self, ttl: float, deadline: float) -> None:
        session = self._session
        if session is None:
            self._ttl = float(ttl)
        elif session.ttl != ttl:
            self._replace_session(float(ttl), session.hosts, deadline, f"ttl {session.ttl:g}s -> {ttl:g}s")

    def _replace_session(self, ttl: float, hosts: tuple[str, ...], deadline: float, why: str) -> None:
        """Open a new session, move our ephemeral znodes to it in one transaction, then close the old one."""
        with self._session_lock:
            old = self._session
            if old is None or self._closed or (old.ttl == ttl and old.hosts == hosts):
                return
            new = self._new_session(ttl, hosts)
            new.client.start_async()
            if not new.live.wait(max(0.0, deadline - time.monotonic())) or self._closed:
                new.discard()
                raise DCSUnavailable(f"{self.name}: no new session ({why}) within the timeout")
            with self._lease_cond:
                self._move_ephemerals(old, new, deadline)
                loaded = self._is_loaded(old)
                self._session, self._ttl, self._hosts = new, ttl, hosts
                if loaded:  # the old cache stays valid until the new session's full read replaces it
                    self._loaded_at = (new.gen, new.epoch)
        self._sync(new, None, time_left(deadline))  # the moves are in the cache when the call returns
        old.discard()
        log.info("%s: new session 0x%x with %s (%s)", self.name, new.session_id or 0, new.endpoint, why)

    def _move_ephemerals(self, old: Session, new: Session, deadline: float) -> None:
        if old.session_id is None:
            return
        paths = [self.path("leader"), *(self.path(f"members/{m}") for m in sorted(self._members))]
        try:
            moves = []
            for path in paths:
                try:
                    data, stat = new.client.get_async(path).get(timeout=time_left(deadline))
                except NoNodeError:
                    continue
                if stat.ephemeralOwner == old.session_id:
                    moves.append((path, data or b"", stat.version))
            if not moves:
                return
            transaction = new.client.transaction()
            for path, data, version in moves:
                transaction.delete(path, version)
                transaction.create(path, data, acl=self._acl, ephemeral=True)
            results = transaction.commit_async().get(timeout=time_left(deadline))
        except (KazooException, KazooTimeoutError) as exc:
            log.warning("%s: our ephemeral znodes stay with the old session: %r", self.name, exc)
            return
        failed = [r for r in results if isinstance(r, Exception)]
        moved = ", ".join(p for p, _, _ in moves)
        if failed:
            log.warning("%s: could not move %s to the new session: %r", self.name, moved, failed)
        else:
            log.info("%s: moved %s to the new session", self.name, moved)

    def _session_state(self, session: Session, state: str) -> None:
        """kazoo's connection thread, for every state change of a session."""
        if session is not self._session:
            return
        if state == KazooState.CONNECTED:
            log.info("%s: connected to %s, session 0x%x", self.name, session.endpoint, session.session_id or 0)
            self._events.put((session.gen, None))  # kazoo dropped our watches with the connection: read all
        elif state == KazooState.SUSPENDED:
            log.warning("%s: lost the connection to %s, reconnecting", self.name, session.endpoint)
        else:
            log.warning("%s: session lost: our leader and member znodes are gone with it", self.name)
        self._notify()

    # --- the contract ---

    def initialize(self, create_new: bool, sysid: str, *, timeout: float) -> bool:
        deadline, path = self._deadline(timeout), self.path("initialize")
        if create_new:
            return self._create(path, sysid.encode(), deadline) is not None
        return self._put(path, sysid, None, deadline) is not None

    def cancel_initialization(self, *, timeout: float) -> bool:
        return self._delete(self.path("initialize"), -1, self._deadline(timeout))

    def take_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        deadline = self._deadline(timeout)
        self._use_ttl(ttl, deadline)
        started = time.monotonic()
        with self._lease_cond:
            previous = self._lease
            # The lease starts before the create is sent: a znode created by a request whose answer is lost
            # (DCSUnavailable) is deleted after ttl all the same.
            self._set_lease(previous or Lease(name, started + ttl))
            if self._create(self.path("leader"), name.encode(), deadline, ephemeral=True) is None:
                self._set_lease(previous)
                return False
            self._set_lease(Lease(name, started + ttl))
            return True

    def refresh_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        deadline = self._deadline(timeout)
        self._use_ttl(ttl, deadline)
        started = time.monotonic()
        with self._lease_cond:
            lease = self._lease
            if lease is None or lease.name != name or lease.is_due(started):
                return False  # never taken here, released, or its lease ran out: the lock is lost
            session = self._connected(deadline)
            found = self._get(self.path("leader"), deadline)
            if found is None or not is_ours(name, found[0], found[1].ephemeralOwner, session.session_id):
                self._set_lease(None)  # deleted, taken by another, or gone with a lost session
                return False
            self._set_lease(Lease(name, started + ttl))
            return True

    def release_leader(self, name: str, *, timeout: float) -> bool:
        deadline = self._deadline(timeout)
        with self._lease_cond:
            found = self._get(self.path("leader"), deadline)
            if found is None or found[0] != name.encode():
                self._set_lease(None)
                return False
            released = self._delete(self.path("leader"), found[1].version, deadline)
            if released:
                self._set_lease(None)
            return released

    def touch_member(self, name: str, data_json: str, ttl: float, *, timeout: float) -> bool:
        deadline = self._deadline(timeout)
        self._use_ttl(ttl, deadline)
        self._members = self._members | {name}
        path, data = self.path(f"members/{name}"), data_json.encode()
        while True:
            session = self._connected(deadline)
            cached = self._nodes.get(path) if self._is_loaded(session) else None
            if cached is not None and cached.owner == session.session_id:
                if cached.data == data:
                    return True  # unchanged: no write, so no watch event wakes the other nodes (B4, B31)
                try:
                    self._set(path, data, -1, deadline)
                    return True
                except (NoNodeError, BadVersionError):
                    pass
            if self._create(path, data, deadline, ephemeral=True) is not None:
                return True
            found = self._get(path, deadline)
            if found is None:
                continue
            if found[1].ephemeralOwner != session.session_id:  # left by an earlier session of this node
                self._delete(path, found[1].version, deadline)
                continue
            if found[0] == data:
                return True
            try:
                self._set(path, data, found[1].version, deadline)
                return True
            except (NoNodeError, BadVersionError):
                continue

    def write(
        self, key: str, value: str, version: int | None, ttl: float | None, *, timeout: float
    ) -> tuple[bool, int | None]:
        new_version = self._put(self.path(key), value, version, self._deadline(timeout))
        return new_version is not None, new_version

    def delete(self, key: str, version: int | None, *, timeout: float) -> bool:
        return self._delete(self.path(key), -1 if version is None else version, self._deadline(timeout))

    def delete_cluster(self, *, timeout: float) -> bool:
        deadline = self._deadline(timeout)
        with self._lease_cond:
            self._delete_tree(self.root, deadline)
            self._set_lease(None)
        self._sync_now(self.root, deadline)
        return True

    # --- the leader lease ---

    def _set_lease(self, lease: Lease | None) -> None:
        self._lease = lease
        self._lease_cond.notify_all()

    def _lease_loop(self) -> None:
        with self._lease_cond:
            while not self._closed:
                lease, now = self._lease, time.monotonic()
                if lease is None or not lease.is_due(now):
                    self._lease_cond.wait(None if lease is None else lease.seconds_left(now))
                elif not self._end_lease(lease):
                    self._lease_cond.wait(LEASE_RETRY_S)

    def _end_lease(self, lease: Lease) -> bool:
        """Not refreshed in time: delete the leader znode if it is still ours. False: try again soon."""
        deadline, path = self._deadline(LEASE_CALL_TIMEOUT_S), self.path("leader")
        try:
            session = self._connected(deadline)
            found = self._get(path, deadline)
            if found is not None and is_ours(lease.name, found[0], found[1].ephemeralOwner, session.session_id):
                if not self._delete(path, found[1].version, deadline):
                    return False  # changed meanwhile: look again
                log.warning("%s: %s did not refresh the leader key within its ttl: deleted", self.name, lease.name)
        except DCSUnavailable as exc:
            log.debug("%s: the leader lease of %s ran out; cannot delete the key yet: %s", self.name, lease.name, exc)
            return False
        if self._lease is lease:
            self._set_lease(None)
        return True

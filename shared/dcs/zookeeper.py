"""The ZooKeeper DCS (section `zookeeper:`, B31/F33/F59) on kazoo; Exhibitor (exhibitor.py) builds on it.

Layout: each key is the znode `/<namespace>/<scope>/<key>` holding the raw value (utf-8), as Patroni
writes it; `members` and `optime` are parent znodes, never keys. `leader` and `members/<name>` are
ephemeral znodes of our session (KeyValueTTL.session is its id), the other keys persistent. A version is
the znode's version: write/delete with a version are set/delete with it (BadVersion, NoNode -> False).

Session: its timeout is the ttl of the calls (before the first call, the configured ttl). Another ttl
opens a new session; our ephemeral znodes (leader, own member) move to it in one transaction (delete
with version + create ephemeral), so a ttl change neither drops the lock nor opens a gap in which another
node could take it. A LOST (expired) session is lost leadership: its ephemeral znodes are gone,
refresh_leader answers False, and nothing is re-created behind the brain's back.

The leader lease (haven's safety rule, DESIGN.md): ZooKeeper keeps an ephemeral znode while the session
lives, and the session lives while this process pings, even when the brain stopped refreshing. So
take_leader/refresh_leader also set a lease deadline = start of the call + ttl; when it passes without a
refresh, the lease thread deletes our leader znode (value == name, owner == our session, delete with the
version just read) and refresh_leader answers False. A hung brain loses the lock after ttl, as with etcd
leases or Consul sessions; a dead process loses it when ZooKeeper expires its session (ttl too).

Reads: a cache of every znode under the prefix, fed by watches (data and children watches on each znode,
an exists watch on the prefix while it is missing), read again in full on every (re)connection because
kazoo forgets its watches when a connection drops; our own writes are read back into it before the call
returns. load() serves it and raises DCSUnavailable while the session is not CONNECTED or the cache was
not read in full since it connected.

Timeouts (B31): a silent server is dropped after min(loop_wait - 2 s (>= 1 s), 2/3 of the session timeout)
without an answer to a ping; a TCP connect gives up after max(0.5, min(retry_timeout, ttl) / 4) s and the
next host is tried at once ("fail early, retry more often"); reconnections are retried every <= 1 s. Each
call honours its `timeout`. No request is queued while disconnected (it could run after its caller gave
up): one not sent is retried while time remains, one lost in flight is DCSUnavailable (unknown outcome).

Not supported: `write(..., ttl=...)` writes a persistent znode (TTL znodes need extendedTypesEnabled).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent
from kazoo.security import ACL, make_acl

from shared.config import NodeConfig
from shared.config.dynamic import effective
from shared.dcs.base import Backend, BackendError, DCSUnavailable, KeyValueTTL, OnChange, Snapshot
from shared.model.member import parse_bool

log = logging.getLogger(__name__)

DEFAULT_PORT = 2181
CONTAINERS = frozenset({"members", "optime"})  # parent znodes of the layout, never keys
PERMISSIONS = ("READ", "WRITE", "CREATE", "DELETE", "ADMIN", "ALL")
CACHE_READ_TIMEOUT_S = 5.0
LEASE_CALL_TIMEOUT_S = 1.0
LEASE_RETRY_S = 0.2
RETRY_PAUSE_S = 0.05


def parse_hosts(value: Any, default_port: int = DEFAULT_PORT) -> tuple[str, ...]:
    """hosts as a list or "h1:p1,h2:p2" (PATRONI_ZOOKEEPER_HOSTS quotes each: "'h1:p1','h2:p2'"); each gets a port."""
    items: list[Any] = list(value) if isinstance(value, list | tuple) else str(value or "").strip("[] ").split(",")
    hosts: list[str] = []
    for item in items:
        host = str(item).strip().strip("'\"").strip()
        if not host:
            continue
        if host.count(":") > 1 and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 address
        if not host.rpartition("]")[2].count(":"):
            host = f"{host}:{default_port}"
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def parse_acls(value: Any) -> tuple[ACL, ...]:
    """set_acls {principal: [permissions]} as x509 ACLs applied to every znode we create (F33)."""
    if not value:
        return ()
    if not isinstance(value, Mapping):
        raise BackendError("zookeeper: set_acls must map each principal to a list of permissions")
    acls = []
    for principal, permissions in value.items():
        names = [permissions] if isinstance(permissions, str) else list(permissions or [])
        perms = {str(p).strip().upper() for p in names}
        unknown = sorted(perms - set(PERMISSIONS))
        if unknown or not perms:
            raise BackendError(f"zookeeper: set_acls {principal}: permissions must be among {', '.join(PERMISSIONS)}")
        flags = {p.lower(): p in perms for p in PERMISSIONS}
        acls.append(make_acl("x509", str(principal), **flags))
    return tuple(acls)


@dataclass(frozen=True)
class ZooKeeperSettings:
    hosts: tuple[str, ...]
    use_ssl: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = None
    verify: bool = True
    acls: tuple[ACL, ...] = ()

    @classmethod
    def from_section(cls, section: Mapping[str, Any], hosts: tuple[str, ...] | None = None) -> ZooKeeperSettings:
        def text(key: str) -> str | None:
            return str(section[key]) if section.get(key) else None

        verify = parse_bool(section.get("verify"))
        return cls(
            hosts=parse_hosts(section.get("hosts")) if hosts is None else hosts,
            use_ssl=bool(parse_bool(section.get("use_ssl"))),
            cacert=text("cacert"),
            cert=text("cert"),
            key=text("key"),
            key_password=text("key_password"),
            verify=True if verify is None else verify,
            acls=parse_acls(section.get("set_acls")),
        )

    def client_kwargs(self) -> dict[str, Any]:
        """kazoo's TLS arguments; the SSL settings are ignored unless use_ssl is on."""
        if not self.use_ssl:
            return {}
        return {
            "use_ssl": True,
            "ca": self.cacert,
            "certfile": self.cert,
            "keyfile": self.key,
            "keyfile_password": self.key_password,
            "verify_certs": self.verify,
        }


@dataclass(frozen=True)
class Timings:
    read_s: float  # a connection whose pings go unanswered this long is dropped (capped by 2/3 of the session)
    connect_s: float  # TCP connect timeout per host


def timings(ttl: float, loop_wait: float, retry_timeout: float) -> Timings:
    return Timings(read_s=max(1.0, loop_wait - 2.0), connect_s=max(0.5, min(retry_timeout, ttl) / 4))


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


@dataclass(frozen=True)
class Znode:
    data: bytes
    version: int
    owner: int  # ephemeralOwner: the session id, 0 for a persistent znode
    children: frozenset[str]


def snapshot_of(nodes: Mapping[str, Znode], root: str, revision: int) -> Snapshot:
    """The keys under `root` (znode paths -> relative names); parent znodes are not keys."""
    keys: dict[str, KeyValueTTL] = {}
    for path, node in nodes.items():
        rel = path[len(root) + 1 :] if path.startswith(root + "/") else ""
        if rel and not node.children and rel not in CONTAINERS:
            session = str(node.owner) if node.owner else None
            keys[rel] = KeyValueTTL(node.data.decode("utf-8", "replace"), node.version, session, None)
    return Snapshot(keys, revision)


class NotSent(ConnectionLoss):  # type: ignore[misc]
    """The request was not sent: there was no connection."""


class _Client(KazooClient):  # type: ignore[misc]
    """kazoo queues requests made while reconnecting and sends them later: here they fail at once."""

    def _call(self, request: Any, async_object: Any) -> Any:
        if self._state != KeeperState.CONNECTED:
            async_object.set_exception(NotSent())
            return False
        return super()._call(request, async_object)


class _Handler(SequentialThreadingHandler):  # type: ignore[misc]
    """TCP connects time out after `connect_s()`, not after the whole session timeout."""

    def __init__(self, connect_s: Callable[[], float]) -> None:
        super().__init__()
        self.connect_s = connect_s

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = min(float(kwargs.get("timeout") or 60.0), self.connect_s())
        return super().create_connection(*args, **kwargs)


class _Session:
    """One kazoo client and its ZooKeeper session. `gen` tells its events from those of a replaced one."""

    def __init__(self, backend: ZooKeeperBackend, gen: int, ttl: float, hosts: tuple[str, ...]) -> None:
        self.backend, self.gen, self.ttl, self.hosts = backend, gen, ttl, hosts
        self.live = threading.Event()
        self.epoch = 0  # counts state changes: a cache loaded at an older epoch is stale
        self.session_id: int | None = None
        self.endpoint: str | None = None  # host:port we are connected to
        self.client = _Client(
            hosts=",".join(hosts),
            timeout=ttl,
            handler=_Handler(lambda: backend.timings(ttl).connect_s),
            default_acl=list(backend.settings.acls) or None,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 1.5, "max_jitter": 0.1, "max_delay": 1.0},
            **backend.settings.client_kwargs(),
        )
        kazoo_connect = self.client._connection._connect

        def connect(host: str, hostip: str, port: int) -> tuple[float, float]:
            self.endpoint = f"{host}:{port}"
            read_ms, connect_ms = kazoo_connect(host, hostip, port)
            if read_ms * 1.5 > ttl * 1000 + 1:  # kazoo's read timeout is 2/3 of the negotiated session timeout
                log.warning("zookeeper: %s allows no session shorter than %.1fs (ttl %gs)", host, read_ms * 1.5e-3, ttl)
            return min(read_ms, backend.timings(ttl).read_s * 1000), connect_ms

        # kazoo derives the ping timeout from the session timeout only; Patroni does the same (B31).
        self.client._connection._connect = connect
        self.client.add_listener(self.on_state)

    def on_state(self, state: str) -> bool:
        """kazoo's connection thread: must not block."""
        self.epoch += 1
        if state == KazooState.CONNECTED:
            client_id = self.client.client_id
            self.session_id = client_id[0] if client_id else None
            self.live.set()
        else:
            self.live.clear()
        self.backend._session_state(self, state)
        return False

    def on_watch(self, event: WatchedEvent) -> None:
        if event.type != EventType.NONE and event.path:
            self.backend._events.put((self.gen, event.path))

    def discard(self) -> None:
        """Close the session (its ephemeral znodes vanish) without waiting for it."""
        self.client.remove_listener(self.on_state)
        threading.Thread(target=self.stop, name="zk-close", daemon=True).start()

    def stop(self) -> None:
        try:
            self.client.stop()
            self.client.close()
        except Exception as exc:  # a client that never connected, a writer that would not close...
            log.debug("zookeeper: closing a session: %r", exc)


def _drop(nodes: dict[str, Znode], path: str) -> None:
    for p in [p for p in nodes if p == path or p.startswith(path + "/")]:
        del nodes[p]


def _left(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


class ZooKeeperBackend(Backend):
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
        self._session: _Session | None = None
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

    def _new_session(self, ttl: float, hosts: tuple[str, ...]) -> _Session:
        self._gen += 1
        return _Session(self, self._gen, ttl, hosts)

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
        self._sync(new, None, _left(deadline))  # the moves are in the cache when the call returns
        old.discard()
        log.info("%s: new session 0x%x with %s (%s)", self.name, new.session_id or 0, new.endpoint, why)

    def _move_ephemerals(self, old: _Session, new: _Session, deadline: float) -> None:
        if old.session_id is None:
            return
        paths = [self.path("leader"), *(self.path(f"members/{m}") for m in sorted(self._members))]
        try:
            moves = []
            for path in paths:
                try:
                    data, stat = new.client.get_async(path).get(timeout=_left(deadline))
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
            results = transaction.commit_async().get(timeout=_left(deadline))
        except (KazooException, KazooTimeoutError) as exc:
            log.warning("%s: our ephemeral znodes stay with the old session: %r", self.name, exc)
            return
        failed = [r for r in results if isinstance(r, Exception)]
        moved = ", ".join(p for p, _, _ in moves)
        if failed:
            log.warning("%s: could not move %s to the new session: %r", self.name, moved, failed)
        else:
            log.info("%s: moved %s to the new session", self.name, moved)

    def _session_state(self, session: _Session, state: str) -> None:
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

    def _notify(self) -> None:
        with self._notify_lock:
            if not self._closed:
                self.on_change()

    # --- the cache ---

    def _is_loaded(self, session: _Session | None) -> bool:
        return session is not None and session.live.is_set() and self._loaded_at == (session.gen, session.epoch)

    def is_healthy(self) -> bool:
        return self._is_loaded(self._session)

    def load(self) -> Snapshot:
        session = self._session
        if session is None or not session.live.is_set():
            raise DCSUnavailable(f"{self.name}: not connected to {','.join(self._hosts) or 'ZooKeeper'}")
        if not self._is_loaded(session):
            raise DCSUnavailable(f"{self.name}: the cache is being loaded")
        return snapshot_of(self._nodes, self.root, self._revision)

    def _cache_loop(self) -> None:
        while True:
            gen, path = self._events.get()
            if gen < 0:
                return
            session = self._session
            if session is not None and session.gen == gen and session.live.is_set():  # else a full read is queued
                self._sync(session, path, CACHE_READ_TIMEOUT_S, caller=False)

    def _sync_now(self, path: str, deadline: float) -> None:
        """Read-your-writes: our own change is in the cache before the call returns."""
        session = self._session
        if session is not None and self._is_loaded(session):
            self._sync(session, path, _left(deadline))

    def _sync(self, session: _Session, path: str | None, timeout: float, caller: bool = True) -> None:
        # Read and apply under one lock: a later sync never applies an older read. A caller gives up the
        # lock wait with its own deadline (the watch event brings the change then); the cache thread waits.
        if not self._cache_lock.acquire(timeout=timeout if caller else -1):
            return
        try:
            self._read_into_cache(session, path, timeout)
        except (KazooException, KazooTimeoutError) as exc:
            log.debug("%s: reading %s failed: %r", self.name, path or self.root, exc)
            if (path is None or not caller) and session.live.is_set():  # watches may be missing: read all again
                self._loaded_at = None
                self._events.put((session.gen, None))
        finally:
            self._cache_lock.release()
        self._notify()

    def _read_into_cache(self, session: _Session, path: str | None, timeout: float) -> None:
        """Read `path` and its subtree (None: everything) now and put them in the cache."""
        target = path or self.root
        if target != self.root and not target.startswith(self.root + "/"):
            return
        epoch = session.epoch
        nodes = {} if path is None else dict(self._nodes)
        node = self._read(session, [target], timeout).get(target)
        if node is None:
            _drop(nodes, target)
            if target == self.root and self._watch_root(session, timeout):
                self._events.put((session.gen, self.root))  # created meanwhile
        else:
            known = nodes[target].children if target in nodes else frozenset()
            nodes[target] = node
            for child in known - node.children:
                _drop(nodes, f"{target}/{child}")
            new = [f"{target}/{c}" for c in node.children if f"{target}/{c}" not in nodes]
            nodes.update(self._read_tree(session, new, timeout))
        parent, _, name = target.rpartition("/")
        if target != self.root and parent in nodes:  # keep the parent's list of children in step
            siblings = nodes[parent].children
            nodes[parent] = replace(nodes[parent], children=siblings | {name} if node else siblings - {name})
        if session is not self._session:
            return
        self._nodes = nodes
        self._revision = max(self._revision, int(session.client.last_zxid or 0))
        self._note_config(nodes.get(self.path("config")))
        if path is None and session.epoch == epoch:
            self._loaded_at = (session.gen, epoch)

    def _watch_root(self, session: _Session, timeout: float) -> bool:
        """Watch for the prefix to be created; True when it exists already."""
        return session.client.exists_async(self.root, watch=session.on_watch).get(timeout=timeout) is not None

    def _read(self, session: _Session, paths: Iterable[str], timeout: float) -> dict[str, Znode]:
        """Read znodes (data and children) in one pipeline, leaving a data and a children watch on each."""
        client, watch = session.client, session.on_watch
        pending = [(p, client.get_async(p, watch=watch), client.get_children_async(p, watch=watch)) for p in paths]
        found: dict[str, Znode] = {}
        for path, data_result, children_result in pending:
            try:
                data, stat = data_result.get(timeout=timeout)
                children = children_result.get(timeout=timeout)
            except NoNodeError:
                continue
            found[path] = Znode(data or b"", int(stat.version), int(stat.ephemeralOwner), frozenset(children))
        return found

    def _read_tree(self, session: _Session, roots: list[str], timeout: float) -> dict[str, Znode]:
        found: dict[str, Znode] = {}
        level = roots
        while level:
            nodes = self._read(session, level, timeout)
            found.update(nodes)
            level = [f"{p}/{c}" for p, n in nodes.items() for c in sorted(n.children)]
        return found

    def _note_config(self, node: Znode | None) -> None:
        """loop_wait and retry_timeout of the DCS config set the timeouts of the next connection (B31)."""
        data = None if node is None else node.data
        if data == self._config_seen:
            return
        self._config_seen = data
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        dynamic = effective(parsed if isinstance(parsed, dict) else None, self._bootstrap)
        self._loop_wait, self._retry_timeout = float(dynamic.loop_wait), float(dynamic.retry_timeout)

    # --- requests ---

    def _connected(self, deadline: float) -> _Session:
        while True:
            if self._closed:
                raise DCSUnavailable(f"{self.name}: the backend is closed")
            session, left = self._session, deadline - time.monotonic()
            if left <= 0:
                raise DCSUnavailable(f"{self.name}: not connected to {','.join(self._hosts) or 'ZooKeeper'} in time")
            if session is not None and session.live.is_set():
                return session
            if session is None:
                time.sleep(min(left, RETRY_PAUSE_S))
            else:
                session.live.wait(min(left, RETRY_PAUSE_S))

    def _run(
        self, deadline: float, what: str, call: Callable[[Any], Any], expect: tuple[type[Exception], ...] = ()
    ) -> Any:
        """One request within the time left. `expect`ed errors are answers; the others are DCSUnavailable."""
        while True:
            session = self._connected(deadline)
            try:
                return call(session.client).get(timeout=_left(deadline))
            except NotSent:
                time.sleep(RETRY_PAUSE_S)  # never sent: safe to send again once connected
            except expect:
                raise
            except KazooTimeoutError:
                raise DCSUnavailable(f"{self.name}: no answer to {what} in time; its outcome is unknown")
            except KazooException as exc:
                raise DCSUnavailable(f"{self.name}: {what} failed ({type(exc).__name__}); its outcome is unknown")

    @staticmethod
    def _deadline(timeout: float) -> float:
        return time.monotonic() + max(0.0, float(timeout))

    def _create(self, path: str, data: bytes, deadline: float, ephemeral: bool = False) -> Any:
        """The new znode's stat, or None when it exists. Missing parents are created (persistent)."""
        try:
            _, stat = self._run(
                deadline,
                f"create {path}",
                lambda c: c.create_async(
                    path, data, acl=self._acl, ephemeral=ephemeral, makepath=True, include_data=True
                ),
                (NodeExistsError,),
            )
        except NodeExistsError:
            return None
        self._sync_now(path, deadline)
        return stat

    def _set(self, path: str, data: bytes, version: int, deadline: float) -> Any:
        expect = (BadVersionError, NoNodeError)
        stat = self._run(deadline, f"set {path}", lambda c: c.set_async(path, data, version), expect)
        self._sync_now(path, deadline)
        return stat

    def _get(self, path: str, deadline: float) -> tuple[bytes, Any] | None:
        try:
            data, stat = self._run(deadline, f"get {path}", lambda c: c.get_async(path), (NoNodeError,))
        except NoNodeError:
            return None
        return data or b"", stat

    def _delete(self, path: str, version: int, deadline: float) -> bool:
        expect = (NoNodeError, BadVersionError, NotEmptyError)
        try:
            self._run(deadline, f"delete {path}", lambda c: c.delete_async(path, version), expect)
        except expect:
            return False
        self._sync_now(path, deadline)
        return True

    def _put(self, path: str, value: str, version: int | None, deadline: float) -> int | None:
        """Set (with `version`: compare-and-set); without a version, create the znode when it is missing."""
        data = value.encode()
        while True:
            try:
                return int(self._set(path, data, -1 if version is None else version, deadline).version)
            except BadVersionError:
                return None
            except NoNodeError:
                if version is not None:
                    return None
            stat = self._create(path, data, deadline)
            if stat is not None:
                return int(stat.version)

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

    def _delete_tree(self, path: str, deadline: float) -> None:
        expect = (NoNodeError, NotEmptyError)
        while True:
            try:
                children = self._run(deadline, f"list {path}", lambda c: c.get_children_async(path), expect)
                for child in children:
                    self._delete_tree(f"{path}/{child}", deadline)
                self._run(deadline, f"delete {path}", lambda c: c.delete_async(path), expect)
                return
            except NoNodeError:
                return
            except NotEmptyError:
                continue  # a child appeared meanwhile (a member touching its key)

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

"""The watch-fed cache of every znode under the prefix, and the view load() builds from it (the package
docstring tells how it is kept current)."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from shared.config.dynamic import effective
from shared.dcs.base import Backend, DCSUnavailable, KeyValueTTL, Snapshot
from shared.dcs.zookeeper.session import Session, time_left

log = logging.getLogger("shared.dcs.zookeeper")  # one logger for the package's modules

CONTAINERS = frozenset({"members", "optime"})  # parent znodes of the layout, never keys
CACHE_READ_TIMEOUT_S = 5.0


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


def _drop(nodes: dict[str, Znode], path: str) -> None:
    for p in [p for p in nodes if p == path or p.startswith(path + "/")]:
        del nodes[p]


class ZooKeeperCache(Backend):
    """ZooKeeperBackend's cache: is_healthy(), load(), the cache thread and the reads that feed it."""

    # set by ZooKeeperBackend.__init__
    root: str
    _hosts: tuple[str, ...]
    _session: Session | None
    _events: queue.Queue[tuple[int, str | None]]  # (gen, path); path None = everything
    _nodes: dict[str, Znode]  # replaced, never changed in place: readers need no lock
    _cache_lock: threading.Lock
    _loaded_at: tuple[int, int] | None  # (gen, epoch) of the session the cache was read in
    _revision: int
    _config_seen: bytes | None
    _bootstrap: dict[str, Any]
    _loop_wait: float
    _retry_timeout: float
    _closed: bool
    _notify_lock: threading.Lock

    def _notify(self) -> None:
        with self._notify_lock:
            if not self._closed:
                self.on_change()

    def _is_loaded(self, session: Session | None) -> bool:
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
            self._sync(session, path, time_left(deadline))

    def _sync(self, session: Session, path: str | None, timeout: float, caller: bool = True) -> None:
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

    def _read_into_cache(self, session: Session, path: str | None, timeout: float) -> None:
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

    def _watch_root(self, session: Session, timeout: float) -> bool:
        """Watch for the prefix to be created; True when it exists already."""
        return session.client.exists_async(self.root, watch=session.on_watch).get(timeout=timeout) is not None

    def _read(self, session: Session, paths: Iterable[str], timeout: float) -> dict[str, Znode]:
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

    def _read_tree(self, session: Session, roots: list[str], timeout: float) -> dict[str, Znode]:
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

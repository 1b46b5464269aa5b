"""The etcd v3 backend (section `etcd3:`, B29): gRPC through the etcd3 package's generated stubs, called
directly so that every call carries its own deadline (the channels, the transaction parts and what a gRPC
status means: etcd3_grpc.py).

- Keys are Patroni's, /<namespace>/<scope>/<name>, values the caller's strings; a key's version is its
  mod_revision and Snapshot.revision the etcd revision the cache has seen.
- Leases: two per backend, granted on first use and granted again when the ttl changes or the lease is gone:
  the `leader` lease carries only the leader key and is kept alive only by take_leader/refresh_leader; the
  `member` lease carries only members/<name> and is kept alive only by touch_member. So a brain that stops
  refreshing the lock loses it after ttl even while it keeps touching its member key (DESIGN.md, protocol.md:
  only dcs.take_leader and dcs.refresh_leader extend the leader key). Nothing keeps a lease alive on its own.
- Atomic operations are single transactions: take_leader = create_revision == 0 -> put with the leader lease
  (on failure the key is read back, so that a retry after a lost answer still recognises our own lease);
  refresh_leader = value == name -> (lease != ours -> put again with our lease), after a keepalive of the
  lease; release_leader = value == name -> delete; write/delete with a version = mod_revision == version.
- Reads: a range read of the prefix, then a watch from the next revision feeds the cache (etcd_common.KeyCache);
  load() refuses while the watch is not running. A second thread asks every POLL_INTERVAL_S for the TTL left
  of the leader key's lease, and every OTHER_LEASES_POLL_S for the other keys' (LeaseTimeToLive, whole
  seconds; between readings the TTL counts down from the last), which also proves contact: without any answer
  for HEALTH_STALE_S the watch is moved to the next endpoint.
- Each write returns once the watch has delivered it (at most WRITE_VISIBLE_S), so load() reads our writes.
"""

# ruff: noqa: E402  (protobuf's implementation is chosen from the environment at its first import)
from __future__ import annotations

import os
import warnings

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # etcd3's stubs need it (PLATFORM.md)
warnings.filterwarnings("ignore", message=r"Call to deprecated create function", category=DeprecationWarning)

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]

try:
    from etcd3 import etcdrpc
    from etcd3.etcdrpc import kv_pb2
except TypeError as exc:  # protobuf was imported before us with its C implementation: get_backend says so
    raise ImportError(f"etcd3's protobuf stubs need PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python: {exc}") from exc

from shared.config import NodeConfig
from shared.dcs.base import BackendError, OnChange
from shared.dcs.etcd3_grpc import (
    Cmp,
    Connection,
    Metadata,
    classify_grpc,
    has_writes,
    prefix_end,
    time_left,
    txn_compare,
    txn_delete,
    txn_put,
    txn_range,
)
from shared.dcs.etcd_base import WatchingBackend
from shared.dcs.etcd_common import CachedKey, EndpointError, call_with_retries, lease_ttl
from shared.dcs.etcd_config import SETUP_TIMEOUT_S, Endpoint, parse_endpoint

log = logging.getLogger(__name__)
T = TypeVar("T")

OTHER_LEASES_POLL_S = 5.0  # the member keys' TTL left is informational: asking less often keeps an idle node quiet


class Etcd3Backend(WatchingBackend):
    name = "etcd3"

    def __init__(self, config: NodeConfig, on_change: OnChange) -> None:
        super().__init__(config, on_change)
        self._prefix = self.prefix.encode()
        self._lock = threading.Lock()
        self._connections: dict[Endpoint, Connection] = {}
        self._leases: dict[str, tuple[int, int]] = {}  # "leader" | "member" -> (lease id, granted ttl)
        self._stream: Any = None

    def _key(self, name: str) -> bytes:
        return self.path(name).encode()

    def _connection(self, endpoint: Endpoint) -> Connection:
        with self._lock:
            connection = self._connections.get(endpoint)
            if connection is None:
                connection = self._connections[endpoint] = Connection(self.settings, endpoint)
            return connection

    def _interrupt(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def close(self) -> None:
        super().close()
        with self._lock:
            for connection in self._connections.values():
                connection.channel.close()
            self._connections.clear()

    # --- calls ---

    def _failure(self, connection: Connection, endpoint: Endpoint, exc: grpc.RpcError) -> EndpointError:
        code, details = exc.code(), str(exc.details() or "")
        if "token" in details or "auth store" in details:
            connection.token = None
        if "lease not found" in details:
            with self._lock:
                self._leases.clear()
        return EndpointError(classify_grpc(getattr(code, "name", str(code)), details), f"{endpoint}: {details or code}")

    def _call(
        self, what: str, fn: Callable[[Connection, Metadata, float], T], *, timeout: float, idempotent: bool
    ) -> T:
        def attempt(endpoint: Endpoint, remaining: float) -> T:
            connection = self._connection(endpoint)
            deadline = time.monotonic() + remaining
            try:
                result = fn(connection, connection.metadata(remaining), deadline)
            except grpc.RpcError as exc:
                raise self._failure(connection, endpoint, exc)
            self.cache.contact()
            return result

        return call_with_retries(self.endpoints, attempt, timeout=timeout, idempotent=idempotent, what=f"etcd3 {what}")

    def _txn(
        self, what: str, build: Callable[[Connection, Metadata, float], Any], *, timeout: float, idempotent: bool
    ) -> Any:
        started = time.monotonic()

        def fn(connection: Connection, metadata: Metadata, deadline: float) -> Any:
            request = build(connection, metadata, deadline)
            return connection.kv.Txn(request, timeout=time_left(deadline), metadata=metadata)

        reply = self._call(what, fn, timeout=timeout, idempotent=idempotent)
        if has_writes(reply.responses):
            self._wait_visible(int(reply.header.revision), started, timeout)
        return reply

    def _grant(self, connection: Connection, metadata: Metadata, ttl: float, deadline: float) -> tuple[int, int]:
        seconds, request = lease_ttl(ttl), etcdrpc.LeaseGrantRequest(TTL=lease_ttl(ttl))
        reply = connection.lease.LeaseGrant(request, timeout=time_left(deadline), metadata=metadata)
        self.cache.note_lease(int(reply.ID), float(reply.TTL))
        return int(reply.ID), seconds

    def _lease(self, connection: Connection, metadata: Metadata, purpose: str, ttl: float, deadline: float) -> int:
        """Our `purpose` lease with this ttl, kept alive now; a new one when the ttl changed or it is gone."""
        with self._lock:
            held = self._leases.get(purpose)
        if held is not None and held[1] == lease_ttl(ttl):
            request = etcdrpc.LeaseKeepAliveRequest(ID=held[0])
            stream = connection.lease.LeaseKeepAlive(iter([request]), timeout=time_left(deadline), metadata=metadata)
            replies = list(stream)
            if replies and replies[0].TTL > 0:
                self.cache.note_lease(held[0], float(replies[0].TTL))
                return held[0]
        granted = self._grant(connection, metadata, ttl, deadline)
        with self._lock:
            self._leases[purpose] = granted
        return granted[0]

    # --- the contract ---

    def initialize(self, create_new: bool, sysid: str, *, timeout: float) -> bool:
        key = self._key("initialize")
        compare = [txn_compare(key, Cmp.CREATE, create_revision=0)] if create_new else []
        request = etcdrpc.TxnRequest(compare=compare, success=[txn_put(key, sysid)])
        reply = self._txn("initialize", lambda *_: request, timeout=timeout, idempotent=not create_new)
        return bool(reply.succeeded)

    def cancel_initialization(self, *, timeout: float) -> bool:
        return self.delete("initialize", None, timeout=timeout)

    def take_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        key, used = self._key("leader"), [0]

        def build(connection: Connection, metadata: Metadata, deadline: float) -> Any:
            used[0] = self._lease(connection, metadata, "leader", ttl, deadline)
            return etcdrpc.TxnRequest(
                compare=[txn_compare(key, Cmp.CREATE, create_revision=0)],
                success=[txn_put(key, name, used[0])],
                failure=[txn_range(key)],
            )

        reply = self._txn("take_leader", build, timeout=timeout, idempotent=True)
        if reply.succeeded:
            return True
        kvs = reply.responses[0].response_range.kvs  # a retry after a lost answer finds our own lease here
        return bool(kvs) and kvs[0].value == name.encode() and kvs[0].lease == used[0]

    def refresh_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        key = self._key("leader")

        def build(connection: Connection, metadata: Metadata, deadline: float) -> Any:
            lease = self._lease(connection, metadata, "leader", ttl, deadline)
            reattach = etcdrpc.TxnRequest(
                compare=[txn_compare(key, Cmp.LEASE, Cmp.NOT_EQUAL, lease=lease)], success=[txn_put(key, name, lease)]
            )
            return etcdrpc.TxnRequest(
                compare=[txn_compare(key, Cmp.VALUE, value=name.encode())],
                success=[etcdrpc.RequestOp(request_txn=reattach)],
            )

        return bool(self._txn("refresh_leader", build, timeout=timeout, idempotent=True).succeeded)

    def release_leader(self, name: str, *, timeout: float) -> bool:
        key = self._key("leader")
        request = etcdrpc.TxnRequest(
            compare=[txn_compare(key, Cmp.VALUE, value=name.encode())], success=[txn_delete(key)]
        )
        return bool(self._txn("release_leader", lambda *_: request, timeout=timeout, idempotent=False).succeeded)

    def touch_member(self, name: str, data_json: str, ttl: float, *, timeout: float) -> bool:
        key = self._key(f"members/{name}")

        def build(connection: Connection, metadata: Metadata, deadline: float) -> Any:
            lease = self._lease(connection, metadata, "member", ttl, deadline)
            return etcdrpc.TxnRequest(success=[txn_put(key, data_json, lease)])

        return bool(self._txn("touch_member", build, timeout=timeout, idempotent=True).succeeded)

    def write(
        self, key: str, value: str, version: int | None, ttl: float | None, *, timeout: float
    ) -> tuple[bool, int | None]:
        path = self._key(key)
        compare = [] if version is None else [txn_compare(path, Cmp.MOD, mod_revision=version)]

        def build(connection: Connection, metadata: Metadata, deadline: float) -> Any:
            lease = 0 if ttl is None else self._grant(connection, metadata, ttl, deadline)[0]
            return etcdrpc.TxnRequest(compare=compare, success=[txn_put(path, value, lease)])

        reply = self._txn(f"write {key}", build, timeout=timeout, idempotent=version is None)
        return (True, int(reply.header.revision)) if reply.succeeded else (False, None)

    def delete(self, key: str, version: int | None, *, timeout: float) -> bool:
        path = self._key(key)
        compare = [] if version is None else [txn_compare(path, Cmp.MOD, mod_revision=version)]
        request = etcdrpc.TxnRequest(compare=compare, success=[txn_delete(path)])
        reply = self._txn(f"delete {key}", lambda *_: request, timeout=timeout, idempotent=False)
        return bool(reply.succeeded) and has_writes(reply.responses)

    def delete_cluster(self, *, timeout: float) -> bool:
        request = etcdrpc.TxnRequest(success=[txn_delete(self._prefix, prefix_end(self._prefix))])
        self._txn("delete_cluster", lambda *_: request, timeout=timeout, idempotent=True)
        return True

    # --- the watch thread ---

    def _watch(self, endpoint: Endpoint) -> tuple[str, bool]:
        """Read the prefix, then follow it until the stream breaks; returns (why it stopped, whether it ran)."""
        connection = self._connection(endpoint)
        requests: queue.Queue[Any] = queue.Queue()  # the stream's request side; None ends it
        established = False
        try:
            metadata = connection.metadata(SETUP_TIMEOUT_S)
            end = prefix_end(self._prefix)
            reply = connection.kv.Range(
                etcdrpc.RangeRequest(key=self._prefix, range_end=end), timeout=SETUP_TIMEOUT_S, metadata=metadata
            )
            self.cache.replace(self._entries(reply.kvs), int(reply.header.revision))
            create = etcdrpc.WatchCreateRequest(
                key=self._prefix, range_end=end, start_revision=reply.header.revision + 1
            )
            requests.put(etcdrpc.WatchRequest(create_request=create))
            self._stream = connection.watch.Watch(iter(requests.get, None), metadata=(*metadata, ("hasleader", "true")))
            if self._stop.is_set():
                self._stream.cancel()
            for response in self._stream:
                if response.compact_revision:
                    return f"the watch fell behind the compaction at revision {response.compact_revision}", established
                if response.canceled:
                    return f"the watch was canceled ({response.cancel_reason or 'no leader'})", established
                if response.created:
                    established = True
                    self.cache.set_current(True)
                    self._discover(connection, metadata)
                    continue
                self._apply(response)
            return "the watch stream ended", established
        except grpc.RpcError as exc:
            return str(self._failure(connection, endpoint, exc)), established
        finally:
            requests.put(None)
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.cancel()

    def _discover(self, connection: Connection, metadata: Metadata) -> None:
        """Learn the other members' client URLs, unless the hosts are proxies (use_proxies)."""
        if self.settings.use_proxies:
            return
        try:
            reply = connection.cluster.MemberList(
                etcdrpc.MemberListRequest(), timeout=SETUP_TIMEOUT_S, metadata=metadata
            )
            added = self.endpoints.extend(parse_endpoint(url) for m in reply.members for url in m.clientURLs)
        except (grpc.RpcError, BackendError) as exc:
            log.debug("etcd3: no member list: %s", exc)
            return
        if added:
            log.info("etcd3: members found at %s", ", ".join(map(str, added)))

    def _entry(self, kv: Any) -> tuple[str | None, CachedKey]:
        name = self.relative(kv.key.decode("utf-8", "replace"))
        return name, CachedKey(kv.value.decode("utf-8", "replace"), int(kv.mod_revision), int(kv.lease))

    def _entries(self, kvs: Iterable[Any]) -> dict[str, CachedKey]:
        return {name: entry for name, entry in map(self._entry, kvs) if name is not None}

    def _apply(self, response: Any) -> None:
        net: dict[str, CachedKey | None] = {}  # events come in revision order: the last one per key wins
        for event in response.events:
            name, entry = self._entry(event.kv)
            if name is not None:
                net[name] = None if event.type == kv_pb2.Event.DELETE else entry
        puts = {k: v for k, v in net.items() if v is not None}
        self.cache.apply(puts, [k for k, v in net.items() if v is None], int(response.header.revision))

    # --- the poll thread ---

    def _poll(self, endpoint: Endpoint) -> None:
        """The TTL left of every lease the cached keys carry; without any, a linearizable read of the leader."""
        connection = self._connection(endpoint)
        leases = self.cache.leases()
        try:
            metadata = connection.metadata(SETUP_TIMEOUT_S)
            due = self.cache.leases_due(OTHER_LEASES_POLL_S)
            for lease in due:
                request = etcdrpc.LeaseTimeToLiveRequest(ID=lease)
                reply = connection.lease.LeaseTimeToLive(request, timeout=SETUP_TIMEOUT_S, metadata=metadata)
                self.cache.note_lease(lease, max(0.0, float(reply.TTL)))
            if not due:
                request = etcdrpc.RangeRequest(key=self._key("leader"), count_only=True)
                connection.kv.Range(request, timeout=SETUP_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as exc:
            raise self._failure(connection, endpoint, exc)
        with self._lock:
            own = {lease for lease, _ in self._leases.values()}
        self.cache.forget_leases(leases | own)

"""The etcd v2 backend (section `etcd:`, B28): the v2 keys API (/v2/keys/<path>) over HTTP with urllib3.
etcd 3.4 serves it only with --enable-v2=true, and its keys are invisible to v3 clients (and the reverse).

- Keys are Patroni's, /<namespace>/<scope>/<name> (members/<name> under the `members` directory); a key's
  version is its modifiedIndex, Snapshot.revision the etcd index (X-Etcd-Index, then each event's index).
- TTLs are the store's own (`ttl=`): take_leader = PUT prevExist=false with ttl; refresh_leader = PUT of the
  same value with prevValue=name and ttl; touch_member = PUT with ttl. The refresh writes the value again
  rather than using refresh=true: etcd 3.4 accepts refresh=true with prevValue too, but a refresh is not sent
  to watchers, so the other nodes' caches would keep a stale modifiedIndex and TTL. Written this way every
  refresh is an ordinary compareAndSwap event, as with Patroni.
- Compare-and-set: prevValue / prevIndex; compare-and-delete: DELETE with prevValue / prevIndex. A failed
  compare is 412 (errorCode 101 "Compare failed", 105 "Key already exists") or 404 (100 "Key not found").
- Reads: a quorum GET ?recursive=true of the cluster directory, then ?wait=true&recursive=true&waitIndex=N
  long polls feed the cache; "event index cleared" (errorCode 401: more than 1000 events went by) means read
  again. A second thread makes a quorum read every POLL_INTERVAL_S: with no answer for HEALTH_STALE_S the
  view stops being current and the watch moves to the next endpoint.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from shared.config import NodeConfig
from shared.dcs.base import BackendError, OnChange
from shared.dcs.etcd_base import WatchingBackend
from shared.dcs.etcd_common import CachedKey, EndpointError, Failure, call_with_retries, lease_ttl
from shared.dcs.etcd_config import SETUP_TIMEOUT_S, Endpoint, parse_endpoint

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0
WATCH_TIMEOUT_S = 5.0  # a long poll with no event is asked again after this
# error codes that are compare results, not failures
KEY_NOT_FOUND, COMPARE_FAILED, NODE_EXISTS, EVENT_INDEX_CLEARED = 100, 101, 105, 401


def classify_http(status: int, error_code: int | None) -> Failure:
    """An error answer that is not a compare result (those are 404/100, 412/101 and 412/105)."""
    if error_code == 300 or status >= 500:  # raft internal error ("server stopped", "request timed out")
        return Failure.UNKNOWN
    return Failure.FATAL  # 401/403: credentials; 400: a bad request


def classify_transport(exc: Exception) -> Failure:
    """A urllib3 error: was the request sent?"""
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError | urllib3.exceptions.SSLError):
        return Failure.NOT_SENT  # NewConnectionError (refused, unreachable) is a ConnectTimeoutError
    return Failure.UNKNOWN  # read timeout, connection reset after sending...


class Reply:
    """An etcd v2 answer: HTTP status, the JSON body and X-Etcd-Index."""

    def __init__(self, status: int, body: dict[str, Any], index: int) -> None:
        self.status, self.body, self.index = status, body, index

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)

    @property
    def error_code(self) -> int | None:
        code = self.body.get("errorCode")
        return code if isinstance(code, int) else None

    @property
    def is_compare_result(self) -> bool:
        return (self.status, self.error_code) in ((404, KEY_NOT_FOUND), (412, COMPARE_FAILED), (412, NODE_EXISTS))

    @property
    def node(self) -> dict[str, Any]:
        node = self.body.get("node")
        return node if isinstance(node, dict) else {}


def flatten(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every leaf (non-directory) node of a recursive GET."""
    if not node.get("dir"):
        return [node] if "key" in node else []
    return [leaf for child in node.get("nodes") or () for leaf in flatten(child)]


class EtcdBackend(WatchingBackend):
    name = "etcd"

    def __init__(self, config: NodeConfig, on_change: OnChange) -> None:
        super().__init__(config, on_change)
        s = self.settings
        headers = urllib3.make_headers(basic_auth=f"{s.username}:{s.password}") if s.username else {}
        self.http = urllib3.PoolManager(
            maxsize=4,
            retries=False,
            headers=headers,
            cert_reqs="CERT_REQUIRED" if s.cacert else "CERT_NONE",  # as Patroni: cacert enables validation
            ca_certs=s.cacert,
            cert_file=s.cert,
            key_file=s.key,
        )
        self._restart = threading.Event()
        self._long_poll: urllib3.BaseHTTPResponse | None = None

    def _interrupt(self) -> None:
        self._restart.set()
        response = self._long_poll
        if response is not None:
            response.shutdown()

    def close(self) -> None:
        super().close()
        self.http.clear()

    # --- HTTP ---

    def _url(self, endpoint: Endpoint, path: str, query: dict[str, str] | None = None) -> str:
        url = f"{self.settings.url(endpoint)}/v2/keys{quote(path)}"
        return f"{url}?{urlencode(query)}" if query else url

    def _send(
        self, endpoint: Endpoint, method: str, path: str, fields: dict[str, str], timeout: urllib3.Timeout
    ) -> Reply:
        """One request to one endpoint: a Reply for success and compare results, else EndpointError."""
        put, watch = method == "PUT", "wait" in fields
        try:
            response = self.http.request(
                method,
                self._url(endpoint, path, None if put else fields),
                body=urlencode(fields) if put else None,
                headers={**self.http.headers, "Content-Type": "application/x-www-form-urlencoded"} if put else None,
                timeout=timeout,
                preload_content=False,  # etcd sends a long poll's headers at once: close() can then cut it short
            )
            if watch:
                self._long_poll = response
                if self._stop.is_set():
                    response.shutdown()
            try:
                body = json.loads(response.read() or b"{}")
            finally:
                if watch:
                    self._long_poll = None
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise EndpointError(classify_transport(exc), f"{endpoint}: {exc}") from exc
        except ValueError as exc:
            if response.status == 404:  # etcd 3.4 without --enable-v2=true
                raise EndpointError(Failure.FATAL, f"{endpoint}: no v2 API here (is it an etcd3 cluster?)") from exc
            raise EndpointError(Failure.UNKNOWN, f"{endpoint}: an answer that is not JSON ({response.status})") from exc
        try:
            index = int(response.headers.get("X-Etcd-Index", 0))
        except ValueError:
            index = 0
        reply = Reply(response.status, body if isinstance(body, dict) else {}, index)
        if reply.ok or reply.is_compare_result or (watch and reply.error_code == EVENT_INDEX_CLEARED):
            self.cache.contact()
            return reply
        message = reply.body.get("message") or response.reason or ""
        raise EndpointError(classify_http(reply.status, reply.error_code), f"{endpoint}: {reply.status} {message}")

    def _request(self, what: str, method: str, name: str, fields: dict[str, str], timeout: float, idem: bool) -> Reply:
        started = time.monotonic()

        def attempt(endpoint: Endpoint, remaining: float) -> Reply:
            limit = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_S, remaining), read=remaining)
            return self._send(endpoint, method, self.path(name), fields, limit)

        reply = call_with_retries(self.endpoints, attempt, timeout=timeout, idempotent=idem, what=f"etcd {what}")
        index = reply.node.get("modifiedIndex")
        if reply.ok and isinstance(index, int):
            self._wait_visible(index, started, timeout)
        return reply

    def _set(self, what: str, name: str, fields: dict[str, str], timeout: float, idempotent: bool) -> Reply:
        return self._request(what, "PUT", name, fields, timeout, idempotent)

    # --- the contract ---

    def initialize(self, create_new: bool, sysid: str, *, timeout: float) -> bool:
        fields = {"value": sysid, **({"prevExist": "false"} if create_new else {})}
        return self._set("initialize", "initialize", fields, timeout, not create_new).ok

    def cancel_initialization(self, *, timeout: float) -> bool:
        return self.delete("initialize", None, timeout=timeout)

    def take_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        fields = {"value": name, "ttl": str(lease_ttl(ttl)), "prevExist": "false"}
        return self._set("take_leader", "leader", fields, timeout, False).ok

    def refresh_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        fields = {"value": name, "ttl": str(lease_ttl(ttl)), "prevValue": name}
        return self._set("refresh_leader", "leader", fields, timeout, True).ok

    def release_leader(self, name: str, *, timeout: float) -> bool:
        return self._request("release_leader", "DELETE", "leader", {"prevValue": name}, timeout, False).ok

    def touch_member(self, name: str, data_json: str, ttl: float, *, timeout: float) -> bool:
        fields = {"value": data_json, "ttl": str(lease_ttl(ttl))}
        return self._set("touch_member", f"members/{name}", fields, timeout, True).ok

    def write(
        self, key: str, value: str, version: int | None, ttl: float | None, *, timeout: float
    ) -> tuple[bool, int | None]:
        fields = {"value": value}
        if ttl is not None:
            fields["ttl"] = str(lease_ttl(ttl))
        if version is not None:
            fields["prevIndex"] = str(version)
        reply = self._set(f"write {key}", key, fields, timeout, version is None)
        index = reply.node.get("modifiedIndex")
        return (True, index) if reply.ok and isinstance(index, int) else (False, None)

    def delete(self, key: str, version: int | None, *, timeout: float) -> bool:
        fields = {} if version is None else {"prevIndex": str(version)}
        return self._request(f"delete {key}", "DELETE", key, fields, timeout, False).ok

    def delete_cluster(self, *, timeout: float) -> bool:
        self._request("delete_cluster", "DELETE", "", {"recursive": "true", "dir": "true"}, timeout, True)
        return True

    # --- the watch thread ---

    def _entry(self, node: dict[str, Any], now: float) -> tuple[str | None, CachedKey]:
        ttl = node.get("ttl")
        expires_at = now + ttl if isinstance(ttl, int | float) else None
        value = node.get("value")
        entry = CachedKey("" if value is None else str(value), int(node.get("modifiedIndex", 0)), 0, expires_at)
        return self.relative(str(node.get("key", ""))), entry

    def _read_all(self, endpoint: Endpoint) -> int:
        """The quorum read of the cluster directory; returns the etcd index to watch from."""
        limit = urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=SETUP_TIMEOUT_S)
        reply = self._send(endpoint, "GET", self.prefix, {"recursive": "true", "quorum": "true"}, limit)
        now = time.monotonic()
        entries = [self._entry(leaf, now) for leaf in flatten(reply.node)] if reply.ok else []
        self.cache.replace({k: v for k, v in entries if k is not None}, reply.index)
        self.cache.set_current(True)
        return reply.index + 1

    def _discover(self, endpoint: Endpoint) -> None:
        """Learn the other members' client URLs from /v2/members, unless the hosts are proxies (use_proxies)."""
        if self.settings.use_proxies:
            return
        try:
            response = self.http.request("GET", f"{self.settings.url(endpoint)}/v2/members", timeout=SETUP_TIMEOUT_S)
            members = json.loads(response.data).get("members") or []
            added = self.endpoints.extend(parse_endpoint(u) for m in members for u in m.get("clientURLs") or [])
        except (urllib3.exceptions.HTTPError, ValueError, TypeError, AttributeError, BackendError) as exc:
            log.debug("etcd: no member list from %s: %s", endpoint, exc)
            return
        if added:
            log.info("etcd: members found at %s", ", ".join(map(str, added)))

    def _apply(self, reply: Reply) -> int:
        """One watch event into the cache; returns the next index to wait for."""
        node, action = reply.node, reply.body.get("action")
        index = int(node.get("modifiedIndex", 0))
        if node.get("dir"):
            name = self.relative(str(node.get("key", "")) + "/")
            deleted = [name] if name is not None and action in ("delete", "expire", "compareAndDelete") else []
            self.cache.apply({}, deleted, index)
        else:
            name, entry = self._entry(node, time.monotonic())
            if name is not None and action in ("delete", "expire", "compareAndDelete"):
                self.cache.apply({}, [name], index)
            elif name is not None:
                self.cache.apply({name: entry}, [], index)
        return index + 1

    def _watch(self, endpoint: Endpoint) -> tuple[str, bool]:
        """Read, then follow the directory until an error; returns (why it stopped, whether it ran)."""
        established = False
        limit = urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=WATCH_TIMEOUT_S)
        self._restart.clear()
        try:
            wait_index = self._read_all(endpoint)
            established = True
            self._discover(endpoint)
            while not self._stop.is_set() and not self._restart.is_set():
                fields = {"wait": "true", "recursive": "true", "waitIndex": str(wait_index)}
                try:
                    reply = self._send(endpoint, "GET", self.prefix, fields, limit)
                except EndpointError as exc:
                    if isinstance(exc.__cause__, urllib3.exceptions.ReadTimeoutError):
                        continue  # nothing happened: ask again
                    raise
                if reply.error_code == EVENT_INDEX_CLEARED:
                    wait_index = self._read_all(endpoint)  # more than 1000 events went by: read again
                elif reply.ok:
                    wait_index = self._apply(reply)
            return "the watch was stopped", established
        except EndpointError as exc:
            return str(exc), established

    # --- the poll thread ---

    def _poll(self, endpoint: Endpoint) -> None:
        limit = urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=SETUP_TIMEOUT_S)
        self._send(endpoint, "GET", self.path("leader"), {"quorum": "true"}, limit)

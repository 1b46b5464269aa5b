"""The Consul DCS (section `consul:`, B30, F31): Consul's HTTP API over urllib3.

- Keys: `<namespace>/<scope>/<key>` without the leading slash ("/service" -> "service/batman/leader").
- Session: one per backend, created on the first write that needs it: TTL = ttl/2 (Consul invalidates only
  after 2 x TTL), never below `min_session_ttl` (default 10 s, a Consul agent's session_ttl_min), behavior
  delete, lock-delay `lock_delay` (default 1 ms), checks from `checks` (default none: no serfHealth).
  It is renewed ONLY by take_leader, refresh_leader and touch_member (DESIGN.md: the keeper never extends
  the lock on its own). An invalidated session means lost leadership; the next call creates a new one.
- leader and members/<name> are acquired with the session (PUT ?acquire); versions are ModifyIndex and
  compare-and-set is ?cas=; a key still held by an older session of ours (dcs_proxy restarted, ttl changed)
  is moved to the new one by a compare-and-delete then an acquire, as Patroni does.
- Reads: a thread keeps the prefix in a cache with blocking queries (?recurse&index=&wait=10s, read timeout
  padded by max(wait/15, 1 s)); load() serves it and raises DCSUnavailable while it is not current.
- register_service: the service `<scope>` (DNS-sanitised) with id `<scope>/<name>`, tags the role
  (master|primary|replica|standby-leader) plus service_tags, and an HTTP check of the REST API.
- `min_session_ttl` and `lock_delay` are haven extras (seconds); everything else is Patroni's key.
The HTTP plumbing and the settings are in consul_http.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from shared.config import NodeConfig
from shared.dcs.base import Backend, DCSUnavailable, KeyValueTTL, OnChange, Snapshot
from shared.dcs.consul_http import ConsulHttp, ConsulSettings, Entry, InvalidSession, go_duration, service_name

log = logging.getLogger(__name__)

WATCH_WAIT_S = 10.0
WATCH_BACKOFF_S = 0.5
ROLE_TAGS = {
    "master": ["master", "primary"],
    "primary": ["primary", "master"],
    "replica": ["replica"],
    "standby-leader": ["standby-leader"],
}


class ConsulBackend(Backend):
    name = "consul"

    def __init__(self, config: NodeConfig, on_change: OnChange) -> None:
        super().__init__(config, on_change)
        self.settings = ConsulSettings.from_section(config.dcs)
        self.kv_prefix = self.prefix.lstrip("/")
        self.http = ConsulHttp(self.settings)
        self._lock = threading.RLock()
        self._cache: dict[str, Entry] = {}  # the prefix as the last blocking query returned it
        self._revision = 0
        # Our own writes (the entry read back) and deletes (None, with the index deleted) that the watch has
        # not shown yet: load() applies them, so that a client reads its own writes at once.
        self._mine: dict[str, tuple[int, Entry | None]] = {}
        self._current = False
        self._closed = threading.Event()
        self._session_lock = threading.Lock()
        self._session: str | None = None
        self._session_ttl: float | None = None
        self._service: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle and the watch thread ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch_loop, name=f"consul-watch-{self.config.scope}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
        self.http.abort_watch()
        if self._thread is not None:
            self._thread.join(2.0)
        self.http.close()

    def _notify(self) -> None:
        with self._lock:
            if not self._closed.is_set():
                self.on_change()

    def _set_current(self, current: bool, why: str = "") -> None:
        with self._lock:
            changed, self._current = self._current != current, current
        if changed:
            (log.info if current else log.warning)("consul: %s%s", "available" if current else "unavailable: ", why)
            self._notify()

    def _watch_loop(self) -> None:
        index = 0
        params = {"recurse": ""} | ({self.settings.consistency: ""} if self.settings.consistency != "default" else {})
        while not self._closed.is_set():
            try:
                reply = self.http.blocking_get(f"/v1/kv/{self.kv_prefix}", {**params, "index": index}, WATCH_WAIT_S)
                if reply.status not in (200, 404) or not reply.index:
                    raise DCSUnavailable(f"{reply.status} {reply.text}")
                raw = (reply.json() or []) if reply.status == 200 else []
                cache = {str(e["Key"])[len(self.kv_prefix) :]: Entry.parse(e) for e in raw}
            except Exception as exc:  # whatever it is, this thread must go on: the cache is just not current
                if self._closed.is_set():
                    return
                self._set_current(False, f"{type(exc).__name__}: {exc}")
                index = 0  # the first query after an outage must answer at once
                self._closed.wait(WATCH_BACKOFF_S)
                continue
            with self._lock:
                changed = reply.index != index or not self._current
                self._cache = {k: e for k, e in cache.items() if k and not k.endswith("/")}
                self._revision = reply.index
                self._mine = {k: m for k, m in self._mine.items() if not self._watch_has_seen(k, *m)}
            self._set_current(True)
            if changed:
                self._notify()
            index = reply.index if reply.index >= index else 0  # an index going backwards means: start over

    def is_healthy(self) -> bool:
        return self._current and not self._closed.is_set()

    def _watch_has_seen(self, key: str, index: int, entry: Entry | None) -> bool:
        if entry is not None:
            return self._revision >= index
        cached = self._cache.get(key)
        return cached is None or cached.index > index

    def _view(self) -> tuple[dict[str, Entry], int]:
        with self._lock:
            view, revision = dict(self._cache), self._revision
            for key, (index, entry) in self._mine.items():
                if entry is not None:
                    view[key], revision = entry, max(revision, index)
                elif key in view and view[key].index <= index:
                    del view[key]
            return view, revision

    def _mine_written(self, key: str, entry: Entry | None) -> None:
        if entry is not None:
            with self._lock:
                self._mine[key] = (entry.index, entry)

    def _mine_deleted(self, key: str, index: int) -> None:
        with self._lock:
            self._mine[key] = (index, None)

    def load(self) -> Snapshot:
        if not self._current or self._closed.is_set():
            raise DCSUnavailable("consul: the view of the cluster is not current")
        view, revision = self._view()
        return Snapshot({k: KeyValueTTL(e.value, e.index, e.session) for k, e in view.items()}, revision)

    # --- sessions ---

    def _create_session(self, ttl_s: float, deadline: float) -> str:
        body = {
            "Name": f"{self.config.scope}-{self.config.name}",
            "TTL": go_duration(ttl_s),
            "LockDelay": go_duration(self.settings.lock_delay),
            "Behavior": "delete",
            "Checks": list(self.settings.checks),
        }
        reply = self.http.call("PUT", "/v1/session/create", deadline, body=json.dumps(body))
        if reply.status != 200:
            raise DCSUnavailable(f"consul: cannot create a session (TTL {go_duration(ttl_s)}): {reply.text}")
        session = str(reply.json()["ID"])
        log.info("consul: new session %s, TTL %s", session, go_duration(ttl_s))
        return session

    def _live_session(self, ttl: float, deadline: float) -> str:
        """Our session, renewed now; a new one when there was none, it was invalidated, or the ttl changed."""
        want = max(float(ttl) / 2.0, self.settings.min_session_ttl)
        with self._session_lock:
            if self._session is not None and self._session_ttl == want:
                reply = self.http.call("PUT", f"/v1/session/renew/{self._session}", deadline)
                if reply.status == 200:
                    return self._session
                if reply.status != 404:
                    raise DCSUnavailable(f"consul: session renewal: {reply.status} {reply.text}")
                log.warning("consul: session %s was invalidated", self._session)
            self._session, self._session_ttl = None, None
            self._session = self._create_session(want, deadline)
            self._session_ttl = want
            return self._session

    def _forget_session(self, session: str) -> None:
        with self._session_lock:
            if self._session == session:
                self._session, self._session_ttl = None, None

    # --- key access ---

    def _kv(self, key: str) -> str:
        return f"/v1/kv/{self.kv_prefix}{key}"

    def _get(self, key: str, deadline: float) -> Entry | None:
        reply = self.http.call("GET", self._kv(key), deadline, {"consistent": ""})
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise DCSUnavailable(f"consul: GET {key}: {reply.status} {reply.text}")
        items = reply.json()
        return Entry.parse(items[0]) if items else None

    def _put(self, key: str, value: str, deadline: float, **params: Any) -> bool:
        reply = self.http.call("PUT", self._kv(key), deadline, params, body=value.encode())
        if reply.status != 200:
            raise DCSUnavailable(f"consul: PUT {key}: {reply.status} {reply.text}")
        return reply.json() is True

    def _delete(self, key: str, deadline: float, **params: Any) -> bool:
        reply = self.http.call("DELETE", self._kv(key), deadline, params)
        if reply.status != 200:
            raise DCSUnavailable(f"consul: DELETE {key}: {reply.status} {reply.text}")
        return reply.json() is True

    def _acquire(self, key: str, value: str, session: str, deadline: float) -> bool:
        try:
            if not self._put(key, value, deadline, acquire=session):
                return False
        except InvalidSession:
            self._forget_session(session)
            return False
        self._mine_written(key, self._get(key, deadline))
        return True

    def _take_over(self, key: str, value: str, session: str, deadline: float) -> bool:
        """Acquire `key`; when an older session holds it, compare-and-delete it first (Patroni's way)."""
        if self._acquire(key, value, session, deadline):
            return True
        held = self._get(key, deadline)
        if held is not None and held.session != session and not self._delete_version(key, held.index, deadline):
            return False
        return self._acquire(key, value, session, deadline)

    def _delete_version(self, key: str, index: int, deadline: float) -> bool:
        if not self._delete(key, deadline, cas=index):
            return False
        self._mine_deleted(key, index)
        return True

    # --- the contract ---

    def take_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return self._acquire("leader", name, self._live_session(ttl, deadline), deadline)

    def refresh_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        session = self._live_session(ttl, deadline)
        held = self._get("leader", deadline)
        if held is None or held.value != name:
            return False
        if held.session == session:
            return True
        return self._delete_version("leader", held.index, deadline) and self._acquire("leader", name, session, deadline)

    def release_leader(self, name: str, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        held = self._get("leader", deadline)
        return held is not None and held.value == name and self._delete_version("leader", held.index, deadline)

    def touch_member(self, name: str, data_json: str, ttl: float, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        session = self._live_session(ttl, deadline)
        cached = self._view()[0].get(f"members/{name}") if self._current else None
        done = cached is not None and cached.session == session and cached.value == data_json
        done = done or self._take_over(f"members/{name}", data_json, session, deadline)
        if self.settings.register_service or self._service is not None:
            self._update_service(data_json, deadline)
        return done

    def initialize(self, create_new: bool, sysid: str, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._put("initialize", sysid, deadline, **({"cas": 0} if create_new else {})):
            return False
        self._mine_written("initialize", self._get("initialize", deadline))
        return True

    def cancel_initialization(self, *, timeout: float) -> bool:
        return self.delete("initialize", None, timeout=timeout)

    def write(
        self, key: str, value: str, version: int | None, ttl: float | None, *, timeout: float
    ) -> tuple[bool, int | None]:
        """`ttl` is not used: only leader and member keys are bound to the session."""
        deadline = time.monotonic() + timeout
        if not self._put(key, value, deadline, **({"cas": version} if version is not None else {})):
            return False, None
        written = self._get(key, deadline)  # B30: read back with a consistent read for the new ModifyIndex
        self._mine_written(key, written)
        return True, written.index if written is not None and written.value == value else None

    def delete(self, key: str, version: int | None, *, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if version is not None:
            return self._delete_version(key, version, deadline)
        held = self._get(key, deadline)
        while held is not None and not self._delete_version(key, held.index, deadline):
            held = self._get(key, deadline)  # changed meanwhile: delete what is there now
        return held is not None

    def delete_cluster(self, *, timeout: float) -> bool:
        known = self._view()[0]
        self._delete("", time.monotonic() + timeout, recurse="")
        for key, entry in known.items():
            self._mine_deleted(key, entry.index)
        return True

    # --- service registration ---

    def _update_service(self, data_json: str, deadline: float) -> None:
        try:
            data = json.loads(data_json)
            role, state = str(data["role"]).replace("_", "-"), str(data["state"])
            api, conn = urlsplit(str(data["api_url"])), urlsplit(str(data["conn_url"]))
        except (ValueError, KeyError, TypeError):
            log.warning("consul: cannot register the service: the member data lacks role, state, api_url or conn_url")
            return
        service_id = f"{self.config.scope}/{self.config.name}"
        try:
            if state == "stopped" or not self.settings.register_service:
                if self._service is not None:
                    self.http.call("PUT", f"/v1/agent/service/deregister/{service_id}", deadline)
                    self._service = None
                return
            if role not in ROLE_TAGS or state != "running":
                return
            check: dict[str, Any] = {
                "HTTP": api._replace(path=f"/{role}").geturl(),
                "Interval": self.settings.service_check_interval,
                "DeregisterCriticalServiceAfter": go_duration(
                    (self._session_ttl or self.settings.min_session_ttl) * 10
                ),
            }
            if self.settings.service_check_tls_server_name:
                check["TLSServerName"] = self.settings.service_check_tls_server_name
            body = {
                "ID": service_id,
                "Name": service_name(self.config.scope),
                "Tags": [*self.settings.service_tags, *ROLE_TAGS[role]],
                "Address": conn.hostname,
                "Port": conn.port,
                "Check": check,
                "EnableTagOverride": True,
            }
            if body != self._service:
                reply = self.http.call("PUT", "/v1/agent/service/register", deadline, body=json.dumps(body))
                if reply.status == 200:
                    self._service = body
                else:
                    log.warning("consul: service registration refused: %s %s", reply.status, reply.text)
        except (DCSUnavailable, InvalidSession) as exc:
            log.warning("consul: service registration failed: %s", exc)

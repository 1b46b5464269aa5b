"""The state of the Consul test server (consul_server.py): KV entries with Consul's indexes, sessions with
real TTL expiry and lock-delay, agent services and checks. One Raft-like index grows with every write.

Semantics reproduced (Consul 1.x, single server, datacenter "dc1"):
- KV entries carry CreateIndex, ModifyIndex, LockIndex, Flags, Session. `cas=0` creates only when absent,
  `cas=N` writes/deletes only when ModifyIndex == N (a delete with cas=0 does nothing). `acquire=S` takes
  the lock when it is free (or already S's) and not in lock-delay, incrementing LockIndex on a new holder;
  `release=S` frees it when S holds it. A plain write to a locked key keeps the lock.
- The index of a KV read is the highest ModifyIndex or tombstone under the key/prefix, else the index of
  the whole store; a blocking query waits until that index exceeds the client's, or `wait` (+ up to
  wait/16 of jitter, as Consul does) passes.
- A session with a TTL is invalidated when it is not renewed within 2 x TTL (Consul's multiplier); TTLs
  outside [session_ttl_min, 24h] are refused. Invalidation (expiry or destroy) deletes (behavior delete) or
  releases (behavior release) every lock the session holds and puts those keys in lock-delay. Like a new
  Consul leader, `reset_session_timers()` (called on every server start) gives every session a full TTL.
- Session checks may name "serfHealth" or a registered agent check; checks never fail here.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

NODE = "haven-consul-test"
DATACENTER = "dc1"
MAX_TTL_S = 86400.0
_DURATION = re.compile(r"([\d.]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConsulError(Exception):
    """An answer other than 200: HTTP status and Consul's plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_duration(value: Any, default: float) -> float:
    """A Go duration ("15s", "1ms", "1m30s"); a bare number is seconds."""
    if value is None or value == "":
        return default
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"[\d.]+", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConsulError(400, f"invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def go_duration(seconds: float) -> str:
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes | None
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0
    session: str | None = None


@dataclass
class Session:
    id: str
    name: str
    node: str
    ttl_s: float | None
    lock_delay_s: float
    behavior: str
    checks: list[str]
    create_index: int
    renewed_at: float = 0.0

    def expired(self, now: float) -> bool:
        return self.ttl_s is not None and now - self.renewed_at >= 2 * self.ttl_s

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": int(self.lock_delay_s * 1e9),
            "Behavior": self.behavior,
            "TTL": "" if self.ttl_s is None else go_duration(self.ttl_s),
            "NodeChecks": list(self.checks),
            "ServiceChecks": None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.create_index,
        }


@dataclass
class ConsulState:
    session_ttl_min: float = 10.0
    clock: Callable[[], float] = time.monotonic
    cond: threading.Condition = field(default_factory=threading.Condition)
    index: int = 1
    kv: dict[str, Entry] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    lock_delays: dict[str, float] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- KV ---

    def _bump(self) -> int:
        self.index += 1
        self.cond.notify_all()
        return self.index

    def _matching(self, key: str, recurse: bool) -> list[Entry]:
        if recurse:
            return [e for k, e in sorted(self.kv.items()) if k.startswith(key)]
        entry = self.kv.get(key)
        return [entry] if entry else []

    def query_index(self, key: str, recurse: bool) -> int:
        with self.cond:
            return self._query_index(key, recurse)

    def _query_index(self, key: str, recurse: bool) -> int:
        indexes = [e.modify_index for e in self._matching(key, recurse)]
        indexes += [i for k, i in self.tombstones.items() if (k.startswith(key) if recurse else k == key)]
        return max(indexes, default=0) or self.index

    def kv_get(self, key: str, recurse: bool) -> tuple[int, list[Entry]]:
        with self.cond:
            self._expire_sessions()
            return self._query_index(key, recurse), self._matching(key, recurse)

    def wait_for_index(self, key: str, recurse: bool, min_index: int, wait_s: float, running: threading.Event) -> None:
        """A blocking query: return once the query's index exceeds min_index, or after wait_s plus jitter."""
        deadline = self.clock() + wait_s + random.uniform(0, wait_s / 16)
        with self.cond:
            while running.is_set():
                self._expire_sessions()
                remaining = deadline - self.clock()
                if self._query_index(key, recurse) > min_index or remaining <= 0:
                    return
                self.cond.wait(min(remaining, 0.1))

    def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        cas: int | None = None,
        flags: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        with self.cond:
            self._expire_sessions()
            old = self.kv.get(key)
            if cas is not None and (old.modify_index if old else 0) != cas:
                return False
            session = old.session if old else None
            lock_index = old.lock_index if old else 0
            if acquire is not None:
                if acquire not in self.sessions:
                    raise ConsulError(500, f'invalid session "{acquire}"')
                if session is not None and session != acquire:
                    return False
                if session is None:
                    if self.lock_delays.get(key, 0.0) > self.clock():
                        return False
                    lock_index += 1
                session = acquire
            elif release is not None:
                if release not in self.sessions:
                    raise ConsulError(500, f'invalid session "{release}"')
                if session != release:
                    return False
                session = None
            index = self._bump()
            self.kv[key] = Entry(
                key,
                value,
                flags if flags is not None else (old.flags if old else 0),
                old.create_index if old else index,
                index,
                lock_index,
                session,
            )
            self.tombstones.pop(key, None)
            return True

    def kv_delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        with self.cond:
            self._expire_sessions()
            if recurse:
                keys = [k for k in self.kv if k.startswith(key)]
            else:
                old = self.kv.get(key)
                if cas is not None and (old is None or cas == 0 or old.modify_index != cas):
                    return False
                keys = [key] if old else []
            index = self._bump()
            for k in keys:
                del self.kv[k]
                self.tombstones[k] = index
            return True

    # --- sessions ---

    def session_create(self, body: dict[str, Any]) -> str:
        fields = {k.lower(): v for k, v in body.items()}
        ttl_raw = fields.get("ttl")
        ttl = None if ttl_raw in (None, "") else parse_duration(ttl_raw, 0.0)
        if ttl is not None and ttl != 0 and not self.session_ttl_min <= ttl <= MAX_TTL_S:
            bounds = f"[{go_duration(self.session_ttl_min)}=24h0m0s]"
            raise ConsulError(400, f"Invalid Session TTL '{int(ttl * 1e9)}', must be between {bounds}")
        behavior = str(fields.get("behavior") or "release")
        if behavior not in ("release", "delete"):
            raise ConsulError(400, f"Invalid Behavior setting '{behavior}'")
        checks_raw = fields.get("checks", fields.get("nodechecks"))
        checks = ["serfHealth"] if checks_raw is None else [str(c) for c in checks_raw]
        with self.cond:
            for check in checks:
                if check != "serfHealth" and check not in self.checks:
                    raise ConsulError(500, f"Missing check '{check}' registration")
            session = Session(
                id=str(uuid.uuid4()),
                name=str(fields.get("name") or ""),
                node=str(fields.get("node") or NODE),
                ttl_s=ttl or None,
                lock_delay_s=parse_duration(fields.get("lockdelay"), 15.0),
                behavior=behavior,
                checks=checks,
                create_index=self._bump(),
                renewed_at=self.clock(),
            )
            self.sessions[session.id] = session
            return session.id

    def session_renew(self, session_id: str) -> Session | None:
        with self.cond:
            self._expire_sessions()
            session = self.sessions.get(session_id)
            if session is not None:
                session.renewed_at = self.clock()
            return session

    def session_get(self, session_id: str) -> Session | None:
        with self.cond:
            self._expire_sessions()
            return self.sessions.get(session_id)

    def session_list(self) -> list[Session]:
        with self.cond:
            self._expire_sessions()
            return list(self.sessions.values())

    def session_destroy(self, session_id: str) -> None:
        with self.cond:
            session = self.sessions.get(session_id)
            if session is not None:
                self._invalidate(session)

    def reset_session_timers(self) -> None:
        with self.cond:
            now = self.clock()
            for session in self.sessions.values():
                session.renewed_at = now

    def expire_sessions(self) -> None:
        with self.cond:
            self._expire_sessions()

    def _expire_sessions(self) -> None:
        now = self.clock()
        for session in [s for s in self.sessions.values() if s.expired(now)]:
            self._invalidate(session, at=session.renewed_at + 2 * (session.ttl_s or 0.0))

    def _invalidate(self, session: Session, at: float | None = None) -> None:
        """`at`: when it expired (a lazily noticed expiry still starts the lock-delay at the expiry time)."""
        del self.sessions[session.id]
        index = self._bump()
        until = (self.clock() if at is None else at) + session.lock_delay_s
        for key, entry in list(self.kv.items()):
            if entry.session != session.id:
                continue
            if session.lock_delay_s > 0:
                self.lock_delays[key] = until
            if session.behavior == "delete":
                del self.kv[key]
                self.tombstones[key] = index
            else:
                self.kv[key] = replace(entry, session=None, modify_index=index)

    # --- agent services and checks ---

    def service_register(self, body: dict[str, Any]) -> None:
        fields = {k.lower(): v for k, v in body.items()}
        name = str(fields.get("name") or "")
        if not name:
            raise ConsulError(400, "Missing service name")
        service_id = str(fields.get("id") or name)
        checks = list(fields.get("checks") or []) + ([fields["check"]] if fields.get("check") else [])
        with self.cond:
            self.services[service_id] = {
                "ID": service_id,
                "Service": name,
                "Tags": list(fields.get("tags") or []),
                "Address": str(fields.get("address") or ""),
                "Port": int(fields.get("port") or 0),
                "Meta": dict(fields.get("meta") or {}),
                "EnableTagOverride": bool(fields.get("enabletagoverride")),
                "Datacenter": DATACENTER,
            }
            for i, check in enumerate(checks, 1):
                check_id = f"service:{service_id}" if len(checks) == 1 else f"service:{service_id}:{i}"
                self.checks[check_id] = {"CheckID": check_id, "ServiceID": service_id, "Status": "critical", **check}
            self._bump()

    def service_deregister(self, service_id: str) -> bool:
        with self.cond:
            if self.services.pop(service_id, None) is None:
                return False
            for check_id in [c for c, v in self.checks.items() if v.get("ServiceID") == service_id]:
                del self.checks[check_id]
            self._bump()
            return True

"""A key-value state machine with versions, compare-and-set and TTLs: the replicated state of the Raft
backend (and the whole state of the in-memory backend).

Every mutation is a deterministic function of the state and its arguments: the proposer passes the clock
(`now`), and versions come from a revision counter advanced by the applies themselves, so every replica
that applies the same log holds the same state. Keys are full paths, so several clusters may share one
store (B1). Expiry is not automatic: a key exists until an `expire` command for its exact version is
applied (the Raft leader issues those, see raft.py), so a refresh that raced the expiry wins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# A condition is a tuple of plain values so that it pickles into the Raft log unchanged.
Listener = Callable[[Sequence[str]], None]

ANY: tuple[str, Any] = ("any", None)
ABSENT: tuple[str, Any] = ("absent", None)


def if_value(value: str) -> tuple[str, Any]:
    return ("value", value)


def if_version(version: int) -> tuple[str, Any]:
    return ("version", version)


@dataclass(frozen=True)
class Record:
    value: str
    version: int
    created: float
    updated: float
    expire: float | None = None  # absolute epoch seconds; None = no TTL

    def ttl_left(self, now: float) -> float | None:
        return None if self.expire is None else max(0.0, self.expire - now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "version": self.version,
            "created": self.created,
            "updated": self.updated,
            "expire": self.expire,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Record:
        expire = raw.get("expire")
        return cls(
            value=str(raw["value"]),
            version=int(raw["version"]),
            created=float(raw.get("created") or 0.0),
            updated=float(raw.get("updated") or 0.0),
            expire=None if expire is None else float(expire),
        )


def matches(record: Record | None, cond: Sequence[Any]) -> bool:
    """Whether a key's current record satisfies a condition."""
    kind = cond[0] if cond else "any"
    arg = cond[1] if len(cond) > 1 else None
    if kind == "any":
        return True
    if kind == "absent":
        return record is None
    if record is None:
        return False
    if kind == "value":
        return record.value == arg
    if kind == "version":
        return record.version == arg
    return False  # an unknown condition never matches: safe for a newer proposer


class KVState:
    """The store. Mutations run in the Raft apply thread; reads may come from any thread."""

    def __init__(self, on_change: Listener | None = None) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, Record] = {}
        self._revision = 0
        self._listeners: list[Listener] = [] if on_change is None else [on_change]

    def add_listener(self, listener: Listener) -> None:
        """`listener(keys)` is called after every change, in the applying thread, outside the lock."""
        self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = [x for x in self._listeners if x != listener]

    # --- mutations (deterministic; the replicated commands) ---

    def put(self, key: str, value: str, ttl_s: float | None, now: float, cond: Sequence[Any] = ANY) -> int | None:
        """Write `key` when `cond` holds; return its new version, or None when the condition failed."""
        with self._lock:
            old = self._data.get(key)
            if not matches(old, cond):
                return None
            self._revision += 1
            expire = None if ttl_s is None else now + float(ttl_s)
            created = old.created if old is not None else now
            self._data[key] = Record(str(value), self._revision, created, now, expire)
            version = self._revision
        self._notify([key])
        return version

    def remove(self, key: str, cond: Sequence[Any] = ANY) -> bool:
        """Delete `key` when it exists and `cond` holds."""
        with self._lock:
            old = self._data.get(key)
            if old is None or not matches(old, cond):
                return False
            self._revision += 1
            del self._data[key]
        self._notify([key])
        return True

    def remove_prefix(self, prefix: str) -> int:
        """Delete every key starting with `prefix`; return how many."""
        with self._lock:
            keys = [k for k in self._data if k.startswith(prefix)]
            if not keys:
                return 0
            self._revision += 1
            for k in keys:
                del self._data[k]
        self._notify(keys)
        return len(keys)

    def expire(self, key: str, version: int) -> bool:
        """Delete `key` only if it still has `version`: a refresh applied before this command wins."""
        return self.remove(key, if_version(version))

    # --- reads ---

    @property
    def revision(self) -> int:
        return self._revision

    def get(self, key: str) -> Record | None:
        with self._lock:
            return self._data.get(key)

    def items(self, prefix: str = "") -> tuple[dict[str, Record], int]:
        """A consistent copy of the keys under `prefix` and the revision it was taken at."""
        with self._lock:
            return {k: r for k, r in self._data.items() if k.startswith(prefix)}, self._revision

    def expired(self, now: float) -> list[tuple[str, int]]:
        """(key, version) of every key whose expire time has passed at `now`."""
        with self._lock:
            return [(k, r.version) for k, r in self._data.items() if r.expire is not None and r.expire <= now]

    # --- persistence (Raft log compaction) ---

    def dump(self) -> dict[str, Any]:
        """Plain data only, so that a dump does not depend on our class names."""
        with self._lock:
            return {"revision": self._revision, "keys": {k: r.to_dict() for k, r in self._data.items()}}

    def restore(self, data: dict[str, Any]) -> None:
        keys = data.get("keys") or {}
        with self._lock:
            changed = set(self._data)
            self._data = {str(k): Record.from_dict(v) for k, v in keys.items()}
            self._revision = int(data.get("revision") or 0)
            changed.update(self._data)
        self._notify(sorted(changed))

    def _notify(self, keys: Sequence[str]) -> None:
        for listener in self._listeners:
            listener(keys)

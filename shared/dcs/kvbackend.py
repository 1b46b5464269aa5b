"""The Backend contract implemented once over a KVState (kv.py): how each contract method becomes one
atomic store command. Subclasses only say how a command reaches the state (`_submit`: through Raft, or
applied in place by the in-memory backend) and when the local copy may be read."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from shared.config import NodeConfig
from shared.dcs import kv
from shared.dcs.base import Backend, KeyValueTTL, OnChange, Snapshot

# The store commands a backend may submit; each is a method of KVState with plain-value arguments.
COMMANDS = frozenset({"put", "remove", "remove_prefix", "expire"})


class KVBackend(Backend):
    def __init__(
        self,
        config: NodeConfig,
        on_change: OnChange,
        *,
        state: kv.KVState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, on_change)
        self.state = state if state is not None else kv.KVState()
        self.state.add_listener(self._state_changed)
        self.clock = clock

    def _state_changed(self, keys: Sequence[str]) -> None:
        if any(k.startswith(self.prefix) for k in keys):
            self.on_change()

    @abstractmethod
    def _submit(self, command: str, args: tuple[Any, ...], timeout: float) -> Any:
        """Apply one store command atomically and return its result; raise DCSUnavailable on failure."""

    def _check_readable(self) -> None:
        """Raise DCSUnavailable when the local state cannot be trusted at all (e.g. never synced)."""

    def load(self) -> Snapshot:
        self._check_readable()
        records, revision = self.state.items(self.prefix)
        now = self.clock()
        keys = {
            path[len(self.prefix) :]: KeyValueTTL(r.value, r.version, None, r.ttl_left(now))
            for path, r in records.items()
        }
        return Snapshot(keys, revision)

    def _put(self, key: str, value: str, ttl: float | None, cond: tuple[str, Any], timeout: float) -> int | None:
        ttl_s = None if ttl is None else float(ttl)
        result = self._submit("put", (self.path(key), value, ttl_s, self.clock(), cond), timeout)
        return result if isinstance(result, int) and not isinstance(result, bool) else None

    def _remove(self, key: str, cond: tuple[str, Any], timeout: float) -> bool:
        return self._submit("remove", (self.path(key), cond), timeout) is True

    def initialize(self, create_new: bool, sysid: str, *, timeout: float) -> bool:
        return self._put("initialize", sysid, None, kv.ABSENT if create_new else kv.ANY, timeout) is not None

    def cancel_initialization(self, *, timeout: float) -> bool:
        return self._remove("initialize", kv.ANY, timeout)

    def take_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        return self._put("leader", name, ttl, kv.ABSENT, timeout) is not None

    def refresh_leader(self, name: str, ttl: float, *, timeout: float) -> bool:
        return self._put("leader", name, ttl, kv.if_value(name), timeout) is not None

    def release_leader(self, name: str, *, timeout: float) -> bool:
        return self._remove("leader", kv.if_value(name), timeout)

    def touch_member(self, name: str, data_json: str, ttl: float, *, timeout: float) -> bool:
        return self._put(f"members/{name}", data_json, ttl, kv.ANY, timeout) is not None

    def write(
        self, key: str, value: str, version: int | None, ttl: float | None, *, timeout: float
    ) -> tuple[bool, int | None]:
        cond = kv.ANY if version is None else kv.if_version(version)
        new_version = self._put(key, value, ttl, cond, timeout)
        return new_version is not None, new_version

    def delete(self, key: str, version: int | None, *, timeout: float) -> bool:
        return self._remove(key, kv.ANY if version is None else kv.if_version(version), timeout)

    def delete_cluster(self, *, timeout: float) -> bool:
        self._submit("remove_prefix", (self.prefix,), timeout)
        return True

"""An in-process backend over a KVState: for tests of the programs that talk to dcs_proxy, and of
dcs_proxy's core. Several MemoryBackends sharing one KVState behave like nodes sharing one DCS.
It is not selectable from a configuration file."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.config import NodeConfig
from shared.dcs import kv
from shared.dcs.base import DCSUnavailable, OnChange
from shared.dcs.kvbackend import COMMANDS, KVBackend


class MemoryBackend(KVBackend):
    name = "memory"

    def __init__(
        self,
        config: NodeConfig,
        on_change: OnChange,
        *,
        state: kv.KVState | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, on_change, state=state, clock=clock)
        self.available = True  # set False to simulate an outage
        self.calls: list[tuple[str, tuple[Any, ...], float]] = []

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_healthy(self) -> bool:
        return self.available

    def _check_readable(self) -> None:
        if not self.available:
            raise DCSUnavailable("memory backend is marked unavailable")

    def _submit(self, command: str, args: tuple[Any, ...], timeout: float) -> Any:
        self.calls.append((command, args, timeout))
        if not self.available:
            raise DCSUnavailable("memory backend is marked unavailable")
        if command not in COMMANDS:
            raise ValueError(f"unknown store command {command!r}")
        return getattr(self.state, command)(*args)

    def expire_due(self, now: float | None = None) -> int:
        """Expire every key whose TTL has passed, as the Raft leader would; return how many."""
        due = self.state.expired(self.clock() if now is None else now)
        return sum(1 for key, version in due if self.state.expire(key, version))

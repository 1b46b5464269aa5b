"""Reading a cluster from the DCS, for a configuration that names only the cluster (scope, namespace and a DCS
section, or -d/--dcs-url), as patronictl does (E1, E2).

havenctl holds a DCS client only here and only for the time of one command, through the same clients dcs_proxy
uses (shared/dcs, get_backend). It reads: load() -> Cluster. It writes exactly one thing, the way patronictl
does: `remove` deletes every key of the cluster with delete_cluster(). Every other action goes to the members'
REST APIs, so that dcs_proxy stays the one program that writes the cluster's keys (DESIGN.md).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from ctl.config import CtlError
from shared.config import NodeConfig
from shared.dcs import Backend, BackendError, DCSUnavailable, get_backend
from shared.dcs.base import OnChange
from shared.model import Cluster, KeyValue

CONNECT_TIMEOUT_S = 10.0  # for the client to connect (Raft: to join and catch up) and read
DELETE_TIMEOUT_S = 10.0
_PAUSE_S = 0.05

BackendFactory = Callable[[NodeConfig, OnChange], Backend]


def client_config(config: Mapping[str, Any], scope: str) -> NodeConfig:
    """The configuration for havenctl's own DCS client of cluster `scope`.

    A node's Raft section names the node's own address in self_addr: havenctl must not listen there (the node's
    dcs_proxy does); it joins as a read-only member with that address among its partners instead."""
    data = copy.deepcopy(dict(config))
    data["scope"] = scope
    data.setdefault("name", scope)
    raft = data.get("raft")
    if isinstance(raft, dict):
        addrs = _addresses(raft.get("partner_addrs"))
        self_addr = str(raft.get("self_addr") or "").strip()
        if self_addr and self_addr not in addrs:
            addrs.append(self_addr)
        raft["partner_addrs"] = addrs
        for key in ("self_addr", "bind_addr", "data_dir"):
            raft.pop(key, None)
    return NodeConfig(data)


def _addresses(value: Any) -> list[str]:
    """partner_addrs as a YAML list or as PATRONI_RAFT_PARTNER_ADDRS's "'ip1:port1','ip2:port2'" string."""
    items: list[Any] = list(value) if isinstance(value, list | tuple) else str(value or "").strip("[] ").split(",")
    addrs = (str(a).strip().strip("'\"").strip() for a in items)
    return [a for a in addrs if a]


def has_dcs(config: Mapping[str, Any]) -> bool:
    return NodeConfig(config).dcs_type is not None


class DcsReader:
    """One started client per cluster name, kept for the command's lifetime; close() releases them all."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        timeout: float = CONNECT_TIMEOUT_S,
        factory: BackendFactory = get_backend,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self._factory = factory
        self._backends: dict[str, Backend] = {}

    @property
    def kind(self) -> str | None:
        return NodeConfig(self.config).dcs_type

    def _backend(self, scope: str) -> Backend:
        backend = self._backends.get(scope)
        if backend is not None:
            return backend
        if self.kind is None:
            raise CtlError("No DCS is configured: give a DCS section in the configuration file or -d/--dcs-url")
        try:
            backend = self._factory(client_config(self.config, scope), lambda: None)
            backend.start()
        except BackendError as exc:
            raise CtlError(f"Can not use the DCS ({self.kind}): {exc}")
        except (ValueError, TypeError, OSError) as exc:  # settings a backend could not use
            raise CtlError(f"Can not use the DCS ({self.kind}): {type(exc).__name__}: {exc}")
        self._backends[scope] = backend
        deadline = time.monotonic() + self.timeout
        while not backend.is_healthy():
            if time.monotonic() >= deadline:
                raise CtlError(f"The DCS ({self.kind}) is not accessible: no answer within {self.timeout:g}s")
            time.sleep(_PAUSE_S)
        return backend

    def cluster(self, scope: str) -> Cluster:
        """Every key of the cluster, read now; an error when the DCS cannot answer in time."""
        backend = self._backend(scope)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                snapshot = backend.load()
                break
            except DCSUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise CtlError(f"The DCS ({self.kind}) is not accessible: {exc}")
                time.sleep(_PAUSE_S)
        keys = {name: KeyValue(kv.value, kv.version, kv.session) for name, kv in snapshot.keys.items()}
        return Cluster.from_keys(keys)

    def delete_cluster(self, scope: str) -> None:
        """The one DCS write havenctl makes (`remove`): every key under /<namespace>/<scope>/."""
        try:
            self._backend(scope).delete_cluster(timeout=DELETE_TIMEOUT_S)
        except DCSUnavailable as exc:
            raise CtlError(f"Could not remove the cluster from the DCS: {exc}")

    def close(self) -> None:
        backends, self._backends = self._backends, {}
        for backend in backends.values():
            backend.close()

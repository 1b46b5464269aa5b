"""DCS clients behind one contract (base.py). `get_backend` picks the one the configuration names (B24)
and imports its library only then."""

from __future__ import annotations

import importlib

from shared.config import NodeConfig
from shared.dcs.base import Backend, BackendError, DCSUnavailable, KeyValueTTL, OnChange, Snapshot

# section name -> "module:class"; a backend's module imports its client library at the top.
BACKENDS: dict[str, str] = {
    "raft": "shared.dcs.raft:RaftBackend",
    "etcd3": "shared.dcs.etcd3:Etcd3Backend",
    "etcd": "shared.dcs.etcd:EtcdBackend",
    "zookeeper": "shared.dcs.zookeeper:ZooKeeperBackend",
    "exhibitor": "shared.dcs.exhibitor:ExhibitorBackend",
    "consul": "shared.dcs.consul:ConsulBackend",
    "kubernetes": "shared.dcs.kubernetes:KubernetesBackend",
}

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "DCSUnavailable",
    "KeyValueTTL",
    "OnChange",
    "Snapshot",
    "get_backend",
]


def get_backend(config: NodeConfig, on_change: OnChange) -> Backend:
    """The backend for the configuration's DCS section. Raises BackendError when there is none to use."""
    kind = config.dcs_type
    if kind is None:
        raise BackendError("no DCS section in the configuration")
    target = BACKENDS.get(kind)
    if target is None:
        raise BackendError(f"DCS backend {kind} is not available yet")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise BackendError(f"DCS backend {kind} is not available yet")
        raise BackendError(f"DCS backend {kind} cannot be loaded: {exc}")
    except ImportError as exc:
        raise BackendError(f"DCS backend {kind} cannot be loaded: {exc}")
    backend_class: type[Backend] = getattr(module, class_name)
    return backend_class(config, on_change)

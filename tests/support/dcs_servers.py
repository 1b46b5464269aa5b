"""DCS servers for tests, one adapter per backend, all behind one small interface so that the contract
suite (tests/service/test_dcs_contract.py) and the cluster tests run the same way on every backend.

Each adapter starts its server on free ports in its own temporary directory and stops what it started,
by pid. Where no real server can be installed here (Consul, the Kubernetes API, Exhibitor's REST API)
the adapter runs a test server implementing the API subset the backend uses (the README says so).
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from tests.support.ports import free_port

# backend (the configuration's section name) -> "module:class" of its test server adapter
SERVERS: dict[str, str] = {
    "raft": "tests.support.dcs_servers:RaftServer",
    "etcd3": "tests.support.etcd_server:Etcd3Server",
    "etcd": "tests.support.etcd_server:Etcd2Server",
    "zookeeper": "tests.support.zookeeper_server:ZooKeeperServer",
    "exhibitor": "tests.support.exhibitor_server:ExhibitorServer",
    "consul": "tests.support.consul_server:ConsulServer",
    "kubernetes": "tests.support.kubernetes_server:KubernetesServer",
}


class DcsServer(ABC):
    """A DCS for tests. `section(name)` is the configuration section a node named `name` uses."""

    kind: ClassVar[str]
    # False where the DCS is embedded in the clients (Raft): there is no server to stop or restart.
    has_server: ClassVar[bool] = True
    # The smallest ttl (seconds) the backend honours; the contract suite uses max(this, its own default).
    min_ttl: ClassVar[float] = 4.0

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"haven-{self.kind}-"))

    @abstractmethod
    def start(self) -> None:
        """Start the server and return once it answers."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server (its data stays, so start() brings the same state back)."""

    @abstractmethod
    def section(self, name: str) -> dict[str, Any]:
        """The DCS configuration section for the node `name`."""

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and forget: remove the data."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def make_server(kind: str) -> DcsServer:
    module_name, class_name = SERVERS[kind].split(":")
    server_class: type[DcsServer] = getattr(importlib.import_module(module_name), class_name)
    return server_class()


class RaftServer(DcsServer):
    """The embedded Raft: each client is a Raft node; three clients (n1..n3) form the quorum."""

    kind = "raft"
    has_server = False
    min_ttl = 4.0

    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def section(self, name: str) -> dict[str, Any]:
        for n in ("n1", "n2", "n3", name):
            self.ports.setdefault(n, free_port())
        return {
            "self_addr": f"127.0.0.1:{self.ports[name]}",
            "partner_addrs": [f"127.0.0.1:{p}" for n, p in self.ports.items() if n != name and n in ("n1", "n2", "n3")],
            "data_dir": str(self.dir / name),
            "password": "contract-secret",
        }

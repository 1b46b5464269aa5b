"""Where each program's sockets live: one run directory per node, one ROUTER and one PUB per program."""

from __future__ import annotations

import os
from enum import StrEnum

# ipc:// paths are limited by sun_path (108 bytes on Linux, including the terminating NUL).
MAX_IPC_PATH = 107


class Service(StrEnum):
    DCS_PROXY = "dcs_proxy"
    POSTMASTER = "postmaster"
    HA_LOOP = "ha_loop"
    RESTAPI = "restapi"
    WATCHDOGD = "watchdogd"


class Topic(StrEnum):
    CLUSTER_VIEW = "dcs_proxy.cluster_view"
    PG_STATE = "postmaster.pg_state"
    NODE_STATUS = "ha_loop.node_status"


def router_path(run_dir: str, service: Service) -> str:
    return os.path.join(run_dir, f"{service}.sock")


def pub_path(run_dir: str, service: Service) -> str:
    return os.path.join(run_dir, f"{service}.pub")


def ipc(path: str) -> str:
    if len(path) > MAX_IPC_PATH:
        raise ValueError(f"ipc path {path!r} is longer than {MAX_IPC_PATH} bytes: use a shorter haven.run_dir")
    return f"ipc://{path}"


def check_run_dir(run_dir: str) -> str | None:
    """The reason run_dir cannot hold our sockets, or None."""
    longest = max(len(router_path(run_dir, s)) for s in Service)
    if longest > MAX_IPC_PATH:
        return f"socket paths under it would be {longest} bytes long, the limit is {MAX_IPC_PATH}"
    return None

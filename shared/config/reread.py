"""D31: POST /reload (and SIGHUP to the node) re-reads the node's configuration: the file `haven` was started
with (recorded in the rendered copy as haven.source_config) and the PATRONI_* environment, validated like at
start. The programs read it themselves, as their own users: a file they cannot read leaves the configuration they
have."""

from __future__ import annotations

import os

from shared.config.load import ConfigError, NodeConfig
from shared.config.validation import Problem

_KEPT = ("run_dir", "source_config")  # set by the launcher when it rendered the copy


def reread(current: NodeConfig) -> NodeConfig:
    """The configuration again, from the same sources; raises ConfigError naming each problem."""
    source = current.haven.get("source_config")
    path = str(source) if source else None
    if path is not None and not os.access(path, os.R_OK):  # else the environment alone would be read
        raise ConfigError([Problem(path, f"cannot be read by user id {os.geteuid()}")])
    fresh = NodeConfig.load(path)
    data = dict(fresh.data)
    haven = dict(data.get("haven") or {})
    haven.update({k: current.haven[k] for k in _KEPT if k in current.haven})
    data["haven"] = haven
    if data.get("name") != current.name or data.get("scope") != current.scope:
        raise ConfigError([Problem("name", "name and scope cannot change while the node runs")])
    return NodeConfig(data, current.path)

"""The DCS layout as a golden file: the keys under /<namespace>/<scope>/ after a bootstrap and the JSON
shape of their values (W6, W7), read raw through a node's dcs_proxy, so that any compatibility break is
a diff of tests/golden/dcs_layout.json."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import zmq

from shared.protocol.endpoints import Service, router_path
from shared.protocol.transport import Client

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dcs_layout.json"


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if value is None:
        return "null"
    return "str"


def raw_view(run_dir: Path) -> dict[str, Any]:
    """The cluster view the node's dcs_proxy reads from the DCS now (keys with values and versions)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        client = Client(ctx, router_path(str(run_dir), Service.DCS_PROXY))
        view = client.call("dcs.get_cluster", {}, timeout=5)
        client.close()
    finally:
        ctx.destroy(linger=0)
    return view


def raw_keys(run_dir: Path) -> dict[str, str]:
    """Every key of the cluster as the node's dcs_proxy reads it from the DCS now."""
    return {k: v["value"] for k, v in raw_view(run_dir)["keys"].items()}


def layout(keys: dict[str, str], leader: str) -> dict[str, Any]:
    """Keys with member names replaced by their role, values by their JSON shape."""
    result: dict[str, Any] = {}
    for key, value in keys.items():
        name = key
        if key.startswith("members/"):
            name = "members/{leader}" if key == f"members/{leader}" else "members/{replica}"
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        result[name] = shape(parsed) if isinstance(parsed, dict | list) else "str"
    return dict(sorted(result.items()))


def check_values(keys: dict[str, str], leader: str) -> None:
    """What the shapes cannot say: the values Patroni 3.2 writes."""
    assert re.fullmatch(r"\d+", keys["initialize"]), keys["initialize"]
    assert keys["leader"] == leader
    for key, value in keys.items():
        if key.startswith("members/"):
            member = json.loads(value)
            assert re.fullmatch(r"postgres://[^/@]+:\d+/postgres", member["conn_url"]), member
            assert re.fullmatch(r"https?://[^/]+/patroni", member["api_url"]), member
            assert member["version"] == "3.2.2"
            assert member["role"] == ("master" if key == f"members/{leader}" else "replica")
            assert member["state"] == "running"
    assert isinstance(json.loads(keys["status"])["optime"], int)


def assert_matches_golden(keys: dict[str, str], leader: str) -> None:
    actual = layout(keys, leader)
    if os.environ.get("HAVEN_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    assert actual == expected, json.dumps(actual, indent=2, sort_keys=True)
    check_values(keys, leader)

"""What `list` and `topology` print, byte for byte as patronictl 3.2 does, from a GET /cluster body. Pure."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from ctl.table import render_table
from shared.model import Cluster

FORMATS = ("pretty", "tsv", "json", "yaml", "yml")
BASE_COLUMNS = ("Cluster", "Member", "Host", "Role", "State", "TL", "Lag in MB")
OPTIONAL_COLUMNS = ("Pending restart", "Scheduled restart", "Tags")
ALIGNMENT = {"Lag in MB": "r", "TL": "r"}
DEFAULT_PG_PORT = 5432


@dataclass(frozen=True)
class ClusterInfo:
    """One cluster as havenctl learned it: its name, the system identifier label and the GET /cluster body
    (built from the DCS keys, kept in `dcs`, when the cluster was read from the DCS)."""

    name: str
    sysid: str  # the identifier, or "uninitialized" / "initializing"
    body: Mapping[str, Any]
    dcs: Cluster | None = None

    @property
    def members(self) -> list[dict[str, Any]]:
        members = self.body.get("members")
        found = [dict(m) for m in members if isinstance(m, Mapping)] if isinstance(members, list) else []
        return sorted(found, key=lambda m: str(m.get("name", "")))


def yaml_text(data: Any, flow: bool = False) -> str:
    """YAML as patronictl writes it for editing and output."""
    text: str = yaml.safe_dump(data, default_flow_style=flow, encoding=None, allow_unicode=True, width=200)
    return text


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%d %H:%M:%S")


# -- topology -------------------------------------------------------------------------------------------------------


def _is_leader(member: Mapping[str, Any]) -> bool:
    return str(member.get("role", "")).endswith("leader")


def _tags(member: Mapping[str, Any]) -> Mapping[str, Any]:
    tags = member.get("tags")
    return tags if isinstance(tags, Mapping) else {}


def topology_order(members: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """E22: the leader, then the members replicating from each node, depth first, names prefixed '+ ' and indented
    two spaces per extra level. A member's upstream is its replicatefrom tag when that names another non-leader
    member, else the leader. Without a leader every member hangs one level below an unnamed root."""
    leader = next((m for m in members if _is_leader(m)), None)
    replicas = {str(m.get("name")) for m in members if not _is_leader(m)}
    leader_name = str(leader.get("name")) if leader else None
    children: dict[str | None, list[dict[str, Any]]] = {}
    for member in members:
        if _is_leader(member):
            continue
        parent = _tags(member).get("replicatefrom")
        if not (parent and parent != member.get("name") and parent in replicas):
            parent = leader_name
        children.setdefault(parent, []).append(member)

    ordered: list[dict[str, Any]] = []
    placed: set[int] = set()

    def walk(member: dict[str, Any] | None, key: str | None, level: int) -> None:
        if member is not None:
            if id(member) in placed:
                return
            placed.add(id(member))
            if level > 0:
                member["name"] = "{}+ {}".format(" " * (level - 1) * 2, member["name"])
            ordered.append(member)
        for child in children.get(key, []):
            walk(child, str(child.get("name")), level + 1)

    walk(leader, leader_name, 0)
    # Members caught in a replicatefrom cycle never reach the leader: show them under it rather than lose them.
    for member in members:
        if id(member) not in placed and not _is_leader(member):
            walk(member, str(member.get("name")), 1)
    return ordered


# -- list -------------------------------------------------------------------------------------------------------------


def _scheduled_restart(value: Any) -> str:
    if not isinstance(value, Mapping):
        return str(value)
    text = str(value.get("schedule", ""))
    if "postgres_version" in value:
        text += " if version < {}".format(value["postgres_version"])
    return text


def member_rows(info: ClusterInfo, extended: bool, fmt: str) -> tuple[list[str], list[list[Any]]]:
    members = copy.deepcopy(info.members)
    with_host = [m for m in members if "host" in m]
    columns = list(BASE_COLUMNS)
    for column in OPTIONAL_COLUMNS:
        if extended or any(m.get(column.lower().replace(" ", "_")) for m in with_host):
            columns.append(column)
    # host:port when someone runs on a non-default port or two members share a host.
    append_port = any("port" in m and m["port"] != DEFAULT_PG_PORT for m in with_host) or len(
        {m["host"] for m in with_host}
    ) < len(with_host)

    rows: list[list[Any]] = []
    for member in topology_order(members) if fmt == "topology" else members:
        lag = member.get("lag", "")
        values = dict(member)
        values.update(
            cluster=info.name,
            member=member.get("name"),
            host=member.get("host", ""),
            tl=member.get("timeline", ""),
            role=str(member.get("role", "")).replace("_", " ").title(),
            lag_in_mb=round(lag / 1024 / 1024) if isinstance(lag, int) and not isinstance(lag, bool) else lag,
            pending_restart="*" if member.get("pending_restart") else "",
        )
        if append_port and values["host"] and member.get("port"):
            values["host"] = "{}:{}".format(values["host"], member["port"])
        if "scheduled_restart" in member:
            values["scheduled_restart"] = _scheduled_restart(member["scheduled_restart"])
        rows.append([values.get(column.lower().replace(" ", "_"), "") for column in columns])
    return columns, rows


def service_info(body: Mapping[str, Any]) -> list[str]:
    """The footer lines under a pretty table: maintenance mode and a scheduled switchover."""
    info: list[str] = []
    if body.get("pause"):
        info.append("Maintenance mode: on")
    scheduled = body.get("scheduled_switchover")
    if isinstance(scheduled, Mapping):
        text = "Switchover scheduled at: " + str(scheduled.get("at", ""))
        for key in ("from", "to"):
            if key in scheduled:
                text += f"\n{key:>24}: {scheduled[key]}"
        info.append(text)
    return info


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, title: str) -> str:
    """patronictl's print_output() for a member listing; the text ends with the newline click.echo() adds."""
    if fmt in ("json", "yaml", "yml"):
        elements = [{k: v for k, v in zip(columns, row, strict=True) if str(v)} for row in rows]
        return (json.dumps(elements) if fmt == "json" else yaml_text(elements)) + "\n"
    table = [list(row) for row in rows]
    if "Tags" in columns:  # tags as YAML: block style in `list`, flow style in tsv and (as patronictl) topology
        index = list(columns).index("Tags")
        for row in table:
            if row[index]:
                row[index] = yaml_text(row[index], fmt != "pretty").strip()
    if fmt == "tsv":
        return "".join("\t".join(map(str, line)) + "\n" for line in [list(columns), *table])
    # pretty, topology: the cluster name moves into the title
    return render_table(columns[1:], [row[1:] for row in table], ALIGNMENT, title) + "\n"


def render_members(info: ClusterInfo, extended: bool = False, fmt: str = "pretty") -> str:
    """Everything one cluster adds to the output of `list` (fmt pretty/tsv/json/yaml) or `topology`."""
    columns, rows = member_rows(info, extended, fmt)
    text = format_rows(columns, rows, fmt, f" Cluster: {info.name} ({info.sysid}) ")
    if fmt in ("pretty", "topology"):
        footer = service_info(info.body)
        if footer:
            text += " " + "\n ".join(footer) + "\n"
    return text

"""`history` (E11, D22) and `remove` (E18).

`remove` is the one command that writes the DCS, as patronictl's does: after the three confirmations it deletes
every key of the cluster with the DCS client's delete_cluster() (ctl/dcs_reader.py). It needs a DCS section in the
configuration (or -d/--dcs-url) and reads the cluster from the DCS, whether or not its members still run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from ctl.cluster_cmds import option_format
from ctl.config import CtlError
from ctl.discovery import CtlContext
from ctl.members import arg_cluster_name, leader_first, output_members, require_name, try_call
from ctl.render import ClusterInfo, yaml_text
from ctl.table import render_table

HISTORY_COLUMNS = ("TL", "LSN", "Reason", "Timestamp", "New Leader")
I_AM_AWARE = "Yes I am aware"


def history_lines(obj: CtlContext, info: ClusterInfo) -> list[Any]:
    """The /history key's lines: from the DCS keys when read there, else GET /history (the leader first)."""
    if info.dcs is not None:
        return [list(line) for line in info.dcs.history.lines] if info.dcs.history else []
    for member in leader_first(info):
        reply = try_call(obj, member, "GET", "history")
        if reply is not None and reply.status == 200:
            value = reply.json()
            return [line for line in value if isinstance(line, list)] if isinstance(value, list) else []
    raise CtlError("Can not find accessible cluster member")


def history_rows(lines: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """One row per line, padded to the five columns (old lines have no New Leader)."""
    width = len(HISTORY_COLUMNS)
    return [[*line[:width], *([""] * (width - len(line)))] for line in lines]


def format_history(rows: list[list[Any]], fmt: str) -> str:
    """Every column in every format, empty cells included (the yaml/json keys are the column names, W9b)."""
    if fmt in ("json", "yaml", "yml"):
        elements = [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in rows]
        return (json.dumps(elements) if fmt == "json" else yaml_text(elements)) + "\n"
    if fmt == "tsv":
        return "".join("\t".join(map(str, line)) + "\n" for line in [list(HISTORY_COLUMNS), *rows])
    return render_table(HISTORY_COLUMNS, rows, {"TL": "r", "LSN": "r"}) + "\n"


@click.command("history", help="Show the history of failovers/switchovers")
@arg_cluster_name
@option_format
@click.pass_obj
def history(obj: CtlContext, cluster_name: str | None, fmt: str) -> None:
    info = obj.fetch(require_name(cluster_name))
    click.echo(format_history(history_rows(history_lines(obj, info)), fmt), nl=False)


@click.command("remove", help="Remove cluster from DCS")
@click.argument("cluster_name")
@option_format
@click.pass_obj
def remove(obj: CtlContext, cluster_name: str, fmt: str) -> None:
    dcs = obj.dcs()
    if dcs is None:
        raise CtlError("remove needs the DCS: give a DCS section in the configuration file or -d/--dcs-url")
    info = obj.source().from_dcs(cluster_name)
    output_members(info, fmt)
    if click.prompt("Please confirm the cluster name to remove", type=str) != cluster_name:
        raise CtlError("Cluster names specified do not match")
    question = f'You are about to remove all information in DCS for {cluster_name}, please type: "{I_AM_AWARE}"'
    if click.prompt(question, type=str) != I_AM_AWARE:
        raise CtlError(f'You did not exactly type "{I_AM_AWARE}"')
    leader = info.dcs.leader_name if info.dcs is not None else None
    if leader:
        answer = click.prompt("This cluster currently is healthy. Please specify the leader name to continue")
        if answer != leader:
            raise CtlError("You did not specify the current leader of the cluster")
    dcs.delete_cluster(cluster_name)

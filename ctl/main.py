"""havenctl: the click group and its global options, as patronictl's (E1, E2)."""

from __future__ import annotations

import logging
import os

import click

from ctl.cluster_cmds import list_members, topology, version
from ctl.config import CONFIG_FILE_PATH, load_config
from ctl.config_cmds import edit_config, show_config
from ctl.discovery import CtlContext
from ctl.failover_cmds import failover, switchover
from ctl.history_remove_cmds import history, remove
from ctl.member_cmds import flush, reinit, reload, restart
from ctl.pause_cmds import pause, resume
from ctl.query_cmds import dsn, query


@click.group(context_settings={"help_option_names": ["--help"]})
@click.option(
    "--config-file", "-c", help="Configuration file", envvar="PATRONICTL_CONFIG_FILE", default=CONFIG_FILE_PATH
)
@click.option("--dcs-url", "--dcs", "-d", "dcs_url", help="The DCS connect url", envvar="DCS_URL")
@click.option("-k", "--insecure", is_flag=True, help="Allow connections to SSL sites without certs")
@click.pass_context
def ctl(ctx: click.Context, config_file: str, dcs_url: str | None, insecure: bool) -> None:
    """Command-line interface for interacting with a haven (Patroni-compatible) cluster."""
    level = "WARNING"
    for name in ("LOGLEVEL", "PATRONI_LOGLEVEL", "PATRONI_LOG_LEVEL"):
        level = os.environ.get(name, level)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(message)s", level=level.upper())
    obj = CtlContext(load_config(config_file, dcs_url), insecure=insecure)
    ctx.obj = obj
    ctx.call_on_close(obj.close)  # stops havenctl's DCS clients, if a command started one


for command in (
    dsn,
    edit_config,
    failover,
    flush,
    history,
    list_members,
    pause,
    query,
    reinit,
    reload,
    remove,
    restart,
    resume,
    show_config,
    switchover,
    topology,
    version,
):
    ctl.add_command(command)


def main() -> None:
    ctl(prog_name="havenctl")

"""havenctl: the click group and its global options, as patronictl's (E1, E2)."""

from __future__ import annotations

import logging
import os

import click

from ctl.cluster_cmds import list_members, topology, version
from ctl.config import CONFIG_FILE_PATH, load_config
from ctl.discovery import CtlContext


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
    ctx.obj = CtlContext(load_config(config_file, dcs_url), insecure=insecure)


ctl.add_command(list_members)
ctl.add_command(topology)
ctl.add_command(version)


def main() -> None:
    ctl(prog_name="havenctl")

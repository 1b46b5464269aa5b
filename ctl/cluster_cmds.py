"""`list`, `topology` and `version` (E12, E22, E23)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from ctl.discovery import CtlContext
from ctl.render import FORMATS, render_members, timestamp
from ctl.rest import RestError, endpoint_url

log = logging.getLogger("havenctl")

option_format = click.option(
    "--format", "-f", "fmt", help="Output format", default="pretty", type=click.Choice(list(FORMATS))
)
option_watch = click.option("-W", "w", is_flag=True, help="Auto update the screen every 2 seconds")
option_watchrefresh = click.option("-w", "--watch", type=float, help="Auto update the screen every X seconds")


def run_watching(
    w: bool,
    watch: float | None,
    show: Callable[[], None],
    *,
    sleep: Callable[[float], Any] = time.sleep,
    clear: Callable[[], None] = click.clear,
    max_refreshes: int | None = None,
) -> None:
    """Show once; with -W every 2 s, with -w N every N s, clearing the screen before each showing."""
    interval = 2.0 if w and not watch else watch
    if interval:
        clear()
    show()
    count = 0
    while interval and (max_refreshes is None or count < max_refreshes):
        sleep(interval)
        count += 1
        clear()
        show()


def _cluster_names(obj: CtlContext, names: tuple[str, ...]) -> list[str]:
    if names:
        return list(names)
    return [obj.scope] if obj.scope else []


def _show_members(obj: CtlContext, names: list[str], extended: bool, fmt: str, ts: bool) -> None:
    if ts:
        click.echo(timestamp(datetime.now()))
    for name in names:
        info = obj.source().fetch(name)
        click.echo(render_members(info, extended, fmt), nl=False)


@click.command("list", help="List the Patroni members for a given Patroni")
@click.argument("cluster_names", nargs=-1)
@click.option("--extended", "-e", help="Show some extra information", is_flag=True)
@click.option("--timestamp", "-t", "ts", help="Print timestamp", is_flag=True)
@option_format
@option_watch
@option_watchrefresh
@click.pass_obj
def list_members(
    obj: CtlContext, cluster_names: tuple[str, ...], extended: bool, ts: bool, fmt: str, w: bool, watch: float | None
) -> None:
    names = _cluster_names(obj, cluster_names)
    if not names:
        click.echo("Listing members: No cluster names were provided", err=True)
        return
    run_watching(w, watch, lambda: _show_members(obj, names, extended, fmt, ts))


@click.command("topology", help="Prints ASCII topology for given cluster")
@click.argument("cluster_names", nargs=-1)
@option_watch
@option_watchrefresh
@click.pass_obj
def topology(obj: CtlContext, cluster_names: tuple[str, ...], w: bool, watch: float | None) -> None:
    names = _cluster_names(obj, cluster_names)
    if not names:
        click.echo("Listing members: No cluster names were provided", err=True)
        return
    run_watching(w, watch, lambda: _show_members(obj, names, False, "topology", False))


def format_pg_version(version: int) -> str:
    """150004 -> 15.4; 90624 -> 9.6.24."""
    if version < 100000:
        return f"{version // 10000}.{version // 100 % 100}.{version % 100}"
    return f"{version // 10000}.{version % 100}"


@click.command("version", help="Output version of havenctl command or a running Patroni process")
@click.argument("cluster_name", required=False)
@click.argument("member_names", nargs=-1)
@click.pass_obj
def version(obj: CtlContext, cluster_name: str | None, member_names: tuple[str, ...]) -> None:
    from shared.version import __version__

    click.echo(f"havenctl version {__version__}")
    if not cluster_name:
        return
    click.echo("")
    info = obj.source().fetch(cluster_name)
    for member in info.members:
        name, api_url = member.get("name"), member.get("api_url")
        if not isinstance(api_url, str) or (member_names and name not in member_names):
            continue
        try:
            status = obj.client().get_json(endpoint_url(api_url, "patroni"))
            patroni_version = (status.get("patroni") or {}).get("version")
            pg = status.get("server_version")
            pg_text = f" PostgreSQL {format_pg_version(int(pg))}" if isinstance(pg, int) and pg else ""
            click.echo(f"{name}: Patroni {patroni_version}{pg_text}")
        except (RestError, AttributeError) as exc:
            click.echo(f"{name}: failed to get version: {exc}")

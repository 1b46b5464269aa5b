"""`edit-config` and `show-config` (E8, E20, D23-D25).

patronictl writes the edited configuration into the DCS with a compare-and-set on the version it read. havenctl
writes through a member's REST API (the leader first): PATCH /config with the difference, or PUT /config with the
whole configuration for --replace (or when a PATCH cannot express the edit, such as a key set to null). Just
before writing it reads the configuration again and stops with patronictl's "Config modification aborted due to
concurrent changes" when it moved since it was shown; a 409 from the member (its own compare-and-set lost) ends
the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import click

from ctl.config import CtlError
from ctl.config_edit import (
    apply_pairs,
    apply_yaml,
    colorize,
    config_delta,
    diff_lines,
    load_yaml_map,
    pager_command,
    patch_reaches,
    pg_pairs,
)
from ctl.discovery import CtlContext
from ctl.members import arg_cluster_name, dynamic_config, leader_first, option_force, require_name, try_call
from ctl.render import ClusterInfo, yaml_text

log = logging.getLogger("havenctl")

CONCURRENT_CHANGE = "Config modification aborted due to concurrent changes"


def read_file_or_stdin(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    try:
        with open(filename, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CtlError(f"Can not read {filename}: {exc.strerror}")


def find_editor() -> str:
    editor = os.environ.get("EDITOR")
    if not editor:
        for name in ("editor", "vi"):
            editor = shutil.which(name)
            if editor:
                log.debug("Setting fallback editor_cmd=%s", name)
                break
    if not editor:
        raise CtlError("EDITOR environment variable is not set. editor or vi are not available")
    return editor


def invoke_editor(before: str, cluster_name: str) -> tuple[str, dict[str, Any]]:
    """The configuration as YAML in a temporary file, opened in the editor; what the file holds afterwards."""
    editor = find_editor()
    prefix = "{}-config-".format(cluster_name.replace("/", "_"))
    fd, path = tempfile.mkstemp(suffix=".yaml", prefix=prefix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(before)
        code = subprocess.call([editor, path])
        if code:
            raise CtlError(f"Editor exited with return code {code}")
        with open(path, encoding="utf-8") as f:
            after = f.read()
    finally:
        os.unlink(path)
    return after, load_yaml_map(after, "The edited configuration")


def show_diff(before: str, after: str) -> None:
    """The unified diff: through a pager on a terminal, plain otherwise."""
    lines = diff_lines(before, after)
    if not sys.stdout.isatty():
        for line in lines:
            click.echo(line)
        return
    text = "".join(colorize(line) + "\n" for line in lines)
    pager = subprocess.Popen(pager_command(), stdin=subprocess.PIPE)
    try:
        assert pager.stdin is not None
        pager.stdin.write(text.encode("utf-8"))
        pager.stdin.close()
    except BrokenPipeError:  # the pager was closed before reading everything
        pass
    pager.wait()


def write_config(
    obj: CtlContext, info: ClusterInfo, shown: dict[str, Any], changed: dict[str, Any], replace: bool
) -> None:
    fresh = obj.fetch(info.name)
    if dynamic_config(obj, fresh) != shown:
        raise CtlError(CONCURRENT_CHANGE)
    delta = config_delta(shown, changed)
    method, body = ("PATCH", delta) if not replace and patch_reaches(shown, delta, changed) else ("PUT", changed)
    for member in leader_first(fresh):
        reply = try_call(obj, member, method, "config", body)
        if reply is None:
            continue
        if reply.status == 200:
            return
        if reply.status == 409:
            raise CtlError(CONCURRENT_CHANGE)
        raise CtlError(f"Failed: {method} /config on member {member.name}, status code={reply.status}, ({reply.text})")
    raise CtlError("Can not find accessible cluster member")


@click.command("edit-config", help="Edit cluster configuration")
@arg_cluster_name
@click.option("--quiet", "-q", is_flag=True, help="Do not show changes")
@click.option(
    "--set", "-s", "kvpairs", multiple=True, help="Set specific configuration value. Can be specified multiple times"
)
@click.option(
    "--pg",
    "-p",
    "pgkvpairs",
    multiple=True,
    help="Set specific PostgreSQL parameter value. Shorthand for -s postgresql.parameters. "
    "Can be specified multiple times",
)
@click.option("--apply", "apply_filename", help="Apply configuration from file. Use - for stdin.")
@click.option(
    "--replace",
    "replace_filename",
    help="Apply configuration from file, replacing existing configuration. Use - for stdin.",
)
@option_force
@click.pass_obj
def edit_config(
    obj: CtlContext,
    cluster_name: str | None,
    quiet: bool,
    kvpairs: tuple[str, ...],
    pgkvpairs: tuple[str, ...],
    apply_filename: str | None,
    replace_filename: str | None,
    force: bool,
) -> None:
    name = require_name(cluster_name)
    info = obj.fetch(name)
    config = dynamic_config(obj, info)
    if config is None:
        raise CtlError(f"The config key does not exist in the cluster {name}")
    before = yaml_text(config)
    after: str | None = None  # set once some change was asked for
    changed = config
    if replace_filename:
        changed = apply_yaml({}, read_file_or_stdin(replace_filename), replace_filename)
        after = yaml_text(changed)
    if apply_filename:
        changed = apply_yaml(changed, read_file_or_stdin(apply_filename), apply_filename)
        after = yaml_text(changed)
    if kvpairs or pgkvpairs:
        changed = apply_pairs(changed, [*kvpairs, *pg_pairs(pgkvpairs)])
        after = yaml_text(changed)
    if after is None:
        after, changed = invoke_editor(before, name)

    if changed == config:
        if not quiet:
            click.echo("Not changed")
        return
    if not quiet:
        show_diff(before, after)
    if "-" in (apply_filename, replace_filename) and not force:
        click.echo("Use --force option to apply changes")
        return
    if force or click.confirm("Apply these changes?"):
        write_config(obj, info, config, changed, replace=bool(replace_filename))
        click.echo("Configuration changed")


@click.command("show-config", help="Show cluster configuration")
@arg_cluster_name
@click.pass_obj
def show_config(obj: CtlContext, cluster_name: str | None) -> None:
    info = obj.fetch(require_name(cluster_name))
    config = dynamic_config(obj, info)
    if config is not None:
        click.echo(yaml_text(config))

"""The pure parts of `edit-config` (E8): -s/-p pairs, --apply/--replace files, the unified diff, the pager to show it
with, and the PATCH /config body that turns the stored configuration into the edited one."""

from __future__ import annotations

import copy
import difflib
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import click
import yaml

from ctl.config import CtlError

PG_PREFIX = "postgresql.parameters."


def patch_config(config: dict[str, Any], data: Mapping[str, Any]) -> bool:
    """Patroni's merge (PATCH /config, --apply): maps merge recursively, None removes a key, and a value whose
    text equals the old one's is left alone. Returns whether anything changed."""
    changed = False
    for name, value in data.items():
        if value is None:
            if config.pop(name, None) is not None:
                changed = True
        elif name in config:
            if isinstance(value, Mapping):
                if isinstance(config[name], dict):
                    changed = patch_config(config[name], value) or changed
                else:
                    config[name] = copy.deepcopy(dict(value))
                    changed = True
            elif str(config[name]) != str(value):
                config[name] = copy.deepcopy(value)
                changed = True
        else:
            config[name] = copy.deepcopy(value)
            changed = True
    return changed


def _set_path(config: dict[str, Any], path: list[str], value: Any, prefix: tuple[str, ...] = ()) -> None:
    if prefix == ("postgresql", "parameters"):  # GUC names may hold dots (auto_explain.log_min_duration)
        path = [".".join(path)]
    key = path[0]
    if len(path) == 1:
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
        return
    if not isinstance(config.get(key), dict):
        config[key] = {}
    _set_path(config[key], path[1:], value, (*prefix, key))
    if config[key] == {}:
        del config[key]


def apply_pairs(data: Mapping[str, Any], pairs: list[str]) -> dict[str, Any]:
    """-s path.to.key=<YAML value> (null removes the key); -p x=y is -s postgresql.parameters.x=y."""
    changed = copy.deepcopy(dict(data))
    for pair in pairs:
        if not pair or "=" not in pair:
            raise CtlError(f"Invalid parameter setting {pair}")
        key_path, text = pair.split("=", 1)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CtlError(f"Invalid parameter setting {pair}: {exc}")
        _set_path(changed, key_path.strip().split("."), value)
    return changed


def pg_pairs(pairs: tuple[str, ...]) -> list[str]:
    return [PG_PREFIX + pair.lstrip() for pair in pairs]


def load_yaml_map(text: str, source: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CtlError(f"{source} is not valid YAML: {exc}")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CtlError(f"{source} must contain a YAML map")
    return value


def apply_yaml(data: Mapping[str, Any], text: str, source: str) -> dict[str, Any]:
    """--apply FILE merges the file as Patroni's patch_config does; --replace FILE applies it to {}."""
    changed = copy.deepcopy(dict(data))
    patch_config(changed, load_yaml_map(text, source))
    return changed


def config_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH /config body that turns `old` into `new`: removed keys as null, changed maps recursively."""
    delta: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            delta[key] = value
        elif isinstance(value, Mapping) and isinstance(old[key], Mapping):
            sub = config_delta(old[key], value)
            if sub:
                delta[key] = sub
        elif value != old[key] or type(value) is not type(old[key]):
            delta[key] = value
    return delta


def patch_reaches(old: Mapping[str, Any], delta: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether PATCH /config with `delta` gives exactly `new` (it cannot write a null value, nor change 10 into
    "10"): when not, the whole configuration is written with PUT /config instead."""
    result = copy.deepcopy(dict(old))
    patch_config(result, delta)
    return result == dict(new) and _same_types(result, new)


def _same_types(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return all(_same_types(a[k], b[k]) for k in a if k in b)
    if isinstance(a, list) and isinstance(b, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=False))
    return type(a) is type(b)


def diff_lines(before: str, after: str) -> list[str]:
    """The unified diff patronictl shows: `--- `, `+++ ` and the hunks, without the line ends."""

    def listify(text: str) -> list[str]:
        return [line + "\n" for line in text.rstrip("\n").split("\n")]

    return [line.rstrip("\n") for line in difflib.unified_diff(listify(before), listify(after))]


def colorize(line: str) -> str:
    if line.startswith(("---", "+++")):
        return click.style(line, bold=True)
    if line.startswith("@@"):
        return click.style(line, fg="cyan")
    if line.startswith("-"):
        return click.style(line, fg="red")
    if line.startswith("+"):
        return click.style(line, fg="green")
    return line


def pager_command(
    environ: Mapping[str, str] | None = None, which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """PAGER if it names a program that exists, else less (with colours, quitting when the diff fits), else more."""
    env = os.environ if environ is None else environ
    for name in (env.get("PAGER"), "less", "more"):
        if name and which(name):
            if os.path.basename(name) == "less" and not env.get("LESS"):
                return [name, "-FRSX"]
            return [name]
    raise CtlError(
        'No pager could be found. Either set PAGER environment variable with your pager or install either "less" '
        'or "more" in the host.'
    )

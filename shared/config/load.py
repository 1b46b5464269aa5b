"""Loading a node's configuration: YAML file or directory, PATRONI_* environment, defaults (F1-F5)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shared.config import defaults
from shared.config.env import from_environment
from shared.config.schema import DCS_SECTIONS, validate_node
from shared.config.validation import Problem, split_host_port
from shared.model.member import LocalTags, filter_tags, parse_int


class ConfigError(Exception):
    """The configuration cannot be used; `problems` names each key and rule."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` wins; maps merge recursively; a None value in override removes the key."""
    result = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open() as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(str(path), f"is not valid YAML: {exc}")])
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot be read: {exc.strerror}")])
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(str(path), "must contain a YAML map at the top level")])
    return data


def read_sources(path: str | None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """File or directory (every *.yml/*.yaml in sorted order, later files win), then the environment."""
    env = os.environ if environ is None else environ
    if path is None or not os.path.exists(path):
        if path is not None and "PATRONI_CONFIGURATION" not in env and not any(k.startswith("PATRONI_") for k in env):
            raise ConfigError([Problem(path, "does not exist")])
        whole = env.get("PATRONI_CONFIGURATION") or env.get("PATRONI_CONFIG_VARIABLE")
        if whole:  # the whole configuration in one variable; other variables are ignored (F53)
            data = yaml.safe_load(whole)
            if not isinstance(data, dict):
                raise ConfigError([Problem("PATRONI_CONFIGURATION", "must contain a YAML map")])
            return data
        return from_environment(env)
    p = Path(path)
    if p.is_dir():
        merged: dict[str, Any] = {}
        for f in sorted(p.iterdir()):
            if f.suffix in (".yml", ".yaml") and f.is_file():
                merged = deep_merge(merged, _read_yaml(f))
        data = merged
    else:
        data = _read_yaml(p)
    return deep_merge(data, from_environment(env))


class NodeConfig:
    """A node's local configuration: the raw map plus typed accessors for what programs need."""

    def __init__(self, data: Mapping[str, Any], path: str | None = None) -> None:
        self.data: dict[str, Any] = dict(data)
        self.path = path

    @classmethod
    def load(cls, path: str | None, environ: Mapping[str, str] | None = None, *, validate: bool = True) -> NodeConfig:
        data = read_sources(path, environ)
        if validate:
            errors = [p for p in validate_node(data) if p.severity == "error"]
            if errors:
                raise ConfigError(errors)
        return cls(data, path)

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def name(self) -> str:
        return str(self.data.get("name", ""))

    @property
    def scope(self) -> str:
        return str(self.data.get("scope", ""))

    @property
    def namespace(self) -> str:
        ns = str(self.data.get("namespace") or defaults.DEFAULT_NAMESPACE)
        return "/" + ns.strip("/")

    @property
    def dcs_type(self) -> str | None:
        return next((k for k in DCS_SECTIONS if k in self.data), None)

    @property
    def dcs(self) -> dict[str, Any]:
        return self.section(self.dcs_type) if self.dcs_type else {}

    @property
    def haven(self) -> dict[str, Any]:
        return self.section("haven")

    @property
    def run_dir(self) -> str:
        value = self.haven.get("run_dir")
        if value:
            return str(value)
        return os.path.join(defaults.DEFAULT_RUN_DIR_ROOT, f"{self.scope}-{self.name}")

    @property
    def log_dir(self) -> str:
        return str(self.haven.get("log_dir") or self.run_dir)

    @property
    def postgresql(self) -> dict[str, Any]:
        return self.section("postgresql")

    @property
    def restapi(self) -> dict[str, Any]:
        return self.section("restapi")

    @property
    def bootstrap(self) -> dict[str, Any]:
        return self.section("bootstrap")

    @property
    def bootstrap_dcs(self) -> dict[str, Any]:
        value = self.bootstrap.get("dcs")
        return value if isinstance(value, dict) else {}

    @property
    def tags(self) -> LocalTags:
        return LocalTags(self.section("tags"))

    @property
    def published_tags(self) -> dict[str, Any]:
        return filter_tags(self.section("tags"))

    @property
    def watchdog(self) -> dict[str, Any]:
        return self.section("watchdog")

    @property
    def api_url(self) -> str:
        scheme = "https" if self.restapi.get("certfile") else "http"
        return f"{scheme}://{self.restapi.get('connect_address')}/patroni"

    @property
    def conn_url(self) -> str:
        return f"postgres://{self.postgresql.get('connect_address')}/postgres"

    @property
    def restapi_listen(self) -> tuple[str, int]:
        host, port = split_host_port(str(self.restapi.get("listen")), defaults.DEFAULT_RESTAPI_PORT)
        return (host or "0.0.0.0"), port

    @property
    def pg_listen(self) -> tuple[str, int]:
        host, port = split_host_port(str(self.postgresql.get("listen")), defaults.DEFAULT_PG_PORT)
        return host, port

    @property
    def pg_ctl_timeout(self) -> int:
        return parse_int(self.postgresql.get("pg_ctl_timeout")) or defaults.DEFAULT_PG_CTL_TIMEOUT

"""The controller's static settings, read once from the node configuration (pure: no I/O)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.config import NodeConfig
from shared.config.defaults import DEFAULT_PG_PORT
from shared.config.validation import split_host_port
from shared.model.member import parse_bool

# bin_name keys (C58); the YAML key for pg_controldata is "pgcontroldata".
_BINARIES = (
    "pg_ctl",
    "initdb",
    "pg_controldata",
    "pg_basebackup",
    "postgres",
    "pg_isready",
    "pg_rewind",
    "pg_waldump",
)
_WILDCARDS = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def _map(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _lines(value: Any) -> list[str] | None:
    if isinstance(value, list):
        return [str(line) for line in value]
    return None


def _flag(value: Any) -> bool | None:
    return None if value is None else parse_bool(value)


def _auth(section: Mapping[str, Any], user_type: str) -> dict[str, str]:
    entry = _map(_map(section.get("authentication")).get(user_type))
    return {str(k): str(v) for k, v in entry.items() if v is not None}


# D31: read once at start; a reload that changes them says so in the log and keeps them
NEEDS_NODE_RESTART = (
    "name",
    "scope",
    "data_dir",
    "config_dir",
    "run_dir",
    "log_dir",
    "pgpass",
    "listen_addresses",
    "port",
    "local_host",
    "binaries",
    "superuser",
    "replication",
    "rewind",
)


@dataclass(frozen=True)
class Settings:
    name: str
    scope: str
    data_dir: str
    config_dir: str
    run_dir: str
    log_dir: str
    pgpass: str
    listen_addresses: str
    port: int
    local_host: str
    pg_ctl_timeout: float
    binaries: Mapping[str, str]
    superuser: Mapping[str, str]
    replication: Mapping[str, str]
    rewind: Mapping[str, str]
    custom_conf: str | None = None
    local_parameters: Mapping[str, Any] = field(default_factory=dict)
    local_pg_hba: list[str] | None = None
    local_pg_ident: list[str] | None = None
    bootstrap_pg_hba: list[str] | None = None
    local_recovery_conf: Mapping[str, Any] = field(default_factory=dict)
    basebackup: Any = None
    initdb: Any = None
    post_bootstrap: str | None = None
    bootstrap_dcs: Mapping[str, Any] = field(default_factory=dict)
    local_use_slots: bool | None = None  # postgresql.use_slots: wins over the dynamic value (C29)
    local_use_pg_rewind: bool | None = None  # postgresql.use_pg_rewind: wins over the dynamic value (C23)
    remove_data_directory_on_rewind_failure: bool = False  # C24
    remove_data_directory_on_diverged_timelines: bool = False  # C25

    @classmethod
    def from_config(cls, config: NodeConfig, run_dir: str) -> Settings:
        pg = config.postgresql
        try:
            host, port = split_host_port(str(pg.get("listen") or ""), DEFAULT_PG_PORT)
        except ValueError:
            host, port = "127.0.0.1", DEFAULT_PG_PORT
        first = host.split(",")[0].strip()
        data_dir = os.path.abspath(str(pg.get("data_dir")))
        bin_dir = str(pg.get("bin_dir") or "")
        names = _map(pg.get("bin_name"))
        if "pgcontroldata" in names and "pg_controldata" not in names:
            names["pg_controldata"] = names["pgcontroldata"]
        binaries = {
            b: os.path.join(bin_dir, str(names.get(b) or b)) if bin_dir else str(names.get(b) or b) for b in _BINARIES
        }
        bootstrap = config.bootstrap
        post = bootstrap.get("post_bootstrap") or bootstrap.get("post_init")
        return cls(
            name=config.name,
            scope=config.scope,
            data_dir=data_dir,
            config_dir=os.path.abspath(str(pg.get("config_dir") or data_dir)),
            run_dir=os.path.abspath(run_dir),
            log_dir=os.path.abspath(str(config.haven.get("log_dir") or run_dir)),
            pgpass=os.path.abspath(os.path.expanduser(str(pg.get("pgpass") or os.path.join(run_dir, "pgpass")))),
            listen_addresses=host or "localhost",
            port=port,
            local_host=_WILDCARDS.get(first, first),
            pg_ctl_timeout=float(config.pg_ctl_timeout),
            binaries=binaries,
            superuser={"username": "postgres", **_auth(pg, "superuser")},
            replication=_auth(pg, "replication"),
            rewind=_auth(pg, "rewind"),
            custom_conf=str(pg["custom_conf"]) if pg.get("custom_conf") else None,
            local_parameters=_map(pg.get("parameters")),
            local_pg_hba=_lines(pg.get("pg_hba")),
            local_pg_ident=_lines(pg.get("pg_ident")),
            bootstrap_pg_hba=_lines(bootstrap.get("pg_hba")),
            local_recovery_conf=_map(pg.get("recovery_conf")),
            basebackup=pg.get("basebackup"),
            initdb=bootstrap.get("initdb"),
            post_bootstrap=str(post) if post else None,
            bootstrap_dcs=config.bootstrap_dcs,
            local_use_slots=_flag(pg.get("use_slots")),
            local_use_pg_rewind=_flag(pg.get("use_pg_rewind")),
            remove_data_directory_on_rewind_failure=bool(_flag(pg.get("remove_data_directory_on_rewind_failure"))),
            remove_data_directory_on_diverged_timelines=bool(
                _flag(pg.get("remove_data_directory_on_diverged_timelines"))
            ),
        )

    def binary(self, name: str) -> str:
        return self.binaries.get(name, name)

    def use_slots(self, dynamic_pg: Mapping[str, Any]) -> bool:
        """postgresql.use_slots: local, else dynamic, else on (C29)."""
        if self.local_use_slots is not None:
            return self.local_use_slots
        value = _flag(dynamic_pg.get("use_slots"))
        return True if value is None else value

    def use_pg_rewind(self, dynamic_pg: Mapping[str, Any]) -> bool:
        """postgresql.use_pg_rewind: local, else dynamic, else off (C23)."""
        if self.local_use_pg_rewind is not None:
            return self.local_use_pg_rewind
        return bool(_flag(dynamic_pg.get("use_pg_rewind")))

    @property
    def rewind_user(self) -> Mapping[str, str]:
        """The credentials pg_rewind and the slot copy use on the leader: the rewind user when configured (J9),
        else the superuser."""
        return self.rewind if self.rewind.get("username") else self.superuser

    def remote_conn_params(self, upstream_host: str, upstream_port: int, user: Mapping[str, str]) -> dict[str, Any]:
        """libpq keywords for a connection to another member as `user`; the password comes from the pgpass file."""
        params: dict[str, Any] = {"host": upstream_host, "port": upstream_port, "dbname": "postgres"}
        if user.get("username"):
            params["user"] = user["username"]
        params.update({k: v for k, v in user.items() if k in _LIBPQ_AUTH and k != "password"})
        params["passfile"] = self.pgpass
        return params

    @property
    def conf_path(self) -> str:
        return os.path.join(self.config_dir, "postgresql.conf")

    @property
    def base_conf_path(self) -> str:
        return self.custom_conf or os.path.join(self.config_dir, "postgresql.base.conf")

    @property
    def hba_path(self) -> str:
        return os.path.join(self.config_dir, "pg_hba.conf")

    @property
    def ident_path(self) -> str:
        return os.path.join(self.config_dir, "pg_ident.conf")

    @property
    def pid_path(self) -> str:
        return os.path.join(self.data_dir, "postmaster.pid")

    @property
    def log_file(self) -> str:
        return os.path.join(self.log_dir, "postgresql.log")

    @property
    def dynamic_json_path(self) -> str:
        return os.path.join(self.data_dir, "patroni.dynamic.json")

    @property
    def standby_signal_path(self) -> str:
        return os.path.join(self.data_dir, "standby.signal")

    def local_conn_params(self, user: Mapping[str, str] | None = None) -> dict[str, Any]:
        """libpq keywords for a local connection (C57: TCP to the first listen address)."""
        auth = dict(self.superuser if user is None else user)
        params: dict[str, Any] = {"host": self.local_host, "port": self.port, "dbname": "postgres"}
        if auth.get("username"):
            params["user"] = auth.pop("username")
        params.update({k: v for k, v in auth.items() if k in _LIBPQ_AUTH})
        return params

    def superuser_url(self) -> str:
        """The superuser's connection URL without a password (C4: the password comes from PGPASSFILE)."""
        host = f"[{self.local_host}]" if ":" in self.local_host else self.local_host
        return f"postgres://{self.superuser.get('username', 'postgres')}@{host}:{self.port}/postgres"


_LIBPQ_AUTH = frozenset(
    {
        "password",
        "sslmode",
        "sslkey",
        "sslpassword",
        "sslcert",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "gssencmode",
        "channel_binding",
    }
)

"""PATRONI_* environment variables, read once at start (F53-F67). Env overrides the file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from shared.model.member import parse_bool, parse_int

PREFIX = "PATRONI_"
AUTH_PARAMETERS = (
    "username",
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
)

_SECTION_PARAMS: dict[str, tuple[str, ...]] = {
    "restapi": (
        "listen",
        "connect_address",
        "certfile",
        "keyfile",
        "keyfile_password",
        "cafile",
        "ciphers",
        "verify_client",
        "http_extra_headers",
        "https_extra_headers",
        "allowlist",
        "allowlist_include_members",
        "request_queue_size",
    ),
    "ctl": ("insecure", "cacert", "certfile", "keyfile", "keyfile_password"),
    "postgresql": ("listen", "connect_address", "proxy_address", "config_dir", "data_dir", "pgpass", "bin_dir"),
    "log": (
        "level",
        "traceback_level",
        "format",
        "dateformat",
        "max_queue_size",
        "dir",
        "file_size",
        "file_num",
        "loggers",
    ),
    "raft": ("data_dir", "self_addr", "partner_addrs", "password", "bind_addr"),
    "haven": ("run_dir", "log_dir", "user", "api_user", "postgres_user"),
}
_BOOLS = {("restapi", "allowlist_include_members"), ("ctl", "insecure")}
_INTS = {("restapi", "request_queue_size"), ("log", "max_queue_size"), ("log", "file_size"), ("log", "file_num")}
_LISTS = {("raft", "partner_addrs"), ("restapi", "allowlist")}
_DICTS = {("restapi", "http_extra_headers"), ("restapi", "https_extra_headers"), ("log", "loggers")}

_BINARIES = {  # env suffix -> bin_name key (the yaml key for pg_controldata is "pgcontroldata")
    "PG_CTL": "pg_ctl",
    "INITDB": "initdb",
    "PG_CONTROLDATA": "pg_controldata",
    "PG_BASEBACKUP": "pg_basebackup",
    "POSTGRES": "postgres",
    "IS_READY": "pg_isready",
    "PG_ISREADY": "pg_isready",
    "PG_REWIND": "pg_rewind",
}

_DCS_SUFFIXES = {
    "HOST",
    "HOSTS",
    "PORT",
    "USE_PROXIES",
    "PROTOCOL",
    "SRV",
    "SRV_SUFFIX",
    "URL",
    "PROXY",
    "CACERT",
    "CERT",
    "KEY",
    "VERIFY",
    "TOKEN",
    "CHECKS",
    "DC",
    "CONSISTENCY",
    "REGISTER_SERVICE",
    "SERVICE_CHECK_INTERVAL",
    "SERVICE_CHECK_TLS_SERVER_NAME",
    "SERVICE_TAGS",
    "NAMESPACE",
    "CONTEXT",
    "USE_ENDPOINTS",
    "SCOPE_LABEL",
    "ROLE_LABEL",
    "POD_IP",
    "PORTS",
    "LABELS",
    "BYPASS_API_SERVICE",
    "RETRIABLE_HTTP_CODES",
    "KEY_PASSWORD",
    "USE_SSL",
    "SET_ACLS",
    "LEADER_LABEL_VALUE",
    "FOLLOWER_LABEL_VALUE",
    "STANDBY_LEADER_LABEL_VALUE",
    "TMP_ROLE_LABEL",
    "POLL_INTERVAL",
    "GROUP",
    "DATABASE",
}
_DCS_NAMES = {"ETCD", "ETCD3", "CONSUL", "ZOOKEEPER", "EXHIBITOR", "KUBERNETES", "CITUS"}


def parse_list(value: str) -> Any:
    """ "'h1:p1','h2:p2'" or a YAML list."""
    text = value.strip()
    if not (text.startswith("-") or "[" in text):
        text = f"[{text}]"
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def parse_dict(value: str) -> Any:
    text = value.strip()
    if not text.startswith("{"):
        text = "{" + text + "}"
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _convert(section: str, key: str, value: str) -> Any:
    if (section, key) in _BOOLS:
        return parse_bool(value)
    if (section, key) in _INTS:
        return parse_int(value)
    if (section, key) in _LISTS:
        return parse_list(value)
    if (section, key) in _DICTS:
        return parse_dict(value)
    return value


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The configuration carried by PATRONI_* variables (PATRONI_CONFIGURATION is handled by the loader)."""
    ret: dict[str, Any] = {}
    used: set[str] = set()

    def take(name: str) -> str | None:
        key = PREFIX + name.upper()
        value = environ.get(key)
        if value:
            used.add(key)
            return value
        return None

    for param in ("name", "namespace", "scope"):
        if (value := take(param)) is not None:
            ret[param] = value

    # legacy log variables (G13)
    for old, new in (("LOGLEVEL", "level"), ("LOGFORMAT", "format")):
        if (value := take(old)) is not None:
            ret.setdefault("log", {})[new] = value

    for section, params in _SECTION_PARAMS.items():
        for param in params:
            if (value := take(f"{section}_{param}")) is not None:
                typed = _convert(section, param, value)
                if typed is not None:
                    ret.setdefault(section, {})[param] = typed

    for suffix, binary in _BINARIES.items():
        if (value := take(f"POSTGRESQL_BIN_{suffix}")) is not None:
            ret.setdefault("postgresql", {}).setdefault("bin_name", {})[binary] = value

    for user_type in ("superuser", "replication", "rewind"):
        entry = {p: v for p in AUTH_PARAMETERS if (v := take(f"{user_type}_{p}")) is not None}
        if entry:
            ret.setdefault("postgresql", {}).setdefault("authentication", {})[user_type] = entry
    for section in ("restapi", "ctl"):
        entry = {p: v for p in ("username", "password") if (v := take(f"{section}_{p}")) is not None}
        if entry:
            ret.setdefault(section, {})["authentication"] = entry

    for var, value in environ.items():
        if not var.startswith(PREFIX) or var in used or not value:
            continue
        name, _, suffix = var[len(PREFIX) :].partition("_")
        if name not in _DCS_NAMES or suffix not in _DCS_SUFFIXES:
            continue
        converted: Any = value
        if suffix in ("PORT", "POLL_INTERVAL", "GROUP"):
            converted = parse_int(value)
        elif suffix in ("HOSTS", "PORTS", "CHECKS", "SERVICE_TAGS", "RETRIABLE_HTTP_CODES"):
            converted = parse_list(value)
        elif suffix in ("LABELS", "SET_ACLS"):
            converted = parse_dict(value)
        elif suffix in ("USE_PROXIES", "REGISTER_SERVICE", "USE_ENDPOINTS", "BYPASS_API_SERVICE", "VERIFY", "USE_SSL"):
            converted = parse_bool(value)
        if converted is not None:
            ret.setdefault(name.lower(), {})[suffix.lower()] = converted
    for dcs in ("etcd", "etcd3"):
        if dcs in ret:
            for p in ("username", "password"):
                if (value := take(f"{dcs}_{p}")) is not None:
                    ret[dcs][p] = value
    # documented without the prefix; upstream reads only PATRONI_KUBERNETES_RETRIABLE_HTTP_CODES (F61)
    if (value := take("RETRIABLE_HTTP_CODES")) is not None and (codes := parse_list(value)):
        ret.setdefault("kubernetes", {}).setdefault("retriable_http_codes", codes)
    return ret

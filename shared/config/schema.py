"""The configuration schema: Patroni's YAML keys (features.md group F) plus our own `haven:` section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.config.validation import (
    AnyValue,
    Bool,
    Either,
    HostPort,
    Int,
    ListOf,
    MapOf,
    Problem,
    Problems,
    Section,
    Str,
    at_most_one,
    join,
    one_of_required,
)
from shared.model.member import parse_int

DCS_SECTIONS = ("consul", "etcd", "etcd3", "exhibitor", "kubernetes", "raft", "zookeeper")
WATCHDOG_MODES = ("off", "automatic", "required", "auto", "require", "disable", "disabled")
WATCHDOG_DRIVERS = ("default", "software")  # software: watchdogd fences PostgreSQL itself (no device)

_str = Str()
_str_list = ListOf(_str, allow_string=True)
_hosts = Either([_str, ListOf(_str)], "a 'host:port,...' string or a list")


def _timing_rule(value: Mapping[str, Any], path: str, problems: Problems) -> None:
    """loop_wait + 2*retry_timeout <= ttl (A6, F13)."""
    ttl = parse_int(value.get("ttl", 30))
    loop_wait = parse_int(value.get("loop_wait", 10))
    retry_timeout = parse_int(value.get("retry_timeout", 10))
    if ttl is None or loop_wait is None or retry_timeout is None:
        return
    if loop_wait + 2 * retry_timeout > ttl:
        problems.append(
            Problem(
                path or "<dynamic configuration>",
                f'violates the rule "loop_wait + 2*retry_timeout <= ttl": '
                f"{loop_wait} + 2*{retry_timeout} = {loop_wait + 2 * retry_timeout} > {ttl}",
            )
        )


_auth = Section(
    {
        k: _str
        for k in (
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
    }
)

_slot = Section(
    {"type": Str(choices=("physical", "logical")), "database": _str, "plugin": _str},
    rules=[],
)

_dynamic_postgresql = Section(
    {
        "use_pg_rewind": Bool(),
        "use_slots": Bool(),
        "recovery_conf": MapOf(),
        "parameters": MapOf(),
        "pg_hba": ListOf(_str),
        "pg_ident": ListOf(_str),
    }
)

DYNAMIC = Section(
    {
        "ttl": Int(minimum=1),
        "loop_wait": Int(minimum=1),
        "retry_timeout": Int(minimum=1),
        "maximum_lag_on_failover": Int(minimum=0),
        "maximum_lag_on_syncnode": Int(),
        "max_timelines_history": Int(minimum=0),
        "primary_start_timeout": Int(minimum=0),
        "master_start_timeout": Int(minimum=0),
        "primary_stop_timeout": Int(),
        "master_stop_timeout": Int(),
        "synchronous_mode": Either([Bool(), Str(choices=("quorum",))], "a boolean or 'quorum'"),
        "synchronous_mode_strict": Bool(),
        "synchronous_node_count": Int(minimum=1),
        "failsafe_mode": Bool(),
        "check_timeline": Bool(),
        "pause": Bool(),
        "postgresql": _dynamic_postgresql,
        "standby_cluster": Section(
            {
                "host": _hosts,
                "port": Either([Int(minimum=1, maximum=65535), _str], "a port"),
                "primary_slot_name": _str,
                "create_replica_methods": ListOf(_str),
                "restore_command": _str,
                "archive_cleanup_command": _str,
                "recovery_min_apply_delay": Either([Int(), _str], "a delay"),
            }
        ),
        "slots": MapOf(_slot),
        "ignore_slots": ListOf(MapOf()),
    },
    rules=[_timing_rule],
)


def _validate_ttl_minimums(value: Mapping[str, Any], path: str, problems: Problems) -> None:
    from shared.config.defaults import MIN_LOOP_WAIT, MIN_RETRY_TIMEOUT, MIN_TTL

    for key, minimum in (("ttl", MIN_TTL), ("loop_wait", MIN_LOOP_WAIT), ("retry_timeout", MIN_RETRY_TIMEOUT)):
        number = parse_int(value.get(key))
        if number is not None and number < minimum:
            problems.append(Problem(join(path, key), f"must be at least {minimum}, got {number}"))


DYNAMIC_WITH_MINIMUMS = Section(DYNAMIC.fields, rules=[_timing_rule, _validate_ttl_minimums])

_bin_name = Section(
    {
        k: _str
        for k in (
            "pg_ctl",
            "initdb",
            "pgcontroldata",
            "pg_controldata",
            "pg_basebackup",
            "postgres",
            "pg_isready",
            "pg_rewind",
        )
    }
)

POSTGRESQL = Section(
    {
        "listen": HostPort(default_port=5432),
        "connect_address": HostPort(connect=True),
        "proxy_address": HostPort(connect=True),
        "data_dir": Str(nonempty=True),
        "config_dir": _str,
        "bin_dir": _str,
        "bin_name": _bin_name,
        "custom_conf": _str,
        "pgpass": _str,
        "authentication": Section({"superuser": _auth, "replication": _auth, "rewind": _auth}),
        "parameters": MapOf(),
        "recovery_conf": MapOf(),
        "pg_hba": ListOf(_str),
        "pg_ident": ListOf(_str),
        "pg_ctl_timeout": Int(minimum=1),
        "use_pg_rewind": Bool(),
        "use_slots": Bool(),
        "use_unix_socket": Bool(),
        "use_unix_socket_repl": Bool(),
        "remove_data_directory_on_rewind_failure": Bool(),
        "remove_data_directory_on_diverged_timelines": Bool(),
        "create_replica_methods": ListOf(_str),
        "create_replica_method": ListOf(_str),
        "basebackup": Either([MapOf(), ListOf(AnyValue())], "a map or a list"),
        "callbacks": Section({k: _str for k in ("on_reload", "on_restart", "on_role_change", "on_start", "on_stop")}),
        "pre_promote": _str,
        "before_stop": _str,
    },
    required=("data_dir", "listen", "connect_address"),
)

RESTAPI = Section(
    {
        "listen": HostPort(),
        "connect_address": HostPort(connect=True),
        "authentication": Section({"username": _str, "password": _str}),
        "certfile": _str,
        "keyfile": _str,
        "keyfile_password": _str,
        "cafile": _str,
        "ciphers": _str,
        "verify_client": Str(choices=("none", "optional", "required")),
        "allowlist": ListOf(_str),
        "allowlist_include_members": Bool(),
        "http_extra_headers": MapOf(_str),
        "https_extra_headers": MapOf(_str),
        "request_queue_size": Int(minimum=0),
    },
    required=("listen", "connect_address"),
)

CTL = Section(
    {
        "authentication": Section({"username": _str, "password": _str}),
        "insecure": Bool(),
        "cacert": _str,
        "certfile": _str,
        "keyfile": _str,
        "keyfile_password": _str,
    }
)

WATCHDOG = Section(
    {
        "mode": Either([Str(choices=WATCHDOG_MODES), Bool()], "off, automatic or required"),
        "device": _str,
        "safety_margin": Int(minimum=-1),
        "driver": Str(choices=WATCHDOG_DRIVERS),
    }
)

TAGS = Section(
    {
        "nofailover": Bool(),
        "failover_priority": Int(minimum=0),
        "clonefrom": Bool(),
        "noloadbalance": Bool(),
        "nosync": Bool(),
        "replicatefrom": _str,
    },
    extra=AnyValue(),
    rules=[at_most_one("nofailover", "failover_priority")],
)

LOG = Section(
    {
        "level": Str(choices=("debug", "info", "warning", "warn", "error", "critical", "fatal", "notset")),
        "traceback_level": Str(choices=("debug", "info", "warning", "warn", "error", "critical", "fatal")),
        "format": _str,
        "dateformat": _str,
        "max_queue_size": Int(minimum=1),
        "dir": _str,
        "file_num": Int(minimum=1),
        "file_size": Int(minimum=1),
        "loggers": MapOf(_str),
    }
)

BOOTSTRAP = Section(
    {
        "dcs": DYNAMIC_WITH_MINIMUMS,
        "method": _str,
        "initdb": ListOf(Either([_str, MapOf()], "a string or a one-key map")),
        "post_bootstrap": _str,
        "post_init": _str,
        "pg_hba": ListOf(_str),
        "users": MapOf(),
    },
    extra=AnyValue(),  # custom bootstrap method sections
)

_etcd = Section(
    {
        "host": _str,
        "hosts": _hosts,
        "use_proxies": Bool(),
        "url": _str,
        "proxy": _str,
        "srv": _str,
        "srv_suffix": _str,
        "protocol": Str(choices=("http", "https")),
        "username": _str,
        "password": _str,
        "cacert": _str,
        "cert": _str,
        "key": _str,
    },
    rules=[one_of_required("host", "hosts", "url", "proxy", "srv")],
)

DCS_SCHEMAS: dict[str, Section] = {
    "etcd": _etcd,
    "etcd3": _etcd,
    "raft": Section(
        {
            "self_addr": HostPort(),
            "bind_addr": HostPort(),
            "partner_addrs": ListOf(HostPort(), allow_string=True),
            "data_dir": _str,
            "password": _str,
        }
    ),
    "zookeeper": Section(
        {
            "hosts": _hosts,
            "use_ssl": Bool(),
            "cacert": _str,
            "cert": _str,
            "key": _str,
            "key_password": _str,
            "verify": Bool(),
            "set_acls": MapOf(),
        },
        required=("hosts",),
    ),
    "exhibitor": Section(
        {"hosts": _hosts, "port": Int(minimum=1), "poll_interval": Int(minimum=1)}, required=("hosts", "port")
    ),
    "consul": Section(
        {
            "host": _str,
            "url": _str,
            "port": Int(minimum=1),
            "scheme": Str(choices=("http", "https")),
            "token": _str,
            "verify": Bool(),
            "cacert": _str,
            "cert": _str,
            "key": _str,
            "dc": _str,
            "consistency": Str(choices=("default", "consistent", "stale")),
            "checks": ListOf(_str),
            "register_service": Bool(),
            "service_tags": ListOf(_str),
            "service_check_interval": _str,
            "service_check_tls_server_name": _str,
            # haven: the smallest session TTL the agent accepts (10 s on a real Consul) and the lock-delay
            "min_session_ttl": Either([Int(minimum=0), Str()], "seconds"),
            "lock_delay": Either([Int(minimum=0), Str()], "seconds"),
        },
        rules=[one_of_required("host", "url")],
    ),
    "kubernetes": Section(
        {
            "bypass_api_service": Bool(),
            "namespace": _str,
            "labels": MapOf(),
            "scope_label": _str,
            "role_label": _str,
            "leader_label_value": _str,
            "follower_label_value": _str,
            "standby_leader_label_value": _str,
            "tmp_role_label": _str,
            "use_endpoints": Bool(),
            "pod_ip": _str,
            "ports": ListOf(MapOf()),
            "cacert": _str,
            "retriable_http_codes": Either([Int(), ListOf(Int())], "an HTTP code or a list of codes"),
            # haven: outside a pod, the kubeconfig file and context to use
            "kubeconfig": _str,
            "context": _str,
        }
    ),
}

HAVEN = Section(
    {
        "run_dir": Str(nonempty=True),
        "log_dir": _str,
        "user": _str,
        "api_user": _str,
        "postgres_user": _str,
        "supervisord_template": _str,
        "python": _str,
    }
)

NODE_FIELDS: dict[str, Any] = {
    "name": Str(nonempty=True),
    "scope": Str(nonempty=True),
    "namespace": Str(nonempty=True),
    "log": LOG,
    "bootstrap": BOOTSTRAP,
    "citus": Section({"group": Int(minimum=0), "database": _str}),
    "postgresql": POSTGRESQL,
    "restapi": RESTAPI,
    "ctl": CTL,
    "watchdog": WATCHDOG,
    "tags": TAGS,
    "haven": HAVEN,
    **DCS_SCHEMAS,
}


def _one_dcs(value: Mapping[str, Any], path: str, problems: Problems) -> None:
    present = [k for k in DCS_SECTIONS if value.get(k) is not None]
    if not present:
        problems.append(Problem("<dcs>", f"exactly one DCS section is required: one of {', '.join(DCS_SECTIONS)}"))
    elif len(present) > 1:
        problems.append(Problem("<dcs>", f"only one DCS section may be given, found {', '.join(present)}"))


NODE = Section(NODE_FIELDS, required=("name", "scope", "postgresql", "restapi"), rules=[_one_dcs])


def validate_node(config: Mapping[str, Any]) -> Problems:
    """Every problem of a node's configuration, errors and warnings."""
    problems: Problems = []
    NODE.check(config, "", problems)
    return problems


def validate_dynamic(config: Mapping[str, Any], path: str = "") -> Problems:
    problems: Problems = []
    DYNAMIC_WITH_MINIMUMS.check(config, path, problems)
    return problems

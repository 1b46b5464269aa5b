"""havenctl's configuration, found and read as patronictl does (E1, E2)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import click

from ctl.rest import RestOptions
from shared.config.load import ConfigError, read_sources
from shared.config.schema import DCS_SECTIONS
from shared.model.member import parse_bool

CONFIG_DIR_PATH = click.get_app_dir("patroni")
CONFIG_FILE_PATH = os.path.join(CONFIG_DIR_PATH, "patronictl.yaml")

# -d/--dcs-url: the scheme selects the DCS section; a missing port takes the DCS's default. Only the five
# patronictl knows are picked by port when the scheme is missing; raft and kubernetes must be named.
DCS_DEFAULT_PORTS = {"etcd": 2379, "etcd3": 2379, "consul": 8500, "zookeeper": 2181, "exhibitor": 8181}
EXTRA_SCHEMES = {"raft": 2222, "kubernetes": 443}
# The keys of a DCS section that say where the DCS is: -d replaces them, the others (credentials, TLS) stay.
_ADDRESS_KEYS = {
    "host",
    "hosts",
    "url",
    "proxy",
    "srv",
    "srv_suffix",
    "port",
    "partner_addrs",
    "self_addr",
    "bind_addr",
}


class CtlError(click.ClickException):
    """An error havenctl reports on stderr (exit code 1)."""


def parse_dcs_url(url: str | None) -> dict[str, Any] | None:
    """DCS://HOST:PORT/NAMESPACE -> the DCS section it stands for (plus `namespace` when given)."""
    if url is None:
        return None
    if "//" not in url:
        url = "//" + url
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        raise CtlError(f"Invalid DCS URL: {url}")
    scheme = parsed.scheme
    if not scheme:
        scheme = next((name for name, default in DCS_DEFAULT_PORTS.items() if default == port), "etcd")
    elif scheme not in DCS_DEFAULT_PORTS and scheme not in EXTRA_SCHEMES:
        raise CtlError(f"Unknown dcs scheme: {scheme}")
    default_port = DCS_DEFAULT_PORTS.get(scheme) or EXTRA_SCHEMES[scheme]
    address = f"{parsed.hostname or 'localhost'}:{port or default_port}"
    section: dict[str, Any] = {"host": address}
    if scheme == "zookeeper":
        section = {"hosts": [address]}
    elif scheme == "exhibitor":
        section = {"hosts": [parsed.hostname or "localhost"], "port": port or default_port}
    elif scheme == "raft":  # havenctl joins the Raft cluster as a read-only member through this partner
        section = {"partner_addrs": [address]}
    elif scheme == "kubernetes":  # the API server comes from the kubeconfig or the in-cluster settings
        section = {}
    result: dict[str, Any] = {scheme: section}
    if parsed.path and parsed.path.strip() != "/":
        result["namespace"] = parsed.path.strip()
    return result


def load_config(path: str, dcs_url: str | None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file (an explicitly named one must exist), then PATRONI_* variables, then -d/--dcs-url."""
    env = os.environ if environ is None else environ
    readable = os.path.exists(path) and os.access(path, os.R_OK)
    if not readable and path != CONFIG_FILE_PATH:
        raise CtlError(
            f"Provided config file {path} not existing or no read rights. Check the -c/--config-file parameter"
        )
    try:
        config = read_sources(path if readable else None, env)
    except ConfigError as exc:
        raise CtlError(f"Cannot read the configuration: {exc}")
    dcs = parse_dcs_url(dcs_url)
    if dcs:
        kind = next(name for name in dcs if name in DCS_SECTIONS)
        for name in DCS_SECTIONS:
            old = config.pop(name, None)
            if name == kind and isinstance(old, Mapping):  # "missing parts come from the configuration"
                dcs[kind] = {**{k: v for k, v in old.items() if k not in _ADDRESS_KEYS}, **dcs[kind]}
        config.update(dcs)
    return config


def section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name)
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def rest_options(config: Mapping[str, Any], insecure: bool = False) -> RestOptions:
    """ctl settings first; restapi.authentication and restapi.cafile as fallbacks (E1, D40)."""
    ctl, restapi = section(config, "ctl"), section(config, "restapi")
    auth = section(ctl, "authentication") or section(restapi, "authentication")
    return RestOptions(
        username=_text(auth.get("username")),
        password=_text(auth.get("password")),
        cacert=_text(ctl.get("cacert")) or _text(restapi.get("cafile")),
        certfile=_text(ctl.get("certfile")),
        keyfile=_text(ctl.get("keyfile")),
        keyfile_password=_text(ctl.get("keyfile_password")),
        insecure=insecure or bool(parse_bool(ctl.get("insecure"))),
    )


def own_rest_url(config: Mapping[str, Any]) -> str | None:
    """The node's own REST API: restapi.connect_address, else restapi.listen (a wildcard means this host)."""
    restapi = section(config, "restapi")
    address = _text(restapi.get("connect_address")) or _text(restapi.get("listen"))
    if address is None:
        return None
    scheme = "https" if restapi.get("certfile") else "http"
    host, sep, port = address.rpartition(":")
    if not sep or (":" in host and not host.startswith("[")):  # no port, or a bare IPv6 address
        host, port = address, "8008"
    wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}
    host = wildcard.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"

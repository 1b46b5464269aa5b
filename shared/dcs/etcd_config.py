"""The `etcd:`/`etcd3:` section (F32, B28) that the etcd v3 (etcd3.py) and v2 (etcd.py) backends share: its
endpoints (host, hosts, url, proxy), credentials and TLS files, and the endpoints found in the DNS (`srv`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import urllib3

from shared.dcs.base import BackendError

DEFAULT_PORT = 2379
# Patroni's order (B28): the two *-server records name peers, whose client URLs are then asked for.
SRV_SERVICES = ("etcd-client-ssl", "etcd-client", "etcd-ssl", "etcd", "etcd-server-ssl", "etcd-server")
SETUP_TIMEOUT_S = 2.0  # background calls: the full read, the contact probe, authentication


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> Endpoint:
    """ "host", "host:port", "[v6]:port" or "http(s)://host:port" (the scheme is the caller's business)."""
    text = text.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rsplit("@", 1)[-1].split("/", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise BackendError(f"etcd: no host in {text!r}")
    try:
        return Endpoint(host, int(port) if port else default_port)
    except ValueError:
        raise BackendError(f"etcd: bad port in {text!r}")


def parse_hosts(value: Any) -> tuple[Endpoint, ...]:
    """`hosts` as a YAML list or "h1:p1,h2:p2" (spaces and quotes tolerated); duplicates dropped (B28)."""
    items: list[Any] = list(value) if isinstance(value, list | tuple) else str(value or "").strip("[] ").split(",")
    seen: dict[Endpoint, None] = {}
    for item in items:
        text = str(item).strip().strip("'\"").strip()
        if text:
            seen.setdefault(parse_endpoint(text), None)
    return tuple(seen)


def srv_names(domain: str, suffix: str | None) -> list[str]:
    """The SRV names asked, in order: _etcd-client-ssl[-suffix]._tcp.<domain>, ..."""
    tail = f"-{suffix}" if suffix else ""
    return [f"_{service}{tail}._tcp.{domain}" for service in SRV_SERVICES]


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[Endpoint, ...]
    protocol: str = "http"
    username: str | None = None
    password: str | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    use_proxies: bool = False
    srv: str | None = None
    srv_suffix: str | None = None

    @property
    def tls(self) -> bool:
        return self.protocol == "https"

    def url(self, endpoint: Endpoint) -> str:
        return f"{self.protocol}://{endpoint}"

    def resolve(self) -> EtcdSettings:
        """The endpoints, looked up in the DNS when the section gives `srv` only."""
        if self.endpoints or not self.srv:
            return self
        protocol, endpoints = resolve_srv(self.srv, self.srv_suffix, self.cacert)
        return replace(self, endpoints=endpoints, protocol=protocol)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], kind: str = "etcd") -> EtcdSettings:
        """One of host/hosts/url/proxy/srv (F32); url and proxy give the protocol and may carry user:password."""

        def text(name: str) -> str | None:
            value = section.get(name)
            return None if value is None or str(value).strip() == "" else str(value).strip()

        protocol, username, password = text("protocol"), text("username"), text("password")
        use_proxies = str(section.get("use_proxies", "")).lower() in ("1", "true", "yes", "on")
        endpoints: tuple[Endpoint, ...] = ()
        link = text("proxy") or text("url")
        if link:
            parts = urlsplit(link if "://" in link else f"http://{link}")
            protocol = parts.scheme or protocol
            username = username or (unquote(parts.username) if parts.username else None)
            password = password or (unquote(parts.password) if parts.password else None)
            endpoints = (parse_endpoint(link),)
            use_proxies = use_proxies or bool(text("proxy"))
        elif text("hosts"):
            endpoints = parse_hosts(section["hosts"])
        elif text("host"):
            endpoints = parse_hosts(section["host"])
        elif not text("srv"):
            raise BackendError(f"{kind}: one of host, hosts, url, proxy or srv is required")
        protocol = (protocol or ("https" if text("cacert") or text("cert") else "http")).lower()
        if protocol not in ("http", "https"):
            raise BackendError(f"{kind}: protocol must be http or https, not {protocol!r}")
        if (username is None) != (password is None):
            raise BackendError(f"{kind}: username and password go together")
        return cls(
            endpoints=endpoints,
            protocol=protocol,
            username=username,
            password=password,
            cacert=text("cacert"),
            cert=text("cert"),
            key=text("key"),
            use_proxies=use_proxies,
            srv=None if endpoints else text("srv"),
            srv_suffix=text("srv_suffix"),
        )


def resolve_srv(domain: str, suffix: str | None, cacert: str | None = None) -> tuple[str, tuple[Endpoint, ...]]:
    """(protocol, endpoints) from the first SRV name that answers; needs dnspython."""
    try:
        import dns.resolver  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise BackendError("etcd: `srv` needs the dnspython package")
    for name in srv_names(domain, suffix):
        try:
            answers = dns.resolver.resolve(name, "SRV")
        except Exception:  # NXDOMAIN, no answer, timeout: try the next name
            continue
        protocol = "https" if "-ssl" in name else "http"
        found = tuple(Endpoint(str(a.target).rstrip("."), int(a.port)) for a in answers)
        if found and "-server" in name:
            found = peer_client_endpoints(protocol, found, cacert)
        if found:
            return protocol, found
    raise BackendError(f"etcd: no SRV record for {domain}")


def peer_client_endpoints(protocol: str, peers: Iterable[Endpoint], cacert: str | None) -> tuple[Endpoint, ...]:
    """The members' client URLs, asked of the peers' /members (the *-server SRV records)."""
    http = urllib3.PoolManager(retries=False, timeout=SETUP_TIMEOUT_S, ca_certs=cacert)
    for peer in peers:
        try:
            members = json.loads(http.request("GET", f"{protocol}://{peer}/members").data)
            found = tuple(dict.fromkeys(parse_endpoint(u) for m in members for u in m["clientURLs"]))
        except (urllib3.exceptions.HTTPError, ValueError, TypeError, KeyError, BackendError):
            continue
        if found:
            return found
    return ()

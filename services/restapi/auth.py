"""Who may call the unsafe endpoints (D36, D38) and the extra headers of every answer (D39). Pure, except for the
name resolver, which the caller passes in.

Check order, as Patroni's: allowlist (403) -> client certificate (403, HTTPS only; not served yet) -> Basic auth (401).
Safe methods never come here.
"""

from __future__ import annotations

import base64
import hmac
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any
from urllib.parse import urlsplit

from services.restapi.core import ControlRequest, Response, text_response
from shared.model import Cluster
from shared.model.member import parse_bool
from shared.tls import verify_client

log = logging.getLogger("restapi")

Network = IPv4Network | IPv6Network
Resolver = Callable[[str, int], list[str]]  # host, port -> IP addresses

REALM_HEADER = ("WWW-Authenticate", 'Basic realm="Patroni"')
_ALLOWLIST_PORT = 8080  # only used to ask getaddrinfo, as Patroni does


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to; [] (logged) when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        log.error("Failed to resolve %s: %r", host, exc)
        return []
    return [str(info[4][0]) for info in infos]


def _networks(addresses: Iterable[str]) -> list[Network]:
    result: list[Network] = []
    for address in addresses:
        try:
            result.append(ip_network(address.split("%")[0], strict=False))
        except ValueError:
            continue
    return result


def build_allowlist(entries: Iterable[Any], resolve: Resolver) -> tuple[Network, ...]:
    """allowlist entries: a CIDR network (taken as written), else an IP address or a host name (resolved)."""
    networks: list[Network] = []
    for entry in entries:
        text = str(entry).strip()
        if "/" in text:
            try:
                networks.append(ip_network(text))
            except ValueError as exc:
                log.error('Invalid value "%s" in the allowlist: %r', text, exc)
            continue
        networks.extend(_networks(resolve(text, _ALLOWLIST_PORT)))
    return tuple(networks)


def member_endpoints(cluster: Cluster | None) -> tuple[tuple[str, int], ...]:
    """(host, port) of every member's api_url (D38 allowlist_include_members)."""
    if cluster is None:
        return ()
    endpoints: list[tuple[str, int]] = []
    for member in cluster.members:
        if not member.api_url:
            continue
        try:
            parts = urlsplit(member.api_url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        if parts.hostname:
            endpoints.append((parts.hostname, port))
    return tuple(sorted(set(endpoints)))


def resolve_endpoints(endpoints: Iterable[tuple[str, int]], resolve: Resolver) -> tuple[Network, ...]:
    return tuple(network for host, port in endpoints for network in _networks(resolve(host, port)))


@dataclass(frozen=True)
class AccessPolicy:
    auth_key: bytes | None = None  # base64 of "username:password", as the Authorization header carries it
    allowlist: tuple[Network, ...] = ()
    include_members: bool = False
    extra_headers: tuple[tuple[str, str], ...] = ()
    client_cert_required: bool = False  # HTTPS with verify_client optional or required (D36)

    @property
    def checks_source(self) -> bool:
        return bool(self.allowlist) or self.include_members


def auth_key(section: Mapping[str, Any]) -> bytes | None:
    authentication = section.get("authentication")
    if not isinstance(authentication, Mapping) or not authentication:
        return None
    username, password = authentication.get("username"), authentication.get("password")
    if username is None and password is None:
        return None
    return base64.b64encode(f"{username or ''}:{password or ''}".encode())


def extra_headers(section: Mapping[str, Any], tls: bool) -> tuple[tuple[str, str], ...]:
    """http_extra_headers, then https_extra_headers when the API serves TLS (D39)."""
    headers: list[tuple[str, str]] = []
    for key in ("http_extra_headers", "https_extra_headers") if tls else ("http_extra_headers",):
        value = section.get(key)
        if isinstance(value, Mapping):
            headers.extend((str(name), str(text)) for name, text in value.items())
    return tuple(headers)


def policy_from_config(section: Mapping[str, Any], resolve: Resolver = resolve_host, tls: bool = False) -> AccessPolicy:
    """The restapi section of the configuration as an AccessPolicy (host names resolved once, now)."""
    entries = section.get("allowlist")
    return AccessPolicy(
        auth_key=auth_key(section),
        allowlist=build_allowlist(entries if isinstance(entries, list) else [], resolve),
        include_members=bool(parse_bool(section.get("allowlist_include_members"))),
        extra_headers=extra_headers(section, tls),
        client_cert_required=tls and verify_client(section) != "none",
    )


def _client_address(client: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(client.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d
    return address


def is_source_allowed(client: str, networks: Iterable[Network]) -> bool:
    address = _client_address(client)
    return address is not None and any(address in network for network in networks)


def auth_problem(policy: AccessPolicy, header: str | None) -> str | None:
    """Patroni's texts: no header, or a header that is not our Basic credentials (compared in constant time)."""
    if policy.auth_key is None:
        return None
    if header is None:
        return "no auth header received"
    if not header.startswith("Basic ") or not hmac.compare_digest(policy.auth_key, header[6:].encode()):
        return "not authenticated"
    return None


def check_access(
    policy: AccessPolicy,
    request: ControlRequest,
    member_networks: Callable[[], Iterable[Network]],
) -> Response | None:
    """None when the request may go on, else the answer that refuses it. `member_networks` is only called
    when allowlist_include_members is on."""
    if policy.checks_source:
        networks = list(policy.allowlist)
        if policy.include_members:
            networks.extend(member_networks())
        if not is_source_allowed(request.client, networks):
            return text_response(403, "Access is denied")
    if policy.client_cert_required and not request.client_cert:
        return text_response(403, "client certificate required")
    problem = auth_problem(policy, request.headers.get("authorization"))
    if problem is not None:
        return text_response(401, problem, headers=dict([REALM_HEADER]))
    return None

"""The `zookeeper:` section (F33): hosts, TLS and ACLs, and the timeouts derived from ttl, loop_wait and
retry_timeout (B31)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kazoo.security import ACL, make_acl

from shared.dcs.base import BackendError
from shared.model.member import parse_bool

DEFAULT_PORT = 2181
PERMISSIONS = ("READ", "WRITE", "CREATE", "DELETE", "ADMIN", "ALL")


def parse_hosts(value: Any, default_port: int = DEFAULT_PORT) -> tuple[str, ...]:
    """hosts as a list or "h1:p1,h2:p2" (PATRONI_ZOOKEEPER_HOSTS quotes each: "'h1:p1','h2:p2'"); each gets a port."""
    items: list[Any] = list(value) if isinstance(value, list | tuple) else str(value or "").strip("[] ").split(",")
    hosts: list[str] = []
    for item in items:
        host = str(item).strip().strip("'\"").strip()
        if not host:
            continue
        if host.count(":") > 1 and not host.startswith("["):
            host = f"[{host}]"  # a bare IPv6 address
        if not host.rpartition("]")[2].count(":"):
            host = f"{host}:{default_port}"
        if host not in hosts:
            hosts.append(host)
    return tuple(hosts)


def parse_acls(value: Any) -> tuple[ACL, ...]:
    """set_acls {principal: [permissions]} as x509 ACLs applied to every znode we create (F33)."""
    if not value:
        return ()
    if not isinstance(value, Mapping):
        raise BackendError("zookeeper: set_acls must map each principal to a list of permissions")
    acls = []
    for principal, permissions in value.items():
        names = [permissions] if isinstance(permissions, str) else list(permissions or [])
        perms = {str(p).strip().upper() for p in names}
        unknown = sorted(perms - set(PERMISSIONS))
        if unknown or not perms:
            raise BackendError(f"zookeeper: set_acls {principal}: permissions must be among {', '.join(PERMISSIONS)}")
        flags = {p.lower(): p in perms for p in PERMISSIONS}
        acls.append(make_acl("x509", str(principal), **flags))
    return tuple(acls)


@dataclass(frozen=True)
class ZooKeeperSettings:
    hosts: tuple[str, ...]
    use_ssl: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = None
    verify: bool = True
    acls: tuple[ACL, ...] = ()

    @classmethod
    def from_section(cls, section: Mapping[str, Any], hosts: tuple[str, ...] | None = None) -> ZooKeeperSettings:
        def text(key: str) -> str | None:
            return str(section[key]) if section.get(key) else None

        verify = parse_bool(section.get("verify"))
        return cls(
            hosts=parse_hosts(section.get("hosts")) if hosts is None else hosts,
            use_ssl=bool(parse_bool(section.get("use_ssl"))),
            cacert=text("cacert"),
            cert=text("cert"),
            key=text("key"),
            key_password=text("key_password"),
            verify=True if verify is None else verify,
            acls=parse_acls(section.get("set_acls")),
        )

    def client_kwargs(self) -> dict[str, Any]:
        """kazoo's TLS arguments; the SSL settings are ignored unless use_ssl is on."""
        if not self.use_ssl:
            return {}
        return {
            "use_ssl": True,
            "ca": self.cacert,
            "certfile": self.cert,
            "keyfile": self.key,
            "keyfile_password": self.key_password,
            "verify_certs": self.verify,
        }


@dataclass(frozen=True)
class Timings:
    read_s: float  # a connection whose pings go unanswered this long is dropped (capped by 2/3 of the session)
    connect_s: float  # TCP connect timeout per host


def timings(ttl: float, loop_wait: float, retry_timeout: float) -> Timings:
    return Timings(read_s=max(1.0, loop_wait - 2.0), connect_s=max(0.5, min(retry_timeout, ttl) / 4))

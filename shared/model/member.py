"""A member key (`/members/<name>`, W6) and the tag rules shared by members and the local node (F51, F52)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlparse, urlunparse

# Boolean tags that are published only when true (F52).
_BOOLEAN_TAGS = ("clonefrom", "nofailover", "noloadbalance", "nosync")


def parse_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            try:
                return int(float(value))
            except ValueError:
                return None
    return None


def parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("on", "true", "yes", "1", "y", "t"):
            return True
        if v in ("off", "false", "no", "0", "n", "f"):
            return False
    return None


def filter_tags(tags: Mapping[str, Any]) -> dict[str, Any]:
    """The tags a node publishes: false boolean tags are dropped, custom tags kept as given (F52)."""
    return {k: v for k, v in tags.items() if k not in _BOOLEAN_TAGS or v}


class Tags:
    """Tag semantics shared by Member (from the DCS) and the local configuration (A10, A11)."""

    @property
    def tags(self) -> Mapping[str, Any]:
        raise NotImplementedError

    @property
    def nofailover(self) -> bool:
        from_tags = self.tags.get("nofailover")
        priority = parse_int(self.tags.get("failover_priority"))
        if from_tags is not None:  # nofailover wins over failover_priority (3.2.2)
            return bool(parse_bool(from_tags))
        return priority is not None and priority <= 0

    @property
    def failover_priority(self) -> int:
        from_tags = self.tags.get("nofailover")
        priority = parse_int(self.tags.get("failover_priority"))
        if from_tags is not None:
            return 0 if parse_bool(from_tags) else (1 if priority is None else priority)
        return 1 if priority is None else priority

    @property
    def clonefrom(self) -> bool:
        return bool(parse_bool(self.tags.get("clonefrom")))

    @property
    def noloadbalance(self) -> bool:
        return bool(parse_bool(self.tags.get("noloadbalance")))

    @property
    def nosync(self) -> bool:
        return bool(parse_bool(self.tags.get("nosync")))

    @property
    def replicatefrom(self) -> str | None:
        value = self.tags.get("replicatefrom")
        return str(value) if value else None


def parse_connection_string(value: str) -> tuple[str, str | None]:
    """Legacy Governor member value: postgres://user:pw@host:port/postgres?application_name=<api_url> (B16)."""
    scheme, netloc, path, params, query, fragment = urlparse(value)
    conn_url = urlunparse((scheme, netloc, path, params, "", fragment))
    api_url = next((v for n, v in parse_qsl(query) if n == "application_name"), None)
    return conn_url, api_url


@dataclass(frozen=True)
class Member(Tags):
    name: str
    version: int | None = None
    session: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_node(cls, version: int | None, name: str, session: str | None, value: str | None) -> Member:
        """A malformed value gives a member without data rather than an error (B15)."""
        data: dict[str, Any] = {}
        if value and value.startswith("postgres"):
            conn_url, api_url = parse_connection_string(value)
            data = {"conn_url": conn_url, "api_url": api_url}
        elif value:
            try:
                parsed = json.loads(value)
            except (TypeError, ValueError):
                parsed = None
            if isinstance(parsed, dict):
                data = parsed
        return cls(name=name, version=version, session=session, data=data)

    @property
    def tags(self) -> Mapping[str, Any]:
        tags = self.data.get("tags")
        return tags if isinstance(tags, dict) else {}

    @property
    def conn_url(self) -> str | None:
        value = self.data.get("conn_url")
        return value if isinstance(value, str) else None

    @property
    def api_url(self) -> str | None:
        value = self.data.get("api_url")
        return value if isinstance(value, str) else None

    @property
    def state(self) -> str:
        return str(self.data.get("state", "unknown"))

    @property
    def role(self) -> str:
        return str(self.data.get("role", ""))

    @property
    def is_running(self) -> bool:
        return self.state == "running"

    @property
    def lsn(self) -> int | None:
        return parse_int(self.data.get("xlog_location"))

    @property
    def timeline(self) -> int | None:
        return parse_int(self.data.get("timeline"))

    @property
    def patroni_version(self) -> tuple[int, ...] | None:
        version = self.data.get("version")
        if not isinstance(version, str):
            return None
        try:
            return tuple(int(p) for p in version.split(".")[:3])
        except ValueError:
            return None

    @property
    def replication_state(self) -> str | None:
        value = self.data.get("replication_state")
        return value if isinstance(value, str) else None

    def conn_kwargs(self, auth: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """host/port/dbname from conn_url, plus libpq authentication parameters."""
        if not self.conn_url:
            return {}
        parsed = urlparse(self.conn_url)
        ret: dict[str, Any] = {
            "host": parsed.hostname,
            "port": parsed.port or 5432,
            "dbname": parsed.path[1:] or "postgres",
        }
        if auth:
            ret.update({k: v for k, v in auth.items() if v is not None})
            if "username" in ret:
                ret["user"] = ret.pop("username")
        return ret

    def as_ref(self) -> dict[str, Any]:
        """The small form other programs need to replicate from this member."""
        return {"name": self.name, "conn_url": self.conn_url, "api_url": self.api_url}


@dataclass(frozen=True)
class LocalTags(Tags):
    """The node's own configured tags."""

    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> Mapping[str, Any]:
        return self.values


def slot_name_from_member_name(name: str) -> str:
    """B20: the replication slot a member uses on its upstream: lower case, '-' and '.' become '_', any other
    character outside [a-z0-9_] becomes u<code point>, at most 63 characters (NAMEDATALEN - 1)."""
    out = []
    for char in name.lower():
        if char in "-.":
            out.append("_")
        elif char == "_" or (char.isascii() and char.isalnum()):
            out.append(char)
        else:
            out.append(f"u{ord(char):04d}")
    return "".join(out)[:63]

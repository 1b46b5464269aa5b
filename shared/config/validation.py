"""A small schema language: each node checks one value and reports problems as (key, rule).

Values are checked, not converted: numbers given as strings (as environment variables give them)
are accepted where Patroni accepts them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.model.member import parse_bool, parse_int


@dataclass(frozen=True)
class Problem:
    key: str
    rule: str
    severity: str = "error"  # "error" refuses to start; "warning" is printed

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        return f"{prefix}{self.key or '<root>'}: {self.rule}"


Problems = list[Problem]


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Node:
    def check(self, value: Any, path: str, problems: Problems) -> None:
        raise NotImplementedError


class AnyValue(Node):
    def check(self, value: Any, path: str, problems: Problems) -> None:
        return None


@dataclass
class Str(Node):
    choices: Sequence[str] | None = None
    nonempty: bool = False

    def check(self, value: Any, path: str, problems: Problems) -> None:
        if not isinstance(value, str):
            problems.append(Problem(path, f"must be a string, got {type(value).__name__}"))
        elif self.nonempty and not value.strip():
            problems.append(Problem(path, "must not be empty"))
        elif self.choices is not None and value.lower() not in self.choices:
            problems.append(Problem(path, f"must be one of {', '.join(self.choices)}, got {value!r}"))


@dataclass
class Int(Node):
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: Any, path: str, problems: Problems) -> None:
        number = None if isinstance(value, bool) else parse_int(value)
        if number is None or (isinstance(value, float) and not value.is_integer()):
            problems.append(Problem(path, f"must be an integer, got {value!r}"))
            return
        if self.minimum is not None and number < self.minimum:
            problems.append(Problem(path, f"must be at least {self.minimum}, got {number}"))
        if self.maximum is not None and number > self.maximum:
            problems.append(Problem(path, f"must be at most {self.maximum}, got {number}"))


class Bool(Node):
    def check(self, value: Any, path: str, problems: Problems) -> None:
        if parse_bool(value) is None:
            problems.append(Problem(path, f"must be a boolean, got {value!r}"))


@dataclass
class ListOf(Node):
    item: Node
    allow_string: bool = False  # "a,b" accepted where Patroni splits strings

    def check(self, value: Any, path: str, problems: Problems) -> None:
        if isinstance(value, str) and self.allow_string:
            return
        if not isinstance(value, list):
            problems.append(Problem(path, f"must be a list, got {type(value).__name__}"))
            return
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]", problems)


@dataclass
class MapOf(Node):
    value: Node = field(default_factory=AnyValue)

    def check(self, value: Any, path: str, problems: Problems) -> None:
        if not isinstance(value, Mapping):
            problems.append(Problem(path, f"must be a map, got {type(value).__name__}"))
            return
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append(Problem(path, f"key {k!r} must be a string"))
                continue
            self.value.check(v, join(path, k), problems)


@dataclass
class Either(Node):
    options: Sequence[Node]
    description: str

    def check(self, value: Any, path: str, problems: Problems) -> None:
        for option in self.options:
            scratch: Problems = []
            option.check(value, path, scratch)
            if not scratch:
                return
        problems.append(Problem(path, f"must be {self.description}, got {value!r}"))


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """'host:port', '[v6]:port', 'h1,h2:port'. Raises ValueError."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep:
            raise ValueError("unclosed [")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") > 1 and "," not in value:  # bare IPv6 without port
        try:
            ipaddress.IPv6Address(value)
            host, port_text = value, ""
        except ValueError:
            host, _, port_text = value.rpartition(":")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = value, ""
    if not port_text:
        if default_port is None:
            raise ValueError("port is missing")
        return host, default_port
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError("port out of range")
    return host, port


@dataclass
class HostPort(Node):
    default_port: int | None = None
    connect: bool = False  # a connect_address: loopback and wildcards are suspicious

    def check(self, value: Any, path: str, problems: Problems) -> None:
        if not isinstance(value, str):
            problems.append(Problem(path, f"must be a string 'host:port', got {type(value).__name__}"))
            return
        try:
            host, _ = split_host_port(value, self.default_port)
        except ValueError as exc:
            problems.append(Problem(path, f"must be 'host:port' ({exc}), got {value!r}"))
            return
        if not host:
            problems.append(Problem(path, f"has no host: {value!r}"))
        elif self.connect and host in ("0.0.0.0", "*", "::"):
            problems.append(Problem(path, f"must be an address other members can connect to, not {host!r}"))
        elif self.connect and host in ("127.0.0.1", "::1", "localhost"):
            problems.append(
                Problem(path, f"{host} is reachable only from this host: every member must run here", "warning")
            )


@dataclass
class Section(Node):
    fields: Mapping[str, Node]
    required: Sequence[str] = ()
    extra: Node | None = None  # None: unknown keys are ignored (Patroni ignores them too)
    rules: Sequence[Callable[[Mapping[str, Any], str, Problems], None]] = ()

    def check(self, value: Any, path: str, problems: Problems) -> None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            problems.append(Problem(path, f"must be a map, got {type(value).__name__}"))
            return
        for key in self.required:
            if value.get(key) in (None, ""):
                problems.append(Problem(join(path, key), "is required"))
        for key, item in value.items():
            node = self.fields.get(key, self.extra)
            if node is not None and item is not None:
                node.check(item, join(path, key), problems)
        for rule in self.rules:
            rule(value, path, problems)


def at_most_one(*keys: str) -> Callable[[Mapping[str, Any], str, Problems], None]:
    def rule(value: Mapping[str, Any], path: str, problems: Problems) -> None:
        present = [k for k in keys if value.get(k) is not None]
        if len(present) > 1:
            problems.append(Problem(path, f"give only one of {', '.join(keys)} (found {', '.join(present)})"))

    return rule


def one_of_required(*keys: str) -> Callable[[Mapping[str, Any], str, Problems], None]:
    def rule(value: Mapping[str, Any], path: str, problems: Problems) -> None:
        if not any(value.get(k) not in (None, "", []) for k in keys):
            problems.append(Problem(path, f"needs one of {', '.join(keys)}"))

    return rule

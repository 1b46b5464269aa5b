"""synchronous_standby_names as haven writes it for pg.set_sync (C74, docs/protocol.md; pure: no I/O).

mode `off`: no value (the parameter is removed), or `*` when strict (C76: every commit waits, none is
acknowledged without a synchronous standby); `on`: `num (a,b)`, a single name alone; `quorum`: `ANY num (a,b)`.
A name is double-quoted only when it is not a plain identifier (upper case stays unquoted, as in Patroni).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.protocol.ops import PG_SYNC_MODES

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z_0-9$]*")


def quote_name(name: str) -> str:
    if _PLAIN.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def render_standby_names(mode: str, num: int, names: Sequence[str], strict: bool) -> str | None:
    """The value of synchronous_standby_names; None: the parameter is removed."""
    if mode == "off" or not names:
        return "*" if strict else None
    listed = ",".join(quote_name(name) for name in names)
    if mode == "quorum":
        return f"ANY {num} ({listed})"
    if len(names) == 1:
        return quote_name(names[0])
    return f"{num} ({listed})"


@dataclass(frozen=True)
class SyncSetting:
    """The last pg.set_sync: what haven keeps in synchronous_standby_names."""

    mode: str
    num: int
    names: tuple[str, ...]
    strict: bool

    @property
    def value(self) -> str | None:
        return render_standby_names(self.mode, self.num, self.names, self.strict)

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "num": self.num, "names": list(self.names), "strict": self.strict}

    @classmethod
    def from_json(cls, value: Any) -> SyncSetting | None:
        """Tolerant: None for anything that is not a valid stored setting."""
        try:
            return parse_set_sync(value)
        except (ValueError, TypeError, AttributeError):
            return None


def parse_set_sync(body: Mapping[str, Any]) -> SyncSetting:
    """The body of pg.set_sync, checked beyond its schema; ValueError says what is wrong."""
    mode = body.get("mode")
    if mode not in PG_SYNC_MODES:
        raise ValueError(f"mode must be one of {', '.join(sorted(PG_SYNC_MODES))}, got {mode!r}")
    names = body.get("names") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n and "\0" not in n for n in names):
        raise ValueError("names must be a list of non-empty strings")
    if len({n.lower() for n in names}) != len(names):
        raise ValueError("names must not repeat (PostgreSQL compares them case-insensitively)")
    num = body.get("num")
    if not isinstance(num, int) or isinstance(num, bool):
        raise ValueError("num must be an integer")
    if mode != "off" and names and not 1 <= num <= len(names):
        raise ValueError(f"num must be between 1 and the number of names ({len(names)}), got {num}")
    strict = body.get("strict", False)
    if not isinstance(strict, bool):
        raise ValueError("strict must be a boolean")
    return SyncSetting(mode=str(mode), num=num, names=tuple(names) if mode != "off" else (), strict=strict)

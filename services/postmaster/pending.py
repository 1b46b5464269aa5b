"""pending_restart (C45, C49): whether a postmaster-context parameter's running value differs from the desired one,
comparing values in their units as pg_settings reports them (pure: no I/O)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from shared.model.member import parse_bool

_MEMORY_UNITS = {"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60000.0, "h": 3600000.0, "d": 86400000.0}
_ENUM_ALIASES = {"hot_standby": "replica", "archive": "replica"}


def _unit_factor(unit: str | None) -> tuple[dict[str, float], float] | None:
    """'8kB' -> (the memory table, 8192)."""
    match = re.fullmatch(r"(\d*)\s*([A-Za-z]+)", unit or "")
    if not match:
        return None
    count = int(match.group(1) or 1)
    for table in (_MEMORY_UNITS, _TIME_UNITS):
        if match.group(2) in table:
            return {k: float(v) for k, v in table.items()}, count * float(table[match.group(2)])
    return None


def _number_in_base(text: str, unit: str | None) -> float | None:
    match = re.fullmatch(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match:
        return None
    number = float(match.group(1))
    factor = _unit_factor(unit)
    if factor is None:
        return number if not match.group(2) else None
    table, base = factor
    suffix = match.group(2)
    if not suffix:
        return number * base
    return number * table[suffix] if suffix in table else None


def _normalize_text(text: str) -> str:
    return re.sub(r"\s*,\s*", ",", text.strip().strip("'\""))


def setting_matches(desired: Any, setting: str | None, unit: str | None, vartype: str) -> bool:
    """Whether the running value (pg_settings setting/unit/vartype) equals the desired configuration value."""
    wanted = "on" if desired is True else "off" if desired is False else str(desired)
    current = setting or ""
    if vartype == "bool":
        return parse_bool(wanted) == parse_bool(current)
    if vartype in ("integer", "real"):
        a, b = _number_in_base(wanted, unit), _number_in_base(current, unit)
        return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))
    if vartype == "enum":
        x, y = wanted.strip().lower(), current.strip().lower()
        return _ENUM_ALIASES.get(x, x) == _ENUM_ALIASES.get(y, y)
    return _normalize_text(wanted) == _normalize_text(current)


def changed_postmaster_settings(desired: Mapping[str, Any], running: Mapping[str, Sequence[Any]]) -> list[str]:
    """Names of postmaster-context parameters whose desired value differs from the running one."""
    changed = []
    for name, value in desired.items():
        row = running.get(name.lower())
        if row is None or len(row) < 3:
            continue
        if not setting_matches(value, row[0], row[1], str(row[2])):
            changed.append(name)
    return sorted(changed)

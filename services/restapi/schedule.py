"""Pure value checks of the unsafe endpoints: schedules (D26, D29), PostgreSQL versions and restart timeouts (D29).

The texts are Patroni 3.2's, word for word: clients and scripts match on them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

UNPARSABLE_SCHEDULE = "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"

# Seconds per PostgreSQL time unit (the units Patroni's parse_int(value, 's') accepts).
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


class Schedule(NamedTuple):
    """parse_schedule()'s answer: an error (status, message) or the moment, never both."""

    status: int | None
    error: str | None
    at: datetime | None


def parse_schedule(value: Any, action: str, now: float) -> Schedule:
    """An ISO-8601 timestamp with a timezone, not in the past. 400 without a timezone; 422 in the past or unparsable.

    Patroni parses with dateutil, which also reads free-form dates; we read ISO 8601 (what patronictl sends)."""
    try:
        at = datetime.fromisoformat(value.strip())
    except (AttributeError, TypeError, ValueError):
        return Schedule(422, UNPARSABLE_SCHEDULE, None)
    if at.tzinfo is None or at.utcoffset() is None:
        return Schedule(400, f"Timezone information is mandatory for the scheduled {action}", None)
    if at < datetime.fromtimestamp(now, UTC):
        return Schedule(422, f"Cannot schedule {action} in the past", None)
    return Schedule(None, None, at)


def postgres_version_problem(value: Any) -> str | None:
    """Why `value` is not a PostgreSQL version Patroni accepts (X.Y from 10 on, or X.Y.Z), or None."""
    text = value if isinstance(value, str) else str(value)
    try:
        components = [int(part) for part in text.split(".")]
    except ValueError:
        return f"Invalid PostgreSQL version: {text}"
    if len(components) < 2 or len(components) > 3 or (len(components) == 2 and components[0] < 10):
        return f"Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {text}"
    return None


def _strtol(text: str) -> tuple[int | None, str]:
    """strtol(3) with base 0, as PostgreSQL (and Patroni) read integer settings: the number and the rest."""
    i = 1 if text[:1] in ("+", "-") else 0
    if i >= len(text) or not text[i].isdigit():
        return None, text
    if text[i] == "0" and text[i + 1 : i + 2] in ("x", "X"):
        base, digits, start = 16, "0123456789abcdefABCDEF", i + 2
    elif text[i] == "0":
        base, digits, start = 8, "01234567", i + 1
    else:
        base, digits, start = 10, "0123456789", i
    end = start
    while end < len(text) and text[end] in digits:
        end += 1
    if end == start:  # a lone "0" (or "0x"): zero, then the rest
        return 0, text[start:]
    number = int(text[start:end], base)
    return (-number if text[0] == "-" else number), text[end:]


def _strtod(text: str) -> tuple[float | None, str]:
    end, seen_digit, seen_dot = 1 if text[:1] in ("+", "-") else 0, False, False
    while end < len(text) and (text[end].isdigit() or (text[end] == "." and not seen_dot)):
        seen_digit = seen_digit or text[end].isdigit()
        seen_dot = seen_dot or text[end] == "."
        end += 1
    if not seen_digit:
        return None, text
    if end < len(text) and text[end] in "eE":
        exp = end + 1 + (1 if text[end + 1 : end + 2] in ("+", "-") else 0)
        if exp < len(text) and text[exp].isdigit():
            end = exp
            while end < len(text) and text[end].isdigit():
                end += 1
    return float(text[:end]), text[end:]


def parse_seconds(value: Any) -> int | None:
    """Patroni's parse_int(value, 's'): 30, "30", "30s", "1min", "1500 ms" (rounded), else None."""
    if isinstance(value, bool):
        return None  # str(True) is not a number either
    text = str(value).strip()
    number: float | None
    integer, unit = _strtol(text)
    number = integer
    if (integer is None and unit.startswith(".")) or (unit and unit[0] in ".eE"):
        number, unit = _strtod(text)
    if number is None:
        return None
    unit = unit.strip()
    if unit:
        if unit not in _SECONDS:
            return None
        number *= _SECONDS[unit]
    try:
        return round(number)
    except (OverflowError, ValueError):
        return None

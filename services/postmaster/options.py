"""Command-line options of initdb and pg_basebackup from the configuration (pure: no I/O, C2, C14)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.postmaster.render import ConfError, setting_text

INITDB_REFUSED = frozenset({"pgdata", "nosync", "pwfile", "sync-only", "version"})
BASEBACKUP_REFUSED = frozenset(
    {
        "pgdata",
        "format",
        "wal-method",
        "xlog-method",
        "gzip",
        "version",
        "compress",
        "dbname",
        "host",
        "port",
        "username",
        "password",
    }
)


def _long_options(options: Any, what: str) -> list[tuple[str, Any]]:
    """(name, value or None) pairs from a list of strings / one-key maps, or a plain map."""
    if options is None:
        return []
    if isinstance(options, Mapping):
        return [(str(k).lstrip("-"), v) for k, v in options.items()]
    if not isinstance(options, list):
        raise ConfError(f"{what} must be a list of strings and one-key maps, or a map")
    pairs: list[tuple[str, Any]] = []
    for item in options:
        if isinstance(item, str):
            pairs.append((item.lstrip("-"), None))
        elif isinstance(item, Mapping) and len(item) == 1:
            ((key, value),) = item.items()
            pairs.append((str(key).lstrip("-"), value))
        else:
            raise ConfError(f"{what} item {item!r} must be a string or a one-key map")
    return pairs


def _option(name: str, value: Any) -> str:
    return f"--{name}" if value is None else f"--{name}={setting_text(value)}"


def initdb_options(options: Any) -> list[str]:
    """bootstrap.initdb as initdb arguments (C2); options haven controls itself are refused."""
    args = []
    for name, value in _long_options(options, "bootstrap.initdb"):
        if name in INITDB_REFUSED:
            raise ConfError(f"{name} option for initdb is not allowed")
        args.append(_option(name, value))
    return args


def basebackup_options(options: Any) -> tuple[list[str], list[str]]:
    """postgresql.basebackup as pg_basebackup arguments, and the errors for refused options (dropped, C14)."""
    args, errors = [], []
    for name, value in _long_options(options, "postgresql.basebackup"):
        if name in BASEBACKUP_REFUSED:
            errors.append(f"{name} option for basebackup is not allowed")
        else:
            args.append(_option(name, value))
    return args, errors

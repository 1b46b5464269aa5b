"""Declarative body schemas: each op names its fields, their types and whether they are required.

Validation is deliberately shallow (top-level fields and their types): nested values are checked by
the code that uses them, with the same INVALID_BODY error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.protocol.errors import ErrorCode, ProtocolError

_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "map", list: "list"}


@dataclass(frozen=True)
class F:
    """One body field."""

    name: str
    types: tuple[type, ...]
    required: bool = True
    nullable: bool = False

    def describe(self) -> str:
        names = [_TYPE_NAMES.get(t, t.__name__) for t in self.types]
        return " or ".join(names) + (" or null" if self.nullable else "")


def _matches(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


@dataclass(frozen=True)
class OpSchema:
    op: str
    fields: tuple[F, ...] = ()

    def validate(self, body: dict[str, Any]) -> dict[str, Any]:
        for f in self.fields:
            if f.name not in body or (body[f.name] is None and not f.nullable and not f.required):
                if f.required:
                    raise ProtocolError(ErrorCode.INVALID_BODY, f"{self.op}: field '{f.name}' is required")
                continue
            value = body[f.name]
            if value is None and f.nullable:
                continue
            if not _matches(value, f.types):
                raise ProtocolError(
                    ErrorCode.INVALID_BODY,
                    f"{self.op}: field '{f.name}' must be {f.describe()}, got {type(value).__name__}",
                )
        return body


def schemas(*items: OpSchema) -> dict[str, OpSchema]:
    return {s.op: s for s in items}

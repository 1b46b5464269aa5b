"""The replication slots haven manages on this node (C29-C34): the desired set of pg.sync_slots and the plan
that turns the slots PostgreSQL has into it (pure: no I/O).

Which slots are dropped: every slot that is not desired, EXCEPT active ones, temporary ones (pg_basebackup's) and
those an `ignore` matcher {name?, type?, database?, plugin?} matches (C29, C33); nothing is dropped before a
desired set arrives. Haven does not track which slots it created: like Patroni, it owns every slot it is not told
to leave alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
SLOT_TYPES = frozenset({"physical", "logical"})
MATCHER_KEYS = frozenset({"name", "type", "database", "plugin"})


@dataclass(frozen=True)
class WantedSlot:
    type: str  # "physical" | "logical"
    database: str | None = None
    plugin: str | None = None
    lsn: int | None = None  # on a replica: where the primary's copy of this slot is (advance to it)


@dataclass(frozen=True)
class DesiredSlots:
    """The last pg.sync_slots."""

    slots: Mapping[str, WantedSlot] = field(default_factory=dict)
    ignore: tuple[Mapping[str, str], ...] = ()
    source: Mapping[str, Any] | None = None

    @property
    def logical_names(self) -> tuple[str, ...]:
        return tuple(sorted(name for name, slot in self.slots.items() if slot.type == "logical"))

    def as_json(self) -> dict[str, Any]:
        slots = {
            name: {k: v for k, v in vars(slot).items() if v is not None} for name, slot in sorted(self.slots.items())
        }
        return {"slots": slots, "ignore": [dict(m) for m in self.ignore], "source": self.source}

    @classmethod
    def from_json(cls, value: Any) -> DesiredSlots | None:
        try:
            return parse_sync_slots(value)
        except (ValueError, TypeError, AttributeError):
            return None


def _text(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return value


def parse_wanted(name: Any, value: Any) -> WantedSlot:
    if not isinstance(name, str) or not SLOT_NAME.fullmatch(name):
        raise ValueError(f"slot name {name!r} must be 1-63 lower case letters, digits or underscores")
    if not isinstance(value, Mapping):
        raise ValueError(f"slot {name}: must be a map")
    kind = value.get("type", "physical")
    if kind not in SLOT_TYPES:
        raise ValueError(f"slot {name}: type must be physical or logical, got {kind!r}")
    lsn = value.get("lsn")
    if lsn is not None and (not isinstance(lsn, int) or isinstance(lsn, bool) or lsn < 0):
        raise ValueError(f"slot {name}: lsn must be a non-negative integer")
    database = _text(value.get("database"), f"slot {name}: database")
    plugin = _text(value.get("plugin"), f"slot {name}: plugin")
    if kind == "logical" and (database is None or plugin is None):
        raise ValueError(f"slot {name}: a logical slot needs database and plugin")
    if kind == "physical":
        database = plugin = None
    return WantedSlot(type=kind, database=database, plugin=plugin, lsn=lsn)


def parse_matcher(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise ValueError("an ignore matcher must be a non-empty map")
    unknown = set(value) - MATCHER_KEYS
    if unknown:
        raise ValueError(f"an ignore matcher may only have {', '.join(sorted(MATCHER_KEYS))}: not {sorted(unknown)}")
    if not all(isinstance(v, str) for v in value.values()):
        raise ValueError("ignore matcher values must be strings")
    return {str(k): str(v) for k, v in value.items()}


def parse_sync_slots(body: Mapping[str, Any]) -> DesiredSlots:
    """The body of pg.sync_slots, checked beyond its schema; ValueError says what is wrong."""
    slots = body.get("slots")
    if not isinstance(slots, Mapping):
        raise ValueError("slots must be a map")
    ignore = body.get("ignore") or []
    if not isinstance(ignore, list):
        raise ValueError("ignore must be a list")
    source = body.get("source")
    return DesiredSlots(
        slots={name: parse_wanted(name, value) for name, value in slots.items()},
        ignore=tuple(parse_matcher(m) for m in ignore),
        source=dict(source) if isinstance(source, Mapping) else None,
    )


# ---- what PostgreSQL has ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalSlot:
    name: str
    type: str
    database: str | None = None
    plugin: str | None = None
    restart_lsn: int | None = None
    confirmed_flush_lsn: int | None = None
    active: bool = False
    temporary: bool = False


def is_ignored(slot: LocalSlot, ignore: Sequence[Mapping[str, str]]) -> bool:
    """C33: a matcher matches when every key it has equals the slot's."""
    values = {"name": slot.name, "type": slot.type, "database": slot.database, "plugin": slot.plugin}
    return any(all(values.get(k) == v for k, v in matcher.items()) for matcher in ignore)


def _fits(slot: LocalSlot, wanted: WantedSlot) -> bool:
    return slot.type == wanted.type and (
        wanted.type == "physical" or (slot.database, slot.plugin) == (wanted.database, wanted.plugin)
    )


# ---- the plan -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotPlan:
    drop: tuple[str, ...] = ()
    create_physical: tuple[str, ...] = ()
    create_logical: tuple[tuple[str, str, str], ...] = ()  # (name, database, plugin), on a primary
    advance_physical: tuple[tuple[str, int], ...] = ()  # on a replica
    advance_logical: tuple[tuple[str, str, int], ...] = ()  # (name, database, lsn), on a replica
    to_copy: tuple[str, ...] = ()  # logical slots a replica must copy from the primary (pg.copy_slots)


def plan_slots(
    desired: DesiredSlots, existing: Mapping[str, LocalSlot], *, in_recovery: bool, own_slot: str | None = None
) -> SlotPlan:
    """What to do so that this node has the desired slots. own_slot: the slot named after this member, which it
    never holds itself (its upstream does, C31). Slots are advanced only forwards."""
    drop: list[str] = []
    physical: list[str] = []
    logical: list[tuple[str, str, str]] = []
    advance_physical: list[tuple[str, int]] = []
    advance_logical: list[tuple[str, str, int]] = []
    to_copy: list[str] = []
    wanted = {name: slot for name, slot in desired.slots.items() if name != own_slot}
    for name, slot in sorted(existing.items()):
        if slot.active or slot.temporary or is_ignored(slot, desired.ignore):
            continue
        if name not in wanted or not _fits(slot, wanted[name]):
            drop.append(name)
    for name, want in sorted(wanted.items()):
        have = existing.get(name)
        if have is not None and not _fits(have, want) and name not in drop:
            continue  # a different slot of that name that must stay (active or ignored)
        missing = have is None or name in drop
        if want.type == "physical":
            if missing:
                physical.append(name)
            if in_recovery and want.lsn is not None and (missing or (have and _behind(have.restart_lsn, want.lsn))):
                advance_physical.append((name, want.lsn))
        elif not in_recovery:
            if missing:
                logical.append((name, str(want.database), str(want.plugin)))
        elif missing:
            to_copy.append(name)
        elif want.lsn is not None and have is not None and _behind(have.confirmed_flush_lsn, want.lsn):
            advance_logical.append((name, str(want.database), want.lsn))
    return SlotPlan(
        drop=tuple(drop),
        create_physical=tuple(physical),
        create_logical=tuple(logical),
        advance_physical=tuple(advance_physical),
        advance_logical=tuple(advance_logical),
        to_copy=tuple(to_copy),
    )


def _behind(current: int | None, target: int) -> bool:
    return current is not None and current < target

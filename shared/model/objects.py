"""The other DCS values (W7): leader, config, status, sync, history, failover."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.model.member import Member, parse_int


def _json_or_none(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def dumps(value: Any) -> str:
    """JSON as Patroni writes it into the DCS: compact separators."""
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Leader:
    """The leader key: its value is the member name (B3, B17)."""

    version: int | None
    session: str | None
    member: Member

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def conn_url(self) -> str | None:
        return self.member.conn_url

    @property
    def timeline(self) -> int | None:
        return self.member.timeline

    @property
    def checkpoint_after_promote(self) -> bool | None:
        """False while the new primary has not finished its post-promote CHECKPOINT (A60)."""
        value = self.member.data.get("checkpoint_after_promote")
        return None if value is None else bool(value)


@dataclass(frozen=True)
class ClusterConfig:
    """The dynamic configuration (B6, B19). Unparsable JSON gives an empty map."""

    version: int | None
    data: Mapping[str, Any]
    modify_version: int | None = None

    @classmethod
    def from_node(cls, version: int | None, value: str | None, modify_version: int | None = None) -> ClusterConfig:
        data = _json_or_none(value)
        return cls(version, data if isinstance(data, dict) else {}, modify_version or version)

    @property
    def max_timelines_history(self) -> int:
        return parse_int(self.data.get("max_timelines_history")) or 0


@dataclass(frozen=True)
class Status:
    """`/status`: the leader's last LSN and its permanent slots' positions (B10)."""

    last_lsn: int = 0
    slots: Mapping[str, int] | None = None

    @classmethod
    def from_node(cls, value: str | None) -> Status:
        data = _json_or_none(value)
        if isinstance(data, dict):
            slots = data.get("slots")
            return cls(parse_int(data.get("optime")) or 0, slots if isinstance(slots, dict) else None)
        return cls(parse_int(data if isinstance(data, int | str) else value) or 0, None)

    def to_value(self) -> str:
        body: dict[str, Any] = {"optime": self.last_lsn}
        if self.slots:
            body["slots"] = dict(self.slots)
        return dumps(body)


@dataclass(frozen=True)
class SyncState:
    """`/sync`: {"leader": name, "sync_standby": "a,b" | null} (B9); 4.x adds "quorum" (accepted, kept)."""

    version: int | None
    leader: str | None
    sync_standby: str | None
    quorum: int = 0

    @classmethod
    def from_node(cls, version: int | None, value: str | None) -> SyncState:
        data = _json_or_none(value)
        if not isinstance(data, dict):
            return cls(version, None, None)
        leader = data.get("leader")
        standby = data.get("sync_standby")
        return cls(
            version,
            str(leader) if leader else None,
            str(standby) if standby else None,
            parse_int(data.get("quorum")) or 0,
        )

    @property
    def members(self) -> list[str]:
        return [m.strip() for m in (self.sync_standby or "").split(",") if m.strip()]

    def matches(self, name: str | None) -> bool:
        """Whether `name` is listed as a sync standby (case-insensitive: PostgreSQL folds names)."""
        return bool(name) and (name or "").lower() in (m.lower() for m in self.members)

    def leader_matches(self, name: str | None) -> bool:
        return bool(name) and bool(self.leader) and (name or "").lower() == (self.leader or "").lower()


@dataclass(frozen=True)
class TimelineHistory:
    """`/history`: [[timeline, lsn, reason, timestamp, new_leader?], ...] (B7)."""

    version: int | None
    value: str
    lines: tuple[tuple[Any, ...], ...] = ()

    @classmethod
    def from_node(cls, version: int | None, value: str | None) -> TimelineHistory:
        data = _json_or_none(value)
        lines: tuple[tuple[Any, ...], ...] = ()
        if isinstance(data, list):
            lines = tuple(tuple(line) for line in data if isinstance(line, list))
        return cls(version, value or "", lines)


@dataclass(frozen=True)
class Failover:
    """`/failover`: {"leader", "member", "scheduled_at"}; legacy "leader:candidate" (B8)."""

    version: int | None
    leader: str | None
    candidate: str | None
    scheduled_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_node(cls, version: int | None, value: str | None) -> Failover | None:
        if not value:
            return None
        data = _json_or_none(value)
        if isinstance(data, dict):
            scheduled = data.get("scheduled_at")
            at: datetime | None = None
            if isinstance(scheduled, str):
                try:
                    at = datetime.fromisoformat(scheduled.replace("Z", "+00:00"))
                except ValueError:
                    at = None
            leader, member = data.get("leader"), data.get("member")
            if not leader and not member:
                return None
            return cls(version, str(leader) if leader else None, str(member) if member else None, at, data)
        if data is None and ":" in value:
            leader, _, member = value.partition(":")
            if leader or member:
                return cls(version, leader or None, member or None)
        return None

"""Cluster: one immutable snapshot of everything under /<namespace>/<scope>/ (B13)."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.model.member import Member
from shared.model.objects import ClusterConfig, Failover, Leader, Status, SyncState, TimelineHistory, _json_or_none


@dataclass(frozen=True)
class KeyValue:
    """One raw DCS key: its value and its modification version (index, revision, znode version...)."""

    value: str
    version: int | None = None
    session: str | None = None

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> KeyValue:
        version = raw.get("version")
        session = raw.get("session")
        return cls(
            value=str(raw.get("value") or ""),
            version=version if isinstance(version, int) else None,
            session=str(session) if session is not None else None,
        )

    def to_wire(self) -> dict[str, Any]:
        return {"value": self.value, "version": self.version, "session": self.session}


@dataclass(frozen=True)
class Cluster:
    initialize: str | None
    config: ClusterConfig | None
    leader: Leader | None
    status: Status
    members: tuple[Member, ...]
    failover: Failover | None
    sync: SyncState
    history: TimelineHistory | None
    failsafe: Mapping[str, str] | None = None
    keys: Mapping[str, KeyValue] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Cluster:
        return cls(None, None, None, Status(), (), None, SyncState(None, None, None), None, None, {})

    @classmethod
    def from_keys(cls, keys: Mapping[str, KeyValue]) -> Cluster:
        """Build the snapshot from raw keys named relative to /<namespace>/<scope>/."""
        members = tuple(
            sorted(
                (
                    Member.from_node(kv.version, name[len("members/") :], kv.session, kv.value)
                    for name, kv in keys.items()
                    if name.startswith("members/") and len(name) > len("members/")
                ),
                key=lambda m: m.name,
            )
        )
        leader: Leader | None = None
        if (kv := keys.get("leader")) and kv.value:
            member = next((m for m in members if m.name == kv.value), None)
            leader = Leader(kv.version, kv.session, member or Member(kv.value))
        init = keys.get("initialize")
        config = ClusterConfig.from_node(keys["config"].version, keys["config"].value) if "config" in keys else None
        status_kv = keys.get("status") or keys.get("optime/leader")
        status = Status.from_node(status_kv.value if status_kv else None)
        failover_kv = keys.get("failover")
        failover = Failover.from_node(failover_kv.version, failover_kv.value) if failover_kv else None
        sync_kv = keys.get("sync")
        sync = SyncState.from_node(sync_kv.version, sync_kv.value) if sync_kv else SyncState(None, None, None)
        history_kv = keys.get("history")
        history = TimelineHistory.from_node(history_kv.version, history_kv.value) if history_kv else None
        failsafe_kv = keys.get("failsafe")
        failsafe = _json_or_none(failsafe_kv.value) if failsafe_kv else None
        return cls(
            initialize=init.value if init is not None else None,
            config=config,
            leader=leader,
            status=status,
            members=members,
            failover=failover,
            sync=sync,
            history=history,
            failsafe=failsafe if isinstance(failsafe, dict) else None,
            keys=dict(keys),
        )

    @classmethod
    def from_wire(cls, keys: Mapping[str, Any]) -> Cluster:
        return cls.from_keys({k: KeyValue.from_wire(v) for k, v in keys.items() if isinstance(v, Mapping)})

    @property
    def is_unlocked(self) -> bool:
        return self.leader is None

    @property
    def leader_name(self) -> str | None:
        return self.leader.name if self.leader else None

    def has_member(self, name: str) -> bool:
        return any(m.name == name for m in self.members)

    def get_member(self, name: str, fallback_to_leader: bool = True) -> Member | None:
        member = next((m for m in self.members if m.name == name), None)
        if member is None and fallback_to_leader and self.leader:
            return self.leader.member
        return member

    @property
    def timeline(self) -> int:
        """The cluster timeline from /history: 0 when missing or invalid, 1 when empty, else last + 1 (B14)."""
        if self.history:
            if self.history.lines:
                try:
                    return int(self.history.lines[-1][0]) + 1
                except (TypeError, ValueError, IndexError):
                    return 0
            if self.history.value.strip() == "[]":
                return 1
        return 0

    @property
    def last_lsn(self) -> int:
        return self.status.last_lsn

    def clone_candidates(self, exclude: str) -> list[Member]:
        """Running members tagged clonefrom, other than `exclude` and the leader (C13)."""
        skip = {exclude, self.leader_name}
        return [m for m in self.members if m.clonefrom and m.is_running and m.conn_url and m.name not in skip]

    def get_clone_member(self, exclude: str) -> Member | None:
        """A clonefrom member, else the leader. The choice is spread by name, not random, to stay pure."""
        candidates = self.clone_candidates(exclude)
        if candidates:
            return candidates[zlib.crc32(exclude.encode()) % len(candidates)]
        return self.leader.member if self.leader else None

    @property
    def pause(self) -> bool:
        return bool(self.config and self.config.data.get("pause"))

"""Typed, tolerant views of what the brain reads: pg_state from postmaster, GET /patroni answers of peers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.model.member import parse_bool, parse_int


class OpState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Operation:
    id: str
    name: str
    state: OpState
    error: str | None = None
    result: Mapping[str, Any] = field(default_factory=dict)
    finished: float | None = None  # epoch seconds

    @classmethod
    def from_wire(cls, raw: Any) -> Operation | None:
        if not isinstance(raw, Mapping) or not raw.get("id") or not raw.get("name"):
            return None
        try:
            state = OpState(str(raw.get("state")))
        except ValueError:
            return None
        result, finished = raw.get("result"), raw.get("finished")
        return cls(
            str(raw["id"]),
            str(raw["name"]),
            state,
            raw.get("error"),
            result if isinstance(result, dict) else {},
            float(finished) if isinstance(finished, int | float) and not isinstance(finished, bool) else None,
        )

    @property
    def is_running(self) -> bool:
        return self.state == OpState.RUNNING


@dataclass(frozen=True)
class PgView:
    """The local PostgreSQL as the postmaster controller last reported it (docs/protocol.md pg_state)."""

    data_dir: str = "missing"
    sysid: str | None = None
    running: bool = False
    accepting: bool = False
    state: str = "stopped"
    role: str = "uninitialized"
    timeline: int | None = None
    wal_position: int | None = None
    following: str | None = None
    pending_restart: bool = False
    controldata_state: str | None = None
    operation: Operation | None = None
    timeline_history: Mapping[str, Any] | None = None  # a primary's pg_wal/<timeline>.history (B7)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> PgView:
        controldata = raw.get("controldata")
        return cls(
            data_dir=str(raw.get("data_dir") or "missing"),
            sysid=str(raw["sysid"]) if raw.get("sysid") else None,
            running=bool(raw.get("running")),
            accepting=bool(raw.get("accepting")),
            state=str(raw.get("state") or "unknown"),
            role=str(raw.get("role") or "uninitialized"),
            timeline=parse_int(raw.get("timeline")),
            wal_position=parse_int(raw.get("wal_position")),
            following=str(raw["following"]) if raw.get("following") else None,
            pending_restart=bool(raw.get("pending_restart")),
            controldata_state=str(controldata.get("state"))
            if isinstance(controldata, Mapping) and controldata.get("state")
            else None,
            operation=Operation.from_wire(raw.get("operation")),
            timeline_history=raw["timeline_history"] if isinstance(raw.get("timeline_history"), Mapping) else None,
            raw=dict(raw),
        )

    @property
    def is_primary(self) -> bool:
        return self.role == "master"

    @property
    def has_data(self) -> bool:
        return self.data_dir == "initialized"


@dataclass(frozen=True)
class PeerStatus:
    """What another member's GET /patroni said during the leader race (A8)."""

    name: str
    reachable: bool
    is_primary: bool = False
    wal_position: int | None = None
    timeline: int | None = None
    nofailover: bool = False
    failover_priority: int = 1
    watchdog_failed: bool = False

    @classmethod
    def unreachable(cls, name: str) -> PeerStatus:
        return cls(name=name, reachable=False)

    @classmethod
    def from_patroni(cls, name: str, body: Any) -> PeerStatus:
        """Usable only if JSON with an xlog object; primary = xlog.location set or role master/primary."""
        if not isinstance(body, Mapping) or not isinstance(body.get("xlog"), Mapping):
            return cls.unreachable(name)
        xlog = body["xlog"]
        role = body.get("role")
        location = parse_int(xlog.get("location"))
        is_primary = location is not None or role in ("master", "primary")
        if location is not None:
            wal = location
        else:
            received = parse_int(xlog.get("received_location")) or 0
            replayed = parse_int(xlog.get("replayed_location")) or 0
            wal = max(received, replayed)
        tags = body.get("tags") if isinstance(body.get("tags"), Mapping) else {}
        assert isinstance(tags, Mapping)
        nofailover_tag = tags.get("nofailover")
        priority = parse_int(tags.get("failover_priority"))
        if nofailover_tag is not None:
            nofailover = bool(parse_bool(nofailover_tag))
            priority = 0 if nofailover else (1 if priority is None else priority)
        else:
            nofailover = priority is not None and priority <= 0
            priority = 1 if priority is None else priority
        return cls(
            name=name,
            reachable=True,
            is_primary=is_primary,
            wal_position=wal,
            timeline=parse_int(body.get("timeline")),
            nofailover=nofailover,
            failover_priority=priority,
            watchdog_failed=bool(body.get("watchdog_failed")),
        )

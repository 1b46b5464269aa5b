"""What the controller knows, and the pg_state it publishes (pure: no I/O, no clock).

An Observation is what the monitor saw at one moment (postmaster.pid, the monitoring query, pg_controldata).
Memory is what the loop remembers between observations (whether PostgreSQL is meant to run, the operation in
progress, a failure state). `pg_state()` turns both into the event body of docs/protocol.md (C91-C93, W1).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.model.member import parse_int


class DataDir(StrEnum):
    MISSING = "missing"
    EMPTY = "empty"
    INITIALIZED = "initialized"
    INVALID = "invalid"  # not empty, no global/pg_control


UNCLEAN_STATES = frozenset({"in production", "in archive recovery", "in crash recovery", "shutting down"})
REPLICA_STATES = frozenset({"in archive recovery", "shut down in recovery"})


def classify_data_dir(names: Sequence[str] | None, has_pg_control: bool) -> DataDir:
    """names: the directory listing, None when it does not exist. lost+found and dotfiles do not count (C9)."""
    if has_pg_control:
        return DataDir.INITIALIZED
    if names is None:
        return DataDir.MISSING
    if all(n.startswith(".") or n == "lost+found" for n in names):
        return DataDir.EMPTY
    return DataDir.INVALID


# ---- parsing ------------------------------------------------------------------------------------------------------


def parse_lsn(text: str | None) -> int | None:
    match = re.fullmatch(r"\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*", text or "")
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16) if match else None


def parse_controldata(text: str) -> dict[str, str]:
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            result[key.strip()] = value.strip()
    return result


def controldata_summary(data: Mapping[str, str]) -> dict[str, Any]:
    if not data:
        return {}
    return {
        "state": data.get("Database cluster state"),
        "timeline": parse_int(data.get("Latest checkpoint's TimeLineID")),
        "checkpoint_lsn": parse_lsn(data.get("Latest checkpoint location")),
    }


@dataclass(frozen=True)
class TimelineHistoryFile:
    """pg_wal/<timeline>.history: one [parent timeline, switchpoint LSN, reason] line per earlier timeline."""

    timeline: int
    lines: tuple[tuple[int, int, str], ...]
    mtime: float

    def as_body(self) -> dict[str, Any]:
        return {"timeline": self.timeline, "lines": [list(line) for line in self.lines], "mtime": self.mtime}


def parse_history_file(text: str) -> tuple[tuple[int, int, str], ...]:
    """Tab-separated 'timeline<TAB>LSN<TAB>reason' lines; comments and malformed lines are skipped."""
    lines = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = raw.split("\t")
        if len(parts) < 2:
            parts = raw.split(None, 2)
        timeline, lsn = parse_int(parts[0]), parse_lsn(parts[1]) if len(parts) > 1 else None
        if timeline is None or lsn is None:
            continue
        lines.append((timeline, lsn, parts[2].strip() if len(parts) > 2 else ""))
    return tuple(lines)


@dataclass(frozen=True)
class PidFile:
    pid: int
    data_dir: str
    start_time: float | None
    status: str | None  # "starting", "stopping", "ready", "standby" (line 8), None early in startup


def parse_pid_file(text: str) -> PidFile | None:
    lines = text.splitlines()
    pid = parse_int(lines[0]) if lines else None
    if pid is None or pid <= 0:
        return None
    start = parse_int(lines[2]) if len(lines) > 2 else None
    status = lines[7].strip() or None if len(lines) > 7 else None
    return PidFile(pid=pid, data_dir=lines[1].strip() if len(lines) > 1 else "", start_time=start, status=status)


# ---- observations -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SqlStatus:
    """The result of the monitoring query."""

    in_recovery: bool
    postmaster_start_time: str
    server_version: int
    sysid: str | None = None
    current_lsn: int | None = None
    primary_timeline: int | None = None
    received_lsn: int | None = None
    replayed_lsn: int | None = None
    replayed_timestamp: str | None = None
    paused: bool = False
    checkpoint_timeline: int | None = None
    restore_command: str = ""
    receiver: Mapping[str, Any] | None = None
    replication: Sequence[Mapping[str, Any]] = ()
    postmaster_settings: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    pending_restart: bool = False
    synchronous_standby_names: str | None = None
    replication_lsns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    slots: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def timeline(self) -> int | None:
        if not self.in_recovery:
            return self.primary_timeline
        received = parse_int((self.receiver or {}).get("received_tli"))
        return received or self.checkpoint_timeline

    @property
    def replication_state(self) -> str | None:
        """C92: streaming when the WAL receiver streams, in archive recovery when restore_command is set."""
        if not self.in_recovery:
            return None
        if (self.receiver or {}).get("status") == "streaming":
            return "streaming"
        return "in archive recovery" if self.restore_command else None


@dataclass(frozen=True)
class Observation:
    ts: float  # epoch seconds when it was read
    order: float  # monotonic time when the reading started: a later reading replaces an earlier one
    data_dir: DataDir
    running: bool = False
    pid: int | None = None
    pm_status: str | None = None
    sql: SqlStatus | None = None
    controldata: Mapping[str, str] = field(default_factory=dict)
    standby_signal: bool = False
    history: TimelineHistoryFile | None = None  # the running primary's timeline history file (B7)

    @property
    def accepting(self) -> bool:
        return self.sql is not None


@dataclass(frozen=True)
class Memory:
    """What the loop remembers between observations."""

    intended_running: bool | None = None  # None: unknown since the controller started
    phase: str | None = None  # the state of the operation in progress ("starting", ...)
    failure: str | None = None  # "start failed", ... kept until an operation starts or running/accepting change
    failure_at: tuple[bool, bool] | None = None
    operation: Mapping[str, Any] | None = None
    following: str | None = None
    wanted_logical: tuple[str, ...] = ()  # the logical slots of the last pg.sync_slots (for slots_to_copy)
    recopy: tuple[str, ...] = ()  # copied logical slots that cannot advance: their WAL is gone here


def remember(memory: Memory, obs: Observation) -> Memory:
    changes: dict[str, Any] = {}
    if memory.intended_running is None and obs.running:
        changes["intended_running"] = True  # re-adopted: if it vanishes now, it crashed
    if memory.failure is not None and memory.failure_at != (obs.running, obs.accepting):
        changes.update(failure=None, failure_at=None)
    return dataclasses.replace(memory, **changes) if changes else memory


def derive_role(obs: Observation) -> str:
    if obs.data_dir != DataDir.INITIALIZED:
        return "uninitialized"
    if obs.sql is not None:
        return "replica" if obs.sql.in_recovery else "master"
    cluster_state = obs.controldata.get("Database cluster state")
    if cluster_state in REPLICA_STATES:
        return "replica"
    if cluster_state:
        return "master"
    return "replica" if obs.standby_signal else "master"


def derive_state(obs: Observation, memory: Memory) -> str:
    """C91."""
    if memory.phase:
        return memory.phase
    if memory.failure:
        return memory.failure
    if obs.running:
        if not obs.accepting and obs.pm_status in ("starting", "stopping"):
            return obs.pm_status
        return "running"
    if memory.intended_running is not None:
        return "crashed" if memory.intended_running else "stopped"
    return "crashed" if obs.controldata.get("Database cluster state") in UNCLEAN_STATES else "stopped"


def xlog(sql: SqlStatus | None) -> dict[str, Any] | None:
    """W1: primary {"location"}; replica {"received_location", "replayed_location", "replayed_timestamp", "paused"}."""
    if sql is None:
        return None
    if not sql.in_recovery:
        return {"location": sql.current_lsn}
    received = sql.received_lsn if sql.received_lsn is not None else sql.replayed_lsn
    return {
        "received_location": received,
        "replayed_location": sql.replayed_lsn,
        "replayed_timestamp": sql.replayed_timestamp,
        "paused": sql.paused,
    }


def wal_position(sql: SqlStatus | None) -> int | None:
    if sql is None:
        return None
    if not sql.in_recovery:
        return sql.current_lsn
    values = [v for v in (sql.received_lsn, sql.replayed_lsn) if v is not None]
    return max(values) if values else None


def pg_state(
    name: str, obs: Observation, memory: Memory, *, binary_version: int | None, pending: bool
) -> dict[str, Any]:
    """The body of the postmaster.pg_state event (docs/protocol.md)."""
    sql = obs.sql
    cd = obs.controldata
    sysid = (sql.sysid if sql else None) or cd.get("Database system identifier") or None
    timeline = sql.timeline if sql else parse_int(cd.get("Latest checkpoint's TimeLineID"))
    return {
        "name": name,
        "ts": obs.ts,
        "data_dir": str(obs.data_dir),
        "sysid": sysid,
        "server_version": sql.server_version if sql else binary_version,
        "running": obs.running,
        "accepting": obs.accepting,
        "state": derive_state(obs, memory),
        "role": derive_role(obs),
        "postmaster_start_time": sql.postmaster_start_time if sql else None,
        "timeline": timeline,
        "xlog": xlog(sql),
        "wal_position": wal_position(sql),
        "replication": [dict(r) for r in sql.replication] if sql else [],
        "replication_state": sql.replication_state if sql else None,
        "following": memory.following,
        "pending_restart": pending and obs.running,
        "controldata": controldata_summary(cd),
        "replication_lsns": {k: dict(v) for k, v in sql.replication_lsns.items()} if sql else {},
        "synchronous_standby_names": sql.synchronous_standby_names if sql else None,
        "slots": {k: dict(v) for k, v in sql.slots.items()} if sql else {},
        "slots_to_copy": slots_to_copy(sql, memory.wanted_logical, memory.recopy),
        "operation": dict(memory.operation) if memory.operation else None,
        "timeline_history": obs.history.as_body() if obs.history is not None and sql and not sql.in_recovery else None,
    }


def slots_to_copy(sql: SqlStatus | None, wanted_logical: Sequence[str], recopy: Sequence[str] = ()) -> list[str]:
    """Logical slots wanted on a running replica that it does not have yet, or must copy again (C32)."""
    if sql is None or not sql.in_recovery:
        return []
    return sorted(name for name in wanted_logical if name not in sql.slots or name in recopy)


_KEY_FIELDS = (
    "synchronous_standby_names",
    "slots_to_copy",
    "running",
    "accepting",
    "role",
    "state",
    "timeline",
    "following",
    "pending_restart",
    "data_dir",
    "replication_state",
    "sysid",
    "postmaster_start_time",
)


def state_key(state: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes a pg_state worth publishing at once rather than on the next heartbeat."""
    op = state.get("operation") or {}
    return (*(state.get(k) for k in _KEY_FIELDS), op.get("id"), op.get("state"))


# ---- operations ---------------------------------------------------------------------------------------------------


def new_operation(op_id: str, name: str, now: float) -> dict[str, Any]:
    """name: the verb of the op ("bootstrap" for pg.bootstrap)."""
    return {
        "id": op_id,
        "name": name,
        "state": "running",
        "error": None,
        "started": now,
        "finished": None,
        "result": {},
    }


def finished_operation(
    operation: Mapping[str, Any], now: float, *, error: str | None = None, result: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        **operation,
        "state": "failed" if error else "succeeded",
        "error": error,
        "finished": now,
        "result": dict(result or {}),
    }

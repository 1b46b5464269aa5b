"""What a decision asks the shell to do. Each action is plain data; the shell maps it to one request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Action:
    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class ProbePeers(Action):
    """GET /patroni of these members in parallel, then decide again with their answers (A8)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class CallFailsafe(Action):
    """POST /failsafe to these members (name, api_url) in parallel, then decide again with the answers (C84)."""

    targets: tuple[tuple[str, str], ...]
    body: Mapping[str, Any]


# --- DCS (dcs_proxy) ---


@dataclass(frozen=True)
class Initialize(Action):
    """create_new: the initialize race (create-if-absent); else write the system identifier (B5)."""

    create_new: bool
    sysid: str


@dataclass(frozen=True)
class CancelInitialization(Action):
    pass


@dataclass(frozen=True)
class WriteConfig(Action):
    """Write /config from bootstrap.dcs after bootstrapping (B6)."""

    value: Mapping[str, Any]


@dataclass(frozen=True)
class TakeLeader(Action):
    """Atomic create-if-absent of the leader key (A5)."""


@dataclass(frozen=True)
class RefreshLeader(Action):
    """Compare-and-set the leader key and renew its TTL; write /status (A4, B10)."""

    last_lsn: int | None = None
    slots: Mapping[str, int] | None = None
    failsafe: Mapping[str, str] | None = None  # C83: written to /failsafe with the refresh when given


@dataclass(frozen=True)
class ReleaseLeader(Action):
    last_lsn: int | None = None


@dataclass(frozen=True)
class TouchMember(Action):
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteHistory(Action):
    value: str
    version: int | None


@dataclass(frozen=True)
class WriteSync(Action):
    """`/sync` = {leader: me, sync_standby: "a,b" | null[, quorum: q]}, compare-and-set on version (B9)."""

    members: tuple[str, ...]
    quorum: int | None
    version: int | None


@dataclass(frozen=True)
class DeleteSync(Action):
    version: int | None


@dataclass(frozen=True)
class ClearFailover(Action):
    """Write `{}` into /failover, compare-and-set on its version (A33)."""

    version: int | None


# --- PostgreSQL (postmaster) ---


@dataclass(frozen=True)
class PgConfigure(Action):
    dynamic: Mapping[str, Any]


@dataclass(frozen=True)
class PgBootstrap(Action):
    pass


@dataclass(frozen=True)
class PgClone(Action):
    source: Mapping[str, Any]
    leader: Mapping[str, Any] | None


@dataclass(frozen=True)
class PgStart(Action):
    role: str  # "primary" | "replica"
    leader: Mapping[str, Any] | None = None
    timeout: float | None = None  # how long to wait for connections (A34); None: pg_ctl_timeout


@dataclass(frozen=True)
class PgStop(Action):
    mode: str
    checkpoint: bool = False  # a switchover's graceful stop: CHECKPOINT first, so the shutdown is short (A22)


@dataclass(frozen=True)
class PgRestart(Action):
    leader: Mapping[str, Any] | None = None
    timeout: float | None = None  # POST /restart's timeout (A34)


@dataclass(frozen=True)
class PgReload(Action):
    pass


@dataclass(frozen=True)
class PgCancel(Action):
    """End the long operation in progress (D32: a forced reinitialize)."""


@dataclass(frozen=True)
class PgSetSync(Action):
    """synchronous_standby_names (C74); at_lsn: the primary's position now, from which on the named standbys
    must have flushed before they count as synchronous (C73)."""

    mode: str  # "off" | "on" | "quorum"
    num: int
    names: tuple[str, ...]
    strict: bool = False
    at_lsn: int | None = None


@dataclass(frozen=True)
class PgSyncSlots(Action):
    slots: Mapping[str, Any]
    ignore: tuple[Any, ...] = ()
    source: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PgCopySlots(Action):
    source: Mapping[str, Any]
    names: tuple[str, ...]


@dataclass(frozen=True)
class PgReinitialize(Action):
    """Wipe the data directory and clone again (C20)."""

    source: Mapping[str, Any]
    leader: Mapping[str, Any] | None


@dataclass(frozen=True)
class PgPromote(Action):
    pass


@dataclass(frozen=True)
class PgDemote(Action):
    mode: str  # offline | graceful | immediate | immediate-nolock (A22)
    leader: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PgFollow(Action):
    leader: Mapping[str, Any] | None


# --- watchdog (watchdogd) ---


@dataclass(frozen=True)
class WatchdogArm(Action):
    timeout: float


@dataclass(frozen=True)
class WatchdogKeepalive(Action):
    pass


@dataclass(frozen=True)
class WatchdogDisarm(Action):
    pass


PG_ACTIONS = (
    PgBootstrap,
    PgClone,
    PgStart,
    PgStop,
    PgRestart,
    PgReload,
    PgCancel,
    PgReinitialize,
    PgPromote,
    PgDemote,
    PgFollow,
    PgConfigure,
)

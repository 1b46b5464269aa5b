"""The brain's data: what a tick sees (Snapshot), what survives between ticks (Memory), what it decides
(Decision), and how the outcome of each action is folded back into memory (record). Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop.status import NodeFacts, member_data
from services.ha_loop.views import PeerStatus, PgView
from shared.config.dynamic import DynamicConfig
from shared.model import Cluster


class Reason(StrEnum):
    NO_PG_STATE = "no_pg_state"
    DCS_UNREACHABLE = "dcs_unreachable"
    DCS_LOST_DEMOTE = "dcs_lost_demote"
    LOCK_LOST_DEMOTE = "lock_lost_demote"
    BOOTSTRAP_RACE = "bootstrap_race"
    BOOTSTRAP_WAIT = "bootstrap_wait"
    BOOTSTRAP_RUNNING = "bootstrap_running"
    BOOTSTRAP_DONE = "bootstrap_done"
    BOOTSTRAP_FAILED = "bootstrap_failed"
    CLONE = "clone"
    OPERATION_RUNNING = "operation_running"
    LOCK_DURING_OPERATION = "lock_during_operation"
    DATA_DIR_INVALID = "data_dir_invalid"
    SYSID_MISMATCH = "sysid_mismatch"
    START_PRIMARY = "start_primary"
    START_REPLICA = "start_replica"
    STARTING = "starting"
    NEED_PEERS = "need_peers"
    PROMOTE = "promote"
    ACQUIRED_LOCK = "acquired_lock"
    PROMOTE_WITH_LOCK = "promote_with_lock"
    NOT_HEALTHIEST = "not_healthiest"
    NOT_ALLOWED = "not_allowed"
    LEADER_OK = "leader_ok"
    DEMOTE_NOT_LEADER = "demote_not_leader"
    FOLLOW = "follow"
    FOLLOW_AFTER_LOST_RACE = "follow_after_lost_race"
    REPLICA_OK = "replica_ok"
    SWITCHOVER_DEMOTE = "switchover_demote"
    SWITCHOVER_RELEASE = "switchover_release"
    SWITCHOVER_AWAIT = "switchover_await"
    FAILOVER_KEY_CLEANUP = "failover_key_cleanup"
    PAUSED = "paused"
    PAUSE_RELEASE = "pause_release"
    RESTART = "restart"
    RELOAD = "reload"
    REINITIALIZE = "reinitialize"
    FAILSAFE_ACTIVE = "failsafe_active"
    FAILSAFE_FOLLOW = "failsafe_follow"
    WATCHDOG_STEP_DOWN = "watchdog_step_down"
    START_TIMEOUT = "start_timeout"


@dataclass(frozen=True)
class Snapshot:
    now: float
    facts: NodeFacts
    dynamic: DynamicConfig
    cluster: Cluster | None  # None: the DCS cannot be read now
    pg: PgView | None  # None: the postmaster controller has not answered recently
    peers: Mapping[str, PeerStatus] | None = None  # None: not probed in this tick
    failsafe_acks: Mapping[str, bool] | None = None  # C84: the members' answers to POST /failsafe, this tick
    last_cluster: Cluster | None = None  # the last view read, when `cluster` is None (C84 needs its /failsafe)

    @property
    def me(self) -> str:
        return self.facts.name

    @property
    def paused(self) -> bool:
        return self.dynamic.pause


@dataclass(frozen=True)
class FailsafeLeader:
    """The primary that last POSTed /failsafe here (C85): followed while `until` has not passed."""

    name: str
    conn_url: str | None
    api_url: str | None
    slots: Mapping[str, int]
    until: float

    def as_ref(self) -> dict[str, object] | None:
        if not self.conn_url:
            return None
        return {"name": self.name, "conn_url": self.conn_url, "api_url": self.api_url}


@dataclass(frozen=True)
class RestartRequest:
    """POST /restart (D29): the conditions to check when it runs; schedule for a scheduled restart."""

    id: str
    role: str | None = None
    postgres_version: str | None = None
    restart_pending: bool | None = None
    timeout: float | None = None
    schedule: str | None = None  # ISO-8601 with a timezone
    schedule_ts: float | None = None  # the same as epoch seconds
    postmaster_start_time: str | None = None  # at scheduling: a restart by someone else cancels it (A52)

    def as_body(self) -> dict[str, Any]:
        """The scheduled_restart value of GET /patroni and the member key (W1, W6)."""
        body: dict[str, Any] = {"schedule": self.schedule}
        for key in ("role", "postgres_version", "restart_pending", "timeout"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body


@dataclass(frozen=True)
class ControlResult:
    """The answer to a control request that the REST API waits for (docs/protocol.md)."""

    id: str
    status: int
    message: str


@dataclass(frozen=True)
class Memory:
    """Everything that survives between ticks. The initial value is the cautious one."""

    lock_ok: bool = False  # the last take/refresh of the leader key succeeded
    lock_failure: str | None = None  # "lost" (CAS failed) or "unreachable" (DCS error) on the last refresh
    lost_race: bool = False  # the last take_leader attempt found the key taken
    bootstrapping: bool = False  # we won the initialize race and asked for a bootstrap
    handled_op: str | None = None  # the finished pg operation whose outcome was acted on
    configured: str | None = None  # fingerprint of the dynamic config last sent to postmaster
    stepping_down: bool = False  # a switchover stops PostgreSQL; the lock is released once it is down (A26)
    restart: RestartRequest | None = None  # an immediate restart to carry out (D29)
    restart_op: str | None = None  # the pg operation carrying it out
    scheduled_restart: RestartRequest | None = None  # at most one (A52)
    reload_pending: bool = False  # POST /reload: handled by the next regular tick (D31)
    reinit: str | None = None  # a requested reinitialize (its request id) not started yet (C20)
    reinit_force: bool = False  # D32: it cancels the operation in progress first
    cancelled_op: str | None = None  # the operation pg.cancel was sent for
    sync_lsn: int | None = None  # the primary's position when synchronous_standby_names last changed (C73)
    slots_sent: str | None = None  # fingerprint of the slots last sent to postmaster
    releasing_until: float | None = None  # A53: tagged nosync before a restart, waiting to be released
    failsafe_active: bool = False  # C84: primary without a DCS, kept alive by every member in /failsafe
    failsafe_leader: FailsafeLeader | None = None  # C85: the primary that last called POST /failsafe here
    watchdog_armed: bool = False  # the last wd.arm succeeded and no disarm or failed keepalive came since
    watchdog_lost: bool = False  # a keepalive failed: watchdogd restarted, fired or does not answer (C89)
    watchdog_refused: bool = False  # the last wd.arm failed (required mode: leadership is refused)
    starting_since: float | None = None  # A38: when this lock holder began (re)starting PostgreSQL as a primary
    wiped_since: float | None = None  # A51: when this replica first saw the cluster without /initialize


@dataclass(frozen=True)
class Decision:
    actions: tuple[a.Action, ...]
    memory: Memory
    reason: Reason
    detail: str
    results: tuple[ControlResult, ...] = ()  # control requests answered by this decision
    wake_in: float | None = None  # tick again after this many seconds (a scheduled action's exact time)

    @property
    def needs_peers(self) -> bool:
        return any(isinstance(x, a.ProbePeers) for x in self.actions)

    @property
    def needs_failsafe_acks(self) -> bool:
        return any(isinstance(x, a.CallFailsafe) for x in self.actions)


@dataclass(frozen=True)
class Outcome:
    """What the shell observed when running one action."""

    ok: bool  # the request was answered without error
    applied: bool | None = None  # for DCS mutations: false = lost race / failed compare-and-set
    error_code: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.ok and self.applied is not False


def fingerprint(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def record(memory: Memory, action: a.Action, outcome: Outcome) -> Memory:
    """Fold one action's outcome into memory (pure)."""
    if isinstance(action, a.TakeLeader):
        if outcome.succeeded:  # C86: a new leader starts with no failsafe state
            return replace(
                memory, lock_ok=True, lock_failure=None, lost_race=False, failsafe_active=False, failsafe_leader=None
            )
        return replace(memory, lock_ok=False, lost_race=outcome.ok and outcome.applied is False)
    if isinstance(action, a.RefreshLeader):
        if outcome.succeeded:
            return replace(memory, lock_ok=True, lock_failure=None, failsafe_active=False)
        return replace(memory, lock_ok=False, lock_failure="lost" if outcome.ok else "unreachable")
    if isinstance(action, a.ReleaseLeader) and outcome.ok:
        return replace(memory, lock_ok=False, stepping_down=False)
    if isinstance(action, a.Initialize) and action.create_new and outcome.succeeded:
        return replace(memory, bootstrapping=True)
    if isinstance(action, a.CancelInitialization) and outcome.ok:
        return replace(memory, bootstrapping=False)
    if isinstance(action, a.PgConfigure) and outcome.ok:
        return replace(memory, configured=fingerprint(action.dynamic))
    if isinstance(action, a.PgDemote) and outcome.ok:
        return replace(memory, lock_failure=None, lock_ok=False)
    if isinstance(action, a.PgStop) and action.checkpoint and not outcome.ok:
        return replace(memory, stepping_down=False)
    if isinstance(action, a.PgRestart):
        if outcome.ok:
            return replace(memory, restart_op=str(outcome.body.get("operation") or ""))
        return replace(memory, restart=None, restart_op=None, releasing_until=None)
    if isinstance(action, a.WatchdogArm):
        armed = outcome.ok
        return replace(memory, watchdog_armed=armed, watchdog_lost=False, watchdog_refused=not armed)
    if isinstance(action, a.WatchdogKeepalive) and not outcome.ok:
        return replace(memory, watchdog_armed=False, watchdog_lost=True)
    if isinstance(action, a.WatchdogDisarm) and outcome.ok:
        return replace(memory, watchdog_armed=False, watchdog_lost=False)
    if isinstance(action, a.PgReload) and outcome.ok:
        return replace(memory, reload_pending=False)
    if isinstance(action, a.PgReinitialize):
        return replace(memory, reinit=None, reinit_force=False)
    if isinstance(action, a.PgSetSync) and outcome.ok:
        return replace(memory, sync_lsn=action.at_lsn)
    if isinstance(action, a.PgSyncSlots) and outcome.ok:
        return replace(memory, slots_sent=slots_fingerprint(action.slots, action.ignore))
    return memory


def slots_fingerprint(slots: Mapping[str, Any], ignore: Any) -> str:
    return json.dumps({"slots": slots, "ignore": list(ignore)}, sort_keys=True, default=str)


# The role transition table: which PostgreSQL action a decision may take from which local role.
# "stopped" means PostgreSQL is not running; decide() never emits a pg action outside this table.
ALLOWED_FROM: dict[type[a.Action], frozenset[str]] = {
    a.PgBootstrap: frozenset({"uninitialized"}),
    a.PgClone: frozenset({"uninitialized"}),
    a.PgStart: frozenset({"stopped"}),
    a.PgPromote: frozenset({"replica"}),
    a.PgDemote: frozenset({"master"}),
    a.PgFollow: frozenset({"replica"}),
    a.PgStop: frozenset({"master", "replica"}),
    a.PgRestart: frozenset({"master", "replica"}),
    a.PgReinitialize: frozenset({"replica", "stopped", "uninitialized"}),
    a.PgCopySlots: frozenset({"replica"}),
}


def local_role(pg: PgView) -> str:
    """The row of ALLOWED_FROM this PostgreSQL is in."""
    if not pg.has_data:
        return "uninitialized"
    if not pg.running:
        return "stopped"
    return "master" if pg.is_primary else "replica"


def _watchdog_release(s: Snapshot, m: Memory, steps: tuple[a.Action, ...]) -> list[a.Action]:
    """C89: the watchdog is disarmed after a demotion, in pause, and whenever this node is not the leader."""
    if not m.watchdog_armed or any(isinstance(x, a.WatchdogArm | a.WatchdogDisarm) for x in steps):
        return []
    holding = s.cluster is not None and s.cluster.leader_name == s.me
    if s.paused or not holding or any(isinstance(x, a.PgDemote | a.ReleaseLeader) for x in steps):
        return [a.WatchdogDisarm()]
    return []


class Plan:
    """Builds a Decision; the member key is touched last so that a DCS error cannot block the lock refresh."""

    def __init__(self, s: Snapshot, m: Memory) -> None:
        self.s = s
        self.m = m
        self.results: list[ControlResult] = []  # answers gathered before the decision is done

    def done(
        self,
        reason: Reason,
        detail: str,
        *steps: a.Action,
        memory: Memory | None = None,
        results: tuple[ControlResult, ...] = (),
        wake_in: float | None = None,
    ) -> Decision:
        mem = memory or self.m
        plan = list(steps) + _watchdog_release(self.s, mem, steps)
        if self.s.cluster is not None and not any(isinstance(x, a.ProbePeers) for x in plan):
            data = member_data(self.s.facts, self.s.pg, self.s.paused, nosync=mem.releasing_until is not None)
            if mem.scheduled_restart is not None:
                data["scheduled_restart"] = {
                    **mem.scheduled_restart.as_body(),
                    "postmaster_start_time": mem.scheduled_restart.postmaster_start_time,
                }
            plan.append(a.TouchMember(data))
        return Decision(tuple(plan), mem, reason, detail, (*self.results, *results), wake_in)

    def probe(self, names: tuple[str, ...], detail: str = "asking the other members for their state") -> Decision:
        return Decision((a.ProbePeers(names),), self.m, Reason.NEED_PEERS, detail, tuple(self.results))

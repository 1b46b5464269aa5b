"""The brain's shell: gathers a snapshot, calls decide(), runs the plan, publishes node_status.

It ticks every loop_wait, and at once when the DCS view changes (leader, initialize, config, failover,
sync keys), when PostgreSQL's state changes, when a control request arrives, or when a plan failed.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop.controls import is_sync_member
from services.ha_loop.core import Decision, Memory, Outcome, Snapshot, decide, record
from services.ha_loop.failsafe import is_active as failsafe_is_active
from services.ha_loop.probes import call_failsafe, probe_members, race_targets
from services.ha_loop.requests import ControlDesk
from services.ha_loop.runner import Clients, Runner
from services.ha_loop.status import NodeFacts, member_data, node_role, patroni_body
from services.ha_loop.views import PgView
from shared.config import ConfigError, NodeConfig
from shared.config.dynamic import DynamicConfig, effective
from shared.config.reread import reread
from shared.model import Cluster
from shared.model.cluster_json import synchronous_mode
from shared.model.member import parse_bool
from shared.protocol.endpoints import Service, Topic, pub_path, router_path
from shared.protocol.envelope import Event, Request
from shared.protocol.errors import RemoteError
from shared.protocol.ops import HA
from shared.protocol.transport import Client, Publisher, RouterServer, Subscriber
from shared.runtime import Loop, Runtime, parse_args
from shared.tls import client_context

log = logging.getLogger("ha_loop")

MIN_TICK_GAP = 0.05  # seconds between two ticks, however many wake-ups arrive
RETRY_AFTER_FAILURE = 0.1
PG_STATE_FRESH = 3.0  # a pg_state event older than this is not trusted


def facts_from_config(config: NodeConfig) -> NodeFacts:
    watchdog = config.watchdog
    mode = str(watchdog.get("mode", "automatic")).lower()
    margin = watchdog.get("safety_margin", 5)
    return NodeFacts(
        name=config.name,
        scope=config.scope,
        conn_url=config.conn_url,
        api_url=config.api_url,
        tags=config.tags,
        published_tags=config.published_tags,
        can_bootstrap="bootstrap" in config.data,
        bootstrap_dcs=config.bootstrap_dcs,
        proxy_url=(
            f"postgres://{config.postgresql['proxy_address']}/postgres"
            if config.postgresql.get("proxy_address")
            else None
        ),
        watchdog_required=mode in ("required", "require"),
        watchdog_safety_margin=int(margin) if isinstance(margin, int) else 5,
        use_slots=_local_use_slots(config),
    )


def _local_use_slots(config: NodeConfig) -> bool | None:
    value = config.postgresql.get("use_slots")
    return None if value is None else bool(parse_bool(value))


def _basic_auth(restapi: Any) -> str | None:
    """The Authorization header for calls to other members' unsafe endpoints (restapi.authentication)."""
    auth = restapi.get("authentication") if isinstance(restapi, Mapping) else None
    if not isinstance(auth, Mapping) or not auth.get("username"):
        return None
    token = base64.b64encode(f"{auth['username']}:{auth.get('password') or ''}".encode()).decode()
    return f"Basic {token}"


def _sync_role(cluster: Cluster | None, name: str, dynamic: Mapping[str, Any]) -> str | None:
    """The key GET /patroni reports for a replica listed in /sync: sync_standby, or quorum_standby (4.x)."""
    if cluster is None or not cluster.sync.matches(name):
        return None
    mode = synchronous_mode(dynamic)
    return None if mode == "off" else ("quorum_standby" if mode == "quorum" else "sync_standby")


def _view_fingerprint(view: dict[str, Any] | None) -> tuple[Any, ...]:
    if view is None:
        return (None,)
    keys = view.get("keys") or {}

    def value(name: str) -> Any:
        kv = keys.get(name)
        return kv.get("value") if isinstance(kv, dict) else None

    config = keys.get("config")
    return (
        bool(view.get("ok")),
        value("leader"),
        value("initialize"),
        config.get("version") if isinstance(config, dict) else None,
        value("failover"),
        value("sync"),
    )


def _pg_fingerprint(pg: dict[str, Any] | None) -> tuple[Any, ...]:
    if pg is None:
        return (None,)
    op = pg.get("operation") or {}
    return (
        pg.get("data_dir"),
        pg.get("running"),
        pg.get("accepting"),
        pg.get("role"),
        pg.get("state"),
        op.get("id") if isinstance(op, dict) else None,
        op.get("state") if isinstance(op, dict) else None,
    )


class Brain:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.config = runtime.config
        self.facts = facts_from_config(self.config)
        self.loop = Loop()
        ctx, run_dir = self.loop.ctx, runtime.run_dir
        self.clients = Clients(
            dcs=Client(ctx, router_path(run_dir, Service.DCS_PROXY)),
            pg=Client(ctx, router_path(run_dir, Service.POSTMASTER)),
            wd=Client(ctx, router_path(run_dir, Service.WATCHDOGD)),
        )
        self.memory = Memory()
        self.dynamic: DynamicConfig = effective(None, self.facts.bootstrap_dcs)
        self.runner = Runner(
            self.clients,
            self.facts.name,
            ttl=lambda: self.dynamic.ttl,
            dcs_timeout=lambda: float(self.dynamic.retry_timeout),
            watchdog_required=self.facts.watchdog_required,
        )
        self.publisher = Publisher(ctx, pub_path(run_dir, Service.HA_LOOP), group=runtime.group)
        self.desk = ControlDesk(self)
        self.server = RouterServer(
            ctx,
            router_path(run_dir, Service.HA_LOOP),
            {"ha.status": self._on_status, "ha.wakeup": self._on_wakeup, **self.desk.handlers()},
            HA,
            group=runtime.group,
        )
        self.subscriber = Subscriber(
            ctx,
            [pub_path(run_dir, Service.DCS_PROXY), pub_path(run_dir, Service.POSTMASTER)],
            [Topic.CLUSTER_VIEW, Topic.PG_STATE],
        )
        self.view: dict[str, Any] | None = None
        self.view_at = 0.0
        self.cluster_ok_at = time.time()  # the last time a current view was read (at start: give it retry_timeout)
        self.pg_state: dict[str, Any] | None = None
        self.pg_state_at = 0.0
        self.cluster: Cluster | None = None
        self.last_cluster: Cluster | None = None  # the last view read: C84 needs its /failsafe when the DCS is gone
        self.config_data: Mapping[str, Any] | None = None  # the last /config value read (A51)
        self.api_auth = _basic_auth(self.config.data.get("restapi"))
        self.tls = client_context(self.config.data)  # for https members (D40)
        self.last: Decision | None = None
        self.tick_count = 0
        self.tick_started = 0.0
        self.tick_finished = 0.0
        self.next_tick = time.time()
        self._timer: Any = None
        self._seen_view: tuple[Any, ...] = ()
        self._seen_pg: tuple[Any, ...] = ()
        self._failures = 0

    # --- wiring -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.loop.add_reader(self.server.socket, self.server.process)
        self.loop.add_reader(self.subscriber.socket, self._on_events)
        self.loop.install_signal_handlers()
        self.loop.on_stop(self.shutdown)
        self._schedule(0.2)  # give the subscriptions a moment to connect

    def _schedule(self, delay: float) -> None:
        due = time.time() + delay
        if self._timer is not None and not self._timer.cancelled:
            if self.next_tick <= due:
                return
            self._timer.cancelled = True
        self.next_tick = due
        self._timer = self.loop.call_later(delay, self.tick)

    def wake(self) -> None:
        self._schedule(max(0.0, self.tick_finished + MIN_TICK_GAP - time.time()))

    def _on_status(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        return self.node_status()

    def _on_wakeup(self, body: dict[str, Any], req: Request) -> dict[str, Any]:
        self.wake()
        return {"woken": True}

    def _on_events(self) -> None:
        changed = False
        for event in self.subscriber.drain():
            changed |= self._take_event(event)
        if changed:
            self.publish()

    def _take_event(self, event: Event) -> bool:
        now = time.time()
        if event.topic == Topic.CLUSTER_VIEW:
            self.view, self.view_at = event.body, now
            if _view_fingerprint(event.body) != self._seen_view:
                self.wake()
            return True
        if event.topic == Topic.PG_STATE:
            self.pg_state, self.pg_state_at = event.body, now
            if _pg_fingerprint(event.body) != self._seen_pg:
                self.wake()
            return True
        return False

    # --- the tick ---------------------------------------------------------------------------------

    def read_cluster(self) -> Cluster | None:
        """A current view of the cluster, or None when the DCS has been unreadable for retry_timeout (A7):
        a DCS problem shorter than that (an etcd leader election, a dcs_proxy restart) must not demote."""
        while True:
            # Never wait past retry_timeout since the last current view: a leader must demote by then, on its
            # own, before the watchdog's deadline (ttl - safety_margin) comes near.
            budget = self.dynamic.retry_timeout - (time.time() - self.cluster_ok_at)
            try:
                view = self.clients.dcs.call("dcs.get_cluster", {}, timeout=max(0.1, min(2.0, budget)))
            except RemoteError as exc:
                view, problem = None, exc.message
            else:
                problem = "the DCS view is not current"
            if view is not None and view.get("ok") and isinstance(view.get("keys"), dict):
                self.view, self.view_at = view, time.time()
                self.cluster_ok_at = self.view_at
                return Cluster.from_wire(view["keys"])
            if view is not None:
                self.view, self.view_at = view, time.time()
            if time.time() - self.cluster_ok_at >= self.dynamic.retry_timeout or self.loop.stopping:
                log.warning("cannot read the cluster: %s", problem)
                return None
            time.sleep(0.1)

    def read_pg(self) -> PgView | None:
        try:
            state = self.clients.pg.call("pg.status", {}, timeout=1.0)
            self.pg_state, self.pg_state_at = state, time.time()
        except RemoteError as exc:
            log.warning("cannot read PostgreSQL's state from postmaster: %s", exc.message)
            if self.pg_state is None or time.time() - self.pg_state_at > PG_STATE_FRESH:
                return None
        return PgView.from_wire(self.pg_state) if self.pg_state is not None else None

    def reread_config(self) -> None:
        """D31: the node's configuration file and environment again; the tags (member key), the REST API
        credentials and the client certificate for the other members follow at once. A file that cannot be read or
        is not valid keeps the configuration we have."""
        try:
            config = reread(self.config)
        except ConfigError as exc:
            log.error("the configuration was not reloaded: %s", exc)
            return
        self.config = config
        self.facts = facts_from_config(config)
        self.api_auth = _basic_auth(config.data.get("restapi"))
        self.tls = client_context(config.data)
        log.info("reloaded the configuration from %s", config.haven.get("source_config") or "the environment")

    def last_pg(self) -> PgView | None:
        return PgView.from_wire(self.pg_state) if self.pg_state is not None else None

    def tick(self) -> None:
        self._timer = None
        self.tick_started = time.time()
        self.tick_count += 1
        cluster = self.read_cluster()
        pg = self.read_pg()
        self._seen_view = _view_fingerprint(self.view)
        self._seen_pg = _pg_fingerprint(self.pg_state)
        self.cluster = cluster
        if cluster is not None and cluster.config is not None:
            self.config_data = cluster.config.data
        if cluster is not None:
            # A51: a /config that disappeared keeps its last value (pause stays on) until the leader restores it
            self.dynamic = effective(self.config_data, self.facts.bootstrap_dcs)
            for warning in self.dynamic.warnings:
                log.warning(warning)
        if cluster is not None:
            self.last_cluster = cluster
        last = self.last_cluster if cluster is None else None
        snapshot = Snapshot(time.time(), self.facts, self.dynamic, cluster, pg, last_cluster=last)
        decision = decide(snapshot, self.memory)
        if decision.needs_peers and cluster is not None:
            names = next(x.names for x in decision.actions if isinstance(x, a.ProbePeers))
            listed = cluster.failsafe if isinstance(cluster.failsafe, Mapping) else {}
            peers = probe_members(race_targets(cluster, names, listed), tls=self.tls)
            decision = decide(replace(snapshot, peers=peers, now=time.time()), self.memory)
        if decision.needs_failsafe_acks:
            call = next(x for x in decision.actions if isinstance(x, a.CallFailsafe))
            acks = call_failsafe(call.targets, call.body, self.api_auth, tls=self.tls)
            decision = decide(replace(snapshot, failsafe_acks=acks, now=time.time()), self.memory)
        failed = self.execute(decision)
        self.desk.finished(decision.results)
        self.last = decision
        self.tick_finished = time.time()
        self._log(decision, failed)
        if failed is not None:
            self._failures += 1
            self._schedule(RETRY_AFTER_FAILURE if self._failures <= 3 else float(self.dynamic.loop_wait))
        else:
            self._failures = 0
            delay = max(0.0, self.tick_started + self.dynamic.loop_wait - time.time())
            if decision.wake_in is not None:  # a scheduled action's exact time (A31)
                delay = min(delay, max(0.0, decision.wake_in - (time.time() - self.tick_started)))
            self._schedule(delay)
        self.publish()  # after scheduling, so that tick.next is this tick's next

    def execute(self, decision: Decision) -> a.Action | None:
        """Run the plan in order; stop at the first failure. Returns the failed action, if any."""
        self.memory = decision.memory
        for action in decision.actions:
            if isinstance(action, a.ProbePeers | a.CallFailsafe):
                continue
            outcome: Outcome = self.runner.run(action)
            self.memory = record(self.memory, action, outcome)
            if not outcome.succeeded and not self.runner.is_soft_failure(action):
                return action
        return None

    def _log(self, decision: Decision, failed: a.Action | None) -> None:
        prefix = "PAUSE: " if self.dynamic.pause else ""
        fields: dict[str, Any] = {
            "reason": str(decision.reason),
            "actions": [x.kind for x in decision.actions],
            "tick": self.tick_count,
        }
        if failed is not None:
            fields["failed"] = failed.kind
            log.info(
                "%s%s; stopped: %s did not succeed", prefix, decision.detail, failed.kind, extra={"fields": fields}
            )
            return
        log.info("%s%s", prefix, decision.detail, extra={"fields": fields})

    # --- publishing -------------------------------------------------------------------------------

    def node_status(self) -> dict[str, Any]:
        pg = PgView.from_wire(self.pg_state) if self.pg_state is not None else None
        cluster = self.cluster
        failsafe_primary = self.memory.failsafe_active and pg is not None and pg.is_primary
        has_lock = (cluster is not None and cluster.leader_name == self.facts.name) or failsafe_primary
        pause = self.dynamic.pause
        scheduled = self.memory.scheduled_restart.as_body() if self.memory.scheduled_restart else None
        return {
            "name": self.facts.name,
            "scope": self.facts.scope,
            "ts": time.time(),
            "tick": {
                "count": self.tick_count,
                "started": self.tick_started,
                "finished": self.tick_finished,
                "next": self.next_tick,
            },
            "role": node_role(pg),
            "has_lock": has_lock,
            "lock_ok": has_lock and self.memory.lock_ok,
            "pause": pause,
            "ttl": self.dynamic.ttl,
            "loop_wait": self.dynamic.loop_wait,
            "retry_timeout": self.dynamic.retry_timeout,
            "reason": str(self.last.reason) if self.last else "",
            "detail": self.last.detail if self.last else "starting",
            "patroni": patroni_body(
                self.facts,
                pg,
                cluster,
                pause,
                watchdog_failed=self._watchdog_failed(),
                scheduled_restart=scheduled,
                sync_role=_sync_role(cluster, self.facts.name, self.dynamic.data),
                failsafe_active=failsafe_is_active(self._status_snapshot(cluster, pg), self.memory),
            ),
            "watchdog_failed": self._watchdog_failed(),
            "controls": self.desk.published(),
            "scheduled_restart": scheduled,
        }

    def _watchdog_failed(self) -> bool:
        """C89: only in required mode: the watchdog cannot be used, or its timing leaves no slack."""
        if not self.facts.watchdog_required:
            return False
        margin = self.facts.watchdog_safety_margin
        timeout = self.dynamic.ttl // 2 if margin == -1 else self.dynamic.ttl - margin
        m = self.memory
        return m.watchdog_refused or m.watchdog_lost or timeout - self.dynamic.loop_wait < 0

    def _status_snapshot(self, cluster: Cluster | None, pg: PgView | None) -> Snapshot:
        return Snapshot(time.time(), self.facts, self.dynamic, cluster, pg)

    def publish(self) -> None:
        """Only after the first tick: a restarted brain has nothing to say about the lock until it has looked
        (a premature lock_ok=false would make GET /primary flap on a healthy leader)."""
        if self.last is not None:
            self.publisher.publish(Topic.NODE_STATUS, self.node_status())

    # --- shutdown (A50) ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop PostgreSQL fast; the leader then deletes its key. In pause nothing is stopped."""
        if self.dynamic.pause:
            log.info("Leader key is not deleted and Postgresql is not stopped due paused state")
            return
        pg = self.read_pg()
        if pg is not None and pg.running and not pg.is_primary:
            self._release_sync_duty(pg)
        if pg is not None and pg.running and not self._stop_postgres():
            log.error("PostgreSQL shutdown failed, leader key not removed.")
            return
        cluster = self.read_cluster()
        if cluster is not None and cluster.leader_name == self.facts.name:
            state = self.read_pg()
            lsn = state.raw.get("controldata", {}).get("checkpoint_lsn") if state is not None else None
            self.runner.run(a.ReleaseLeader(lsn if isinstance(lsn, int) else None))
            log.info("Leader key released")
        final = self.read_pg()
        if cluster is not None and final is not None:
            self.runner.run(a.TouchMember({**member_data(self.facts, final, pause=False), "state": "stopped"}))
        self.runner.run(a.WatchdogDisarm())
        self.publish()  # the REST API keeps serving this last word: PostgreSQL is stopped

    def _release_sync_duty(self, pg: PgView) -> None:
        """A53: a synchronous standby tags itself nosync and waits up to 2 x loop_wait for the leader to
        release it, so commits on the primary do not wait for a standby that is going away."""
        cluster = self.read_cluster()
        snapshot = Snapshot(time.time(), self.facts, self.dynamic, cluster, pg)
        if not is_sync_member(snapshot):
            return
        outcome = self.runner.run(a.TouchMember(member_data(self.facts, pg, self.dynamic.pause, nosync=True)))
        if not outcome.ok:
            log.warning("Updating member state failed, skipping synchronous standby disable")
            return
        log.info("Waiting for primary to release us from synchronous standby")
        deadline = time.time() + 2 * self.dynamic.loop_wait
        while time.time() < deadline:
            time.sleep(1.0)
            cluster = self.read_cluster()
            if cluster is None:
                log.warning("Could not get cluster state, skipping synchronous standby disable")
                return
            if not is_sync_member(Snapshot(time.time(), self.facts, self.dynamic, cluster, pg)):
                log.info("Released from synchronous standby")
                return

    def _stop_postgres(self) -> bool:
        try:
            reply = self.clients.pg.call("pg.stop", {"mode": "fast"}, timeout=5.0)
        except RemoteError as exc:
            log.error("cannot stop PostgreSQL: %s", exc.message)
            return False
        op_id = reply.get("operation")
        deadline = time.time() + self.config.pg_ctl_timeout + 5
        fed = time.time()
        while time.time() < deadline:
            if self.memory.watchdog_armed and time.time() - fed >= 1.0:  # a slow stop is not a hung brain
                self.runner.run(a.WatchdogKeepalive())
                fed = time.time()
            pg = self.read_pg()
            op = pg.operation if pg is not None else None
            if op is not None and op.id == op_id and not op.is_running:
                return op.state == "succeeded"
            time.sleep(0.1)
        return False


def run(runtime: Runtime) -> None:
    brain = Brain(runtime)
    brain.start()
    log.info("ha_loop started for %s in cluster %s", brain.facts.name, brain.facts.scope)
    try:
        brain.loop.run()
    finally:
        brain.loop.close()


def main(argv: list[str] | None = None) -> None:
    run(parse_args(Service.HA_LOOP, argv))

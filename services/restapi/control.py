"""The REST API's control plane: unsafe requests are checked here (access, body, Patroni's pre-checks) and what must
happen on the node or in the DCS is handed to the brain as ha.* requests (docs/protocol.md, ha_loop). Answers follow
Patroni 3.2 (D24-D32, D34, D36, D38): same paths, status codes and texts.

Routing is Patroni's: the method and the first path segment select a handler; anything else is 501. The access check
runs first in every handler, so unknown paths are 501 without asking for credentials, as in Patroni.

Waiting (an immediate switchover, an immediate restart) follows the published events: the request thread sleeps on
the snapshot holder and wakes at each new event, so no DCS or brain call is made while waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import zmq

from services.restapi import control_checks as checks
from services.restapi.auth import AccessPolicy, Network, Resolver, check_access, member_endpoints, resolve_endpoints
from services.restapi.auth import resolve_host as default_resolver
from services.restapi.core import (
    ControlRequest,
    Response,
    error_page,
    first_segment,
    json_response,
    not_implemented,
    text_response,
)
from services.restapi.snapshot import Snapshot
from shared.model import Cluster, Member
from shared.model.cluster_json import dynamic_config, is_paused
from shared.model.member import parse_bool
from shared.protocol.errors import ErrorCode, RemoteError
from shared.protocol.transport import Client

log = logging.getLogger("restapi")

BRAIN_TIMEOUT_S = 10.0  # the brain answers at once; this covers a tick in progress (its DCS calls are bounded)
POLL_S = 0.1  # re-check the cluster view at least this often while a switchover runs
CONTROL_POLL_S = 1.0  # re-check node_status at least this often while a restart runs
FAILOVER_GRACE_S = 1.0  # a /failover we never saw counts as removed only after this (Patroni looks first at 1 s)


class StateSource(Protocol):
    """The latest published state and a way to sleep until a newer one arrives (main.SnapshotHolder)."""

    @property
    def current(self) -> Snapshot: ...

    @property
    def generation(self) -> int: ...

    def wait_newer(self, generation: int, timeout: float) -> int: ...


class Brain(Protocol):
    def call(self, op: str, body: dict[str, Any], timeout: float) -> dict[str, Any]: ...


Prober = Callable[[Sequence[Member], float], Mapping[str, Any]]  # name -> GET /patroni answer, None if none
Handler = Callable[[ControlRequest, Snapshot, float], Response]


class ZmqBrain:
    """Requests to ha_loop's ROUTER. A Client serves one thread, CherryPy has many: one Client per thread."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], path: str) -> None:
        self._ctx = ctx
        self._path = path
        self._local = threading.local()
        self._clients: list[Client] = []
        self._lock = threading.Lock()

    def _client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = Client(self._ctx, self._path)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def call(self, op: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self._client().call(op, body, timeout=timeout)

    def close(self) -> None:
        """At shutdown, once no request thread runs any more."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


def brain_failure(op: str, exc: RemoteError) -> Response:
    """The brain did not answer, or refused: 503 with a short reason (the details go to the log)."""
    log.warning("%s: %s", op, exc)
    if exc.code == ErrorCode.DEADLINE_EXCEEDED:
        return text_response(503, "the HA loop did not answer in time")
    if exc.code == ErrorCode.UNAVAILABLE:
        return text_response(503, "the HA loop is unavailable")
    return text_response(503, f"the HA loop refused the request ({exc.code})")


def no_view() -> Response:
    return error_page(503, "No cluster view from the DCS yet")


class Controller:
    """The core.ControlHandler of the running service."""

    def __init__(
        self,
        state: StateSource,
        brain: Brain,
        policy: AccessPolicy | None = None,
        *,
        prober: Prober,
        resolve: Resolver = default_resolver,
        clock: Callable[[], float] = time.time,
        brain_timeout_s: float = BRAIN_TIMEOUT_S,
        on_reload: Callable[[], None] = lambda: None,
    ) -> None:
        """on_reload: POST /reload re-reads the REST API's own settings before the brain is asked (D31)."""
        self.state = state
        self.on_reload = on_reload
        self.brain = brain
        self.policy = policy or AccessPolicy()
        self.prober = prober
        self.resolve = resolve
        self.clock = clock
        self.brain_timeout_s = brain_timeout_s
        self._members: tuple[tuple[tuple[str, int], ...], tuple[Network, ...]] = ((), ())
        self._members_lock = threading.Lock()
        self.routes: dict[tuple[str, str], Handler] = {
            ("PATCH", "config"): self.patch_config,
            ("PUT", "config"): self.put_config,
            ("POST", "switchover"): lambda r, s, n: self.post_failover(r, s, n, checks.SWITCHOVER),
            ("POST", "failover"): lambda r, s, n: self.post_failover(r, s, n, checks.FAILOVER),
            ("DELETE", "switchover"): self.delete_switchover,
            ("POST", "restart"): self.post_restart,
            ("DELETE", "restart"): self.delete_restart,
            ("POST", "reload"): self.post_reload,
            ("POST", "reinitialize"): self.post_reinitialize,
            ("POST", "sigterm"): self.post_sigterm,
            ("POST", "failsafe"): self.post_failsafe,
        }

    def __call__(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        handler = self.routes.get((request.method.upper(), first_segment(request.path)))
        if handler is None:
            return not_implemented(request, snapshot, now)
        denied = check_access(self.policy, request, lambda: self._member_networks(snapshot.cluster))
        if denied is not None:
            log.info("%s %s refused: %d", request.method, request.path, denied.status)
            return denied
        return handler(request, snapshot, now)

    def _member_networks(self, cluster: Cluster | None) -> tuple[Network, ...]:
        """The members' api_url hosts, resolved again only when the set of hosts changes."""
        endpoints = member_endpoints(cluster)
        with self._members_lock:
            if endpoints == self._members[0]:
                return self._members[1]
        networks = resolve_endpoints(endpoints, self.resolve)
        with self._members_lock:
            self._members = (endpoints, networks)
        return networks

    def _call(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """Raises RemoteError; callers turn it into an answer."""
        return self.brain.call(op, body, self.brain_timeout_s)

    # -- /config ----------------------------------------------------------------------------------------------

    def patch_config(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        body = checks.read_json(request, optional=False)
        if isinstance(body, Response):
            return body
        if snapshot.cluster is None or snapshot.cluster.config is None:
            return error_page(503)  # D24: there is no /config to patch
        try:
            reply = self._call("ha.config", {"mode": "patch", "value": body})
        except RemoteError as exc:
            if exc.code == ErrorCode.PRECONDITION_FAILED:
                return error_page(503)
            return brain_failure("ha.config", exc)
        if not reply.get("applied"):
            return error_page(409)
        config = reply.get("config")
        return json_response(200, config if isinstance(config, Mapping) else body)

    def put_config(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        body = checks.read_json(request, optional=False)
        if isinstance(body, Response):
            return body
        try:
            reply = self._call("ha.config", {"mode": "put", "value": body})
        except RemoteError as exc:
            return brain_failure("ha.config", exc)
        if not reply.get("applied"):
            return error_page(502)  # Patroni's answer when the unconditional write fails
        config = reply.get("config")
        return json_response(200, config if isinstance(config, Mapping) else body)

    # -- /switchover, /failover -------------------------------------------------------------------------------

    def post_failover(self, request: ControlRequest, snapshot: Snapshot, now: float, action: str) -> Response:
        body = checks.read_json(request, optional=False)
        if isinstance(body, Response):
            return body
        cluster = snapshot.cluster
        if cluster is None:
            return no_view()
        log.info(
            "received %s request with leader=%s candidate=%s scheduled_at=%s",
            action,
            body.get("leader"),
            body.get("candidate") or body.get("member"),
            body.get("scheduled_at"),
        )
        plan = checks.check_failover_request(body, action, cluster, now)
        if isinstance(plan, Response):
            return plan
        if plan.converted:
            log.warning("received failover request with leader specifed - performing switchover instead")
        if plan.scheduled_at is None:
            problem = self._precheck(plan, snapshot, now)
            if problem is not None:
                return text_response(412, problem)
        generation = self.state.generation
        started = self.clock()
        try:
            reply = self._call("ha.write_failover", {"value": plan.value()})
        except RemoteError as exc:
            log.warning("ha.write_failover: %s", exc)
            return text_response(503, "failed to write failover key into DCS")
        if not reply.get("applied"):
            return text_response(503, "failed to write failover key into DCS")
        if plan.scheduled_at is not None:
            return text_response(202, f"{plan.action.title()} scheduled")
        return self._await_failover(plan, snapshot, generation, started)

    def _precheck(self, plan: checks.FailoverPlan, snapshot: Snapshot, now: float) -> str | None:
        """The 412 pre-check of an immediate request: names against the view, then the candidates' health."""
        assert snapshot.cluster is not None
        targets = checks.precheck_targets(snapshot.cluster, plan)
        if isinstance(targets, str):
            return targets
        me = snapshot.identity.name
        others = [m for m in targets if m.name != me]
        statuses: list[Any] = list(self.prober(others, 2.0).values()) if others else []
        if len(others) < len(targets):  # this node is a target: its own published status, no HTTP to itself
            statuses.append(snapshot.status_body(now))
        return checks.precheck_verdict(plan.action, statuses)

    def _await_failover(
        self, plan: checks.FailoverPlan, snapshot: Snapshot, generation: int, started: float
    ) -> Response:
        before = snapshot.cluster
        assert before is not None
        deadline = started + checks.failover_poll_s(snapshot)
        seen = False
        while True:
            now = self.clock()
            cluster = self.state.current.cluster
            if cluster is not None:
                seen = seen or checks.is_new_failover(before.failover, cluster.failover)
                gone = cluster.failover is None and (seen or now - started >= FAILOVER_GRACE_S)
                verdict = checks.failover_poll(plan.action, before.leader_name, plan.candidate, cluster, gone)
                if verdict is not None:
                    return text_response(*verdict)
            remaining = deadline - now
            if remaining <= 0:
                return text_response(*checks.failover_unknown(plan.action))
            generation = self.state.wait_newer(generation, min(POLL_S, remaining))

    def delete_switchover(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        if snapshot.cluster is None:
            return no_view()
        failover = snapshot.cluster.failover
        if failover is None or failover.scheduled_at is None:
            return text_response(404, "no switchover is scheduled")
        try:
            reply = self._call("ha.clear_failover", {"version": failover.version})
        except RemoteError as exc:
            return brain_failure("ha.clear_failover", exc)
        if not reply.get("applied"):
            return error_page(409)
        return text_response(200, "scheduled switchover deleted")

    # -- /restart, /reload, /reinitialize, /sigterm -------------------------------------------------------------

    def post_restart(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        body = checks.read_json(request, optional=True)
        if isinstance(body, Response):
            return body
        if body:
            log.debug("received restart request: %s", body)
        paused = is_paused(dynamic_config(snapshot.cluster)) if snapshot.cluster is not None else snapshot.paused
        plan = checks.check_restart_request(body, paused, now)
        if isinstance(plan, Response):
            return plan
        generation = self.state.generation
        try:
            reply = self._call("ha.restart", plan.body)
        except RemoteError as exc:
            return brain_failure("ha.restart", exc)
        control_id = reply.get("control")
        if plan.scheduled or "status" in reply or not isinstance(control_id, str):
            return checks.brain_answer(reply, 503, "restart failed")
        return self._await_control(control_id, generation, checks.restart_wait_s(plan, snapshot))

    def _await_control(self, control_id: str, generation: int, wait_s: float) -> Response:
        deadline = self.clock() + wait_s
        seen = False
        while True:
            node_status = self.state.current.node_status
            done = checks.control_result(node_status, control_id)
            if done is not None:
                return checks.brain_answer(done, 503, "restart failed")
            present = checks.has_control(node_status, control_id)
            if seen and not present:  # a restarted brain forgot it
                return text_response(503, "restart status unknown")
            seen = seen or present
            remaining = deadline - self.clock()
            if remaining <= 0:
                return text_response(503, "postgres is still starting")
            generation = self.state.wait_newer(generation, min(CONTROL_POLL_S, remaining))

    def delete_restart(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        try:
            reply = self._call("ha.cancel_restart", {})
        except RemoteError as exc:
            return brain_failure("ha.cancel_restart", exc)
        return checks.brain_answer(reply, 503, "cancelling the scheduled restart failed")

    def post_reload(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        return self.reload()

    def reload(self) -> Response:
        """POST /reload, and SIGHUP to the node (D31): the REST API's settings, then the brain's."""
        self.on_reload()
        try:
            reply = self._call("ha.reload", {})
        except RemoteError as exc:
            return brain_failure("ha.reload", exc)
        return checks.brain_answer(reply, 202, "reload scheduled")

    def post_reinitialize(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        body = checks.read_json(request, optional=True)
        if isinstance(body, Response):
            return body
        if body:
            log.debug("received reinitialize request: %s", body)
        force = bool(parse_bool(body.get("force")))
        try:
            reply = self._call("ha.reinitialize", {"force": force})
        except RemoteError as exc:
            return brain_failure("ha.reinitialize", exc)
        return checks.brain_answer(reply, 503, "reinitialize failed")

    def post_failsafe(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        """D33: 200 `Accepted`, 500 `Running as a leader`, 502 when failsafe mode is off."""
        if snapshot.cluster is not None and not parse_bool(dynamic_config(snapshot.cluster).get("failsafe_mode")):
            return error_page(502, "Bad Gateway")
        body = checks.read_json(request, optional=False)
        if isinstance(body, Response):
            return body
        try:
            reply = self._call("ha.failsafe", {"value": body})
        except RemoteError as exc:
            return brain_failure("ha.failsafe", exc)
        status = reply.get("status")
        if status == 502:
            return error_page(502, "Bad Gateway")
        return checks.brain_answer(reply, 500, "failsafe request failed")

    def post_sigterm(self, request: ControlRequest, snapshot: Snapshot, now: float) -> Response:
        """D34: Patroni shuts down only on Windows under behave; elsewhere it just answers."""
        return text_response(202, "shutdown scheduled")

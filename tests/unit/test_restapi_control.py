"""services.restapi.control.Controller with fakes of its collaborators (the brain, the members' REST APIs, the
published state and the clock): every unsafe endpoint's flow and answer (D24-D32, D34, D36, D38), without sockets."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from services.restapi.auth import AccessPolicy, policy_from_config
from services.restapi.control import Controller
from services.restapi.core import ControlRequest, Response
from services.restapi.main import SnapshotHolder
from services.restapi.snapshot import Identity, Snapshot, apply_event
from shared.model import Member
from shared.protocol.endpoints import Topic
from shared.protocol.errors import ErrorCode, RemoteError
from tests.unit.test_restapi_core import NAME, NOW, SCOPE, cluster_view, member, node_status, snap

HEALTHY = {"state": "running", "role": "replica", "xlog": {"received_location": 1, "replayed_location": 1}}
MEMBERS = {
    NAME: member(NAME, role="master"),
    "pg2": member("pg2", host="10.0.0.2"),
    "pg3": member("pg3", host="10.0.0.3"),
}
FUTURE = "2030-01-01T00:00:00+00:00"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeState:
    """The published state: `later` holds the events that arrive, one per wait, while a request waits."""

    def __init__(self, snapshot: Snapshot, clock: Clock) -> None:
        self.current = snapshot
        self.generation = 0
        self.clock = clock
        self.later: list[tuple[str, dict[str, Any]]] = []
        self.waited = 0.0

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        self.current = apply_event(self.current, topic, body, self.clock.now)
        self.generation += 1

    def wait_newer(self, generation: int, timeout: float) -> int:
        if self.generation > generation:
            return self.generation
        self.clock.now += timeout
        self.waited += timeout
        if self.later:
            self.publish(*self.later.pop(0))
        return self.generation


class FakeBrain:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.replies: dict[str, Any] = {
            "ha.write_failover": {"applied": True},
            "ha.clear_failover": {"applied": True},
            "ha.config": lambda body: {"applied": True, "config": {"ttl": 30, **body["value"]}},
            "ha.restart": {"control": "c1"},
            "ha.cancel_restart": {"status": 200, "message": "scheduled restart deleted"},
            "ha.reload": {"status": 202, "message": "reload scheduled"},
            "ha.reinitialize": {"status": 200, "message": "reinitialize started"},
            "ha.failsafe": {"status": 200, "message": "Accepted"},
        }

    def call(self, op: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.calls.append((op, body))
        reply = self.replies[op]
        if isinstance(reply, RemoteError):
            raise reply
        result: dict[str, Any] = reply(body) if callable(reply) else dict(reply)
        return result


class FakeProber:
    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = answers if answers is not None else {"pg2": HEALTHY, "pg3": HEALTHY}
        self.asked: list[list[str]] = []

    def __call__(self, members: Sequence[Member], timeout: float) -> dict[str, Any]:
        self.asked.append([m.name for m in members])
        return {m.name: self.answers.get(m.name) for m in members}


class Rig:
    def __init__(self, view: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **policy: Any) -> None:
        self.clock = Clock()
        view = cluster_view(NAME, members=MEMBERS) if view is None else view
        self.state = FakeState(snap(status or node_status("master"), view), self.clock)
        self.brain = FakeBrain()
        self.prober = FakeProber()
        self.controller = Controller(
            self.state,
            self.brain,
            policy_from_config(policy, resolve=lambda host, port: [host]) if policy else AccessPolicy(),
            prober=self.prober,
            clock=self.clock,
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        client: str = "10.0.0.9",
    ) -> Response:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        all_headers = {} if body is None else {"content-length": str(len(data))}
        all_headers.update(headers or {})
        return self.controller(ControlRequest(method, path, "", all_headers, data, client), self.state.current, NOW)

    def text(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, str]:
        response = self.call(method, path, body, **kwargs)
        assert response.body is not None
        if response.headers.get("Content-Type") == "text/html":  # Patroni's plain answers
            return response.status, response.body.decode()
        return response.status, response.headers.get("Content-Type", "")

    def ops(self, name: str) -> list[dict[str, Any]]:
        return [body for op, body in self.brain.calls if op == name]


def view_with(leader: str | None, **kwargs: Any) -> dict[str, Any]:
    return cluster_view(leader, members=MEMBERS, **kwargs)


# -- routing and access (D18, D36, D38) ------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [("POST", "/nothing"), ("PATCH", "/switchover"), ("POST", "/"), ("PUT", "/x")])
def test_unknown_unsafe_paths_are_501_before_any_access_check(method: str, path: str) -> None:
    rig = Rig(authentication={"username": "a", "password": "b"}, allowlist=["10.9.0.0/16"])
    response = rig.call(method, path)
    assert response.status == 501 and response.body is not None
    assert f"Unsupported method ({method!r})".encode() in response.body
    assert rig.brain.calls == []


def test_d36_credentials_are_needed_for_every_unsafe_endpoint() -> None:
    rig = Rig(authentication={"username": "admin", "password": "s3cret"})
    good = {"authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
    bad = {"authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
    for method, path in [("POST", "/reload"), ("PATCH", "/config"), ("POST", "/switchover"), ("DELETE", "/restart")]:
        response = rig.call(method, path)
        assert (response.status, response.body) == (401, b"no auth header received")
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Patroni"'
        assert rig.text(method, path, headers=bad) == (401, "not authenticated")
    assert rig.brain.calls == []
    assert rig.text("POST", "/reload", headers=good) == (202, "reload scheduled")
    assert rig.text("POST", "/reload/now", headers=good) == (202, "reload scheduled")  # the first segment routes


def test_d38_allowlist_include_members_lets_the_members_in() -> None:
    rig = Rig(allowlist_include_members=True)  # the fake resolver maps a host to itself
    assert rig.text("POST", "/reload", client="10.0.0.9") == (403, "Access is denied")
    assert rig.text("POST", "/reload", client="10.0.0.2") == (202, "reload scheduled")
    rig.state.publish(Topic.CLUSTER_VIEW, cluster_view(NAME, members={NAME: member(NAME, host="10.0.0.9")}))
    assert rig.text("POST", "/reload", client="10.0.0.9") == (202, "reload scheduled")
    assert rig.text("POST", "/reload", client="10.0.0.2") == (403, "Access is denied")


# -- PATCH and PUT /config (D24, D25, A41) ---------------------------------------------------------------------------


def test_d24_patch_config_forwards_the_patch_and_answers_the_new_config() -> None:
    rig = Rig()
    response = rig.call("PATCH", "/config", {"pause": True})
    assert response.status == 200 and response.headers["Content-Type"] == "application/json"
    assert response.body is not None and json.loads(response.body) == {"ttl": 30, "pause": True}
    assert rig.ops("ha.config") == [{"mode": "patch", "value": {"pause": True}}]
    assert rig.call("PATCH", "/config", {"pause": None}).status == 200  # A41: null resumes


@pytest.mark.parametrize(
    "body, prepare, status",
    [
        (None, None, 411),
        (b"{not json", None, 400),
        ({}, None, 400),
        ([1, 2], None, 400),
        ({"ttl": 20}, lambda rig: rig.state.publish(Topic.CLUSTER_VIEW, view_with(NAME, config=None)), None),
        ({"ttl": 20}, lambda rig: rig.brain.replies.update({"ha.config": {"applied": False}}), 409),
        (
            {"ttl": 20},
            lambda rig: rig.brain.replies.update(
                {"ha.config": RemoteError(ErrorCode.PRECONDITION_FAILED, "no /config")}
            ),
            503,
        ),
    ],
)
def test_d24_patch_config_errors(body: Any, prepare: Callable[[Rig], None] | None, status: int | None) -> None:
    rig = Rig()
    if prepare is not None:
        prepare(rig)
    if status is None:  # no /config in the view: strip the key so that the cluster has none
        keys = dict(rig.state.current.view["keys"]) if rig.state.current.view else {}
        keys.pop("config", None)
        rig.state.publish(Topic.CLUSTER_VIEW, {**cluster_view(NAME), "keys": keys})
        status = 503
    response = rig.call("PATCH", "/config", body)
    assert response.status == status
    assert response.body is not None and b"Error response" in response.body  # the standard error page


def test_d25_put_config_replaces_it_even_when_missing_and_502_when_not_written() -> None:
    rig = Rig()
    keys = dict(cluster_view(NAME)["keys"])
    keys.pop("config")
    rig.state.publish(Topic.CLUSTER_VIEW, {**cluster_view(NAME), "keys": keys})
    response = rig.call("PUT", "/config", {"loop_wait": 3})
    assert (
        response.status == 200
        and response.body is not None
        and json.loads(response.body) == {"ttl": 30, "loop_wait": 3}
    )
    assert rig.ops("ha.config") == [{"mode": "put", "value": {"loop_wait": 3}}]
    rig.brain.replies["ha.config"] = {"applied": False}
    assert rig.call("PUT", "/config", {"loop_wait": 3}).status == 502
    assert rig.call("PUT", "/config").status == 411


# -- POST/DELETE /restart (D29, D30, A52, A54) ------------------------------------------------------------------------


def restart_status(state: str, status: int = 200, message: str = "restarted successfully") -> dict[str, Any]:
    body = node_status("master")
    body["controls"] = {"c1": {"state": state, "status": status, "message": message}}
    return body


def test_d29_an_immediate_restart_waits_for_its_control() -> None:
    rig = Rig()
    rig.state.later = [(Topic.NODE_STATUS, restart_status("running")), (Topic.NODE_STATUS, restart_status("done"))]
    assert rig.text("POST", "/restart", {"restart_pending": True}) == (200, "restarted successfully")
    assert rig.ops("ha.restart") == [{"restart_pending": True}]
    rig.state.later = [(Topic.NODE_STATUS, restart_status("done", 503, "restart conditions are not satisfied"))]
    rig.state.publish(Topic.NODE_STATUS, node_status("master"))
    assert rig.text("POST", "/restart") == (503, "restart conditions are not satisfied")  # no body: no conditions
    assert rig.ops("ha.restart")[-1] == {}


def test_a54_an_immediate_restart_is_awaited_up_to_its_timeout_plus_ttl() -> None:
    rig = Rig()
    assert rig.text("POST", "/restart", {"timeout": "5s"}) == (503, "postgres is still starting")
    assert rig.state.waited == pytest.approx(35.0)


def test_d29_a_control_forgotten_by_a_restarted_brain_is_unknown() -> None:
    rig = Rig()
    rig.state.later = [(Topic.NODE_STATUS, restart_status("running")), (Topic.NODE_STATUS, node_status("master"))]
    assert rig.text("POST", "/restart") == (503, "restart status unknown")


def test_d29_scheduled_restart_and_the_brains_answers() -> None:
    rig = Rig()
    rig.brain.replies["ha.restart"] = {"status": 202, "message": "Restart scheduled"}
    assert rig.text("POST", "/restart", {"schedule": FUTURE, "role": "replica"}) == (202, "Restart scheduled")
    assert rig.ops("ha.restart") == [{"schedule": FUTURE, "role": "replica"}]
    rig.brain.replies["ha.restart"] = {"status": 409, "message": "Another restart is already scheduled"}
    assert rig.text("POST", "/restart", {"schedule": FUTURE}) == (409, "Another restart is already scheduled")


def test_d29_in_pause_a_schedule_is_500_before_validation() -> None:
    rig = Rig(view=view_with(NAME, config={"ttl": 30, "pause": True}))
    assert rig.text("POST", "/restart", {"schedule": "junk", "timeout": -1}) == (
        500,
        "Can't schedule restart in the paused state",
    )
    assert rig.call("POST", "/restart", b"{junk").status == 400  # the body is read first
    assert rig.brain.calls == []


def test_d30_delete_restart_answers_what_the_brain_says() -> None:
    rig = Rig()
    assert rig.text("DELETE", "/restart") == (200, "scheduled restart deleted")
    rig.brain.replies["ha.cancel_restart"] = {"status": 404, "message": "no restarts are scheduled"}
    assert rig.text("DELETE", "/restart") == (404, "no restarts are scheduled")


# -- POST /failsafe (D33) --------------------------------------------------------------------------------------------

FAILSAFE_BODY = {
    "name": "pg2",
    "conn_url": "postgres://10.0.0.2:5432/postgres",
    "api_url": "http://10.0.0.2:8008/patroni",
}


def test_d33_post_failsafe_forwards_the_callers_body_and_answers_accepted() -> None:
    rig = Rig(view=view_with("pg2", config={"ttl": 30, "failsafe_mode": True}), status=node_status("replica"))
    assert rig.text("POST", "/failsafe", FAILSAFE_BODY) == (200, "Accepted")
    assert rig.ops("ha.failsafe") == [{"value": FAILSAFE_BODY}]
    rig.brain.replies["ha.failsafe"] = {"status": 500, "message": "Running as a leader"}
    assert rig.text("POST", "/failsafe", FAILSAFE_BODY) == (500, "Running as a leader")


def test_d33_post_failsafe_is_502_when_failsafe_mode_is_off_and_400_without_a_body() -> None:
    off = Rig(view=view_with("pg2", config={"ttl": 30}), status=node_status("replica"))
    assert off.call("POST", "/failsafe", FAILSAFE_BODY).status == 502 and off.ops("ha.failsafe") == []
    on = Rig(view=view_with("pg2", config={"ttl": 30, "failsafe_mode": True}), status=node_status("replica"))
    assert on.call("POST", "/failsafe", b"[1]").status == 400 and on.ops("ha.failsafe") == []


# -- POST /reload, /reinitialize, /sigterm (D31, D32, D34) -------------------------------------------------------------


def test_d31_reload() -> None:
    rig = Rig()
    assert rig.text("POST", "/reload") == (202, "reload scheduled")
    assert rig.ops("ha.reload") == [{}]


@pytest.mark.parametrize(
    "body, force",
    [(None, False), ({}, False), ({"force": True}, True), ({"force": "on"}, True), ({"force": "maybe"}, False)],
)
def test_d32_reinitialize_forwards_force(body: Any, force: bool) -> None:
    rig = Rig(status=node_status("replica"))
    assert rig.text("POST", "/reinitialize", body) == (200, "reinitialize started")
    assert rig.ops("ha.reinitialize") == [{"force": force}]


@pytest.mark.parametrize(
    "message",
    [
        "I am the leader, can not reinitialize",
        "Cluster has no leader, can not reinitialize",
        "restart already in progress",
    ],
)
def test_d32_reinitialize_refusals(message: str) -> None:
    rig = Rig()
    rig.brain.replies["ha.reinitialize"] = {"status": 503, "message": message}
    assert rig.text("POST", "/reinitialize", {"force": True}) == (503, message)
    assert rig.call("POST", "/reinitialize", b"{bad").status == 400


def test_d34_sigterm_is_only_answered() -> None:
    assert Rig().text("POST", "/sigterm") == (202, "shutdown scheduled")


@pytest.mark.parametrize(
    "error, text",
    [
        (RemoteError(ErrorCode.UNAVAILABLE, "no connection"), "the HA loop is unavailable"),
        (RemoteError(ErrorCode.DEADLINE_EXCEEDED, "late"), "the HA loop did not answer in time"),
        (RemoteError(ErrorCode.INTERNAL, "bug"), "the HA loop refused the request (internal)"),
    ],
)
def test_a_brain_that_does_not_answer_is_503(error: RemoteError, text: str) -> None:
    rig = Rig()
    for op in ("ha.reload", "ha.restart", "ha.reinitialize", "ha.cancel_restart", "ha.config"):
        rig.brain.replies[op] = error
    for method, path, body in [
        ("POST", "/reload", None),
        ("POST", "/restart", None),
        ("POST", "/reinitialize", None),
        ("DELETE", "/restart", None),
        ("PATCH", "/config", {"ttl": 20}),
        ("PUT", "/config", {"ttl": 20}),
    ]:
        assert rig.text(method, path, body) == (503, text), (method, path)


def test_no_cluster_view_yet_is_503() -> None:
    rig = Rig()
    rig.state.current = snap(node_status("master"))
    assert rig.call("POST", "/switchover", {"leader": NAME}).status == 503
    assert rig.call("DELETE", "/switchover").status == 503
    assert rig.call("PATCH", "/config", {"ttl": 20}).status == 503


# -- the real holder wakes waiters ------------------------------------------------------------------------------------


def test_the_snapshot_holder_wakes_waiters_on_each_event() -> None:
    holder = SnapshotHolder(Identity(NAME, SCOPE))
    generation = holder.generation
    timer = threading.Timer(0.05, lambda: holder.apply(Topic.NODE_STATUS, node_status("master"), NOW))
    started = time.monotonic()
    timer.start()
    assert holder.wait_newer(generation, 5.0) == generation + 1
    assert time.monotonic() - started < 2.0
    assert holder.wait_newer(generation, 5.0) == generation + 1  # already newer: at once
    assert holder.wait_newer(generation + 1, 0.01) == generation + 1  # nothing new: the timeout
    assert not holder.apply(Topic.NODE_STATUS, "garbage", NOW) and holder.generation == generation + 1

"""The restapi program's unsafe endpoints (D24-D32, D36, D38, D39): a real process on a free port, with the test playing
ha_loop (its ROUTER answering the ha.* control ops, and its node_status PUB), dcs_proxy (the cluster_view PUB) and the
other members (HTTP servers answering GET /patroni for the switchover pre-check).

One restapi process serves the whole module; each test starts from the same published state.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.protocol.errors import ErrorCode, OpError
from tests.service.test_restapi import NAME, FakePeers, restapi_process
from tests.support.fake_ha_loop import FakeHaLoop, MemberApi, replica_status
from tests.support.waiting import wait_until
from tests.unit.test_restapi_core import cluster_view, member, node_status

AUTH = "Basic " + base64.b64encode(b"admin:s3cret").decode()
WRONG = "Basic " + base64.b64encode(b"admin:guess").decode()
FUTURE = "2030-01-01T00:00:00+00:00"
_marks = itertools.count(1)


@dataclass
class Api:
    port: int
    peers: FakePeers
    brain: FakeHaLoop
    members: dict[str, MemberApi]
    log_path: Path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: str | None = AUTH,
        length: bool = True,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path)
            if auth is not None:
                conn.putheader("Authorization", auth)
            if length:
                conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data or None)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def text(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, str]:
        status, _, data = self.request(method, path, body, **kwargs)
        return status, data.decode()

    def view(self, leader: str | None = NAME, host: str = "127.0.0.1", **kwargs: Any) -> dict[str, Any]:
        """The cluster as dcs_proxy would publish it: this node (pg1) and the two test members."""
        members = {
            NAME: member(NAME, role="master" if leader == NAME else "replica", host=host,
                         api_url=f"http://{host}:{self.port}/patroni"),
            "pg2": member("pg2", host=host, api_url=self.members["pg2"].api_url.replace("127.0.0.1", host)),
            "pg3": member("pg3", host=host, api_url=self.members["pg3"].api_url.replace("127.0.0.1", host)),
        }  # fmt: skip
        return cluster_view(leader, members=members, **kwargs)

    def show(self, view: dict[str, Any]) -> None:
        """Publish `view` and wait until the REST API serves it (a marker in /config tells)."""
        mark = next(_marks)
        config = json.loads(view["keys"]["config"]["value"]) if "config" in view["keys"] else None
        if config is not None:
            view["keys"]["config"]["value"] = json.dumps({**config, "mark": mark})
        self.peers.cluster_view = view

        def served() -> bool:
            status, _, data = self.request("GET", "/config", auth=None)
            return (status == 502) if config is None else (status == 200 and json.loads(data).get("mark") == mark)

        wait_until(served, 10, what="the REST API to serve the new cluster view")


RESTAPI = {
    "authentication": {"username": "admin", "password": "s3cret"},
    "allowlist_include_members": True,
    "http_extra_headers": {"X-Frame-Options": "SAMEORIGIN"},
}


@pytest.fixture(scope="module")
def service() -> Iterator[Api]:
    members = {"pg2": MemberApi(replica_status("pg2")), "pg3": MemberApi(replica_status("pg3"))}
    brains: list[FakeHaLoop] = []  # bound before the REST API starts
    try:
        with restapi_process(RESTAPI, before=lambda run_dir: brains.append(FakeHaLoop(run_dir))) as started:
            api = Api(started.port, started.peers, brains[0], members, started.log_path)
            wait_until(lambda: api.request("GET", "/patroni")[0] == 200, 15, what="the REST API to answer")
            yield api
    finally:
        for brain in brains:
            brain.close()
        for server in members.values():
            server.close()


@pytest.fixture
def api(service: Api) -> Api:
    service.brain.reset()
    service.members["pg2"].status = replica_status("pg2")
    service.members["pg3"].status = replica_status("pg3")
    service.peers.node_status = node_status("master")
    service.show(service.view())
    return service


# -- switchover and failover (D26-D28) ---------------------------------------------------------------------------------


def test_d26_switchover_answers_when_the_published_view_shows_the_new_leader(api: Api) -> None:
    def brain_writes(body: dict[str, Any]) -> dict[str, Any]:
        api.peers.cluster_view = api.view("pg2")  # what the brains and the DCS make of it
        return {"applied": True}

    api.brain.replies["ha.write_failover"] = brain_writes
    before = api.members["pg2"].requests
    status, headers, body = api.request("POST", "/switchover", {"leader": NAME, "candidate": "pg2"})
    assert (status, body) == (200, b'Successfully switched over to "pg2"')
    assert headers["content-type"] == "text/html" and headers["x-frame-options"] == "SAMEORIGIN"
    assert api.brain.ops("ha.write_failover") == [{"value": {"leader": NAME, "member": "pg2"}}]
    assert api.members["pg2"].requests == before + 1  # the pre-check asked the candidate


def test_d26_switchover_fails_when_the_failover_key_goes_without_a_new_leader(api: Api) -> None:
    def brain_writes(body: dict[str, Any]) -> dict[str, Any]:
        api.peers.cluster_view = api.view(failover=body["value"])
        threading.Timer(0.3, lambda: setattr(api.peers, "cluster_view", api.view())).start()
        return {"applied": True}

    api.brain.replies["ha.write_failover"] = brain_writes
    assert api.text("POST", "/switchover", {"leader": NAME}) == (503, "Switchover failed")


def test_d26_scheduled_switchover_and_its_cancellation(api: Api) -> None:
    assert api.text("POST", "/switchover", {"leader": NAME, "scheduled_at": FUTURE}) == (202, "Switchover scheduled")
    assert api.brain.ops("ha.write_failover") == [{"value": {"leader": NAME, "scheduled_at": FUTURE}}]
    assert api.text("DELETE", "/switchover") == (404, "no switchover is scheduled")
    api.show(api.view(failover={"leader": NAME, "scheduled_at": FUTURE}))
    assert api.text("DELETE", "/switchover") == (200, "scheduled switchover deleted")
    assert api.brain.ops("ha.clear_failover") == [{"version": 1}]
    api.brain.replies["ha.clear_failover"] = {"applied": False}
    assert api.request("DELETE", "/switchover")[0] == 409


@pytest.mark.parametrize(
    "path, body, expected",
    [
        ("/switchover", {"candidate": "pg2"}, (400, "Switchover could be performed only from a specific leader")),
        ("/failover", {"leader": NAME}, (400, "Failover could be performed only to a specific candidate")),
        ("/failover", {"candidate": "pg2", "scheduled_at": FUTURE}, (400, "Failover can't be scheduled")),
        ("/switchover", {"leader": NAME, "candidate": NAME}, (400, "Switchover target and source are the same")),
        ("/switchover", {"leader": NAME, "scheduled_at": "2030-01-01T00:00"},
         (400, "Timezone information is mandatory for the scheduled switchover")),
        ("/switchover", {"leader": NAME, "scheduled_at": "2001-01-01T00:00Z"},
         (422, "Cannot schedule switchover in the past")),
        ("/switchover", {"leader": "pg2"}, (412, "leader name does not match")),
        ("/switchover", {"leader": NAME, "candidate": "pg7"}, (412, "candidate does not exists")),
    ],
)  # fmt: skip
def test_d26_d28_refusals(api: Api, path: str, body: dict[str, Any], expected: tuple[int, str]) -> None:
    assert api.text("POST", path, body) == expected
    assert api.brain.calls == []


def test_d26_412_when_no_candidate_is_healthy(api: Api) -> None:
    api.members["pg2"].status = replica_status("pg2", tags={"nofailover": True})
    api.members["pg3"].status = None  # answers 503 without JSON
    expected = (412, "switchover is not possible: no good candidates have been found")
    assert api.text("POST", "/switchover", {"leader": NAME}) == expected
    assert api.text("POST", "/switchover", {"leader": NAME, "candidate": "pg2"}) == expected
    assert api.brain.calls == []


def test_d26_411_400_and_503_from_the_brain(api: Api) -> None:
    assert api.request("POST", "/switchover", length=False)[0] == 411
    assert api.request("POST", "/switchover", b"{nope")[0] == 400
    api.brain.replies["ha.write_failover"] = {"applied": False}
    assert api.text("POST", "/switchover", {"leader": NAME, "scheduled_at": FUTURE}) == (
        503,
        "failed to write failover key into DCS",
    )


# -- access (D36, D38, D39) --------------------------------------------------------------------------------------------


def test_d36_unsafe_requests_need_the_credentials_safe_ones_do_not(api: Api) -> None:
    status, headers, body = api.request("POST", "/reload", auth=None)
    assert (status, body) == (401, b"no auth header received")
    assert headers["www-authenticate"] == 'Basic realm="Patroni"'
    assert api.text("POST", "/reload", auth=WRONG) == (401, "not authenticated")
    assert api.brain.calls == []
    assert api.text("POST", "/reload") == (202, "reload scheduled")
    status, headers, _ = api.request("GET", "/primary", auth=None)
    assert status in (200, 503) and headers["x-frame-options"] == "SAMEORIGIN"  # D39: every answer
    assert api.request("POST", "/nothing", auth=None)[0] == 501  # unknown paths: no access check


def test_d38_only_members_may_call_unsafe_endpoints(api: Api) -> None:
    api.show(api.view(host="127.0.0.2"))  # no member's api_url is on 127.0.0.1 any more
    assert api.text("POST", "/reload") == (403, "Access is denied")
    assert api.text("POST", "/reload", auth=None) == (403, "Access is denied")  # before the credentials
    assert api.request("GET", "/patroni", auth=None)[0] == 200
    api.show(api.view())
    assert api.text("POST", "/reload") == (202, "reload scheduled")


# -- /config (D24, D25) ------------------------------------------------------------------------------------------------


def test_d24_patch_config(api: Api) -> None:
    status, headers, body = api.request("PATCH", "/config", {"pause": True})
    assert status == 200 and headers["content-type"] == "application/json" and json.loads(body) == {"pause": True}
    assert api.brain.ops("ha.config") == [{"mode": "patch", "value": {"pause": True}}]
    api.brain.replies["ha.config"] = {"applied": False}
    assert api.request("PATCH", "/config", {"ttl": 20})[0] == 409
    assert api.request("PATCH", "/config", {"ttl": 20}, length=False)[0] == 411
    assert api.request("PATCH", "/config", b"[]")[0] == 400
    assert api.request("PATCH", "/config", {})[0] == 400
    view = api.view()
    del view["keys"]["config"]
    api.show(view)
    assert api.request("PATCH", "/config", {"ttl": 20})[0] == 503
    assert len(api.brain.ops("ha.config")) == 2


def test_d25_put_config(api: Api) -> None:
    status, _, body = api.request("PUT", "/config", {"ttl": 20, "loop_wait": 3})
    assert (status, json.loads(body)) == (200, {"ttl": 20, "loop_wait": 3})
    assert api.brain.ops("ha.config") == [{"mode": "put", "value": {"ttl": 20, "loop_wait": 3}}]


# -- /restart, /reload, /reinitialize (D29-D32) ------------------------------------------------------------------------


def test_d29_an_immediate_restart_answers_when_the_brain_reports_its_control_done(api: Api) -> None:
    result: list[tuple[int, str]] = []
    caller = threading.Thread(target=lambda: result.append(api.text("POST", "/restart", {"restart_pending": True})))
    caller.start()
    wait_until(lambda: api.brain.ops("ha.restart"), 10, what="the restart request to reach the brain")
    assert api.brain.ops("ha.restart") == [{"restart_pending": True}]
    status = node_status("master")
    status["controls"] = {"restart-1": {"state": "running", "status": 0, "message": ""}}
    api.peers.node_status = status
    caller.join(timeout=0.3)  # a negative check: the request must still be waiting while the control runs
    assert caller.is_alive() and not result
    status = node_status("master")
    status["controls"] = {"restart-1": {"state": "done", "status": 200, "message": "restarted successfully"}}
    api.peers.node_status = status
    caller.join(timeout=10)
    assert result == [(200, "restarted successfully")]


def test_d29_scheduled_restart_and_validation(api: Api) -> None:
    api.brain.replies["ha.restart"] = {"status": 202, "message": "Restart scheduled"}
    assert api.text("POST", "/restart", {"schedule": FUTURE, "postgres_version": "16.1"}) == (202, "Restart scheduled")
    assert api.brain.ops("ha.restart") == [{"schedule": FUTURE, "postgres_version": "16.1"}]
    assert api.text("POST", "/restart", {"role": "leader"}) == (
        400,
        "PostgreSQL role should be either primary or replica",
    )
    assert api.text("POST", "/restart", {"timeout": "soon"}) == (400, "Timeout should be a positive number of seconds")
    assert api.text("POST", "/restart", {"when": 1}) == (400, "Unknown filter for the scheduled restart: when")
    api.show(api.view(config={"ttl": 30, "loop_wait": 10, "pause": True}))
    assert api.text("POST", "/restart", {"schedule": FUTURE}) == (500, "Can't schedule restart in the paused state")
    assert len(api.brain.ops("ha.restart")) == 1


def test_d30_delete_restart(api: Api) -> None:
    assert api.text("DELETE", "/restart") == (404, "no restarts are scheduled")


def test_d31_d32_reload_and_reinitialize(api: Api) -> None:
    assert api.text("POST", "/reload") == (202, "reload scheduled")
    assert api.text("POST", "/reinitialize", {"force": True}) == (200, "reinitialize started")
    assert api.text("POST", "/reinitialize", length=False) == (200, "reinitialize started")
    assert api.brain.ops("ha.reinitialize") == [{"force": True}, {"force": False}]
    api.brain.replies["ha.reinitialize"] = {"status": 503, "message": "I am the leader, can not reinitialize"}
    assert api.text("POST", "/reinitialize") == (503, "I am the leader, can not reinitialize")
    api.brain.replies["ha.reinitialize"] = OpError(ErrorCode.UNAVAILABLE, "brain busy")
    assert api.text("POST", "/reinitialize") == (503, "the HA loop is unavailable")

"""services.restapi.control.Controller: POST /switchover, POST /failover and DELETE /switchover (D26, D27, D28, A28,
A29) with fakes of the brain, the members' REST APIs, the published state and the clock. No sockets."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from shared.protocol.endpoints import Topic
from shared.protocol.errors import ErrorCode, RemoteError
from tests.unit.test_restapi_control import FUTURE, HEALTHY, Rig, view_with
from tests.unit.test_restapi_core import NAME, node_status

# -- POST /switchover, POST /failover (D26, D28) ---------------------------------------------------------------------


def test_d26_scheduled_switchover_is_written_without_precheck() -> None:
    rig = Rig()
    rig.prober.answers = {}
    assert rig.text("POST", "/switchover", {"leader": NAME, "scheduled_at": FUTURE}) == (202, "Switchover scheduled")
    assert rig.ops("ha.write_failover") == [{"value": {"leader": NAME, "scheduled_at": FUTURE}}]
    assert rig.prober.asked == []


def test_d26_immediate_switchover_waits_for_the_new_leader() -> None:
    rig = Rig()
    rig.state.later = [
        (Topic.CLUSTER_VIEW, view_with(NAME, failover={"leader": NAME, "member": "pg2"})),
        (Topic.CLUSTER_VIEW, view_with(None, failover={"leader": NAME, "member": "pg2"})),
        (Topic.CLUSTER_VIEW, view_with("pg2")),
    ]
    assert rig.text("POST", "/switchover", {"leader": NAME, "candidate": "pg2"}) == (
        200,
        'Successfully switched over to "pg2"',
    )
    assert rig.ops("ha.write_failover") == [{"value": {"leader": NAME, "member": "pg2"}}]
    assert rig.prober.asked == [["pg2"]]


def test_d26_another_node_won() -> None:
    rig = Rig()
    rig.state.later = [(Topic.CLUSTER_VIEW, view_with("pg3"))]
    assert rig.text("POST", "/switchover", {"leader": NAME, "member": "pg2"}) == (
        200,
        'Switched over to "pg3" instead of "pg2"',
    )


def test_d26_the_failover_key_removed_without_a_new_leader_is_a_failure() -> None:
    rig = Rig()
    rig.state.later = [
        (Topic.CLUSTER_VIEW, view_with(NAME, failover={"leader": NAME})),
        (Topic.CLUSTER_VIEW, view_with(NAME)),
    ]
    assert rig.text("POST", "/switchover", {"leader": NAME}) == (503, "Switchover failed")
    assert rig.prober.asked == [["pg2", "pg3"]]


def test_d26_a_failover_key_not_seen_yet_is_not_a_failure_before_the_grace() -> None:
    rig = Rig()
    rig.state.later = [(Topic.CLUSTER_VIEW, view_with(NAME))] * 5 + [(Topic.CLUSTER_VIEW, view_with("pg2"))]
    assert rig.text("POST", "/switchover", {"leader": NAME}) == (200, 'Successfully switched over to "pg2"')


def test_d26_status_unknown_after_twice_max_10_loop_wait() -> None:
    rig = Rig()
    rig.state.publish(Topic.CLUSTER_VIEW, view_with(NAME, failover={"leader": NAME, "member": "pg2"}))
    assert rig.text("POST", "/switchover", {"leader": NAME, "candidate": "pg2"}) == (503, "Switchover status unknown")
    assert rig.state.waited == pytest.approx(20.0)


NO_GOOD = "switchover is not possible: no good candidates have been found"


@pytest.mark.parametrize(
    "answers, expected",
    [
        ({}, NO_GOOD),
        ({"pg2": {**HEALTHY, "tags": {"nofailover": True}}}, NO_GOOD),
        ({"pg2": {**HEALTHY, "watchdog_failed": True}, "pg3": {"state": "stopped"}}, NO_GOOD),
        ({"pg3": HEALTHY}, None),
    ],
)
def test_d26_412_when_no_member_could_take_over(answers: dict[str, Any], expected: str | None) -> None:
    rig = Rig()
    rig.prober.answers = answers
    rig.state.later = [(Topic.CLUSTER_VIEW, view_with("pg3"))]
    status, text = rig.text("POST", "/switchover", {"leader": NAME})
    if expected is None:
        assert status == 200
    else:
        assert (status, text) == (412, expected) and rig.brain.calls == []


def test_d26_412_texts_from_the_view() -> None:
    rig = Rig()
    assert rig.text("POST", "/switchover", {"leader": "pg9"}) == (412, "leader name does not match")
    assert rig.text("POST", "/switchover", {"leader": NAME, "candidate": "pg9"}) == (412, "candidate does not exists")
    assert rig.text("POST", "/failover", {"leader": NAME, "candidate": "pg9"}) == (412, "candidate does not exists")
    assert rig.brain.calls == [] and rig.prober.asked == []


def test_d26_this_node_as_candidate_is_judged_from_its_own_status() -> None:
    rig = Rig(view=view_with("pg2"), status=node_status("replica"))
    rig.state.later = [(Topic.CLUSTER_VIEW, view_with(NAME))]
    assert rig.text("POST", "/switchover", {"leader": "pg2", "candidate": NAME}) == (
        200,
        f'Successfully switched over to "{NAME}"',
    )
    assert rig.prober.asked == []


def test_d28_failover_with_a_leader_is_a_switchover(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.state.later = [(Topic.CLUSTER_VIEW, view_with("pg2"))]
    with caplog.at_level(logging.WARNING, logger="restapi"):
        result = rig.text("POST", "/failover", {"leader": NAME, "candidate": "pg2"})
    assert result == (200, 'Successfully switched over to "pg2"')
    assert "received failover request with leader specifed - performing switchover instead" in caplog.text


def test_d28_failover_without_a_leader() -> None:
    rig = Rig(view=view_with(None), status=node_status("replica"))
    rig.state.later = [(Topic.CLUSTER_VIEW, view_with("pg2"))]
    assert rig.text("POST", "/failover", {"candidate": "pg2"}) == (200, 'Successfully failed over to "pg2"')
    assert rig.ops("ha.write_failover") == [{"value": {"member": "pg2"}}]
    assert rig.text("POST", "/failover", {"candidate": "pg2", "scheduled_at": FUTURE}) == (
        400,
        "Failover can't be scheduled",
    )


@pytest.mark.parametrize(
    "reply",
    [{"applied": False}, RemoteError(ErrorCode.UNAVAILABLE, "dcs down"), RemoteError(ErrorCode.DEADLINE_EXCEEDED, "")],
)
def test_d26_503_when_the_failover_key_is_not_written(reply: Any) -> None:
    rig = Rig()
    rig.brain.replies["ha.write_failover"] = reply
    assert rig.text("POST", "/switchover", {"leader": NAME, "scheduled_at": FUTURE}) == (
        503,
        "failed to write failover key into DCS",
    )


def test_d26_bodies_are_checked_first() -> None:
    rig = Rig()
    assert rig.call("POST", "/switchover").status == 411
    assert rig.call("POST", "/switchover", b"[]").status == 400
    assert rig.call("POST", "/switchover", {}).status == 400
    assert rig.text("POST", "/switchover", {"leader": NAME, "candidate": NAME}) == (
        400,
        "Switchover target and source are the same",
    )


# -- DELETE /switchover (D27) ------------------------------------------------------------------------------------------


def test_d27_delete_switchover() -> None:
    rig = Rig()
    assert rig.text("DELETE", "/switchover") == (404, "no switchover is scheduled")
    rig.state.publish(Topic.CLUSTER_VIEW, view_with(NAME, failover={"leader": NAME, "member": "pg2"}))
    assert rig.text("DELETE", "/switchover") == (404, "no switchover is scheduled")  # not a scheduled one
    rig.state.publish(Topic.CLUSTER_VIEW, view_with(NAME, failover={"leader": NAME, "scheduled_at": FUTURE}))
    assert rig.text("DELETE", "/switchover") == (200, "scheduled switchover deleted")
    assert rig.ops("ha.clear_failover") == [{"version": 1}]
    rig.brain.replies["ha.clear_failover"] = {"applied": False}
    response = rig.call("DELETE", "/switchover")
    assert response.status == 409 and response.body is not None and b"Error response" in response.body

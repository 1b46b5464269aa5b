"""The unsafe endpoints' pure rules (services.restapi.control_checks, schedule): every status code and text of
features.md D24, D26, D28, D29, A28, A29, W8, as tables. No sockets, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from services.restapi import control_checks as checks
from services.restapi.core import ControlRequest, Response
from services.restapi.schedule import UNPARSABLE_SCHEDULE, parse_schedule, parse_seconds, postgres_version_problem
from shared.model import Cluster
from tests.unit.test_restapi_core import NAME, NOW, cluster_view, member, node_status, snap

FUTURE = "2030-01-01T00:00:00+00:00"
PAST = "2020-01-01T00:00:00+00:00"
SYNC_ON = {"ttl": 30, "loop_wait": 10, "synchronous_mode": True}


def cluster(leader: str | None = NAME, **kwargs: Any) -> Cluster:
    members = kwargs.pop(
        "members",
        {
            NAME: member(NAME, role="master"),
            "pg2": member("pg2", host="10.0.0.2"),
            "pg3": member("pg3", host="10.0.0.3"),
        },
    )
    return Cluster.from_wire(cluster_view(leader, members=members, **kwargs)["keys"])


PAUSED = cluster(config={"ttl": 30, "loop_wait": 10, "pause": True})


def answer(result: Any) -> tuple[int, str]:
    assert isinstance(result, Response), result
    assert result.body is not None and result.headers["Content-Type"] == "text/html"
    return result.status, result.body.decode()


# -- request bodies (D24: 411 / 400) --------------------------------------------------------------------------------


def request(body: bytes | None, length: str | None = None) -> ControlRequest:
    headers = {} if body is None and length is None else {"content-length": length or str(len(body or b""))}
    return ControlRequest("POST", "/x", "", headers, body or b"", "127.0.0.1")


@pytest.mark.parametrize(
    "req, optional, expected",
    [
        (request(None), False, 411),
        (request(None), True, {}),
        (request(b"", "0"), True, {}),
        (request(b"", "0"), False, 400),
        (request(b"{}"), False, 400),
        (request(b"{}"), True, {}),
        (request(b"[1]"), True, 400),
        (request(b'"text"'), False, 400),
        (request(b"{not json"), False, 400),
        (request(b"\xff\xfe"), True, 400),
        (request(b"{}", "abc"), True, 400),
        (request(b'{"a": 1}'), False, {"a": 1}),
    ],
)
def test_d24_bodies_need_a_length_and_a_json_object(req: ControlRequest, optional: bool, expected: Any) -> None:
    result = checks.read_json(req, optional=optional)
    if isinstance(expected, int):
        assert isinstance(result, Response) and result.status == expected
        assert result.body is not None and b"Error response" in result.body  # the standard error page
    else:
        assert result == expected


# -- schedules, versions, timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (FUTURE, (None, None)),
        ("2030-01-01T12:00+00", (None, None)),  # W8's example form
        ("2030-01-01T12:00:00Z", (None, None)),
        ("2030-01-01T12:00:00", (400, "Timezone information is mandatory for the scheduled switchover")),
        (PAST, (422, "Cannot schedule switchover in the past")),
        ("tomorrow", (422, UNPARSABLE_SCHEDULE)),
        (12345, (422, UNPARSABLE_SCHEDULE)),
        (None, (422, UNPARSABLE_SCHEDULE)),
    ],
)
def test_d26_schedule_parsing(value: Any, expected: tuple[int | None, str | None]) -> None:
    parsed = parse_schedule(value, "switchover", NOW)
    assert (parsed.status, parsed.error) == expected
    assert (parsed.at is None) == (parsed.status is not None)
    assert UNPARSABLE_SCHEDULE == (
        "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"
    )


@pytest.mark.parametrize(
    "value, problem",
    [
        ("15.2", None),
        ("9.6.24", None),
        ("10.1", None),
        ("10", "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 10"),
        ("9.6", "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6"),
        ("15.2.1.1", "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 15.2.1.1"),
        ("a.b.c", "Invalid PostgreSQL version: a.b.c"),
        ("15.x", "Invalid PostgreSQL version: 15.x"),
        (15, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 15"),
    ],
)
def test_d29_postgres_version_formats(value: Any, problem: str | None) -> None:
    assert postgres_version_problem(value) == problem


@pytest.mark.parametrize(
    "value, seconds",
    [
        (30, 30),
        ("30", 30),
        ("30s", 30),
        (" 30 s ", 30),
        ("1min", 60),
        ("2h", 7200),
        ("1500ms", 2),
        (12.4, 12),
        ("0x10", 16),
        ("abc", None),
        ("30 parsecs", None),
        (True, None),
        (None, None),
        ("-5", -5),
    ],
)
def test_d29_timeouts_accept_postgresql_time_units(value: Any, seconds: int | None) -> None:
    assert parse_seconds(value) == seconds


# -- POST /switchover, POST /failover: checks before the pre-check (D26, D28, A28) -------------------------------------

SO, FO = checks.SWITCHOVER, checks.FAILOVER


@pytest.mark.parametrize(
    "action, body, paused, expected",
    [
        (SO, {"candidate": "pg2"}, False, (400, "Switchover could be performed only from a specific leader")),
        (
            SO,
            {"master": NAME, "candidate": "pg2"},
            False,
            (400, "Switchover could be performed only from a specific leader"),
        ),
        (FO, {"leader": NAME}, False, (400, "Failover could be performed only to a specific candidate")),
        (FO, {"scheduled_at": "junk"}, False, (400, "Failover could be performed only to a specific candidate")),
        (FO, {"candidate": "pg2", "scheduled_at": FUTURE}, False, (400, "Failover can't be scheduled")),
        (FO, {"leader": NAME, "candidate": "pg2", "scheduled_at": FUTURE}, False, (400, "Failover can't be scheduled")),
        (SO, {"leader": NAME, "scheduled_at": FUTURE}, True, (400, "Can't schedule switchover in the paused state")),
        (
            SO,
            {"leader": NAME, "scheduled_at": "2030-01-01T00:00:00"},
            False,
            (400, "Timezone information is mandatory for the scheduled switchover"),
        ),
        (
            SO,
            {"leader": NAME, "candidate": NAME, "scheduled_at": PAST},
            False,
            (422, "Cannot schedule switchover in the past"),
        ),
        (
            SO,
            {"leader": NAME, "scheduled_at": "next tuesday"},
            False,
            (422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
        ),
        (SO, {"leader": NAME}, True, (400, "Switchover is possible only to a specific candidate in a paused state")),
        (SO, {"leader": NAME, "candidate": NAME}, False, (400, "Switchover target and source are the same")),
        (FO, {"leader": NAME, "candidate": NAME}, False, (400, "Switchover target and source are the same")),
    ],
)
def test_d26_d28_request_checks_in_patroni_order(
    action: str, body: dict[str, Any], paused: bool, expected: tuple[int, str]
) -> None:
    result = checks.check_failover_request(body, action, PAUSED if paused else cluster(), NOW)
    assert answer(result) == expected


def test_d26_member_is_an_alias_of_candidate_and_the_value_holds_only_the_fields_given() -> None:
    plan = checks.check_failover_request({"leader": NAME, "member": "pg2"}, SO, cluster(), NOW)
    assert isinstance(plan, checks.FailoverPlan)
    assert (plan.action, plan.candidate, plan.scheduled_at, plan.converted) == (SO, "pg2", None, False)
    assert plan.value() == {"leader": NAME, "member": "pg2"}
    plan = checks.check_failover_request({"leader": NAME, "scheduled_at": "2030-01-01T12:00+02:00"}, SO, cluster(), NOW)
    assert isinstance(plan, checks.FailoverPlan)
    assert plan.value() == {"leader": NAME, "scheduled_at": "2030-01-01T12:00:00+02:00"}


def test_d28_a_failover_naming_a_leader_becomes_a_switchover() -> None:
    plan = checks.check_failover_request({"leader": NAME, "candidate": "pg2"}, FO, cluster(), NOW)
    assert isinstance(plan, checks.FailoverPlan)
    assert (plan.action, plan.converted) == (SO, True)


def test_a28_failover_is_allowed_in_pause_and_without_a_leader() -> None:
    for state in (PAUSED, cluster(None)):
        plan = checks.check_failover_request({"candidate": "pg2"}, FO, state, NOW)
        assert isinstance(plan, checks.FailoverPlan) and plan.action == FO and plan.value() == {"member": "pg2"}


# -- the 412 pre-check (D26, A29) -------------------------------------------------------------------------------------


def plan(action: str = SO, leader: str | None = NAME, candidate: str | None = None) -> checks.FailoverPlan:
    return checks.FailoverPlan(action, leader, candidate, None)


@pytest.mark.parametrize(
    "state, request_plan, expected",
    [
        (cluster(), plan(leader="pg9"), "leader name does not match"),
        (cluster(None), plan(), "leader name does not match"),
        (cluster(config=SYNC_ON, sync={"leader": NAME, "sync_standby": "pg3"}), plan(candidate="pg2"),
         "candidate name does not match with sync_standby"),
        (cluster(), plan(candidate="pg9"), "candidate does not exists"),
        (cluster(config=SYNC_ON, sync={"leader": NAME, "sync_standby": None}), plan(),
         "switchover is not possible: can not find sync_standby"),
        (cluster(members={NAME: member(NAME, role="master")}), plan(),
         "switchover is not possible: cluster does not have members except leader"),
        (cluster(members={NAME: member(NAME, role="master"), "pg2": member("pg2", api_url=None)}), plan(),
         "switchover is not possible: cluster does not have members except leader"),
        (cluster(members={NAME: member(NAME, role="master")}), plan(FO, None, "pg9"), "candidate does not exists"),
    ],
)  # fmt: skip
def test_d26_precheck_texts(state: Cluster, request_plan: checks.FailoverPlan, expected: str) -> None:
    assert checks.precheck_targets(state, request_plan) == expected


@pytest.mark.parametrize(
    "state, request_plan, names",
    [
        (cluster(), plan(), ["pg2", "pg3"]),
        (cluster(), plan(candidate="pg3"), ["pg3"]),
        (cluster(config=SYNC_ON, sync={"leader": NAME, "sync_standby": "pg3"}), plan(), ["pg3"]),
        (cluster(config=SYNC_ON, sync={"leader": NAME, "sync_standby": "PG3"}), plan(candidate="pg3"), ["pg3"]),
        # the sync rule is for switchovers only (A29, D28)
        (cluster(config=SYNC_ON, sync={"leader": NAME, "sync_standby": "pg3"}), plan(FO, None, "pg2"), ["pg2"]),
        # no leader: every member counts, even without api_url
        (cluster(None), plan(FO, None, None), [NAME, "pg2", "pg3"]),
    ],
)
def test_a29_precheck_probes_these_members(state: Cluster, request_plan: checks.FailoverPlan, names: list[str]) -> None:
    targets = checks.precheck_targets(state, request_plan)
    assert isinstance(targets, list) and [m.name for m in targets] == names


HEALTHY = {"state": "running", "role": "replica", "xlog": {"received_location": 1, "replayed_location": 1}}


@pytest.mark.parametrize(
    "status, limitation",
    [
        (HEALTHY, None),
        ({**HEALTHY, "xlog": {"received_location": 0}}, None),  # lag is not checked here (D26)
        ({"role": "master", "xlog": {"location": 5}}, None),
        ({"wal": {"location": 5}}, None),
        (None, "not reachable"),
        ([HEALTHY], "not reachable"),
        ({"state": "stopped", "role": "replica"}, "not reachable"),
        ({**HEALTHY, "xlog": [1]}, "not reachable"),
        ({**HEALTHY, "tags": "nofailover"}, "not reachable"),
        ({**HEALTHY, "tags": {"nofailover": True}}, "not allowed to promote"),
        ({**HEALTHY, "tags": {"nofailover": "on"}}, "not allowed to promote"),
        ({**HEALTHY, "tags": {"failover_priority": 0}}, "not allowed to promote"),
        ({**HEALTHY, "tags": {"nofailover": False, "failover_priority": 0}}, None),
        ({**HEALTHY, "watchdog_failed": True}, "not watchdog capable"),
    ],
)
def test_a29_candidate_health(status: Any, limitation: str | None) -> None:
    assert checks.candidate_limitation(status) == limitation


def test_a29_one_healthy_candidate_is_enough() -> None:
    assert checks.precheck_verdict(SO, [None, {**HEALTHY, "tags": {"nofailover": True}}, HEALTHY]) is None
    assert checks.precheck_verdict(SO, [None]) == "switchover is not possible: no good candidates have been found"
    assert checks.precheck_verdict(FO, []) == "failover is not possible: no good candidates have been found"


# -- the result of an immediate switchover (D26 flow) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "action, before, candidate, now_leader, gone, expected",
    [
        (SO, NAME, "pg2", NAME, False, None),
        (SO, NAME, "pg2", None, False, None),
        (SO, NAME, "pg2", "pg2", False, (200, 'Successfully switched over to "pg2"')),
        (SO, NAME, None, "pg3", True, (200, 'Successfully switched over to "pg3"')),
        (SO, NAME, "pg2", "pg3", False, (200, 'Switched over to "pg3" instead of "pg2"')),
        (FO, NAME, "pg2", "pg2", False, (200, 'Successfully failed over to "pg2"')),
        (FO, NAME, "pg2", "pg3", False, (200, 'Failed over to "pg3" instead of "pg2"')),
        (FO, None, "pg2", "pg2", False, (200, 'Successfully failed over to "pg2"')),
        (SO, NAME, "pg2", NAME, True, (503, "Switchover failed")),
        (FO, None, "pg2", None, True, (503, "Failover failed")),
    ],
)
def test_d26_poll_verdicts(
    action: str, before: str | None, candidate: str | None, now_leader: str | None, gone: bool, expected: Any
) -> None:
    assert checks.failover_poll(action, before, candidate, cluster(now_leader), gone) == expected


def test_d26_status_unknown_and_poll_duration() -> None:
    assert checks.failover_unknown(SO) == (503, "Switchover status unknown")
    assert checks.failover_unknown(FO) == (503, "Failover status unknown")
    assert checks.failover_poll_s(snap(None, cluster_view(NAME))) == 20.0
    assert checks.failover_poll_s(snap(None, cluster_view(NAME, config={"loop_wait": 15}))) == 30.0
    status = node_status("master")
    status["loop_wait"] = 25
    assert checks.failover_poll_s(snap(status, cluster_view(NAME))) == 50.0


def test_a33_a_failover_key_counts_as_new_when_its_version_changed() -> None:
    old = cluster(failover={"leader": NAME, "member": "pg2", "scheduled_at": FUTURE}).failover
    assert old is not None
    new = Cluster.from_wire(
        {**cluster_view(NAME)["keys"], "failover": {"value": '{"leader":"pg1"}', "version": 99, "session": None}}
    ).failover
    assert not checks.is_new_failover(None, None)
    assert checks.is_new_failover(None, old)
    assert not checks.is_new_failover(old, old)
    assert checks.is_new_failover(old, new)


# -- POST /restart (D29, A52) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, paused, expected",
    [
        ({"schedule": "junk", "role": "bad", "foo": 1}, True, (500, "Can't schedule restart in the paused state")),
        ({"role": "standby"}, False, (400, "PostgreSQL role should be either primary or replica")),
        ({"postgres_version": "10"}, False, (400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 10")),
        ({"postgres_version": "x.y"}, False, (400, "Invalid PostgreSQL version: x.y")),
        ({"timeout": "abc"}, False, (400, "Timeout should be a positive number of seconds")),
        ({"timeout": 0}, False, (400, "Timeout should be a positive number of seconds")),
        ({"timeout": "-5s"}, False, (400, "Timeout should be a positive number of seconds")),
        ({"foo": 1}, False, (400, "Unknown filter for the scheduled restart: foo")),
        ({"foo": 1, "role": "bad"}, False, (400, "Unknown filter for the scheduled restart: foo")),
        ({"role": "bad", "foo": 1}, False, (400, "PostgreSQL role should be either primary or replica")),
        (
            {"schedule": "2030-01-01T00:00:00"},
            False,
            (400, "Timezone information is mandatory for the scheduled restart"),
        ),
        ({"schedule": PAST}, False, (422, "Cannot schedule restart in the past")),
        (
            {"schedule": "soon"},
            False,
            (422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"),
        ),
    ],
)
def test_d29_restart_filters(body: dict[str, Any], paused: bool, expected: tuple[int, str]) -> None:
    assert answer(checks.check_restart_request(body, paused, NOW)) == expected


def test_d29_valid_filters_become_the_ha_restart_body() -> None:
    body = {"restart_pending": False, "role": "primary", "postgres_version": "15.4", "timeout": "1min"}
    result = checks.check_restart_request(body, True, NOW)  # paused: an immediate restart is allowed
    assert isinstance(result, checks.RestartPlan) and not result.scheduled
    # 3.2.2: the mere presence of restart_pending makes it a condition
    assert result.body == {"restart_pending": True, "role": "primary", "postgres_version": "15.4", "timeout": 60}
    assert result.timeout == 60
    result = checks.check_restart_request({"schedule": "2030-01-01T00:00:00-03:00"}, False, NOW)
    assert isinstance(result, checks.RestartPlan) and result.scheduled
    assert result.body == {"schedule": "2030-01-01T00:00:00-03:00"} and result.timeout is None
    assert checks.check_restart_request({}, False, NOW) == checks.RestartPlan({}, None)


def test_a54_an_immediate_restart_is_awaited_for_its_start_timeout_plus_ttl() -> None:
    view = snap(node_status("replica"), cluster_view("pg0", config={"primary_start_timeout": 60}))
    assert checks.restart_wait_s(checks.RestartPlan({}, None), view) == 90.0
    assert checks.restart_wait_s(checks.RestartPlan({"timeout": 5}, 5), view) == 35.0
    assert checks.restart_wait_s(checks.RestartPlan({}, None), snap(None, cluster_view(NAME))) == 330.0
    legacy = snap(None, cluster_view(NAME, config={"master_start_timeout": 0}))
    assert checks.restart_wait_s(checks.RestartPlan({}, None), legacy) == 30.0


def test_controls_are_read_from_node_status_once_done() -> None:
    status = node_status("replica")
    status["controls"] = {"c1": {"state": "running"}, "c2": {"state": "done", "status": 200, "message": "ok"}}
    assert checks.control_result(status, "c1") is None and checks.has_control(status, "c1")
    assert checks.control_result(status, "c2") == {"state": "done", "status": 200, "message": "ok"}
    assert checks.control_result(None, "c2") is None and not checks.has_control(status, "c3")


@pytest.mark.parametrize(
    "reply, expected",
    [
        ({"status": 202, "message": "Restart scheduled"}, (202, "Restart scheduled")),
        (
            {"status": 409, "message": "Another restart is already scheduled"},
            (409, "Another restart is already scheduled"),
        ),
        ({"status": "200", "message": 5}, (503, "restart failed")),
        ({"status": True}, (503, "restart failed")),
        ({}, (503, "restart failed")),
    ],
)
def test_brain_answers_become_plain_text(reply: dict[str, Any], expected: tuple[int, str]) -> None:
    assert answer(checks.brain_answer(reply, 503, "restart failed")) == expected

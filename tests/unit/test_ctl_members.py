"""Member selection by role, failover candidates, request bodies, timestamps and schedules, restart conditions,
history and query output, the DCS-only configuration: havenctl's pure parts (E3, E7, E9-E11, E15, E19, E21)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from ctl.config import CtlError, parse_dcs_url
from ctl.dcs_reader import client_config
from ctl.failover_cmds import candidate_names, is_async_candidate, request_body
from ctl.history_remove_cmds import format_history, history_rows
from ctl.member_cmds import postgres_version_to_int, restart_body
from ctl.members import any_member, leader_first, members_with_role, next_hour, parse_scheduled, timestamp
from ctl.query_cmds import connect_kwargs, format_query_output
from ctl.render import ClusterInfo
from tests.support.fake_members import node


def cluster(*members: Any) -> ClusterInfo:
    return ClusterInfo("batman", "7277694203142172922", {"members": list(members), "scope": "batman"})


PRIMARY = cluster(
    node("pg2", 5434, api_url="http://h2:8008/patroni"),
    node("pg0", 5432, "leader", "running", api_url="http://h0:8008/patroni"),
    node("pg1", 5433, "sync_standby", api_url="http://h1:8008/patroni"),
)
STANDBY = cluster(node("s0", 5432, "standby_leader", "running"), node("s1", 5433))


@pytest.mark.parametrize(
    "info, role, expected",
    [
        (PRIMARY, "leader", ["pg0"]),
        (PRIMARY, "primary", ["pg0"]),
        (PRIMARY, "master", ["pg0"]),
        (PRIMARY, "standby-leader", []),
        (PRIMARY, "replica", ["pg1", "pg2"]),
        (PRIMARY, "standby", ["pg1", "pg2"]),
        (PRIMARY, "any", ["pg0", "pg1", "pg2"]),
        (STANDBY, "leader", ["s0"]),
        (STANDBY, "primary", []),
        (STANDBY, "standby-leader", ["s0"]),
        (STANDBY, "replica", ["s1"]),
    ],
)
def test_e3_members_by_role(info: ClusterInfo, role: str, expected: list[str]) -> None:
    assert [m.name for m in members_with_role(info, role)] == expected


def test_leader_first_skips_members_without_a_rest_api() -> None:
    info = cluster(*PRIMARY.members, node("pg3", 5435))
    assert [m.name for m in leader_first(info)] == ["pg0", "pg1", "pg2"]


def test_e7_any_member_defaults_to_the_leader_and_refuses_role_with_member() -> None:
    assert any_member(PRIMARY, None, None).name == "pg0"  # type: ignore[union-attr]
    assert any_member(PRIMARY, "replica", None).name == "pg1"  # type: ignore[union-attr]
    assert any_member(PRIMARY, None, "pg2").name == "pg2"  # type: ignore[union-attr]
    assert any_member(PRIMARY, None, "nobody") is None
    with pytest.raises(CtlError, match="--role and --member are mutually exclusive options"):
        any_member(PRIMARY, "replica", "pg2")


def test_e9_candidates_exclude_the_leader_and_nofailover_members() -> None:
    info = cluster(
        node("d", 5435, tags={"nofailover": True}),
        node("c", 5434, tags={"failover_priority": 0}),
        node("b", 5433, tags={"nofailover": False, "failover_priority": 0}),  # nofailover wins (3.2.2)
        node("a", 5432, "leader", "running"),
        node("e", 5436),
    )
    assert candidate_names(info) == ["b", "e"]


def test_e9_a_failover_to_a_node_outside_sync_asks_twice() -> None:
    assert is_async_candidate(PRIMARY, "pg2")
    assert not is_async_candidate(PRIMARY, "pg1")
    assert not is_async_candidate(cluster(node("a", 1, "leader"), node("b", 2)), "b")  # no sync standby: async mode


def test_w8_switchover_and_failover_bodies() -> None:
    assert request_body("switchover", "pg1", "pg0", None) == {"leader": "pg0", "candidate": "pg1"}
    assert request_body("switchover", "", "pg0", "2030-01-01T00:00:00+00:00") == {
        "leader": "pg0",
        "scheduled_at": "2030-01-01T00:00:00+00:00",
    }
    assert request_body("failover", "pg1", None, None) == {"candidate": "pg1"}


def test_timestamps_are_patronictls() -> None:
    now = datetime(2023, 9, 12, 11, 52, 27, 509781)
    assert timestamp(now=now) == "2023-09-12 11:52:27.50978"
    assert timestamp(0, now=now) == "2023-09-12 11:52:27"
    assert next_hour(now) == "2023-09-12T12:52"


def test_scheduled_times() -> None:
    assert parse_scheduled(None) is None and parse_scheduled("now") is None and parse_scheduled("") is None
    at = parse_scheduled("2023-09-13T18:00-03:00")
    assert at is not None and at.isoformat() == "2023-09-13T18:00:00-03:00"
    local = parse_scheduled("2023-09-13T18:00")  # no zone: the local one
    assert local is not None and local.tzinfo is not None and local.replace(tzinfo=None) == datetime(2023, 9, 13, 18)
    with pytest.raises(CtlError, match=r"Unable to parse scheduled timestamp \(soon\). It should be in an unambiguous"):
        parse_scheduled("soon")


@pytest.mark.parametrize("version, number", [("9.6.24", 90624), ("15.4", 150004), ("10.0", 100000)])
def test_e19_pg_version(version: str, number: int) -> None:
    assert postgres_version_to_int(version) == number


@pytest.mark.parametrize(
    "version, message",
    [
        ("9.6", "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6"),
        ("15", "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 15"),
        ("15.a", "Invalid PostgreSQL version: 15.a"),
    ],
)
def test_e19_bad_pg_version(version: str, message: str) -> None:
    with pytest.raises(CtlError, match=message):
        postgres_version_to_int(version)


def test_w8_restart_body() -> None:
    assert restart_body(False, "", None, None) == {}
    assert restart_body(True, "15.4", "2030-01-01T00:00:00+00:00", "30s") == {
        "restart_pending": True,
        "postgres_version": "15.4",
        "schedule": "2030-01-01T00:00:00+00:00",
        "timeout": "30s",
    }


HISTORY = [
    [1, 24392648, "no recovery target specified", "2023-09-11T22:11:27.125527+00:00", "postgresql0"],
    [2, 50331864, "no recovery target specified", "2023-09-12T11:34:03.148097+00:00"],  # before 2.1: no leader
]


def test_e11_history_in_every_format() -> None:
    rows = history_rows(HISTORY)
    assert rows[1][4] == ""
    assert format_history(rows, "pretty") == (
        "+----+----------+------------------------------+----------------------------------+-------------+\n"
        "| TL |      LSN | Reason                       | Timestamp                        | New Leader  |\n"
        "+----+----------+------------------------------+----------------------------------+-------------+\n"
        "|  1 | 24392648 | no recovery target specified | 2023-09-11T22:11:27.125527+00:00 | postgresql0 |\n"
        "|  2 | 50331864 | no recovery target specified | 2023-09-12T11:34:03.148097+00:00 |             |\n"
        "+----+----------+------------------------------+----------------------------------+-------------+\n"
    )
    assert format_history(rows, "yaml").startswith(
        "- LSN: 24392648\n  New Leader: postgresql0\n  Reason: no recovery target specified\n  TL: 1\n"
        "  Timestamp: '2023-09-11T22:11:27.125527+00:00'\n"
    )  # patroni-docs.txt L2708-2713
    assert json.loads(format_history(rows, "json"))[1] == {
        "TL": 2, "LSN": 50331864, "Reason": "no recovery target specified",
        "Timestamp": "2023-09-12T11:34:03.148097+00:00", "New Leader": "",
    }  # fmt: skip
    assert format_history(rows, "tsv").split("\n")[0] == "TL\tLSN\tReason\tTimestamp\tNew Leader"


def test_e15_query_output() -> None:
    when = datetime(2023, 9, 12, 18, 14, 22, 52060, tzinfo=UTC)
    rows = [[when, "test"]]
    assert format_query_output(["column_1", "column_2"], rows, "tsv", "\t") == (
        "column_1\tcolumn_2\n2023-09-12 18:14:22.052060+00:00\ttest\n"
    )
    # patroni-docs.txt L3134-3136
    assert format_query_output(["column_1", "column_2"], rows, "yaml", "\t") == (
        "- column_1: 2023-09-12 18:14:22.052060+00:00\n  column_2: test\n\n"
    )
    assert json.loads(format_query_output(["a"], [[when], [None]], "json", "\t")) == [
        {"a": "2023-09-12 18:14:22.052060+00:00"},
        {"a": None},
    ]
    assert format_query_output(None, [["2023-09-12 18:14:22", "ERROR, SQLSTATE: 42P01"]], "tsv", ";") == (
        "2023-09-12 18:14:22;ERROR, SQLSTATE: 42P01\n"
    )
    assert format_query_output(["now"], [["2023-09-12 18:12:16.716235+00:00"]], "pretty", "\t") == (
        "+----------------------------------+\n"
        "| now                              |\n"
        "+----------------------------------+\n"
        "| 2023-09-12 18:12:16.716235+00:00 |\n"
        "+----------------------------------+\n"
    )  # L3113-3117
    assert yaml.safe_load(format_query_output(["n"], [[timedelta(seconds=1)]], "yaml", "\t")) == [{"n": "0:00:01"}]


def test_e15_connection_parameters() -> None:
    member = members_with_role(PRIMARY, "leader")[0]
    assert connect_kwargs(member, {"username": "u", "password": "p", "dbname": "d"}) == {
        "host": "127.0.0.1", "port": 5432, "user": "u", "password": "p", "dbname": "d",
        "fallback_application_name": "Patroni ctl", "connect_timeout": "5",
    }  # fmt: skip
    assert "dbname" not in connect_kwargs(member, {})  # libpq's default: the user's name


@pytest.mark.parametrize(
    "url, expected",
    [
        ("raft://127.0.0.1:5010/service", {"raft": {"partner_addrs": ["127.0.0.1:5010"]}, "namespace": "/service"}),
        ("raft://10.0.0.1", {"raft": {"partner_addrs": ["10.0.0.1:2222"]}}),
        ("kubernetes:///service", {"kubernetes": {}, "namespace": "/service"}),
    ],
)
def test_e2_dcs_url_for_raft_and_kubernetes(url: str, expected: dict[str, Any]) -> None:
    assert parse_dcs_url(url) == expected


def test_havenctls_raft_client_joins_read_only_through_the_nodes_own_address() -> None:
    config = {
        "scope": "other",
        "name": "pg1",
        "raft": {"self_addr": "10.0.0.1:2222", "bind_addr": "0.0.0.0:2222", "partner_addrs": "'10.0.0.2:2222'",
                 "data_dir": "/var/lib/raft", "password": "x"},
    }  # fmt: skip
    node_config = client_config(config, "batman")
    assert node_config.scope == "batman"
    assert node_config.dcs == {"partner_addrs": ["10.0.0.2:2222", "10.0.0.1:2222"], "password": "x"}
    assert config["raft"]["self_addr"] == "10.0.0.1:2222"  # the loaded configuration is left alone

"""The postmaster controller's state: pure derivations from observations (C91-C93, W1, A48, A49, C45)."""

from __future__ import annotations

import dataclasses
import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from services.postmaster.core import (
    DataDir,
    Memory,
    Observation,
    SqlStatus,
    classify_data_dir,
    controldata_summary,
    derive_role,
    derive_state,
    finished_operation,
    new_operation,
    parse_controldata,
    parse_lsn,
    parse_pid_file,
    pg_state,
    remember,
    state_key,
)
from services.postmaster.pending import changed_postmaster_settings, setting_matches
from services.postmaster.requests import Requests
from services.postmaster.sql import status_from_row
from shared.protocol.ops import PG

PRIMARY = SqlStatus(
    in_recovery=False,
    postmaster_start_time="2023-08-18 11:03:37.966359+00:00",
    server_version=150004,
    sysid="7268616322854375442",
    current_lsn=100,
    primary_timeline=3,
)
REPLICA = SqlStatus(
    in_recovery=True,
    postmaster_start_time="2023-08-18 11:03:37.966359+00:00",
    server_version=150004,
    received_lsn=90,
    replayed_lsn=80,
    receiver={"status": "streaming", "received_tli": 3},
    checkpoint_timeline=2,
)


def obs(**kwargs: Any) -> Observation:
    values: dict[str, Any] = {"ts": 1.0, "order": 1.0, "data_dir": DataDir.INITIALIZED}
    values.update(kwargs)
    return Observation(**values)


def stopped(state: str) -> Observation:
    return obs(
        controldata={
            "Database cluster state": state,
            "Latest checkpoint's TimeLineID": "2",
            "Latest checkpoint location": "0/3000028",
            "Database system identifier": "42",
        }
    )


# ---- parsing ------------------------------------------------------------------------------------------------------


def test_data_dir_states() -> None:
    assert classify_data_dir(None, False) == DataDir.MISSING
    assert classify_data_dir([], False) == DataDir.EMPTY
    assert classify_data_dir(["lost+found", ".snapshot"], False) == DataDir.EMPTY  # C9
    assert classify_data_dir(["base"], False) == DataDir.INVALID
    assert classify_data_dir(["global"], True) == DataDir.INITIALIZED


def test_pid_file() -> None:
    pid_file = parse_pid_file("6594\n/data\n1795655523\n5432\n/tmp\n127.0.0.1\n  2148906  4\nready   \n")
    assert pid_file is not None
    assert (pid_file.pid, pid_file.data_dir, pid_file.start_time, pid_file.status) == (
        6594,
        "/data",
        1795655523,
        "ready",
    )
    assert parse_pid_file("6594\n/data\n1795655523\n")
    assert parse_pid_file("") is None and parse_pid_file("garbage\n") is None


def test_lsn_and_controldata() -> None:
    assert parse_lsn("0/1500718") == 0x1500718 and parse_lsn("1/0") == 1 << 32 and parse_lsn("x") is None
    data = parse_controldata(
        "Database cluster state:               in production\nLatest checkpoint location:   0/3000028\n"
        "Latest checkpoint's TimeLineID:       2\n"
    )
    assert controldata_summary(data) == {"state": "in production", "timeline": 2, "checkpoint_lsn": 0x3000028}
    assert controldata_summary({}) == {}


# ---- role and state -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observation", "role"),
    [
        (obs(data_dir=DataDir.MISSING), "uninitialized"),
        (obs(data_dir=DataDir.EMPTY), "uninitialized"),
        (obs(data_dir=DataDir.INVALID), "uninitialized"),
        (obs(running=True, sql=PRIMARY), "master"),
        (obs(running=True, sql=REPLICA), "replica"),
        (stopped("in production"), "master"),
        (stopped("shut down"), "master"),
        (stopped("in archive recovery"), "replica"),
        (stopped("shut down in recovery"), "replica"),
        (obs(standby_signal=True), "replica"),
    ],
)
def test_role(observation: Observation, role: str) -> None:
    assert derive_role(observation) == role


@pytest.mark.parametrize(
    ("observation", "memory", "state"),
    [
        (obs(running=True, sql=PRIMARY), Memory(), "running"),
        (obs(running=True, pm_status="starting"), Memory(), "starting"),
        (obs(running=True, pm_status="stopping"), Memory(), "stopping"),
        (obs(running=True, pm_status="ready"), Memory(), "running"),  # alive, but the query failed
        (stopped("shut down"), Memory(), "stopped"),
        (stopped("in production"), Memory(), "crashed"),  # unclean, found at the controller's start
        (stopped("in archive recovery"), Memory(), "crashed"),
        (stopped("shut down"), Memory(intended_running=True), "crashed"),  # vanished without a stop request
        (stopped("in production"), Memory(intended_running=False), "stopped"),  # an immediate stop we asked for
        (obs(data_dir=DataDir.MISSING), Memory(), "stopped"),
        (stopped("shut down"), Memory(phase="starting"), "starting"),
        (obs(running=True, sql=PRIMARY), Memory(phase="stopping"), "stopping"),
        (stopped("shut down"), Memory(failure="start failed"), "start failed"),
    ],
)
def test_state(observation: Observation, memory: Memory, state: str) -> None:
    assert derive_state(observation, memory) == state


def test_a_postmaster_found_running_is_adopted_and_its_death_is_a_crash() -> None:
    memory = remember(Memory(), obs(running=True, sql=PRIMARY))
    assert memory.intended_running is True
    assert derive_state(stopped("in production"), remember(memory, stopped("in production"))) == "crashed"


def test_a_failure_state_lasts_until_running_or_accepting_change() -> None:
    memory = Memory(failure="start failed", failure_at=(False, False))
    assert remember(memory, stopped("shut down")).failure == "start failed"
    assert remember(memory, obs(running=True, sql=PRIMARY)).failure is None


# ---- pg_state -----------------------------------------------------------------------------------------------------

PROTOCOL_FIELDS = {
    "name",
    "ts",
    "data_dir",
    "sysid",
    "server_version",
    "running",
    "accepting",
    "state",
    "role",
    "postmaster_start_time",
    "timeline",
    "xlog",
    "wal_position",
    "replication",
    "replication_state",
    "following",
    "pending_restart",
    "controldata",
    "operation",
    "timeline_history",
    "replication_lsns",
    "synchronous_standby_names",
    "slots",
    "slots_to_copy",
}


def test_pg_state_of_a_running_primary() -> None:
    state = pg_state("n1", obs(running=True, sql=PRIMARY), Memory(), binary_version=150005, pending=True)
    assert set(state) == PROTOCOL_FIELDS
    assert (state["xlog"], state["wal_position"], state["timeline"]) == ({"location": 100}, 100, 3)
    assert (state["sysid"], state["server_version"], state["pending_restart"]) == ("7268616322854375442", 150004, True)
    assert state["replication_state"] is None and state["controldata"] == {}


def test_pg_state_of_a_streaming_replica() -> None:
    state = pg_state("n1", obs(running=True, sql=REPLICA), Memory(following="n2"), binary_version=None, pending=False)
    assert state["xlog"] == {
        "received_location": 90,
        "replayed_location": 80,
        "replayed_timestamp": None,
        "paused": False,
    }
    assert (state["wal_position"], state["timeline"], state["replication_state"]) == (90, 3, "streaming")
    assert state["following"] == "n2"


def test_a_replica_without_receiver_is_in_archive_recovery_only_with_a_restore_command() -> None:
    idle = dataclasses.replace(REPLICA, receiver=None, received_lsn=None)
    assert idle.replication_state is None and idle.timeline == 2
    assert dataclasses.replace(idle, restore_command="cp %f %p").replication_state == "in archive recovery"
    assert (
        pg_state("n", obs(running=True, sql=idle), Memory(), binary_version=1, pending=False)["xlog"][
            "received_location"
        ]
        == 80
    )


def test_pg_state_of_a_stopped_instance_comes_from_pg_controldata() -> None:
    state = pg_state("n1", stopped("shut down"), Memory(), binary_version=150005, pending=True)
    assert (state["running"], state["accepting"], state["xlog"], state["postmaster_start_time"]) == (
        False,
        False,
        None,
        None,
    )
    assert (state["timeline"], state["sysid"], state["server_version"]) == (2, "42", 150005)
    assert state["controldata"] == {"state": "shut down", "timeline": 2, "checkpoint_lsn": 0x3000028}
    assert state["pending_restart"] is False


def test_state_key_changes_with_what_subscribers_must_see_at_once() -> None:
    running = pg_state("n", obs(running=True, sql=PRIMARY), Memory(), binary_version=1, pending=False)
    moved = pg_state(
        "n",
        obs(running=True, sql=dataclasses.replace(PRIMARY, current_lsn=200)),
        Memory(),
        binary_version=1,
        pending=False,
    )
    assert state_key(running) == state_key(moved), "WAL positions wait for the heartbeat"
    op = Memory(operation=new_operation("r1", "stop", 5.0))
    assert state_key(running) != state_key(
        pg_state("n", obs(running=True, sql=PRIMARY), op, binary_version=1, pending=False)
    )


def test_operation_records() -> None:
    op = new_operation("r1", "promote", 5.0)
    assert op == {
        "id": "r1",
        "name": "promote",
        "state": "running",
        "error": None,
        "started": 5.0,
        "finished": None,
        "result": {},
    }
    assert finished_operation(op, 6.0, result={"x": 1})["state"] == "succeeded"
    failed = finished_operation(op, 6.0, error="boom")
    assert (failed["state"], failed["error"], failed["finished"]) == ("failed", "boom", 6.0)


def test_monitoring_row_to_status() -> None:
    start = datetime.datetime(2023, 8, 18, 11, 3, 37, 966359, tzinfo=datetime.UTC)
    status = status_from_row(
        {
            "in_recovery": False,
            "postmaster_start_time": start,
            "server_version": 150004,
            "current_lsn": 5,
            "primary_timeline": 1,
            "replication": [{"usename": "r"}, "bad"],
            "receiver": None,
            "sysid": 7,
        }
    )
    assert status.postmaster_start_time == "2023-08-18 11:03:37.966359+00:00"
    assert (status.sysid, status.replication, status.timeline) == ("7", [{"usename": "r"}], 1)


# ---- pending restart ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("desired", "setting", "unit", "vartype", "same"),
    [
        ("128MB", "16384", "8kB", "integer", True),
        ("256MB", "16384", "8kB", "integer", False),
        (16384, "16384", "8kB", "integer", True),
        ("1GB", "1024", "MB", "integer", True),
        ("10s", "10000", "ms", "integer", True),
        ("1min", "60", "s", "integer", True),
        (100, "100", None, "integer", True),
        ("100", "101", None, "integer", False),
        (True, "on", None, "bool", True),
        ("off", "on", None, "bool", False),
        ("hot_standby", "replica", None, "enum", True),
        ("Logical", "logical", None, "enum", True),
        ("a, b", "a,b", None, "string", True),
        ("/run/h", "/run/x", None, "string", False),
        (0.5, "0.5", None, "real", True),
    ],
)
def test_setting_comparison(desired: Any, setting: str, unit: str | None, vartype: str, same: bool) -> None:
    assert setting_matches(desired, setting, unit, vartype) is same


def test_changed_postmaster_settings() -> None:
    running = {"max_connections": ["100", None, "integer"], "shared_buffers": ["16384", "8kB", "integer"]}
    desired = {"max_connections": 120, "shared_buffers": "128MB", "work_mem": "4MB", "Max_Connections": 100}
    assert changed_postmaster_settings(desired, running) == ["max_connections"]


def test_every_pg_op_has_a_handler() -> None:
    requests = Requests(SimpleNamespace(settings=None))  # type: ignore[arg-type]
    assert set(requests.handlers()) == set(PG)


def test_timeline_history_file_lines_are_parsed_B7() -> None:
    from services.postmaster.core import parse_history_file

    text = "1\t0/3000060\tno recovery target specified\n\n# comment\n2\t0/5000A8\tbefore 2000-01-01\nbroken\n"
    assert parse_history_file(text) == (
        (1, 0x3000060, "no recovery target specified"),
        (2, 0x5000A8, "before 2000-01-01"),
    )

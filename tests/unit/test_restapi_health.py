"""Health-check status codes (features.md D5-D17, K1) through services.restapi.core.respond(), without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.restapi import core
from services.restapi.snapshot import Snapshot, apply_event
from shared.protocol.endpoints import Topic
from tests.unit.test_restapi_core import (
    MB,
    NAME,
    NOW,
    PRIMARY,
    REPLICA,
    REPLICA_VIEW,
    STANDBY_CONFIG,
    STANDBY_LEADER,
    cluster_view,
    code,
    member,
    node_status,
    snap,
)

# -- D5 / K1: the primary check -----------------------------------------------------------------------------------

PRIMARY_PATHS = ["/", "/primary", "/read-write", "/master"]


@pytest.mark.parametrize("path", PRIMARY_PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_d5_primary_with_the_lock_answers_200_on_every_method(path: str, method: str) -> None:
    assert code(PRIMARY, path, method) == 200


@pytest.mark.parametrize(
    "case, snapshot",
    [
        ("replica", REPLICA),
        ("standby leader", STANDBY_LEADER),
        ("master without the lock", snap(node_status("master", has_lock=False), cluster_view(NAME))),
        ("last lock refresh failed", snap(node_status("master", lock_ok=False), cluster_view(NAME))),
        ("leader key expired while the brain hangs", snap(node_status("master"), cluster_view(None))),
        ("leader key names another node", snap(node_status("master"), cluster_view("pg2"))),
        ("postgres not running", snap(node_status("master", state="stopping"), cluster_view(NAME))),
        ("no cluster view yet", snap(node_status("master"))),
        ("no node status yet", snap(None, cluster_view(NAME))),
    ],
)
@pytest.mark.parametrize("method", ["GET", "OPTIONS"])
def test_d5_primary_check_is_503_unless_master_running_with_a_confirmed_lock(
    case: str, snapshot: Snapshot, method: str
) -> None:
    assert code(snapshot, "/primary", method) == 503, case


def test_k1_haproxy_options_slash_is_the_primary_check() -> None:
    """HAProxy's `option httpchk` without a URI sends OPTIONS / (K1)."""
    response = core.respond("OPTIONS", "/", "", PRIMARY, NOW)
    assert response == core.Response(200, None, {})
    assert core.respond("OPTIONS", "/", "", REPLICA, NOW).status == 503


def test_d5_d10_tag_filters_are_ignored_on_leader_endpoints() -> None:
    for path in ("/", "/primary", "/read-write", "/leader"):
        assert code(PRIMARY, f"{path}?tag_zone=nowhere") == 200
    assert code(STANDBY_LEADER, "/standby-leader?tag_zone=nowhere") == 200


def test_d5_paused_without_a_valid_dcs_view_the_role_decides() -> None:
    stale = snap(node_status("master", pause=True, has_lock=False), cluster_view(NAME), view_at=NOW - 100)
    assert code(stale, "/primary") == 200
    assert code(stale, "/leader") == 200
    running_unpaused = snap(node_status("master", has_lock=False), cluster_view(NAME), view_at=NOW - 100)
    assert code(running_unpaused, "/primary") == 503


# -- D6 / D7: leaders --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/standby-leader", "/standby_leader"])
def test_d6_standby_leader_only_for_the_lock_holder_of_a_standby_cluster(path: str) -> None:
    assert code(STANDBY_LEADER, path) == 200
    assert code(PRIMARY, path) == 503
    assert code(REPLICA, path) == 503
    unlocked = snap(node_status("standby_leader", has_lock=False), cluster_view(NAME, config=STANDBY_CONFIG))
    assert code(unlocked, path) == 503


def test_d6_standby_leader_is_not_a_primary_nor_a_replica() -> None:
    assert code(STANDBY_LEADER, "/primary") == 503
    assert code(STANDBY_LEADER, "/replica") == 503
    assert code(STANDBY_LEADER, "/read-only") == 200


def test_d7_leader_answers_200_for_primary_and_standby_leader() -> None:
    assert code(PRIMARY, "/leader") == 200
    assert code(STANDBY_LEADER, "/leader") == 200
    assert code(REPLICA, "/leader") == 503
    assert code(snap(node_status("master", lock_ok=False), cluster_view(NAME)), "/leader") == 503


# -- D8 - D10: replicas ------------------------------------------------------------------------------------------


def test_d8_replica_running_answers_200() -> None:
    assert code(REPLICA, "/replica") == 200
    assert code(REPLICA, "/replica", "HEAD") == 200


@pytest.mark.parametrize(
    "case, ns",
    [
        ("postgres stopped", node_status("replica", state="stopped")),
        ("postgres starting", node_status("replica", state="starting")),
        ("noloadbalance tag", node_status("replica", tags={"noloadbalance": True})),
        ("the primary", node_status("master", has_lock=False)),
    ],
)
def test_d8_replica_check_fails(case: str, ns: dict[str, Any]) -> None:
    assert code(snap(ns, REPLICA_VIEW), "/replica") == 503, case


@pytest.mark.parametrize(
    "lag, expected",
    [
        ("1048576", 200),  # exactly 1 MB behind: allowed
        ("1048575", 503),
        ("1024kB", 200),
        ("1MB", 200),
        ("10MB", 200),
        ("1GB", 200),
        ("16kB", 503),
        ("0.5MB", 503),
        ("1.5MB", 200),
        ("", 200),  # blank: no limit
        ("soon", 200),  # unparsable: no limit (D9)
        ("10 parsecs", 200),
        ("10mb", 200),  # units are case-sensitive as in PostgreSQL: unknown unit, no limit
    ],
)
@pytest.mark.parametrize("path", ["/replica", "/async", "/asynchronous"])
def test_d9_lag_limit_compares_status_optime_with_replayed_location(path: str, lag: str, expected: int) -> None:
    ns = node_status(
        "replica", xlog={"received_location": 99 * MB, "replayed_location": 99 * MB, "replayed_timestamp": None}
    )
    view = cluster_view("pg0", members={"pg0": member("pg0", role="master"), NAME: member(NAME)}, optime=100 * MB)
    assert code(snap(ns, view), f"{path}?lag={lag}") == expected


def test_d9_lag_is_not_checked_without_a_valid_dcs_view() -> None:
    ns = node_status("replica", xlog={"replayed_location": 0})
    stale = snap(ns, cluster_view("pg0", optime=100 * MB), view_at=NOW - 31)
    assert code(stale, "/replica?lag=1") == 200


@pytest.mark.parametrize(
    "query, expected",
    [
        ("tag_zone=east", 200),
        ("tag_zone=west", 503),
        ("tag_missing=x", 503),
        ("tag_clonefrom=true", 200),  # booleans compare as lower-case text
        ("tag_clonefrom=True", 503),
        ("tag_zone=east&tag_clonefrom=true", 200),
        ("zone=west", 200),  # only tag_ parameters filter
    ],
)
@pytest.mark.parametrize("path", ["/replica", "/read-only", "/async", "/health"])
def test_d10_tag_filters_on_replica_type_endpoints(path: str, query: str, expected: int) -> None:
    ns = node_status("replica", tags={"zone": "east", "clonefrom": True})
    assert code(snap(ns, REPLICA_VIEW), f"{path}?{query}") == expected


# -- D11 - D15 -----------------------------------------------------------------------------------------------------


def test_d11_read_only_accepts_replicas_and_the_primary() -> None:
    assert code(REPLICA, "/read-only") == 200
    assert code(PRIMARY, "/read-only") == 200
    assert code(snap(node_status("replica", state="stopped"), REPLICA_VIEW), "/read-only") == 503


SYNC_CONFIG = {"ttl": 30, "synchronous_mode": True}


def sync_snapshot(listed: str | None, *, config: dict[str, Any] | None = None) -> Snapshot:
    view = cluster_view(
        "pg0",
        members={"pg0": member("pg0", role="master"), NAME: member(NAME)},
        config=config or SYNC_CONFIG,
        sync={"leader": "pg0", "sync_standby": listed},
    )
    return snap(node_status("replica"), view)


@pytest.mark.parametrize("path", ["/sync", "/synchronous"])
def test_d12_sync_only_for_a_listed_sync_standby_in_synchronous_mode(path: str) -> None:
    assert code(sync_snapshot("PG1"), path) == 200  # PostgreSQL folds names: matched case-insensitively
    assert code(sync_snapshot("pg2"), path) == 503
    assert code(sync_snapshot(NAME, config={"ttl": 30}), path) == 503  # synchronous_mode off
    assert code(PRIMARY, path) == 503


def test_d12_sync_standby_still_passes_the_replica_checks() -> None:
    view = cluster_view(
        "pg0",
        members={"pg0": member("pg0", role="master"), NAME: member(NAME)},
        config=SYNC_CONFIG,
        sync={"leader": "pg0", "sync_standby": NAME},
    )
    assert code(snap(node_status("replica", tags={"noloadbalance": True}), view), "/sync") == 503


@pytest.mark.parametrize("path", ["/read-only-sync", "/read-only-synchronous"])
def test_d13_read_only_sync_adds_the_primary(path: str) -> None:
    assert code(sync_snapshot(NAME), path) == 200
    assert code(sync_snapshot("pg2"), path) == 503
    primary = snap(node_status("master"), cluster_view(NAME, config=SYNC_CONFIG))
    assert code(primary, path) == 200


@pytest.mark.parametrize("path", ["/async", "/asynchronous"])
def test_d14_async_only_for_a_replica_not_listed_as_sync(path: str) -> None:
    assert code(sync_snapshot("pg2"), path) == 200
    assert code(sync_snapshot(NAME), path) == 503
    assert code(REPLICA, path) == 200
    assert code(PRIMARY, path) == 503


QUORUM_CONFIG = {"ttl": 30, "synchronous_mode": "quorum"}


def test_quorum_only_for_a_listed_standby_in_quorum_mode_C81() -> None:
    assert code(sync_snapshot(NAME, config=QUORUM_CONFIG), "/quorum") == 200
    assert code(sync_snapshot("pg2", config=QUORUM_CONFIG), "/quorum") == 503
    assert code(sync_snapshot(NAME), "/quorum") == 503  # listed, but synchronous_mode is `on`
    assert code(sync_snapshot(NAME, config=QUORUM_CONFIG), "/sync") == 503  # a quorum standby is not a sync one


def test_read_only_quorum_adds_the_primary_and_async_excludes_quorum_standbys_C81() -> None:
    assert code(sync_snapshot(NAME, config=QUORUM_CONFIG), "/read-only-quorum") == 200
    assert code(sync_snapshot("pg2", config=QUORUM_CONFIG), "/read-only-quorum") == 503
    assert code(sync_snapshot(NAME), "/read-only-quorum") == 503
    primary = snap(node_status("master"), cluster_view(NAME, config=QUORUM_CONFIG))
    assert code(primary, "/read-only-quorum") == 200
    assert code(sync_snapshot(NAME, config=QUORUM_CONFIG), "/async") == 503
    assert code(sync_snapshot("pg2", config=QUORUM_CONFIG), "/async") == 200


def test_d12_d14_sync_endpoints_need_a_valid_dcs_view() -> None:
    stale = snap(node_status("replica"), cluster_view("pg0"), view_at=NOW - 31)
    assert code(stale, "/async") == 503
    assert code(stale, "/read-only-sync") == 503


def test_d15_health_only_when_postgres_runs() -> None:
    assert code(PRIMARY, "/health") == 200
    assert code(REPLICA, "/health") == 200
    assert code(snap(node_status("replica", state="stopped"), REPLICA_VIEW), "/health") == 503
    assert code(snap(node_status("uninitialized", state="starting"), None), "/health") == 503


# -- D16 / D17 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role, state, late_by, expected",
    [
        ("master", "running", 29, 200),
        ("master", "running", 30, 200),
        ("master", "running", 31, 503),  # a running primary: ttl
        ("replica", "running", 59, 200),
        ("replica", "running", 61, 503),  # anything else: 2*ttl
        ("master", "stopped", 45, 200),
    ],
)
def test_d16_liveness_threshold_from_the_next_scheduled_tick(
    role: str, state: str, late_by: int, expected: int
) -> None:
    snapshot = snap(node_status(role, state, tick_next=NOW), cluster_view(NAME))
    response = core.respond("GET", "/liveness", "", snapshot, NOW + late_by)
    assert response == core.Response(expected, None, {})  # status code only, no body


def test_d16_liveness_always_200_when_paused_and_503_without_any_status() -> None:
    paused = snap(node_status("replica", pause=True, tick_next=NOW), REPLICA_VIEW)
    assert code(paused, "/liveness", now=NOW + 3600) == 200
    assert code(snap(None, REPLICA_VIEW), "/liveness") == 503


def test_d17_readiness() -> None:
    assert core.respond("GET", "/readiness", "", PRIMARY, NOW + 100) == core.Response(200, None, {})
    assert code(REPLICA, "/readiness") == 200
    assert code(REPLICA, "/readiness", now=NOW + 31) == 503  # the DCS view expired
    not_ok = apply_event(REPLICA, Topic.CLUSTER_VIEW, REPLICA_VIEW | {"ok": False}, NOW + 20)
    assert code(not_ok, "/readiness", now=NOW + 25) == 200  # the last good view is still valid...
    assert code(not_ok, "/readiness", now=NOW + 31) == 503  # ...for ttl seconds only
    assert code(snap(node_status("replica", state="starting"), REPLICA_VIEW), "/readiness") == 503
    assert code(snap(None, REPLICA_VIEW), "/readiness") == 503


def test_a_stale_brain_report_no_longer_claims_a_running_primary_W1_A8() -> None:
    """A hung or dead brain must not make a fenced primary look alive to the other members' leader race."""
    fresh = core.respond("GET", "/patroni", "", PRIMARY, NOW + 1)
    assert fresh.status == 200 and b'"location"' in (fresh.body or b"")
    stale = core.respond("GET", "/patroni", "", PRIMARY, NOW + 31)
    assert stale.status == 200
    body = json.loads(stale.body or b"{}")
    assert body["state"] == "unknown" and "xlog" not in body and body["role"] == "master"
    assert code(PRIMARY, "/health", now=NOW + 31) == 503


def test_a_primary_in_failsafe_mode_keeps_answering_the_primary_check_C84() -> None:
    status = node_status("master")
    status["patroni"]["failsafe_mode_is_active"] = True
    stale = snap(status, cluster_view("pg0"), view_at=NOW - 31)  # the last view still names another leader
    assert code(stale, "/primary") == 200
    plain = snap(node_status("master"), cluster_view("pg0"), view_at=NOW - 31)
    assert code(plain, "/primary") == 503

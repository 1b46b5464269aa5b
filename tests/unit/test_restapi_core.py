"""services.restapi.core.respond(): every health-check and status rule of features.md D.1-D.3, without sockets.

Each case names the feature it proves (D5 ... D23, W1-W3, K1).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.restapi import core
from services.restapi.snapshot import Identity, MalformedEvent, Snapshot, apply_event, initial
from shared.protocol.endpoints import Topic

NAME, SCOPE = "pg1", "demo"
NOW = 1_700_000_000.0
MB = 1024 * 1024


# -- builders of published events -------------------------------------------------------------------------------


def node_status(
    role: str = "master",
    state: str = "running",
    *,
    has_lock: bool | None = None,
    lock_ok: bool = True,
    pause: bool = False,
    tags: dict[str, Any] | None = None,
    xlog: dict[str, Any] | None = None,
    ttl: int = 30,
    tick_next: float = NOW + 5,
    name: str = NAME,
) -> dict[str, Any]:
    if has_lock is None:
        has_lock = role in ("master", "standby_leader")
    patroni: dict[str, Any] = {"state": state, "role": role, "server_version": 150004}
    if xlog is not None:
        patroni["xlog"] = xlog
    elif role == "master":
        patroni["xlog"] = {"location": 100 * MB}
    else:
        patroni["xlog"] = {
            "received_location": 100 * MB,
            "replayed_location": 100 * MB,
            "replayed_timestamp": None,
            "paused": False,
        }
    patroni["timeline"] = 1
    if pause:
        patroni["pause"] = True
    patroni["tags"] = tags or {}
    patroni["database_system_identifier"] = "7268616322854375442"
    patroni["patroni"] = {"version": "3.2.2", "scope": SCOPE, "name": name}
    return {
        "name": name,
        "scope": SCOPE,
        "ts": NOW,
        "tick": {"count": 7, "started": NOW - 5, "finished": NOW - 4.9, "next": tick_next},
        "role": role,
        "has_lock": has_lock,
        "lock_ok": lock_ok,
        "pause": pause,
        "ttl": ttl,
        "loop_wait": 10,
        "retry_timeout": 10,
        "reason": "test",
        "detail": "test",
        "patroni": patroni,
        "watchdog_failed": False,
    }


def key(value: Any, version: int = 1) -> dict[str, Any]:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return {"value": text, "version": version, "session": None, "ttl": None}


def member(
    name: str,
    *,
    role: str = "replica",
    state: str = "running",
    host: str = "10.0.0.1",
    port: int = 5432,
    xlog_location: int | None = 100 * MB,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "conn_url": f"postgres://{host}:{port}/postgres",
        "api_url": f"http://{host}:8008/patroni",
        "state": state,
        "role": role,
        "version": "3.2.2",
    }
    if xlog_location is not None:
        data["xlog_location"] = xlog_location
    data.update(extra)
    return data


def cluster_view(
    leader: str | None = NAME,
    *,
    members: dict[str, dict[str, Any]] | None = None,
    optime: int = 100 * MB,
    config: dict[str, Any] | None = None,
    sync: dict[str, Any] | None = None,
    ok: bool = True,
    last_seen: float = NOW - 1,
    **extra_keys: Any,
) -> dict[str, Any]:
    keys: dict[str, Any] = {"initialize": key("7268616322854375442")}
    keys["config"] = key(config if config is not None else {"ttl": 30, "loop_wait": 10})
    if leader:
        keys["leader"] = key(leader)
    keys["status"] = key({"optime": optime})
    if sync is not None:
        keys["sync"] = key(sync)
    for name, data in (members if members is not None else {NAME: member(NAME, role="master")}).items():
        keys[f"members/{name}"] = key(data)
    for name, value in extra_keys.items():
        keys[name] = key(value)
    return {
        "scope": SCOPE,
        "namespace": "/service",
        "backend": "raft",
        "ok": ok,
        "last_seen": last_seen,
        "revision": 42,
        "keys": keys,
    }


def snap(ns: dict[str, Any] | None = None, view: dict[str, Any] | None = None, *, view_at: float = NOW) -> Snapshot:
    snapshot = initial(Identity(NAME, SCOPE))
    if view is not None:
        snapshot = apply_event(snapshot, Topic.CLUSTER_VIEW, view, view_at)
    if ns is not None:
        snapshot = apply_event(snapshot, Topic.NODE_STATUS, ns, NOW)
    return snapshot


def code(snapshot: Snapshot, target: str, method: str = "GET", now: float = NOW) -> int:
    path, _, query = target.partition("?")
    return core.respond(method, path, query, snapshot, now).status


def body(snapshot: Snapshot, target: str, now: float = NOW) -> Any:
    path, _, query = target.partition("?")
    response = core.respond("GET", path, query, snapshot, now)
    assert response.body is not None
    return json.loads(response.body)


# Typical nodes.
PRIMARY = snap(node_status("master"), cluster_view(NAME))
REPLICA_VIEW = cluster_view("pg0", members={"pg0": member("pg0", role="master"), NAME: member(NAME)})
REPLICA = snap(node_status("replica"), REPLICA_VIEW)
STANDBY_CONFIG = {"ttl": 30, "standby_cluster": {"host": "10.1.0.1", "port": 5432}}
STANDBY_LEADER = snap(node_status("standby_leader"), cluster_view(NAME, config=STANDBY_CONFIG))


# -- D3 / D18: response forms and routing --------------------------------------------------------------------------


def test_d3_get_health_endpoints_return_the_status_json_with_the_code() -> None:
    response = core.respond("GET", "/replica", "", PRIMARY, NOW)
    assert response.status == 503
    assert response.headers == {"Content-Type": "application/json"}
    assert response.body is not None
    assert json.loads(response.body) == body(PRIMARY, "/patroni")


def test_d3_head_and_options_return_only_the_status_code() -> None:
    for method in ("HEAD", "OPTIONS"):
        assert core.respond(method, "/replica", "", REPLICA, NOW) == core.Response(200, None, {})


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/foo-replica", 200),  # substring matching, as Patroni
        ("/replica/anything", 200),
        ("/x/read-only/y", 200),
        ("/healthz", 200),
        ("/leaderboard", 503),
        ("/nothing", 503),
        ("/sync-please", 503),
    ],
)
def test_d18_unknown_get_paths_use_the_generic_substring_handler(path: str, expected: int) -> None:
    response = core.respond("GET", path, "", REPLICA, NOW)
    assert response.status == expected
    assert response.body is not None and json.loads(response.body)["role"] == "replica"


def test_d18_only_the_first_segment_selects_a_dedicated_handler() -> None:
    assert body(REPLICA, "/patroni/replica")["role"] == "replica"
    assert code(REPLICA, "/patroni/replica") == 200
    assert code(PRIMARY, "/patroni/replica") == 200  # still /patroni, not the replica check
    # HEAD and OPTIONS always go to the generic handler, so HEAD /patroni is a failed primary check.
    assert code(REPLICA, "/patroni", "HEAD") == 503


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "TRACE"])
def test_d18_unsafe_methods_get_501_until_the_control_plane_exists(method: str) -> None:
    response = core.respond(method, "/switchover", "", PRIMARY, NOW)
    assert response.status == 501
    assert response.headers["Content-Type"] == "text/html;charset=utf-8"
    assert response.body is not None
    page = response.body.decode()
    assert f"<p>Message: Unsupported method ('{method}').</p>" in page
    # patronictl falls back to the DCS when it sees this explanation (E21).
    assert "Server does not support this operation" in page


def test_malformed_query_strings_never_crash_a_handler() -> None:
    assert code(REPLICA, "/replica?lag=%ZZ&&=&tag_=x&%%%") in (200, 503)
    assert code(REPLICA, "/replica?" + "&".join(f"a{i}=1" for i in range(100))) == 400
    assert code(REPLICA, "/replica?lag=1e999") == 200  # overflow: unparsable, no limit


def test_no_node_status_yet_every_health_endpoint_is_503_and_patroni_answers_200() -> None:
    snapshot = snap(None, None)
    for path in ("/", "/primary", "/replica", "/read-only", "/health", "/leader", "/async", "/nothing"):
        assert code(snapshot, path) == 503, path
        assert code(snapshot, path, "OPTIONS") == 503, path
    assert code(snapshot, "/patroni") == 200
    assert body(snapshot, "/patroni") == {
        "state": "unknown",
        "role": "uninitialized",
        "patroni": {"version": "3.2.2", "scope": SCOPE, "name": NAME},
    }
    assert body(snapshot, "/replica") == body(snapshot, "/patroni")


# -- W1 / D19: GET /patroni ------------------------------------------------------------------------------------------


def test_w1_patroni_is_the_brains_body_with_dcs_last_seen_from_the_view() -> None:
    response = core.respond("GET", "/patroni", "", PRIMARY, NOW)
    assert response.status == 200
    assert response.headers == {"Content-Type": "application/json"}
    assert response.body is not None
    text = response.body.decode()
    got = json.loads(text)
    expected = dict(node_status("master")["patroni"])
    assert got.pop("dcs_last_seen") == int(NOW - 1)
    assert got == expected
    # Placed as Patroni places it: after the PostgreSQL facts, before tags (W1).
    assert list(json.loads(text)).index("dcs_last_seen") == list(json.loads(text)).index("tags") - 1
    assert text.startswith('{"state": "running", ')  # Python's json.dumps separators, as Patroni writes


def test_w1_patroni_is_200_even_when_postgres_is_down() -> None:
    snapshot = snap(node_status("replica", state="stopped"), REPLICA_VIEW)
    assert code(snapshot, "/patroni") == 200
    assert body(snapshot, "/patroni")["state"] == "stopped"


# -- W3 / D22 / D23 -------------------------------------------------------------------------------------------------

HISTORY = [
    [1, 25623960, "no recovery target specified", "2019-09-23T16:57:57+02:00"],
    [2, 25624344, "no recovery target specified", "2019-09-24T09:22:33+02:00", "pg2"],
]


def test_w3_history_is_the_history_key_as_a_json_array() -> None:
    snapshot = snap(node_status(), cluster_view(NAME, history=HISTORY))
    assert body(snapshot, "/history") == HISTORY
    assert body(PRIMARY, "/history") == []


def test_d23_config_is_the_dynamic_config_or_502() -> None:
    assert body(PRIMARY, "/config") == {"ttl": 30, "loop_wait": 10}
    view = cluster_view(NAME)
    del view["keys"]["config"]
    response = core.respond("GET", "/config", "", snap(node_status(), view), NOW)
    assert response.status == 502
    assert response.body is not None and b"Error code: 502" in response.body


def test_cluster_history_config_are_503_before_any_cluster_view() -> None:
    snapshot = snap(node_status(), None)
    for path in ("/cluster", "/history"):
        assert code(snapshot, path) == 503
    assert code(snapshot, "/config") == 502


def test_get_failsafe_is_the_failsafe_key_or_502() -> None:
    members = {"pg1": "http://10.0.0.1:8008/patroni"}
    assert body(snap(node_status(), cluster_view(NAME, failsafe=members)), "/failsafe") == members
    assert code(PRIMARY, "/failsafe") == 502


# -- events that do not have the published shape are refused -------------------------------------------------------


@pytest.mark.parametrize(
    "topic, event",
    [
        (Topic.NODE_STATUS, ["not", "a", "map"]),
        (Topic.NODE_STATUS, node_status(name="someone-else")),
        (Topic.NODE_STATUS, {**node_status(), "patroni": "text"}),
        (Topic.NODE_STATUS, {**node_status(), "tick": 5}),
        (Topic.CLUSTER_VIEW, {**cluster_view(), "keys": []}),
        (Topic.CLUSTER_VIEW, {**cluster_view(), "ok": "yes"}),
        (Topic.CLUSTER_VIEW, {**cluster_view(), "scope": "other"}),
        ("postmaster.pg_state", {}),
    ],
)
def test_malformed_events_are_refused_and_the_snapshot_is_kept(topic: str, event: Any) -> None:
    with pytest.raises(MalformedEvent):
        apply_event(PRIMARY, topic, event, NOW)

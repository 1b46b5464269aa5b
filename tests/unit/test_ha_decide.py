"""decide() table tests: one test per HA rule, named after the behaviour, citing features.md ids."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from services.ha_loop import actions as a
from services.ha_loop.core import Decision, Memory, Outcome, Reason, Snapshot, decide, record
from services.ha_loop.decision import slots_fingerprint
from services.ha_loop.status import NodeFacts
from services.ha_loop.views import Operation, OpState, PeerStatus, PgView
from shared.config.dynamic import effective
from shared.model import Cluster, KeyValue
from shared.model.member import LocalTags

ME = "n1"


def member_value(
    name: str, *, lsn: int | None = 100, state: str = "running", role: str = "replica", **extra: Any
) -> str:
    data: dict[str, Any] = {
        "conn_url": f"postgres://127.0.0.1:{5000 + int(name[1:])}/postgres",
        "api_url": f"http://127.0.0.1:{8000 + int(name[1:])}/patroni",
        "state": state,
        "role": role,
        "version": "3.2.2",
    }
    if lsn is not None:
        data["xlog_location"] = lsn
    data.update(extra)
    return json.dumps(data)


def make_cluster(
    *,
    leader: str | None = None,
    initialize: str | None = "7000",
    members: dict[str, str] | None = None,
    status_lsn: int | None = None,
    history: str | None = None,
    config: dict[str, Any] | None = None,
) -> Cluster:
    keys: dict[str, KeyValue] = {}
    if initialize is not None:
        keys["initialize"] = KeyValue(initialize, 1)
    if leader is not None:
        keys["leader"] = KeyValue(leader, 5)
    for name, value in (
        members if members is not None else {"n1": member_value("n1"), "n2": member_value("n2")}
    ).items():
        keys[f"members/{name}"] = KeyValue(value, 3)
    if status_lsn is not None:
        keys["status"] = KeyValue(json.dumps({"optime": status_lsn}), 6)
    if history is not None:
        keys["history"] = KeyValue(history, 7)
    keys["config"] = KeyValue(json.dumps(config if config is not None else {"ttl": 30}), 2)
    return Cluster.from_keys(keys)


def make_pg(**kw: Any) -> PgView:
    defaults: dict[str, Any] = dict(
        data_dir="initialized",
        sysid="7000",
        running=True,
        accepting=True,
        state="running",
        role="replica",
        timeline=1,
        wal_position=100,
        following=None,
    )
    defaults.update(kw)
    return PgView(**defaults)


def make_facts(**kw: Any) -> NodeFacts:
    base: dict[str, Any] = dict(
        name=ME,
        scope="demo",
        conn_url="postgres://127.0.0.1:5001/postgres",
        api_url="http://127.0.0.1:8001/patroni",
        bootstrap_dcs={"ttl": 30},
        use_slots=False,  # the slot rules have their own tests (test_ha_durability.py)
    )
    base.update(kw)
    return NodeFacts(**base)


def snap(
    cluster: Cluster | None,
    pg: PgView | None,
    *,
    peers: dict[str, PeerStatus] | None = None,
    facts: NodeFacts | None = None,
    dcs: dict[str, Any] | None = None,
) -> Snapshot:
    return Snapshot(
        now=1000.0,
        facts=facts or make_facts(),
        dynamic=effective(dcs if dcs is not None else {"ttl": 30}, {}),
        cluster=cluster,
        pg=pg,
        peers=peers,
    )


CONFIGURED = Memory(configured=json.dumps({"ttl": 30}, sort_keys=True), slots_sent=slots_fingerprint({}, ()))


def kinds(decision: Decision) -> list[str]:
    return [x.kind for x in decision.actions]


def peer(name: str, wal: int = 100, **kw: Any) -> PeerStatus:
    return PeerStatus(name=name, reachable=True, wal_position=wal, **kw)


# --- missing inputs ---------------------------------------------------------------------------------


def test_without_postgres_state_the_brain_does_nothing() -> None:
    d = decide(snap(make_cluster(), None), CONFIGURED)
    assert d.actions == () and d.reason == Reason.NO_PG_STATE


def test_primary_that_cannot_read_the_dcs_demotes_offline_without_touching_the_lock_A21() -> None:
    d = decide(snap(None, make_pg(role="master")), replace(CONFIGURED, lock_ok=True))
    assert d.actions == (a.PgDemote("offline", None), a.WatchdogDisarm())  # C89: disarmed after a demotion
    assert d.reason == Reason.DCS_LOST_DEMOTE and not d.memory.lock_ok
    assert d.detail == "demoting self because DCS is not accessible and I was a leader"


def test_replica_that_cannot_read_the_dcs_keeps_running_A21() -> None:
    d = decide(snap(None, make_pg()), CONFIGURED)
    assert d.actions == () and d.detail == "DCS is not accessible"


# --- bootstrap (C1, C3, C8, C13) ----------------------------------------------------------------------


def test_empty_node_races_for_initialize_then_bootstraps_C1() -> None:
    d = decide(snap(make_cluster(initialize=None, members={}), make_pg(data_dir="empty", sysid=None)), Memory())
    assert kinds(d) == ["Initialize", "PgBootstrap", "TouchMember"]
    assert d.actions[0] == a.Initialize(create_new=True, sysid="")
    assert d.detail == "trying to bootstrap a new cluster"


def test_nofailover_node_never_bootstraps_C1() -> None:
    facts = make_facts(tags=LocalTags({"nofailover": True}))
    d = decide(snap(make_cluster(initialize=None), make_pg(data_dir="empty"), facts=facts), Memory())
    assert d.reason == Reason.BOOTSTRAP_WAIT and kinds(d) == ["TouchMember"]


def test_node_without_bootstrap_section_waits_for_a_leader_C1() -> None:
    facts = make_facts(can_bootstrap=False)
    d = decide(snap(make_cluster(initialize=None), make_pg(data_dir="missing"), facts=facts), Memory())
    assert d.reason == Reason.BOOTSTRAP_WAIT


def test_empty_node_waits_while_another_node_bootstraps_B5() -> None:
    d = decide(snap(make_cluster(initialize=""), make_pg(data_dir="empty")), Memory())
    assert d.reason == Reason.BOOTSTRAP_WAIT and d.detail == "waiting for leader to bootstrap"


def test_empty_node_clones_from_the_leader_once_initialized_C13() -> None:
    cluster = make_cluster(leader="n2", members={"n2": member_value("n2", role="master")})
    d = decide(snap(cluster, make_pg(data_dir="empty")), Memory())
    assert kinds(d) == ["PgClone", "TouchMember"]
    clone = d.actions[0]
    assert (
        isinstance(clone, a.PgClone) and clone.source["name"] == "n2" and clone.leader and clone.leader["name"] == "n2"
    )
    assert d.detail == "trying to bootstrap from leader 'n2'"


def test_empty_node_prefers_a_running_clonefrom_member_C13() -> None:
    members = {
        "n2": member_value("n2", role="master"),
        "n3": member_value("n3", tags={"clonefrom": True}),
    }
    d = decide(snap(make_cluster(leader="n2", members=members), make_pg(data_dir="empty")), Memory())
    clone = d.actions[0]
    assert isinstance(clone, a.PgClone) and clone.source["name"] == "n3" and clone.leader["name"] == "n2"  # type: ignore[index]
    assert d.detail == "trying to bootstrap from replica 'n3'"


def bootstrap_op(state: str, **result: Any) -> dict[str, Any]:
    return {"id": "op-1", "name": "bootstrap", "state": state, "error": None, "result": result}


def test_finished_bootstrap_writes_sysid_and_config_then_takes_the_lock_C3() -> None:
    pg = PgView.from_wire(
        {
            "data_dir": "initialized",
            "sysid": "7123",
            "running": True,
            "accepting": True,
            "state": "running",
            "role": "master",
            "operation": bootstrap_op("succeeded", sysid="7123"),
        }
    )
    cluster = Cluster.from_keys({"initialize": KeyValue("", 1)})
    d = decide(
        snap(cluster, pg, facts=make_facts(bootstrap_dcs={"ttl": 30, "loop_wait": 5})), Memory(bootstrapping=True)
    )
    assert d.actions[:3] == (a.Initialize(False, "7123"), a.WriteConfig({"ttl": 30, "loop_wait": 5}), a.TakeLeader())
    assert d.memory.handled_op == "op-1" and not d.memory.bootstrapping


def test_failed_bootstrap_cancels_initialization_so_another_node_can_try_C8() -> None:
    pg = PgView.from_wire({"data_dir": "empty", "state": "initdb failed", "operation": bootstrap_op("failed")})
    d = decide(snap(Cluster.from_keys({"initialize": KeyValue("", 1)}), pg), Memory(bootstrapping=True))
    assert d.actions[0] == a.CancelInitialization() and d.reason == Reason.BOOTSTRAP_FAILED


def test_a_running_bootstrap_is_left_alone_A39() -> None:
    pg = PgView.from_wire(
        {"data_dir": "empty", "state": "initializing new cluster", "operation": bootstrap_op("running")}
    )
    d = decide(snap(Cluster.from_keys({"initialize": KeyValue("", 1)}), pg), Memory(bootstrapping=True))
    assert kinds(d) == ["TouchMember"] and d.detail == "bootstrap in progress"


# --- the leader (A4, A35, A39) ------------------------------------------------------------------------


def test_leader_refreshes_its_lock_every_tick_A4() -> None:
    armed = replace(CONFIGURED, watchdog_armed=True)
    d = decide(snap(make_cluster(leader=ME), make_pg(role="master", wal_position=500)), armed)
    assert kinds(d) == ["RefreshLeader", "WatchdogKeepalive", "TouchMember"]
    unarmed = decide(snap(make_cluster(leader=ME), make_pg(role="master", wal_position=500)), CONFIGURED)
    assert kinds(unarmed) == ["RefreshLeader", "WatchdogArm", "TouchMember"]  # e.g. after a brain restart
    assert d.actions[0] == a.RefreshLeader(500)
    assert d.detail == "no action. I am (n1), the leader with the lock"


def test_lock_holder_running_as_replica_promotes_A18() -> None:
    d = decide(snap(make_cluster(leader=ME), make_pg(role="replica")), CONFIGURED)
    assert kinds(d) == ["RefreshLeader", "WatchdogArm", "PgPromote", "TouchMember"]


def test_crashed_leader_restarts_as_primary_and_keeps_its_lock_A35() -> None:
    pg = make_pg(role="master", running=False, accepting=False, state="crashed")
    d = decide(snap(make_cluster(leader=ME), pg), CONFIGURED)
    assert kinds(d) == ["RefreshLeader", "PgStart", "TouchMember"]
    assert d.actions[1] == a.PgStart("primary", None, 300.0)  # A34: bounded by primary_start_timeout


def test_leader_keeps_refreshing_its_lock_during_a_long_operation_A39() -> None:
    pg = PgView.from_wire(
        {
            "data_dir": "initialized",
            "running": True,
            "role": "replica",
            "state": "running",
            "operation": {"id": "p", "name": "promote", "state": "running"},
        }
    )
    d = decide(snap(make_cluster(leader=ME), pg), CONFIGURED)
    assert kinds(d) == ["RefreshLeader", "TouchMember"] and d.detail == "updated leader lock during promote"


def test_failed_refresh_makes_the_primary_demote_at_once_A20() -> None:
    cluster = make_cluster(leader=ME)
    first = decide(snap(cluster, make_pg(role="master")), replace(CONFIGURED, lock_ok=True))
    memory = record(first.memory, first.actions[0], Outcome(ok=True, applied=False))
    assert not memory.lock_ok and memory.lock_failure == "lost"
    second = decide(snap(make_cluster(leader="n2"), make_pg(role="master")), memory)
    assert second.reason == Reason.LOCK_LOST_DEMOTE
    assert isinstance(second.actions[0], a.PgDemote) and second.actions[0].mode == "immediate-nolock"
    assert second.detail == "demoted self because failed to update leader lock in DCS"


def test_refresh_that_times_out_demotes_offline_A21() -> None:
    memory = record(CONFIGURED, a.RefreshLeader(1), Outcome(ok=False, error_code="unavailable"))
    d = decide(snap(make_cluster(leader=ME), make_pg(role="master")), memory)
    assert d.actions[0] == a.PgDemote("offline", None)


# --- followers (A17, A20, A23, A24) ------------------------------------------------------------------


def test_replica_repoints_to_the_current_leader_A24() -> None:
    cluster = make_cluster(leader="n2", members={"n1": member_value("n1"), "n2": member_value("n2", role="master")})
    d = decide(snap(cluster, make_pg(following="n3")), CONFIGURED)
    assert kinds(d) == ["PgFollow", "TouchMember"]
    follow = d.actions[0]
    assert isinstance(follow, a.PgFollow) and follow.leader and follow.leader["name"] == "n2"


def test_replica_already_following_the_leader_takes_no_action() -> None:
    cluster = make_cluster(leader="n2", members={"n1": member_value("n1"), "n2": member_value("n2", role="master")})
    d = decide(snap(cluster, make_pg(following="n2")), CONFIGURED)
    assert kinds(d) == ["TouchMember"]
    assert d.detail == "no action. I am (n1), a secondary, and following a leader (n2)"


@pytest.mark.parametrize(
    ("name", "rewind", "finished", "follows"),
    [
        ("follow", "unknown", 990.0, True),  # loop_wait (10 s) ago: check again
        ("start", "unknown", 980.0, True),
        ("follow", "unknown", 995.0, False),  # not before loop_wait has passed
        ("follow", "not needed", 980.0, False),
        ("follow", "done", 980.0, False),
        ("restart", "unknown", 980.0, False),
    ],
)
def test_a_replica_whose_divergence_check_could_not_run_follows_again_C22(
    name: str, rewind: str, finished: float, follows: bool
) -> None:
    cluster = make_cluster(leader="n2", members={"n1": member_value("n1"), "n2": member_value("n2", role="master")})
    op = Operation("op-7", name, OpState.SUCCEEDED, None, {"rewind": rewind}, finished)
    d = decide(snap(cluster, make_pg(following="n2", operation=op)), CONFIGURED)
    assert ("PgFollow" in kinds(d)) is follows


def test_a_standby_leader_is_not_checked_again_C22() -> None:
    members = {"n1": member_value("n1"), "n2": member_value("n2", role="standby_leader")}
    op = Operation("op-7", "follow", OpState.SUCCEEDED, None, {"rewind": "unknown"}, 900.0)
    d = decide(snap(make_cluster(leader="n2", members=members), make_pg(following="n2", operation=op)), CONFIGURED)
    assert "PgFollow" not in kinds(d)


def test_an_operation_carries_when_it_finished() -> None:
    raw = {"id": "x", "name": "follow", "state": "succeeded", "result": {"rewind": "unknown"}, "finished": 12.5}
    assert Operation.from_wire(raw) == Operation("x", "follow", OpState.SUCCEEDED, None, {"rewind": "unknown"}, 12.5)
    assert Operation.from_wire({**raw, "finished": None}).finished is None  # type: ignore[union-attr]


def test_primary_that_sees_another_leader_demotes_A20() -> None:
    cluster = make_cluster(leader="n2", members={"n1": member_value("n1"), "n2": member_value("n2", role="master")})
    d = decide(snap(cluster, make_pg(role="master")), CONFIGURED)
    demote = next(x for x in d.actions if isinstance(x, a.PgDemote))
    assert demote.mode == "immediate-nolock" and demote.leader and demote.leader["name"] == "n2"


def test_stopped_replica_starts_following_the_leader_A23() -> None:
    cluster = make_cluster(leader="n2", members={"n1": member_value("n1"), "n2": member_value("n2", role="master")})
    d = decide(snap(cluster, make_pg(running=False, accepting=False, state="stopped")), CONFIGURED)
    start = d.actions[0]
    assert isinstance(start, a.PgStart) and start.role == "replica" and start.leader and start.leader["name"] == "n2"


def test_loser_of_the_race_follows_the_winner_A17() -> None:
    memory = record(CONFIGURED, a.TakeLeader(), Outcome(ok=True, applied=False))
    cluster = make_cluster(leader="n2", members={"n1": member_value("n1"), "n2": member_value("n2", role="master")})
    d = decide(snap(cluster, make_pg(following=None)), memory)
    assert d.detail == "following new leader after trying and failing to obtain lock"
    assert not d.memory.lost_race


# --- the leader race (A5, A8-A11, A16) ---------------------------------------------------------------


def test_unlocked_replica_first_asks_the_other_members_A8() -> None:
    d = decide(snap(make_cluster(), make_pg()), CONFIGURED)
    assert d.actions == (a.ProbePeers(("n2",)),)


def test_healthiest_replica_takes_the_lock_and_promotes_A5() -> None:
    d = decide(snap(make_cluster(), make_pg(wal_position=200), peers={"n2": peer("n2", 150)}), CONFIGURED)
    assert kinds(d) == ["TakeLeader", "WatchdogArm", "PgPromote", "TouchMember"]
    assert d.detail == "promoted self to leader by acquiring session lock"


def test_replica_behind_a_peer_stays_out_of_the_race_A8() -> None:
    d = decide(snap(make_cluster(), make_pg(wal_position=100), peers={"n2": peer("n2", 150)}), CONFIGURED)
    assert "TakeLeader" not in kinds(d) and d.reason == Reason.NOT_HEALTHIEST
    assert "Wal position of n2 is ahead of my wal position" in d.detail


def test_a_primary_still_alive_stops_the_race_A8() -> None:
    d = decide(
        snap(make_cluster(), make_pg(wal_position=900), peers={"n2": peer("n2", 100, is_primary=True)}), CONFIGURED
    )
    assert "TakeLeader" not in kinds(d) and "Primary (n2) is still alive" in d.detail


def test_equal_wal_and_higher_priority_peer_wins_A11() -> None:
    d = decide(
        snap(make_cluster(), make_pg(wal_position=100), peers={"n2": peer("n2", 100, failover_priority=5)}), CONFIGURED
    )
    assert "TakeLeader" not in kinds(d)


def test_equal_wal_and_equal_priority_both_race_A5() -> None:
    d = decide(snap(make_cluster(), make_pg(wal_position=100), peers={"n2": peer("n2", 100)}), CONFIGURED)
    assert kinds(d)[0] == "TakeLeader"


@pytest.mark.parametrize(
    "other",
    [PeerStatus.unreachable("n2"), peer("n2", 900, nofailover=True), peer("n2", 900, watchdog_failed=True)],
    ids=["unreachable", "nofailover", "watchdog-failed"],
)
def test_unreachable_nofailover_and_watchdog_failed_members_are_skipped_A8(other: PeerStatus) -> None:
    d = decide(snap(make_cluster(), make_pg(wal_position=100), peers={"n2": other}), CONFIGURED)
    assert kinds(d)[0] == "TakeLeader"


def test_replica_lagging_more_than_maximum_lag_on_failover_stays_out_A9() -> None:
    cluster = make_cluster(status_lsn=10_000_000)
    d = decide(snap(cluster, make_pg(wal_position=100), peers={}, dcs={"maximum_lag_on_failover": 1048576}), CONFIGURED)
    assert "TakeLeader" not in kinds(d) and "exceeds maximum replication lag" in d.detail


def test_nofailover_replica_never_takes_the_lock_A10() -> None:
    facts = make_facts(tags=LocalTags({"nofailover": True}))
    d = decide(snap(make_cluster(), make_pg(wal_position=999), peers={}, facts=facts), CONFIGURED)
    assert "TakeLeader" not in kinds(d) and d.reason == Reason.NOT_ALLOWED


def test_failover_priority_zero_behaves_like_nofailover_A11() -> None:
    facts = make_facts(tags=LocalTags({"failover_priority": 0}))
    d = decide(snap(make_cluster(), make_pg(), peers={}, facts=facts), CONFIGURED)
    assert "TakeLeader" not in kinds(d)


def test_running_primary_without_lock_takes_it_back_A16() -> None:
    d = decide(snap(make_cluster(history="[]"), make_pg(role="master", timeline=1), peers={}), CONFIGURED)
    assert kinds(d) == ["TakeLeader", "WatchdogArm", "TouchMember"]
    assert d.detail == "acquired session lock as a leader"


def test_running_primary_takes_the_lock_without_asking_the_others_A8_A16() -> None:
    # [src: patroni/ha.py:Ha.is_healthiest_node] the others' positions are read later than the primary's own one,
    # so a replica may show WAL the primary has already written: the primary neither probes nor compares
    unprobed = decide(snap(make_cluster(), make_pg(role="master", wal_position=100), peers=None), CONFIGURED)
    assert kinds(unprobed)[0] == "TakeLeader" and "ProbePeers" not in kinds(unprobed)
    ahead = decide(
        snap(make_cluster(), make_pg(role="master", wal_position=100), peers={"n2": peer("n2", 200)}), CONFIGURED
    )
    assert kinds(ahead)[0] == "TakeLeader" and "PgDemote" not in kinds(ahead)


def test_stale_primary_on_an_older_timeline_does_not_take_the_lock_A16() -> None:
    history = json.dumps([[1, 100, "no recovery target specified", "2024-01-01T00:00:00+00:00"]])
    d = decide(snap(make_cluster(history=history), make_pg(role="master", timeline=1), peers={}), CONFIGURED)
    assert "TakeLeader" not in kinds(d)
    demote = next(x for x in d.actions if isinstance(x, a.PgDemote))
    assert demote.mode == "immediate-nolock"


def test_primary_restores_a_wiped_initialize_key_A51() -> None:
    cluster = make_cluster(initialize=None, leader=None)
    d = decide(snap(cluster, make_pg(role="master", sysid="7000"), peers={}), CONFIGURED)
    assert d.actions[:2] == (a.TakeLeader(), a.Initialize(create_new=True, sysid="7000"))


def test_after_a_wipe_a_replica_gives_the_running_primary_ttl_to_take_the_lock_A51() -> None:
    # the wipe removed the member keys too: the race's probes could not see the primary
    cluster = make_cluster(initialize=None, leader=None)
    d = decide(snap(cluster, make_pg(sysid="7000"), peers={}), CONFIGURED)
    assert "TakeLeader" not in kinds(d) and "PgPromote" not in kinds(d) and kinds(d)[-1] == "TouchMember"
    assert d.memory.wiped_since == 1000.0 and d.wake_in == 30
    later = decide(replace(snap(cluster, make_pg(sysid="7000"), peers={}), now=1029.0), d.memory)
    assert "PgPromote" not in kinds(later) and later.wake_in == pytest.approx(1.0)
    # no primary came back within ttl: the replica races as usual
    after = decide(replace(snap(cluster, make_pg(sysid="7000"), peers={}), now=1030.5), d.memory)
    assert kinds(after)[:2] == ["TakeLeader", "Initialize"] and "PgPromote" in kinds(after)
    # once /initialize is back, the wait is forgotten
    back = decide(snap(make_cluster(leader="n2"), make_pg(sysid="7000")), d.memory)
    assert back.memory.wiped_since is None


# --- identity and configuration (A47, F1, B4) ---------------------------------------------------------


def test_data_directory_of_another_cluster_is_not_touched_A47() -> None:
    d = decide(snap(make_cluster(initialize="7000", leader="n2"), make_pg(sysid="8000")), CONFIGURED)
    assert d.reason == Reason.SYSID_MISMATCH and kinds(d) == ["TouchMember"]


def test_changed_dynamic_configuration_is_sent_to_postgres_F1() -> None:
    cluster = make_cluster(leader=ME, config={"ttl": 30, "postgresql": {"parameters": {"work_mem": "8MB"}}})
    d = decide(snap(cluster, make_pg(role="master")), CONFIGURED)
    configure = next(x for x in d.actions if isinstance(x, a.PgConfigure))
    assert configure.dynamic["postgresql"]["parameters"]["work_mem"] == "8MB"
    memory = record(d.memory, configure, Outcome(ok=True))
    again = decide(snap(cluster, make_pg(role="master")), memory)
    assert not any(isinstance(x, a.PgConfigure) for x in again.actions)


def test_member_key_carries_the_W6_fields_and_is_written_last_B4() -> None:
    d = decide(snap(make_cluster(leader=ME), make_pg(role="master", wal_position=777, timeline=3)), CONFIGURED)
    touch = d.actions[-1]
    assert isinstance(touch, a.TouchMember)
    assert touch.data["role"] == "master" and touch.data["xlog_location"] == 777 and touch.data["timeline"] == 3
    assert touch.data["conn_url"] == "postgres://127.0.0.1:5001/postgres" and touch.data["version"] == "3.2.2"


# --- /history and /config kept by the leader (B7, A51) ----------------------------------------------


def history_file(timeline: int, *lines: list[Any]) -> dict[str, Any]:
    return {"timeline": timeline, "lines": [list(x) for x in lines], "mtime": 1700000000.0}


def test_new_primary_appends_its_promotion_to_history_B7() -> None:
    pg = make_pg(
        role="master", timeline=2, timeline_history=history_file(2, [1, 50331744, "no recovery target specified"])
    )
    d = decide(snap(make_cluster(leader=ME, history="[]"), pg), CONFIGURED)
    write = next(x for x in d.actions if isinstance(x, a.WriteHistory))
    [line] = json.loads(write.value)
    assert line[:3] == [1, 50331744, "no recovery target specified"] and line[4] == ME
    assert line[3].startswith("2023-11-14T") and write.version == 7


def test_history_keeps_earlier_promotion_times_and_leaders_B7() -> None:
    known = json.dumps([[1, 100, "no recovery target specified", "2024-01-01T00:00:00+00:00", "n2"]])
    pg = make_pg(
        role="master",
        timeline=3,
        timeline_history=history_file(3, [1, 100, "no recovery target specified"], [2, 200, "r"]),
    )
    d = decide(snap(make_cluster(leader=ME, history=known), pg), CONFIGURED)
    write = next(x for x in d.actions if isinstance(x, a.WriteHistory))
    first, second = json.loads(write.value)
    assert first == [1, 100, "no recovery target specified", "2024-01-01T00:00:00+00:00", "n2"]
    assert second[:3] == [2, 200, "r"] and second[4] == ME


def test_current_history_is_not_written_again_B7() -> None:
    known = json.dumps([[1, 100, "r", "2024-01-01T00:00:00+00:00", "n1"]])
    pg = make_pg(role="master", timeline=2, timeline_history=history_file(2, [1, 100, "r"]))
    d = decide(snap(make_cluster(leader=ME, history=known), pg), CONFIGURED)
    assert not any(isinstance(x, a.WriteHistory) for x in d.actions)


def test_primary_on_timeline_one_clears_a_stale_history_B7() -> None:
    known = json.dumps([[1, 100, "r", "2024-01-01T00:00:00+00:00", "n1"]])
    d = decide(snap(make_cluster(leader=ME, history=known), make_pg(role="master", timeline=1)), CONFIGURED)
    assert a.WriteHistory("[]", 7) in d.actions


def test_leader_restores_a_missing_config_key_A51() -> None:
    keys = {"initialize": KeyValue("7000", 1), "leader": KeyValue(ME, 2)}
    d = decide(snap(Cluster.from_keys(keys), make_pg(role="master")), CONFIGURED)
    assert a.WriteConfig({"ttl": 30}) in d.actions
    # the shell keeps the last /config it read: that value comes back, not bootstrap.dcs
    edited = {"ttl": 40, "loop_wait": 5, "postgresql": {"parameters": {"work_mem": "8MB"}}}
    d = decide(snap(Cluster.from_keys(keys), make_pg(role="master"), dcs=edited), CONFIGURED)
    assert a.WriteConfig(edited) in d.actions


def test_a_vanished_config_key_does_not_send_bootstrap_values_to_postgresql_A51() -> None:
    edited = {"ttl": 30, "postgresql": {"parameters": {"max_connections": 200}}}
    configured = replace(CONFIGURED, configured=json.dumps(edited, sort_keys=True))
    keys = {"initialize": KeyValue("7000", 1), "leader": KeyValue("n2", 2)}
    d = decide(snap(Cluster.from_keys(keys), make_pg(), dcs=edited), configured)
    assert not any(isinstance(x, a.PgConfigure) for x in d.actions)


def test_a_primary_that_takes_the_lock_after_a_wipe_restores_initialize_and_config_together_A51() -> None:
    d = decide(snap(Cluster.from_keys({}), make_pg(role="master", sysid="7000"), peers={}, dcs={"ttl": 25}), CONFIGURED)
    assert kinds(d)[:3] == ["TakeLeader", "Initialize", "WriteConfig"] and a.WriteConfig({"ttl": 25}) in d.actions

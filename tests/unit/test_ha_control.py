"""decide() tables for the control plane: switchover and failover (A26-A33), pause (A41-A43), restart
(A52, D29), reload (D31) and reinitialize (C20, D32)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from services.ha_loop import actions as a
from services.ha_loop import controls
from services.ha_loop.core import Memory, Outcome, Reason, RestartRequest, decide, record
from services.ha_loop.views import Operation, OpState, PeerStatus, PgView
from shared.model import Cluster, KeyValue
from shared.model.member import LocalTags
from tests.unit.test_ha_decide import CONFIGURED, ME, kinds, make_cluster, make_facts, make_pg, member_value, snap

NOW = 1000.0


def with_failover(cluster: Cluster, **value: Any) -> Cluster:
    keys = dict(cluster.keys)
    keys["failover"] = KeyValue(json.dumps(value), 11)
    return Cluster.from_keys(keys)


def members(**roles: str) -> dict[str, str]:
    return {name: member_value(name, role=role) for name, role in roles.items()}


def peer(name: str, wal: int = 100, **kw: Any) -> PeerStatus:
    return PeerStatus(name=name, reachable=True, wal_position=wal, **kw)


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


LEADER = make_cluster(leader=ME, members=members(n1="master", n2="replica", n3="replica"))
PRIMARY = make_pg(role="master", wal_position=500)


# --- switchover from the leader (A26, A31, A33) ------------------------------------------------------


def test_leader_first_checks_the_switchover_candidate_A26() -> None:
    d = decide(snap(with_failover(LEADER, leader=ME, member="n2"), PRIMARY), CONFIGURED)
    assert d.actions == (a.ProbePeers(("n2",)),)


def test_leader_demotes_gracefully_for_a_healthy_candidate_and_keeps_its_lock_meanwhile_A26() -> None:
    cluster = with_failover(LEADER, leader=ME, member="n2")
    d = decide(snap(cluster, PRIMARY, peers={"n2": peer("n2", 500)}), replace(CONFIGURED, watchdog_armed=True))
    assert kinds(d) == ["RefreshLeader", "WatchdogKeepalive", "WatchdogDisarm", "PgStop", "TouchMember"]
    assert a.PgStop("fast", checkpoint=True) in d.actions and d.memory.stepping_down
    assert d.detail == "switchover: demoting myself"


def test_once_postgres_is_down_the_lock_is_handed_over_with_the_checkpoint_A26() -> None:
    stopped = make_pg(
        role="master",
        running=False,
        accepting=False,
        state="stopped",
        raw={"controldata": {"state": "shut down", "checkpoint_lsn": 777}},
    )
    d = decide(snap(with_failover(LEADER, leader=ME, member="n2"), stopped), replace(CONFIGURED, stepping_down=True))
    assert d.actions[0] == a.ReleaseLeader(777) and d.reason == Reason.SWITCHOVER_RELEASE
    assert not any(isinstance(x, a.PgStart) for x in d.actions)  # not restarted as primary
    assert not record(d.memory, d.actions[0], Outcome(ok=True, applied=True)).stepping_down


@pytest.mark.parametrize(
    "value, why",
    [
        ({"leader": "n9", "member": "n2"}, "switchover: leader name does not match: n9 != n1"),
        ({"leader": ME, "member": ME}, "switchover: I am already the leader, no need to switchover"),
        ({"member": ME}, "manual failover: I am already the leader, no need to failover"),
    ],
)
def test_a_request_the_leader_cannot_honour_is_cleaned_up_A33(value: dict[str, str], why: str) -> None:
    d = decide(snap(with_failover(LEADER, **value), PRIMARY, peers={}), CONFIGURED)
    assert a.ClearFailover(11) in d.actions and d.reason == Reason.FAILOVER_KEY_CLEANUP
    assert d.detail.startswith(why)


def test_no_healthy_candidate_cancels_the_switchover_A26_A29() -> None:
    lagging = peer("n2", 10, failover_priority=1)
    cluster = with_failover(
        make_cluster(leader=ME, members=members(n1="master", n2="replica"), status_lsn=5_000_000),
        leader=ME,
        member="n2",
    )
    d = decide(snap(cluster, PRIMARY, peers={"n2": lagging}), CONFIGURED)
    assert a.ClearFailover(11) in d.actions and "no healthy members found" in d.detail
    assert not any(isinstance(x, a.PgStop) for x in d.actions)


def test_a_nofailover_candidate_is_not_healthy_A29() -> None:
    d = decide(
        snap(with_failover(LEADER, leader=ME, member="n2"), PRIMARY, peers={"n2": peer("n2", nofailover=True)}),
        CONFIGURED,
    )
    assert a.ClearFailover(11) in d.actions


def test_scheduled_switchover_waits_for_its_time_A31() -> None:
    cluster = with_failover(LEADER, leader=ME, member="n2", scheduled_at="2030-01-01T00:00:00+00:00")
    far = decide(replace(snap(cluster, PRIMARY), now=at("2030-01-01T00:00:00+00:00") - 3600), CONFIGURED)
    assert far.reason == Reason.SWITCHOVER_AWAIT and far.wake_in is None
    assert not any(isinstance(x, a.PgStop | a.ProbePeers) for x in far.actions)
    near = decide(replace(snap(cluster, PRIMARY), now=at("2030-01-01T00:00:00+00:00") - 4), CONFIGURED)
    assert near.reason == Reason.SWITCHOVER_AWAIT and near.wake_in == pytest.approx(4)
    due = decide(replace(snap(cluster, PRIMARY), now=at("2030-01-01T00:00:00+00:00") + 1), CONFIGURED)
    assert due.actions == (a.ProbePeers(("n2",)),)


def test_a_stale_scheduled_switchover_is_removed_A31() -> None:
    cluster = with_failover(LEADER, leader=ME, member="n2", scheduled_at="2030-01-01T00:00:00+00:00")
    d = decide(replace(snap(cluster, PRIMARY), now=at("2030-01-01T00:00:00+00:00") + 100), CONFIGURED)
    assert a.ClearFailover(11) in d.actions and "Found a stale switchover value" in d.detail


# --- failover without a leader (A27, A30) ------------------------------------------------------------


UNLOCKED = make_cluster(leader=None, members=members(n1="replica", n2="master", n3="replica"))


def test_the_named_candidate_takes_the_lock_and_cleans_up_the_request_A30_A33() -> None:
    d = decide(snap(with_failover(UNLOCKED, leader="n2", member=ME), make_pg(wal_position=10)), CONFIGURED)
    assert kinds(d) == ["TakeLeader", "ClearFailover", "WatchdogArm", "PgPromote", "TouchMember"]
    assert d.detail == "switchover: promoted self to leader by acquiring session lock"


def test_others_wait_for_a_healthy_candidate_A30() -> None:
    cluster = with_failover(UNLOCKED, leader="n2", member="n3")
    d = decide(snap(cluster, make_pg(wal_position=900), peers={"n2": peer("n2"), "n3": peer("n3", 100)}), CONFIGURED)
    assert "TakeLeader" not in kinds(d) and "the candidate n3 is healthy" in d.detail


def test_an_unhealthy_candidate_lets_the_others_race_without_the_lag_check_A27_A30() -> None:
    cluster = with_failover(
        make_cluster(leader=None, members=members(n1="replica", n2="master", n3="replica"), status_lsn=9_000_000),
        leader="n2",
        member="n3",
    )
    peers = {"n2": peer("n2", 5_000_000), "n3": PeerStatus.unreachable("n3")}  # the former leader is ignored
    d = decide(snap(cluster, make_pg(wal_position=100), peers=peers), CONFIGURED)
    assert kinds(d)[:2] == ["TakeLeader", "ClearFailover"]


# --- pause (A41-A43) ---------------------------------------------------------------------------------


PAUSED = {"ttl": 30, "pause": True}


def paused(cluster: Cluster, pg: PgView, **kw: Any) -> Any:
    return snap(cluster, pg, dcs=PAUSED, **kw)


def test_in_pause_no_replica_is_promoted_A42() -> None:
    d = decide(paused(make_cluster(leader=None), make_pg(wal_position=999), peers={}), CONFIGURED)
    assert not any(isinstance(x, a.TakeLeader | a.PgPromote) for x in d.actions) and d.reason == Reason.PAUSED


def test_in_pause_a_running_primary_takes_a_free_lock_without_the_watchdog_A42() -> None:
    d = decide(paused(make_cluster(leader=None), make_pg(role="master")), CONFIGURED)
    assert kinds(d) == ["TakeLeader", "TouchMember"] and d.detail == "acquired session lock as a leader"


def test_in_pause_the_named_candidate_may_still_be_promoted_A42() -> None:
    d = decide(paused(with_failover(make_cluster(leader=None), member=ME), make_pg()), CONFIGURED)
    assert "PgPromote" in kinds(d)


def test_in_pause_postgres_is_not_started_and_a_leader_without_it_lets_the_lock_go_A42_A43() -> None:
    down = make_pg(role="master", running=False, accepting=False, state="stopped")
    leader = decide(paused(make_cluster(leader=ME), down), CONFIGURED)
    assert kinds(leader) == ["ReleaseLeader", "TouchMember"]
    assert leader.detail == "removed leader lock because postgres is not running"
    replica = decide(paused(make_cluster(leader="n2"), replace(down, role="replica")), CONFIGURED)
    assert not any(isinstance(x, a.PgStart) for x in replica.actions)


def test_in_pause_a_leader_that_is_no_longer_primary_releases_the_lock_A42() -> None:
    d = decide(paused(make_cluster(leader=ME), make_pg(role="replica")), CONFIGURED)
    assert kinds(d)[0] == "ReleaseLeader" and "PgPromote" not in kinds(d)


def test_in_pause_nothing_is_demoted_A42_A43() -> None:
    other = decide(paused(make_cluster(leader="n2"), make_pg(role="master")), CONFIGURED)
    assert not any(isinstance(x, a.PgDemote) for x in other.actions)
    no_dcs = decide(paused(None, make_pg(role="master")), CONFIGURED)
    assert no_dcs.actions == ()
    lost = decide(paused(make_cluster(leader=ME), make_pg(role="master")), replace(CONFIGURED, lock_failure="lost"))
    assert not any(isinstance(x, a.PgDemote) for x in lost.actions)


def test_in_pause_the_leader_keeps_its_lock_without_feeding_the_watchdog_A42() -> None:
    d = decide(paused(make_cluster(leader=ME), make_pg(role="master")), CONFIGURED)
    assert kinds(d) == ["RefreshLeader", "TouchMember"] and d.actions[-1].data["pause"] is True  # type: ignore[attr-defined]


def test_in_pause_an_empty_node_does_not_bootstrap_A43() -> None:
    d = decide(paused(make_cluster(initialize=None, members={}), make_pg(data_dir="empty", sysid=None)), Memory())
    assert not any(isinstance(x, a.Initialize | a.PgBootstrap) for x in d.actions)


# --- restart (A52, D29) ------------------------------------------------------------------------------


def test_an_immediate_restart_runs_and_answers_its_request_D29() -> None:
    memory, status, _ = controls.request_restart(CONFIGURED, RestartRequest(id="r1"), PRIMARY)
    assert status is None and memory.restart is not None
    d = decide(snap(make_cluster(leader=ME), PRIMARY), memory)
    assert kinds(d) == ["RefreshLeader", "PgRestart", "TouchMember"] and d.reason == Reason.RESTART
    memory = record(d.memory, d.actions[1], Outcome(ok=True, body={"accepted": True, "operation": "op-7"}))
    done = PgView.from_wire(
        {
            **PRIMARY.raw,
            "data_dir": "initialized",
            "running": True,
            "accepting": True,
            "role": "master",
            "state": "running",
            "operation": {"id": "op-7", "name": "restart", "state": "succeeded"},
        }
    )
    after = decide(snap(make_cluster(leader=ME), done), memory)
    assert [(r.id, r.status, r.message) for r in after.results] == [("r1", 200, "restarted successfully")]
    assert after.memory.restart is None


def test_a_restart_whose_conditions_do_not_match_is_refused_A52() -> None:
    for request in (
        RestartRequest(id="r", role="replica"),
        RestartRequest(id="r", postgres_version="15.0"),
        RestartRequest(id="r", restart_pending=True),
    ):
        memory, _, _ = controls.request_restart(CONFIGURED, request, PRIMARY)
        pg = replace(PRIMARY, raw={"server_version": 150004})
        d = decide(snap(make_cluster(leader=ME), pg), memory)
        assert [(r.status, r.message) for r in d.results] == [(503, "restart conditions are not satisfied")]
        assert not any(isinstance(x, a.PgRestart) for x in d.actions)
    newer = controls.request_restart(CONFIGURED, RestartRequest(id="r", postgres_version="16.1"), PRIMARY)[0]
    assert "PgRestart" in kinds(
        decide(snap(make_cluster(leader=ME), replace(PRIMARY, raw={"server_version": 150004})), newer)
    )


def test_one_scheduled_restart_at_a_time_and_its_cancellation_D29_D30() -> None:
    req = RestartRequest(id="s1", schedule="2030-01-01T00:00:00+00:00", schedule_ts=at("2030-01-01T00:00:00+00:00"))
    memory, status, message = controls.request_restart(CONFIGURED, req, PRIMARY)
    assert (status, message) == (202, "Restart scheduled")
    assert controls.request_restart(memory, replace(req, id="s2"), PRIMARY)[1:] == (
        409,
        "Another restart is already scheduled",
    )
    memory2, status, message = controls.cancel_restart(memory)
    assert (status, message) == (200, "scheduled restart deleted")
    assert controls.cancel_restart(memory2)[1:] == (404, "no restarts are scheduled")


def test_a_scheduled_restart_runs_when_due_and_is_shown_in_the_member_key_A52() -> None:
    when = at("2030-01-01T00:00:00+00:00")
    req = RestartRequest(id="s1", schedule="2030-01-01T00:00:00+00:00", schedule_ts=when)
    memory = controls.request_restart(CONFIGURED, req, PRIMARY)[0]
    before = decide(replace(snap(make_cluster(leader=ME), PRIMARY), now=when - 2), memory)
    assert before.wake_in == pytest.approx(2) and "PgRestart" not in kinds(before)
    assert before.actions[-1].data["scheduled_restart"]["schedule"] == "2030-01-01T00:00:00+00:00"  # type: ignore[attr-defined]
    due = decide(replace(snap(make_cluster(leader=ME), PRIMARY), now=when + 0.5), memory)
    assert "PgRestart" in kinds(due) and due.memory.scheduled_restart is None
    stale = decide(replace(snap(make_cluster(leader=ME), PRIMARY), now=when + 100), memory)
    assert "PgRestart" not in kinds(stale) and stale.memory.scheduled_restart is None


# --- reload and reinitialize (D31, D32, C20) ---------------------------------------------------------


def test_reload_is_done_by_the_next_tick_D31() -> None:
    memory, status, message = controls.request_reload(CONFIGURED)
    assert (status, message) == (202, "reload scheduled")
    d = decide(snap(make_cluster(leader=ME), PRIMARY), memory)
    reload = next(x for x in d.actions if isinstance(x, a.PgReload))
    assert not record(d.memory, reload, Outcome(ok=True)).reload_pending


def test_reinitialize_is_refused_on_the_leader_and_without_a_leader_D32() -> None:
    assert controls.request_reinitialize(CONFIGURED, make_cluster(leader=ME), PRIMARY, ME, "x", False)[1:] == (
        503,
        "I am the leader, can not reinitialize",
    )
    assert controls.request_reinitialize(CONFIGURED, make_cluster(leader=None), make_pg(), ME, "x", True)[1:] == (
        503,
        "Cluster has no leader, can not reinitialize",
    )


def test_reinitialize_rebuilds_a_replica_from_the_leader_C20() -> None:
    cluster = make_cluster(leader="n2", members=members(n1="replica", n2="master"))
    memory, status, message = controls.request_reinitialize(CONFIGURED, cluster, make_pg(), ME, "x", False)
    assert (status, message) == (200, "reinitialize started")
    d = decide(snap(cluster, make_pg()), memory)
    reinit = d.actions[0]
    assert isinstance(reinit, a.PgReinitialize) and reinit.source["name"] == "n2" and d.reason == Reason.REINITIALIZE


def test_a_forced_reinitialize_cancels_the_operation_in_progress_first_D32() -> None:
    cluster = make_cluster(leader="n2", members=members(n1="replica", n2="master"))
    starting = make_pg(state="starting", operation=Operation("op-3", "start", OpState.RUNNING))
    refused = controls.request_reinitialize(CONFIGURED, cluster, starting, ME, "x", False)
    assert refused[1:] == (503, "start already in progress")
    memory, status, _ = controls.request_reinitialize(CONFIGURED, cluster, starting, ME, "x", True)
    assert status == 200 and memory.reinit_force
    d = decide(snap(cluster, starting), memory)
    assert kinds(d) == ["PgCancel", "TouchMember"] and d.detail == "cancelling start for a forced reinitialize"
    again = decide(snap(cluster, starting), d.memory)  # once per operation
    assert "PgCancel" not in kinds(again) and again.detail == "start in progress"
    cancelled = make_pg(operation=Operation("op-3", "start", OpState.FAILED, "cancelled"), running=False)
    after = decide(snap(cluster, cancelled), again.memory)
    assert isinstance(after.actions[0], a.PgReinitialize)
    assert not record(after.memory, after.actions[0], Outcome(ok=True)).reinit_force


def test_nofailover_or_paused_tags_do_not_change_restart_versions() -> None:
    assert controls.version_to_int("15.2") == 150002 and controls.version_to_int("9.6.24") == 90624
    assert controls.version_to_int("x") is None
    assert make_facts(tags=LocalTags({"nofailover": True})).tags.nofailover


def test_after_a_scheduled_switchover_only_the_candidate_takes_the_lock_A30_A31() -> None:
    cluster = with_failover(UNLOCKED, leader="n2", member="n3", scheduled_at="2030-01-01T00:00:00+00:00")
    d = decide(snap(cluster, make_pg(wal_position=900), peers={"n2": peer("n2"), "n3": peer("n3", 100)}), CONFIGURED)
    assert "TakeLeader" not in kinds(d) and "the candidate n3 is healthy" in d.detail

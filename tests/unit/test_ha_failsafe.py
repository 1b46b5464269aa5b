"""decide() tables for DCS failsafe mode (features.md C82-C86, A15, D33) and the watchdog lifecycle (C89)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop import failsafe
from services.ha_loop.core import Memory, Outcome, Reason, decide, record
from services.ha_loop.decision import FailsafeLeader
from shared.model import Cluster, KeyValue
from tests.unit.test_ha_decide import CONFIGURED, ME, kinds, make_facts, make_pg, member_value, snap

FAILSAFE = {"ttl": 30, "failsafe_mode": True}
URLS = {name: f"http://127.0.0.1:{8000 + int(name[1:])}/patroni" for name in ("n1", "n2", "n3")}


def cluster(
    *,
    leader: str | None = ME,
    listed: dict[str, str] | None = None,
    config: dict[str, Any] | None = None,
    members: tuple[str, ...] = ("n1", "n2", "n3"),
) -> Cluster:
    keys = {"initialize": KeyValue("7000", 1), "config": KeyValue(json.dumps(config or FAILSAFE), 2)}
    if leader:
        keys["leader"] = KeyValue(leader, 3)
    for name in members:
        keys[f"members/{name}"] = KeyValue(member_value(name, role="master" if name == leader else "replica"), 4)
    if listed is not None:
        keys["failsafe"] = KeyValue(json.dumps(listed), 5)
    return Cluster.from_keys(keys)


PRIMARY = make_pg(role="master", wal_position=500)
ARMED = replace(CONFIGURED, watchdog_armed=True)


def configured(config: dict[str, Any]) -> Memory:
    return replace(ARMED, configured=json.dumps(config, sort_keys=True))


def of(kind: type[a.Action], decision: Any) -> list[Any]:
    return [x for x in decision.actions if isinstance(x, kind)]


# --- the leader keeps /failsafe (C83) -------------------------------------------------------------------


def test_the_leader_writes_every_member_to_failsafe_with_its_refresh_C83() -> None:
    d = decide(snap(cluster(), PRIMARY, dcs=FAILSAFE), configured(FAILSAFE))
    assert of(a.RefreshLeader, d)[0].failsafe == URLS
    same = decide(snap(cluster(listed=URLS), PRIMARY, dcs=FAILSAFE), configured(FAILSAFE))
    assert of(a.RefreshLeader, same)[0].failsafe is None  # unchanged: not written again
    off = decide(snap(cluster(config={"ttl": 30}), PRIMARY), ARMED)
    assert of(a.RefreshLeader, off)[0].failsafe is None


# --- the primary without a DCS (C84) --------------------------------------------------------------------


def without_dcs(acks: dict[str, bool] | None, listed: dict[str, str] = URLS, config: dict[str, Any] = FAILSAFE) -> Any:
    s = replace(snap(None, PRIMARY, dcs=config), last_cluster=cluster(listed=listed), failsafe_acks=acks)
    return decide(s, replace(configured(config), lock_ok=True))


def test_a_primary_without_dcs_asks_every_other_member_in_failsafe_C84_D33() -> None:
    d = without_dcs(None)
    assert d.needs_failsafe_acks and not of(a.PgDemote, d)
    call = of(a.CallFailsafe, d)[0]
    assert dict(call.targets) == {"n2": URLS["n2"], "n3": URLS["n3"]}
    assert call.body == {
        "name": ME,
        "conn_url": "postgres://127.0.0.1:5001/postgres",
        "api_url": "http://127.0.0.1:8001/patroni",
        "slots": {"n1": 500},  # its own physical slot at its current position
    }


def test_it_stays_primary_only_when_every_member_accepts_C84() -> None:
    kept = without_dcs({"n2": True, "n3": True})
    assert kept.reason == Reason.FAILSAFE_ACTIVE and kinds(kept) == ["WatchdogKeepalive"]
    assert kept.memory.failsafe_active and kept.memory.lock_ok and kept.memory.lock_failure is None
    assert kept.detail == "continue to run as a leader because failsafe mode is enabled and all members are accessible"
    demoted = without_dcs({"n2": True, "n3": False})
    assert of(a.PgDemote, demoted) == [a.PgDemote("offline", None)] and not demoted.memory.failsafe_active
    assert "n3" in demoted.detail and "WatchdogDisarm" in kinds(demoted)


def test_a_lone_member_always_passes_and_no_failsafe_means_the_usual_demotion_C84() -> None:
    alone = without_dcs(None, listed={ME: URLS[ME]})
    assert alone.reason == Reason.FAILSAFE_ACTIVE and not alone.needs_failsafe_acks
    assert of(a.PgDemote, without_dcs(None, config={"ttl": 30}))  # failsafe_mode off
    assert of(a.PgDemote, without_dcs(None, listed={"n2": URLS["n2"]}))  # not listed myself


def test_a_refresh_that_the_dcs_did_not_answer_goes_through_failsafe_but_a_lost_lock_does_not_C84() -> None:
    listed = cluster(listed=URLS)
    unreachable = decide(snap(listed, PRIMARY, dcs=FAILSAFE), replace(configured(FAILSAFE), lock_failure="unreachable"))
    assert unreachable.needs_failsafe_acks
    lost = decide(snap(listed, PRIMARY, dcs=FAILSAFE), replace(configured(FAILSAFE), lock_failure="lost"))
    assert of(a.PgDemote, lost) == [a.PgDemote("immediate-nolock", None)]


# --- the replica side (C85, D33) ------------------------------------------------------------------------

BODY = {"name": "n2", "conn_url": "postgres://127.0.0.1:5002/postgres", "api_url": URLS["n2"], "slots": {"n2": 9}}


def test_post_failsafe_answers_like_patroni_D33() -> None:
    m = Memory()
    assert failsafe.request(m, BODY, 1000.0, 30, make_pg(), mode_on=False)[1:] == (502, "")
    assert failsafe.request(m, BODY, 1000.0, 30, PRIMARY, mode_on=True)[1:] == (500, "Running as a leader")
    memory, status, text = failsafe.request(m, BODY, 1000.0, 30, make_pg(), mode_on=True)
    assert (status, text) == (200, "Accepted")
    assert memory.failsafe_leader == FailsafeLeader("n2", BODY["conn_url"], URLS["n2"], {"n2": 9}, 1030.0)


def test_while_a_primary_calls_replicas_do_not_race_and_follow_it_C85() -> None:
    called = failsafe.request(CONFIGURED, BODY, 1000.0, 30, make_pg(), mode_on=True)[0]
    unlocked = cluster(leader=None, listed=URLS)
    d = decide(snap(unlocked, make_pg(following=None), dcs=FAILSAFE), replace(called, configured=json.dumps(FAILSAFE)))
    assert not d.needs_peers and not of(a.TakeLeader, d) and d.reason == Reason.FAILSAFE_FOLLOW
    assert of(a.PgFollow, d)[0].leader["name"] == "n2"
    assert d.memory.failsafe_leader is not None
    later = replace(snap(unlocked, make_pg(), dcs=FAILSAFE), now=1030.0)
    assert decide(later, replace(called, configured=json.dumps(FAILSAFE))).needs_peers  # after ttl: the race


def test_a_node_missing_from_failsafe_never_takes_the_lock_and_listed_ghosts_are_probed_A15() -> None:
    outsider = cluster(leader=None, listed={"n2": URLS["n2"], "n3": URLS["n3"]})
    d = decide(snap(outsider, make_pg(), dcs=FAILSAFE), configured(FAILSAFE))
    assert not d.needs_peers and not of(a.TakeLeader, d) and "not in /failsafe" in d.detail
    ghost = cluster(leader=None, listed=URLS, members=("n1", "n2"))  # n3's member key expired
    probe = decide(snap(ghost, make_pg(), dcs=FAILSAFE), configured(FAILSAFE))
    assert of(a.ProbePeers, probe)[0].names == ("n2", "n3")


def test_a_new_leader_forgets_the_failsafe_state_C86() -> None:
    m = replace(ARMED, failsafe_active=True, failsafe_leader=FailsafeLeader("n2", None, None, {}, 1e12))
    after = record(m, a.TakeLeader(), Outcome(ok=True, applied=True))
    assert not after.failsafe_active and after.failsafe_leader is None
    refreshed = record(replace(ARMED, failsafe_active=True), a.RefreshLeader(1), Outcome(ok=True, applied=True))
    assert not refreshed.failsafe_active


# --- the watchdog lifecycle (C89) -------------------------------------------------------------------------


def test_a_lost_watchdog_is_rearmed_in_automatic_mode_and_makes_a_required_leader_step_down_C89() -> None:
    lost = record(ARMED, a.WatchdogKeepalive(), Outcome(ok=False, error_code="precondition_failed"))
    assert lost.watchdog_lost and not lost.watchdog_armed
    leading = cluster(config={"ttl": 30})
    automatic = decide(snap(leading, PRIMARY), lost)
    assert "WatchdogArm" in kinds(automatic) and not of(a.PgStop, automatic)
    required = decide(snap(leading, PRIMARY, facts=make_facts(watchdog_required=True)), lost)
    assert required.reason == Reason.WATCHDOG_STEP_DOWN and required.memory.stepping_down
    assert of(a.PgStop, required) == [a.PgStop("fast", checkpoint=True)]


def test_required_mode_arms_before_taking_the_lock_and_lets_it_go_without_a_watchdog_C89() -> None:
    facts = make_facts(watchdog_required=True)
    race = decide(snap(cluster(leader=None), make_pg(), facts=facts, peers={}), CONFIGURED)
    assert kinds(race)[:2] == ["WatchdogArm", "TakeLeader"]
    refused = record(CONFIGURED, a.WatchdogArm(25.0), Outcome(ok=False, error_code="unavailable"))
    holding = decide(snap(cluster(leader=ME), make_pg(), facts=facts), refused)
    assert of(a.ReleaseLeader, holding) and not of(a.PgPromote, holding)


def test_the_watchdog_is_disarmed_when_not_leading_and_in_pause_C89() -> None:
    follower = decide(snap(cluster(leader="n2", config={"ttl": 30}), make_pg()), ARMED)
    assert "WatchdogDisarm" in kinds(follower)
    paused_config = {"ttl": 30, "pause": True}
    paused = decide(snap(cluster(config=paused_config), PRIMARY, dcs=paused_config), configured(paused_config))
    assert "WatchdogDisarm" in kinds(paused) and "WatchdogKeepalive" not in kinds(paused)
    leading = decide(snap(cluster(config={"ttl": 30}), PRIMARY), ARMED)
    assert "WatchdogDisarm" not in kinds(leading)


def test_an_automatic_leader_says_that_it_lost_the_watchdog_C89() -> None:
    lost = record(ARMED, a.WatchdogKeepalive(), Outcome(ok=False, error_code="unavailable"))
    d = decide(snap(cluster(config={"ttl": 30}), PRIMARY), lost)
    assert d.detail.endswith("the watchdog stopped answering: arming it again")


# --- slots carried by POST /failsafe (C85, D33) ---------------------------------------------------------

CDC = {"cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}


def test_the_failsafe_call_carries_the_permanent_slots_positions_D33() -> None:
    config = {**FAILSAFE, "slots": CDC}
    pg = replace(PRIMARY, raw={**PRIMARY.raw, "slots": {"cdc": {"type": "logical", "confirmed_flush_lsn": 777}}})
    s = replace(snap(None, pg, dcs=config), last_cluster=cluster(listed=URLS, config=config))
    d = decide(s, replace(configured(config), lock_ok=True))
    assert of(a.CallFailsafe, d)[0].body["slots"] == {"cdc": 777, "n1": 500}


def test_a_replica_following_a_failsafe_primary_advances_its_slots_to_the_posted_positions_C85() -> None:
    config = {**FAILSAFE, "slots": CDC}
    body = {**BODY, "slots": {"cdc": 900, "n2": 9}}
    called = failsafe.request(configured(config), body, 1000.0, 30, make_pg(), mode_on=True)[0]
    unlocked = cluster(leader=None, listed=URLS, config=config)
    s = snap(unlocked, make_pg(following="n2"), dcs=config, facts=make_facts(use_slots=True))
    d = decide(s, replace(called, slots_sent=None))
    assert d.reason == Reason.FAILSAFE_FOLLOW
    assert of(a.PgSyncSlots, d)[0].slots["cdc"] == {**CDC["cdc"], "lsn": 900}

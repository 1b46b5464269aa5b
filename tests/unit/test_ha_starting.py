"""decide() tables for a lock holder whose PostgreSQL starts or crashed (features.md A34, A35, A38)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from services.ha_loop import actions as a
from services.ha_loop import controls
from services.ha_loop.core import Reason, decide
from services.ha_loop.decision import RestartRequest
from tests.unit.test_ha_decide import CONFIGURED, ME, kinds, make_cluster, make_pg, peer, snap

STARTING = make_pg(role="master", running=True, accepting=False, state="starting")
CRASHED = make_pg(role="master", running=False, accepting=False, state="crashed")


def config(**extra: Any) -> dict[str, Any]:
    return {"ttl": 30, **extra}


def memory(dcs: dict[str, Any], **kw: Any) -> Any:
    return replace(CONFIGURED, configured=json.dumps(dcs, sort_keys=True), **kw)


def at(now: float, **kw: Any) -> Any:
    return replace(snap(**kw), now=now)


def test_a_starting_primary_keeps_its_lock_until_primary_start_timeout_A38() -> None:
    dcs = config(primary_start_timeout=60)
    d = decide(at(1000.0, cluster=make_cluster(leader=ME, config=dcs), pg=STARTING, dcs=dcs), memory(dcs))
    assert kinds(d)[0] == "RefreshLeader" and "PgDemote" not in kinds(d)
    assert d.detail == "PostgreSQL is still starting up, 60 seconds until timeout" and d.memory.starting_since == 1000.0
    later = decide(at(1030.0, cluster=make_cluster(leader=ME, config=dcs), pg=STARTING, dcs=dcs), d.memory)
    assert later.detail == "PostgreSQL is still starting up, 30 seconds until timeout"


def test_after_the_timeout_it_fails_over_only_when_a_candidate_is_healthy_A34_A38() -> None:
    dcs = config(primary_start_timeout=60)
    started = memory(dcs, starting_since=1000.0)
    cluster = make_cluster(leader=ME, config=dcs)
    probe = decide(at(1061.0, cluster=cluster, pg=STARTING, dcs=dcs), started)
    assert probe.needs_peers
    healthy = decide(at(1061.0, cluster=cluster, pg=STARTING, dcs=dcs, peers={"n2": peer("n2")}), started)
    assert healthy.reason == Reason.START_TIMEOUT and healthy.detail == "stopped PostgreSQL because of startup timeout"
    assert kinds(healthy)[:2] == ["PgDemote", "ReleaseLeader"] and healthy.actions[0] == a.PgDemote("immediate", None)
    nobody = {"n2": replace(peer("n2"), reachable=False)}
    waiting = decide(at(1061.0, cluster=cluster, pg=STARTING, dcs=dcs, peers=nobody), started)
    assert "PgDemote" not in kinds(waiting) and "RefreshLeader" in kinds(waiting)
    assert waiting.detail == "primary start has timed out, but continuing to wait because failover is not possible"


def test_a_crashed_primary_with_primary_start_timeout_0_lets_the_lock_go_to_a_healthy_candidate_A34() -> None:
    dcs = config(primary_start_timeout=0)
    cluster = make_cluster(leader=ME, config=dcs)
    assert decide(snap(cluster, CRASHED, dcs=dcs), memory(dcs)).needs_peers
    d = decide(snap(cluster, CRASHED, dcs=dcs, peers={"n2": peer("n2")}), memory(dcs))
    assert kinds(d)[0] == "ReleaseLeader" and a.PgStart("replica", None) in d.actions
    alone = decide(snap(cluster, CRASHED, dcs=dcs, peers={"n2": replace(peer("n2"), reachable=False)}), memory(dcs))
    assert a.PgStart("primary", None, None) in alone.actions  # nobody to fail over to: start it again


def test_a_restart_timeout_bounds_the_restart_and_the_wait_that_follows_it_A38() -> None:
    primary = make_pg(role="master")
    m = controls.request_restart(CONFIGURED, RestartRequest(id="r1", timeout=20.0), primary)[0]
    d = decide(at(1000.0, cluster=make_cluster(leader=ME), pg=primary), m)
    assert a.PgRestart(None, 20.0) in d.actions and d.memory.starting_since == 1000.0
    waiting = decide(at(1010.0, cluster=make_cluster(leader=ME), pg=STARTING), replace(d.memory, restart_op="op"))
    assert waiting.detail == "PostgreSQL is still starting up, 10 seconds until timeout"


def test_a_replica_that_is_still_starting_just_says_so_A38() -> None:
    replica = make_pg(running=True, accepting=False, state="starting")
    d = decide(snap(make_cluster(leader="n2"), replica), CONFIGURED)
    assert d.detail == "Still starting up as a standby." and "PgDemote" not in kinds(d)

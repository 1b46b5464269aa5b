"""Invariants of decide() over generated snapshots (DESIGN.md "The brain is a pure function")."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ha_loop import actions as a
from services.ha_loop.core import ALLOWED_FROM, Memory, Snapshot, decide, local_role
from services.ha_loop.status import NodeFacts
from services.ha_loop.views import PeerStatus, PgView
from shared.config.dynamic import effective
from shared.model import Cluster, KeyValue
from shared.model.member import LocalTags

NAMES = ["n1", "n2", "n3"]


@st.composite
def clusters(draw: Any) -> Cluster | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    keys: dict[str, KeyValue] = {}
    init = draw(st.sampled_from([None, "", "7000", "8000"]))
    if init is not None:
        keys["initialize"] = KeyValue(init, 1)
    leader = draw(st.sampled_from([None, *NAMES]))
    if leader:
        keys["leader"] = KeyValue(leader, 2)
    for name in draw(st.sets(st.sampled_from(NAMES))):
        data = {
            "conn_url": f"postgres://h/{name}",
            "api_url": f"http://h/{name}",
            "state": "running",
            "xlog_location": draw(st.integers(0, 1000)),
            "role": "replica",
        }
        if draw(st.booleans()):
            data["tags"] = {"clonefrom": True}
        keys[f"members/{name}"] = KeyValue(json.dumps(data), 3)
    if draw(st.booleans()):
        keys["status"] = KeyValue(json.dumps({"optime": draw(st.integers(0, 3_000_000))}), 4)
    if draw(st.booleans()):
        keys["history"] = KeyValue(json.dumps([[1, 10, "r", "t"]] * draw(st.integers(0, 2))), 5)
    if draw(st.booleans()):
        keys["config"] = KeyValue(json.dumps({"ttl": 30}), 6)
    return Cluster.from_keys(keys)


@st.composite
def pg_views(draw: Any) -> PgView | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    data_dir = draw(st.sampled_from(["missing", "empty", "initialized", "initialized", "invalid"]))
    running = data_dir == "initialized" and draw(st.booleans())
    op = None
    if draw(st.booleans()):
        op = {
            "id": draw(st.sampled_from(["o1", "o2"])),
            "name": draw(st.sampled_from(["bootstrap", "clone", "promote", "start", "demote"])),
            "state": draw(st.sampled_from(["running", "succeeded", "failed"])),
            "result": {"sysid": "7000"},
        }
    return PgView.from_wire(
        {
            "data_dir": data_dir,
            "sysid": draw(st.sampled_from([None, "7000", "8000"])),
            "running": running,
            "accepting": running and draw(st.booleans()),
            "state": "running" if running else draw(st.sampled_from(["stopped", "crashed"])),
            "role": draw(st.sampled_from(["master", "replica"])) if data_dir == "initialized" else "uninitialized",
            "timeline": draw(st.integers(1, 3)),
            "wal_position": draw(st.integers(0, 1000)),
            "following": draw(st.sampled_from([None, *NAMES])),
            "operation": op,
        }
    )


@st.composite
def snapshots(draw: Any) -> tuple[Snapshot, Memory]:
    peers = None
    if draw(st.booleans()):
        peers = {
            n: PeerStatus(
                name=n,
                reachable=draw(st.booleans()),
                is_primary=draw(st.booleans()),
                wal_position=draw(st.integers(0, 1000)),
            )
            for n in NAMES[1:]
        }
    tags = draw(st.sampled_from([{}, {"nofailover": True}, {"failover_priority": 3}]))
    facts = NodeFacts(
        name="n1",
        scope="s",
        conn_url="postgres://h/n1",
        api_url="http://h/n1",
        tags=LocalTags(tags),
        can_bootstrap=draw(st.booleans()),
    )
    snapshot = Snapshot(
        now=1.0,
        facts=facts,
        dynamic=effective({"ttl": 30}, {}),
        cluster=draw(clusters()),
        pg=draw(pg_views()),
        peers=peers,
    )
    memory = Memory(
        lock_ok=draw(st.booleans()),
        lock_failure=draw(st.sampled_from([None, "lost", "unreachable"])),
        lost_race=draw(st.booleans()),
        bootstrapping=draw(st.booleans()),
        handled_op=draw(st.sampled_from([None, "o1"])),
    )
    return snapshot, memory


@settings(max_examples=1000, deadline=None)
@given(snapshots())
def test_no_decision_promotes_without_holding_the_lock(case: tuple[Snapshot, Memory]) -> None:
    """Promote only after TakeLeader in the same plan, or after refreshing a lock the view says is ours."""
    s, m = case
    d = decide(s, m)
    plan = list(d.actions)
    for i, action in enumerate(plan):
        if isinstance(action, a.PgPromote):
            before = plan[:i]
            took = any(isinstance(x, a.TakeLeader) for x in before)
            refreshed = any(isinstance(x, a.RefreshLeader) for x in before)
            assert took or (refreshed and s.cluster is not None and s.cluster.leader_name == "n1"), plan


@settings(max_examples=1000, deadline=None)
@given(snapshots())
def test_postgres_actions_stay_inside_the_role_transition_table(case: tuple[Snapshot, Memory]) -> None:
    s, m = case
    d = decide(s, m)
    for action in d.actions:
        allowed = ALLOWED_FROM.get(type(action))
        if allowed is not None:
            assert s.pg is not None and local_role(s.pg) in allowed, (action, s.pg)


@settings(max_examples=1000, deadline=None)
@given(snapshots())
def test_nofailover_nodes_never_take_the_lock_and_the_member_key_is_written_last(case: tuple[Snapshot, Memory]) -> None:
    s, m = case
    d = decide(s, m)
    if s.facts.tags.nofailover:
        assert not any(isinstance(x, a.TakeLeader | a.PgPromote | a.PgBootstrap) for x in d.actions)
    touches = [i for i, x in enumerate(d.actions) if isinstance(x, a.TouchMember)]
    assert touches in ([], [len(d.actions) - 1])
    assert not (
        any(isinstance(x, a.TakeLeader) for x in d.actions) and any(isinstance(x, a.ReleaseLeader) for x in d.actions)
    )

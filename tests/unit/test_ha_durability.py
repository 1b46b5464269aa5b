"""decide() tables for durability: synchronous mode `on` and `quorum` (C71-C79, A14, A18), and replication
slots (C29-C34, B10), plus a property test of the quorum invariant across the whole change protocol."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.ha_loop import actions as a
from services.ha_loop import sync
from services.ha_loop.core import Memory, decide
from services.ha_loop.decision import slots_fingerprint
from services.ha_loop.views import PeerStatus, PgView
from shared.model import Cluster, KeyValue
from tests.unit.test_ha_decide import CONFIGURED, ME, kinds, make_facts, make_pg, member_value, snap


def cluster(
    *,
    leader: str | None = ME,
    sync_value: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    tags: dict[str, dict[str, Any]] | None = None,
) -> Cluster:
    keys = {"initialize": KeyValue("7000", 1), "config": KeyValue(json.dumps(config or {"ttl": 30}), 2)}
    if leader:
        keys["leader"] = KeyValue(leader, 3)
    for name in ("n1", "n2", "n3"):
        extra = {"tags": tags[name]} if tags and name in tags else {}
        keys[f"members/{name}"] = KeyValue(
            member_value(name, role="master" if name == leader else "replica", **extra), 4
        )
    if sync_value is not None:
        keys["sync"] = KeyValue(json.dumps(sync_value), 9)
    if status is not None:
        keys["status"] = KeyValue(json.dumps(status), 10)
    return Cluster.from_keys(keys)


def primary(ssn: str | None = None, **lsns: tuple[int, str]) -> PgView:
    rows = {
        name: {"write": lsn, "flush": lsn, "replay": lsn, "sync_state": state} for name, (lsn, state) in lsns.items()
    }
    pg = make_pg(role="master", wal_position=1000)
    return replace(pg, raw={**pg.raw, "replication_lsns": rows, "synchronous_standby_names": ssn})


SYNC_ON = {"ttl": 30, "synchronous_mode": True}
SYNC_STRICT = {"ttl": 30, "synchronous_mode": True, "synchronous_mode_strict": True}
QUORUM = {"ttl": 30, "synchronous_mode": "quorum", "synchronous_node_count": 1}


def of(kind: type[a.Action], decision: Any) -> list[Any]:
    return [x for x in decision.actions if isinstance(x, kind)]


# --- synchronous mode `on` (C71-C79) ------------------------------------------------------------------


def test_the_leader_first_names_a_standby_in_postgresql_C72_C73() -> None:
    d = decide(snap(cluster(config=SYNC_ON), primary(n2=(990, "async"), n3=(900, "async")), dcs=SYNC_ON), CONFIGURED)
    assert of(a.WriteSync, d) == [a.WriteSync((), None, None)]  # no /sync yet: the leader claims it, empty
    assert of(a.PgSetSync, d) == [a.PgSetSync("on", 1, ("n2",), False, 1000)]  # the standby furthest ahead


def test_a_standby_is_published_only_once_synchronous_and_caught_up_C73() -> None:
    c = cluster(config=SYNC_ON, sync_value={"leader": ME, "sync_standby": None})
    behind = decide(snap(c, primary("n2", n2=(800, "sync")), dcs=SYNC_ON), replace(CONFIGURED, sync_lsn=900))
    assert not of(a.WriteSync, behind) and not of(a.PgSetSync, behind)
    caught_up = decide(snap(c, primary("n2", n2=(950, "sync")), dcs=SYNC_ON), replace(CONFIGURED, sync_lsn=900))
    assert of(a.WriteSync, caught_up) == [a.WriteSync(("n2",), None, 9)]


def test_a_lost_standby_leaves_sync_before_postgresql_changes_C73() -> None:
    c = cluster(config=SYNC_ON, sync_value={"leader": ME, "sync_standby": "n2"})
    d = decide(snap(c, primary("n2", n3=(990, "async")), dcs=SYNC_ON), replace(CONFIGURED, sync_lsn=900))
    steps = [x for x in d.actions if isinstance(x, a.WriteSync | a.PgSetSync)]
    assert steps == [a.WriteSync((), None, 9), a.PgSetSync("on", 1, ("n3",), False, 1000)]


def test_strict_mode_without_standbys_waits_for_any_C76() -> None:
    d = decide(
        snap(
            cluster(config=SYNC_STRICT, sync_value={"leader": ME, "sync_standby": None}), primary(""), dcs=SYNC_STRICT
        ),
        CONFIGURED,
    )
    assert of(a.PgSetSync, d) == [a.PgSetSync("on", 0, (), True, 1000)]


def test_nosync_members_are_never_picked_C72() -> None:
    c = cluster(config=SYNC_ON, tags={"n2": {"nosync": True}})
    d = decide(snap(c, primary(n2=(999, "async"), n3=(500, "async")), dcs=SYNC_ON), CONFIGURED)
    assert of(a.PgSetSync, d)[0].names == ("n3",)


def test_a_lagging_sync_standby_is_swapped_C77() -> None:
    config = {**SYNC_ON, "maximum_lag_on_syncnode": 100}
    c = cluster(config=config, sync_value={"leader": ME, "sync_standby": "n2"})
    d = decide(snap(c, primary("n2", n2=(500, "sync"), n3=(990, "async")), dcs=config), replace(CONFIGURED, sync_lsn=0))
    assert of(a.PgSetSync, d)[0].names == ("n3",)


def test_switching_synchronous_mode_off_deletes_sync_then_clears_postgresql_C78() -> None:
    c = cluster(sync_value={"leader": ME, "sync_standby": "n2"})
    d = decide(snap(c, primary("n2", n2=(999, "sync"))), CONFIGURED)
    assert [x for x in d.actions if isinstance(x, a.DeleteSync | a.PgSetSync)] == [
        a.DeleteSync(9),
        a.PgSetSync("off", 0, (), False),
    ]


def test_promotion_in_synchronous_mode_resets_sync_first_A18() -> None:
    c = cluster(leader=None, config=SYNC_ON, sync_value={"leader": "n2", "sync_standby": "n1"})
    d = decide(
        snap(c, make_pg(wal_position=100), peers={"n3": PeerStatus("n3", True, wal_position=900)}, dcs=SYNC_ON),
        CONFIGURED,
    )
    k = kinds(d)
    assert k.index("TakeLeader") < k.index("WriteSync") < k.index("PgSetSync") < k.index("PgPromote")
    assert of(a.WriteSync, d) == [a.WriteSync((), None, 9)]


def test_only_synchronous_standbys_race_and_compare_among_themselves_A14() -> None:
    c = cluster(leader=None, config=SYNC_ON, sync_value={"leader": "n2", "sync_standby": "n3"})
    outsider = decide(snap(c, make_pg(wal_position=999), peers={}, dcs=SYNC_ON), CONFIGURED)
    assert "TakeLeader" not in kinds(outsider) and "I am not a synchronous standby" in outsider.detail
    listed = cluster(leader=None, config=SYNC_ON, sync_value={"leader": "n2", "sync_standby": "n1"})
    ahead_async = {"n3": PeerStatus("n3", True, wal_position=5000)}  # not in /sync: not compared
    d = decide(snap(listed, make_pg(wal_position=100), peers=ahead_async, dcs=SYNC_ON), CONFIGURED)
    assert kinds(d)[0] == "TakeLeader"


def test_a_failover_may_go_to_an_asynchronous_node_A27() -> None:
    keys = dict(cluster(leader=None, config=SYNC_ON, sync_value={"leader": "n2", "sync_standby": "n3"}).keys)
    keys["failover"] = KeyValue(json.dumps({"member": ME}), 11)
    d = decide(snap(Cluster.from_keys(keys), make_pg(), dcs=SYNC_ON), CONFIGURED)
    assert kinds(d)[0] == "TakeLeader" and "PgPromote" in kinds(d)


# --- quorum mode (4.0) --------------------------------------------------------------------------------


def test_quorum_mode_widens_the_dcs_then_sets_any_k_then_narrows() -> None:
    c = cluster(config=QUORUM, sync_value={"leader": ME, "quorum": 0, "sync_standby": None})
    first = decide(snap(c, primary("", n2=(990, "async"), n3=(980, "async")), dcs=QUORUM), CONFIGURED)
    assert [x for x in first.actions if isinstance(x, a.WriteSync | a.PgSetSync)] == [
        a.WriteSync(("n2", "n3"), 2, 9),
        a.PgSetSync("quorum", 1, ("n2", "n3"), False, 1000),
    ]
    c2 = cluster(config=QUORUM, sync_value={"leader": ME, "quorum": 2, "sync_standby": "n2,n3"})
    second = decide(snap(c2, primary("ANY 1 (n2,n3)", n2=(990, "quorum"), n3=(980, "quorum")), dcs=QUORUM), CONFIGURED)
    assert of(a.WriteSync, second) == [a.WriteSync(("n2", "n3"), 1, 9)] and not of(a.PgSetSync, second)


def test_a_quorum_candidate_needs_enough_voters_answering() -> None:
    c = cluster(leader=None, config=QUORUM, sync_value={"leader": "n2", "quorum": 1, "sync_standby": "n1,n3"})
    alone = decide(
        snap(c, make_pg(wal_position=900), peers={"n3": PeerStatus.unreachable("n3")}, dcs=QUORUM), CONFIGURED
    )
    assert "TakeLeader" not in kinds(alone) and "quorum is 1" in alone.detail
    seen = decide(
        snap(c, make_pg(wal_position=900), peers={"n3": PeerStatus("n3", True, wal_position=800)}, dcs=QUORUM),
        CONFIGURED,
    )
    assert kinds(seen)[0] == "TakeLeader"


NAMES = ["n2", "n3", "n4", "n5"]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(NAMES), unique=True),
    st.lists(st.sampled_from(NAMES), unique=True),
    st.integers(1, 3),
    st.lists(st.lists(st.sampled_from(NAMES), unique=True), min_size=1, max_size=4),
)
def test_every_step_of_the_quorum_protocol_keeps_q_plus_k_covering_every_node(
    start: list[str], start_pg: list[str], count: int, targets: list[list[str]]
) -> None:
    """q + k >= |V + S| after each single write, whatever the standbys do between ticks."""
    config = {**QUORUM, "synchronous_node_count": count}
    voters, pg_names = list(start), list(start)
    k = min(count, len(pg_names))
    q = len(voters) - k

    def check() -> None:
        union = {n for n in voters} | {n for n in pg_names}
        assert q + k >= len(union), (voters, q, pg_names, k)

    check()
    for target in targets:
        for _ in range(3):  # a few ticks per situation: the protocol converges
            lsns = {n: (990, "quorum") for n in target}
            ssn = f"ANY {k} ({','.join(pg_names)})" if pg_names else ""
            value = {"leader": ME, "quorum": q, "sync_standby": ",".join(voters) or None}
            d = decide(
                snap(cluster(config=config, sync_value=value, tags={}), primary(ssn, **lsns), dcs=config), CONFIGURED
            )
            for step in d.actions:
                if isinstance(step, a.WriteSync):
                    voters, q = list(step.members), step.quorum or 0
                elif isinstance(step, a.PgSetSync):
                    pg_names, k = list(step.names), step.num
                else:
                    continue
                check()
    del start_pg


# --- replication slots (C29-C34, B10) ------------------------------------------------------------------


def slot_snap(c: Cluster, pg: PgView, config: dict[str, Any] | None = None, **facts: Any) -> Any:
    return snap(c, pg, facts=make_facts(use_slots=None, **facts), dcs=config or {"ttl": 30})


def test_the_primary_keeps_a_slot_per_member_replicating_from_it_C29() -> None:
    c = cluster(tags={"n3": {"replicatefrom": "n2"}})
    d = decide(slot_snap(c, primary()), replace(CONFIGURED, slots_sent=None))
    [sync_slots] = of(a.PgSyncSlots, d)
    assert sync_slots.slots == {"n2": {"type": "physical"}}  # n3 replicates from n2, which keeps its slot


def test_a_cascading_replica_keeps_the_slots_of_its_downstream_C29() -> None:
    c = cluster(leader="n2", tags={"n3": {"replicatefrom": ME}})
    d = decide(slot_snap(c, make_pg(following="n2")), replace(CONFIGURED, slots_sent=None))
    assert of(a.PgSyncSlots, d)[0].slots == {"n3": {"type": "physical"}}


def test_permanent_slots_are_advanced_on_replicas_to_the_leaders_positions_C31_C32() -> None:
    config = {
        "ttl": 30,
        "slots": {
            "keep": {"type": "physical"},
            "n1": {"type": "physical"},
            "cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"},
        },
    }
    c = cluster(leader="n2", config=config, status={"optime": 900, "slots": {"keep": 800, "cdc": 850}})
    d = decide(slot_snap(c, make_pg(following="n2"), config), replace(CONFIGURED, slots_sent=None))
    slots = of(a.PgSyncSlots, d)[0].slots
    assert slots["keep"] == {"type": "physical", "lsn": 800}
    assert slots["cdc"] == {"type": "logical", "database": "postgres", "plugin": "test_decoding", "lsn": 850}
    assert "n1" not in slots  # never a permanent slot named after the node itself


def test_a_nofailover_replica_keeps_no_permanent_slot_C34() -> None:
    from shared.model.member import LocalTags

    config = {"ttl": 30, "slots": {"keep": {"type": "physical"}}}
    c = cluster(leader="n2", config=config)
    d = decide(
        slot_snap(c, make_pg(following="n2"), config, tags=LocalTags({"nofailover": True})),
        replace(CONFIGURED, slots_sent=None),
    )
    assert of(a.PgSyncSlots, d)[0].slots == {}


def test_the_leader_publishes_its_permanent_slots_positions_B10() -> None:
    config = {"ttl": 30, "slots": {"cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}}
    pg = primary()
    pg = replace(pg, raw={**pg.raw, "slots": {"cdc": {"type": "logical", "confirmed_flush_lsn": 777}}})
    d = decide(slot_snap(cluster(config=config), pg, config), CONFIGURED)
    assert of(a.RefreshLeader, d)[0].slots == {"cdc": 777}


def test_a_replica_copies_missing_logical_slots_from_the_leader_C32() -> None:
    c = cluster(leader="n2")
    pg = make_pg(following="n2")
    pg = replace(pg, raw={**pg.raw, "slots_to_copy": ["cdc"]})
    sent = slots_fingerprint({}, ())
    d = decide(slot_snap(c, pg), replace(CONFIGURED, slots_sent=sent))
    [copy] = of(a.PgCopySlots, d)
    assert copy.source["name"] == "n2" and copy.names == ("cdc",)


def test_no_slot_is_touched_in_pause_C34() -> None:
    d = decide(slot_snap(cluster(), primary(), {"ttl": 30, "pause": True}), Memory(slots_sent=None))
    assert not of(a.PgSyncSlots, d)


def test_parse_names_reads_every_form_C74() -> None:
    assert sync.parse_names("") == ("off", 0, ())
    assert sync.parse_names("*") == ("star", 1, ())
    assert sync.parse_names('2 (n2,"N 3")') == ("first", 2, ("n2", "N 3"))
    assert sync.parse_names("ANY 1 (n2, n3)") == ("any", 1, ("n2", "n3"))
    assert sync.parse_names("n2") == ("first", 1, ("n2",))


# --- a synchronous standby is released before it restarts (A53) ----------------------------------------


def _restart_memory() -> Memory:
    from services.ha_loop import controls
    from services.ha_loop.decision import RestartRequest

    return controls.request_restart(CONFIGURED, RestartRequest(id="r1"), make_pg())[0]


def test_a_sync_standby_tags_itself_nosync_and_waits_before_restarting_A53() -> None:
    c = cluster(leader="n2", config=SYNC_ON, sync_value={"leader": "n2", "sync_standby": ME})
    first = decide(snap(c, make_pg(), dcs=SYNC_ON), _restart_memory())
    assert "PgRestart" not in kinds(first) and "release us from synchronous standby" in first.detail
    assert of(a.TouchMember, first)[0].data["tags"]["nosync"] is True
    assert first.memory.releasing_until == 1000.0 + 2 * 10 and first.wake_in == 2.0
    released = cluster(leader="n2", config=SYNC_ON, sync_value={"leader": "n2", "sync_standby": None})
    then = decide(snap(released, make_pg(), dcs=SYNC_ON), first.memory)
    assert "PgRestart" in kinds(then) and of(a.TouchMember, then)[0].data["tags"]["nosync"] is True


def test_the_wait_for_release_ends_after_twice_loop_wait_A53() -> None:
    c = cluster(leader="n2", config=SYNC_ON, sync_value={"leader": "n2", "sync_standby": ME})
    waiting = decide(snap(c, make_pg(), dcs=SYNC_ON), _restart_memory()).memory
    late = replace(snap(c, make_pg(), dcs=SYNC_ON), now=1000.0 + 20)
    assert "PgRestart" in kinds(decide(late, waiting))


def test_no_release_wait_outside_sync_mode_or_when_not_listed_A53() -> None:
    listed = {"leader": "n2", "sync_standby": ME}
    off = decide(snap(cluster(leader="n2", sync_value=listed), make_pg()), _restart_memory())
    assert "PgRestart" in kinds(off)
    other = {"leader": "n2", "sync_standby": "n3"}
    unlisted = decide(
        snap(cluster(leader="n2", config=SYNC_ON, sync_value=other), make_pg(), dcs=SYNC_ON), _restart_memory()
    )
    assert "PgRestart" in kinds(unlisted) and "tags" not in of(a.TouchMember, unlisted)[0].data

"""Replication slots against real PostgreSQL 15 (C29-C34; docs/protocol.md "pg.sync_slots", "pg.copy_slots").

A story in file order: slot1 is a primary with wal_level=logical; pg.sync_slots creates the replica's slot, a
permanent physical and a permanent logical slot, drops an undesired slot and keeps an ignored one; slot2 is cloned
and streams through its slot (C30); on slot2 the logical slot is wanted (hot_standby_feedback on, slots_to_copy),
copied with pg.copy_slots and advanced to the primary's confirmed_flush_lsn (C32).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from shared.protocol.errors import ErrorCode
from tests.service.test_postmaster import TIMINGS, Node, started_node, story_dir, wait_state, zmq_context
from tests.support.waiting import wait_until

DCS = {"postgresql": {"parameters": {"max_connections": 40, "wal_level": "logical"}}}
LOGICAL = {"type": "logical", "database": "postgres", "plugin": "test_decoding"}


@pytest.fixture(scope="module")
def ctx() -> Iterator[zmq.Context[Any]]:
    with zmq_context() as context:
        yield context


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with story_dir("haven-pmslots-", "slot") as path:
        yield path


def node_fixture(name: str) -> Any:
    @pytest.fixture(scope="module")
    def fixture(ctx: zmq.Context[Any], base: Path) -> Iterator[Node]:
        with started_node(ctx, base, name, dcs=DCS) as node:
            yield node

    return fixture


slot1 = node_fixture("slot1")
slot2 = node_fixture("slot2")


def slots_of(node: Node) -> dict[str, Any]:
    slots: dict[str, Any] = node.status()["slots"]
    return slots


def test_sync_slots_creates_drops_and_ignores_on_the_primary(slot1: Node) -> None:
    slot1.expect_ok("pg.bootstrap")
    slot1.sql("SELECT pg_create_physical_replication_slot('undesired'), pg_create_physical_replication_slot('keep_me')")
    body = {
        "slots": {"slot2": {"type": "physical"}, "perm_phys": {"type": "physical"}, "perm_logical": LOGICAL},
        "ignore": [{"name": "keep_me", "type": "physical"}],
    }
    reply = slot1.call("pg.sync_slots", body)
    assert sorted(reply["created"]) == ["perm_logical", "perm_phys", "slot2"]
    assert (reply["dropped"], reply["advanced"]) == (["undesired"], [])
    slots = wait_until(lambda: (s := slots_of(slot1)) and "perm_logical" in s and s, 5, what="slots in pg_state")
    assert set(slots) == {"keep_me", "perm_logical", "perm_phys", "slot2"}
    assert slots["perm_logical"]["type"] == "logical" and slots["perm_logical"]["plugin"] == "test_decoding"
    assert slots["perm_logical"]["database"] == "postgres"
    assert isinstance(slots["perm_logical"]["confirmed_flush_lsn"], int)
    assert isinstance(slots["perm_phys"]["restart_lsn"], int), "WAL reserved at once"
    again = slot1.call("pg.sync_slots", body)
    assert again == {"created": [], "dropped": [], "advanced": []}, "idempotent"
    assert slot1.status()["slots_to_copy"] == [], "a primary creates its logical slots"


@pytest.mark.parametrize(
    "body",
    [
        {"slots": {"Bad-Name": {"type": "physical"}}},
        {"slots": {"x": {"type": "logical", "database": "postgres"}}},
        {"slots": {"x": {"type": "other"}}},
        {"slots": {"x": {"type": "physical", "lsn": -1}}},
        {"slots": {}, "ignore": [{"color": "red"}]},
    ],
)
def test_invalid_sync_slots_bodies(slot1: Node, body: dict[str, Any]) -> None:
    slot1.expect_error(ErrorCode.INVALID_BODY, "pg.sync_slots", body)


def test_a_replica_streams_through_its_slot_C30(slot1: Node, slot2: Node) -> None:
    slot2.expect_ok("pg.clone", {"source": slot1.ref()})
    assert "primary_slot_name = 'slot2'" in (slot2.data_dir / "postgresql.conf").read_text()
    wait_state(slot2, "streaming", replication_state="streaming")
    wait_until(lambda: slots_of(slot1)["slot2"]["active"], 10, what="slot2's slot to be active on slot1")
    assert slot1.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'slot2'") == [(True,)]


def test_a_replica_wants_the_logical_slot_with_hot_standby_feedback(slot1: Node, slot2: Node) -> None:
    assert slot2.sql("SHOW hot_standby_feedback") == [("off",)]
    lsn = slot1.status()["xlog"]["location"]
    body = {"slots": {"perm_phys": {"type": "physical", "lsn": lsn}, "perm_logical": LOGICAL}, "source": slot1.ref()}
    reply = slot2.call("pg.sync_slots", body)
    assert reply["created"] == ["perm_phys"] and reply["dropped"] == []
    state = wait_until(lambda: (s := slot2.status())["slots"] and s, 5, what="perm_phys in slot2's pg_state")
    assert set(state["slots"]) == {"perm_phys"} and state["slots_to_copy"] == ["perm_logical"]
    assert slot2.sql("SHOW hot_standby_feedback") == [("on",)], "C32: injected on a replica with logical slots"


def test_copy_slots_brings_the_logical_slot_to_the_replica_C32(slot1: Node, slot2: Node) -> None:
    # a consumer moves the slot on the primary past the WAL slot2 was cloned from (slot2 has no older WAL)
    slot1.sql("CHECKPOINT; CREATE TABLE moves (x int)")
    slot1.sql("SELECT count(*) FROM pg_logical_slot_get_changes('perm_logical', NULL, NULL)")
    started = slot2.status()["postmaster_start_time"]
    state = slot2.expect_ok("pg.copy_slots", {"source": slot1.ref(), "names": ["perm_logical", "unknown"]})
    TIMINGS["slot2 pg.copy_slots (copy and restart)"] = state["operation"]["finished"] - state["operation"]["started"]
    assert state["operation"]["result"] == {"copied": ["perm_logical"], "skipped": ["unknown"]}
    assert state["postmaster_start_time"] != started and state["role"] == "replica"
    state = wait_state(slot2, "streaming again", replication_state="streaming", slots_to_copy=[])
    assert state["slots"]["perm_logical"]["plugin"] == "test_decoding"
    mode = (slot2.data_dir / "pg_replslot" / "perm_logical" / "state").stat().st_mode & 0o777
    assert mode == 0o600
    again = slot2.expect_ok("pg.copy_slots", {"source": slot1.ref(), "names": ["perm_logical"]})
    assert again["operation"]["result"] == {"copied": [], "skipped": ["perm_logical"]}, "already there: no restart"


def test_slots_advance_on_the_replica_to_the_primary_positions_C32(slot1: Node, slot2: Node) -> None:
    slot1.sql("INSERT INTO moves SELECT generate_series(1, 100)")
    slot1.sql("SELECT count(*) FROM pg_logical_slot_get_changes('perm_logical', NULL, NULL)")
    target = slot1.sql("SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = 'perm_logical'")
    confirmed = int(target[0][0])
    primary_lsn = int(slot1.sql("SELECT pg_current_wal_lsn() - '0/0'")[0][0])
    wait_until(
        lambda: slot2.status()["xlog"]["replayed_location"] >= max(confirmed, primary_lsn), 10, what="replay on slot2"
    )
    body = {
        "slots": {"perm_phys": {"type": "physical", "lsn": primary_lsn}, "perm_logical": {**LOGICAL, "lsn": confirmed}}
    }
    reply = slot2.call("pg.sync_slots", body)
    assert sorted(reply["advanced"]) == ["perm_logical", "perm_phys"], slot2.log_tail()

    def advanced() -> bool:
        slots = slots_of(slot2)
        return bool(
            slots["perm_logical"]["confirmed_flush_lsn"] == confirmed
            and slots["perm_phys"]["restart_lsn"] == primary_lsn
        )

    wait_until(advanced, 10, what="both slots advanced on slot2")
    older = {"slots": {"perm_phys": {"type": "physical", "lsn": 1}, "perm_logical": {**LOGICAL, "lsn": 1}}}
    assert slot2.call("pg.sync_slots", older)["advanced"] == [], "never backwards"


def test_slots_are_applied_again_after_a_restart_C29(slot1: Node) -> None:
    slot1.expect_ok("pg.stop", {"mode": "fast"})
    body = {"slots": {"slot2": {"type": "physical"}, "later": {"type": "physical"}}, "ignore": [{"name": "keep_me"}]}
    reply = slot1.call("pg.sync_slots", body)
    assert reply == {"created": [], "dropped": [], "advanced": [], "deferred": True}
    slot1.expect_ok("pg.start", {"role": "primary"})
    wait_until(lambda: "later" in slots_of(slot1), 10, what="the desired slots applied after the start")
    assert set(slots_of(slot1)) == {"keep_me", "later", "slot2"}, "the permanent ones are no longer desired"

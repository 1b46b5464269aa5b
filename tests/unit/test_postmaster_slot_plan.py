"""Planning the replication slots of a node (C29-C34): what to create, drop, advance and copy (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from services.postmaster.core import Memory, SqlStatus, slots_to_copy
from services.postmaster.slotplan import (
    DesiredSlots,
    LocalSlot,
    WantedSlot,
    is_ignored,
    parse_sync_slots,
    plan_slots,
)

LOGICAL = WantedSlot("logical", "app", "pgoutput")


def physical(name: str, restart_lsn: int | None = 100, **kwargs: Any) -> LocalSlot:
    return LocalSlot(name=name, type="physical", restart_lsn=restart_lsn, **kwargs)


def logical(name: str, confirmed: int | None = 100, **kwargs: Any) -> LocalSlot:
    values: dict[str, Any] = {
        "database": "app",
        "plugin": "pgoutput",
        "restart_lsn": 50,
        "confirmed_flush_lsn": confirmed,
    }
    values.update(kwargs)
    return LocalSlot(name=name, type="logical", **values)


def desired(ignore: tuple[dict[str, str], ...] = (), **slots: WantedSlot) -> DesiredSlots:
    return DesiredSlots(slots=slots, ignore=ignore)


def by_name(*slots: LocalSlot) -> dict[str, LocalSlot]:
    return {s.name: s for s in slots}


def test_a_primary_creates_missing_slots_and_drops_undesired_ones() -> None:
    plan = plan_slots(
        desired(n2=WantedSlot("physical"), perm=LOGICAL),
        by_name(physical("n2"), physical("old"), logical("gone")),
        in_recovery=False,
    )
    assert (plan.create_physical, plan.create_logical, plan.drop) == (
        (),
        (("perm", "app", "pgoutput"),),
        ("gone", "old"),
    )
    assert plan.to_copy == () and plan.advance_physical == () and plan.advance_logical == ()


def test_active_temporary_and_ignored_slots_are_never_dropped_C29_C33() -> None:
    existing = by_name(
        physical("busy", active=True),
        physical("pg_basebackup_1", temporary=True),
        logical("cdc"),
        physical("manual"),
        physical("other"),
    )
    ignore = ({"type": "logical", "database": "app"}, {"name": "manual"})
    assert plan_slots(desired(ignore), existing, in_recovery=False).drop == ("other",)


@pytest.mark.parametrize(
    ("matcher", "ignored"),
    [
        ({"name": "cdc"}, True),
        ({"name": "cdc", "type": "physical"}, False),
        ({"plugin": "pgoutput"}, True),
        ({"database": "other"}, False),
        ({"type": "logical", "database": "app", "plugin": "pgoutput", "name": "cdc"}, True),
    ],
)
def test_ignore_matchers_match_every_key_they_have(matcher: dict[str, str], ignored: bool) -> None:
    assert is_ignored(logical("cdc"), [matcher]) is ignored


def test_a_slot_of_the_wrong_kind_is_replaced_unless_it_must_stay() -> None:
    wanted = desired(perm=LOGICAL, phys=WantedSlot("physical"))
    existing = by_name(logical("perm", plugin="test_decoding"), logical("phys"))
    plan = plan_slots(wanted, existing, in_recovery=False)
    assert plan.drop == ("perm", "phys") and plan.create_physical == ("phys",)
    assert plan.create_logical == (("perm", "app", "pgoutput"),)
    busy = by_name(logical("perm", plugin="test_decoding", active=True))
    assert plan_slots(wanted, busy, in_recovery=False).create_logical == (), "an active slot of that name stays"


def test_a_replica_creates_and_advances_physical_slots_forwards_only() -> None:
    wanted = desired(
        new=WantedSlot("physical", lsn=500),
        behind=WantedSlot("physical", lsn=500),
        ahead=WantedSlot("physical", lsn=500),
        unreserved=WantedSlot("physical", lsn=500),
        plain=WantedSlot("physical"),
    )
    existing = by_name(physical("behind", 100), physical("ahead", 900), physical("unreserved", None), physical("plain"))
    plan = plan_slots(wanted, existing, in_recovery=True)
    assert plan.create_physical == ("new",)
    assert plan.advance_physical == (("behind", 500), ("new", 500))


def test_a_replica_copies_missing_logical_slots_and_advances_copied_ones_C32() -> None:
    wanted = desired(missing=LOGICAL, behind=WantedSlot("logical", "app", "pgoutput", 500), ahead=LOGICAL)
    existing = by_name(logical("behind", 100), logical("ahead", 900))
    plan = plan_slots(wanted, existing, in_recovery=True)
    assert plan.to_copy == ("missing",) and plan.create_logical == ()
    assert plan.advance_logical == (("behind", "app", 500),)
    assert plan_slots(wanted, existing, in_recovery=False).advance_logical == (), "a primary's slots move by use"


def test_a_member_never_holds_the_slot_named_after_itself_C31() -> None:
    plan = plan_slots(
        desired(n1=WantedSlot("physical"), n2=WantedSlot("physical")), {}, in_recovery=False, own_slot="n1"
    )
    assert plan.create_physical == ("n2",)


def test_nothing_is_dropped_from_an_empty_desired_set_of_an_active_cluster() -> None:
    assert plan_slots(desired(), by_name(physical("n2", active=True)), in_recovery=False).drop == ()


@pytest.mark.parametrize(
    "body",
    [
        {"slots": []},
        {"slots": {"Upper": {"type": "physical"}}},
        {"slots": {"x" * 64: {"type": "physical"}}},
        {"slots": {"x": {"type": "logical", "plugin": "p"}}},
        {"slots": {"x": {"type": "physical", "lsn": "0/1"}}},
        {"slots": {"x": "physical"}},
        {"slots": {}, "ignore": {"name": "x"}},
        {"slots": {}, "ignore": [{}]},
        {"slots": {}, "ignore": [{"name": 1}]},
    ],
)
def test_bad_sync_slots_bodies_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_sync_slots(body)


def test_desired_slots_round_trip_through_json() -> None:
    body = {
        "slots": {"a": {"type": "physical", "lsn": 5}, "b": {"type": "logical", "database": "d", "plugin": "p"}},
        "ignore": [{"name": "x"}],
        "source": {"name": "n1", "conn_url": "postgres://h:1/postgres"},
    }
    parsed = parse_sync_slots(body)
    assert DesiredSlots.from_json(parsed.as_json()) == parsed and parsed.logical_names == ("b",)
    assert parse_sync_slots({"slots": {"a": {"type": "physical", "database": "d"}}}).slots["a"].database is None


def test_slots_to_copy_are_the_wanted_logical_slots_a_running_replica_lacks_or_must_copy_again() -> None:
    replica = SqlStatus(in_recovery=True, postmaster_start_time="t", server_version=150000, slots={"have": {}})
    assert slots_to_copy(replica, ("have", "missing")) == ["missing"]
    assert slots_to_copy(replica, ("have", "missing"), ("have",)) == ["have", "missing"]
    primary = SqlStatus(in_recovery=False, postmaster_start_time="t", server_version=150000)
    assert slots_to_copy(primary, ("missing",)) == [] and slots_to_copy(None, ("missing",)) == []
    assert Memory().wanted_logical == ()

"""The replicated KV state machine (shared/dcs/kv.py): the apply functions, without any networking."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from shared.dcs import kv
from shared.dcs.kv import KVState, Record

T0 = 1_700_000_000.0


@pytest.fixture
def state() -> KVState:
    return KVState()


def test_create_if_absent_has_exactly_one_winner(state: KVState) -> None:
    assert state.put("/s/c/leader", "a", 30, T0, kv.ABSENT) == 1
    assert state.put("/s/c/leader", "b", 30, T0, kv.ABSENT) is None
    record = state.get("/s/c/leader")
    assert record is not None and record.value == "a"


def test_versions_come_from_one_revision_that_only_grows_on_changes(state: KVState) -> None:
    assert state.put("/a", "1", None, T0) == 1
    assert state.put("/b", "1", None, T0) == 2
    assert state.put("/a", "x", None, T0, kv.if_version(99)) is None  # a failed compare changes nothing
    assert state.revision == 2
    assert state.put("/a", "2", None, T0) == 3
    assert state.remove("/b")
    assert state.revision == 4


def test_compare_and_set_on_value(state: KVState) -> None:
    state.put("/leader", "pg1", 30, T0)
    assert state.put("/leader", "pg1", 30, T0 + 10, kv.if_value("pg2")) is None
    assert state.put("/leader", "pg1", 30, T0 + 10, kv.if_value("pg1")) == 2
    assert state.put("/missing", "pg1", 30, T0, kv.if_value("pg1")) is None


def test_compare_and_set_on_version(state: KVState) -> None:
    v1 = state.put("/config", "{}", None, T0)
    assert v1 is not None
    v2 = state.put("/config", '{"ttl":30}', None, T0, kv.if_version(v1))
    assert v2 is not None and v2 > v1
    assert state.put("/config", "{}", None, T0, kv.if_version(v1)) is None  # stale version
    assert state.put("/nokey", "{}", None, T0, kv.if_version(1)) is None


def test_compare_and_delete(state: KVState) -> None:
    state.put("/leader", "pg1", 30, T0)
    assert not state.remove("/leader", kv.if_value("pg2"))
    assert state.remove("/leader", kv.if_value("pg1"))
    assert not state.remove("/leader")


def test_ttl_sets_an_absolute_expire_time_from_the_proposers_clock(state: KVState) -> None:
    state.put("/leader", "pg1", 30, T0)
    record = state.get("/leader")
    assert record is not None and record.expire == T0 + 30 and record.created == T0
    state.put("/leader", "pg1", 30, T0 + 10, kv.if_value("pg1"))
    record = state.get("/leader")
    assert record is not None and record.expire == T0 + 40 and record.created == T0 and record.updated == T0 + 10
    assert record.ttl_left(T0 + 35) == 5
    state.put("/leader", "pg1", None, T0 + 11)
    record = state.get("/leader")
    assert record is not None and record.expire is None and record.ttl_left(T0 + 99) is None


def test_expired_lists_only_keys_whose_time_has_passed(state: KVState) -> None:
    state.put("/a", "1", 10, T0)
    state.put("/b", "1", 20, T0)
    state.put("/c", "1", None, T0)
    assert state.expired(T0 + 9.9) == []
    assert state.expired(T0 + 10) == [("/a", 1)]
    assert sorted(state.expired(T0 + 100)) == [("/a", 1), ("/b", 2)]


def test_expire_rechecks_the_version_so_a_racing_refresh_wins(state: KVState) -> None:
    state.put("/leader", "pg1", 10, T0)
    [(key, version)] = state.expired(T0 + 10.1)  # the leader decides to expire version 1...
    state.put("/leader", "pg1", 10, T0 + 10.05, kv.if_value("pg1"))  # ...but a refresh commits first
    assert not state.expire(key, version)
    assert state.get("/leader") is not None
    [(key, version)] = state.expired(T0 + 21)
    assert state.expire(key, version)
    assert state.get("/leader") is None


def test_remove_prefix_leaves_other_clusters_alone(state: KVState) -> None:
    state.put("/service/a/leader", "x", None, T0)
    state.put("/service/a/members/x", "{}", None, T0)
    state.put("/service/ab/leader", "y", None, T0)
    assert state.remove_prefix("/service/a/") == 2
    assert list(state.items("/service/")[0]) == ["/service/ab/leader"]
    assert state.remove_prefix("/service/a/") == 0


def test_unknown_condition_never_matches(state: KVState) -> None:
    assert state.put("/a", "1", None, T0, ("newer-kind", 1)) is None
    assert not kv.matches(Record("1", 1, T0, T0), ("newer-kind", 1))


def test_changes_are_reported_with_their_keys() -> None:
    seen: list[list[str]] = []

    def on_change(keys: Sequence[str]) -> None:
        seen.append(list(keys))

    state = KVState(on_change)
    state.put("/a", "1", None, T0)
    state.put("/a", "1", None, T0, kv.ABSENT)  # failed: no report
    state.remove("/a")
    state.put("/p/x", "1", None, T0)
    state.put("/p/y", "1", None, T0)
    state.remove_prefix("/p/")
    assert seen == [["/a"], ["/a"], ["/p/x"], ["/p/y"], ["/p/x", "/p/y"]]


def test_dump_and_restore_round_trip_with_plain_data(state: KVState) -> None:
    state.put("/a", "1", 10, T0)
    state.put("/b", "2", None, T0)
    state.remove("/b")
    dump = state.dump()
    assert dump == {
        "revision": 3,
        "keys": {"/a": {"value": "1", "version": 1, "created": T0, "updated": T0, "expire": T0 + 10}},
    }
    restored = KVState()
    restored.restore(dump)
    assert restored.items() == state.items()
    assert restored.put("/c", "3", None, T0) == 4  # versions continue after the restored revision


def test_items_is_a_consistent_copy(state: KVState) -> None:
    state.put("/s/c/leader", "pg1", None, T0)
    items, revision = state.items("/s/c/")
    state.put("/s/c/leader", "pg2", None, T0)
    assert items["/s/c/leader"].value == "pg1" and revision == 1

"""The divergence decision before pg_rewind (C22, C26, C28): local position, history, checkpoint end (pure)."""

from __future__ import annotations

import pytest

from services.postmaster.core import parse_history_file
from services.postmaster.divergence import (
    LocalPosition,
    Verdict,
    assess,
    can_rewind,
    checkpoint_end_from_waldump,
    diverged_at_checkpoint_end,
    format_lsn,
    history_excerpt,
    local_position,
    needs_crash_recovery,
)

HISTORY = parse_history_file("1\t0/3000000\tno recovery target specified\n2\t0/50000A0\tno recovery target specified\n")


def controldata(state: str, **extra: str) -> dict[str, str]:
    return {
        "Database cluster state": state,
        "Latest checkpoint location": "0/4000028",
        "Latest checkpoint's TimeLineID": "2",
        "Minimum recovery ending location": "0/3000100",
        "Min recovery ending loc's timeline": "1",
        **extra,
    }


@pytest.mark.parametrize(
    ("state", "position"),
    [
        ("shut down", LocalPosition(2, 0x4000028, in_recovery=False)),
        ("shut down in recovery", LocalPosition(1, 0x3000100, in_recovery=True)),
        ("in archive recovery", LocalPosition(1, 0x3000100, in_recovery=True)),
        ("in production", None),
        ("in crash recovery", None),
    ],
)
def test_the_local_position_comes_from_pg_controldata(state: str, position: LocalPosition | None) -> None:
    assert local_position(controldata(state)) == position


def test_a_replica_without_minimum_recovery_point_was_a_primary() -> None:
    data = controldata("shut down in recovery", **{"Minimum recovery ending location": "0/0"})
    assert local_position(data) == LocalPosition(2, 0x4000028, in_recovery=False)


def test_only_an_unclean_primary_needs_crash_recovery_first() -> None:
    assert needs_crash_recovery(controldata("in production"))
    assert needs_crash_recovery(controldata("in crash recovery"))
    assert not needs_crash_recovery(controldata("in archive recovery")) and not needs_crash_recovery({})


@pytest.mark.parametrize(
    ("local", "leader_timeline", "verdict", "switchpoint"),
    [
        (LocalPosition(3, 0x6000000, True), 3, Verdict.SAME, None),
        (LocalPosition(4, 0x1000, True), 3, Verdict.DIVERGED, None),
        # a replica on timeline 1: fine up to the switchpoint, diverged past it
        (LocalPosition(1, 0x3000000, True), 3, Verdict.SAME, 0x3000000),
        (LocalPosition(1, 0x2000000, True), 3, Verdict.SAME, 0x3000000),
        (LocalPosition(1, 0x3000001, True), 3, Verdict.DIVERGED, 0x3000000),
        (LocalPosition(2, 0x50000A8, True), 3, Verdict.DIVERGED, 0x50000A0),
        # a former primary: its shutdown checkpoint starts past the switchpoint, or its end decides
        (LocalPosition(2, 0x50000A0, False), 3, Verdict.DIVERGED, 0x50000A0),
        (LocalPosition(2, 0x5000028, False), 3, Verdict.CHECK_END, 0x50000A0),
    ],
)
def test_divergence_from_the_leaders_history(
    local: LocalPosition, leader_timeline: int, verdict: Verdict, switchpoint: int | None
) -> None:
    assert assess(local, leader_timeline, HISTORY) == (verdict, switchpoint)


def test_a_local_timeline_missing_from_the_history_diverged() -> None:
    skipped = ((1, 0x3000000, ""), (3, 0x5000000, ""))  # the leader's timeline 4 came from 3, from 1: never 2
    assert assess(LocalPosition(2, 0x3000010, True), 4, skipped) == (Verdict.DIVERGED, 0x5000000)
    assert assess(LocalPosition(2, 0x3000010, True), 3, ((1, 0x3000000, ""),)) == (Verdict.DIVERGED, None)


def test_a_former_primary_did_not_diverge_when_its_checkpoint_ends_at_the_switchpoint() -> None:
    assert not diverged_at_checkpoint_end(0x50000A0, 0x50000A0)
    assert diverged_at_checkpoint_end(0x5000100, 0x50000A0)
    assert diverged_at_checkpoint_end(None, 0x50000A0), "unknown end: rewind rather than risk it"


def test_the_checkpoint_end_is_read_from_pg_waldumps_error() -> None:
    output = (
        "rmgr: XLOG        len (rec/tot):    114/   114, tx:          0, lsn: 0/03000340, prev 0/03000308, "
        "desc: CHECKPOINT_SHUTDOWN redo 0/3000340; tli 3; prev tli 3; fpw true\n"
        "pg_waldump: error: error in WAL record at 0/3000340: invalid record length at 0/30003B8: "
        "wanted 24, got 0\n"
    )
    assert checkpoint_end_from_waldump(output, 0x3000340) == 0x30003B8
    assert checkpoint_end_from_waldump(output, 0x3000028) is None, "an error about another record"
    assert checkpoint_end_from_waldump("pg_waldump: error: could not find file", 0x3000340) is None


def test_rewind_needs_wal_log_hints_or_checksums_C26() -> None:
    assert can_rewind({"wal_log_hints setting": "on", "Data page checksum version": "0"})
    assert can_rewind({"wal_log_hints setting": "off", "Data page checksum version": "1"})
    assert not can_rewind({"wal_log_hints setting": "off", "Data page checksum version": "0"})


def test_lsn_formatting_and_the_logged_history_excerpt_C28() -> None:
    assert format_lsn(0x1_0000_00A0) == "1/A0" and format_lsn(0) == "0/0"
    history = tuple((t, t * 0x1000, "") for t in range(1, 11))
    assert [line[0] for line in history_excerpt(history, 6)] == [3, 4, 5, 6, 7, 8]
    assert [line[0] for line in history_excerpt(history, 1)] == [1, 2, 3]

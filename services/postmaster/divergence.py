"""Did the local data diverge from the leader's timeline (C22)? Pure: the caller reads pg_controldata, the
leader's IDENTIFY_SYSTEM and TIMELINE_HISTORY, and pg_waldump's output.

The local position of a stopped instance, from pg_controldata: a replica's minimum recovery point (and its
timeline); a cleanly shut-down primary's last checkpoint (the shutdown checkpoint, the last record it wrote).
Diverged: the local timeline is ahead of the leader's, or missing from the leader's history, or the local position
is past the point where the leader's history switched away from the local timeline. A former primary whose shutdown
checkpoint starts before the switchpoint diverged unless that record ends exactly at the switchpoint (the new
primary received everything, up to and including it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from services.postmaster.core import parse_lsn
from shared.model.member import parse_int

UNCLEAN_PRIMARY_STATES = frozenset({"in production", "in crash recovery", "shutting down"})
_RECOVERY_STATES = frozenset({"shut down in recovery", "in archive recovery"})


@dataclass(frozen=True)
class LocalPosition:
    timeline: int
    lsn: int
    in_recovery: bool  # a replica's replay position (else: a former primary's shutdown checkpoint)


def needs_crash_recovery(controldata: Mapping[str, str]) -> bool:
    """The instance stopped uncleanly while it was a primary: pg_rewind needs a clean shutdown first."""
    return controldata.get("Database cluster state") in UNCLEAN_PRIMARY_STATES


def local_position(controldata: Mapping[str, str]) -> LocalPosition | None:
    """None when pg_controldata does not tell (an unclean primary: run crash recovery first)."""
    state = controldata.get("Database cluster state")
    if state in _RECOVERY_STATES:
        lsn = parse_lsn(controldata.get("Minimum recovery ending location"))
        timeline = parse_int(controldata.get("Min recovery ending loc's timeline"))
        if lsn and timeline:
            return LocalPosition(timeline, lsn, in_recovery=True)
        state = "shut down"  # no minimum recovery point: it was a primary when it stopped
    if state == "shut down":
        lsn = parse_lsn(controldata.get("Latest checkpoint location"))
        timeline = parse_int(controldata.get("Latest checkpoint's TimeLineID"))
        if lsn is not None and timeline:
            return LocalPosition(timeline, lsn, in_recovery=False)
    return None


def can_rewind(controldata: Mapping[str, str]) -> bool:
    """C26: pg_rewind needs wal_log_hints or data checksums in the target."""
    return (
        controldata.get("wal_log_hints setting") == "on"
        or (parse_int(controldata.get("Data page checksum version")) or 0) != 0
    )


class Verdict(StrEnum):
    SAME = "same"  # not diverged
    DIVERGED = "diverged"
    CHECK_END = "check checkpoint end"  # compare the end of the local shutdown checkpoint with the switchpoint


def assess(
    local: LocalPosition, leader_timeline: int, history: Sequence[tuple[int, int, str]]
) -> tuple[Verdict, int | None]:
    """The verdict and the switchpoint that decided it (None when no history line did).
    history: the leader's timeline history, one (parent timeline, switchpoint, reason) per earlier timeline."""
    if local.timeline == leader_timeline:
        return Verdict.SAME, None
    if local.timeline > leader_timeline:
        return Verdict.DIVERGED, None
    for parent, switchpoint, _ in history:
        if parent == local.timeline:
            if local.in_recovery:
                return (Verdict.DIVERGED if local.lsn > switchpoint else Verdict.SAME), switchpoint
            if local.lsn >= switchpoint:
                return Verdict.DIVERGED, switchpoint
            return Verdict.CHECK_END, switchpoint
        if parent > local.timeline:  # the leader's history skips the local timeline
            return Verdict.DIVERGED, switchpoint
    return Verdict.DIVERGED, None


def diverged_at_checkpoint_end(checkpoint_end: int | None, switchpoint: int) -> bool:
    """A former primary did not diverge when its shutdown checkpoint ends exactly at the switchpoint; an unknown
    end counts as diverged (a needless rewind is safer than a missed one)."""
    return checkpoint_end != switchpoint


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


_WALDUMP_END = re.compile(
    r"error in WAL record at ([0-9A-F]+/[0-9A-F]+): invalid record length at ([0-9A-F]+/[0-9A-F]+)"
)


def checkpoint_end_from_waldump(output: str, checkpoint_lsn: int) -> int | None:
    """pg_waldump -s <checkpoint> -n 2 reads the checkpoint record, then fails on the next one, which does not
    exist after a shutdown checkpoint: 'error in WAL record at <checkpoint>: invalid record length at <end>'.
    The end of the checkpoint record is that <end>."""
    for match in _WALDUMP_END.finditer(output):
        if parse_lsn(match.group(1)) == checkpoint_lsn:
            return parse_lsn(match.group(2))
    return None


def history_excerpt(history: Sequence[tuple[int, int, str]], timeline: int) -> list[tuple[int, int, str]]:
    """C28: the lines around the local timeline, 3 before and 2 after, for the log."""
    index = next((i for i, line in enumerate(history) if line[0] >= timeline), len(history))
    return list(history[max(0, index - 3) : index + 3])

"""C24: what follows a failed pg_rewind (services/postmaster/rewind.py), with the programs replaced: pg_rewind
fails, pg_controldata reads a sound pg_control before it and what each case needs after it, and the leader
answers or not."""

from __future__ import annotations

from typing import Any

import pytest

from services.postmaster import pg
from services.postmaster.render import Upstream
from services.postmaster.rewind import Outcome, Rewind
from tests.unit.test_postmaster_render import make_settings

LEADER = Upstream("n2", "postgres://127.0.0.1:5433/postgres", "127.0.0.1", 5433)
SOUND = {"Database cluster state": "shut down in recovery", "wal_log_hints setting": "on"}


class FailingRewind(Rewind):
    def __init__(self, leader_answers: bool, **flags: Any) -> None:
        super().__init__(make_settings({"use_pg_rewind": True, **flags}), {})
        self.leader_answers = leader_answers
        self.removed: list[str] = []

    def rewind(self, leader: Upstream) -> bool:
        return False

    def leader_promoted(self, leader: Upstream) -> bool:
        return self.leader_answers

    def remove(self, why: str) -> None:
        self.removed.append(why)


@pytest.mark.parametrize(
    ("after", "leader_answers", "flags", "outcome", "removed"),
    [
        (SOUND, False, {}, Outcome.UNKNOWN, []),  # the leader went away: try again later
        (SOUND, False, {"remove_data_directory_on_rewind_failure": True}, Outcome.UNKNOWN, []),
        (SOUND, True, {}, Outcome.FAILED, []),  # failed against a healthy leader
        (SOUND, True, {"remove_data_directory_on_rewind_failure": True}, Outcome.REMOVED, ["rewind_failure"]),
        (SOUND, True, {"remove_data_directory_on_diverged_timelines": True}, Outcome.REMOVED, ["diverged"]),
        ({}, False, {}, Outcome.FAILED, []),  # pg_control unreadable: not worth waiting for the leader
        ({}, False, {"remove_data_directory_on_diverged_timelines": True}, Outcome.REMOVED, ["diverged"]),
    ],
)
def test_after_a_failed_rewind_C24(
    monkeypatch: pytest.MonkeyPatch,
    after: dict[str, str],
    leader_answers: bool,
    flags: dict[str, bool],
    outcome: Outcome,
    removed: list[str],
) -> None:
    readings = iter([SOUND, after])  # before pg_rewind ran, and after it failed
    monkeypatch.setattr(pg, "controldata", lambda settings: dict(next(readings)))
    rewind = FailingRewind(leader_answers, **flags)
    assert rewind.resolve_running_divergence(LEADER) == outcome
    assert [next(w for w in ("rewind_failure", "diverged") if w in why) for why in rewind.removed] == removed

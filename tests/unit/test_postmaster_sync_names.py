"""synchronous_standby_names rendering (C74, C76) and the parameters haven manages at run time (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from services.postmaster import render
from services.postmaster.managed import Managed, parameter_overrides
from services.postmaster.slotplan import DesiredSlots, WantedSlot
from services.postmaster.standby_names import SyncSetting, parse_set_sync, quote_name, render_standby_names


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("node1", "node1"),
        ("Node_1", "Node_1"),
        ("_x$y", "_x$y"),
        ("node-1", '"node-1"'),
        ("1node", '"1node"'),
        ("a b", '"a b"'),
        ('q"t', '"q""t"'),
        ("$x", '"$x"'),
    ],
)
def test_names_are_quoted_only_when_they_are_not_plain_identifiers(name: str, quoted: str) -> None:
    assert quote_name(name) == quoted


@pytest.mark.parametrize(
    ("mode", "num", "names", "strict", "value"),
    [
        ("off", 0, [], False, None),
        ("off", 0, [], True, "*"),
        ("off", 1, ["a"], False, None),
        ("on", 0, [], False, None),
        ("on", 0, [], True, "*"),
        ("on", 1, ["a"], False, "a"),
        ("on", 1, ["node-1"], True, '"node-1"'),
        ("on", 2, ["a", "b-c"], False, '2 (a,"b-c")'),
        ("on", 1, ["b", "a"], False, "1 (b,a)"),
        ("quorum", 1, ["a"], False, "ANY 1 (a)"),
        ("quorum", 2, ["a", "b", "c"], True, "ANY 2 (a,b,c)"),
    ],
)
def test_standby_names_per_mode(mode: str, num: int, names: list[str], strict: bool, value: str | None) -> None:
    assert render_standby_names(mode, num, names, strict) == value


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"mode": "first", "num": 1, "names": ["a"]}, "mode"),
        ({"mode": "on", "num": 2, "names": ["a"]}, "num"),
        ({"mode": "quorum", "num": 0, "names": ["a"]}, "num"),
        ({"mode": "on", "num": True, "names": ["a"]}, "num"),
        ({"mode": "on", "num": 1, "names": ["a", "A"]}, "repeat"),
        ({"mode": "on", "num": 1, "names": [""]}, "names"),
        ({"mode": "on", "num": 1, "names": ["a"], "strict": "yes"}, "strict"),
    ],
)
def test_set_sync_bodies_are_checked(body: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_set_sync(body)


def test_a_sync_setting_round_trips_through_json() -> None:
    sync = parse_set_sync({"mode": "on", "num": 1, "names": ["a", "b"], "strict": True})
    assert SyncSetting.from_json(sync.as_json()) == sync and sync.value == "1 (a,b)"
    assert parse_set_sync({"mode": "off", "num": 3, "names": ["a"]}).names == ()
    assert SyncSetting.from_json({"mode": "bogus"}) is None and SyncSetting.from_json(None) is None


ON = SyncSetting("on", 1, ("n2",), False)
OFF = SyncSetting("off", 0, (), False)
OFF_STRICT = SyncSetting("off", 0, (), True)
LOGICAL = DesiredSlots(slots={"l": WantedSlot("logical", "db", "pgoutput")})
PHYSICAL = DesiredSlots(slots={"p": WantedSlot("physical")})
SYNC_ON = {"synchronous_mode": True}
STRICT = {"synchronous_mode": True, "synchronous_mode_strict": True}


@pytest.mark.parametrize(
    ("managed", "dynamic", "primary", "expected"),
    [
        (Managed(), {}, True, {}),
        (Managed(sync=ON), {}, True, {"synchronous_standby_names": "n2"}),
        (Managed(sync=ON), {}, False, {"synchronous_standby_names": "n2"}),
        (Managed(sync=OFF), {}, True, {}),
        (Managed(sync=OFF), SYNC_ON, True, {"synchronous_standby_names": None}),
        (Managed(sync=OFF_STRICT), {}, True, {"synchronous_standby_names": "*"}),
        (Managed(), SYNC_ON, True, {"synchronous_standby_names": None}),
        (Managed(), {"synchronous_mode": "quorum"}, True, {"synchronous_standby_names": None}),
        (Managed(), STRICT, True, {"synchronous_standby_names": "*"}),
        (Managed(), STRICT, False, {"synchronous_standby_names": None}),
        (Managed(slots=LOGICAL), {}, False, {"hot_standby_feedback": "on"}),
        (Managed(slots=LOGICAL), {}, True, {}),
        (Managed(slots=PHYSICAL), {}, False, {}),
    ],
)
def test_managed_parameters(managed: Managed, dynamic: dict[str, Any], primary: bool, expected: dict[str, Any]) -> None:
    assert parameter_overrides(managed, dynamic, primary=primary) == expected


def test_managed_values_replace_configured_ones_whatever_their_spelling() -> None:
    params = {"Synchronous_Standby_Names": "x", "hot_standby_feedback": "off", "work_mem": "4MB"}
    assert render.apply_overrides(params, {"synchronous_standby_names": "n2", "hot_standby_feedback": "on"}) == {
        "work_mem": "4MB",
        "synchronous_standby_names": "n2",
        "hot_standby_feedback": "on",
    }
    assert render.apply_overrides(params, {"synchronous_standby_names": None}) == {
        "hot_standby_feedback": "off",
        "work_mem": "4MB",
    }, "None removes the configured value"

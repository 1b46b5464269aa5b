"""edit-config's pure parts (E8): -s/-p paths, --apply/--replace merges, the diff patronictl shows (its documented
examples, byte for byte), the pager, and the PATCH /config body that turns one configuration into another."""

from __future__ import annotations

from typing import Any

import pytest

from ctl.config import CtlError
from ctl.config_edit import (
    apply_pairs,
    apply_yaml,
    config_delta,
    diff_lines,
    pager_command,
    patch_config,
    patch_reaches,
    pg_pairs,
)
from ctl.render import yaml_text

# patroni-docs.txt's edit-config examples start from this configuration (postgres0.yml's bootstrap.dcs).
DOCS_CONFIG: dict[str, Any] = {
    "loop_wait": 10,
    "maximum_lag_on_failover": 1048576,
    "postgresql": {
        "pg_hba": ["host replication replicator 127.0.0.1/32 md5", "host all all 0.0.0.0/0 md5"],
        "use_pg_rewind": True,
    },
    "retry_timeout": 10,
    "ttl": 30,
}


def test_set_takes_a_dotted_path_and_a_yaml_value() -> None:
    changed = apply_pairs(DOCS_CONFIG, ["loop_wait=15", "postgresql.use_slots=true", "synchronous_node_count= 2"])
    assert changed["loop_wait"] == 15
    assert changed["postgresql"]["use_slots"] is True
    assert changed["synchronous_node_count"] == 2
    assert DOCS_CONFIG["loop_wait"] == 10  # the input is left alone


def test_set_null_removes_the_key_and_empty_parents() -> None:
    assert "maximum_lag_on_failover" not in apply_pairs(DOCS_CONFIG, ["maximum_lag_on_failover=null"])
    with_param = apply_pairs(DOCS_CONFIG, ["postgresql.parameters.work_mem=4MB"])
    assert with_param["postgresql"]["parameters"] == {"work_mem": "4MB"}
    assert "parameters" not in apply_pairs(with_param, ["postgresql.parameters.work_mem=null"])["postgresql"]
    assert apply_pairs({}, ["a.b.c=null"]) == {}


def test_pg_is_a_shorthand_and_keeps_dotted_guc_names_whole() -> None:
    pairs = pg_pairs((" max_connections=150", "auto_explain.log_min_duration=10s"))
    assert pairs == [
        "postgresql.parameters.max_connections=150",
        "postgresql.parameters.auto_explain.log_min_duration=10s",
    ]
    changed = apply_pairs(DOCS_CONFIG, pairs)
    assert changed["postgresql"]["parameters"] == {"max_connections": 150, "auto_explain.log_min_duration": "10s"}


@pytest.mark.parametrize("pair", ["loop_wait", "", "x=[unclosed"])
def test_invalid_settings_are_refused(pair: str) -> None:
    with pytest.raises(CtlError, match="Invalid parameter setting"):
        apply_pairs(DOCS_CONFIG, [pair])


def test_apply_merges_like_patronis_patch_config_and_replace_starts_empty() -> None:
    applied = apply_yaml(DOCS_CONFIG, "ttl: 40\npostgresql:\n  use_slots: false\nretry_timeout: null\n", "f.yml")
    assert applied["ttl"] == 40 and applied["postgresql"]["use_slots"] is False
    assert applied["postgresql"]["use_pg_rewind"] is True and "retry_timeout" not in applied
    assert apply_yaml({}, "ttl: 40\n", "f.yml") == {"ttl": 40}
    assert apply_yaml(DOCS_CONFIG, "", "f.yml") == DOCS_CONFIG
    with pytest.raises(CtlError, match=r"f\.yml must contain a YAML map"):
        apply_yaml(DOCS_CONFIG, "- a\n", "f.yml")


def test_patch_config_leaves_a_value_with_the_same_text_alone() -> None:
    config: dict[str, Any] = {"ttl": 30, "tags": {"a": 1}}
    assert patch_config(config, {"ttl": "30"}) is False and config["ttl"] == 30
    assert patch_config(config, {"tags": {"b": None}}) is False
    assert patch_config(config, {"tags": {"a": None}}) is True and config == {"ttl": 30, "tags": {}}


def test_delta_sends_only_what_changed_and_nulls_for_removed_keys() -> None:
    new = apply_pairs(DOCS_CONFIG, ["loop_wait=15", "maximum_lag_on_failover=null", "postgresql.parameters.a=1"])
    delta = config_delta(DOCS_CONFIG, new)
    assert delta == {"loop_wait": 15, "maximum_lag_on_failover": None, "postgresql": {"parameters": {"a": 1}}}
    assert patch_reaches(DOCS_CONFIG, delta, new)
    assert config_delta(DOCS_CONFIG, DOCS_CONFIG) == {}


def test_an_edit_patch_cannot_express_goes_through_put() -> None:
    retyped = {**DOCS_CONFIG, "ttl": "30"}  # same text, other type: PATCH leaves it alone
    assert not patch_reaches(DOCS_CONFIG, config_delta(DOCS_CONFIG, retyped), retyped)
    with_null = {**DOCS_CONFIG, "slots": None}  # PATCH cannot store a null
    assert not patch_reaches(DOCS_CONFIG, config_delta(DOCS_CONFIG, with_null), with_null)


# patroni-docs.txt L2386-2398: edit-config batman --pg max_connections="150" --force
DOCS_DIFF_PG = """\
---\x20
+++\x20
@@ -1,6 +1,8 @@
 loop_wait: 10
 maximum_lag_on_failover: 1048576
 postgresql:
+  parameters:
+    max_connections: 150
   pg_hba:
   - host replication replicator 127.0.0.1/32 md5
   - host all all 0.0.0.0/0 md5"""

# L2403-2417: edit-config batman --set loop_wait="15" --set ttl="45" --force
DOCS_DIFF_SET = """\
---\x20
+++\x20
@@ -1,4 +1,4 @@
-loop_wait: 10
+loop_wait: 15
 maximum_lag_on_failover: 1048576
 postgresql:
   pg_hba:
@@ -6,4 +6,4 @@
   - host all all 0.0.0.0/0 md5
   use_pg_rewind: true
 retry_timeout: 10
-ttl: 30
+ttl: 45"""

# L2422-2430: edit-config batman --set maximum_lag_on_failover="null" --force
DOCS_DIFF_REMOVE = """\
---\x20
+++\x20
@@ -1,5 +1,4 @@
 loop_wait: 10
-maximum_lag_on_failover: 1048576
 postgresql:
   pg_hba:
   - host replication replicator 127.0.0.1/32 md5"""


@pytest.mark.parametrize(
    "pairs, expected",
    [
        (pg_pairs(("max_connections=150",)), DOCS_DIFF_PG),
        (["loop_wait=15", "ttl=45"], DOCS_DIFF_SET),
        (["maximum_lag_on_failover=null"], DOCS_DIFF_REMOVE),
    ],
)
def test_the_diff_is_the_documented_one(pairs: list[str], expected: str) -> None:
    before = yaml_text(DOCS_CONFIG)
    # The docs print the context lines without their leading space; difflib (and patronictl) keep it.
    assert diff_lines(before, yaml_text(apply_pairs(DOCS_CONFIG, pairs))) == expected.split("\n")


def test_pager_is_pager_then_less_then_more() -> None:
    def which(*found: str) -> Any:
        return lambda name: f"/usr/bin/{name}" if name in found else None

    assert pager_command({"PAGER": "/usr/local/bin/most"}, which("/usr/local/bin/most", "less")) == [
        "/usr/local/bin/most"
    ]
    assert pager_command({"PAGER": "nothere"}, which("less", "more")) == ["less", "-FRSX"]
    assert pager_command({"LESS": "-R"}, which("less")) == ["less"]
    assert pager_command({}, which("more")) == ["more"]
    with pytest.raises(CtlError, match=r"No pager could be found\. Either set PAGER environment variable"):
        pager_command({}, which())

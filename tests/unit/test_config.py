"""Configuration: Patroni's keys, PATRONI_* overrides, validation naming the key and the rule (F1-F13, F53-F67)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import ConfigError, NodeConfig, effective, validate_node
from shared.config.dynamic import adjust_timeouts
from shared.config.env import from_environment
from shared.config.load import deep_merge, read_sources

VALID: dict[str, Any] = {
    "scope": "batman",
    "name": "pg1",
    "restapi": {"listen": "0.0.0.0:8008", "connect_address": "10.0.0.1:8008"},
    "raft": {"self_addr": "10.0.0.1:2222", "partner_addrs": ["10.0.0.2:2222"], "data_dir": "/var/lib/raft"},
    "bootstrap": {
        "dcs": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
        "initdb": [{"encoding": "UTF8"}, "data-checksums"],
    },
    "postgresql": {"listen": "0.0.0.0:5432", "connect_address": "10.0.0.1:5432", "data_dir": "/var/lib/pg"},
    "tags": {"nofailover": False},
}


def problems_of(config: dict[str, Any]) -> dict[str, str]:
    return {p.key: p.rule for p in validate_node(config) if p.severity == "error"}


def with_(path: str, value: Any) -> dict[str, Any]:
    """VALID with one dotted key replaced (None removes it)."""
    node: dict[str, Any] = {}
    for part in reversed(path.split(".")):
        node = {part: value} if not node else {part: node}
    return deep_merge(VALID, node)


def test_a_valid_configuration_has_no_errors() -> None:
    assert problems_of(VALID) == {}


@pytest.mark.parametrize(
    "path, value, key, rule",
    [
        ("name", None, "name", "is required"),
        ("postgresql.data_dir", None, "postgresql.data_dir", "is required"),
        ("restapi.listen", "nohost", "restapi.listen", "must be 'host:port'"),
        ("bootstrap.dcs.ttl", 4, "bootstrap.dcs.ttl", "must be at least 5"),
        ("bootstrap.dcs.loop_wait", "ten", "bootstrap.dcs.loop_wait", "must be an integer"),
        ("bootstrap.dcs.retry_timeout", 15, "bootstrap.dcs", 'violates the rule "loop_wait + 2*retry_timeout <= ttl"'),
        ("tags.failover_priority", -1, "tags.failover_priority", "must be at least 0"),
        ("watchdog.mode", "sometimes", "watchdog.mode", "must be off, automatic or required"),
        (
            "postgresql.connect_address",
            "0.0.0.0:5432",
            "postgresql.connect_address",
            "must be an address other members",
        ),
        ("postgresql.pg_hba", "host all all 0/0 md5", "postgresql.pg_hba", "must be a list"),
    ],
)
def test_each_problem_names_its_key_and_rule_F8(path: str, value: Any, key: str, rule: str) -> None:
    problems = problems_of(with_(path, value))
    assert key in problems, problems
    assert rule in problems[key]


def test_exactly_one_dcs_section_is_required_F8() -> None:
    none = {k: v for k, v in VALID.items() if k != "raft"}
    assert "exactly one DCS section" in problems_of(none)["<dcs>"]
    two = deep_merge(VALID, {"etcd3": {"host": "127.0.0.1:2379"}})
    assert "only one DCS section" in problems_of(two)["<dcs>"]


def test_nofailover_and_failover_priority_together_are_refused_A11() -> None:
    assert "give only one of" in problems_of(with_("tags.failover_priority", 2))["tags"]


def test_loopback_connect_address_is_only_a_warning() -> None:
    config = with_("restapi.connect_address", "127.0.0.1:8008")
    problems = [p for p in validate_node(config) if p.key == "restapi.connect_address"]
    assert problems and problems[0].severity == "warning"


def test_environment_overrides_the_file_F1_F53(tmp_path: Path) -> None:
    path = tmp_path / "node.yml"
    path.write_text(yaml.safe_dump(VALID))
    env = {
        "PATRONI_NAME": "pg9",
        "PATRONI_RESTAPI_LISTEN": "127.0.0.1:9008",
        "PATRONI_RAFT_PARTNER_ADDRS": "'10.0.0.3:2222','10.0.0.4:2222'",
        "PATRONI_SUPERUSER_PASSWORD": "s3cret",
        "PATRONI_POSTGRESQL_BIN_PG_CTL": "pg_ctl15",
        "PATRONI_ETCD3_HOSTS": "'h1:2379','h2:2379'",
        "PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS": "true",
    }
    data = read_sources(str(path), env)
    assert data["name"] == "pg9"
    assert data["restapi"]["listen"] == "127.0.0.1:9008"
    assert data["restapi"]["connect_address"] == "10.0.0.1:8008"  # untouched keys stay
    assert data["raft"]["partner_addrs"] == ["10.0.0.3:2222", "10.0.0.4:2222"]
    assert data["postgresql"]["authentication"]["superuser"]["password"] == "s3cret"
    assert data["postgresql"]["bin_name"]["pg_ctl"] == "pg_ctl15"
    assert data["etcd3"]["hosts"] == ["h1:2379", "h2:2379"]
    assert data["restapi"]["allowlist_include_members"] is True


def test_a_directory_of_yaml_files_merges_in_sorted_order_F2(tmp_path: Path) -> None:
    (tmp_path / "10-base.yml").write_text(yaml.safe_dump(VALID))
    (tmp_path / "20-override.yaml").write_text(yaml.safe_dump({"name": "pg2", "tags": {"nosync": True}}))
    (tmp_path / "notes.txt").write_text("ignored")
    data = read_sources(str(tmp_path), {})
    assert data["name"] == "pg2" and data["tags"] == {"nofailover": False, "nosync": True}


def test_whole_configuration_from_PATRONI_CONFIGURATION_F53() -> None:
    data = read_sources(None, {"PATRONI_CONFIGURATION": yaml.safe_dump(VALID), "PATRONI_NAME": "ignored"})
    assert data["name"] == "pg1"


def test_missing_file_and_bad_yaml_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        NodeConfig.load(str(tmp_path / "nope.yml"), {})
    assert "does not exist" in str(missing.value)
    bad = tmp_path / "bad.yml"
    bad.write_text("scope: [unclosed")
    with pytest.raises(ConfigError) as invalid:
        NodeConfig.load(str(bad), {})
    assert "is not valid YAML" in str(invalid.value)


def test_env_lists_need_each_item_quoted_F67() -> None:
    assert from_environment({"PATRONI_ZOOKEEPER_HOSTS": "'h1:2181','h2:2181'"})["zookeeper"]["hosts"] == [
        "h1:2181",
        "h2:2181",
    ]
    assert from_environment({"PATRONI_KUBERNETES_USE_ENDPOINTS": "false"})["kubernetes"]["use_endpoints"] is False


def test_timeouts_below_minimum_are_raised_and_the_rule_enforced_A6() -> None:
    ttl, loop_wait, retry, warnings = adjust_timeouts(3, 0, 0)
    assert (ttl, loop_wait, retry) == (5, 1, 1)
    assert any("can't be smaller than" in w for w in warnings)
    ttl, loop_wait, retry, warnings = adjust_timeouts(20, 10, 15)
    assert (ttl, loop_wait, retry) == (20, 1, 9)
    ttl, loop_wait, retry, warnings = adjust_timeouts(30, 15, 10)
    assert (ttl, loop_wait, retry) == (30, 10, 10)
    assert any(w.startswith('Violated the rule "loop_wait + 2*retry_timeout <= ttl"') for w in warnings)


def test_effective_dynamic_configuration_prefers_the_dcs_over_bootstrap_F1() -> None:
    before = effective(None, {"ttl": 40, "loop_wait": 5})
    assert (before.ttl, before.loop_wait, before.retry_timeout) == (40, 5, 10)
    after = effective({"ttl": 25, "master_start_timeout": 60, "pause": True}, {"ttl": 40})
    assert after.ttl == 25 and after.primary_start_timeout == 60 and after.pause


def run_validate(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "node.yml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-c", "from shared.launcher.cli import main; main()", "--validate-config", str(path)],
        capture_output=True,
        text=True,
        cwd=str(Path(__file__).resolve().parents[2]),
        check=False,
    )


def test_validate_config_command_prints_each_problem_and_exits_non_zero_F8(tmp_path: Path) -> None:
    broken = deep_merge(VALID, {"bootstrap": {"dcs": {"ttl": 4}}, "restapi": {"listen": "x"}})
    result = run_validate(tmp_path, broken)
    assert result.returncode == 1
    assert "bootstrap.dcs.ttl: must be at least 5, got 4" in result.stderr
    assert "restapi.listen: must be 'host:port'" in result.stderr
    assert run_validate(tmp_path, VALID).returncode == 0

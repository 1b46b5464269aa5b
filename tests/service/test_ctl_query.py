"""havenctl query against a real PostgreSQL 15 over libpq (E15): the member comes from GET /cluster (a local HTTP
server), the SQL runs on its host and port; rows, errors and formats as patronictl prints them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_members import NAMES, FakeCluster, config_file, havenctl, node
from tests.support.pg_helpers import trust_primary
from tests.support.ports import free_port

TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture(scope="module")
def postgres() -> Iterator[int]:
    """A throwaway primary on 127.0.0.1 with trust authentication; its port."""
    with trust_primary("haven-ctl-query-") as port:
        yield port


@pytest.fixture
def cluster(postgres: int) -> Iterator[FakeCluster]:
    """postgresql0 (the leader) and postgresql1 both point at the one server; postgresql2 at nothing."""
    fake = FakeCluster(NAMES)
    fake.set_members(
        node("postgresql0", postgres, "leader", "running"),
        node("postgresql1", postgres),
        node("postgresql2", free_port()),
    )
    yield fake
    fake.close()


def test_e15_query_runs_on_the_leader_by_default_in_tsv(cluster: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, cluster)
    result = havenctl(config, "query", "batman", "-U", "postgres", "-c", "SELECT 1 AS a, 'x' AS b, NULL AS c")
    assert (result.exit_code, result.stdout) == (0, "a\tb\tc\n1\tx\tNone\n"), result.output
    port = havenctl(config, "query", "-U", "postgres", "-d", "postgres", "-c", "SHOW port", "--delimiter", ";")
    assert port.stdout == f"port\n{cluster.body['members'][0]['port']}\n"  # L3149-3153


def test_e15_formats(cluster: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, cluster)
    sql = "SELECT 1 AS column_1, 'test' AS column_2"
    assert havenctl(config, "query", "-U", "postgres", "-c", sql, "--format", "yaml").stdout == (
        "- column_1: 1\n  column_2: test\n\n"
    )
    assert havenctl(config, "query", "-U", "postgres", "-c", sql, "--format", "json").stdout == (
        '[{"column_1": 1, "column_2": "test"}]\n'
    )
    assert havenctl(config, "query", "-U", "postgres", "-c", sql, "--format", "pretty").stdout == (
        "+----------+----------+\n| column_1 | column_2 |\n+----------+----------+\n"
        "| 1        | test     |\n+----------+----------+\n"
    )
    assert havenctl(config, "query", "-U", "postgres", "-c", sql, "--format", "xml").exit_code == 2


def test_e15_sql_errors_and_unreachable_members_are_rows(cluster: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, cluster)
    missing = havenctl(config, "query", "-U", "postgres", "-c", "SELECT * FROM nowhere")
    assert re.fullmatch(TS + r"\tERROR, SQLSTATE: 42P01\n", missing.stdout), missing.stdout
    down = havenctl(config, "query", "-U", "postgres", "-m", "postgresql2", "-c", "SELECT 1")
    assert re.fullmatch(TS + r"\tERROR, SQLSTATE: connection to server at \"127\.0\.0\.1\".*\n", down.stdout), (
        down.stdout
    )
    assert down.exit_code == 0


def test_e15_roles_are_checked_against_recovery(cluster: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, cluster)
    # postgresql1 is a replica by the DCS, but its server is not in recovery: no replica to run on.
    replica = havenctl(config, "query", "-U", "postgres", "-r", "replica", "-c", "SELECT 1")
    assert re.fullmatch(TS + r"\tNo connection to role=replica is available\n", replica.stdout), replica.stdout
    primary = havenctl(config, "query", "-U", "postgres", "-r", "primary", "-c", "SELECT 2 AS n")
    assert primary.stdout == "n\n2\n"
    by_name = havenctl(config, "query", "-U", "postgres", "-m", "postgresql1", "-c", "SELECT 3 AS n")
    assert by_name.stdout == "n\n3\n"  # -m alone works (3.1.0 fix, L5367-5369)
    both = havenctl(config, "query", "-r", "replica", "-m", "postgresql1", "-c", "SELECT 1")
    assert both.stderr == "Error: --role and --member are mutually exclusive options\n"


def test_e15_sql_from_a_file_and_a_password_prompt(cluster: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, cluster)
    (tmp_path / "q.sql").write_text("SELECT current_user AS u")
    result = havenctl(config, "query", "-U", "postgres", "--password", "-f", str(tmp_path / "q.sql"), input="s3cret\n")
    assert (result.exit_code, result.stdout) == (0, "Password: \nu\npostgres\n"), result.output
    neither = havenctl(config, "query")
    assert neither.stderr == "Error: You need to specify either --command or --file\n"
    both = havenctl(config, "query", "-f", str(tmp_path / "q.sql"), "-c", "SELECT 1")
    assert both.stderr == "Error: --file and --command are mutually exclusive options\n"

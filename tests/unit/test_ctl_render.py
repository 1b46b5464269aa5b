"""havenctl list/topology output, byte for byte against patronictl 3.2's documented examples (E12, E22, W9b).

The expected strings are copied verbatim from patroni-docs.txt; the GET /cluster bodies are what a 3.2 node
answers for those clusters.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import yaml

from ctl.cluster_cmds import format_pg_version, run_watching
from ctl.render import ClusterInfo, render_members, timestamp, topology_order
from ctl.table import render_table, text_width

SYSID = "7277694203142172922"


def node(
    name: str, port: int, role: str = "replica", state: str = "streaming", tl: int | None = 5, **extra: Any
) -> Any:
    member: dict[str, Any] = {
        "name": name,
        "role": role,
        "state": state,
        "api_url": f"http://127.0.0.1:{port + 2576}/patroni",
        "host": "127.0.0.1",
        "port": port,
    }
    if tl is not None:
        member["timeline"] = tl
    member.update(extra)
    if role not in ("leader", "standby_leader") and "lag" not in member:
        member["lag"] = 0
    return member


def batman(tl: int = 5, **extra: Any) -> ClusterInfo:
    """postgres0.yml, postgres1.yml, postgres2.yml of Patroni's repository, running on one host."""
    members = [
        node("postgresql0", 5432, "leader", "running", tl),
        node("postgresql1", 5433, tl=tl),
        node("postgresql2", 5434, tl=tl),
    ]
    return ClusterInfo("batman", SYSID, {"members": members, "scope": "batman", **extra})


# patroni-docs.txt L2940-2946: patronictl -c postgres0.yml list batman
DOCS_LIST = """\
+ Cluster: batman (7277694203142172922) -+-----------+----+-----------+
| Member      | Host           | Role    | State     | TL | Lag in MB |
+-------------+----------------+---------+-----------+----+-----------+
| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |           |
| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |         0 |
| postgresql2 | 127.0.0.1:5434 | Replica | streaming |  5 |         0 |
+-------------+----------------+---------+-----------+----+-----------+
"""

# L2951-2957: list batman -e
DOCS_LIST_EXTENDED = """\
+ Cluster: batman (7277694203142172922) -+-----------+----+-----------+-----------------+-------------------+------+
| Member      | Host           | Role    | State     | TL | Lag in MB | Pending restart | Scheduled restart | Tags |
+-------------+----------------+---------+-----------+----+-----------+-----------------+-------------------+------+
| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |           |                 |                   |      |
| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |         0 |                 |                   |      |
| postgresql2 | 127.0.0.1:5434 | Replica | streaming |  5 |         0 |                 |                   |      |
+-------------+----------------+---------+-----------+----+-----------+-----------------+-------------------+------+
"""

# L2962-2982: list batman -f yaml -t (the timestamp line comes first)
DOCS_YAML = """\
- Cluster: batman
  Host: 127.0.0.1:5432
  Member: postgresql0
  Role: Leader
  State: running
  TL: 5
- Cluster: batman
  Host: 127.0.0.1:5433
  Lag in MB: 0
  Member: postgresql1
  Role: Replica
  State: streaming
  TL: 5
- Cluster: batman
  Host: 127.0.0.1:5434
  Lag in MB: 0
  Member: postgresql2
  Role: Replica
  State: streaming
  TL: 5
"""

# L3866-3872: topology batman
DOCS_TOPOLOGY = """\
+ Cluster: batman (7277694203142172922) ---+-----------+----+-----------+
| Member        | Host           | Role    | State     | TL | Lag in MB |
+---------------+----------------+---------+-----------+----+-----------+
| postgresql0   | 127.0.0.1:5432 | Leader  | running   |  8 |           |
| + postgresql1 | 127.0.0.1:5433 | Replica | streaming |  8 |         0 |
| + postgresql2 | 127.0.0.1:5434 | Replica | streaming |  8 |         0 |
+---------------+----------------+---------+-----------+----+-----------+
"""

# L2512-2518: after a failover, the old primary is stopped: no timeline, lag unknown
DOCS_AFTER_FAILOVER = """\
+ Cluster: batman (7277694203142172922) -+---------+----+-----------+
| Member      | Host           | Role    | State   | TL | Lag in MB |
+-------------+----------------+---------+---------+----+-----------+
| postgresql0 | 127.0.0.1:5432 | Replica | stopped |    |   unknown |
| postgresql1 | 127.0.0.1:5433 | Replica | running |  3 |         0 |
| postgresql2 | 127.0.0.1:5434 | Leader  | running |  3 |           |
+-------------+----------------+---------+---------+----+-----------+
"""

# L2601-2607: every member has a scheduled restart, so the column appears without -e
DOCS_SCHEDULED_RESTART = """\
+ Cluster: batman (7277694203142172922) -+-----------+----+-----------+---------------------------+
| Member      | Host           | Role    | State     | TL | Lag in MB | Scheduled restart         |
+-------------+----------------+---------+-----------+----+-----------+---------------------------+
| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |           | 2023-09-12T17:17:00+00:00 |
| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |         0 | 2023-09-12T17:17:00+00:00 |
| postgresql2 | 127.0.0.1:5434 | Replica | streaming |  5 |         0 | 2023-09-12T17:17:00+00:00 |
+-------------+----------------+---------+-----------+----+-----------+---------------------------+
"""


def test_e12_list_matches_the_documented_table() -> None:
    assert render_members(batman()) == DOCS_LIST


def test_e12_list_extended_shows_the_empty_optional_columns() -> None:
    assert render_members(batman(), extended=True) == DOCS_LIST_EXTENDED


def test_e12_w9b_list_yaml_with_timestamp() -> None:
    assert timestamp(datetime(2023, 9, 12, 13, 30, 48, 123456)) == "2023-09-12 13:30:48"
    # click.echo() adds a newline after safe_dump's own, as patronictl's output has.
    assert render_members(batman(), fmt="yaml") == DOCS_YAML + "\n"
    assert render_members(batman(), fmt="yml") == DOCS_YAML + "\n"


def test_e22_topology_matches_the_documented_tree() -> None:
    assert render_members(batman(tl=8), fmt="topology") == DOCS_TOPOLOGY


def test_e12_stopped_member_without_timeline_and_unknown_lag() -> None:
    members = [
        node("postgresql0", 5432, state="stopped", tl=None, lag="unknown"),
        node("postgresql1", 5433, state="running", tl=3),
        node("postgresql2", 5434, "leader", "running", 3),
    ]
    assert render_members(ClusterInfo("batman", SYSID, {"members": members})) == DOCS_AFTER_FAILOVER


def test_e12_scheduled_restart_column_appears_when_any_member_has_one() -> None:
    info = batman()
    for member in info.body["members"]:
        member["scheduled_restart"] = {"schedule": "2023-09-12T17:17:00+00:00"}
    assert render_members(info) == DOCS_SCHEDULED_RESTART


def test_e12_w9b_json_and_tsv_include_the_cluster_column() -> None:
    elements = json.loads(render_members(batman(), fmt="json"))
    assert elements == yaml.safe_load(DOCS_YAML)
    assert list(elements[1]) == ["Cluster", "Member", "Host", "Role", "State", "TL", "Lag in MB"]
    assert render_members(batman(), fmt="json").endswith("}]\n")
    assert render_members(batman(), fmt="tsv") == (
        "Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB\n"
        "batman\tpostgresql0\t127.0.0.1:5432\tLeader\trunning\t5\t\n"
        "batman\tpostgresql1\t127.0.0.1:5433\tReplica\tstreaming\t5\t0\n"
        "batman\tpostgresql2\t127.0.0.1:5434\tReplica\tstreaming\t5\t0\n"
    )


def test_e12_host_without_port_when_ports_are_default_and_hosts_differ() -> None:
    members = [
        {"name": "b", "role": "replica", "state": "streaming", "host": "10.0.0.2", "port": 5432, "lag": 3 * 1024**2},
        {"name": "a", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432, "timeline": 1},
        {"name": "c", "role": "sync_standby", "state": "streaming", "host": "10.0.0.3", "port": 5432, "lag": 1572864},
        {"name": "d", "role": "replica", "state": "creating replica", "api_url": None, "lag": "unknown"},
    ]
    assert render_members(ClusterInfo("demo", "initializing", {"members": members})) == (
        "+ Cluster: demo (initializing) ----+------------------+----+-----------+\n"
        "| Member | Host     | Role         | State            | TL | Lag in MB |\n"
        "+--------+----------+--------------+------------------+----+-----------+\n"
        "| a      | 10.0.0.1 | Leader       | running          |  1 |           |\n"
        "| b      | 10.0.0.2 | Replica      | streaming        |    |         3 |\n"
        "| c      | 10.0.0.3 | Sync Standby | streaming        |    |         2 |\n"
        "| d      |          | Replica      | creating replica |    |   unknown |\n"
        "+--------+----------+--------------+------------------+----+-----------+\n"
    )


def test_e12_footer_maintenance_mode_and_scheduled_switchover_in_pretty_only() -> None:
    info = batman(
        pause=True, scheduled_switchover={"at": "2023-09-13T18:00:00-03:00", "from": "postgresql0", "to": "b"}
    )
    assert render_members(info).endswith(
        "+-------------+----------------+---------+-----------+----+-----------+\n"
        " Maintenance mode: on\n"
        " Switchover scheduled at: 2023-09-13T18:00:00-03:00\n"
        "                    from: postgresql0\n"
        "                      to: b\n"
    )
    assert "Maintenance" not in render_members(info, fmt="tsv")
    assert "Maintenance" not in render_members(info, fmt="json")


# Two tags make a two-line cell: prettytable then draws a rule between all rows (hrules ALL), as patronictl shows.
TAGS_TABLE = """\
+ Cluster: batman (68133098) --+---------+---------+----+-----------+-----------------+---------------------+
| Member      | Host           | Role    | State   | TL | Lag in MB | Pending restart | Tags                |
+-------------+----------------+---------+---------+----+-----------+-----------------+---------------------+
| postgresql0 | 127.0.0.1:5432 | Leader  | running |  3 |           |                 | clonefrom: true     |
|             |                |         |         |    |           |                 | noloadbalance: true |
+-------------+----------------+---------+---------+----+-----------+-----------------+---------------------+
| postgresql1 | 127.0.0.1:5433 | Replica | running |  3 |         0 | *               |                     |
+-------------+----------------+---------+---------+----+-----------+-----------------+---------------------+
"""


def test_e12_tags_are_yaml_multiline_cells_switch_to_rules_between_rows() -> None:
    members = [
        node("postgresql0", 5432, "leader", "running", 3, tags={"clonefrom": True, "noloadbalance": True}),
        node("postgresql1", 5433, state="running", tl=3, pending_restart=True),
    ]
    info = ClusterInfo("batman", "68133098", {"members": members})
    assert render_members(info) == TAGS_TABLE
    tsv = render_members(info, fmt="tsv").splitlines()
    assert tsv[0].endswith("\tPending restart\tTags")
    assert tsv[1].endswith("\t\t{clonefrom: true, noloadbalance: true}")
    elements = json.loads(render_members(info, fmt="json"))
    assert elements[0]["Tags"] == {"clonefrom": True, "noloadbalance": True}
    assert elements[1]["Pending restart"] == "*" and "Tags" not in elements[1]


def test_e22_topology_follows_replicatefrom_and_keeps_cycles() -> None:
    members: list[dict[str, Any]] = [
        {"name": "a", "role": "leader"},
        {"name": "b", "role": "replica"},
        {"name": "c", "role": "replica", "tags": {"replicatefrom": "b"}},
        {"name": "d", "role": "replica", "tags": {"replicatefrom": "c"}},
        {"name": "e", "role": "replica", "tags": {"replicatefrom": "a"}},  # the leader: plain child
        {"name": "f", "role": "replica", "tags": {"replicatefrom": "nobody"}},
        {"name": "x", "role": "replica", "tags": {"replicatefrom": "y"}},
        {"name": "y", "role": "replica", "tags": {"replicatefrom": "x"}},
    ]
    names = [m["name"] for m in topology_order(members)]
    assert names == ["a", "+ b", "  + c", "    + d", "+ e", "+ f", "+ x", "  + y"]


def test_e22_topology_without_a_leader_puts_everyone_one_level_down() -> None:
    members: list[dict[str, Any]] = [
        {"name": "b", "role": "replica"},
        {"name": "c", "role": "replica", "tags": {"replicatefrom": "b"}},
    ]
    assert [m["name"] for m in topology_order(members)] == ["+ b", "  + c"]


def test_table_header_longer_than_the_table_is_cut_to_fit() -> None:
    assert render_table(["A"], [["x"]], title=" Cluster: long-name (123) ") == "+ Cl+\n| A |\n+---+\n| x |\n+---+"


def test_table_without_rows_prints_header_and_frame() -> None:
    assert render_table(["Member", "TL"], [], {"TL": "r"}, " C ") == (
        "+ C -----+----+\n| Member | TL |\n+--------+----+\n+--------+----+"
    )


def test_wide_characters_take_two_columns() -> None:
    assert text_width("数据库") == 6
    assert text_width("e\u0301") == 1


@pytest.mark.parametrize("version, text", [(150004, "15.4"), (90624, "9.6.24"), (100000, "10.0")])
def test_e23_postgres_version_format(version: int, text: str) -> None:
    assert format_pg_version(version) == text


def test_watching_refreshes_every_interval_and_clears_the_screen() -> None:
    events: list[str] = []
    run_watching(
        True,
        None,
        lambda: events.append("show"),
        sleep=lambda s: events.append(f"sleep {s}"),
        clear=lambda: events.append("clear"),
        max_refreshes=2,
    )
    assert events == ["clear", "show", "sleep 2.0", "clear", "show", "sleep 2.0", "clear", "show"]
    events.clear()
    run_watching(False, 5.0, lambda: events.append("show"), sleep=lambda s: events.append(f"sleep {s}"),
                 clear=lambda: None, max_refreshes=1)  # fmt: skip
    assert events == ["show", "sleep 5.0", "show"]
    events.clear()
    run_watching(False, None, lambda: events.append("show"), clear=lambda: events.append("clear"))
    assert events == ["show"]

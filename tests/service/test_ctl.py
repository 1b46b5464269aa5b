"""havenctl against real HTTP: tiny local servers play the members' REST APIs (E1, E2, E5, E12, E22, E23)."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from ctl.config import CONFIG_FILE_PATH
from ctl.discovery import ClusterSource
from ctl.main import ctl
from ctl.rest import RestClient, RestOptions
from tests.support.ports import free_port

SYSID = "7277694203142172922"


class FakeMember:
    """One member's REST API: answers GET /cluster and GET /patroni from dicts the test sets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.routes: dict[str, tuple[int, Any]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.closed = False
        member = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                member.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, body = member.routes.get(self.path, (404, {"error": "not here"}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/patroni"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def cluster_body(leader: FakeMember, replica: FakeMember, scope: str = "batman", **extra: Any) -> dict[str, Any]:
    return {
        "members": [
            {
                "name": "postgresql1",
                "role": "replica",
                "state": "streaming",
                "api_url": replica.api_url,
                "host": "127.0.0.1",
                "port": 5433,
                "timeline": 5,
                "tags": {"replicatefrom": "postgresql0"},
                "lag": 0,
            },
            {
                "name": "postgresql0",
                "role": "leader",
                "state": "running",
                "api_url": leader.api_url,
                "host": "127.0.0.1",
                "port": 5432,
                "timeline": 5,
            },
        ],
        "scope": scope,
        **extra,
    }


@pytest.fixture
def members() -> Iterator[tuple[FakeMember, FakeMember]]:
    leader, replica = FakeMember(), FakeMember()
    body = cluster_body(leader, replica)
    for member in (leader, replica):
        member.routes["/cluster"] = (200, body)
        member.routes["/patroni"] = (
            200,
            {"state": "running", "database_system_identifier": SYSID, "server_version": 150004,
             "patroni": {"version": "3.2.2", "scope": "batman", "name": "x"}},
        )  # fmt: skip
    yield leader, replica
    leader.close()
    replica.close()


def write_config(path: Path, port: int, **extra: Any) -> str:
    config = {"scope": "batman", "restapi": {"connect_address": f"127.0.0.1:{port}", "listen": "0.0.0.0:8008"}}
    config.update(extra)
    path.write_text(yaml.safe_dump(config))
    return str(path)


def havenctl(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(ctl, list(args), env=env, prog_name="havenctl")


def test_list_pretty_from_the_nodes_own_rest_api(members: tuple[FakeMember, FakeMember], tmp_path: Path) -> None:
    leader, replica = members
    config = write_config(tmp_path / "ctl.yml", replica.port)
    result = havenctl("-c", config, "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "+ Cluster: batman (7277694203142172922) -+-----------+----+-----------+----------------------------+"
    )
    assert (
        lines[1]
        == "| Member      | Host           | Role    | State     | TL | Lag in MB | Tags                       |"
    )
    assert (
        lines[3]
        == "| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |           |                            |"
    )
    assert (
        lines[4]
        == "| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |         0 | replicatefrom: postgresql0 |"
    )
    assert len(lines) == 6
    # /cluster from the configured address; the system identifier from the leader's /patroni.
    assert [path for path, _ in replica.requests] == ["/cluster"]
    assert [path for path, _ in leader.requests] == ["/patroni"]
    assert all(h["user-agent"].startswith("Patroni/3.2.2 Python/") for _, h in replica.requests + leader.requests)


def test_list_every_format(members: tuple[FakeMember, FakeMember], tmp_path: Path) -> None:
    config = write_config(tmp_path / "ctl.yml", members[0].port)
    tsv = havenctl("-c", config, "list", "batman", "-f", "tsv")
    assert tsv.exit_code == 0, tsv.output
    assert tsv.stdout.splitlines() == [
        "Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB\tTags",
        "batman\tpostgresql0\t127.0.0.1:5432\tLeader\trunning\t5\t\t",
        "batman\tpostgresql1\t127.0.0.1:5433\tReplica\tstreaming\t5\t0\t{replicatefrom: postgresql0}",
    ]
    as_json = havenctl("-c", config, "list", "-f", "json")
    assert json.loads(as_json.stdout) == [
        {"Cluster": "batman", "Member": "postgresql0", "Host": "127.0.0.1:5432", "Role": "Leader",
         "State": "running", "TL": 5},
        {"Cluster": "batman", "Member": "postgresql1", "Host": "127.0.0.1:5433", "Role": "Replica",
         "State": "streaming", "TL": 5, "Lag in MB": 0, "Tags": {"replicatefrom": "postgresql0"}},
    ]  # fmt: skip
    as_yaml = havenctl("-c", config, "list", "-f", "yaml", "-t")
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n- Cluster: batman\n", as_yaml.stdout)
    assert yaml.safe_load(as_yaml.stdout.split("\n", 1)[1]) == json.loads(as_json.stdout)
    extended = havenctl("-c", config, "list", "-e")
    assert "| Pending restart | Scheduled restart | Tags " in extended.stdout
    assert havenctl("-c", config, "list", "-f", "xml").exit_code == 2  # E4: other formats are rejected


def test_topology_puts_cascading_replicas_under_their_upstream(
    members: tuple[FakeMember, FakeMember], tmp_path: Path
) -> None:
    config = write_config(tmp_path / "ctl.yml", members[0].port)
    result = havenctl("-c", config, "topology")
    assert result.exit_code == 0, result.output
    assert [line.split("|")[1] for line in result.stdout.splitlines()[3:5]] == [" postgresql0   ", " + postgresql1 "]


def test_footer_for_a_paused_cluster_with_a_scheduled_switchover(
    members: tuple[FakeMember, FakeMember], tmp_path: Path
) -> None:
    leader, replica = members
    body = cluster_body(
        leader, replica, pause=True, scheduled_switchover={"at": "2030-01-01T00:00:00+00:00", "from": "postgresql0"}
    )
    leader.routes["/cluster"] = (200, body)
    result = havenctl("-c", write_config(tmp_path / "ctl.yml", leader.port), "list")
    assert result.stdout.endswith(
        " Maintenance mode: on\n"
        " Switchover scheduled at: 2030-01-01T00:00:00+00:00\n"
        "                    from: postgresql0\n"
    )


def test_error_when_no_member_answers(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = havenctl("-c", write_config(tmp_path / "ctl.yml", port), "list")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert 'Error: Can not find accessible cluster member of cluster "batman"' in result.stderr
    assert f"http://127.0.0.1:{port}" in result.stderr


def test_error_without_any_rest_address(tmp_path: Path) -> None:
    (tmp_path / "ctl.yml").write_text("scope: batman\n")
    result = havenctl("-c", str(tmp_path / "ctl.yml"), "list")
    assert result.exit_code == 1
    assert "No REST API address to start from" in result.stderr


def test_wrong_cluster_name_is_an_error(members: tuple[FakeMember, FakeMember], tmp_path: Path) -> None:
    result = havenctl("-c", write_config(tmp_path / "ctl.yml", members[0].port), "list", "gotham")
    assert result.exit_code == 1
    assert 'Cluster "gotham" is not known' in result.stderr and 'cluster "batman"' in result.stderr


def test_a_dead_first_address_falls_back_to_members_learned_earlier(members: tuple[FakeMember, FakeMember]) -> None:
    leader, replica = members
    source = ClusterSource(RestClient(RestOptions(timeout=2)), f"http://127.0.0.1:{replica.port}")
    assert source.fetch("batman").sysid == SYSID
    replica.close()
    info = source.fetch("batman")  # what -W does on its next refresh
    assert [m["name"] for m in info.members] == ["postgresql0", "postgresql1"]
    assert "/cluster" in [path for path, _ in leader.requests]


def test_sysid_labels_when_no_member_reports_one(members: tuple[FakeMember, FakeMember], tmp_path: Path) -> None:
    leader, replica = members
    for member in members:
        member.routes["/patroni"] = (200, {"state": "running"})
    config = write_config(tmp_path / "ctl.yml", leader.port)
    assert "+ Cluster: batman (uninitialized) " in havenctl("-c", config, "list").stdout
    body = cluster_body(leader, replica)
    body["members"][1]["state"] = "initializing new cluster"
    leader.routes["/cluster"] = (200, body)
    assert "+ Cluster: batman (initializing) " in havenctl("-c", config, "list").stdout


def test_basic_auth_from_the_ctl_section_and_config_from_the_environment(
    members: tuple[FakeMember, FakeMember], tmp_path: Path
) -> None:
    leader = members[0]
    config = write_config(
        tmp_path / "ctl.yml", leader.port, ctl={"authentication": {"username": "admin", "password": "s3cret"}}
    )
    result = havenctl("list", env={"PATRONICTL_CONFIG_FILE": config})
    assert result.exit_code == 0, result.output
    assert leader.requests[0][1]["authorization"] == "Basic YWRtaW46czNjcmV0"


def test_config_file_rules(tmp_path: Path) -> None:
    missing = havenctl("-c", str(tmp_path / "nope.yml"), "list")
    assert missing.exit_code == 1
    assert f"Provided config file {tmp_path / 'nope.yml'} not existing or no read rights" in missing.stderr
    (tmp_path / "bad.yml").write_text("scope: [unclosed\n")
    assert havenctl("-c", str(tmp_path / "bad.yml"), "list").exit_code == 1
    (tmp_path / "good.yml").write_text("scope: batman\n")
    assert "Unknown dcs scheme: mongo" in havenctl("-d", "mongo://x:1", "-c", str(tmp_path / "good.yml"), "list").stderr
    if not os.path.exists(CONFIG_FILE_PATH):  # the implicit default file is optional (E1)
        result = havenctl("-c", CONFIG_FILE_PATH, "list", env={"PATRONI_SCOPE": ""})
        assert result.exit_code == 0
        assert "No cluster names were provided" in result.stderr


def test_version(members: tuple[FakeMember, FakeMember], tmp_path: Path) -> None:
    from shared.version import __version__

    assert havenctl("version").stdout == f"havenctl version {__version__}\n"
    result = havenctl("-c", write_config(tmp_path / "ctl.yml", members[0].port), "version", "batman")
    assert result.stdout == (
        f"havenctl version {__version__}\n\n"
        "postgresql0: Patroni 3.2.2 PostgreSQL 15.4\n"
        "postgresql1: Patroni 3.2.2 PostgreSQL 15.4\n"
    )

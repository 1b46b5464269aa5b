"""havenctl edit-config, show-config and history against members' REST APIs played by local HTTP servers (E8, E11,
E20, D22-D25): the PATCH/PUT /config requests, the concurrency checks, and the output as patronictl prints it."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from ctl.config_cmds import show_diff
from tests.support.fake_members import FakeCluster, batman, config_file, havenctl

__all__ = ["batman"]  # the fixture

# patroni-docs.txt L2386-2400 (the docs drop the leading space of the diff's context lines)
DOCS_PG_EXAMPLE = """\
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
   - host all all 0.0.0.0/0 md5
Configuration changed
"""


def accept_config(cluster: FakeCluster, method: str = "PATCH", name: str = "postgresql0") -> None:
    """The member applies the request as Patroni does and answers with the new configuration."""

    def apply(request: Any) -> tuple[int, Any]:
        if method == "PUT":
            cluster.config = request.body
        else:
            from ctl.config_edit import patch_config

            patch_config(cluster.config, request.body)
        return 200, cluster.config

    cluster[name].route(method, "/config", apply)


def test_e8_pg_shorthand_with_force_patches_only_the_change(batman: FakeCluster, tmp_path: Path) -> None:
    accept_config(batman)
    result = havenctl(config_file(tmp_path, batman), "edit-config", "batman", "--pg", "max_connections=150", "--force")
    assert (result.exit_code, result.stdout) == (0, DOCS_PG_EXAMPLE)
    assert batman.unsafe_calls() == {"postgresql0": [("PATCH", "/config")]}
    assert batman["postgresql0"].bodies("PATCH", "/config") == [
        {"postgresql": {"parameters": {"max_connections": 150}}}
    ]
    assert batman.config["postgresql"]["parameters"] == {"max_connections": 150}


def test_e8_set_null_removes_a_key_and_asks_first(batman: FakeCluster, tmp_path: Path) -> None:
    accept_config(batman)
    config = config_file(tmp_path, batman)
    declined = havenctl(config, "edit-config", "-s", "maximum_lag_on_failover=null", input="n\n")
    assert declined.exit_code == 0
    assert declined.stdout.endswith(" postgresql:\n   pg_hba:\n   - host replication replicator 127.0.0.1/32 md5\n"
                                    "Apply these changes? [y/N]: n\n")  # fmt: skip
    assert batman.unsafe_calls() == {}
    accepted = havenctl(config, "edit-config", "-q", "-s", "maximum_lag_on_failover=null", "-s", "ttl=45", input="y\n")
    assert accepted.stdout == "Apply these changes? [y/N]: y\nConfiguration changed\n"
    assert batman["postgresql0"].bodies("PATCH", "/config") == [{"maximum_lag_on_failover": None, "ttl": 45}]
    assert "maximum_lag_on_failover" not in batman.config and batman.config["ttl"] == 45


def test_e8_nothing_to_change(batman: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, batman)
    assert havenctl(config, "edit-config", "-s", "ttl=30", "--force").stdout == "Not changed\n"
    assert havenctl(config, "edit-config", "-q", "-s", "ttl=30", "--force").stdout == ""
    assert batman.unsafe_calls() == {}


def test_e8_apply_and_replace_from_files_and_stdin(batman: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, batman)
    accept_config(batman)
    accept_config(batman, "PUT")
    (tmp_path / "apply.yml").write_text("ttl: 40\npostgresql:\n  use_slots: false\n")
    applied = havenctl(config, "edit-config", "-q", "--apply", str(tmp_path / "apply.yml"), "--force")
    assert (applied.exit_code, applied.stdout) == (0, "Configuration changed\n")
    assert batman["postgresql0"].bodies("PATCH", "/config") == [{"postgresql": {"use_slots": False}, "ttl": 40}]

    from_stdin = havenctl(config, "edit-config", "--replace", "-", input="ttl: 50\nloop_wait: 5\n")
    assert from_stdin.stdout.endswith("Use --force option to apply changes\n")
    assert ("PUT", "/config") not in batman["postgresql0"].calls()
    replaced = havenctl(config, "edit-config", "-q", "--replace", "-", "--force", input="ttl: 50\nloop_wait: 5\n")
    assert (replaced.exit_code, replaced.stdout) == (0, "Configuration changed\n")
    assert batman["postgresql0"].bodies("PUT", "/config") == [{"ttl": 50, "loop_wait": 5}]
    assert batman.config == {"ttl": 50, "loop_wait": 5}


def test_e8_the_editor_edits_a_yaml_file(batman: FakeCluster, tmp_path: Path) -> None:
    accept_config(batman)
    editor = tmp_path / "editor.sh"
    seen = tmp_path / "edited"
    editor.write_text(
        f'#!/bin/sh\necho "$1" > {seen}\n'
        'case "$1" in */batman-config-*.yaml) sed -i "s/^ttl: 30$/ttl: 60/" "$1";; esac\n'
    )
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    env = {"EDITOR": str(editor)}
    result = havenctl(config_file(tmp_path, batman), "edit-config", "--force", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("-ttl: 30\n+ttl: 60\nConfiguration changed\n")
    assert batman["postgresql0"].bodies("PATCH", "/config") == [{"ttl": 60}]
    assert not os.path.exists(seen.read_text().strip())  # the temporary file is gone
    failing = tmp_path / "false.sh"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)
    result = havenctl(config_file(tmp_path, batman), "edit-config", env={"EDITOR": str(failing)})
    assert result.stderr == "Error: Editor exited with return code 3\n"


def test_e8_concurrent_changes_abort(batman: FakeCluster, tmp_path: Path) -> None:
    reads: list[int] = []

    def someone_else_changes_it(_: object) -> tuple[int, Any]:
        reads.append(1)
        if len(reads) == 2:  # between havenctl's first read and its write
            batman.config = {**batman.config, "loop_wait": 5}
        return 200, batman.config

    batman["postgresql0"].route("GET", "/config", someone_else_changes_it)
    result = havenctl(config_file(tmp_path, batman), "edit-config", "-q", "-s", "ttl=45", "--force")
    assert (result.exit_code, result.stderr) == (1, "Error: Config modification aborted due to concurrent changes\n")
    assert len(reads) == 2
    assert batman.unsafe_calls() == {}


def test_e8_a_lost_compare_and_set_on_the_member_aborts(batman: FakeCluster, tmp_path: Path) -> None:
    batman["postgresql0"].route("PATCH", "/config", (409, "Conflict"))
    result = havenctl(config_file(tmp_path, batman), "edit-config", "-q", "-s", "ttl=45", "--force")
    assert (result.exit_code, result.stderr) == (1, "Error: Config modification aborted due to concurrent changes\n")


def test_e8_an_edit_patch_cannot_express_is_put(batman: FakeCluster, tmp_path: Path) -> None:
    accept_config(batman, "PUT")
    result = havenctl(config_file(tmp_path, batman), "edit-config", "-q", "-s", "ttl='30'", "--force")
    assert result.exit_code == 0, result.output
    assert batman["postgresql0"].bodies("PUT", "/config")[0]["ttl"] == "30"


def test_e8_a_cluster_without_configuration(batman: FakeCluster, tmp_path: Path) -> None:
    for member in batman:
        member.route("GET", "/config", (502, "<html>no config</html>"))
    config = config_file(tmp_path, batman)
    result = havenctl(config, "edit-config", "-s", "ttl=45")
    assert result.stderr == "Error: The config key does not exist in the cluster batman\n"
    assert havenctl(config, "show-config").stdout == ""


def test_e20_show_config(batman: FakeCluster, tmp_path: Path) -> None:
    batman.config = {
        "loop_wait": 10,
        "postgresql": {
            "parameters": {"max_connections": 250},
            "pg_hba": ["host replication replicator 127.0.0.1/32 md5", "host all all 0.0.0.0/0 md5"],
            "use_pg_rewind": True,
        },
        "retry_timeout": 10,
        "ttl": 30,
    }
    result = havenctl(config_file(tmp_path, batman), "show-config", "batman")
    assert result.stdout == (
        "loop_wait: 10\n"
        "postgresql:\n"
        "  parameters:\n"
        "    max_connections: 250\n"
        "  pg_hba:\n"
        "  - host replication replicator 127.0.0.1/32 md5\n"
        "  - host all all 0.0.0.0/0 md5\n"
        "  use_pg_rewind: true\n"
        "retry_timeout: 10\n"
        "ttl: 30\n"
        "\n"
    )  # L3576-3586 (click.echo adds a newline to YAML that ends with one, as in patronictl)


def test_e11_history(batman: FakeCluster, tmp_path: Path) -> None:
    batman.history = [
        [1, 24392648, "no recovery target specified", "2023-09-11T22:11:27.125527+00:00", "postgresql0"],
        [2, 50331864, "no recovery target specified", "2023-09-12T11:34:03.148097+00:00", "postgresql0"],
        [3, 83886704, "no recovery target specified", "2023-09-12T11:52:26.948134+00:00", "postgresql2"],
        [4, 83887280, "no recovery target specified", "2023-09-12T11:53:09.620136+00:00", "postgresql0"],
    ]
    config = config_file(tmp_path, batman)
    assert havenctl(config, "history", "batman").stdout == (
        "+----+----------+------------------------------+----------------------------------+-------------+\n"
        "| TL |      LSN | Reason                       | Timestamp                        | New Leader  |\n"
        "+----+----------+------------------------------+----------------------------------+-------------+\n"
        "|  1 | 24392648 | no recovery target specified | 2023-09-11T22:11:27.125527+00:00 | postgresql0 |\n"
        "|  2 | 50331864 | no recovery target specified | 2023-09-12T11:34:03.148097+00:00 | postgresql0 |\n"
        "|  3 | 83886704 | no recovery target specified | 2023-09-12T11:52:26.948134+00:00 | postgresql2 |\n"
        "|  4 | 83887280 | no recovery target specified | 2023-09-12T11:53:09.620136+00:00 | postgresql0 |\n"
        "+----+----------+------------------------------+----------------------------------+-------------+\n"
    )  # L2688-2697
    as_json = json.loads(havenctl(config, "history", "-f", "json").stdout)
    assert as_json[2] == {
        "TL": 3, "LSN": 83886704, "Reason": "no recovery target specified",
        "Timestamp": "2023-09-12T11:52:26.948134+00:00", "New Leader": "postgresql2",
    }  # fmt: skip
    assert havenctl(config, "history", "-f", "yaml").stdout.startswith(
        "- LSN: 24392648\n  New Leader: postgresql0\n  Reason: no recovery target specified\n  TL: 1\n"
    )
    tsv = havenctl(config, "history", "-f", "tsv").stdout.split("\n")
    assert tsv[:2] == ["TL\tLSN\tReason\tTimestamp\tNew Leader", "1\t24392648\tno recovery target specified\t"
                       "2023-09-11T22:11:27.125527+00:00\tpostgresql0"]  # fmt: skip
    assert batman["postgresql0"].calls().count(("GET", "/history")) == 4  # the leader's view first


def test_e8_on_a_terminal_the_diff_goes_through_the_pager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paged = tmp_path / "paged"
    pager = tmp_path / "pager.sh"
    pager.write_text(f"#!/bin/sh\ncat > {paged}\n")
    pager.chmod(0o755)
    monkeypatch.setenv("PAGER", str(pager))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    show_diff("loop_wait: 10\nttl: 30\n", "loop_wait: 10\nttl: 45\n")
    assert paged.read_text() == (
        "\x1b[1m--- \x1b[0m\n\x1b[1m+++ \x1b[0m\n\x1b[36m@@ -1,2 +1,2 @@\x1b[0m\n loop_wait: 10\n"
        "\x1b[31m-ttl: 30\x1b[0m\n\x1b[32m+ttl: 45\x1b[0m\n"
    )

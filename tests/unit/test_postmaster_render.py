"""Configuration rendering of the postmaster controller: pure functions, no PostgreSQL (C2, C14, C41-C56)."""

from __future__ import annotations

from typing import Any

import pytest

from services.postmaster import options, render
from services.postmaster.render import ConfError, PassEntry, Upstream
from services.postmaster.settings import Settings
from shared.config import NodeConfig


def make_settings(postgresql: dict[str, Any] | None = None, **top: Any) -> Settings:
    pg: dict[str, Any] = {
        "listen": "127.0.0.1,10.0.0.5:5433",
        "connect_address": "10.0.0.5:5433",
        "data_dir": "/data/pg",
        "bin_dir": "/usr/lib/postgresql/15/bin",
        "authentication": {
            "superuser": {"username": "postgres", "password": "su'pw"},
            "replication": {"username": "replicator", "password": "rep:pw", "sslmode": "require"},
        },
    }
    pg.update(postgresql or {})
    return Settings.from_config(NodeConfig({"name": "node1", "scope": "demo", "postgresql": pg, **top}), "/run/h")


LEADER = Upstream.parse({"name": "node2", "conn_url": "postgres://10.0.0.6:5434/postgres"})


# ---- settings -----------------------------------------------------------------------------------------------------


def test_settings_take_listen_paths_and_binaries_from_the_configuration() -> None:
    s = make_settings()
    assert (s.listen_addresses, s.port, s.local_host) == ("127.0.0.1,10.0.0.5", 5433, "127.0.0.1")
    assert (s.config_dir, s.pgpass, s.log_file) == ("/data/pg", "/run/h/pgpass", "/run/h/postgresql.log")
    assert s.binary("pg_ctl") == "/usr/lib/postgresql/15/bin/pg_ctl"
    assert s.superuser_url() == "postgres://postgres@127.0.0.1:5433/postgres"
    assert "password" not in s.superuser_url()


def test_a_wildcard_listen_address_connects_locally_through_loopback() -> None:
    assert make_settings({"listen": "0.0.0.0:5432"}).local_host == "127.0.0.1"
    assert make_settings({"listen": "*:5432"}).local_host == "127.0.0.1"


# ---- parameters ---------------------------------------------------------------------------------------------------


def test_dcs_only_parameters_come_from_the_dynamic_configuration_alone() -> None:
    s = make_settings({"parameters": {"max_connections": 500, "wal_level": "minimal", "work_mem": "8MB"}})
    params, warnings = render.effective_parameters(s, {"parameters": {"max_connections": 200, "work_mem": "4MB"}})
    assert params["max_connections"] == 200  # the local 500 is ignored (C44)
    assert params["wal_level"] == "hot_standby"  # default; the local value is ignored
    assert params["work_mem"] == "8MB"  # local wins for the others (F1)
    assert warnings == []


def test_a_too_low_dcs_only_value_is_replaced_by_the_default_with_a_warning() -> None:
    dynamic = {"parameters": {"max_connections": 10, "wal_level": "minimal", "max_wal_senders": "x"}}
    params, warnings = render.effective_parameters(make_settings(), dynamic)
    assert (params["max_connections"], params["wal_level"], params["max_wal_senders"]) == (100, "hot_standby", 10)
    assert "postgresql parameter max_connections=10 failed validation, defaulting to 100" in warnings
    assert len(warnings) == 3


def test_haven_owns_listen_port_cluster_name_and_the_socket_directory() -> None:
    s = make_settings({"parameters": {"port": 1, "listen_addresses": "*", "cluster_name": "x", "hot_standby": "off"}})
    params, _ = render.effective_parameters(s, {"parameters": {"primary_conninfo": "host=x"}})
    assert (params["port"], params["listen_addresses"], params["cluster_name"]) == (5433, "127.0.0.1,10.0.0.5", "demo")
    assert (params["hot_standby"], params["wal_log_hints"]) == ("on", "on")
    assert params["unix_socket_directories"] == "/run/h"
    assert (params["hba_file"], params["ident_file"]) == ("/data/pg/pg_hba.conf", "/data/pg/pg_ident.conf")
    assert "primary_conninfo" not in params  # recovery settings belong to the recovery block


def test_user_socket_directories_and_hba_file_are_kept() -> None:
    s = make_settings({"parameters": {"unix_socket_directories": "/tmp", "hba_file": "/etc/hba"}})
    params, _ = render.effective_parameters(s, {})
    assert (params["unix_socket_directories"], params["hba_file"]) == ("/tmp", "/etc/hba")


def test_wal_keep_segments_becomes_wal_keep_size() -> None:
    params, _ = render.effective_parameters(make_settings(), {"parameters": {"wal_keep_segments": 10}})
    assert params["wal_keep_size"] == "160MB" and "wal_keep_segments" not in params


def test_command_line_carries_the_parameters_that_must_win() -> None:
    params, _ = render.effective_parameters(make_settings(), {"parameters": {"track_commit_timestamp": True}})
    args = render.command_line_options(params)
    assert args[:4] == [
        "--listen_addresses=127.0.0.1,10.0.0.5",
        "--port=5433",
        "--cluster_name=demo",
        "--wal_level=hot_standby",
    ]
    assert "--track_commit_timestamp=on" in args and "--wal_log_hints=on" in args
    assert not [a for a in args if a.startswith("--wal_keep_size")]


def test_a_standby_gets_at_least_the_shared_memory_settings_in_pg_control() -> None:
    params, raised = render.raise_to_controldata(
        {"max_connections": 100, "max_wal_senders": 10},
        {"max_connections setting": "200", "max_wal_senders setting": "5"},
    )
    assert (params["max_connections"], params["max_wal_senders"]) == (200, 10)
    assert len(raised) == 1


# ---- postgresql.conf ----------------------------------------------------------------------------------------------


def test_postgresql_conf_of_a_primary() -> None:
    s = make_settings()
    text = render.render_postgresql_conf(
        s, {"work_mem": "4MB", "archive_command": "cp '%p' \\x", "b": True}, None, None
    )
    lines = text.splitlines()
    assert lines[:3] == [
        "# Do not edit this file manually!",
        "# It will be overwritten by haven!",
        "include '/data/pg/postgresql.base.conf'",
    ]
    assert lines[4:] == ["archive_command = 'cp ''%p'' \\\\x'", "b = 'on'", "work_mem = '4MB'"]
    assert "# recovery.conf" not in text and render.parse_following(text) is None


def test_postgresql_conf_of_a_replica_ends_with_the_recovery_block() -> None:
    s = make_settings({"custom_conf": "/etc/pg/custom.conf", "recovery_conf": {"restore_command": "cp %f %p"}})
    recovery = render.recovery_parameters(s, {"recovery_conf": {"restore_command": "false", "x": 1}}, LEADER)
    text = render.render_postgresql_conf(s, {"port": 5433}, recovery, LEADER)
    assert "include '/etc/pg/custom.conf'" in text
    block = text.split("# recovery.conf\n", 1)[1].splitlines()
    assert block[:2] == ["# haven: following node2", "# haven: following_conn_url postgres://10.0.0.6:5434/postgres"]
    assert block[2].startswith("primary_conninfo = 'user=replicator passfile=/run/h/pgpass host=10.0.0.6 port=5434")
    assert block[3:] == [
        "primary_slot_name = 'node1'",
        "recovery_target_timeline = 'latest'",
        "restore_command = 'cp %f %p'",
        "x = '1'",
    ]
    assert render.parse_following(text) == LEADER


def test_a_replica_without_upstream_has_no_primary_conninfo() -> None:
    recovery = render.recovery_parameters(make_settings(), {"recovery_conf": {"primary_conninfo": "host=x"}}, None)
    assert recovery == {"recovery_target_timeline": "latest"}


def test_primary_conninfo_uses_the_pgpass_file_never_the_password() -> None:
    conninfo = render.primary_conninfo(LEADER, make_settings({"pgpass": "/my dir/pgpass"}))
    assert conninfo == (
        "user=replicator passfile='/my dir/pgpass' host=10.0.0.6 port=5434 sslmode=require application_name=node1"
    )
    assert "rep:pw" not in conninfo


def test_recovery_settings_are_scrubbed_from_postgresql_auto_conf() -> None:
    text = "# comment\nprimary_conninfo = 'host=x'\nwork_mem = '1MB'\nRestore_Command='x'\n"
    assert render.scrub_recovery_settings(text) == "# comment\nwork_mem = '1MB'\n"
    assert render.scrub_recovery_settings("work_mem = '1MB'\n") is None


def test_pg_hba_local_wins_over_dynamic_then_bootstrap() -> None:
    dynamic = {"pg_hba": ["host all all 0.0.0.0/0 md5"]}
    assert render.hba_lines(make_settings({"pg_hba": ["local all all trust"]}), dynamic) == ["local all all trust"]
    assert render.hba_lines(make_settings(), dynamic) == ["host all all 0.0.0.0/0 md5"]
    assert render.hba_lines(make_settings(bootstrap={"pg_hba": ["b"]}), {}) == ["b"]
    assert render.render_lines_file(["a", "b"]).endswith("\na\nb\n")


# ---- pgpass -------------------------------------------------------------------------------------------------------


def test_pgpass_escapes_and_uses_stars_for_missing_values() -> None:
    text = render.render_pgpass([PassEntry("h", 5432, "u:1", "p\\w:x"), PassEntry(None, None, "u", "p")])
    assert text == "h:5432:*:u\\:1:p\\\\w\\:x\n*:*:*:u:p\n"


def test_pgpass_lists_the_local_superuser_and_the_replication_user_of_each_upstream() -> None:
    entries = render.pgpass_entries(make_settings(), [LEADER])
    assert entries == [
        PassEntry("127.0.0.1", 5433, "postgres", "su'pw"),
        PassEntry("10.0.0.6", 5434, "replicator", "rep:pw"),
    ]


def test_users_without_a_password_get_no_pgpass_line() -> None:
    s = make_settings({"authentication": {"superuser": {"username": "postgres"}, "replication": {"username": "r"}}})
    assert render.pgpass_entries(s, [LEADER]) == []


# ---- member references --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        "node2",
        {"name": "node2"},
        {"name": "", "conn_url": "postgres://h:1/p"},
        {"name": "n", "conn_url": "http://h:1/p"},
        {"name": "n", "conn_url": "postgres://h:99999/p"},
        {"name": "n", "conn_url": 5},
    ],
)
def test_bad_member_references_are_refused(value: Any) -> None:
    with pytest.raises(ConfError):
        Upstream.parse(value)


def test_member_reference_default_port() -> None:
    assert Upstream.parse({"name": "n", "conn_url": "postgres://db1/postgres"}).port == 5432


# ---- initdb and pg_basebackup options -----------------------------------------------------------------------------


def test_initdb_options_from_strings_and_one_key_maps() -> None:
    given = ["data-checksums", {"encoding": "UTF8"}, {"locale": "en_US.UTF-8"}]
    assert options.initdb_options(given) == ["--data-checksums", "--encoding=UTF8", "--locale=en_US.UTF-8"]
    assert options.initdb_options(None) == []
    assert options.initdb_options({"auth-host": "md5"}) == ["--auth-host=md5"]


@pytest.mark.parametrize("name", ["pgdata", "nosync", "pwfile", "sync-only", "version"])
def test_initdb_options_haven_controls_are_refused(name: str) -> None:
    for given in ([name], [{name: "x"}], {name: "x"}):
        with pytest.raises(ConfError, match=f"^{name} option for initdb is not allowed$"):
            options.initdb_options(given)


def test_initdb_items_must_be_strings_or_one_key_maps() -> None:
    with pytest.raises(ConfError):
        options.initdb_options([{"a": 1, "b": 2}])
    with pytest.raises(ConfError):
        options.initdb_options("data-checksums")


def test_refused_basebackup_options_are_dropped_and_reported() -> None:
    args, errors = options.basebackup_options(["verbose", {"max-rate": "100M"}, {"pgdata": "/x"}, "gzip"])
    assert args == ["--verbose", "--max-rate=100M"]
    assert errors == ["pgdata option for basebackup is not allowed", "gzip option for basebackup is not allowed"]


def test_primary_stop_timeout_bounds_a_stop_only_in_synchronous_mode_A36() -> None:
    from services.postmaster.operations import Operations

    class Idle:
        def intend(self, running: bool) -> None: ...

        def stopping(self) -> bool:
            return False

    def limit(dynamic: dict[str, Any]) -> float | None:
        return Operations(make_settings(), dynamic, Idle()).stop_timeout()  # type: ignore[arg-type]

    assert limit({"synchronous_mode": True, "primary_stop_timeout": 30}) == 30.0
    assert limit({"synchronous_mode": "quorum", "master_stop_timeout": 5}) == 5.0  # the legacy name
    assert limit({"primary_stop_timeout": 30}) is None  # asynchronous: no effect
    assert limit({"synchronous_mode": True, "primary_stop_timeout": 0}) is None


def test_replicas_retry_a_new_timeline_quickly_unless_configured_otherwise() -> None:
    params, _ = render.effective_parameters(make_settings(), {})
    assert params["wal_retrieve_retry_interval"] == "500ms"
    chosen, _ = render.effective_parameters(make_settings(), {"parameters": {"wal_retrieve_retry_interval": "5s"}})
    assert chosen["wal_retrieve_retry_interval"] == "5s"

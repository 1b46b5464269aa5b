"""havenctl switchover, failover, pause, resume against members' REST APIs played by local HTTP servers (E9, E13,
E14, E21, A26-A31, A41, D24, D26, D28): the requests made, and the output byte for byte as patronictl 3.2 prints
it (the docs' examples where there is one), prompts answered through the runner, --force skipping them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_members import (
    HEALTHY,
    TITLE,
    FakeCluster,
    batman,
    batman_members,
    config_file,
    havenctl,
    node,
    normalized,
    table,
)

__all__ = ["batman"]  # the fixture

SWITCHED = table(
    " Cluster: batman (7277694203142172922) ",
    [
        "| postgresql0 | 127.0.0.1:5432 | Replica | stopped |    |   unknown |",
        "| postgresql1 | 127.0.0.1:5433 | Replica | running |  5 |         0 |",
        "| postgresql2 | 127.0.0.1:5434 | Leader  | running |  5 |           |",
    ],
    "| Member      | Host           | Role    | State   | TL | Lag in MB |",
)


def switch_to_postgresql2(cluster: FakeCluster, answer: str) -> None:
    """The leader answers as a 3.2 node once the switchover is done: postgresql2 leads, postgresql0 restarts."""

    def done(_: object) -> tuple[int, str]:
        cluster.set_members(
            node("postgresql0", 5432, "replica", "stopped", None, lag="unknown"),
            node("postgresql1", 5433, state="running"),
            node("postgresql2", 5434, "leader", "running"),
        )
        return 200, answer

    cluster["postgresql0"].route("POST", "/switchover", done)
    cluster["postgresql0"].route("POST", "/failover", done)


def test_e21_switchover_with_force_prints_both_topologies(batman: FakeCluster, tmp_path: Path) -> None:
    switch_to_postgresql2(batman, 'Successfully switched over to "postgresql2"')
    result = havenctl(
        config_file(tmp_path, batman),
        *("switchover", "batman", "--leader", "postgresql0", "--candidate", "postgresql2", "--force"),
    )
    assert result.exit_code == 0, result.output
    assert normalized(result.stdout) == (
        "Current cluster topology\n" + HEALTHY + 'TS Successfully switched over to "postgresql2"\n' + SWITCHED
    )  # patroni-docs.txt L3659-3675
    assert batman.unsafe_calls() == {"postgresql0": [("POST", "/switchover")]}
    assert batman["postgresql0"].bodies("POST", "/switchover") == [
        {"leader": "postgresql0", "candidate": "postgresql2"}
    ]


def test_e21_switchover_prompts_for_everything_it_was_not_given(batman: FakeCluster, tmp_path: Path) -> None:
    switch_to_postgresql2(batman, 'Successfully switched over to "postgresql2"')
    result = havenctl(config_file(tmp_path, batman), "switchover", input="\npostgresql2\n\ny\n")
    assert result.exit_code == 0, result.output
    assert normalized(result.stdout) == (
        "Current cluster topology\n"
        + HEALTHY
        + "Primary [postgresql0]: \n"
        + "Candidate ['postgresql1', 'postgresql2'] []: postgresql2\n"
        + "When should the switchover take place (e.g. NEXT-HOUR )  [now]: \n"
        + "Are you sure you want to switchover cluster batman, demoting current leader postgresql0? [y/N]: y\n"
        + 'TS Successfully switched over to "postgresql2"\n'
        + SWITCHED
    )
    assert batman["postgresql0"].bodies("POST", "/switchover") == [
        {"leader": "postgresql0", "candidate": "postgresql2"}
    ]


def test_e21_switchover_without_a_candidate_lets_the_leader_choose(batman: FakeCluster, tmp_path: Path) -> None:
    switch_to_postgresql2(batman, 'Successfully switched over to "postgresql2"')
    result = havenctl(config_file(tmp_path, batman), "switchover", "--force")
    assert result.exit_code == 0, result.output
    assert batman["postgresql0"].bodies("POST", "/switchover") == [{"leader": "postgresql0"}]


def test_e21_scheduled_switchover(batman: FakeCluster, tmp_path: Path) -> None:
    at = "2030-09-13T18:00:00-03:00"

    def scheduled(_: object) -> tuple[int, str]:
        batman.body["scheduled_switchover"] = {"at": at, "from": "postgresql0", "to": "postgresql2"}
        return 202, "Switchover scheduled"

    batman["postgresql0"].route("POST", "/switchover", scheduled)
    result = havenctl(
        config_file(tmp_path, batman),
        *(
            "switchover",
            "--leader",
            "postgresql0",
            "--candidate",
            "postgresql2",
            "--scheduled",
            "2030-09-13T18:00-03:00",
        ),
        input="y\n",
    )
    assert result.exit_code == 0, result.output
    assert normalized(result.stdout) == (
        "Current cluster topology\n"
        + HEALTHY
        + f"Are you sure you want to schedule switchover of cluster batman at {at}, demoting current leader "
        + "postgresql0? [y/N]: y\n"
        + "TS Switchover scheduled\n"
        + HEALTHY
        + f" Switchover scheduled at: {at}\n"
        + "                    from: postgresql0\n"
        + "                      to: postgresql2\n"
    )  # L3680-3695
    assert batman["postgresql0"].bodies("POST", "/switchover") == [
        {"leader": "postgresql0", "candidate": "postgresql2", "scheduled_at": at}
    ]


def test_e21_aborted_switchover_sends_nothing(batman: FakeCluster, tmp_path: Path) -> None:
    result = havenctl(config_file(tmp_path, batman), "switchover", "--candidate", "postgresql1", input="\n\nN\n")
    assert result.exit_code == 1
    assert result.stdout.endswith("demoting current leader postgresql0? [y/N]: N\n")
    assert result.stderr == "Error: Aborting switchover\n"
    assert batman.unsafe_calls() == {}


def test_e21_switchover_refusals(batman: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, batman)
    batman.set_members(*batman_members()[:2], node("postgresql2", 5434, tags={"nofailover": True}))
    cases = {
        ("--leader", "postgresql1"): "Error: Member postgresql1 is not the leader of cluster batman\n",
        ("--candidate", "postgresql0"): "Error: Member postgresql0 is already the leader of cluster batman\n",
        ("--candidate", "postgresql2"): (
            "Error: Member postgresql2 does not exist in cluster batman or is tagged as nofailover\n"
        ),
        ("--scheduled", "tomorrow"): (
            "Error: Unable to parse scheduled timestamp (tomorrow). It should be in an unambiguous format "
            "(e.g. ISO 8601)\n"
        ),
    }
    for args, error in cases.items():
        result = havenctl(config, "switchover", "--force", *args)
        assert (result.exit_code, result.stderr) == (1, error), args
    batman.set_members(*batman_members(), pause=True)
    result = havenctl(config, "switchover", "--force", "--scheduled", "2030-01-01T00:00+00:00")
    assert result.stderr == "Error: Can't schedule switchover in the paused state\n"
    batman.set_members(*batman_members()[1:])
    assert havenctl(config, "switchover", "--force").stderr == "Error: This cluster has no leader\n"
    assert batman.unsafe_calls() == {}


def test_e21_a_refused_switchover_shows_the_leaders_answer(batman: FakeCluster, tmp_path: Path) -> None:
    batman["postgresql0"].route(
        "POST", "/switchover", (412, "switchover is not possible: no good candidates have been found")
    )
    result = havenctl(config_file(tmp_path, batman), "switchover", "--force")
    assert result.exit_code == 0  # as patronictl
    assert result.stdout.endswith(
        "Switchover failed, details: 412, switchover is not possible: no good candidates have been found\n"
    )


def test_e21_an_old_api_without_switchover_gets_a_failover_request(batman: FakeCluster, tmp_path: Path) -> None:
    batman["postgresql0"].route("POST", "/switchover", (501, "Server does not support this operation"))
    batman["postgresql0"].route("POST", "/failover", (200, 'Successfully failed over to "postgresql1"'))
    result = havenctl(config_file(tmp_path, batman), "switchover", "--candidate", "postgresql1", "--force")
    assert result.exit_code == 0, result.output
    assert batman.unsafe_calls() == {"postgresql0": [("POST", "/switchover"), ("POST", "/failover")]}
    assert 'Successfully failed over to "postgresql1"' in result.stdout


def test_e21_no_dcs_fallback_when_the_leaders_api_is_down(batman: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, batman)
    batman["postgresql0"].close()
    result = havenctl(config, "switchover", "--candidate", "postgresql1", "--force")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Could not switchover using Patroni api (")
    assert "havenctl does not fall back to writing /failover into the DCS" in result.stderr
    assert batman.unsafe_calls() == {}


def test_e9_failover_with_force(batman: FakeCluster, tmp_path: Path) -> None:
    switch_to_postgresql2(batman, 'Successfully failed over to "postgresql2"')
    result = havenctl(config_file(tmp_path, batman), "failover", "batman", "--candidate", "postgresql2", "--force")
    assert result.exit_code == 0, result.output
    assert normalized(result.stdout) == (
        "Current cluster topology\n" + HEALTHY + 'TS Successfully failed over to "postgresql2"\n' + SWITCHED
    )  # L2495-2511
    assert batman["postgresql0"].bodies("POST", "/failover") == [{"candidate": "postgresql2"}]


def test_e9_failover_prompt_excludes_the_leader_and_nofailover_members(batman: FakeCluster, tmp_path: Path) -> None:
    batman.set_members(*batman_members()[:2], node("postgresql2", 5434, tags={"nofailover": True}))
    batman["postgresql0"].route("POST", "/failover", (200, 'Successfully failed over to "postgresql1"'))
    result = havenctl(config_file(tmp_path, batman), "failover", input="postgresql1\ny\n")
    assert result.exit_code == 0, result.output
    assert "\nCandidate ['postgresql1'] []: postgresql1\n" in result.stdout
    assert "Are you sure you want to failover cluster batman, demoting current leader postgresql0? [y/N]: y\n" in (
        result.stdout
    )
    empty = havenctl(config_file(tmp_path, batman), "failover", input="\n")
    assert empty.stderr == "Error: Failover could be performed only to a specific candidate\n"


def test_e9_failover_to_an_asynchronous_node_asks_first(batman: FakeCluster, tmp_path: Path) -> None:
    batman.set_members(*batman_members()[:1], node("postgresql1", 5433, "sync_standby"), batman_members()[2])
    batman["postgresql0"].route("POST", "/failover", (200, 'Successfully failed over to "postgresql2"'))
    config = config_file(tmp_path, batman)
    refused = havenctl(config, "failover", "--candidate", "postgresql2", input="N\n")
    assert refused.exit_code == 1 and refused.stderr == "Error: Aborting failover\n"
    assert "Are you sure you want to failover to the asynchronous node postgresql2? [y/N]: N\n" in refused.stdout
    accepted = havenctl(config, "failover", "--candidate", "postgresql2", input="y\ny\n")
    assert accepted.exit_code == 0, accepted.output
    assert batman.unsafe_calls() == {"postgresql0": [("POST", "/failover")]}
    to_sync = havenctl(config, "failover", "--candidate", "postgresql1", input="y\n")
    assert "asynchronous" not in to_sync.stdout


def test_e9_failover_without_a_leader_goes_to_the_candidate(batman: FakeCluster, tmp_path: Path) -> None:
    batman.set_members(node("postgresql0", 5432, "replica", "stopped", None, lag="unknown"), *batman_members()[1:])
    batman["postgresql1"].route("POST", "/failover", (200, 'Successfully failed over to "postgresql1"'))
    result = havenctl(config_file(tmp_path, batman), "failover", "--candidate", "postgresql1", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Are you sure you want to failover cluster batman? [y/N]: y\n" in result.stdout
    assert batman.unsafe_calls() == {"postgresql1": [("POST", "/failover")]}


def test_e9_failover_with_a_leader_is_a_deprecated_switchover(batman: FakeCluster, tmp_path: Path) -> None:
    switch_to_postgresql2(batman, 'Successfully switched over to "postgresql2"')
    result = havenctl(
        config_file(tmp_path, batman), "failover", "--leader", "postgresql0", "--candidate", "postgresql2", "--force"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "Supplying a leader name using this command is deprecated and will be removed in a future version of "
        "Patroni, change your scripts to use `switchover` instead.\nExecuting switchover!\nCurrent cluster topology\n"
    )
    assert batman.unsafe_calls() == {"postgresql0": [("POST", "/switchover")]}


def test_e13_pause_patches_the_leader_first(batman: FakeCluster, tmp_path: Path) -> None:
    batman["postgresql0"].route("PATCH", "/config", (200, {"pause": True}))
    result = havenctl(config_file(tmp_path, batman), "pause")
    assert (result.exit_code, result.stdout) == (0, "Success: cluster management is paused\n")
    assert batman["postgresql0"].bodies("PATCH", "/config") == [{"pause": True}]
    assert batman.unsafe_calls() == {"postgresql0": [("PATCH", "/config")]}


def test_e14_resume_goes_to_the_next_member_when_the_leader_is_down(
    batman: FakeCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batman.set_members(*batman_members(), pause=True)
    config = config_file(tmp_path, batman)
    batman["postgresql0"].close()
    batman["postgresql1"].route("PATCH", "/config", (200, {}))
    result = havenctl(config, "resume")
    assert (result.exit_code, result.stdout) == (0, "Success: cluster management is resumed\n")
    assert "Member postgresql0 is not accessible" in caplog.messages  # a WARNING on stderr, as patronictl logs it
    assert batman["postgresql1"].bodies("PATCH", "/config") == [{"pause": None}]


def test_e13_pause_and_resume_refusals(batman: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, batman)
    assert havenctl(config, "resume").stderr == "Error: Cluster is not paused\n"
    batman["postgresql0"].route("PATCH", "/config", (503, "no config"))
    assert havenctl(config, "pause").stdout == "Failed: pause cluster management status code=503, (no config)\n"
    batman.set_members(*batman_members(), pause=True)
    assert havenctl(config, "pause").stderr == "Error: Cluster is already paused\n"
    batman.set_members(*(dict(m, api_url=None) for m in batman_members()), pause=True)
    assert havenctl(config, "resume").stderr == "Error: Can not find accessible cluster member\n"


def test_e13_pause_wait_until_every_member_shows_it(batman: FakeCluster, tmp_path: Path) -> None:
    def paused(_: object) -> tuple[int, dict[str, bool]]:
        batman.set_members(*batman_members(), pause=True)  # every GET /patroni now shows "pause": true
        return 200, {"pause": True}

    batman["postgresql0"].route("PATCH", "/config", paused)
    result = havenctl(config_file(tmp_path, batman), "pause", "batman", "--wait")
    assert (result.exit_code, result.stdout) == (
        0,
        "'pause' request sent, waiting until it is recognized by all nodes\nSuccess: cluster management is paused\n",
    )  # L3016-3020
    assert all(("GET", "/patroni") in m.calls() for m in batman)


def test_e13_list_shows_the_pause_as_the_docs_do(batman: FakeCluster, tmp_path: Path) -> None:
    batman.set_members(*batman_members(), pause=True)
    result = havenctl(config_file(tmp_path, batman), "list")
    assert result.stdout == table(TITLE, HEALTHY.split("\n")[3:6]) + " Maintenance mode: on\n"

"""havenctl restart, reload, reinit, flush and dsn against members' REST APIs played by local HTTP servers (E7, E10,
E16, E17, E19, D27, D29-D32): one request per chosen member, the output as the docs show it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.fake_members import (
    HEALTHY,
    FakeCluster,
    batman,
    batman_members,
    config_file,
    havenctl,
    normalized,
    table,
)
from tests.support.ports import free_port

__all__ = ["batman"]  # the fixture

SCHEDULED = "2023-09-12T17:17:00+00:00"
WITH_SCHEDULE = table(
    " Cluster: batman (7277694203142172922) ",
    [
        f"| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |           | {SCHEDULED} |",
        f"| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |         0 | {SCHEDULED} |",
        f"| postgresql2 | 127.0.0.1:5434 | Replica | streaming |  5 |         0 | {SCHEDULED} |",
    ],
    "| Member      | Host           | Role    | State     | TL | Lag in MB | Scheduled restart         |",
)


def answer_everywhere(cluster: FakeCluster, method: str, path: str, answer: Any) -> None:
    for member in cluster:
        member.route(method, path, answer)


def test_e19_restart_everyone_with_force(batman: FakeCluster, tmp_path: Path) -> None:
    answer_everywhere(batman, "POST", "/restart", (200, "restarted successfully"))
    result = havenctl(config_file(tmp_path, batman), "restart", "batman", "--force")
    assert (result.exit_code, result.stdout) == (
        0,
        HEALTHY
        + "Success: restart on member postgresql0\n"
        + "Success: restart on member postgresql1\n"
        + "Success: restart on member postgresql2\n",
    )  # patroni-docs.txt L3466-3476
    assert batman.unsafe_calls() == {
        name: [("POST", "/restart")] for name in ("postgresql0", "postgresql1", "postgresql2")
    }
    assert batman["postgresql1"].bodies("POST", "/restart") == [{}]


def test_e19_restart_any_picks_one(batman: FakeCluster, tmp_path: Path) -> None:
    answer_everywhere(batman, "POST", "/restart", (200, "restarted successfully"))
    result = havenctl(config_file(tmp_path, batman), "restart", "batman", "--any", "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(HEALTHY) and result.stdout.count("Success: restart on member ") == 1
    assert sum(len(calls) for calls in batman.unsafe_calls().values()) == 1


def test_e19_scheduled_restart_with_conditions(batman: FakeCluster, tmp_path: Path) -> None:
    answer_everywhere(batman, "POST", "/restart", (202, "Restart scheduled"))
    result = havenctl(
        config_file(tmp_path, batman),
        *("restart", "batman", "-r", "replica", "--scheduled", "2023-09-13T18:00-03:00", "--pending"),
        *("--pg-version", "15.4", "--timeout", "30s", "--force"),
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        HEALTHY + "Success: restart scheduled on member postgresql1\nSuccess: restart scheduled on member postgresql2\n"
    )  # L3483-3491
    assert batman["postgresql2"].bodies("POST", "/restart") == [
        {"restart_pending": True, "postgres_version": "15.4", "schedule": "2023-09-13T18:00:00-03:00", "timeout": "30s"}
    ]


def test_e19_restart_prompts(batman: FakeCluster, tmp_path: Path) -> None:
    answer_everywhere(batman, "POST", "/restart", (200, "restarted successfully"))
    result = havenctl(config_file(tmp_path, batman), "restart", "batman", "postgresql1", input="\ny\n9.6\n")
    assert result.exit_code == 1
    assert normalized(result.stdout) == (
        HEALTHY
        + "When should the restart take place (e.g. NEXT-HOUR)  [now]: \n"
        + "Are you sure you want to restart members postgresql1? [y/N]: y\n"
        + "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2)  []: 9.6\n"
    )
    assert result.stderr == "Error: Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6\n"
    result = havenctl(config_file(tmp_path, batman), "restart", "batman", "postgresql1", input="now\ny\n\n")
    assert result.stdout.endswith("Success: restart on member postgresql1\n")
    aborted = havenctl(config_file(tmp_path, batman), "restart", "batman", input="2030-01-01T00:00+00:00\nN\n")
    assert aborted.stdout.endswith(
        "Are you sure you want to schedule restart of members postgresql0, postgresql1, postgresql2 at "
        "2030-01-01 00:00:00+00:00? [y/N]: N\n"
    )
    assert aborted.stderr == "Error: Aborted scheduled restart\n"
    assert batman.unsafe_calls() == {"postgresql1": [("POST", "/restart")]}


def test_e19_restart_failures_and_a_rescheduled_restart(batman: FakeCluster, tmp_path: Path) -> None:
    batman.set_members(*batman_members(scheduled_restart={"schedule": SCHEDULED}))
    batman["postgresql0"].route("POST", "/restart", (503, "restart conditions are not satisfied"))
    batman["postgresql1"].route("POST", "/restart", (409, "Another restart is already scheduled"))
    answer_everywhere(batman, "DELETE", "/restart", (200, "scheduled restart deleted"))
    config = config_file(tmp_path, batman)
    result = havenctl(
        config, "restart", "batman", "postgresql0", "postgresql1", "--scheduled", "2030-01-01T00:00Z", "--force"
    )
    assert result.stdout == (
        WITH_SCHEDULE
        + "Failed: restart for member postgresql0, status code=503, (restart conditions are not satisfied)\n"
        + "Failed: another restart is already scheduled on member postgresql1\n"
    )
    # --force replaces a scheduled restart: DELETE /restart first (silently), as patronictl.
    assert batman.unsafe_calls()["postgresql1"] == [("DELETE", "/restart"), ("POST", "/restart")]
    batman.set_members(*batman_members(), pause=True)
    paused = havenctl(config, "restart", "batman", "--scheduled", "2030-01-01T00:00Z", "--force")
    assert paused.stderr == "Error: Can't schedule restart in the paused state\n"


def test_e17_reload(batman: FakeCluster, tmp_path: Path) -> None:
    answer_everywhere(batman, "POST", "/reload", (202, "reload scheduled"))
    batman.config["loop_wait"] = 7
    result = havenctl(config_file(tmp_path, batman), "reload", "batman", "--force")
    assert result.stdout == HEALTHY + "".join(
        f"Reload request received for member {name} and will be processed within 7 seconds\n"
        for name in ("postgresql0", "postgresql1", "postgresql2")
    )  # L3320-3328 (with loop_wait 7)
    batman["postgresql2"].route("POST", "/reload", (200, "nothing to do"))
    batman["postgresql1"].route("POST", "/reload", (500, "boom"))
    result = havenctl(config_file(tmp_path, batman), "reload", "batman", "-r", "replica", input="y\n")
    assert result.stdout == (
        HEALTHY
        + "Are you sure you want to reload members postgresql1, postgresql2? [y/N]: y\n"
        + "Failed: reload for member postgresql1, status code=500, (boom)\n"
        + "No changes to apply on member postgresql2\n"
    )
    none = havenctl(config_file(tmp_path, batman), "reload", "batman", "postgresql0", "-r", "replica", "--force")
    assert none.stderr == "Error: No replica among provided members\n"


def test_e16_reinit_named_replicas(batman: FakeCluster, tmp_path: Path) -> None:
    answer_everywhere(batman, "POST", "/reinitialize", (200, "reinitialize started"))
    config = config_file(tmp_path, batman)
    result = havenctl(config, "reinit", "batman", "postgresql1", "postgresql2", "--force")
    assert result.stdout == (
        HEALTHY + "Success: reinitialize for member postgresql1\nSuccess: reinitialize for member postgresql2\n"
    )  # L3220-3230
    assert batman["postgresql1"].bodies("POST", "/reinitialize") == [{"force": True}]
    nothing = havenctl(config, "reinit", "batman", "--force")  # no member named: nothing is done
    assert (nothing.exit_code, nothing.stdout) == (0, HEALTHY)
    asked = havenctl(config, "reinit", "batman", input="postgresql0\n")
    assert asked.stdout.endswith(
        "Which member do you want to reinitialize [postgresql1, postgresql2]? []: postgresql0\n"
    )
    assert asked.stderr == "Error: postgresql0 is not a member of cluster\n"
    assert batman.unsafe_calls() == {
        "postgresql1": [("POST", "/reinitialize")],
        "postgresql2": [("POST", "/reinitialize")],
    }


def test_e16_reinit_can_cancel_a_running_action_and_waits(batman: FakeCluster, tmp_path: Path) -> None:
    def busy_unless_forced(request: Any) -> tuple[int, str]:
        if request.body.get("force"):
            return 200, "reinitialize started"  # and GET /patroni shows "running": done at the first look
        return 503, "restart already in progress"

    batman["postgresql2"].route("POST", "/reinitialize", busy_unless_forced)
    result = havenctl(config_file(tmp_path, batman), "reinit", "batman", "postgresql2", "--wait", input="y\ny\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        HEALTHY
        + "Are you sure you want to reinitialize members postgresql2? [y/N]: y\n"
        + "Failed: reinitialize for member postgresql2, status code=503, (restart already in progress)\n"
        + "Do you want to cancel it and reinitialize anyway? [y/N]: y\n"
        + "Success: reinitialize for member postgresql2\n"
        + "Waiting for reinitialize to complete on: postgresql2\n"
        + "Reinitialize is completed on: postgresql2\n"
    )  # L3240-3256
    assert batman["postgresql2"].bodies("POST", "/reinitialize") == [{"force": False}, {"force": True}]


def test_e10_flush_scheduled_restarts(batman: FakeCluster, tmp_path: Path) -> None:
    batman.set_members(*batman_members(scheduled_restart={"schedule": SCHEDULED}))
    answer_everywhere(batman, "DELETE", "/restart", (200, "scheduled restart deleted"))
    config = config_file(tmp_path, batman)
    replicas = havenctl(config, "flush", "batman", "restart", "-r", "replica", "--force")
    assert replicas.stdout == WITH_SCHEDULE + (
        "Success: flush scheduled restart for member postgresql1\n"
        "Success: flush scheduled restart for member postgresql2\n"
    )  # L2596-2606
    named = havenctl(config, "flush", "batman", "postgresql0", "postgresql1", "restart", "--force")
    assert named.stdout == WITH_SCHEDULE + (
        "Success: flush scheduled restart for member postgresql0\n"
        "Success: flush scheduled restart for member postgresql1\n"
    )  # L2610-2622
    batman.set_members(*batman_members())
    assert havenctl(config, "flush", "batman", "postgresql2", "restart", "--force").stdout == (
        HEALTHY + "No scheduled restart for member postgresql2\n"
    )


def test_e10_flush_a_scheduled_switchover(batman: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, batman)
    assert havenctl(config, "flush", "batman", "switchover", "--force").stdout == "No pending scheduled switchover\n"
    batman.set_members(
        *batman_members(), scheduled_switchover={"at": "2030-01-01T00:00:00+00:00", "from": "postgresql0"}
    )
    batman["postgresql0"].route("DELETE", "/switchover", (409, "Conflict"))
    batman["postgresql1"].route("DELETE", "/switchover", (200, "scheduled switchover deleted"))
    result = havenctl(config, "flush", "batman", "switchover", "--force")
    assert result.stdout == (
        "Failed: member=postgresql0, status_code=409, (Conflict)\nSuccess: scheduled switchover deleted\n"
    )  # L2587-2588
    batman["postgresql1"].route("DELETE", "/switchover", (404, "no switchover is scheduled"))
    assert havenctl(config, "flush", "batman", "switchover").stdout.endswith("Failed: no switchover is scheduled\n")
    dead = [dict(m, api_url=f"http://127.0.0.1:{free_port()}/patroni") for m in batman_members()]
    batman.set_members(*dead, scheduled_switchover={"at": "2030-01-01T00:00:00+00:00"})
    unreachable = havenctl(config, "flush", "batman", "switchover", "--force")
    assert unreachable.exit_code == 1
    assert "Could not find any accessible member of cluster batman" in unreachable.stderr


def test_e7_dsn(batman: FakeCluster, tmp_path: Path) -> None:
    config = config_file(tmp_path, batman)
    assert havenctl(config, "dsn", "batman", "-r", "primary").stdout == "host=127.0.0.1 port=5432\n"  # L2291-2294
    assert havenctl(config, "dsn", "batman", "--member", "postgresql1").stdout == "host=127.0.0.1 port=5433\n"
    assert havenctl(config, "dsn").stdout == "host=127.0.0.1 port=5432\n"
    assert havenctl(config, "dsn", "-r", "replica").stdout == "host=127.0.0.1 port=5433\n"
    assert havenctl(config, "dsn", "-r", "standby-leader").stderr == "Error: Can not find a suitable member\n"
    both = havenctl(config, "dsn", "-r", "replica", "-m", "postgresql1")
    assert both.stderr == "Error: --role and --member are mutually exclusive options\n"

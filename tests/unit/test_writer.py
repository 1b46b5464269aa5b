"""The pure parts of the write-load tools: the Writer's report arithmetic and the HAProxy configuration."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.haproxy import Backend, render_config
from tests.support.writer import Throughput, WriterReport, compare, longest_gap, per_second, write_id

T0 = 1000.0
WALL = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def report(acked: Collection[int], in_doubt: Collection[int] = (), failed: Collection[int] = ()) -> WriterReport:
    times = tuple(sorted(T0 + 0.01 * k for k in range(len(acked))))
    return WriterReport(
        clients=1,
        started=T0,
        started_wall=WALL,
        duration_s=2.0,
        acknowledged_ids=frozenset(acked),
        in_doubt_ids=frozenset(in_doubt),
        failed_ids=frozenset(failed),
        ack_times=times,
        warned_ids=frozenset(),
        duplicates=(),
        errors=0,
        error_kinds={},
        error_log=(),
        stuck_clients=(),
        longest_gap=longest_gap(times, T0, WALL),
        leading_gap_s=0.0,
        trailing_gap_s=0.0,
        throughput=per_second(times, T0, T0 + 2.0),
    )


def test_ids_are_unique_per_client_and_sequence() -> None:
    assert write_id(3, 17) == 3_000_000_017
    assert len({write_id(c, s) for c in range(1, 5) for s in range(1, 1000)}) == 4 * 999


def test_longest_gap_is_the_widest_space_between_consecutive_commits_and_says_when() -> None:
    gap = longest_gap([T0 + 0.1, T0 + 0.2, T0 + 1.5, T0 + 1.6], T0, WALL)
    assert gap is not None
    assert (gap.start, gap.end) == (T0 + 0.2, T0 + 1.5)
    assert round(gap.seconds, 6) == 1.3 and round(gap.start_offset_s, 6) == 0.2
    assert gap.start_wall == WALL + timedelta(seconds=gap.start_offset_s)
    assert str(gap).startswith("1.300s from t+0.200s")


def test_no_gap_without_two_commits() -> None:
    assert longest_gap([], T0, WALL) is None
    assert longest_gap([T0 + 1], T0, WALL) is None


def test_throughput_counts_whole_seconds_only() -> None:
    times = [T0 + 0.1, T0 + 0.5, T0 + 2.2, T0 + 3.9, T0 + 3.95]
    tp = per_second(times, T0, T0 + 3.5)  # the partial fourth second is left out
    assert tp.per_second == (2, 0, 1)
    assert (tp.min, tp.max, tp.median, tp.zero_seconds) == (0, 2, 1, 1)
    assert tp.mean == 1.0
    assert Throughput(()).mean == 0.0 and Throughput(()).max == 0


def test_compare_finds_lost_committed_in_doubt_phantoms_and_duplicates() -> None:
    r = report(acked={1, 2, 3}, in_doubt={4, 5}, failed={6, 7})
    verified = compare(r, {1: 1, 3: 2, 4: 1, 7: 1, 99: 1})
    assert verified.lost == (2,)
    assert verified.in_doubt_committed == (4,)
    assert verified.phantoms == (7,)
    assert verified.duplicates == (3,)
    assert verified.is_verified and not r.is_verified
    assert (verified.acknowledged, verified.in_doubt, verified.failed) == (3, 2, 2)


def test_duplicate_acknowledgements_survive_verification() -> None:
    r = dataclasses.replace(report(acked={1}), duplicates=(1,))
    assert compare(r, {1: 1}).duplicates == (1,)


def test_acks_between_counts_commits_in_a_window() -> None:
    r = report(acked={1, 2, 3, 4})  # at T0, T0 + .01, T0 + .02, T0 + .03
    assert r.acks_between(T0 + 0.005, T0 + 0.025) == 2
    assert "4 acknowledged" in r.summary() and "unverified" in r.summary()


def test_haproxy_config_checks_the_rest_api_and_shuts_sessions_of_a_server_marked_down() -> None:
    text = render_config(
        [Backend("node1", 6001, 9001), Backend("node2", 6002, 9002, rest_host="127.0.0.2")],
        port=7100,
        stats_port=7101,
        stats_socket=Path("/tmp/x/admin.sock"),
        check_method="OPTIONS",
        check_path="/replica",
        listen_name="replica",
    )
    lines = [line.strip() for line in text.splitlines()]
    assert "mode tcp" in lines and "bind 127.0.0.1:7100" in lines and "bind 127.0.0.1:7101" in lines
    assert "option httpchk OPTIONS /replica" in lines
    assert "http-check expect status 200" in lines
    assert "default-server inter 100ms fall 2 rise 2 on-marked-down shutdown-sessions" in lines
    assert "server node1 127.0.0.1:6001 maxconn 100 check port 9001" in lines
    assert "server node2 127.0.0.1:6002 maxconn 100 check addr 127.0.0.2 port 9002" in lines
    assert "stats socket /tmp/x/admin.sock mode 600 level admin" in lines
    assert "listen replica" in lines

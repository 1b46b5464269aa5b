"""The fault probes' analysis, without sockets: overlapping writes on two nodes, writing periods, latency stats."""

from __future__ import annotations

import math

from tests.support.probe import (
    Attempt,
    ProbeLog,
    Sample,
    find_overlaps,
    format_timeline,
    latency_stats,
    longest_gap,
    percentile,
    summarize,
    writer_periods,
)


def ok(node: str, sent: float, answered: float) -> Attempt:
    return Attempt(node, sent, answered, True)


def failed(node: str, sent: float, answered: float, error: str = "read-only") -> Attempt:
    return Attempt(node, sent, answered, False, error)


def test_no_overlap_when_one_node_writes_after_the_other_stopped() -> None:
    attempts = [ok("a", 0.0, 0.01), ok("a", 0.05, 0.06), failed("a", 0.1, 0.2), ok("b", 0.3, 0.31)]
    assert find_overlaps(attempts) == []


def test_two_successes_on_different_nodes_at_the_same_time_overlap() -> None:
    a, b = ok("a", 1.0, 1.5), ok("b", 1.2, 1.3)
    assert find_overlaps([b, a]) == [(a, b)]


def test_touching_intervals_overlap() -> None:
    a, b = ok("a", 1.0, 2.0), ok("b", 2.0, 2.1)
    assert find_overlaps([a, b]) == [(a, b)]


def test_a_slow_success_overlaps_every_later_success_it_spans() -> None:
    slow = ok("a", 0.0, 10.0)
    fast = [ok("b", t, t + 0.01) for t in (1.0, 2.0, 3.0)]
    after = ok("b", 10.5, 10.6)
    assert find_overlaps([slow, *fast, after]) == [(slow, f) for f in fast]


def test_overlaps_on_the_same_node_are_not_a_violation() -> None:
    assert find_overlaps([ok("a", 0.0, 1.0), ok("a", 0.5, 0.6)]) == []


def test_failures_never_overlap() -> None:
    assert find_overlaps([ok("a", 0.0, 1.0), failed("b", 0.2, 0.3), Attempt("c", 0.1, 2.0, False, "x", True)]) == []


def test_three_writers_at_once_give_every_pair() -> None:
    a, b, c = ok("a", 0.0, 1.0), ok("b", 0.1, 1.0), ok("c", 0.2, 1.0)
    assert find_overlaps([c, a, b]) == [(a, b), (a, c), (b, c)]


def test_an_earlier_success_that_ended_drops_out_of_the_sweep() -> None:
    early, later_a, b = ok("a", 0.0, 0.1), ok("a", 0.5, 0.9), ok("b", 0.2, 0.4)
    assert find_overlaps([early, later_a, b]) == []


def test_writer_periods_split_on_failures_and_per_node() -> None:
    attempts = [
        ok("a", 0.0, 0.01),
        ok("a", 0.05, 0.07),
        failed("a", 0.1, 0.11),
        ok("a", 0.2, 0.21),
        failed("b", 0.0, 0.01),
        ok("b", 5.0, 5.02),
    ]
    periods = writer_periods(attempts)
    assert [(p.start, p.end, p.writes) for p in periods["a"]] == [(0.0, 0.07, 2), (0.2, 0.21, 1)]
    assert [(p.start, p.end, p.writes) for p in periods["b"]] == [(5.0, 5.02, 1)]


def test_a_node_that_never_wrote_has_no_period() -> None:
    assert writer_periods([failed("c", 0.0, 0.1)]) == {"c": []}


def test_longest_gap_counts_the_window_edges() -> None:
    attempts = [ok("a", 1.0, 1.1), ok("a", 1.2, 1.3), failed("a", 1.4, 1.5), ok("a", 4.0, 4.1), ok("b", 2.0, 2.1)]
    assert math.isclose(longest_gap(attempts, "a", 0.0, 5.0), 4.1 - 1.3)
    assert longest_gap(attempts, "c", 0.0, 5.0) == 5.0


def test_probe_log_questions() -> None:
    log = ProbeLog()
    for x in [ok("a", 0.0, 0.1), ok("a", 1.0, 1.1), failed("a", 2.0, 2.1), ok("b", 3.0, 3.1), ok("b", 4.0, 4.1)]:
        log.add(x)
    assert log.overlaps() == []
    assert log.writers() == {"a", "b"}
    assert log.writers(since=2.0) == {"b"}
    last = log.last_ok("a")
    assert last is not None and last.t_sent == 1.0
    first = log.first_ok("b", after=2.5)
    assert first is not None and first.t_sent == 3.0
    assert log.first_ok("a", after=1.5) is None
    first_any = log.first_ok_any(["a", "b"], after=0.5)
    assert first_any is not None and first_any.node == "a"
    log.add(ok("a", 3.05, 3.2))
    assert log.overlaps() == [(ok("b", 3.0, 3.1), ok("a", 3.05, 3.2))]
    assert log.overlaps(since=3.5) == []
    text = log.timeline(since=0.0, marks={"fault": 2.0})
    assert "a:" in text and "b:" in text and "fault" in text


def test_format_timeline_shows_periods_relative_to_t0() -> None:
    text = format_timeline([ok("a", 10.0, 10.1), failed("a", 11.0, 11.1, "boom")], 9.0, {"stop": 10.5})
    assert "[+1.00s .. +1.10s] x1" in text
    assert "1 x boom" in text
    assert "+1.50s  stop" in text


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0


def test_latency_stats_and_summary_by_window() -> None:
    samples = [Sample("a", "/liveness", float(i), 0.001 * (i + 1), 200) for i in range(100)]
    samples.append(Sample("a", "/liveness", 50.5, 1.0, None, "timed out"))
    samples.append(Sample("b", "/primary", 1.0, 0.002, 503))
    stats = latency_stats(samples[:101])
    assert stats.count == 101 and stats.errors == 1
    assert stats.p50_ms == 50.0 and stats.p99_ms == 99.0 and stats.max_ms == 100.0
    assert stats.statuses == {200: 100}
    windowed = summarize(samples, since=10.0, until=19.0)
    assert list(windowed) == [("a", "/liveness")]
    assert windowed["a", "/liveness"].count == 10
    everything = summarize(samples)
    assert everything["b", "/primary"].statuses == {503: 1}
    only_errors = latency_stats([Sample("a", "/x", 0.0, 1.0, None, "refused")])
    assert only_errors.errors == 1 and math.isnan(only_errors.p99_ms)

"""Per-route statistics: rates, error rate, percentiles within their stated bound, the
window, split variants and target health, on an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.gateway.stats import WINDOW, RouteStats, TargetOutcome

OK = TargetOutcome("webhook", "http://h/ok", "delivered")
DEAD = TargetOutcome("webhook", "http://h/bad", "dead_lettered", "HTTP 503")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def route(stats: RouteStats, name: str = "r") -> dict[str, Any]:
    found: dict[str, Any] = stats.snapshot([name])["routes"][0]
    return found


def test_rates_errors_and_totals_over_their_windows() -> None:
    clock = Clock()
    stats = RouteStats(clock)
    for second in range(20):
        clock.now = 1_000_000 + second
        for _ in range(5):
            stats.record("r", None, 0.001, [OK])
        stats.record("r", None, 0.001, [DEAD])
    figures = route(stats)
    assert figures["events"] == 120
    assert figures["errors"] == figures["dead_letters"] == 20
    assert figures["rate"] == pytest.approx(6.0)  # the last 10 s
    assert figures["error_rate"] == pytest.approx(1 / 6)
    series = figures["series"]
    assert series["events"][-20:] == [6] * 20
    assert sum(series["events"]) == 120
    assert series["errors"][-1] == 1


def test_percentiles_are_never_below_the_true_value_nor_more_than_25_percent_above() -> None:
    stats = RouteStats(Clock())
    latencies = [0.0002 * 1.07**i for i in range(100)]
    for latency in latencies:
        stats.record("r", None, latency, [OK])
    figures = route(stats)
    ordered = sorted(latencies)
    true_p50, true_p99 = ordered[49], ordered[98]
    assert true_p50 <= figures["p50"] <= true_p50 * 1.25
    assert true_p99 <= figures["p99"] <= true_p99 * 1.25


def test_old_seconds_leave_the_window_and_a_quiet_route_reads_zero() -> None:
    clock = Clock()
    stats = RouteStats(clock)
    stats.record("r", None, 0.001, [DEAD])
    clock.now += WINDOW + 5
    figures = route(stats)
    assert figures["rate"] == 0
    assert figures["error_rate"] == 0
    assert figures["p99"] is None
    assert figures["events"] == 1  # totals since start stay
    assert route(stats, "never")["events"] == 0


def test_split_variants_and_target_health() -> None:
    clock = Clock()
    stats = RouteStats(clock)
    for variant in ["a", "a", "b"]:
        stats.record("split", variant, 0.001, [OK])
    stats.record("split", "b", 0.001, [DEAD])
    assert route(stats, "split")["variants"] == {"a": 2, "b": 2}
    targets = {t["address"]: t for t in stats.snapshot([])["targets"]}
    assert targets["http://h/ok"]["state"] == "ok"
    assert targets["http://h/bad"]["state"] == "failing"
    assert targets["http://h/bad"]["last_error"] == "HTTP 503"
    clock.now += 3
    stats.record("split", None, 0.001, [TargetOutcome("webhook", "http://h/bad", "delivered")])
    recovered = {t["address"]: t for t in stats.snapshot([])["targets"]}["http://h/bad"]
    assert recovered["state"] == "ok"
    assert recovered["failing_since"] is None


def test_a_count_records_that_many_dispatches_as_one_call_each_would() -> None:
    clock = Clock()
    one_by_one, at_once = RouteStats(clock), RouteStats(clock)
    for _ in range(7):
        one_by_one.record("r", "canary", 0.002, [OK, DEAD])
    at_once.record("r", "canary", 0.002, [OK, DEAD], 7)
    assert one_by_one.snapshot(["r"]) == at_once.snapshot(["r"])
    assert one_by_one.totals() == at_once.totals()
    figures = route(at_once)
    assert (figures["events"], figures["errors"], figures["dead_letters"]) == (7, 7, 7)
    assert figures["variants"] == {"canary": 7}

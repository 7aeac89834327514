"""The checker on hand-made histories: each defect it must report, and each mode's promise."""

from __future__ import annotations

import pytest

from tidings.chaos import MODES, Delivered, FaultWindow, History, Published, check
from tidings.chaos.history import HistoryWriter, read_history


def _pub(i: int, key: str = "a", seq: int | None = None, outcome: str = "ok") -> Published:
    return Published(f"e{i}", key, i if seq is None else seq, outcome, float(i))  # type: ignore[arg-type]


def _got(i: int, t: float, handler: str = "h", key: str = "a", seq: int | None = None) -> Delivered:
    return Delivered(f"e{i}", key, i if seq is None else seq, handler, "p0", t)


def test_a_clean_history_is_ok_in_every_mode() -> None:
    history = History([_pub(i) for i in range(5)], [_got(i, i + 0.5) for i in range(5)])
    for mode in MODES:
        verdict = check(history, mode)
        assert verdict.ok, verdict.summary()
        assert verdict.max_delay == pytest.approx(0.5)
        assert verdict.convergence is None


def test_lost_acknowledged_events_violate_at_least_once_only() -> None:
    history = History([_pub(0), _pub(1), _pub(2, outcome="unknown")], [_got(0, 1.0)])
    verdict = check(history, "at_least_once", handlers=["h"])
    assert verdict.lost == ["e1"]  # the unknown one may be lost
    assert not verdict.ok
    assert check(history, "at_most_once", handlers=["h"]).ok


def test_phantoms_include_deliveries_of_failed_publishes() -> None:
    history = History(
        [_pub(0), _pub(1, outcome="failed")], [_got(0, 1.0), _got(1, 2.0), _got(9, 3.0)]
    )
    verdict = check(history, "at_least_once")
    assert verdict.phantoms == ["e1", "e9"]
    assert "2 phantom delivery(ies)" in verdict.violations


def test_duplicates_are_counted_per_handler_and_forbidden_at_most_once() -> None:
    history = History(
        [_pub(0), _pub(1)],
        [_got(0, 1.0), _got(0, 1.1), _got(0, 1.2), _got(1, 2.0), _got(1, 2.0, handler="g")],
    )
    least = check(history, "at_least_once", handlers=["h"])
    assert least.duplicates == {"h": 2}
    assert least.ok
    assert not check(history, "at_most_once", handlers=["h"]).ok


def test_order_violations_count_first_deliveries_per_key_and_handler() -> None:
    publishes = [_pub(0, "a", 0), _pub(1, "a", 1), _pub(2, "b", 0), _pub(3, "b", 1)]
    deliveries = [
        _got(1, 1.0, key="a", seq=1),
        _got(0, 1.1, key="a", seq=0),  # a/0 after a/1: one violation
        _got(1, 1.2, key="a", seq=1),  # a redelivery: not a first delivery
        _got(2, 2.0, key="b", seq=0),
        _got(3, 2.1, key="b", seq=1),
    ]
    verdict = check(History(publishes, deliveries), "at_least_once")
    assert verdict.order_violations == 1
    assert verdict.order_examples == ["h: key a seq 0 after 1"]


def test_convergence_is_measured_from_the_last_heal() -> None:
    history = History(
        [_pub(0), _pub(1), _pub(5)],
        [_got(0, 0.5), _got(1, 4.5), _got(5, 5.5)],
        [FaultWindow("partition", 1.0, 2.0), FaultWindow("kill", 2.5, 3.0)],
    )
    assert check(history, "at_least_once").convergence == pytest.approx(1.5)


def test_double_charges_violate_every_mode() -> None:
    history = History([_pub(0)], [_got(0, 1.0), _got(0, 2.0)])
    verdict = check(history, "effectively_once", effects={"e0": 2})
    assert verdict.double_charges == 1
    assert verdict.violations == ["1 event(s) charged twice"]


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        check(History(), "exactly_twice")  # type: ignore[arg-type]


def test_histories_round_trip_through_files_and_skip_a_torn_line(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "p.jsonl"
    writer = HistoryWriter(path)
    writer.published(_pub(0))
    writer.delivered(_got(0, 1.0))
    writer.fault(FaultWindow("x", 0.0, 1.0))
    writer.close()
    with path.open("a") as torn:
        torn.write('{"op":"delivered","id":"e')  # a SIGKILL mid-line
    history = read_history([path])
    assert history == History([_pub(0)], [_got(0, 1.0)], [FaultWindow("x", 0.0, 1.0)])

"""tidings.testing: recording what a bus published."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import tidings
from tidings.testing import Recorder


@tidings.event("test.rec.placed")
@dataclass(frozen=True)
class Placed:
    n: int


@tidings.event("test.rec.shipped")
@dataclass(frozen=True)
class Shipped:
    n: int


def test_record_captures_everything_published_in_the_block(bus: tidings.Bus) -> None:
    bus.publish(Placed(0))
    with bus.record() as recorded:
        bus.publish(Placed(1))
        bus.publish(Shipped(2))
        bus.publish({"raw": True}, topic="test.rec.raw")
    bus.publish(Placed(3))
    assert isinstance(recorded, Recorder)
    assert recorded.events == [Placed(1), Shipped(2), {"raw": True}]
    assert recorded.topics == ["test.rec.placed", "test.rec.shipped", "test.rec.raw"]
    assert recorded.of(Placed) == [Placed(1)]
    assert [e.payload for e in recorded] == recorded.events
    assert len(recorded) == 3
    assert bus.subscriptions() == ()


def test_record_sees_events_before_other_handlers(bus: tidings.Bus) -> None:
    counts: list[int] = []
    with bus.record() as recorded:
        bus.subscribe(Placed, lambda e: counts.append(len(recorded)), priority=1000)
        bus.publish(Placed(1))
    assert counts == [1]


def test_record_can_be_narrowed(bus: tidings.Bus) -> None:
    with bus.record(Shipped) as recorded:
        bus.publish(Placed(1))
        bus.publish(Shipped(2))
    assert recorded.events == [Shipped(2)]


def test_assertions_pass_and_fail_with_a_useful_message(bus: tidings.Bus) -> None:
    with bus.record() as recorded:
        bus.publish(Placed(1))
        bus.publish(Placed(2))
    assert recorded.assert_published(Placed, count=2) == [Placed(1), Placed(2)]
    assert recorded.assert_published(Placed, where=lambda p: p.n == 2) == [Placed(2)]
    assert recorded.assert_published("test.rec.placed", count=2)
    with pytest.raises(AssertionError, match=r"no Shipped event was published; published \(2\)"):
        recorded.assert_published(Shipped)
    with pytest.raises(AssertionError, match=r"expected 3 Placed event\(s\), found 2"):
        recorded.assert_published(Placed, count=3)
    with pytest.raises(AssertionError, match="expected no events"):
        recorded.assert_nothing_published()
    recorded.clear()
    recorded.assert_nothing_published()
    with pytest.raises(AssertionError, match="nothing was published"):
        recorded.assert_published(Placed)

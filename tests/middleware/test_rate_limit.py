"""Rate limit: a token bucket (rate, burst); wait or drop-and-count. An injected clock, never
the wall clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import tidings
from tidings.middleware import RateLimit


@tidings.event("test.mw.rate")
@dataclass(frozen=True)
class Tick:
    n: int


class FakeTime:
    """A clock that only moves when a pause is taken (or the test moves it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


def test_wait_policy_lets_a_burst_through_then_paces_the_publisher(bus: tidings.Bus) -> None:
    time = FakeTime()
    limit = RateLimit(10, burst=3, clock=time.clock, sleep=time.sleep)
    got: list[tuple[int, float]] = []
    sub = bus.subscribe(Tick, lambda t: got.append((t.n, time.now)), middleware=[limit])
    for i in range(5):
        bus.publish(Tick(i))
    assert [n for n, _ in got] == [0, 1, 2, 3, 4]
    assert [at for _, at in got] == pytest.approx([0, 0, 0, 0.1, 0.2])
    assert time.pauses == pytest.approx([0.1, 0.1])
    time.now += 10  # a quiet spell refills the bucket up to the burst, not beyond
    for i in range(5, 9):
        bus.publish(Tick(i))
    assert time.pauses == pytest.approx([0.1, 0.1, 0.1])
    assert sub.delivered == 9
    assert limit.dropped == 0


def test_drop_policy_skips_and_counts(bus: tidings.Bus) -> None:
    time = FakeTime()
    limit = RateLimit(2, burst=2, policy="drop", clock=time.clock)
    got: list[int] = []
    sub = bus.subscribe(Tick, lambda t: got.append(t.n), middleware=[limit])
    for i in range(5):
        bus.publish(Tick(i))
    assert (got, limit.dropped) == ([0, 1], 3)
    time.now += 0.5  # one token back
    for i in range(5, 7):
        bus.publish(Tick(i))
    assert (got, limit.dropped) == ([0, 1, 5], 4)
    # The bus counts the drops as dropped, not delivered.
    stats = sub.statistics()
    assert (sub.delivered, sub.dropped, stats.delivered, stats.dropped) == (3, 4, 3, 4)
    assert (bus.statistics().delivered, bus.statistics().dropped) == (3, 4)


async def test_drops_of_async_handlers_are_counted_dropped_on_every_path() -> None:
    """publish (started eagerly), emit, and a queued subscription: a dropped call is counted
    dropped, not delivered, and an emit's Delivery leaves it out."""
    time = FakeTime()
    got: list[str] = []

    async def handler(t: Tick) -> str:
        got.append(f"h{t.n}")
        return f"h{t.n}"

    def sync_handler(t: Tick) -> None:
        got.append(f"q{t.n}")

    async with tidings.Bus() as bus:
        eager = bus.subscribe(
            Tick, handler, middleware=[RateLimit(1, burst=1, policy="drop", clock=time.clock)]
        )
        bus.publish(Tick(0))  # the token
        bus.publish(Tick(1))  # dropped
        assert (eager.delivered, eager.dropped, got) == (1, 1, ["h0"])
        delivery = await bus.emit(Tick(2))  # dropped
        assert delivery.outcomes == ()
        assert (eager.delivered, eager.dropped) == (1, 2)
        time.now += 1
        delivery = await bus.emit(Tick(3))
        assert [o.result for o in delivery.outcomes] == ["h3"]
        assert (eager.delivered, eager.dropped) == (2, 2)
        eager.cancel()
        queued = bus.subscribe(
            Tick,
            sync_handler,
            mode="queued",
            middleware=[RateLimit(1, burst=1, policy="drop", clock=time.clock)],
        )
        for i in range(4, 7):
            bus.publish(Tick(i))
        assert await queued.drained(timeout=30)
        assert (queued.delivered, queued.dropped, got[-1]) == (1, 2, "q4")


async def test_async_handlers_await_their_token() -> None:
    time = FakeTime()
    limit = RateLimit(4, burst=1, clock=time.clock, asleep=time.asleep)
    got: list[float] = []

    async def handler(t: Tick) -> None:
        got.append(time.now)

    async with tidings.Bus() as bus:
        bus.subscribe(Tick, handler, middleware=[limit])
        for i in range(3):
            await bus.emit(Tick(i))
    assert got == pytest.approx([0, 0.25, 0.5])


def test_one_limit_shared_by_the_handlers_it_wraps(bus: tidings.Bus) -> None:
    time = FakeTime()
    limit = RateLimit(1, burst=2, policy="drop", clock=time.clock)
    got: list[str] = []
    bus.subscribe(Tick, lambda t: got.append("a"), middleware=[limit])
    bus.subscribe(Tick, lambda t: got.append("b"), middleware=[limit])
    bus.publish(Tick(0))
    bus.publish(Tick(1))
    assert (got, limit.dropped) == (["a", "b"], 2)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimit(0)
    with pytest.raises(ValueError, match="burst"):
        RateLimit(1, burst=0)
    with pytest.raises(ValueError, match="policy"):
        RateLimit(1, policy="queue")  # type: ignore[arg-type]

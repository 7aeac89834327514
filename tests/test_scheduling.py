"""Weighted fair scheduling over a shared worker pool."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import tidings
from tidings import AdaptiveWeight, WorkerPool


@tidings.event("test.sched.work")
@dataclass(frozen=True)
class Work:
    lane: str
    n: int


async def test_pool_serves_subscriptions_in_proportion_to_weight() -> None:
    order: list[str] = []
    gate = threading.Event()
    pool = WorkerPool(1, quantum=4)

    def make(lane: str):  # type: ignore[no-untyped-def]
        def handler(work: Work) -> None:
            gate.wait(10)
            order.append(lane)

        return handler

    async with tidings.Bus() as bus:
        bus.subscribe(
            "test.sched.work",
            make("heavy"),
            pool=pool,
            weight=3,
            where=lambda w: w.lane == "heavy",
            maxsize=2000,
        )
        bus.subscribe(
            "test.sched.work",
            make("light"),
            pool=pool,
            weight=1,
            where=lambda w: w.lane == "light",
            maxsize=2000,
        )
        for i in range(600):
            bus.publish(Work("heavy", i))
            bus.publish(Work("light", i))
        gate.set()
        assert (await bus.aclose(timeout=30)).clean
    assert order.count("heavy") == order.count("light") == 600
    # While both were backlogged (the first 400 services), heavy got about 3 of every 4.
    first = order[:400]
    share = first.count("heavy") / len(first)
    assert 0.70 <= share <= 0.80, share
    # No starvation: light was served within every window of one round.
    gaps = [i for i, lane in enumerate(first) if lane == "light"]
    assert max(b - a for a, b in itertools.pairwise(gaps)) <= 3 * 4 + 1


async def test_async_pool_serves_coroutine_handlers() -> None:
    seen: list[int] = []
    pool = WorkerPool(2, kind="async")

    async def handler(work: Work) -> None:
        await asyncio.sleep(0)
        seen.append(work.n)

    async with tidings.Bus() as bus:
        bus.subscribe(Work, handler, pool=pool)
        for i in range(100):
            await bus.emit(Work("a", i))
        assert (await bus.aclose(timeout=10)).clean
    assert seen == list(range(100))  # one worker at a time per subscription keeps order


def test_pool_kind_must_match_the_handler(bus: tidings.Bus) -> None:
    async def coro(work: Work) -> None: ...

    with pytest.raises(tidings.InvalidHandlerError, match="kind='async'"):
        bus.subscribe(Work, coro, pool=WorkerPool(1))
    with pytest.raises(tidings.InvalidHandlerError, match="kind='thread'"):
        bus.subscribe(Work, print, pool=WorkerPool(1, kind="async"))


def test_bad_pool_settings() -> None:
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(0)
    with pytest.raises(ValueError, match="quantum"):
        WorkerPool(1, quantum=0)
    with pytest.raises(ValueError, match="kind"):
        WorkerPool(1, kind="fiber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target > 0"):
        AdaptiveWeight(target=0)
    with pytest.raises(ValueError, match="increase > 1"):
        AdaptiveWeight(target=1, increase=1)


async def test_adaptive_weight_lowers_a_slow_subscription_and_restores_it() -> None:
    rule = AdaptiveWeight(target=0.002, floor=0.25, decrease=0.5, increase=2.0, smoothing=1.0)
    pool = WorkerPool(1, quantum=1, adaptive=rule)
    slow_mode = threading.Event()
    slow_mode.set()
    handled = threading.Semaphore(0)

    def handler(work: Work) -> None:
        if slow_mode.is_set():
            time.sleep(0.005)
        handled.release()

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Work, handler, pool=pool, weight=4)
        assert sub.queued is not None
        for i in range(16):
            bus.publish(Work("a", i))
        queued = sub.queued
        for _ in range(16):
            assert await asyncio.to_thread(handled.acquire, True, 10)
        # every turn was too slow: 4 -> 2 -> 1, never under the floor (0.25 x 4)
        await _eventually(lambda: pool.weight_of(queued) == 1.0)
        slow_mode.clear()
        for i in range(40):
            bus.publish(Work("a", i))
        for _ in range(40):
            assert await asyncio.to_thread(handled.acquire, True, 10)
        # fast again: restored, and never above the configured 4
        await _eventually(lambda: pool.weight_of(queued) == 4.0)
        assert (await bus.aclose(timeout=10)).clean


async def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition the pool's worker sets right after the handler returns."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)

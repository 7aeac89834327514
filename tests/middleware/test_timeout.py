"""Timeout: a slow async handler is cancelled and dead-lettered with a TimeoutError."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

import tidings
from tidings.middleware import Retry, Timeout


@tidings.event("test.mw.timeout")
@dataclass(frozen=True)
class Job:
    n: int


async def test_a_slow_handler_is_cancelled_and_dead_lettered() -> None:
    finished: list[str] = []
    never = asyncio.Event()

    async def slow(job: Job) -> None:
        try:
            await never.wait()
        finally:
            finished.append("finally ran")

    async with tidings.Bus() as bus:
        letters: list[tidings.DeadLetter] = []
        bus.subscribe(tidings.DeadLetter, letters.append)
        sub = bus.subscribe(Job, slow, middleware=[Timeout(0.05)])
        delivery = await bus.emit(Job(1))
    assert finished == ["finally ran"]
    assert [type(e) for e in delivery.errors] == [TimeoutError]
    assert (sub.delivered, sub.failed) == (0, 1)
    assert [(type(d.error), d.handler) for d in letters] == [(TimeoutError, sub.name)]


async def test_a_quick_handler_is_untouched_and_a_suspending_one_returns_its_result() -> None:
    async def quick(job: Job) -> int:
        return job.n

    async def suspends(job: Job) -> int:
        await asyncio.sleep(0)
        return job.n * 10

    async with tidings.Bus() as bus:
        bus.subscribe(Job, quick, middleware=[Timeout(5)])
        bus.subscribe(Job, suspends, middleware=[Timeout(5)])
        delivery = await bus.emit(Job(2))
    assert delivery.results == [2, 20]


async def test_each_retry_attempt_gets_its_own_limit() -> None:
    calls: list[int] = []

    async def slow_then_quick(job: Job) -> str:
        calls.append(job.n)
        if len(calls) == 1:
            await asyncio.sleep(10)
        return "ok"

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Job, slow_then_quick, middleware=[Retry(2, backoff=0), Timeout(0.05)])
        delivery = await bus.emit(Job(3))
    assert delivery.results == ["ok"]
    assert (sub.delivered, sub.failed) == (1, 0)


def test_a_sync_handler_is_refused_at_subscribe_time(bus: tidings.Bus) -> None:
    with pytest.raises(tidings.InvalidHandlerError, match="Timeout wraps async handlers"):
        bus.subscribe(Job, print, middleware=[Timeout(1)])
    assert bus.subscriptions() == ()


def test_bad_seconds_are_refused() -> None:
    for bad in (0, -1, float("inf"), "1"):
        with pytest.raises(ValueError, match="positive number"):
            Timeout(bad)  # type: ignore[arg-type]

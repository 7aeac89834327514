"""Retry: attempts, backoff, and the bus's accounting (counted once, dead-lettered once)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

import tidings
from tidings.middleware import Retry


@tidings.event("test.mw.retry")
@dataclass(frozen=True)
class Job:
    n: int


class FlakyError(Exception):
    pass


def _flaky(fail_times: int, calls: list[int]) -> Callable[[Job], str]:
    def handler(job: Job) -> str:
        calls.append(job.n)
        if len(calls) <= fail_times:
            raise FlakyError(f"attempt {len(calls)}")
        return "done"

    return handler


def test_failing_every_attempt_is_dead_lettered_once_with_the_attempts(bus: tidings.Bus) -> None:
    letters: list[tidings.DeadLetter] = []
    bus.subscribe(tidings.DeadLetter, letters.append)
    pauses: list[float] = []
    calls: list[int] = []
    sub = bus.subscribe(
        Job, _flaky(99, calls), middleware=[Retry(4, backoff=0.5, factor=2, sleep=pauses.append)]
    )
    bus.publish(Job(1))
    assert calls == [1, 1, 1, 1]
    assert pauses == [0.5, 1.0, 2.0]  # blocks the publisher: done before publish returned
    assert (sub.delivered, sub.failed) == (0, 1)
    assert len(letters) == 1
    assert (letters[0].attempts, letters[0].handler, str(letters[0].error)) == (
        4,
        sub.name,
        "attempt 4",
    )


def test_success_on_a_later_attempt_counts_delivered_once(bus: tidings.Bus) -> None:
    letters: list[tidings.DeadLetter] = []
    bus.subscribe(tidings.DeadLetter, letters.append)
    calls: list[int] = []
    pauses: list[float] = []
    sub = bus.subscribe(Job, _flaky(2, calls), middleware=[Retry(3, sleep=pauses.append)])
    bus.publish(Job(1))
    assert calls == [1, 1, 1]
    assert len(pauses) == 2
    assert (sub.delivered, sub.failed) == (1, 0)
    assert letters == []


def test_errors_not_listed_are_not_retried(bus: tidings.Bus) -> None:
    letters: list[tidings.DeadLetter] = []
    bus.subscribe(tidings.DeadLetter, letters.append)
    calls: list[int] = []

    def handler(job: Job) -> None:
        calls.append(job.n)
        raise KeyError("fatal")

    bus.subscribe(Job, handler, middleware=[Retry(5, retry_on=FlakyError, sleep=lambda s: None)])
    bus.publish(Job(1))
    assert calls == [1]
    assert [d.attempts for d in letters] == [1]


def test_pauses_are_capped() -> None:
    retry = Retry(10, backoff=1, factor=3, max_backoff=5)
    assert [retry.pause(n) for n in range(1, 5)] == [1, 3, 5, 5]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Retry(0)
    with pytest.raises(TypeError, match="an int"):
        Retry(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        Retry(2, factor=0.5)
    with pytest.raises(ValueError, match="seconds >= 0"):
        Retry(2, backoff=-1)


async def test_async_handler_retries_by_awaiting_and_emit_reports_the_last_error() -> None:
    pauses: list[float] = []

    async def asleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)  # a real suspension: the handler continues in a task

    calls: list[int] = []

    async def handler(job: Job) -> str:
        calls.append(job.n)
        raise FlakyError(f"attempt {len(calls)}")

    async with tidings.Bus() as bus:
        letters: list[tidings.DeadLetter] = []
        bus.subscribe(tidings.DeadLetter, letters.append)
        sub = bus.subscribe(Job, handler, middleware=[Retry(3, backoff=0.25, asleep=asleep)])
        delivery = await bus.emit(Job(5))
        assert calls == [5, 5, 5]
        assert pauses == [0.25, 0.5]
        assert [str(e) for e in delivery.errors] == ["attempt 3"]
        assert (sub.delivered, sub.failed) == (0, 1)
        assert [d.attempts for d in letters] == [3]

        calls.clear()
        flaky = bus.subscribe(Job, _async_flaky(1, calls), middleware=[Retry(3, asleep=asleep)])
        sub.cancel()
        delivery = await bus.emit(Job(6))
        assert delivery.results == ["done"]
        assert (flaky.delivered, flaky.failed) == (1, 0)
        assert len(letters) == 1


def _async_flaky(fail_times: int, calls: list[int]) -> Callable[[Job], Awaitable[str]]:
    async def handler(job: Job) -> str:
        calls.append(job.n)
        if len(calls) <= fail_times:
            raise FlakyError(f"attempt {len(calls)}")
        return "done"

    return handler


async def test_retry_in_a_queued_sync_subscription_runs_on_its_worker() -> None:
    async with tidings.Bus() as bus:
        letters: list[tidings.DeadLetter] = []
        got_letter = threading.Event()

        def on_letter(d: tidings.DeadLetter) -> None:
            letters.append(d)
            got_letter.set()

        bus.subscribe(tidings.DeadLetter, on_letter)
        calls: list[int] = []
        threads: set[int] = set()

        def handler(job: Job) -> None:
            threads.add(threading.get_ident())
            calls.append(job.n)
            if job.n == 1 or len([c for c in calls if c == 2]) < 3:
                raise FlakyError(f"job {job.n}")

        sub = bus.subscribe(
            Job, handler, mode="queued", middleware=[Retry(3, backoff=0.001, factor=1)]
        )
        bus.publish(Job(1))  # fails all 3 attempts
        bus.publish(Job(2))  # succeeds on the 3rd
        assert await sub.drained(timeout=10)
        assert calls == [1, 1, 1, 2, 2, 2]
        assert threading.get_ident() not in threads
        assert (sub.delivered, sub.failed) == (1, 1)
        assert await asyncio.to_thread(got_letter.wait, 10)
        assert [(d.attempts, d.envelope.payload) for d in letters] == [(3, Job(1))]


async def test_retry_in_a_queued_async_subscription() -> None:
    async with tidings.Bus() as bus:
        letters: list[tidings.DeadLetter] = []
        bus.subscribe(tidings.DeadLetter, letters.append)
        calls: list[int] = []

        async def handler(job: Job) -> None:
            calls.append(job.n)
            await asyncio.sleep(0)
            if job.n == 1 or calls.count(2) < 2:
                raise FlakyError(f"job {job.n}")

        sub = bus.subscribe(
            Job, handler, mode="queued", middleware=[Retry(2, backoff=0.001, factor=1)]
        )
        await bus.emit(Job(1))
        await bus.emit(Job(2))
        assert await sub.drained(timeout=10)
        assert calls == [1, 1, 2, 2]
        assert (sub.delivered, sub.failed) == (1, 1)
        assert [(d.attempts, d.envelope.payload) for d in letters] == [(2, Job(1))]

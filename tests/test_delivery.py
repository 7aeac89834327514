"""Delivery reports and the eager coroutine driver."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Generator
from typing import Any

import pytest

import tidings
from tidings._coroutines import resume
from tidings.results import Delivery, HandlerOutcome


def _envelope() -> tidings.Envelope[int]:
    return tidings.Envelope("a.b", 1, 0)


def test_delivery_properties() -> None:
    error = ValueError("x")
    delivery = Delivery(_envelope(), (HandlerOutcome("h1", 1), HandlerOutcome("h2", error=error)))
    assert delivery.results == [1]
    assert delivery.errors == [error]
    assert not delivery.ok
    assert delivery.outcomes[0].ok
    with pytest.raises(ExceptionGroup, match=r"1 handler\(s\) failed .* h2"):
        delivery.raise_errors()


def test_delivery_with_base_exceptions_raises_a_base_group() -> None:
    delivery = Delivery(_envelope(), (HandlerOutcome("h", error=asyncio.CancelledError()),))
    with pytest.raises(BaseExceptionGroup):
        delivery.raise_errors()


async def _started(coro: Any) -> tuple[Any, object]:
    return coro, coro.send(None)


async def test_resume_finishes_a_suspended_coroutine() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler() -> int:
        value = await fut
        await asyncio.sleep(0)
        return value * 2

    coro, awaited = await _started(handler())
    task = asyncio.ensure_future(resume(coro, awaited))
    fut.set_result(21)
    assert await asyncio.wait_for(task, timeout=5) == 42


async def _cancel_while_suspended(*, complete_the_future: bool) -> list[str]:
    """Drive a handler suspended on a future, then cancel the task (with the future first
    completed, or not): what the handler saw."""
    seen: list[str] = []
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler() -> None:
        try:
            await fut
            seen.append("resumed")
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    coro, awaited = await _started(handler())
    task = asyncio.ensure_future(resume(coro, awaited))
    await asyncio.sleep(0)
    if complete_the_future:
        fut.set_result(1)
    task.cancel()  # with the future done, the cancellation is aimed at the task
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    return seen


async def test_cancelling_the_task_cancels_the_handler() -> None:
    assert await _cancel_while_suspended(complete_the_future=False) == ["cancelled"]


async def test_a_cancel_after_the_future_completed_still_reaches_the_handler() -> None:
    assert await _cancel_while_suspended(complete_the_future=True) == ["cancelled"]


async def test_foreign_yields_are_reported_to_the_handler() -> None:
    @types.coroutine
    def weird() -> Generator[str, None, None]:
        yield "not a future"

    async def handler() -> str:
        try:
            await weird()
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    coro, awaited = await _started(handler())
    result = await asyncio.wait_for(resume(coro, awaited), timeout=5)
    assert "only asyncio awaitables work" in result

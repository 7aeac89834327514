"""Helpers of the process fault tests: signals lost on purpose, bounded waits on the event
loop, and the check that a wait lets the loop run."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

TIMEOUT = 10.0


def losing(monkeypatch: pytest.MonkeyPatch, lost: int) -> list[int]:
    """Make ``os.kill`` lose signal ``lost`` (as if it were never taken) and send the others;
    the signals it was given, in order."""
    sent: list[int] = []
    real_kill = os.kill

    def losing_kill(pid: int, signum: int) -> None:
        sent.append(signum)
        if signum != lost:
            real_kill(pid, signum)

    monkeypatch.setattr(os, "kill", losing_kill)
    return sent


async def until_async(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Return once ``predicate()`` holds, checked every 10 ms; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)


async def assert_loop_runs_while(task: asyncio.Task[Any], began: Callable[[], bool]) -> None:
    """Once ``began()`` holds (the wait under test has begun), the event loop runs other
    tasks while ``task`` is still waiting: a ticker task takes 5 more turns before ``task``
    is done. A wait that blocks the loop lets the ticker run only once it is over."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    ticking = asyncio.create_task(ticker())
    try:
        await until_async(began)
        seen = ticks
        await until_async(lambda: ticks >= seen + 5)
        assert not task.done(), "the loop ran only once the wait was over"
    finally:
        ticking.cancel()

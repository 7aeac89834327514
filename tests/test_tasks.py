"""``cancel_and_wait``: the task's own cancellation ends it quietly, its exception is raised,
and a cancellation of the caller goes on up while the task finishes what it was doing."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tidings._tasks import cancel_and_wait

WAIT = 10.0


async def test_a_task_cancelled_ends_quietly_and_its_failure_is_raised() -> None:
    idle = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    async with asyncio.timeout(WAIT):
        await cancel_and_wait(idle)
    assert idle.cancelled()

    async def failing() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("failed on the way out")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="on the way out"):
        async with asyncio.timeout(WAIT):
            await cancel_and_wait(task)


async def test_the_callers_cancellation_goes_on_up_while_the_task_finishes() -> None:
    busy = asyncio.Event()
    release = asyncio.Event()

    async def finishing() -> None:
        busy.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        # cancelled: what is in flight ends first
        await asyncio.wait_for(release.wait(), WAIT)

    task = asyncio.create_task(finishing())
    async with asyncio.timeout(WAIT):
        await busy.wait()
    closing = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0)  # closing cancelled the task and waits for its end
    assert not closing.done()
    closing.cancel()
    await asyncio.wait({closing}, timeout=WAIT)
    assert closing.cancelled()
    assert not task.done()
    release.set()
    async with asyncio.timeout(WAIT):
        await cancel_and_wait(task)
    assert task.done()


async def test_every_task_is_cancelled_before_any_is_waited_for() -> None:
    # Regression: the gateway's router ended its lost-lease waiter, then its follower, each
    # with its own cancel_and_wait; a stop cancelling the router while it waited for the
    # first left the follower routing on, never cancelled. Now one call cancels both first.
    cancelled = asyncio.Event()
    release = asyncio.Event()

    async def finishing() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            await asyncio.wait_for(release.wait(), WAIT)  # what is in flight ends first
            raise

    first = asyncio.create_task(finishing())
    second = asyncio.create_task(asyncio.Event().wait())
    closing = asyncio.create_task(cancel_and_wait(first, second))
    async with asyncio.timeout(WAIT):
        await cancelled.wait()
    closing.cancel()
    await asyncio.wait({closing}, timeout=WAIT)
    assert closing.cancelled()
    async with asyncio.timeout(WAIT):  # the second was cancelled too: it ends on its own
        await asyncio.wait({second})
    assert second.cancelled()
    assert not first.done()
    release.set()
    async with asyncio.timeout(WAIT):
        await cancel_and_wait(first, second)
    assert first.cancelled()


async def test_the_first_failure_in_order_is_raised_once_all_have_ended() -> None:
    started = [asyncio.Event(), asyncio.Event()]

    async def failing(text: str, began: asyncio.Event) -> None:
        try:
            began.set()
            await asyncio.Event().wait()
        finally:
            raise RuntimeError(text)

    tasks = [
        asyncio.create_task(failing(t, e)) for t, e in zip(("one", "two"), started, strict=True)
    ]
    idle = asyncio.create_task(asyncio.Event().wait())
    async with asyncio.timeout(WAIT):
        for began in started:
            await began.wait()
    with pytest.raises(RuntimeError, match="one"):
        async with asyncio.timeout(WAIT):
            await cancel_and_wait(idle, *tasks)
    assert idle.cancelled()
    assert all(task.done() for task in tasks)
    assert str(tasks[1].exception()) == "two"

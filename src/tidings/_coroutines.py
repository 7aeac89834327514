"""Driving coroutines by hand: how async handlers start eagerly.

The bus creates a handler's coroutine and steps it at once in the publisher's call. A
coroutine that finishes without suspending costs no task and no trip through the event loop;
one that suspends is handed to a task running :func:`resume`, which continues it exactly where
it stopped. Either way the handler's code runs in publish order and in priority order up to
its first real suspension.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from contextlib import suppress
from typing import Any, TypeVar

__all__ = ("resume",)

T = TypeVar("T")


@types.coroutine
def _yield_once() -> Generator[None, None, None]:
    yield


async def resume(coro: Coroutine[Any, Any, T], awaited: object) -> T:
    """Finish a coroutine that was stepped by hand and suspended on ``awaited``.

    ``awaited`` is what the coroutine's first ``send(None)`` yielded: ``None`` (a bare yield,
    as ``asyncio.sleep(0)``) or an asyncio future. Run as a task, this waits for it exactly as
    a task would, then steps the coroutine again, until it returns. Cancelling the task
    cancels the future the coroutine waits on, so the coroutine sees ``CancelledError``.
    """
    while True:
        error: BaseException | None = None
        if awaited is None:
            await _yield_once()
        elif isinstance(awaited, asyncio.Future):
            awaited._asyncio_future_blocking = False
            try:
                # The coroutine reads the future's outcome itself when stepped again.
                with suppress(Exception):
                    await awaited
            except asyncio.CancelledError as exc:
                if not awaited.cancelled():  # this task was cancelled, not the future
                    error = exc
        else:
            error = RuntimeError(
                f"a tidings async handler yielded {awaited!r}; only asyncio awaitables work"
            )
        try:
            awaited = coro.send(None) if error is None else coro.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result

"""Timeout: cancel an async handler that runs too long.

``Timeout(2.0)`` gives each call of an async handler at most 2 seconds; then the handler is
cancelled (it sees :class:`asyncio.CancelledError` at its suspension point, so its
``finally`` blocks run) and the call fails with :class:`TimeoutError`, counted and
dead-lettered like any failure. Inside a :class:`~tidings.middleware.Retry` each attempt
has its own limit; outside it, the limit covers every attempt together.

Async handlers only: a sync handler cannot be interrupted safely, so wrapping one is refused
at subscribe time with :class:`~tidings.InvalidHandlerError`.

Cost: a call that finishes without suspending runs as it would unwrapped (no task, no
timer). One that suspends continues in a task of its own, watched by a timer: the bus starts
async handlers eagerly, outside any task of theirs, so the limit cannot cancel "the current
task" (that would be the publisher's).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from tidings._coroutines import resume
from tidings.event import Envelope
from tidings.exceptions import InvalidHandlerError
from tidings.middleware.base import Handler, is_async, name_of, wraps

__all__ = ("Timeout",)


class Timeout:
    """Middleware limiting each call of an async handler to ``seconds``.

    Raises:
        ValueError: if ``seconds`` is not a positive, finite number.
    """

    def __init__(self, seconds: float) -> None:
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds < math.inf
        ):
            raise ValueError(f"Timeout(seconds) must be a positive number, not {seconds!r}")
        self.seconds = float(seconds)

    def __call__(self, handler: Handler) -> Handler:
        if not is_async(handler):
            raise InvalidHandlerError(
                f"Timeout wraps async handlers (a sync one cannot be interrupted); "
                f"{name_of(handler)} is sync: make it a coroutine "
                "function, or bound its own work"
            )
        seconds = self.seconds
        name = name_of(handler)

        @wraps(handler)
        async def limited(env: Envelope[Any]) -> Any:
            coro = handler(env)
            try:
                awaited = coro.send(None)
            except StopIteration as stop:  # finished without suspending
                return stop.value
            task = asyncio.ensure_future(resume(coro, awaited))
            try:
                done, _ = await asyncio.wait((task,), timeout=seconds)
            except asyncio.CancelledError:
                task.cancel()
                raise
            if not done:
                task.cancel()
                await asyncio.wait((task,))  # its finally blocks run before the failure
                raise TimeoutError(
                    f"handler {name} did not finish within {seconds} s on event {env.id}; it was cancelled"
                )
            return task.result()

        return limited

    def __repr__(self) -> str:
        return f"Timeout({self.seconds})"

"""How handlers are run, and what one delivery reports.

Async handlers run *eagerly*: the bus creates the coroutine and steps it at once in the
publisher's call. A coroutine that finishes without suspending costs no task and no trip
through the event loop; one that suspends is handed to a task that resumes it exactly where
it stopped (:func:`resume`). Either way the handler's code runs in publish order and in
priority order up to its first real suspension.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tidings.event import Envelope

__all__ = ("Delivery", "HandlerOutcome", "resume")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HandlerOutcome:
    """What one handler did with one event.

    Attributes:
        handler: the handler's qualified name.
        result: what it returned (``None`` when it failed).
        error: the exception it raised, or ``None``.
    """

    handler: str
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """Whether the handler returned without raising."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    """The outcome of :meth:`Bus.emit <tidings.Bus.emit>`: one entry per handler that ran.

    Handlers skipped by their ``where=`` filter, spent ``once`` handlers and handlers whose
    object is gone do not appear.
    """

    envelope: Envelope[T]
    outcomes: tuple[HandlerOutcome, ...] = field(default=())

    @property
    def results(self) -> list[Any]:
        """The return values of the handlers that succeeded, in the order they were started."""
        return [o.result for o in self.outcomes if o.error is None]

    @property
    def errors(self) -> list[BaseException]:
        """The exceptions of the handlers that failed, in the order they were started."""
        return [o.error for o in self.outcomes if o.error is not None]

    @property
    def ok(self) -> bool:
        """Whether every handler succeeded."""
        return all(o.error is None for o in self.outcomes)

    def raise_errors(self) -> None:
        """Raise an :class:`ExceptionGroup` of every handler error, if there was any.

        Raises:
            ExceptionGroup: naming the event and holding each handler's exception; an
                exception that is not an :class:`Exception` (such as ``CancelledError``)
                makes it a :class:`BaseExceptionGroup`.
        """
        errors = self.errors
        if errors:
            names = ", ".join(o.handler for o in self.outcomes if o.error is not None)
            raise BaseExceptionGroup(
                f"{len(errors)} handler(s) failed for event {self.envelope.id} on "
                f"{self.envelope.topic!r}: {names}",
                errors,
            )


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

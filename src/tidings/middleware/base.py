"""What a middleware is, how middleware compose, and how a retry's attempts reach the bus.

A **handler**, in middleware terms, is a callable taking the :class:`~tidings.Envelope` being
delivered and returning the subscribed handler's result (sync) or an awaitable of it (async).
The innermost one is made by the subscription: it hands the subscribed function what it asked
for (the payload or the envelope). A **middleware** takes a handler and returns a handler
(``Callable[[Handler], Handler]``); it is applied once, when a subscription is made, never per
event.

Sync and async: a middleware sees which kind it wraps with :func:`is_async` (a coroutine
function) and returns the same kind: a sync wrapper around a sync handler, an ``async def``
wrapper around an async one. A middleware that can only wrap one kind refuses the other at
subscribe time with :class:`~tidings.InvalidHandlerError` (as :class:`Timeout` does for sync
handlers). A composed handler of the wrong kind is refused the same way.

Order: ``middleware=[a, b, c]`` composes as ``a(b(c(handler)))``: the first listed is the
outermost, it sees the call first. Bus-wide middleware (:meth:`Bus.use <tidings.Bus.use>`)
wraps outside a subscription's own: ``use(x)`` then ``subscribe(..., middleware=[a])`` gives
``x(a(handler))``. Outermost, because a bus-wide concern (tracing, metrics, a rate limit on
everything) describes one delivery, whatever a subscription does inside it: with a
subscription's :class:`Retry` inside, it sees one call, not one per attempt.

Attempts: a middleware that calls its handler several times (:class:`Retry`) and finally
gives up re-raises the last error after :func:`note_attempts`; the bus reads
:func:`attempts_of` when it counts and dead-letters the failure, so the
:class:`~tidings.DeadLetter` says how many attempts were made, and the failure is counted
once.

Drops: a middleware that handles an event by not calling its handler (a rate limit's drop,
a duplicate) returns :data:`DROPPED`; the bus then counts the call as dropped on the
subscription (``Subscription.dropped``, :class:`~tidings.SubscriptionStatistics`
``dropped``), not as delivered, and leaves it out of an ``emit``'s
:class:`~tidings.Delivery`.

A subscription without middleware pays nothing: its handler is called exactly as before.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from tidings.event import Envelope
from tidings.exceptions import InvalidHandlerError

__all__ = (
    "DROPPED",
    "Handler",
    "Middleware",
    "attempts_of",
    "compose",
    "is_async",
    "name_of",
    "note_attempts",
    "wraps",
)

Handler: TypeAlias = Callable[[Envelope[Any]], Any]
"""A handler in middleware terms: takes the envelope, returns the result or an awaitable."""

Middleware: TypeAlias = Callable[[Handler], Handler]
"""A function from handler to handler, applied at subscribe time."""

_ATTEMPTS = "tidings_attempts"


class _Dropped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DROPPED"


DROPPED: Any = _Dropped()
"""What a middleware returns when it drops the call instead of calling its handler (see
the module docstring): counted as dropped, not delivered."""


def is_async(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` is a coroutine function (or an object with an ``async __call__``)."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )


def name_of(handler: Callable[..., Any]) -> str:
    """A handler's qualified name, ``module.qualname``: the subscribed handler's, for the
    innermost handler and wrappers made with :func:`wraps`."""
    module = getattr(handler, "__module__", None) or type(handler).__module__
    qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{qualname}"


def wraps(handler: Handler) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``functools.wraps`` for middleware: the wrapper keeps the handler's name (which
    :class:`Dedupe` and error messages use)."""
    return functools.wraps(handler, assigned=("__module__", "__name__", "__qualname__"))


def compose(handler: Handler, middleware: Sequence[Middleware], *, name: str) -> Handler:
    """Apply ``middleware`` to ``handler``, the first listed outermost.

    Raises:
        InvalidHandlerError: an item is not callable, returns something not callable, or
            turns an async handler into a sync one (or the reverse).
    """
    wanted = is_async(handler)
    for mw in reversed(middleware):
        if not callable(mw):
            raise InvalidHandlerError(
                f"middleware= takes callables mapping a handler to a handler, not "
                f"{type(mw).__name__} {mw!r}"
            )
        wrapped = mw(handler)
        if not callable(wrapped):
            raise InvalidHandlerError(
                f"middleware {mw!r} returned {type(wrapped).__name__}, not a handler, for {name}"
            )
        if is_async(wrapped) != wanted:
            kind = "an async" if wanted else "a sync"
            raise InvalidHandlerError(
                f"middleware {mw!r} must wrap {kind} handler ({name}) in {kind} one; it "
                "returned the other kind"
            )
        handler = wrapped
    return handler


def note_attempts(exc: BaseException, attempts: int) -> None:
    """Record on ``exc`` that it ends ``attempts`` attempts to handle one event."""
    setattr(exc, _ATTEMPTS, attempts)


def attempts_of(exc: BaseException, default: int = 1) -> int:
    """How many attempts ``exc`` ends (see :func:`note_attempts`); ``default`` if unnoted."""
    attempts: int = getattr(exc, _ATTEMPTS, default)
    return max(attempts, default)

"""Retry: call a failing handler again, after a growing pause, before giving up.

``Retry(attempts=3, backoff=0.1, factor=2.0, max_backoff=10.0)`` calls the handler up to
``attempts`` times. After the n-th failed attempt it pauses
``min(backoff * factor ** (n - 1), max_backoff)`` seconds and tries again.

Guarantees, with the bus's accounting (see :mod:`tidings.middleware.base`):

- A call that succeeds on any attempt counts once as delivered; the failed attempts before
  it are neither counted nor dead-lettered (they are logged at DEBUG).
- A call that fails every attempt raises the last error once: it is counted once as a failure
  and dead-lettered once, with ``DeadLetter.attempts`` equal to the attempts made.
- Only exceptions of ``retry_on`` (default: every :class:`Exception`) are retried; any other
  is raised at once, as one attempt. Cancellation is never retried.

Where it waits: a sync handler's pause blocks the thread calling it (``time.sleep``): for an
inline subscription that is the **publisher**, whose ``publish`` returns only after the last
attempt; for a queued one, its worker thread. An async handler's pause awaits
(``asyncio.sleep``) and blocks nothing. For a slow backoff on an inline handler, prefer a
queued subscription. ``sleep=`` and ``asleep=`` replace the two pauses (tests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tidings.event import Envelope
from tidings.middleware.base import Handler, is_async, name_of, note_attempts, wraps

__all__ = ("Retry",)

logger = logging.getLogger("tidings")


class Retry:
    """Middleware retrying a failing handler with exponential backoff (see the module
    docstring).

    Args:
        attempts: how many calls in all, at least 1.
        backoff: seconds before the second attempt.
        factor: each further pause is this many times the previous one (at least 1).
        max_backoff: the longest pause.
        retry_on: the exception classes worth another attempt.
        sleep: how a sync handler pauses (default ``time.sleep``).
        asleep: how an async handler pauses (default ``asyncio.sleep``).

    Raises:
        ValueError: an ``attempts`` below 1, a negative pause or a ``factor`` below 1.
        TypeError: an ``attempts`` that is not an int.
    """

    def __init__(
        self,
        attempts: int = 3,
        *,
        backoff: float = 0.1,
        factor: float = 2.0,
        max_backoff: float = 10.0,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        sleep: Callable[[float], object] = time.sleep,
        asleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"Retry(attempts=) is an int, not {type(attempts).__name__}")
        if attempts < 1:
            raise ValueError(f"Retry(attempts=) must be at least 1, not {attempts}")
        if not (backoff >= 0 and max_backoff >= 0):
            raise ValueError(
                f"Retry pauses are seconds >= 0, not backoff={backoff!r}, "
                f"max_backoff={max_backoff!r}"
            )
        if not factor >= 1:
            raise ValueError(f"Retry(factor=) must be at least 1, not {factor!r}")
        self.attempts = attempts
        self.backoff = backoff
        self.factor = factor
        self.max_backoff = max_backoff
        self.retry_on = retry_on
        self._sleep = sleep
        self._asleep = asleep

    def pause(self, failed: int) -> float:
        """Seconds to wait after the ``failed``-th failed attempt."""
        return float(min(self.backoff * self.factor ** (failed - 1), self.max_backoff))

    def _gives_up(self, exc: BaseException, attempt: int, env: Envelope[Any], name: str) -> bool:
        if attempt >= self.attempts or not isinstance(exc, self.retry_on):
            note_attempts(exc, attempt)
            return True
        logger.debug(
            "handler %s failed attempt %d of %d on event %s; retrying: %r",
            name,
            attempt,
            self.attempts,
            env.id,
            exc,
        )
        return False

    def __call__(self, handler: Handler) -> Handler:
        name = name_of(handler)
        if is_async(handler):

            @wraps(handler)
            async def retrying_async(env: Envelope[Any]) -> Any:
                attempt = 1
                while True:
                    try:
                        return await handler(env)
                    except Exception as exc:
                        if self._gives_up(exc, attempt, env, name):
                            raise
                    await self._asleep(self.pause(attempt))
                    attempt += 1

            return retrying_async

        @wraps(handler)
        def retrying(env: Envelope[Any]) -> Any:
            attempt = 1
            while True:
                try:
                    return handler(env)
                except Exception as exc:
                    if self._gives_up(exc, attempt, env, name):
                        raise
                self._sleep(self.pause(attempt))
                attempt += 1

        return retrying

    def __repr__(self) -> str:
        return f"Retry(attempts={self.attempts}, backoff={self.backoff}, factor={self.factor})"

"""Rate limit: a token bucket in front of a handler.

``RateLimit(rate=100, burst=20)`` lets calls through at ``rate`` per second on average, and
up to ``burst`` at once after a quiet spell: the bucket holds at most ``burst`` tokens, gains
``rate`` per second, and each call takes one.

When the bucket is empty, ``policy`` decides:

- ``"wait"`` (default): the call waits for its token. A sync handler sleeps in the thread
  calling it (for an inline subscription that is the **publisher**; for a queued one its
  worker, which is the usual place for a limit); an async handler awaits and blocks nothing.
  Calls are served in the order they claim tokens.
- ``"drop"``: the call is skipped: the handler is not called, the call returns
  :data:`~tidings.middleware.DROPPED` and ``dropped`` counts it; the bus counts the call
  as dropped on the subscription, not delivered. Read ``dropped`` (or the subscription's
  statistics) to see what the limit cost.

State belongs to the :class:`RateLimit` object: every handler it wraps shares one bucket (one
limit for one downstream service). ``clock=``, ``sleep=`` and ``asleep=`` replace
``time.monotonic``, ``time.sleep`` and ``asyncio.sleep`` (tests). Thread-safe.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from tidings.event import Envelope
from tidings.middleware.base import DROPPED, Handler, is_async, wraps

__all__ = ("RateLimit", "RatePolicy")

RatePolicy = Literal["wait", "drop"]


class RateLimit:
    """Middleware limiting calls to ``rate`` per second with bursts of ``burst`` (see the
    module docstring).

    Attributes:
        dropped: calls skipped under ``policy="drop"``.

    Raises:
        ValueError: a non-positive ``rate`` or ``burst``, or an unknown ``policy``.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        policy: RatePolicy = "wait",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        asleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            raise ValueError(f"RateLimit(rate=) is calls per second > 0, not {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"RateLimit(burst=) is an int >= 1, not {burst!r}")
        if policy not in ("wait", "drop"):
            raise ValueError(f"RateLimit(policy=) is 'wait' or 'drop', not {policy!r}")
        self.rate = float(rate)
        self.burst = burst
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._asleep = asleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._stamp = clock()
        self.dropped = 0

    def _take(self) -> float | None:
        """Take a token: the seconds to wait for it (0: at once), or ``None`` to drop the
        call. A waiting call takes its token now (the balance goes negative), so calls are
        served in the order they came."""
        with self._lock:
            now = self._clock()
            tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if tokens >= 1:
                self._tokens = tokens - 1
                return 0.0
            if self.policy == "drop":
                self._tokens = tokens
                self.dropped += 1
                return None
            self._tokens = tokens - 1
            return (1 - tokens) / self.rate

    def __call__(self, handler: Handler) -> Handler:
        take = self._take
        if is_async(handler):

            @wraps(handler)
            async def limited_async(env: Envelope[Any]) -> Any:
                wait = take()
                if wait is None:
                    return DROPPED
                if wait:
                    await self._asleep(wait)
                return await handler(env)

            return limited_async

        @wraps(handler)
        def limited(env: Envelope[Any]) -> Any:
            wait = take()
            if wait is None:
                return DROPPED
            if wait:
                self._sleep(wait)
            return handler(env)

        return limited

    def __repr__(self) -> str:
        return f"RateLimit(rate={self.rate}, burst={self.burst}, policy={self.policy!r})"

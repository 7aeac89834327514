"""Handler faults as middleware (``Handler -> Handler``, composed at subscribe time).

Each is a middleware like :class:`~tidings.middleware.Retry`: pass it in ``middleware=[...]``
or to :meth:`Bus.use <tidings.Bus.use>`. A sync handler gets a sync wrapper, an async one an
async wrapper. Every fault draws from its own ``random.Random(seed)``, so a run is repeatable,
and counts what it did (``injected``).

- :class:`Latency`: each call waits ``seconds`` (plus up to ``jitter``) first.
- :class:`ErrorRate`: a fraction ``rate`` of calls raise :class:`InjectedFaultError` instead of
  running the handler (the bus counts, retries and dead-letters it as any failure).
- :class:`Hang`: a fraction ``rate`` of calls never return (async: until cancelled, e.g.
  by :class:`~tidings.middleware.Timeout`; sync: block for ``seconds``).
- :class:`Drop`: a fraction ``rate`` of calls return without running the handler (a lost
  delivery the checker must see).
- :class:`Duplicate`: a fraction ``rate`` of calls run the handler twice (a redelivery).
- :class:`Reorder`: holds each event until ``window`` events are held (or ``hold``
  seconds pass), then runs them in a shuffled order (async handlers only).

Undone on exit: a fault holds no resource; :meth:`Reorder.flush` runs what it holds.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from tidings.event import Envelope
from tidings.exceptions import InvalidHandlerError, TidingsError
from tidings.middleware.base import Handler, is_async, name_of, wraps

__all__ = ("Drop", "Duplicate", "ErrorRate", "Hang", "InjectedFaultError", "Latency", "Reorder")


class InjectedFaultError(TidingsError, RuntimeError):
    """The error :class:`ErrorRate` raises in place of the handler (a ``RuntimeError``, and a
    :class:`~tidings.TidingsError` as every error tidings exports)."""


def _fraction(rate: float) -> float:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be a fraction between 0 and 1, not {rate!r}")
    return rate


class _Fault:
    def __init__(self, rate: float = 1.0, *, seed: int | None = None) -> None:
        self.rate = _fraction(rate)
        self.random = random.Random(seed)
        self.injected = 0

    def hit(self) -> bool:
        if self.rate and (self.rate >= 1.0 or self.random.random() < self.rate):
            self.injected += 1
            return True
        return False


class Latency(_Fault):
    """Wait ``seconds`` (plus up to ``jitter``) before each call (a fraction ``rate``)."""

    def __init__(
        self, seconds: float, jitter: float = 0.0, *, rate: float = 1.0, seed: int | None = None
    ) -> None:
        if seconds < 0 or jitter < 0:
            raise ValueError("seconds and jitter must be >= 0")
        super().__init__(rate, seed=seed)
        self.seconds = seconds
        self.jitter = jitter

    def _delay(self) -> float:
        return self.seconds + (self.random.uniform(0, self.jitter) if self.jitter else 0.0)

    def __call__(self, handler: Handler) -> Handler:
        if is_async(handler):

            @wraps(handler)
            async def slow_async(env: Envelope[Any]) -> Any:
                if self.hit():
                    await asyncio.sleep(self._delay())
                return await handler(env)

            return slow_async

        @wraps(handler)
        def slow(env: Envelope[Any]) -> Any:
            if self.hit():
                time.sleep(self._delay())
            return handler(env)

        return slow


class ErrorRate(_Fault):
    """Raise :class:`InjectedFaultError` instead of calling the handler, for a fraction ``rate``."""

    def __call__(self, handler: Handler) -> Handler:
        name = name_of(handler)
        if is_async(handler):

            @wraps(handler)
            async def failing_async(env: Envelope[Any]) -> Any:
                if self.hit():
                    raise InjectedFaultError(f"injected failure of {name} on event {env.id}")
                return await handler(env)

            return failing_async

        @wraps(handler)
        def failing(env: Envelope[Any]) -> Any:
            if self.hit():
                raise InjectedFaultError(f"injected failure of {name} on event {env.id}")
            return handler(env)

        return failing


class Hang(_Fault):
    """Never return, for a fraction ``rate`` of calls: async calls wait until cancelled (or
    ``seconds``, if given), sync ones block for ``seconds`` (required, bounded) and then
    run the handler."""

    def __init__(
        self, rate: float = 1.0, *, seconds: float | None = None, seed: int | None = None
    ) -> None:
        super().__init__(rate, seed=seed)
        self.seconds = seconds

    def __call__(self, handler: Handler) -> Handler:
        if is_async(handler):

            @wraps(handler)
            async def hanging_async(env: Envelope[Any]) -> Any:
                if self.hit():
                    if self.seconds is None:
                        await asyncio.Event().wait()
                    else:
                        await asyncio.sleep(self.seconds)
                return await handler(env)

            return hanging_async
        if self.seconds is None:
            raise InvalidHandlerError(
                f"Hang() on sync handler {name_of(handler)} needs seconds=: a sync call "
                "cannot be cancelled, so its hang must be bounded"
            )
        seconds = self.seconds

        @wraps(handler)
        def hanging(env: Envelope[Any]) -> Any:
            if self.hit():
                time.sleep(seconds)
            return handler(env)

        return hanging


class Drop(_Fault):
    """Return without calling the handler, for a fraction ``rate`` of calls."""

    def __call__(self, handler: Handler) -> Handler:
        if is_async(handler):

            @wraps(handler)
            async def dropping_async(env: Envelope[Any]) -> Any:
                if self.hit():
                    return None
                return await handler(env)

            return dropping_async

        @wraps(handler)
        def dropping(env: Envelope[Any]) -> Any:
            if self.hit():
                return None
            return handler(env)

        return dropping


class Duplicate(_Fault):
    """Call the handler twice, for a fraction ``rate`` of calls (a redelivery)."""

    def __call__(self, handler: Handler) -> Handler:
        if is_async(handler):

            @wraps(handler)
            async def twice_async(env: Envelope[Any]) -> Any:
                result = await handler(env)
                if self.hit():
                    result = await handler(env)
                return result

            return twice_async

        @wraps(handler)
        def twice(env: Envelope[Any]) -> Any:
            result = handler(env)
            if self.hit():
                result = handler(env)
            return result

        return twice


class Reorder(_Fault):
    """Hold events until ``window`` are held or the oldest waited ``hold`` seconds, then run
    them shuffled. Async handlers only (the calls must be able to wait)."""

    def __init__(self, window: int = 4, *, hold: float = 0.05, seed: int | None = None) -> None:
        if window < 2:
            raise ValueError(f"window must be at least 2 events, not {window!r}")
        super().__init__(1.0, seed=seed)
        self.window = window
        self.hold = hold
        self._held: list[tuple[Envelope[Any], asyncio.Future[Any]]] = []
        self._handler: Handler | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, handler: Handler) -> Handler:
        if not is_async(handler):
            raise InvalidHandlerError(
                f"Reorder() wraps async handlers only ({name_of(handler)} is sync)"
            )
        self._handler = handler

        @wraps(handler)
        async def reordered(env: Envelope[Any]) -> Any:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[Any] = loop.create_future()
            self._held.append((env, done))
            if len(self._held) >= self.window:
                self.flush()
            elif self._timer is None:
                self._timer = loop.call_later(self.hold, self.flush)
            return await done

        return reordered

    def flush(self) -> None:
        """Run every held event now, shuffled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held = self._held, []
        if len(held) > 1:
            self.injected += 1
            self.random.shuffle(held)
        asyncio.get_running_loop().create_task(self._run(held))

    async def _run(self, held: list[tuple[Envelope[Any], asyncio.Future[Any]]]) -> None:
        assert self._handler is not None
        for env, done in held:
            try:
                result = await self._handler(env)
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(result)

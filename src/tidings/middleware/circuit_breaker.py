"""Circuit breaker: stop calling a handler that keeps failing, for a while.

States:

- **closed** (normal): calls go through; ``failures`` failures in a row open the circuit (a
  success resets the count).
- **open**: for ``reset_after`` seconds every call fails at once with
  :class:`~tidings.CircuitOpenError`, without calling the handler; the bus counts and
  dead-letters it like any failure, so nothing is lost silently and a dead-letter handler can
  park or replay those events.
- **half-open**: after the cool-down, one call goes through as a trial (others meanwhile still
  fail fast). Its success closes the circuit; its failure opens it for another cool-down.

State belongs to the :class:`CircuitBreaker` object: one object guards every handler it
wraps together (one breaker per downstream service); use one object per subscription for
separate circuits. Thread-safe. ``clock=`` replaces ``time.monotonic`` (tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from tidings.event import Envelope
from tidings.exceptions import CircuitOpenError
from tidings.middleware.base import Handler, is_async, name_of, wraps

__all__ = ("CircuitBreaker", "CircuitState")

CircuitState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Middleware failing fast after ``failures`` consecutive failures, for ``reset_after``
    seconds, then letting one trial call through (see the module docstring).

    Attributes:
        state: ``"closed"``, ``"open"`` or ``"half_open"`` (a trial call is running).
        rejected: calls refused with :class:`~tidings.CircuitOpenError` so far.

    Raises:
        ValueError: ``failures`` below 1 or a negative ``reset_after``.
    """

    def __init__(
        self,
        failures: int = 5,
        *,
        reset_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 1:
            raise ValueError(f"CircuitBreaker(failures=) is an int >= 1, not {failures!r}")
        if not reset_after >= 0:
            raise ValueError(f"CircuitBreaker(reset_after=) is seconds >= 0, not {reset_after!r}")
        self.failures = failures
        self.reset_after = float(reset_after)
        self._clock = clock
        self._lock = threading.Lock()
        self._state: CircuitState = "closed"
        self._in_a_row = 0
        self._opened_at = 0.0
        self.rejected = 0

    @property
    def state(self) -> CircuitState:
        """The circuit's state now (an open one past its cool-down reads ``"open"`` until a
        call tries it)."""
        return self._state

    def _admit(self, name: str) -> None:
        """Let a call through, or raise :class:`CircuitOpenError`."""
        with self._lock:
            state = self._state
            if state == "closed":
                return
            if state == "open":
                waited = self._clock() - self._opened_at
                if waited >= self.reset_after:
                    self._state = "half_open"  # this call is the trial
                    return
                retry_after = self.reset_after - waited
            else:  # half-open: a trial is running
                retry_after = 0.0
            self.rejected += 1
        raise CircuitOpenError(
            f"circuit open for {name} after {self.failures} failure(s) in a row; calls fail "
            f"fast for {retry_after:.3g} s more, then one trial call goes through",
            handler=name,
            retry_after=retry_after,
        )

    def _succeeded(self) -> None:
        with self._lock:
            self._state = "closed"
            self._in_a_row = 0

    def _failed(self) -> None:
        with self._lock:
            self._in_a_row += 1
            if self._state == "half_open" or self._in_a_row >= self.failures:
                self._state = "open"
                self._opened_at = self._clock()

    def __call__(self, handler: Handler) -> Handler:
        name = name_of(handler)
        admit, succeeded, failed = self._admit, self._succeeded, self._failed
        if is_async(handler):

            @wraps(handler)
            async def guarded_async(env: Envelope[Any]) -> Any:
                admit(name)
                try:
                    result = await handler(env)
                except BaseException:
                    failed()
                    raise
                succeeded()
                return result

            return guarded_async

        @wraps(handler)
        def guarded(env: Envelope[Any]) -> Any:
            admit(name)
            try:
                result = handler(env)
            except BaseException:
                failed()
                raise
            succeeded()
            return result

        return guarded

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failures={self.failures}, reset_after={self.reset_after}, "
            f"state={self._state!r})"
        )

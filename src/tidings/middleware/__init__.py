"""Middleware: ``Handler -> Handler`` functions composed at subscribe time.

``bus.subscribe(Order, handle, middleware=[Retry(3), Timeout(2.0)])`` or, for every later
subscription, ``bus.use(RateLimit(100, burst=20))``. What a handler is in middleware terms,
the order of composition and the sync/async rules are in :mod:`tidings.middleware.base`;
each middleware's guarantees are in its module:

- :class:`Retry` (``retry``): call again with exponential backoff; dead-lettered once, with
  the attempts made, when every attempt failed.
- :class:`Timeout` (``timeout``): cancel an async handler that runs too long.
- :class:`CircuitBreaker` (``circuit_breaker``): fail fast with
  :class:`~tidings.CircuitOpenError` after repeated failures; half-open trial.
- :class:`Dedupe` (``dedupe``): drop redelivered event ids; store-backed across restarts.
- :class:`RateLimit` (``rate_limit``): token bucket; wait, or drop and count.

A subscription without middleware pays nothing for the feature.
"""

from tidings.middleware.base import (
    DROPPED,
    Handler,
    Middleware,
    attempts_of,
    is_async,
    note_attempts,
)
from tidings.middleware.circuit_breaker import CircuitBreaker, CircuitState
from tidings.middleware.dedupe import Dedupe
from tidings.middleware.rate_limit import RateLimit, RatePolicy
from tidings.middleware.retry import Retry
from tidings.middleware.timeout import Timeout

__all__ = (
    "DROPPED",
    "CircuitBreaker",
    "CircuitState",
    "Dedupe",
    "Handler",
    "Middleware",
    "RateLimit",
    "RatePolicy",
    "Retry",
    "Timeout",
    "attempts_of",
    "is_async",
    "note_attempts",
)

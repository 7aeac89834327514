"""Who may do what: API tokens with publish/subscribe scopes, and a per-token rate limit.

- A token's secret is read once, at start, from the environment variable its config names
  (``token_env``); it is never in the config file. A missing variable is an error at start.
- With no tokens configured, every request is let through (anonymous, every scope).
- A request's ``Authorization: Bearer SECRET`` is compared with every configured secret with
  :func:`hmac.compare_digest` (constant time per comparison; every secret is compared, so
  the time does not tell which one matched). None given or none matching: 401. A token whose
  ``publish`` / ``subscribe`` patterns do not cover the topic: 403.
- :class:`TokenBucket`: ``rate`` tokens per second, at most ``burst`` held; one event takes
  one token. A refused take tells how long until it would succeed (``Retry-After``).
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tidings.gateway.config import RateLimitConfig, TokenConfig
from tidings.topics import compile_pattern

__all__ = ("ANONYMOUS", "Access", "Caller", "TokenBucket")


class TokenBucket:
    """A token bucket (see the module docstring). Thread-safe."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> float:
        """Take ``count`` tokens: 0.0 when taken, else the seconds until they would be."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if count <= self._tokens:
                self._tokens -= count
                return 0.0
            return (min(count, self.burst) - self._tokens) / self.rate


_PROBE = "\x00"
"""A token no topic has: it stands for any token in :meth:`Caller.may_subscribe`."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its token name and what it may publish and subscribe to."""

    name: str
    publish: tuple[Callable[[str], bool], ...]
    subscribe: tuple[Callable[[str], bool], ...]

    def may_publish(self, topic: str) -> bool:
        return any(match(topic) for match in self.publish)

    def may_subscribe(self, pattern: str) -> bool:
        # a subscription pattern is covered when a scope pattern matches it as a topic
        # (wildcards included: '>' covers 'orders.*'), or is it exactly. A final '>' of the
        # pattern (one token or more) is covered only by a scope that takes both one and two
        # tokens in its place: 'orders.*' (one token) does not cover 'orders.>'.
        if pattern == ">" or pattern.endswith(".>"):
            head = pattern[:-1]
            probes = (head + _PROBE, f"{head}{_PROBE}.{_PROBE}")
            return any(all(match(p) for p in probes) for match in self.subscribe)
        return any(match(pattern) for match in self.subscribe)


ANONYMOUS = Caller("anonymous", (lambda topic: True,), (lambda topic: True,))


class Access:
    """The tokens of a config, with their secrets read from the environment.

    Raises:
        ValueError: naming a token whose environment variable is not set.
    """

    def __init__(self, tokens: Sequence[TokenConfig], rate_limit: RateLimitConfig | None) -> None:
        self._entries: list[tuple[bytes, Caller]] = []
        for token in tokens:
            secret = os.environ.get(token.token_env)
            if not secret:
                raise ValueError(
                    f"token {token.name!r} reads its secret from the environment variable "
                    f"{token.token_env}, which is not set; set it before starting the gateway"
                )
            caller = Caller(
                token.name,
                tuple(compile_pattern(p) for p in token.publish),
                tuple(compile_pattern(p) for p in token.subscribe),
            )
            self._entries.append((secret.encode(), caller))
        self._rate_limit = rate_limit
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def open(self) -> bool:
        """Whether no token is configured (every request is anonymous)."""
        return not self._entries

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller an ``Authorization`` header stands for; ``None``: 401."""
        if not self._entries:
            return ANONYMOUS
        if authorization is None or not authorization.lower().startswith("bearer "):
            return None
        given = authorization[7:].strip().encode()
        found = None
        for secret, caller in self._entries:
            if hmac.compare_digest(secret, given):
                found = caller
        return found

    def throttle(self, caller: Caller, count: int) -> float:
        """0.0 when ``caller`` may send ``count`` events now, else seconds to wait."""
        limit = self._rate_limit
        if limit is None:
            return 0.0
        bucket = self._buckets.get(caller.name)
        if bucket is None:
            bucket = self._buckets[caller.name] = TokenBucket(limit.rate, limit.burst)
        return bucket.take(count)

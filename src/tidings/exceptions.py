"""Every error tidings raises, in one tree.

::

    TidingsError
     ├── InvalidTopicError        (also ValueError)  a topic or pattern is malformed
     ├── TopicRequiredError       (also TypeError)   a builtin value was published without a topic
     ├── InvalidHandlerError      (also TypeError)   a handler is not callable or cannot be held
     ├── EventTypeConflictError   (also ValueError)  two classes claim one topic
     ├── ClockSkewError                              a remote clock is too far ahead
     ├── BusClosedError                              the bus no longer accepts events
     ├── LoopNotRunningError                         an async handler has no event loop to run on
     ├── WouldBlock                                  a ``*_nowait`` call would have to wait
     ├── QueueFullError                              a buffer with overflow="error" is full
     └── QueueClosedError                            a buffer was closed (and, for gets, drained)

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = (
    "BusClosedError",
    "ClockSkewError",
    "EventTypeConflictError",
    "InvalidHandlerError",
    "InvalidTopicError",
    "LoopNotRunningError",
    "QueueClosedError",
    "QueueFullError",
    "TidingsError",
    "TopicRequiredError",
    "WouldBlock",
)


class TidingsError(Exception):
    """Base class of every error raised by tidings."""


class InvalidTopicError(TidingsError, ValueError):
    """A topic or subscription pattern is malformed.

    Attributes:
        topic: the text that was rejected.
        token: the offending token, or ``None`` when the whole text is at fault.
    """

    def __init__(self, message: str, *, topic: str, token: str | None = None) -> None:
        super().__init__(message)
        self.topic = topic
        self.token = token


class TopicRequiredError(TidingsError, TypeError):
    """A value whose class cannot name a topic (an int, str, dict...) was published without one."""


class InvalidHandlerError(TidingsError, TypeError):
    """A handler is not callable, or cannot be referenced the way it was asked to be."""


class EventTypeConflictError(TidingsError, ValueError):
    """Two different event classes were registered for the same topic."""


class ClockSkewError(TidingsError):
    """A remote hybrid-clock time is further ahead of the local physical clock than allowed.

    Attributes:
        remote_ns: the remote time's physical part, in nanoseconds since the epoch.
        local_ns: the local physical time, in nanoseconds since the epoch.
        max_offset_ns: the largest accepted lead, in nanoseconds.
    """

    def __init__(self, *, remote_ns: int, local_ns: int, max_offset_ns: int) -> None:
        lead_ms = (remote_ns - local_ns) / 1e6
        super().__init__(
            f"remote clock is {lead_ms:.3f} ms ahead of the local clock, more than the "
            f"allowed {max_offset_ns / 1e6:.3f} ms; check the sender's clock synchronisation "
            "(NTP) or raise HybridClock(max_offset=...)"
        )
        self.remote_ns = remote_ns
        self.local_ns = local_ns
        self.max_offset_ns = max_offset_ns


class BusClosedError(TidingsError):
    """The bus is closing or closed, so it accepts no more events or subscriptions."""


class LoopNotRunningError(TidingsError):
    """An async handler was due to run but the bus has no running event loop.

    Start the bus inside asyncio (``async with Bus() as bus`` or ``await bus.start()``)
    before publishing to async handlers.
    """


class WouldBlock(TidingsError):  # noqa: N818 - the name anyio and trio users know
    """A ``*_nowait`` operation could not complete without waiting (buffer full or empty)."""


class QueueFullError(TidingsError):
    """A bounded buffer whose overflow policy is ``"error"`` was full.

    Attributes:
        name: what the buffer belongs to (a subscription's handler name, or the queue's name).
        capacity: the buffer's capacity.
    """

    def __init__(self, message: str, *, name: str, capacity: int) -> None:
        super().__init__(message)
        self.name = name
        self.capacity = capacity


class QueueClosedError(TidingsError):
    """The buffer was closed: puts are refused, and gets fail once it is drained."""

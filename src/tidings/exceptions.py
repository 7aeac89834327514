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
     ├── QueueClosedError                            a buffer was closed (and, for gets, drained)
     └── TransportError                              a transport (NATS JetStream...) failed
          ├── TransportUnavailableError (also ConnectionError)  server unreachable at start
          ├── TransportClosedError                   the transport is closing or closed
          ├── StreamConfigError                      the server's stream differs from the config
          ├── PublishError                           the server did not acknowledge a publish
          └── DecodeError         (also ValueError)  a received message is not a tidings event

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = (
    "BusClosedError",
    "ClockSkewError",
    "DecodeError",
    "EventTypeConflictError",
    "InvalidHandlerError",
    "InvalidTopicError",
    "LoopNotRunningError",
    "PublishError",
    "QueueClosedError",
    "QueueFullError",
    "StreamConfigError",
    "TidingsError",
    "TopicRequiredError",
    "TransportClosedError",
    "TransportError",
    "TransportUnavailableError",
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


class TransportError(TidingsError):
    """A transport carrying events between processes failed."""


class TransportUnavailableError(TransportError, ConnectionError):
    """The transport's server could not be reached at start within the configured timeout.

    Attributes:
        servers: the server URLs that were tried.
        timeout: the connect timeout, in seconds.
    """

    def __init__(self, message: str, *, servers: tuple[str, ...], timeout: float) -> None:
        super().__init__(message)
        self.servers = servers
        self.timeout = timeout


class TransportClosedError(TransportError):
    """The transport is closing or closed (or was never started)."""


class StreamConfigError(TransportError):
    """The server's stream exists with settings that differ from the transport's.

    Attributes:
        stream: the stream's name.
        differences: ``"setting: server has X, configured Y"`` for each difference.
    """

    def __init__(self, message: str, *, stream: str, differences: tuple[str, ...]) -> None:
        super().__init__(message)
        self.stream = stream
        self.differences = differences


class PublishError(TransportError):
    """The server did not acknowledge a publish within the publish timeout.

    Attributes:
        event_id: the id of the event that was not acknowledged.
        topic: its topic.
    """

    def __init__(self, message: str, *, event_id: str, topic: str) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.topic = topic


class DecodeError(TransportError, ValueError):
    """A received message could not be decoded into a tidings event.

    Attributes:
        subject: the subject (or topic) the message arrived on.
    """

    def __init__(self, message: str, *, subject: str) -> None:
        super().__init__(message)
        self.subject = subject

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
 ├── CircuitOpenError                            a circuit breaker refused a call (cooling down)
     ├── TransportError                              a transport (NATS JetStream...) failed
     │    ├── TransportUnavailableError (also ConnectionError)  server unreachable at start
     │    ├── TransportClosedError                   the transport is closing or closed
     │    ├── StreamConfigError                      the server's stream differs from the config
     │    ├── ConsumerConfigError                    a group's consumer differs from the policy
     │    ├── PublishError                           a publish failed; the event is not stored
     │    └── PublishOutcomeUnknownError             a publish got no answer; it may be stored
     ├── CodecError                                  a payload could not be encoded or decoded
     │    ├── EncodeError         (also TypeError)   a payload is not JSON-encodable
     │    └── DecodeError         (also ValueError)  bytes (stored or received) are not an event
     │         └── CloudEventError                   a received CloudEvent breaks the spec
     ├── StoreError                                  an event store refused an operation
     │    ├── ConcurrencyError                       a stream is not at the expected version
     │    ├── UnknownEventTypeError                  a stored record names a type nobody registered
     │    ├── StoreClosedError                       the store was closed
     │    ├── StoreCorruptedError                    the log's file or tables are damaged
     │    ├── StoreReadOnlyError (also PermissionError)  the log cannot be written here
     │    ├── StoreBusyError                         the log stayed locked by another writer
     │    ├── StoreUnavailableError (also ConnectionError)  the database is unreachable
     │    ├── ChainBrokenError                       appends refused: the hash chain is broken
     │    └── InvalidStoreURLError (also ValueError) a store URL is malformed
     ├── HeaderError              (also ValueError)  a header cannot travel in a CloudEvent
     └── MissingExtraError        (also ImportError) an optional extra is not installed

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = (
    "BusClosedError",
    "ChainBrokenError",
    "CircuitOpenError",
    "ClockSkewError",
    "CloudEventError",
    "CodecError",
    "ConcurrencyError",
    "ConsumerConfigError",
    "DecodeError",
    "EncodeError",
    "EventTypeConflictError",
    "HeaderError",
    "InvalidHandlerError",
    "InvalidStoreURLError",
    "InvalidTopicError",
    "LoopNotRunningError",
    "MissingExtraError",
    "PublishError",
    "PublishOutcomeUnknownError",
    "QueueClosedError",
    "QueueFullError",
    "StoreBusyError",
    "StoreClosedError",
    "StoreCorruptedError",
    "StoreError",
    "StoreReadOnlyError",
    "StoreUnavailableError",
    "StreamConfigError",
    "TidingsError",
    "TopicRequiredError",
    "TransportClosedError",
    "TransportError",
    "TransportUnavailableError",
    "UnknownEventTypeError",
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


class CircuitOpenError(TidingsError):
    """A :class:`~tidings.middleware.CircuitBreaker` refused to call its handler: it saw too
    many failures in a row and cools down; the call fails fast (and is dead-lettered like any
    failure) instead of reaching a service that is failing.

    Attributes:
        handler: the guarded handler's name.
        retry_after: seconds until the breaker lets a trial call through.
    """

    def __init__(self, message: str, *, handler: str, retry_after: float) -> None:
        super().__init__(message)
        self.handler = handler
        self.retry_after = retry_after


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


class InvalidTransportURLError(TransportError, ValueError):
    """A transport's server URL is malformed or is not a URL of that transport (for NATS:
    ``nats://host:4222``, or ``tls://``, ``ws://``, ``wss://``). Raised at construction,
    before any connection is tried.

    Attributes:
        url: the rejected URL.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


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


class ConsumerConfigError(TransportError):
    """A group's shared consumer exists with settings that differ from this subscription's
    delivery policy in a way that changes its meaning (``exclusive``, ``takeover``).

    Attributes:
        consumer: the consumer's name.
        differences: ``"setting: server has X, configured Y"`` for each difference.
    """

    def __init__(self, message: str, *, consumer: str, differences: tuple[str, ...]) -> None:
        super().__init__(message)
        self.consumer = consumer
        self.differences = differences


class PublishError(TransportError):
    """A publish failed and the event is not stored, and never will be: it never left this
    process (or was taken back from every buffer before this was raised), or the server
    refused it. Publishing it again cannot make a duplicate.

    Attributes:
        event_id: the id of the event that was not stored.
        topic: its topic.
    """

    def __init__(self, message: str, *, event_id: str, topic: str) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.topic = topic


class PublishOutcomeUnknownError(TransportError):
    """A publish reached a server but no answer came within the publish timeout: the event
    may have been stored, or may still be (a server still holding it). Publishing the same
    envelope again (same event id) within the stream's duplicate window stores it at most
    once; a new envelope of the same event would be a second event.

    Not a :class:`PublishError`, which means "not stored".

    Attributes:
        event_id: the id of the event whose outcome is unknown.
        topic: its topic.
        envelope: the envelope to publish again, or ``None`` for a raw publish.
    """

    def __init__(
        self, message: str, *, event_id: str, topic: str, envelope: object | None = None
    ) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.topic = topic
        self.envelope = envelope


class CodecError(TidingsError):
    """A payload could not be encoded to, or decoded from, its stored bytes."""


class EncodeError(CodecError, TypeError):
    """A payload is not JSON-encodable (its type, or a value inside it, is unsupported).

    Attributes:
        type_: the payload's class.
    """

    def __init__(self, message: str, *, type_: type) -> None:
        super().__init__(message)
        self.type_ = type_


class DecodeError(CodecError, ValueError):
    """Bytes are not valid JSON, or are not the event they should be: a stored record whose
    payload does not fit its type, or a received message that is not a tidings event.

    Attributes:
        type_name: the stored event type name (or the Python type's name), if known.
        position: the log position of the record, when the bytes came from a store.
        subject: the subject (or topic) a received message arrived on, when it came from a
            transport.
    """

    def __init__(
        self,
        message: str,
        *,
        type_name: str | None = None,
        position: int | None = None,
        subject: str | None = None,
    ) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.position = position
        self.subject = subject


class CloudEventError(DecodeError):
    """A received CloudEvent breaks CloudEvents 1.0 or its protocol binding: a required
    attribute is missing, or an attribute's name or value is malformed.

    Attributes:
        attribute: the name of the attribute at fault (``id``, ``time``, an extension's name...).
    """

    def __init__(self, message: str, *, attribute: str, subject: str | None = None) -> None:
        super().__init__(message, subject=subject)
        self.attribute = attribute


class HeaderError(TidingsError, ValueError):
    """An envelope header cannot travel in a CloudEvent: its name is reserved for the
    CloudEvents attributes or the protocol, or is no valid header name, or its value holds a
    line break (see ``docs/wire-format.md``, "Headers").

    Attributes:
        name: the header's name.
    """

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        self.name = name


class StoreError(TidingsError):
    """An event store refused or could not carry out an operation."""


class ConcurrencyError(StoreError):
    """An append's ``expected_version`` did not match the stream's actual version.

    Nothing of the append was written. Reload the stream, decide again, and retry.

    Attributes:
        stream: the stream appended to.
        expected: the version the append expected (``NO_STREAM`` counts as 0).
        actual: the stream's version when the append ran (0 for a stream with no events).
    """

    def __init__(self, *, stream: str, expected: int, actual: int) -> None:
        wanted = "version 0 (no stream yet)" if expected == 0 else f"version {expected}"
        super().__init__(
            f"stream {stream!r} is at version {actual}, but the append expected {wanted}; "
            "nothing was written: reload the stream and retry"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class UnknownEventTypeError(StoreError):
    """A stored record names an event type that no class is registered for.

    Import (or pass to the store's ``register_type``) the class that declares the type with
    ``@tidings.event``, or read with ``unknown="skip"`` or ``unknown="raw"``.

    Attributes:
        type_name: the stored type name.
        position: the record's log position.
    """

    def __init__(self, *, type_name: str, position: int) -> None:
        super().__init__(
            f"the record at position {position} has event type {type_name!r}, which no class "
            "is registered for; import the class declared with @tidings.event("
            f"{type_name!r}), or read with unknown='skip' or unknown='raw'"
        )
        self.type_name = type_name
        self.position = position


class StoreClosedError(StoreError):
    """The store was closed with ``aclose()``; open a new one to go on."""


class StoreCorruptedError(StoreError):
    """The log's database is damaged: SQLite reports a malformed file, PostgreSQL corrupted
    data. This is damage (lost or garbled pages), not tampering with valid records, which
    ``verify()`` reports as a broken hash chain.

    Restore the log from a backup; ``tidings log verify`` shows how far it still reads. The
    cause (the driver's exception) is chained.
    """


class StoreReadOnlyError(StoreError, PermissionError):
    """The log can be read but not written by this process: a read-only file or directory,
    a read-only database session or server (a standby), or missing privileges.

    Give the process write access (or connect to the primary); nothing was written.
    """


class StoreBusyError(StoreError):
    """Another connection held the log's lock for longer than the store waits
    (SQLite's ``busy_timeout``, a PostgreSQL lock timeout or deadlock).

    Nothing was written: retry the operation, or let the store wait longer.
    """


class StoreUnavailableError(StoreError, ConnectionError):
    """The database server could not be reached, or the connection to it was lost.

    An append that fails this way may or may not have committed; retrying it is safe, as
    appends are idempotent on the event id.
    """


class StoreNotFoundError(StoreError, FileNotFoundError):
    """There is no log where a read-only use of a store looked (no SQLite file, no tables
    in the PostgreSQL schema), and nothing was created: check the URL or path for a typo.

    Stores create a missing log only when opened to write (the default); ``tidings log``
    commands and ``open_store(url, create=False)`` never do.
    """


class ChainBrokenError(StoreError):
    """The log's hash chain does not verify, so the store refuses to extend it.

    Run ``tidings log verify`` to find the first broken position and restore the log from a
    backup; or, to append anyway (the break stays visible to ``verify()``), open the store
    with ``allow_broken_chain=True`` (URL: ``?allow_broken_chain=1``).

    Attributes:
        position: the first position where the chain breaks.
    """

    def __init__(self, message: str, *, position: int) -> None:
        super().__init__(message)
        self.position = position


class InvalidStoreURLError(StoreError, ValueError):
    """A store URL is malformed or names an unknown kind of store.

    Attributes:
        url: the rejected URL.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class MissingExtraError(TidingsError, ImportError):
    """A feature needs an optional extra that is not installed; the message names it."""

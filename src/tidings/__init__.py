"""tidings: a typed event bus that grows from one process to a durable log to a cluster.

The public API is re-exported here; everything else is private or lives in a documented
submodule (:mod:`tidings.topics`, :mod:`tidings.clock`, :mod:`tidings.testing`).
"""

from tidings._stream import EventStream
from tidings.bus import Bus, CloseReport, Handles
from tidings.clock import HybridClock
from tidings.dead_letter import DEAD_LETTER_TOPIC, DeadLetter
from tidings.delivery import Delivery, HandlerOutcome
from tidings.event import Envelope, event, from_cloudevent, to_cloudevent, topic_of
from tidings.exceptions import (
    BusClosedError,
    ClockSkewError,
    CodecError,
    ConcurrencyError,
    DecodeError,
    EncodeError,
    EventTypeConflictError,
    InvalidHandlerError,
    InvalidStoreURLError,
    InvalidTopicError,
    LoopNotRunningError,
    MissingExtraError,
    QueueClosedError,
    QueueFullError,
    StoreClosedError,
    StoreError,
    TidingsError,
    TopicRequiredError,
    UnknownEventTypeError,
    WouldBlock,
)
from tidings.store import (
    EventStore,
    MemoryStore,
    Snapshot,
    SQLiteStore,
    StoredEvent,
    open_store,
)
from tidings.subscription import Subscription

__version__ = "0.1.0"

__all__ = (
    "DEAD_LETTER_TOPIC",
    "Bus",
    "BusClosedError",
    "ClockSkewError",
    "CloseReport",
    "CodecError",
    "ConcurrencyError",
    "DeadLetter",
    "DecodeError",
    "Delivery",
    "EncodeError",
    "Envelope",
    "EventStore",
    "EventStream",
    "EventTypeConflictError",
    "HandlerOutcome",
    "Handles",
    "HybridClock",
    "InvalidHandlerError",
    "InvalidStoreURLError",
    "InvalidTopicError",
    "LoopNotRunningError",
    "MemoryStore",
    "MissingExtraError",
    "QueueClosedError",
    "QueueFullError",
    "SQLiteStore",
    "Snapshot",
    "StoreClosedError",
    "StoreError",
    "StoredEvent",
    "Subscription",
    "TidingsError",
    "TopicRequiredError",
    "UnknownEventTypeError",
    "WouldBlock",
    "__version__",
    "event",
    "from_cloudevent",
    "open_store",
    "to_cloudevent",
    "topic_of",
)

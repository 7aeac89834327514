"""tidings: a typed event bus that grows from one process to a durable log to a cluster.

The public API is re-exported here; everything else is private or lives in a documented
submodule (:mod:`tidings.topics`, :mod:`tidings.clock`, :mod:`tidings.testing`).
"""

import typing as _typing

from tidings._lazy import lazy_attributes as _lazy_attributes
from tidings._speedups import COMPILED as _COMPILED
from tidings._stream import EventStream
from tidings.bus import BatchHandles, Bus, BusStatistics, Handles, TransactionalHandles
from tidings.clock import HybridClock
from tidings.cloudevents import from_cloudevent, to_cloudevent
from tidings.dead_letter import DEAD_LETTER_TOPIC, DeadLetter
from tidings.delivery import Batch
from tidings.event import Envelope, event, topic_of
from tidings.exceptions import (
    BusClosedError,
    ChainBrokenError,
    CircuitOpenError,
    ClockSkewError,
    CloudEventError,
    CodecError,
    ConcurrencyError,
    ConsumerConfigError,
    DecodeError,
    EncodeError,
    EventTypeConflictError,
    HeaderError,
    InvalidHandlerError,
    InvalidStoreURLError,
    InvalidTopicError,
    InvalidTransportURLError,
    LoopNotRunningError,
    MissingExtraError,
    PublishError,
    PublishOutcomeUnknownError,
    QueueClosedError,
    QueueFullError,
    StoreBusyError,
    StoreClosedError,
    StoreCorruptedError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    StoreUnavailableError,
    StreamConfigError,
    TidingsError,
    TopicRequiredError,
    TransportClosedError,
    TransportError,
    TransportUnavailableError,
    UnknownEventTypeError,
    WouldBlock,
)
from tidings.forwarding import ForwardingStatistics, StoreAndForward
from tidings.middleware.base import Middleware
from tidings.projection import Projection
from tidings.queues import Overflow, QueueStatistics, RingBuffer
from tidings.results import CloseReport, Delivery, HandlerOutcome
from tidings.scheduling import AdaptiveWeight, WorkerPool
from tidings.store import (
    EventStore,
    MemoryStore,
    Snapshot,
    SQLiteStore,
    StoredEvent,
    Transaction,
    open_store,
)
from tidings.subscription import Mode, Subscription, SubscriptionStatistics
from tidings.transports import DeliveryPolicy, MemoryTransport

if _typing.TYPE_CHECKING:
    from tidings.store.postgres import PostgresStore
    from tidings.transports.nats import NatsTransport

__version__ = "0.1.0"

__speedups__: bool = _COMPILED
"""Whether the publish hot path runs compiled (mypyc, built at install when a C compiler was
there) or as pure Python; ``TIDINGS_PURE_PYTHON=1`` before the import forces pure Python."""


# NatsTransport needs the optional nats-py ('tidings[nats]'), PostgresStore psycopg
# ('tidings[postgres]'): imported when first used.
__getattr__ = _lazy_attributes(
    __name__,
    {"NatsTransport": "tidings.transports.nats", "PostgresStore": "tidings.store.postgres"},
)


__all__ = (
    "DEAD_LETTER_TOPIC",
    "AdaptiveWeight",
    "Batch",
    "BatchHandles",
    "Bus",
    "BusClosedError",
    "BusStatistics",
    "ChainBrokenError",
    "CircuitOpenError",
    "ClockSkewError",
    "CloseReport",
    "CloudEventError",
    "CodecError",
    "ConcurrencyError",
    "ConsumerConfigError",
    "DeadLetter",
    "DecodeError",
    "Delivery",
    "DeliveryPolicy",
    "EncodeError",
    "Envelope",
    "EventStore",
    "EventStream",
    "EventTypeConflictError",
    "ForwardingStatistics",
    "HandlerOutcome",
    "Handles",
    "HeaderError",
    "HybridClock",
    "InvalidHandlerError",
    "InvalidStoreURLError",
    "InvalidTopicError",
    "InvalidTransportURLError",
    "LoopNotRunningError",
    "MemoryStore",
    "MemoryTransport",
    "Middleware",
    "MissingExtraError",
    "Mode",
    "NatsTransport",
    "Overflow",
    "PostgresStore",
    "Projection",
    "PublishError",
    "PublishOutcomeUnknownError",
    "QueueClosedError",
    "QueueFullError",
    "QueueStatistics",
    "RingBuffer",
    "SQLiteStore",
    "Snapshot",
    "StoreAndForward",
    "StoreBusyError",
    "StoreClosedError",
    "StoreCorruptedError",
    "StoreError",
    "StoreNotFoundError",
    "StoreReadOnlyError",
    "StoreUnavailableError",
    "StoredEvent",
    "StreamConfigError",
    "Subscription",
    "SubscriptionStatistics",
    "TidingsError",
    "TopicRequiredError",
    "Transaction",
    "TransactionalHandles",
    "TransportClosedError",
    "TransportError",
    "TransportUnavailableError",
    "UnknownEventTypeError",
    "WorkerPool",
    "WouldBlock",
    "__speedups__",
    "__version__",
    "event",
    "from_cloudevent",
    "open_store",
    "to_cloudevent",
    "topic_of",
)

"""tidings: a typed event bus that grows from one process to a durable log to a cluster.

The public API is re-exported here; everything else is private or lives in a documented
submodule (:mod:`tidings.topics`, :mod:`tidings.clock`, :mod:`tidings.testing`).
"""

from tidings._stream import EventStream
from tidings.bus import BatchHandles, Bus, BusStatistics, Handles
from tidings.clock import HybridClock
from tidings.dead_letter import DEAD_LETTER_TOPIC, DeadLetter
from tidings.delivery import Batch
from tidings.event import Envelope, event, from_cloudevent, to_cloudevent, topic_of
from tidings.exceptions import (
    BusClosedError,
    ClockSkewError,
    EventTypeConflictError,
    InvalidHandlerError,
    InvalidTopicError,
    LoopNotRunningError,
    QueueClosedError,
    QueueFullError,
    TidingsError,
    TopicRequiredError,
    WouldBlock,
)
from tidings.queues import Overflow, QueueStatistics, RingBuffer
from tidings.results import CloseReport, Delivery, HandlerOutcome
from tidings.scheduling import AdaptiveWeight, WorkerPool
from tidings.subscription import Mode, Subscription, SubscriptionStatistics

__version__ = "0.1.0"

__all__ = (
    "DEAD_LETTER_TOPIC",
    "AdaptiveWeight",
    "Batch",
    "BatchHandles",
    "Bus",
    "BusClosedError",
    "BusStatistics",
    "ClockSkewError",
    "CloseReport",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "EventStream",
    "EventTypeConflictError",
    "HandlerOutcome",
    "Handles",
    "HybridClock",
    "InvalidHandlerError",
    "InvalidTopicError",
    "LoopNotRunningError",
    "Mode",
    "Overflow",
    "QueueClosedError",
    "QueueFullError",
    "QueueStatistics",
    "RingBuffer",
    "Subscription",
    "SubscriptionStatistics",
    "TidingsError",
    "TopicRequiredError",
    "WorkerPool",
    "WouldBlock",
    "__version__",
    "event",
    "from_cloudevent",
    "to_cloudevent",
    "topic_of",
)

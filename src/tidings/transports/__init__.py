"""Transports: what carries events between processes.

:class:`Transport` is the contract (see :mod:`tidings.transports.base`);
:class:`MemoryTransport` behaves like JetStream in memory, for tests;
:class:`NatsTransport` (``pip install 'tidings[nats]'``) runs on NATS JetStream;
:class:`KafkaTransport` (``pip install 'tidings[kafka]'``) on Apache Kafka.
The wire format is documented in :mod:`tidings.transports.wire`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidings._lazy import lazy_attributes as _lazy_attributes
from tidings.transports.base import (
    DeadLetterRecord,
    DeliveryPolicy,
    Message,
    MessageHandler,
    PublishAck,
    SubscriptionStats,
    Transport,
    TransportFeatures,
    TransportHealth,
    TransportSubscription,
)
from tidings.transports.memory import MemoryBroker, MemoryTransport

if TYPE_CHECKING:
    from tidings.transports.kafka import KafkaTransport
    from tidings.transports.nats import NatsTransport, StreamSettings

__all__ = (
    "DeadLetterRecord",
    "DeliveryPolicy",
    "KafkaTransport",
    "MemoryBroker",
    "MemoryTransport",
    "Message",
    "MessageHandler",
    "NatsTransport",
    "PublishAck",
    "StreamSettings",
    "SubscriptionStats",
    "Transport",
    "TransportFeatures",
    "TransportHealth",
    "TransportSubscription",
)


# NatsTransport needs the optional nats-py, KafkaTransport aiokafka: imported when asked for.
__getattr__ = _lazy_attributes(
    __name__,
    {
        "KafkaTransport": "tidings.transports.kafka",
        "NatsTransport": "tidings.transports.nats",
        "StreamSettings": "tidings.transports.nats",
    },
)

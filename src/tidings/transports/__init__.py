"""Transports: what carries events between processes.

:class:`Transport` is the contract (see :mod:`tidings.transports.base`);
:class:`MemoryTransport` behaves like JetStream in memory, for tests;
:class:`NatsTransport` (``pip install 'tidings[nats]'``) runs on NATS JetStream;
:class:`KafkaTransport` (``pip install 'tidings[kafka]'``) on Apache Kafka.
The wire format is documented in :mod:`tidings.transports.wire`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    # NatsTransport needs the optional nats-py: import it only when asked for.
    if name in ("NatsTransport", "StreamSettings"):
        from tidings.transports import nats

        return getattr(nats, name)
    if name == "KafkaTransport":
        from tidings.transports import kafka

        return kafka.KafkaTransport
    raise AttributeError(f"module 'tidings.transports' has no attribute {name!r}")

"""A foreign CloudEvent as the cloudevents SDK makes it, for the transport tests that such
events pass through tidings (HTTP, NATS) attribute for attribute."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cloudevents.core.v1.event import CloudEvent

__all__ = ("TIME", "sdk_order")

TIME = dt.datetime(2026, 1, 2, 12, 30, 45, 123456, tzinfo=dt.UTC)
"""The event's time: exact to the microsecond."""


def sdk_order(**changes: Any) -> CloudEvent:
    """An order event using every attribute kind: a type that is not the topic, a source
    needing percent-encoding, subject, dataschema, an exact microsecond time, extensions;
    with ``changes`` to its attributes (one set to ``None`` is left out) or its ``data``."""
    attributes: dict[str, Any] = {
        "id": "sdk-1",
        "source": "billing service/ü",
        "type": "com.example.order.placed",
        "specversion": "1.0",
        "subject": "order 7",
        "dataschema": "https://example.com/schemas/order.json",
        "datacontenttype": "application/json",
        "time": TIME,
        "partitionkey": "customer-42",
        "requestid": "r 1/ü",
    }
    data: Any = changes.pop("data", {"order_id": "o1", "amount": 12.5})
    attributes.update(changes)
    return CloudEvent(attributes={k: v for k, v in attributes.items() if v is not None}, data=data)

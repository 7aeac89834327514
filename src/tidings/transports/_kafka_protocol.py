"""InitProducerId v3 for aiokafka's idempotent producer.

aiokafka (0.14) knows only version 0 of the InitProducerId request, which carries no
producer id and epoch. Brokers that read those fields whatever the version (Tansu, the
Kafka-compatible broker the tests run) refuse it, so ``enable_idempotence=True`` could not
start. :func:`install` teaches aiokafka version 3 (flexible encoding; producer id and epoch
``-1``: "a new producer", the request every Kafka client sends since Kafka 2.5); the version
is negotiated per connection as for every other request, so a broker without v3 still gets
v0. Installing is idempotent and changes nothing else.

Invariant: the request built for a version carries exactly the fields of that version.
"""

from __future__ import annotations

from typing import Any

import aiokafka.producer.sender as _sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields

__all__ = ("InitProducerIdRequest", "install")


class InitProducerIdResponse_v3(Response):  # type: ignore[misc]  # noqa: N801
    """The answer to :class:`InitProducerIdRequest_v3`."""

    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequest_v3(RequestStruct):  # type: ignore[misc]  # noqa: N801
    """InitProducerId v3 (KIP-360): flexible, with the current producer id and epoch."""

    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 3
    RESPONSE_TYPE = InitProducerIdResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequest(Request[InitProducerIdRequest_v0 | InitProducerIdRequest_v3]):  # type: ignore[misc]
    """InitProducerId in version 0 or 3, whichever the broker offers (3 preferred)."""

    API_KEY = 22

    def __init__(self, transactional_id: str | None, transaction_timeout_ms: int) -> None:
        self._transactional_id = transactional_id
        self._transaction_timeout_ms = transaction_timeout_ms

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class is InitProducerIdRequest_v3:
            return InitProducerIdRequest_v3(
                self._transactional_id, self._transaction_timeout_ms, -1, -1, {}
            )
        return InitProducerIdRequest_v0(self._transactional_id, self._transaction_timeout_ms)


def install() -> None:
    """Make aiokafka's producers ask for a producer id with :class:`InitProducerIdRequest`."""
    _sender.InitProducerIdRequest = InitProducerIdRequest

"""The CloudEvents Kafka binding's encoder without a broker: the fast path (events without
given attributes, headers from a per-topic cache) writes exactly what the general path and
the cloudevents SDK read."""

from __future__ import annotations

from typing import Any

import pytest
from cloudevents.v1.kafka import KafkaMessage, from_binary

from tidings.clock import HybridClock
from tidings.cloudevents import binary_attributes, encode_data
from tidings.event import Envelope
from tidings.testing.transport_conformance import ConformanceOrder
from tidings.transports._kafka_wire import received_headers, record_of

_clock = HybridClock()


def _envelope(payload: Any, **fields: Any) -> Envelope[Any]:
    return Envelope("orders.placed", payload, _clock.now(), _node=_clock.node, **fields)


CASES = [
    pytest.param(_envelope(ConformanceOrder("o-1", 2.5), key="k1"), id="declared-class-keyed"),
    pytest.param(_envelope({"a": 1}, source="svc"), id="dict"),
    pytest.param(_envelope(b"\x00\x01"), id="bytes"),
    pytest.param(_envelope("text"), id="str"),
    pytest.param(
        _envelope(
            {"a": 1},
            headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "x-req": "r 1"},
        ),
        id="extension-and-plain-headers",
    ),
    pytest.param(_envelope({"a": 1}, _id="given-id"), id="given-id"),
]


def _general(envelope: Envelope[Any]) -> dict[str, bytes]:
    """The headers the general path (every attribute rendered) gives ``envelope``."""
    attributes, plain = binary_attributes(envelope)
    out = {
        ("content-type" if name == "datacontenttype" else f"ce_{name}"): value.encode()
        for name, value in attributes.items()
        if name != "partitionkey"
    }
    out.update((name, value.encode()) for name, value in plain.items())
    return out


@pytest.mark.parametrize("envelope", CASES)
def test_fast_path_writes_what_the_general_path_writes(envelope: Envelope[Any]) -> None:
    for _ in range(2):  # the first call fills the cache, the second reads it
        headers, body, key = record_of(envelope)
        assert dict(headers) == _general(envelope)
        assert len(headers) == len(dict(headers))  # no header twice
        assert body == encode_data(envelope)
        assert key == (None if envelope.key is None else envelope.key.encode())


@pytest.mark.parametrize("envelope", CASES)
def test_fast_path_records_read_back_by_the_cloudevents_sdk(envelope: Envelope[Any]) -> None:
    headers, body, key = record_of(envelope)
    event = from_binary(KafkaMessage(dict(headers), key, body), data_unmarshaller=lambda b: b)
    assert event["id"] == envelope.id
    assert event["type"] == envelope.topic
    assert event["source"] == envelope.source
    if envelope.key is not None:
        assert event["partitionkey"] == envelope.key.encode()  # the SDK keeps key bytes
    read = received_headers(headers, key, "tidings.orders.placed")
    assert read["ce-id"] == envelope.id
    assert read["ce-hlc"] == str(envelope.time)

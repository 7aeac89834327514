"""The durable log keeps every CloudEvents attribute: an event the official SDK produced goes
in over HTTP, into the log (SQLite, PostgreSQL), out of a fresh store, and the SDK reads
back the event it made."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from tidings.store import open_store
from tidings.transports.http import decode_request, encode_binary, encode_structured

EXTRA = {
    "subject": "order 7",
    "dataschema": "https://example.com/schemas/order.json",
    "partitionkey": "customer-42",
    "requestid": "r 1/ü",
}


def _events() -> list[CloudEvent]:
    common: dict[str, Any] = {"source": "billing service/ü", "specversion": "1.0", **EXTRA}
    return [
        CloudEvent(
            attributes={
                **common,
                "id": "json-1",
                "type": "com.example.order.placed",
                "datacontenttype": "application/json",
                "time": dt.datetime(2026, 1, 2, 12, 30, 45, 123456, tzinfo=dt.UTC),
            },
            data={"order_id": "o1", "amount": 12.5},
        ),
        CloudEvent(
            attributes={
                **common,
                "id": "blob-1",
                "type": "com.example.blob",
                "datacontenttype": "application/octet-stream",
                "time": dt.datetime(2026, 1, 2, 12, 30, 45, 999999, tzinfo=dt.UTC),
            },
            data=bytes(range(256)),
        ),
        CloudEvent(
            attributes={
                **common,
                "id": "text-1",
                "type": "com.example.text",
                "datacontenttype": "text/plain; charset=utf-8",
            },
            data="plain text",
        ),
    ]


def _comparable(event: Any) -> dict[str, Any]:
    attributes = dict(event.get_attributes())
    attributes.pop("hlc", None)
    return {**attributes, "data": event.get_data()}


@pytest.mark.parametrize("mode", ["binary", "structured"])
async def test_every_attribute_survives_the_log(store_url: str, mode: str) -> None:
    originals = _events()
    to_wire = sdk_http.to_binary if mode == "binary" else sdk_http.to_structured
    received = []
    for original in originals:
        sent = to_wire(original, JSONFormat())
        received += decode_request(sent.headers, sent.body, topic="log.order")
    async with open_store(store_url) as store:
        await store.append(received)
    async with open_store(store_url) as store:
        records = await store.read()
        assert await store.verify() is None  # the hash chain covers the attributes
    read_back = [record.envelope for record in records]
    assert read_back == received
    for envelope, original in zip(read_back, originals, strict=True):
        for encode in (encode_binary, encode_structured):
            headers, body = encode(envelope)
            back = sdk_http.from_http(sdk_http.HTTPMessage(headers, body), JSONFormat())
            assert _comparable(back) == _comparable(original)

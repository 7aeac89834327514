"""The CloudEvents HTTP binding, judged by the official Python SDK (``cloudevents``) as the
oracle, in both directions, in binary, structured and batch mode."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import tidings
from tidings.clock import HybridClock
from tidings.exceptions import CloudEventError, HeaderError
from tidings.transports.http import (
    BATCH_CONTENT_TYPE,
    decode_request,
    encode_batch,
    encode_binary,
    encode_structured,
)

from .sdk_events import TIME, sdk_order


@tidings.event("http.order")
@dataclass(frozen=True)
class HttpOrder:
    order_id: str
    amount: float


def sdk_event(**changes: Any) -> CloudEvent:
    """The SDK's order event (``sdk_events.sdk_order``) with a W3C trace context too."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    return sdk_order(**{"traceparent": traceparent, **changes})


def _recased(headers: dict[str, str]) -> dict[str, str]:
    """The same headers with names in the letter cases other stacks send."""
    cases = {"ce-id": "Ce-Id", "ce-specversion": "CE-SpecVersion", "content-type": "Content-Type"}
    return {
        cases.get(name, name.upper() if name.startswith("ce-") else name): value
        for name, value in headers.items()
    }


def _comparable(event: Any) -> dict[str, Any]:
    attributes = dict(event.get_attributes())
    attributes.pop("hlc", None)  # tidings' own extension, added on the way out
    return {**attributes, "data": event.get_data()}


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_sdk_events_survive_tidings_attribute_for_attribute(mode: str) -> None:
    original = sdk_event()
    sent = (sdk_http.to_binary if mode == "binary" else sdk_http.to_structured)(
        original, JSONFormat()
    )
    if mode == "binary":
        assert sent.headers["ce-source"] == "billing%20service/%C3%BC"  # the SDK encodes
    [envelope] = decode_request(_recased(sent.headers), sent.body, topic="http.order")
    assert envelope.id == "sdk-1"
    assert envelope.topic == "http.order"
    assert envelope.source == "billing service/ü"
    assert envelope.key == "customer-42"
    assert envelope.payload == HttpOrder("o1", 12.5)
    assert dict(envelope.headers) == {
        "requestid": "r 1/ü",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    assert envelope.attributes["type"] == "com.example.order.placed"
    assert envelope.attributes["subject"] == "order 7"
    assert envelope.attributes["dataschema"] == "https://example.com/schemas/order.json"
    for encode in (encode_binary, encode_structured):
        headers, body = encode(envelope)
        back = sdk_http.from_http(sdk_http.HTTPMessage(headers, body), JSONFormat())
        assert _comparable(back) == _comparable(original)
        assert back.get_extension("hlc") == str(envelope.time)


def test_tidings_events_parse_in_the_sdk_and_agree_across_modes() -> None:
    clock = HybridClock()
    envelope = tidings.Envelope(
        "http.order",
        HttpOrder("o2", 3.0),
        clock.now(),
        "cust-9",
        "checkout",
        {"traceparent": "00-aa-bb-01", "x-request-id": "req 7"},
    )
    binary_headers, binary_body = encode_binary(envelope)
    assert binary_headers["x-request-id"] == "req 7"  # a protocol header, not ce-x-request-id
    assert not any(name.startswith("ce-x") for name in binary_headers)
    binary = sdk_http.from_binary(sdk_http.HTTPMessage(binary_headers, binary_body), JSONFormat())
    structured_headers, structured_body = encode_structured(envelope)
    assert structured_headers["x-request-id"] == "req 7"
    structured = sdk_http.from_structured(
        sdk_http.HTTPMessage(structured_headers, structured_body), JSONFormat()
    )
    assert binary.get_attributes() == structured.get_attributes()  # time too: same text
    assert binary.get_data() == structured.get_data() == {"order_id": "o2", "amount": 3.0}
    assert binary.get_id() == envelope.id
    assert binary.get_type() == "http.order"
    assert binary.get_source() == "checkout"
    assert binary.get_extension("partitionkey") == "cust-9"
    assert binary.get_extension("traceparent") == "00-aa-bb-01"
    assert binary.get_time() == envelope.datetime.replace(
        microsecond=envelope.time // 1000 % 1_000_000
    )
    [again] = decode_request(binary_headers, binary_body)
    assert (again.id, again.time, again.key, again.payload) == (
        envelope.id,
        envelope.time,
        envelope.key,
        envelope.payload,
    )
    assert dict(again.headers) == {"traceparent": "00-aa-bb-01"}  # HTTP headers are not read


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_binary_data_round_trips(mode: str) -> None:
    payload = bytes(range(256))
    original = sdk_event(data=payload, datacontenttype="application/octet-stream")
    sent = (sdk_http.to_binary if mode == "binary" else sdk_http.to_structured)(
        original, JSONFormat()
    )
    if mode == "structured":
        assert "data_base64" in json.loads(sent.body)
    [envelope] = decode_request(sent.headers, sent.body, topic="http.blob")
    assert envelope.payload == payload
    for encode in (encode_binary, encode_structured):
        headers, body = encode(envelope)
        back = sdk_http.from_http(sdk_http.HTTPMessage(headers, body), JSONFormat())
        assert _comparable(back) == _comparable(original)


def test_text_data_under_a_non_json_content_type_round_trips() -> None:
    original = sdk_event(data="<order id='7'/>", datacontenttype="application/xml")
    sent = sdk_http.to_structured(original, JSONFormat())
    [envelope] = decode_request(sent.headers, sent.body, topic="http.xml")
    assert envelope.payload == "<order id='7'/>"
    headers, body = encode_binary(envelope)
    assert (headers["content-type"], body) == ("application/xml", b"<order id='7'/>")
    back = sdk_http.from_http(sdk_http.HTTPMessage(*encode_structured(envelope)), JSONFormat())
    assert _comparable(back) == _comparable(original)


def test_batch_mode_reads_and_writes_json_arrays_of_events() -> None:
    events = [sdk_event(id=f"b{i}", data={"order_id": f"o{i}", "amount": 1.0}) for i in range(3)]
    body = b"[" + b",".join(JSONFormat().write(event) for event in events) + b"]"
    envelopes = decode_request({"Content-Type": BATCH_CONTENT_TYPE}, body, topic="http.order")
    assert [e.id for e in envelopes] == ["b0", "b1", "b2"]
    assert [e.payload for e in envelopes] == [HttpOrder(f"o{i}", 1.0) for i in range(3)]
    headers, out = encode_batch(envelopes)
    assert headers == {"content-type": BATCH_CONTENT_TYPE}
    back = [JSONFormat().read(None, json.dumps(item).encode()) for item in json.loads(out)]
    assert [_comparable(e) for e in back] == [_comparable(e) for e in events]
    assert decode_request({"content-type": BATCH_CONTENT_TYPE}, b"[]") == []


def test_the_topic_defaults_to_the_type() -> None:
    sent = sdk_http.to_binary(sdk_event(type="http.order"), JSONFormat())
    [envelope] = decode_request(sent.headers, sent.body)
    assert envelope.topic == "http.order"
    assert "type" not in envelope.attributes
    assert envelope.payload == HttpOrder("o1", 12.5)
    sent = sdk_http.to_binary(sdk_event(type="com.example/bad type"), JSONFormat())
    with pytest.raises(CloudEventError, match="no tidings topic") as caught:
        decode_request(sent.headers, sent.body)
    assert caught.value.attribute == "type"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02t12:30:45.123456z", TIME),
        ("2026-01-02T14:30:45.123456+02:00", TIME),
        ("2026-01-02T12:30:45.123456789Z", TIME),
        ("2026-01-02T12:30:45Z", TIME.replace(microsecond=0)),
    ],
)
def test_rfc3339_times_are_read_and_kept_as_given(text: str, expected: dt.datetime) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "t1",
        "ce-source": "s",
        "ce-type": "http.order",
        "ce-time": text,
        "content-type": "application/json",
    }
    [envelope] = decode_request(headers, b'{"order_id":"o","amount":1}')
    assert envelope.time // 1000 == (expected - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // (
        dt.timedelta(microseconds=1)
    )
    out, _ = encode_binary(envelope)
    assert out["ce-time"] == text  # the producer's time leaves as it came
    assert json.loads(encode_structured(envelope)[1])["time"] == text


@pytest.mark.parametrize("missing", ["id", "source", "type", "specversion"])
def test_an_event_without_a_required_attribute_is_refused(missing: str) -> None:
    sent = sdk_http.to_binary(sdk_event(), JSONFormat())
    headers = {k: v for k, v in sent.headers.items() if k != f"ce-{missing}"}
    with pytest.raises(CloudEventError, match=f"required attribute '{missing}'") as caught:
        decode_request(headers, sent.body, topic="http.order")
    assert caught.value.attribute == missing
    event = json.loads(sdk_http.to_structured(sdk_event(), JSONFormat()).body)
    del event[missing]
    with pytest.raises(CloudEventError) as caught:
        decode_request(
            {"content-type": BATCH_CONTENT_TYPE}, json.dumps([event]).encode(), topic="http.o"
        )
    assert caught.value.attribute == missing
    assert "event 0 of the batch" in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "attribute"),
    [
        ({"ce-x-request-id": "r"}, "x-request-id"),
        ({"ce-time": "2026-01-02 12:30:45"}, "time"),
        ({"ce-hlc": "soon"}, "hlc"),
        ({"ce-specversion": "0.3"}, "specversion"),
        ({"ce-source": "%FF"}, "source"),
    ],
)
def test_malformed_attributes_are_named(headers: dict[str, str], attribute: str) -> None:
    sent = sdk_http.to_binary(sdk_event(), JSONFormat())
    with pytest.raises(CloudEventError) as caught:
        decode_request({**sent.headers, **headers}, sent.body, topic="http.order")
    assert caught.value.attribute == attribute


@pytest.mark.parametrize(
    "name", ["subject", "id", "hlc", "ce-foo", "Content-Type", "nats-msg-id", "bad name", "é"]
)
def test_headers_that_cannot_travel_are_refused_on_the_way_out(name: str) -> None:
    envelope = tidings.Envelope("http.order", HttpOrder("o", 1.0), 1, headers={name: "v"})
    for encode in (encode_binary, encode_structured):
        with pytest.raises(HeaderError) as caught:
            encode(envelope)
        assert caught.value.name == name

"""The CloudEvents Kafka binding without a broker: the encoder's fast path (events without
given attributes, headers from a per-topic cache) writes exactly what the general path and
the cloudevents SDK read; the decoder's fast path (:func:`fast_envelope`) reads exactly
what the general path reads, or leaves the record to it."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from cloudevents.v1.kafka import KafkaMessage, from_binary
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.clock import HybridClock
from tidings.cloudevents import binary_attributes, encode_data, format_time
from tidings.event import Envelope
from tidings.exceptions import DecodeError, EncodeError
from tidings.testing.transport_conformance import ConformanceOrder
from tidings.transports._kafka_wire import (
    Templates,
    fast_envelope,
    publish_record,
    received_headers,
    record_of,
)
from tidings.transports.wire import decode_envelope

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


def test_fast_path_time_headers_across_seconds_and_microsecond_edges() -> None:
    # ce_time is written from a per-second cache: every time, in whatever order, gets
    # exactly the text (and ce_hlc the digits) the general path writes.
    second = 1_796_544_000 * 1_000_000_000
    times = [
        second,
        second + 999_999_999,
        second + 1_000_000_000,
        second + 1_000,
        second + 999_999_000,
        second - 1,
        second + 123_456_789,
        0,
        second,
    ]
    for time in times:
        envelope = Envelope("orders.placed", {"a": 1}, time, _node=_clock.node)
        headers = dict(record_of(envelope)[0])
        assert headers["ce_time"] == format_time(time).encode()
        assert headers["ce_hlc"] == str(time).encode()


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


_SUBJECT = "tidings.orders.placed"


def _general_envelope(
    headers: list[tuple[str, bytes]], key: bytes | None, body: bytes, target: type | None
) -> Envelope[Any]:
    return decode_envelope(
        "orders.placed",
        received_headers(headers, key, _SUBJECT),
        body,
        target,
        subject=_SUBJECT,
        fallback_id="fallback",
        fallback_time=1,
    )


def _fast(
    headers: list[tuple[str, bytes]], key: bytes | None, body: bytes, target: type | None
) -> Envelope[Any] | None:
    templates = Templates("orders.placed", target)
    first = fast_envelope(headers, key, body, templates)
    again = fast_envelope(headers, key, body, templates)  # cached
    assert again == first
    return first


@pytest.mark.parametrize(
    ("envelope", "target"),
    [
        (_envelope(ConformanceOrder("o-1", 2.5), key="k1"), ConformanceOrder),
        (_envelope({"a": 1}, source="svc", key="ключ 1"), None),
        (_envelope({"a": 1}, _id="given id %"), None),
        (_envelope(ConformanceOrder("o-2", 1.0)), None),  # its dataschema is kept
    ],
)
def test_fast_envelope_reads_what_the_general_path_reads(
    envelope: Envelope[Any], target: type | None
) -> None:
    headers, body, key = record_of(envelope)
    general = _general_envelope(headers, key, body, target)
    fast = _fast(headers, key, body, target)
    if target is not None or type(envelope.payload) is dict:
        assert fast is not None  # the usual records take the fast path
        assert fast == general
        assert fast.id == envelope.id
        assert fast.time == envelope.time
    else:
        assert fast is None or fast == general


@pytest.mark.parametrize(
    "time",
    [
        1_796_582_918_000_001_234,  # microseconds with leading zeros
        1_796_582_918_999_999_999,  # the last nanosecond of a second
        1_796_582_919_000_000_000,  # the first of the next
        1_000_000_000,  # the shortest ce_hlc of the fast path (10 digits)
    ],
)
def test_fast_envelope_reads_the_time_text_of_any_time(time: int) -> None:
    _assert_fast_reads(time)


def _order_record(time: int) -> tuple[list[tuple[str, bytes]], bytes, bytes | None]:
    envelope = Envelope("orders.placed", ConformanceOrder("o-1", 2.5), time, "k1", _node="n")
    return record_of(envelope)


def _assert_fast_reads(time: int, templates: Templates | None = None) -> None:
    """The fast path reads the record of an event at ``time`` (with ``templates``, else
    fresh ones) as the general path does."""
    headers, body, key = _order_record(time)
    if templates is None:
        fast = _fast(headers, key, body, ConformanceOrder)
    else:
        fast = fast_envelope(headers, key, body, templates)
    assert fast is not None
    assert fast == _general_envelope(headers, key, body, ConformanceOrder)
    assert fast.time == time
    assert fast.attributes == {}


def test_fast_envelope_reads_times_across_seconds_through_one_cache() -> None:
    """The second's text is remembered between records: every time, in whatever order (a
    second read again, times of other lengths between), is read as the general path reads
    it, and a producer's own text within a remembered second is left to it."""
    second = 1_796_582_918_000_000_000
    times = [
        second + 5_000,
        second + 999_999_999,
        second + 1_000_000_000,
        second + 7,
        10**18,  # the first 19-digit time
        10**18 - 1,  # the last 18-digit one
        1_000_000_000,
        second + 123_456_789,
        0,
    ]
    templates = Templates("orders.placed", ConformanceOrder)
    for time in times:
        _assert_fast_reads(time, templates)
    # Another microsecond of the remembered second, and another second's text: kept.
    headers, body, key = _order_record(second + 5)
    assert fast_envelope(headers, key, body, templates) is not None  # remembered: second
    for text in (format_time(second + 124_000_000), format_time(second - 1_000_000_000)):
        headers = [(n, text.encode() if n == "ce_time" else v) for n, v in headers]
        assert fast_envelope(headers, key, body, templates) is None
        assert _general_envelope(headers, key, body, ConformanceOrder).attributes == {"time": text}


def _variants() -> list[Any]:
    headers, body, key = record_of(_envelope(ConformanceOrder("o-1", 2.5), key="k1"))
    named = dict(headers)

    def replaced(name: str, value: bytes) -> list[tuple[str, bytes]]:
        return [(n, value if n == name else v) for n, v in headers]

    traced = record_of(_envelope({"a": 1}, headers={"traceparent": "00-" + "a" * 32 + "-01"}))
    return [
        pytest.param(replaced("ce_time", b"2026-01-01T00:00:00+01:00"), key, body, id="own-time"),
        pytest.param(replaced("ce_time", b"not a time"), key, body, id="bad-time"),
        pytest.param(
            replaced(
                "ce_time", named["ce_time"][:-2] + (b"2Z" if named["ce_time"][-2] == 49 else b"1Z")
            ),
            key,
            body,
            id="time-off",
        ),
        pytest.param(replaced("ce_time", named["ce_time"] + b" "), key, body, id="time-longer"),
        pytest.param(
            replaced("ce_time", named["ce_time"][:-1] + b"+00:00"), key, body, id="time-offset"
        ),
        pytest.param(replaced("ce_hlc", b"-5"), key, body, id="negative-hlc"),
        pytest.param(replaced("ce_hlc", b"x"), key, body, id="bad-hlc"),
        pytest.param(replaced("ce_hlc", b"0" + named["ce_hlc"]), key, body, id="hlc-zero-led"),
        pytest.param(replaced("ce_hlc", b"+" + named["ce_hlc"]), key, body, id="hlc-plus"),
        pytest.param(replaced("ce_hlc", b" " + named["ce_hlc"]), key, body, id="hlc-space"),
        pytest.param(
            replaced("ce_hlc", named["ce_hlc"][:4] + b"_" + named["ce_hlc"][4:]),
            key,
            body,
            id="hlc-underscore",
        ),
        pytest.param(replaced("ce_hlc", named["ce_hlc"][:9]), key, body, id="hlc-short"),
        pytest.param(replaced("ce_hlc", named["ce_hlc"] + b" "), key, body, id="hlc-space-after"),
        pytest.param(replaced("ce_hlc", b"\t" + named["ce_hlc"][1:]), key, body, id="hlc-18-tab"),
        pytest.param(replaced("ce_hlc", b"1e18"), key, body, id="hlc-exponent"),
        pytest.param(replaced("ce_hlc", b"1" + named["ce_hlc"]), key, body, id="hlc-20-digits"),
        pytest.param(
            replaced("ce_hlc", str(int(named["ce_hlc"]) + 1000).encode()),
            key,
            body,
            id="hlc-next-microsecond",
        ),
        pytest.param(replaced("ce_id", b"\xff"), key, body, id="id-not-utf8"),
        pytest.param(replaced("ce_id", b""), key, body, id="empty-id"),
        pytest.param(replaced("ce_type", b"other.type"), key, body, id="foreign-type"),
        pytest.param(replaced("ce_specversion", b"0.3"), key, body, id="old-specversion"),
        pytest.param(
            replaced("ce_dataschema", b"tidings:schemas/orders.placed/versions/0"),
            key,
            body,
            id="older-schema",
        ),
        pytest.param(replaced("content-type", b"text/plain"), key, body, id="text"),
        pytest.param([h for h in headers if h[0] != "ce_source"], key, body, id="no-source"),
        pytest.param(headers, b"\xff", body, id="key-not-utf8"),
        pytest.param(headers, None, body, id="no-key"),
        pytest.param(headers, key, b"{not json", id="bad-json"),
        pytest.param(headers, key, b'{"order_id": 5}', id="wrong-shape"),
        pytest.param([*headers, ("x-extra", b"1")], key, body, id="plain-header"),
        pytest.param(traced[0], traced[2], traced[1], id="extension"),
        pytest.param([(n.replace("_", "-"), v) for n, v in headers], key, body, id="dash-spelling"),
        pytest.param(list(reversed(headers)), key, body, id="other-order"),
        pytest.param(headers[:3] + [("ce_type", named["ce_type"])] * 2, key, body, id="twice"),
    ]


@pytest.mark.parametrize(("headers", "key", "body"), _variants())
def test_fast_envelope_is_none_or_what_the_general_path_reads(
    headers: list[tuple[str, bytes]], key: bytes | None, body: bytes
) -> None:
    """Whatever a record holds, the fast path reads it as the general path does, or leaves
    it to the general path (which raises the error naming the fault)."""
    for target in (ConformanceOrder, None):
        _assert_none_or_general(_fast(headers, key, body, target), headers, key, body, target)


def _assert_none_or_general(
    fast: Envelope[Any] | None,
    headers: list[tuple[str, bytes]],
    key: bytes | None,
    body: bytes,
    target: type | None,
) -> None:
    """``fast`` (the fast path's reading of the record) is ``None`` or the general path's
    (``None`` when the general path refuses the record)."""
    try:
        general = _general_envelope(headers, key, body, target)
    except DecodeError:
        assert fast is None
        return
    assert fast is None or fast == general


_AROUND = (
    0,
    1_000_000_000,
    10**18,  # the first 19-digit hlc
    1_796_582_918_000_000_000,
    2**63,  # past the signed 64-bit times
    2**64,
    10**19,  # the first 20-digit hlc
    253_402_300_800 * 1_000_000_000,  # year 10000: no time text
)
"""Times the fast path's cached second and its 19-digit reading turn on."""

_times = st.one_of(
    st.sampled_from(_AROUND).flatmap(lambda t: st.integers(t - 2_000_000_000, t + 2_000_000_000)),
    st.sampled_from(_AROUND).flatmap(lambda t: st.integers(t - 2_000, t + 2_000)),
    st.integers(-(10**20), 10**21),
)
_hlc_around = st.tuples(
    st.sampled_from([b"", b"0", b"00", b"+", b"-", b" ", b"\t", b"\n", b"\r", b"\x0b", b"1"]),
    st.sampled_from([b"", b" ", b"\n", b"\r\n", b"0", b"_0", b".0", b"e0", b"\x00"]),
)
_text_shift = st.one_of(
    st.sampled_from([0, 0, 0, 1, -1, 999, 1_000, -1_000, 10**9, -(10**9), 10**6]),
    st.integers(-(10**10), 10**10),
)


def _written_text(time: int) -> bytes:
    """The ``ce_time`` tidings writes for ``time`` (one of year 9999 past its range)."""
    try:
        return format_time(max(time, 0)).encode()
    except (ValueError, OverflowError, OSError):
        return b"9999-12-31T23:59:59.999999Z"


@st.composite
def _time_headers(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A ``ce_hlc`` (digits of a time, perhaps with text around them) and a ``ce_time``
    (mostly the text tidings writes for that time or one near it, else a producer's own)."""
    time = draw(_times)
    if draw(st.booleans()):  # as tidings writes it
        return str(time).encode(), _written_text(time)
    before, after = draw(_hlc_around) if draw(st.booleans()) else (b"", b"")
    hlc = before + str(time).encode() + after
    text = _written_text(time + draw(_text_shift))
    kind = draw(st.sampled_from(["as-written", "as-written", "+00:00", "lowercase", "other"]))
    if kind == "+00:00":
        text = text[:-1] + b"+00:00"
    elif kind == "lowercase":
        text = text.lower()
    elif kind == "other":
        text = draw(st.binary(max_size=30))
    return hlc, text


_texts = st.one_of(st.binary(max_size=6), st.text(max_size=6).map(str.encode))
"""Ids and keys: empty, not UTF-8, percent signs, any text."""


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(_time_headers(), st.one_of(st.just(b"id-1"), _texts), st.none() | _texts),
        min_size=1,
        max_size=8,
    )
)
def test_fast_envelope_through_one_cache_is_none_or_the_general_path_s(
    records: list[tuple[tuple[bytes, bytes], bytes, bytes | None]],
) -> None:
    """Property: records in any sequence through the same templates (the cached second
    carried from one to the next), each read by the fast path as the general path reads it
    (or left to it), whatever its ``ce_hlc``, ``ce_time``, ``ce_id`` and key hold."""
    headers, body, _ = _order_record(1_796_582_918_000_000_000)
    caches = {target: Templates("orders.placed", target) for target in (ConformanceOrder, None)}
    for (hlc, text), event_id, key in records:
        changed = {"ce_hlc": hlc, "ce_time": text, "ce_id": event_id}
        record = [(n, changed.get(n, v)) for n, v in headers]
        for target, templates in caches.items():
            fast = fast_envelope(record, key, body, templates)
            _assert_none_or_general(fast, record, key, body, target)


SIZE_CASES = [
    *CASES,
    pytest.param(
        _envelope({"a": "é" * 50}, key="ключ", source="источник"), id="non-ascii-key-source"
    ),
    pytest.param(
        _envelope({"a": 1}, headers={"x-big": "h" * 5_000, "tracestate": "ü" * 300}),
        id="large-and-non-ascii-headers",
    ),
    pytest.param(_envelope({"a": 1}, attributes={"subject": "s"}), id="given-attributes"),
]


@pytest.mark.parametrize("structured", [False, True])
@pytest.mark.parametrize("envelope", SIZE_CASES)
def test_publish_record_bounds_the_size_aiokafka_measures(
    envelope: Envelope[Any], structured: bool
) -> None:
    """The transport skips the exact size check when the bound is below its limit: the bound
    must never be below what aiokafka measures (``-1``: not known, measured exactly)."""
    for _ in range(2):  # the first call fills the cache, the second reads it
        headers, body, key, bound = publish_record(envelope, structured=structured)
        assert (headers, body, key) == record_of(envelope, structured=structured)
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, body, headers)
        assert bound == -1 or size <= bound <= size + 200


def test_the_per_topic_cache_follows_a_change_of_source_or_payload_class() -> None:
    """The last layout of a topic is found by the topic alone: a change of source or payload
    class on the same topic gives that event's own headers and data."""
    events = [
        _envelope({"a": 1}, source="one"),
        _envelope({"a": 1}, source="two"),
        _envelope(b"raw", source="two"),
        _envelope(ConformanceOrder("o-1", 2.5), source="two"),
        _envelope({"a": 1}, source="one"),
    ]
    for envelope in events:
        headers, body, _ = record_of(envelope)
        assert dict(headers) == _general(envelope)
        assert body == encode_data(envelope)


def test_a_payload_that_cannot_be_encoded_raises_the_typed_error_naming_its_class() -> None:
    class Opaque:
        pass

    with pytest.raises(EncodeError, match="Opaque"):
        record_of(_envelope(Opaque()))

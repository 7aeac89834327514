"""The CloudEvents attribute layer every binding shares: names, percent-encoding, time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.cloudevents import (
    format_time,
    from_cloudevent,
    parse_time,
    percent_decode,
    percent_encode,
    split_headers,
    to_cloudevent,
)
from tidings.event import NO_HEADERS, Envelope
from tidings.exceptions import CloudEventError, HeaderError

BASE: dict[str, Any] = {"specversion": "1.0", "id": "e1", "type": "a.b", "source": "s"}


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("billing service/ü", "billing%20service/%C3%BC"),
        ('say "100%"', "say%20%22100%25%22"),
        ("tab\there\r\n", "tab%09here%0D%0A"),
        ("plain-ascii_~!", "plain-ascii_~!"),
        ("😀", "%F0%9F%98%80"),
    ],
)
def test_header_values_are_percent_encoded_as_the_bindings_require(text: str, encoded: str) -> None:
    assert percent_encode(text) == encoded
    assert percent_decode(encoded, "source") == text
    assert percent_decode(encoded.lower(), "source") == text  # hex digits in any case


@given(st.text())
def test_percent_encoding_round_trips_any_text(text: str) -> None:
    encoded = percent_encode(text)
    assert all("\x21" <= c <= "\x7e" and c != '"' for c in encoded)
    assert percent_decode(encoded, "x") == text


def test_a_value_that_does_not_decode_to_utf8_names_its_attribute() -> None:
    with pytest.raises(CloudEventError, match="not UTF-8") as caught:
        percent_decode("%C3%28", "subject")
    assert caught.value.attribute == "subject"


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-01-02T12:30:45.123456Z", 1_767_357_045_123_456_000),
        ("2026-01-02t12:30:45.123456z", 1_767_357_045_123_456_000),
        ("2026-01-02T13:30:45.123456789+01:00", 1_767_357_045_123_456_789),
        ("2026-01-02T12:30:45.1234567891Z", 1_767_357_045_123_456_789),
        ("2026-01-02T07:00:45-05:30", 1_767_357_045_000_000_000),
        ("2016-12-31T23:59:60Z", 1_483_228_800_000_000_000),  # a leap second
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_rfc3339_times_read_exactly(text: str, ns: int) -> None:
    assert parse_time(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-01-02 12:30:45Z", "not an RFC 3339 time"),
        ("2026-01-02T12:30:45", "not an RFC 3339 time"),
        ("2026-02-30T12:30:45Z", "no real date"),
        ("2026-01-02T24:00:00Z", "no real date"),
        ("1969-12-31T23:59:59Z", "outside the years 1970 to 2262"),
        ("2262-04-12T00:00:00Z", "outside the years 1970 to 2262"),
    ],
)
def test_malformed_times_are_named(text: str, message: str) -> None:
    with pytest.raises(CloudEventError, match=message) as caught:
        parse_time(text)
    assert caught.value.attribute == "time"


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_written_times_read_back_to_the_microsecond(t: int) -> None:
    assert parse_time(format_time(t)) == t // 1000 * 1000


def test_header_names_sort_into_extensions_and_protocol_headers() -> None:
    extensions, plain = split_headers(
        {"traceparent": "00-a-b-01", "x-request-id": "r 1", "X-Custom": "v", "requestid": "ü"}
    )
    assert extensions == {"traceparent": "00-a-b-01", "requestid": "ü"}
    assert plain == {"x-request-id": "r 1", "X-Custom": "v"}
    with pytest.raises(HeaderError, match="line break") as caught:
        split_headers({"x-note": "a\nb"})
    assert caught.value.name == "x-note"


def test_structured_events_keep_every_attribute() -> None:
    event = {
        **BASE,
        "type": "com.example.thing",
        "subject": "s 1",
        "dataschema": "https://example.com/s",
        "time": "2026-01-02t12:30:45.1z",
        "count": 3,
        "flag": True,
        "data": {"n": 1},
    }
    envelope = from_cloudevent({**event, "type": "a.b"})
    assert dict(envelope.headers) == {"count": "3", "flag": "true"}
    assert envelope.attributes["time"] == "2026-01-02t12:30:45.1z"
    out = to_cloudevent(
        Envelope(
            "a.b",
            {"n": 1},
            envelope.time,
            None,
            "s",
            envelope.headers,
            "e1",
            "",
            {**envelope.attributes, "type": "com.example.thing"},
        )
    )
    out.pop("hlc")
    out.pop("datacontenttype")
    assert out == {**event, "count": "3", "flag": "true"}


def test_data_base64_becomes_bytes_and_goes_back_out_as_base64() -> None:
    envelope = from_cloudevent({**BASE, "data_base64": "AAH+/w=="})
    assert envelope.payload == b"\x00\x01\xfe\xff"
    assert to_cloudevent(envelope)["data_base64"] == "AAH+/w=="
    with pytest.raises(CloudEventError, match="both 'data' and 'data_base64'"):
        from_cloudevent({**BASE, "data": 1, "data_base64": "AA=="})
    with pytest.raises(CloudEventError, match="not base64") as caught:
        from_cloudevent({**BASE, "data_base64": "***"})
    assert caught.value.attribute == "data_base64"


def test_invalid_extension_names_are_refused_naming_the_attribute() -> None:
    with pytest.raises(CloudEventError, match="lowercase letters and digits") as caught:
        from_cloudevent({**BASE, "X-Request-Id": "r"})
    assert caught.value.attribute == "X-Request-Id"


def test_published_envelopes_carry_no_attributes_and_share_the_empty_mapping() -> None:
    assert Envelope("a.b", 1, 0).attributes is NO_HEADERS


@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2261, 12, 31)),
    fractions=st.lists(st.text("0123456789", min_size=1, max_size=12), min_size=1, max_size=4),
)
def test_parse_time_reads_each_fraction_of_a_cached_second_exactly(
    moment: datetime, fractions: list[str]
) -> None:
    # The second of a 'Z' time is cached: later texts of that second parse by a lookup,
    # and must read exactly as the first (the oracle: whole seconds plus the fraction).
    prefix = moment.strftime("%Y-%m-%dT%H:%M:%S")
    seconds = int(moment.replace(microsecond=0, tzinfo=UTC).timestamp())
    for fraction in [*fractions, *fractions]:
        expected = seconds * 1_000_000_000 + int(fraction[:9].ljust(9, "0"))
        assert parse_time(f"{prefix}.{fraction}Z") == expected

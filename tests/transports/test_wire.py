"""The wire format's decoding rules: times, content types, fallbacks."""

from __future__ import annotations

import json

import pytest

from tidings.exceptions import DecodeError
from tidings.transports.wire import decode_envelope

RECEIVED = 1_700_000_000_000_000_000


def _decode(headers: dict[str, str] | None, body: bytes) -> object:
    return decode_envelope(
        "in.a",
        headers,
        body,
        None,
        subject="tidings.in.a",
        fallback_id="TIDINGS-1",
        fallback_time=RECEIVED,
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"ce-time": "1969-12-31T23:59:59Z"},
        {"ce-hlc": "-5"},
        {"content-type": "application/cloudevents+json"},
    ],
    ids=["ce-time", "ce-hlc", "structured"],
)
def test_times_before_1970_are_decode_errors(headers: dict[str, str]) -> None:
    body = b'{"n":1}'
    if headers.get("content-type"):
        body = json.dumps(
            {
                "specversion": "1.0",
                "id": "old-1",
                "type": "in.a",
                "source": "go",
                "time": "1900-01-01T00:00:00Z",
                "data": 1,
            }
        ).encode()
    with pytest.raises(DecodeError, match=r"outside the years 1970|'hlc' is '-5'") as caught:
        _decode(headers, body)
    assert caught.value.subject == "tidings.in.a"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json; charset=utf-8",
        "Application/CloudEvents+JSON",
        " application/cloudevents+json ;charset=UTF-8",
    ],
)
def test_structured_content_type_is_compared_as_a_media_type(content_type: str) -> None:
    body = json.dumps(
        {"specversion": "1.0", "id": "s2", "type": "in.a", "source": "go", "data": {"a": 4}}
    )
    envelope = decode_envelope(
        "in.a",
        {"content-type": content_type},
        body.encode(),
        None,
        subject="tidings.in.a",
        fallback_id="TIDINGS-1",
        fallback_time=RECEIVED,
    )
    assert (envelope.id, envelope.source, envelope.payload) == ("s2", "go", {"a": 4})


def test_structured_event_without_time_gets_the_time_of_receipt() -> None:
    body = json.dumps(
        {"specversion": "1.0", "id": "s1", "type": "in.a", "source": "go", "data": {"a": 3}}
    ).encode()
    calls: list[int] = []

    def received() -> int:
        calls.append(RECEIVED)
        return RECEIVED

    envelope = decode_envelope(
        "in.a",
        {"content-type": "application/cloudevents+json"},
        body,
        None,
        subject="tidings.in.a",
        fallback_id=lambda: "unused",
        fallback_time=received,
    )
    assert envelope.time == RECEIVED
    assert envelope.id == "s1"
    assert calls == [RECEIVED]

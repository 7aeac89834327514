"""The CloudEvents 1.0.2 HTTP protocol binding: HTTP requests to envelopes and back.

Framework-free: headers are any ``Mapping[str, str]`` (names compared case-insensitively,
so a plain ``dict`` or a framework's header object both work) and bodies are ``bytes``.
The attribute mapping, name rules, percent-encoding and time handling are those of
:mod:`tidings.cloudevents`, shared with the NATS wire format.

Reading (:func:`decode_request`) tells the three content modes apart by the media type of
``content-type`` (parameters and letter case ignored):

- ``application/cloudevents+json``: **structured** mode, one event as a JSON object;
- ``application/cloudevents-batch+json``: **batch** mode, a JSON array of such objects
  (possibly empty);
- anything else: **binary** mode, the attributes in ``ce-*`` headers (values
  percent-decoded), ``content-type`` as ``datacontenttype`` and the body as the data.

Every event must carry ``specversion`` ``1.0``, ``id``, ``source`` and ``type``: HTTP gives
no fallback, so an event lacking one is refused with a
:class:`~tidings.exceptions.CloudEventError` whose ``attribute`` names it (a gateway
answers 400). Headers other than ``ce-*`` and ``content-type`` are not part of the event and
are not read. The topic is the event's ``type`` unless the caller names one.

Writing (:func:`encode_binary`, :func:`encode_structured`, :func:`encode_batch`) returns the
headers and body of a request or response. Envelope headers whose names are not extension
names (e.g. ``x-request-id``) are written as plain HTTP headers beside the event (binary and
structured mode; a batch carries none).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from tidings import codec
from tidings.cloudevents import (
    STRUCTURED_CONTENT_TYPE,
    binary_data,
    envelope_from_attributes,
    media_type,
    read_headers,
    structured_attributes,
    structured_data,
    structured_event,
    to_binary,
    to_structured,
)
from tidings.event import Envelope
from tidings.exceptions import CloudEventError, DecodeError

__all__ = (
    "BATCH_CONTENT_TYPE",
    "STRUCTURED_CONTENT_TYPE",
    "decode_request",
    "encode_batch",
    "encode_binary",
    "encode_structured",
)

BATCH_CONTENT_TYPE: Final = "application/cloudevents-batch+json"


def decode_request(
    headers: Mapping[str, str],
    body: bytes,
    *,
    topic: str | None = None,
    payload_type: type | None = None,
    now: Callable[[], int] = _time.time_ns,
) -> list[Envelope[Any]]:
    """The events of an HTTP request (or response): one in binary and structured mode, any
    number in batch mode, in order.

    Args:
        headers: the HTTP headers; names in any letter case.
        body: the HTTP body.
        topic: the topic to deliver the events on; ``None`` takes each event's ``type``,
            which must then be a valid tidings topic.
        payload_type: decode JSON data as this class; else the class registered for the
            topic, else plain JSON values. Non-JSON data becomes ``bytes`` (binary mode,
            ``data_base64``) or ``str`` (a structured ``data`` string).
        now: the HLC time (nanoseconds since the epoch) of an event that carries neither
            ``time`` nor ``hlc``; pass your bus's clock.

    Raises:
        CloudEventError: (a DecodeError) naming the missing or malformed attribute; in batch
            mode the message names the event's index.
        DecodeError: if the body is not JSON where JSON is due, or the data does not fit the
            payload class.
    """
    attributes, content_type, _ = read_headers(headers)
    media = media_type(content_type)
    if media == STRUCTURED_CONTENT_TYPE:
        return [_structured(codec.decode(bytes(body)), topic, payload_type, now)]
    if media == BATCH_CONTENT_TYPE:
        batch = codec.decode(bytes(body))
        if not isinstance(batch, list):
            raise DecodeError(
                f"a {BATCH_CONTENT_TYPE} body is a JSON array, not {type(batch).__name__}"
            )
        out: list[Envelope[Any]] = []
        for index, event in enumerate(batch):
            try:
                out.append(_structured(event, topic, payload_type, now))
            except CloudEventError as exc:
                raise CloudEventError(
                    f"event {index} of the batch: {exc}", attribute=exc.attribute
                ) from None
        return out
    if media is not None and media.startswith("application/cloudevents"):
        raise CloudEventError(
            f"content-type {content_type!r} is no CloudEvents format tidings reads "
            f"(binary mode, {STRUCTURED_CONTENT_TYPE} or {BATCH_CONTENT_TYPE})",
            attribute="datacontenttype",
        )
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    envelope = envelope_from_attributes(
        attributes,
        binary_data(body, content_type),
        topic=topic,
        payload_type=payload_type,
        fallback_time=now,
    )
    return [envelope]


def _structured(
    event: object, topic: str | None, payload_type: type | None, now: Callable[[], int]
) -> Envelope[Any]:
    attributes = structured_attributes(event)
    assert isinstance(event, dict)  # structured_attributes refuses anything else
    return envelope_from_attributes(
        attributes,
        structured_data(event),
        topic=topic,
        payload_type=payload_type,
        fallback_time=now,
    )


def encode_binary(envelope: Envelope[Any]) -> tuple[dict[str, str], bytes]:
    """The headers and body of ``envelope`` in binary mode.

    Raises:
        EncodeError: if the payload cannot be encoded as JSON.
        HeaderError: for an envelope header that cannot travel (see
            :func:`tidings.cloudevents.split_headers`).
    """
    return to_binary(envelope)


def encode_structured(envelope: Envelope[Any]) -> tuple[dict[str, str], bytes]:
    """The headers and body of ``envelope`` in structured mode (JSON event format).

    Raises:
        EncodeError: if the payload cannot be encoded as JSON.
        HeaderError: for an envelope header that cannot travel.
    """
    return to_structured(envelope)


def encode_batch(envelopes: Iterable[Envelope[Any]]) -> tuple[dict[str, str], bytes]:
    """The headers and body of ``envelopes`` in batch mode: a JSON array of structured
    events, in order. Plain protocol headers of the envelopes are not carried.

    Raises:
        EncodeError: if a payload cannot be encoded as JSON.
        HeaderError: for an envelope header that cannot travel.
    """
    events = [structured_event(envelope)[0] for envelope in envelopes]
    return {"content-type": BATCH_CONTENT_TYPE}, codec.encode(events)

"""The CloudEvents Kafka protocol binding (version 1.0.2) for tidings envelopes.

**Binary mode** (the default): every context attribute is a ``ce_<name>`` header whose value
is the attribute's text as UTF-8 (no percent-encoding: Kafka header values are bytes),
``datacontenttype`` is the ``content-type`` header, the data is the record's value, and the
``partitionkey`` attribute is the record's **key** (no ``ce_partitionkey`` header), so every
event of one key lands in one partition and keeps its order there. Envelope headers that are
extensions (e.g. ``traceparent``, ``tracestate``) travel as ``ce_<name>``; the others (e.g.
``x-request-id``) as headers of their own name.

**Structured mode**: the value is the JSON CloudEvent (``content-type:
application/cloudevents+json``); the key is still the partition key.

**On receipt** both modes are read, whatever the transport's own setting; header names
are compared case-insensitively and ``ce-<name>`` (the HTTP/NATS spelling some clients use
on Kafka too) is read like ``ce_<name>``. A record key becomes ``partitionkey`` unless a
header gives it. A header value that is not UTF-8 makes the record undecodable (it is
dead-lettered with the reason).

Invariant: :func:`received_headers` of :func:`record_of` gives back exactly the headers
:func:`tidings.transports.wire.decode_envelope` reads for the same envelope.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tidings.cloudevents import (
    binary_attributes,
    encode_data,
    percent_encode,
    to_structured,
)
from tidings.event import Envelope
from tidings.exceptions import DecodeError

__all__ = ("KafkaHeaders", "received_headers", "record_of")

KafkaHeaders = list[tuple[str, bytes]]
"""Record headers as aiokafka sends and receives them."""


def record_of(
    envelope: Envelope[Any], *, structured: bool = False
) -> tuple[KafkaHeaders, bytes, bytes | None]:
    """The headers, value and key of the record that carries ``envelope``.

    Raises:
        EncodeError: (a TypeError) if the payload cannot be encoded as JSON.
        HeaderError: for an envelope header that cannot travel (see
            :func:`tidings.cloudevents.split_headers`).
    """
    key = None if envelope.key is None else envelope.key.encode()
    if structured:
        headers, body = to_structured(envelope)
        return [(name, value.encode()) for name, value in headers.items()], body, key
    attributes, plain = binary_attributes(envelope)
    names = _header_names
    out: KafkaHeaders = []
    for name, value in attributes.items():
        header = names.get(name)
        if header is None:
            header = f"ce_{name}"
            if len(names) < 4096:  # extension names repeat: remember them
                names[name] = header
        if header:
            out.append((header, value.encode()))
    for name, value in plain.items():
        out.append((name, value.encode()))
    return out, encode_data(envelope), key


_received_names: dict[str, str] = {}
"""Record header name -> the ``ce-<name>`` it stands for ("": not an attribute)."""

_header_names: dict[str, str] = {"datacontenttype": "content-type", "partitionkey": ""}
"""Attribute name -> record header name ("": not a header; the key carries it)."""


def received_headers(
    headers: Iterable[tuple[str, bytes]], key: bytes | None, topic: str, *, lenient: bool = False
) -> dict[str, str]:
    """The headers of a received record as :func:`~tidings.transports.wire.decode_envelope`
    reads them: ``ce-<name>`` (percent-encoded), ``content-type`` and the others as given;
    the record key as ``ce-partitionkey`` when no header names the partition key.

    With ``lenient``, bytes that are not UTF-8 are read as ``\\xNN`` escapes instead.

    Raises:
        DecodeError: naming the header (and ``topic``) whose value is not UTF-8.
    """
    out: dict[str, str] = {}
    errors = "backslashreplace" if lenient else "strict"
    names = _received_names
    for name, raw in headers:
        try:
            value = raw.decode("utf-8", errors)
        except UnicodeDecodeError:
            raise DecodeError(
                f"the header {name!r} of a record on {topic} is not UTF-8 text: {raw[:64]!r}",
                subject=topic,
            ) from None
        attribute = names.get(name)
        if attribute is None:
            lowered = name.lower()
            attribute = f"ce-{lowered[3:]}" if lowered.startswith(("ce_", "ce-")) else ""
            if len(names) < 4096:  # names repeat on every record: remember them
                names[name] = attribute
        if attribute:
            out[attribute] = percent_encode(value)
        else:
            out[name] = value
    if key is not None and "ce-partitionkey" not in out:
        try:
            out["ce-partitionkey"] = percent_encode(key.decode("utf-8", errors))
        except UnicodeDecodeError:
            raise DecodeError(
                f"the key of a record on {topic} is not UTF-8 text: {key[:64]!r}; tidings "
                "reads record keys as partition keys",
                subject=topic,
            ) from None
    return out

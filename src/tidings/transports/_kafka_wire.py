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

**Cost.** Most events published here carry no given attributes: for those,
:func:`record_of` writes the headers that depend only on the topic, source and payload class
(``ce_specversion``, ``ce_type``, ``ce_source``, ``ce_dataschema``, ``content-type``) from
a per-(topic, source, class) cache of encoded bytes (the last one of each topic found by
the topic alone), encodes the payload with that class's encoder, and encodes only what
varies (``ce_id``, ``ce_time``, ``ce_hlc``, extensions, the key);
:func:`publish_record` adds a bound of the record's size from the cached headers' sizes,
so that the transport measures a record exactly only when the bound is near its limit. :func:`received_headers` reads the usual
``ce_``/``content-type`` names through a cache of their decoded forms.
:func:`fast_envelope` reads a record laid out as :func:`record_of` writes such an event
(``ce_id``, ``ce_time``, ``ce_hlc``, then only headers that depend on the topic, source and
payload class) straight into its envelope: the constant headers are read once per
distinct set (a :data:`Templates` cache), so a record costs its id, time, key and payload.

Invariant: :func:`received_headers` of :func:`record_of` gives back exactly the headers
:func:`tidings.transports.wire.decode_envelope` reads for the same envelope, on the fast path
as on the general one; :func:`fast_envelope` gives either ``None`` or exactly the envelope
that :func:`~tidings.transports.wire.decode_envelope` of :func:`received_headers` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec

from tidings import codec
from tidings.cloudevents import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    SPEC_VERSION,
    binary_attributes,
    encode_data,
    format_time,
    percent_encode,
    split_headers,
    to_structured,
)
from tidings.dataschema import uri_of
from tidings.event import NO_HEADERS, Envelope
from tidings.exceptions import DecodeError

__all__ = (
    "KafkaHeaders",
    "Templates",
    "fast_envelope",
    "publish_record",
    "received_headers",
    "record_of",
)

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
    headers, body, key, _ = publish_record(envelope, structured=structured)
    return headers, body, key


def publish_record(
    envelope: Envelope[Any], *, structured: bool = False
) -> tuple[KafkaHeaders, bytes, bytes | None, int]:
    """:func:`record_of` and a bound of the record's size: no smaller than the bytes the
    record takes in a batch (aiokafka's ``estimate_size_in_bytes``), or ``-1`` when not
    known (the caller computes the size itself).

    Raises:
        EncodeError, HeaderError: as :func:`record_of`.
    """
    if structured or envelope.attributes:
        return _general_record(envelope, structured=structured)
    # Binary mode, no given attributes (the usual event published here).
    key = envelope.key
    encoded_key = None if key is None else key.encode()
    topic, source, payload = envelope.topic, envelope.source, envelope.payload
    layout = _last_layouts.get(topic)
    if layout is None or layout[1] is not type(payload) or layout[0] != source:
        layout = _layout(topic, source, type(payload))
    time = envelope.time
    seconds, nanos = divmod(time, 1_000_000_000)
    second = _time_second[0]
    if second[0] != seconds:  # one formatting per second of event time
        second = (seconds, format_time(time - nanos)[:20].encode())
        _time_second[0] = second
    high, low = divmod(nanos // 1000, 1000)
    event_id = envelope.id.encode()
    out: KafkaHeaders = [
        ("ce_id", event_id),
        ("ce_time", second[1] + _DIGITS[high] + _DIGITS[low] + b"Z"),  # format_time(time)
        ("ce_hlc", b"%d" % time),
    ]
    out += layout[2]
    bound = layout[4] + len(event_id)
    if envelope.headers:
        bound += _add_headers(out, envelope.headers)
    try:
        body = layout[3](payload)
    except Exception:
        body = codec.encode(payload)  # raises the typed EncodeError naming the class
    if encoded_key is None:
        return out, body, None, bound + len(body)
    return out, body, encoded_key, bound + len(body) + len(encoded_key)


def _general_record(
    envelope: Envelope[Any], *, structured: bool
) -> tuple[KafkaHeaders, bytes, bytes | None, int]:
    """:func:`publish_record` of an envelope with given attributes, or in structured mode."""
    key = None if envelope.key is None else envelope.key.encode()
    if structured:
        headers, body = to_structured(envelope)
        return [(name, value.encode()) for name, value in headers.items()], body, key, -1
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
    return out, encode_data(envelope), key, -1


_Constant = tuple[tuple[str, bytes], ...]
_Layout = tuple[str, type, _Constant, Callable[[Any], bytes], int]
"""What the record of an event without given attributes takes from its topic, source and
payload class: (source, class, the constant headers, the payload encoder, a bound of the
size those headers and the record's fixed parts add)."""

_layouts: dict[tuple[str, str, type], _Layout] = {}
"""(topic, source, payload class) -> its :data:`_Layout` (bounded)."""

_last_layouts: dict[str, _Layout] = {}
"""topic -> the layout of the last event published on it (one look-up by text)."""

_BYTES_TYPES = (bytes, bytearray, memoryview)

_RECORD_BOUND = 100
"""Bytes a record takes in a batch besides its key, value and headers, at most (aiokafka's
estimate: the 61-byte batch header, the record's attributes, deltas and length varints)."""


def _header_bound(name: str, value: bytes) -> int:
    """Bytes one header takes in a record, at most (two length varints of <= 5 bytes)."""
    return len(name.encode()) + len(value) + 10


def _layout(topic: str, source: str, cls: type) -> _Layout:
    """The layout of events on ``topic`` from ``source`` with payloads of class ``cls``: the
    headers that follow from those alone (the values :func:`binary_attributes` gives such
    an event), and the encoder :func:`encode_data` uses for them."""
    layout = _layouts.get((topic, source, cls))
    if layout is None:
        out = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_type", topic.encode()),
            ("ce_source", source.encode()),
        ]
        schema = uri_of(cls)
        if schema is not None:
            out.append(("ce_dataschema", schema.encode()))
        binary = issubclass(cls, _BYTES_TYPES)
        out.append(
            ("content-type", (BINARY_CONTENT_TYPE if binary else JSON_CONTENT_TYPE).encode())
        )
        # ce_id's value is added per event; ce_time's is 27 bytes, ce_hlc's at most 20.
        bound = _RECORD_BOUND + sum(_header_bound(name, value) for name, value in out)
        bound += _header_bound("ce_id", b"") + _header_bound("ce_time", b"x" * 27)
        bound += _header_bound("ce_hlc", b"x" * 20)
        encoder: Callable[[Any], bytes] = bytes if binary else codec.encoder(cls)
        layout = (source, cls, tuple(out), encoder, bound)
        if len(_layouts) >= 4096:
            _layouts.clear()
            _last_layouts.clear()
        _layouts[(topic, source, cls)] = layout
    if len(_last_layouts) >= 4096:
        _last_layouts.clear()
    _last_layouts[topic] = layout
    return layout


_time_second: list[tuple[int, bytes]] = [(-1, b"")]
"""The last second of an event time written and its ``YYYY-MM-DDTHH:MM:SS.`` text."""


def _add_headers(out: KafkaHeaders, headers: Mapping[str, str]) -> int:
    """Append an envelope's headers to ``out`` (extensions as ``ce_<name>``); a bound of
    the bytes they take in the record."""
    extensions, plain = split_headers(headers)
    names = _header_names
    bound = 0
    for name, value in extensions.items():
        header = names.get(name)
        if header is None:
            header = f"ce_{name}"
            if len(names) < 4096:
                names[name] = header
        encoded = value.encode()
        out.append((header, encoded))
        bound += _header_bound(header, encoded)
    for name, value in plain.items():
        encoded = value.encode()
        out.append((name, encoded))
        bound += _header_bound(name, encoded)
    return bound


_received_names: dict[str, str] = {}
"""Record header name -> the ``ce-<name>`` it stands for ("": not an attribute)."""

_VARYING = frozenset({"ce_id", "ce_time", "ce_hlc", "ce_traceparent", "ce_tracestate"})
"""Header names whose values differ from record to record: not worth remembering."""

_read_values: dict[tuple[str, bytes], tuple[str, str]] = {}
"""(header name, value bytes) -> what :func:`received_headers` reads them as (bounded)."""

_read_keys: dict[bytes, str] = {}
"""Record key -> its ``ce-partitionkey`` header value (bounded)."""

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
    read = _read_values
    for name, raw in headers:
        known = read.get((name, raw))
        if known is not None:
            out[known[0]] = known[1]
            continue
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
            header, value = attribute, percent_encode(value)
        else:
            header = name
        out[header] = value
        # Values that repeat (type, source, schema, content type): read once. Only what
        # decoded strictly, so that a lenient reading never stands in for a strict one.
        if not lenient and name not in _VARYING and len(raw) <= 512:
            if len(read) >= 4096:
                read.clear()
            read[(name, raw)] = (header, value)
    if key is not None and "ce-partitionkey" not in out:
        partition_key = _read_keys.get(key)
        if partition_key is None:
            try:
                partition_key = percent_encode(key.decode("utf-8", errors))
            except UnicodeDecodeError:
                raise DecodeError(
                    f"the key of a record on {topic} is not UTF-8 text: {key[:64]!r}; tidings "
                    "reads record keys as partition keys",
                    subject=topic,
                ) from None
            if not lenient and len(key) <= 512:
                if len(_read_keys) >= 4096:
                    _read_keys.clear()
                _read_keys[key] = partition_key
        out["ce-partitionkey"] = partition_key
    return out


Template = tuple[str, Mapping[str, str]] | None
"""What a set of constant headers stands for: the source and the kept attributes
(``None``: records with these headers take the general path)."""


class Templates:
    """The constant headers (as received) -> their :data:`Template`, for one topic and
    payload class (bounded); the last ones read are compared first (no hashing)."""

    __slots__ = (
        "decode",
        "known",
        "last",
        "last_template",
        "second",
        "second_end",
        "second_text",
        "target",
        "topic",
    )

    def __init__(self, topic: str, target: type | None) -> None:
        self.topic = topic
        self.target = target
        """The payload class records are decoded as (``None``: plain JSON values)."""
        self.known: dict[tuple[tuple[str, bytes], ...], Template] = {}
        self.last: Sequence[tuple[str, bytes]] | None = None
        self.last_template: Template = None
        self.second = 0
        """The first nanosecond of the last second of a 19-digit ``ce_hlc`` read ..."""
        self.second_end = 0
        """... and the first of the next (an empty range before the first) ..."""
        self.second_text = b""
        """... and the ``YYYY-MM-DDTHH:MM:SS.`` :func:`format_time` writes for that second."""
        self.decode: Callable[[bytes], Any] | None = None
        """The payload decoder of the target class (see :func:`tidings.codec.decoder`)."""

    def get(self, constant: Sequence[tuple[str, bytes]]) -> Template:
        """The template of ``constant`` (read the first time it is seen)."""
        key = tuple(constant)
        known = self.known
        try:
            template = known[key]
        except KeyError:
            template = _template(key, self.topic, self.target)
            if len(known) >= 4096:
                known.clear()
            known[key] = template
        self.last, self.last_template = constant, template
        return template


_CONSTANT_NAMES = frozenset(
    {"ce_specversion", "ce_type", "ce_source", "ce_dataschema", "content-type"}
)


def _template(constant: tuple[tuple[str, bytes], ...], topic: str, target: type | None) -> Template:
    """The source and kept attributes of records on ``topic`` with these constant headers,
    when the general path would read them as they are here: CloudEvents 1.0, JSON data, a
    source, a type, and no ``dataschema`` other than the one tidings writes for ``target``."""
    values: dict[str, str] = {}
    for name, raw in constant:
        if name not in _CONSTANT_NAMES or name in values:
            return None
        try:
            values[name] = raw.decode()
        except UnicodeDecodeError:
            return None
    source, type_ = values.get("ce_source"), values.get("ce_type")
    if (
        values.get("ce_specversion") != SPEC_VERSION
        or values.get("content-type") != JSON_CONTENT_TYPE
        or not source
        or not type_
    ):
        return None
    schema = values.get("ce_dataschema")
    if schema is not None and (target is None or uri_of(target) != schema):
        return None  # kept, or an older version to upcast: the general path
    kept = {"type": type_} if type_ != topic else {}
    return source, MappingProxyType(kept) if kept else NO_HEADERS


_DIGITS = tuple(b"%03d" % n for n in range(1000))
"""Three decimal digits of 0-999, as :func:`format_time` writes microseconds (twice)."""

_read_int: Callable[[bytes], int] = msgspec.json.Decoder(int).decode
"""A JSON integer's value: it reads no text :func:`int` refuses, and each as :func:`int`
does (it refuses some that :func:`int` reads: ``+1``, ``01``, ``1_0``), in half the time."""

_NINETEEN_DIGITS = 10**18
"""The least time whose ``ce_hlc`` has 19 digits (2001-09-09): a 19-byte ``ce_hlc`` that
reads as no less is 19 plain digits, the first 10 the second, the next 6 the microseconds."""


def _time_text(time: int, hlc: bytes, templates: Templates) -> bytes | None:
    """The time text tidings writes for ``time`` (``None``: before 1970), read from ``hlc``;
    a 19-digit one's second is remembered in ``templates``."""
    if time < 0:
        return None
    if len(hlc) == 19 and time >= _NINETEEN_DIGITS:
        second = time - time % 1_000_000_000
        templates.second_text = format_time(second)[:20].encode()
        templates.second, templates.second_end = second, second + 1_000_000_000
    return format_time(time).encode()


def fast_envelope(
    headers: Sequence[tuple[str, bytes]],
    key: bytes | None,
    value: bytes,
    templates: Templates,
) -> Envelope[Any] | None:
    """The envelope of a record of ``templates.topic`` laid out as :func:`record_of` writes
    an event without given attributes or headers, its payload decoded as
    ``templates.target``; ``None`` for any other record, and for one the general path might
    read otherwise or refuse (the caller decodes those with
    :func:`~tidings.transports.wire.decode_envelope`, which raises the error that names the
    fault)."""
    if len(headers) < 4:
        return None
    (id_name, id_value), (time_name, text), (hlc_name, hlc_value) = (
        headers[0],
        headers[1],
        headers[2],
    )
    if id_name != "ce_id" or time_name != "ce_time" or hlc_name != "ce_hlc":
        return None
    constant = headers[3:]
    template = templates.last_template if constant == templates.last else templates.get(constant)
    if template is None:
        return None
    try:
        time = _read_int(hlc_value)  # int(hlc_value) when it gives a value at all
        # The time text must be format_time(time) (else it is kept).
        if templates.second <= time < templates.second_end and len(hlc_value) == 19:
            # 19 plain digits (as the second's were): the microseconds are digits 11-16.
            expected: bytes | None = templates.second_text + hlc_value[10:16] + b"Z"
        else:
            expected = _time_text(time, hlc_value, templates)
        if text != expected:
            return None  # malformed, or a producer's own time text (kept)
        event_id = id_value.decode()
        if not event_id:
            return None  # missing
        decode = templates.decode
        if decode is None:
            decode = templates.decode = codec.decoder(templates.target)
        payload = decode(value)
        partition_key = None if key is None else key.decode()
    # UnicodeDecodeError and pydantic's ValidationError are ValueErrors.
    except (ValueError, TypeError, OverflowError, OSError, DecodeError, msgspec.DecodeError):
        return None
    source, kept = template
    return Envelope(
        templates.topic, payload, time, partition_key, source, NO_HEADERS, event_id, "", kept
    )

"""The wire format of tidings events on a message transport: CloudEvents 1.0 over headers.

Every transport stores an event as one message: a *subject*, string *headers* and a byte
*body*. The layout follows the CloudEvents NATS protocol binding, so any NATS client (Go,
Rust, JavaScript, the ``nats`` CLI) can publish events tidings consumes and consume the ones
it publishes. ``docs/wire-format.md`` shows worked examples.

**Subject.** ``<prefix>.<topic>``: the topic ``orders.placed`` under the default prefix
``tidings`` travels on ``tidings.orders.placed``. The subject names the topic; ``ce-type``
repeats it.

**Binary mode** (the default). The body is the payload alone, as JSON (msgspec); the
attributes are headers:

==================  ==========================================================  ========
header              value                                                       needed
==================  ==========================================================  ========
``ce-specversion``  ``1.0``                                                     yes
``ce-id``           the event id (32 hex digits when tidings made it)            no [1]
``ce-type``         the topic                                                   no
``ce-source``       who produced the event                                      no [2]
``ce-time``         RFC 3339 UTC time, microseconds                             no
``ce-hlc``          packed hybrid-clock time, decimal (see :mod:`tidings.clock`)  no [3]
``ce-partitionkey`` the ordering key, when there is one                         no
``ce-<name>``       every envelope header, e.g. ``ce-traceparent``              no
``content-type``    ``application/json``                                        no
``Nats-Msg-Id``     the event id: JetStream drops a duplicate within its window  no
==================  ==========================================================  ========

[1] without ``ce-id``, the ``Nats-Msg-Id`` is the id, else ``<stream>-<sequence>``.
[2] ``tidings`` when missing. [3] without ``ce-hlc``, ``ce-time`` gives the time; without
either, the time the message was received. A time before 1970 (a negative ``ce-hlc`` or an
earlier ``ce-time``) makes the message undecodable.

**Structured mode** (``structured=True`` on the transport). The body is the JSON
CloudEvent of :func:`tidings.to_cloudevent` and ``content-type`` is
``application/cloudevents+json``; ``Nats-Msg-Id`` is still set. Consumers read both modes
whatever their own setting: the content type tells them apart (its media type, compared
without parameters such as ``; charset=utf-8`` and case-insensitively). Without ``hlc`` or
``time`` an event is stamped with the time it was received, as in binary mode.

**Dead letters.** An event that exhausted its deliveries, or that could not be decoded, is
copied, body and headers unchanged, to ``<dead-letter prefix>.<topic>`` (default prefix
``<prefix>-dead``) with these headers added (see :data:`DEAD_HEADERS`):
``tidings-dead-reason`` (``ExceptionType: message``), ``tidings-dead-handler`` (the failing
handler's qualified name), ``tidings-dead-attempts`` (deliveries made),
``tidings-dead-subject`` (the original subject) and ``tidings-dead-sequence`` (the original
stream sequence).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import msgspec

from tidings import codec
from tidings.event import NO_HEADERS, Envelope
from tidings.exceptions import DecodeError

__all__ = (
    "CONTENT_TYPE_BINARY",
    "CONTENT_TYPE_STRUCTURED",
    "DEAD_ATTEMPTS",
    "DEAD_HANDLER",
    "DEAD_HEADERS",
    "DEAD_REASON",
    "DEAD_SEQUENCE",
    "DEAD_SUBJECT",
    "MSG_ID",
    "decode_envelope",
    "encode_envelope",
)

MSG_ID: Final = "Nats-Msg-Id"
CONTENT_TYPE_BINARY: Final = "application/json"
CONTENT_TYPE_STRUCTURED: Final = "application/cloudevents+json"

DEAD_REASON: Final = "tidings-dead-reason"
DEAD_HANDLER: Final = "tidings-dead-handler"
DEAD_ATTEMPTS: Final = "tidings-dead-attempts"
DEAD_SUBJECT: Final = "tidings-dead-subject"
DEAD_SEQUENCE: Final = "tidings-dead-sequence"
DEAD_HEADERS: Final = (DEAD_REASON, DEAD_HANDLER, DEAD_ATTEMPTS, DEAD_SUBJECT, DEAD_SEQUENCE)
"""The headers a dead-lettered message carries on top of its original ones."""

_CORE: Final = frozenset(
    {
        "specversion",
        "id",
        "type",
        "source",
        "time",
        "hlc",
        "partitionkey",
        "datacontenttype",
        "subject",
        "dataschema",
        "data",
    }
)


_last_second = [-1, ""]


def _rfc3339(t: int) -> str:
    seconds, nanos = divmod(t, 1_000_000_000)
    cached = _last_second
    if cached[0] != seconds:  # one strftime per second of event time
        stamp = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached[:] = [seconds, stamp]
    return f"{cached[1]}.{nanos // 1000:06d}Z"


def encode_envelope(
    envelope: Envelope[Any], *, structured: bool = False
) -> tuple[dict[str, str], bytes]:
    """The headers and body of ``envelope`` on the wire (see the module docstring).

    Raises:
        EncodeError: (a TypeError) if the payload cannot be encoded as JSON.
    """
    event_id = envelope.id
    if structured:
        from tidings.event import to_cloudevent

        body = codec.encode(to_cloudevent(envelope))
        return {"content-type": CONTENT_TYPE_STRUCTURED, MSG_ID: event_id}, body
    body = codec.encode(envelope.payload)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": envelope.topic,
        "ce-source": envelope.source,
        "ce-time": _rfc3339(envelope.time),
        "ce-hlc": str(envelope.time),
        "content-type": CONTENT_TYPE_BINARY,
        MSG_ID: event_id,
    }
    if envelope.key is not None:
        headers["ce-partitionkey"] = envelope.key
    for name, value in envelope.headers.items():
        headers.setdefault(f"ce-{name}", value)
    return headers, body


class _Structured(msgspec.Struct, dict=False):
    specversion: str
    id: str | None = None
    source: str = "tidings"
    time: str | None = None
    hlc: str | int | None = None
    partitionkey: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")


def _parse_time(value: str, subject: str) -> int:
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DecodeError(f"malformed ce-time {value!r} on {subject}", subject=subject) from None
    time = int(parsed.timestamp() * 1_000_000) * 1000
    if time < 0:
        raise DecodeError(
            f"ce-time {value!r} on {subject} is before 1970, which an HLC time cannot hold",
            subject=subject,
        )
    return time


def _parse_hlc(value: object, subject: str) -> int:
    try:
        hlc = int(str(value))
    except ValueError:
        hlc = -1
    if hlc < 0:
        raise DecodeError(f"malformed ce-hlc {value!r} on {subject}", subject=subject)
    return hlc


def _media_type(content_type: str | None) -> str | None:
    """The media type of a ``content-type`` value: parameters dropped, lower case."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def decode_envelope(
    topic: str,
    headers: Mapping[str, str] | None,
    body: bytes,
    payload_type: type | None,
    *,
    subject: str,
    fallback_id: str | Callable[[], str],
    fallback_time: int | Callable[[], int],
) -> Envelope[Any]:
    """Rebuild the envelope of a received message (binary or structured mode).

    Args:
        topic: the topic the message's subject names.
        headers: the message's headers, if any.
        body: the message's body.
        payload_type: decode the payload as this class; ``None`` leaves plain JSON values.
        subject: the subject, for error messages.
        fallback_id: the id when the message carries neither ``ce-id`` nor ``Nats-Msg-Id``
            (or a function computing it, called only then).
        fallback_time: the HLC time when it carries neither ``ce-hlc`` nor ``ce-time``
            (or a function computing it, called only then).

    Raises:
        DecodeError: naming the subject and what is wrong with the message, including a
            negative ``ce-hlc`` and a ``ce-time`` before 1970.
    """
    hdrs: Mapping[str, str] = headers or NO_HEADERS
    try:
        if _media_type(hdrs.get("content-type")) == CONTENT_TYPE_STRUCTURED:
            return _decode_structured(
                topic, hdrs, body, payload_type, subject, fallback_id, fallback_time
            )
        payload = codec.decode(bytes(body), payload_type)
    except DecodeError as exc:
        if exc.subject is not None:
            raise
        raise DecodeError(
            f"cannot decode the body of the message on {subject}: {exc}",
            type_name=exc.type_name,
            subject=subject,
        ) from None
    except Exception as exc:
        what = "" if payload_type is None else f" as {payload_type.__qualname__}"
        raise DecodeError(
            f"cannot decode the body of the message on {subject}{what}: "
            f"{type(exc).__name__}: {exc}",
            subject=subject,
        ) from None
    version = hdrs.get("ce-specversion")
    if version is not None and version != "1.0":
        raise DecodeError(f"ce-specversion {version!r} on {subject} is not '1.0'", subject=subject)
    extensions: dict[str, str] = {}
    for name, value in hdrs.items():
        if name.startswith("ce-") and name[3:] not in _CORE:
            extensions[name[3:]] = value
    hlc_text = hdrs.get("ce-hlc")
    if hlc_text is not None:
        time = _parse_hlc(hlc_text, subject)
    else:
        time_text = hdrs.get("ce-time")
        time = _value(fallback_time) if time_text is None else _parse_time(time_text, subject)
    return Envelope(
        topic,
        payload,
        time,
        hdrs.get("ce-partitionkey"),
        hdrs.get("ce-source", "tidings"),
        MappingProxyType(extensions) if extensions else NO_HEADERS,
        hdrs.get("ce-id") or hdrs.get(MSG_ID) or _value(fallback_id),
    )


def _value(given: Any) -> Any:
    return given() if callable(given) else given


_structured_decoder = msgspec.json.Decoder(_Structured)


def _decode_structured(
    topic: str,
    hdrs: Mapping[str, str],
    body: bytes,
    payload_type: type | None,
    subject: str,
    fallback_id: str | Callable[[], str],
    fallback_time: int | Callable[[], int],
) -> Envelope[Any]:
    event = _structured_decoder.decode(body)
    if event.specversion != "1.0":
        raise DecodeError(
            f"CloudEvent specversion {event.specversion!r} on {subject} is not '1.0'",
            subject=subject,
        )
    payload = codec.decode(bytes(event.data), payload_type)
    if event.hlc is not None:
        time = _parse_hlc(event.hlc, subject)
    else:
        time = _value(fallback_time) if event.time is None else _parse_time(event.time, subject)
    extensions: dict[str, str] = {}
    raw = msgspec.json.decode(body)
    if isinstance(raw, dict):
        for name, value in raw.items():
            if name not in _CORE:
                extensions[name] = str(value)
    return Envelope(
        topic,
        payload,
        time,
        event.partitionkey,
        event.source,
        MappingProxyType(extensions) if extensions else NO_HEADERS,
        event.id or hdrs.get(MSG_ID) or _value(fallback_id),
    )

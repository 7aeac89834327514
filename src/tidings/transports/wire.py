"""The wire format of tidings events on a message transport: CloudEvents 1.0 over headers.

Every transport stores an event as one message: a *subject*, string *headers* and a byte
*body*. The layout follows the CloudEvents NATS protocol binding, so any NATS client (Go,
Rust, JavaScript, the ``nats`` CLI) can publish events tidings consumes and consume the ones
it publishes. ``docs/wire-format.md`` shows worked examples.

**Subject.** ``<prefix>.<topic>``: the topic ``orders.placed`` under the default prefix
``tidings`` travels on ``tidings.orders.placed``. The subject names the topic; ``ce-type``
is the topic too, unless the event came from elsewhere with another ``type``, which it
keeps (:attr:`Envelope.attributes`).

**Binary mode** (the default). The body is the data (the payload as JSON, or binary data
as is; see :mod:`tidings.cloudevents`); the attributes are headers, values percent-encoded
(space, ``"``, ``%`` and non-ASCII as UTF-8 ``%XX``) and percent-decoded on receipt. Header
names are read case-insensitively (``Ce-Id``, ``CE-SpecVersion``, ``Content-Type``):

======================  =====================================================  ========
header                  value                                                  needed
======================  =====================================================  ========
``ce-specversion``      ``1.0``                                                [1]
``ce-id``               the event id (32 hex digits when tidings made it)       [1]
``ce-type``             the topic, or the producer's type                      no
``ce-source``           who produced the event                                 [1]
``ce-time``             RFC 3339; tidings writes UTC microseconds, keeps a      no [2]
                        producer's text as given
``ce-hlc``              packed hybrid-clock time, decimal (:mod:`tidings.clock`) no [2]
``ce-partitionkey``     the ordering key, when there is one                    no
``ce-subject``,         kept when the producer gave them                       no
``ce-dataschema``
``ce-<name>``           envelope headers named ``[a-z0-9]+`` (extensions),      no
                        e.g. ``ce-traceparent``
``<name>``              other envelope headers (e.g. ``x-request-id``), as is   no
``content-type``        ``datacontenttype``: ``application/json`` by default    no
``Nats-Msg-Id``         the event id: JetStream drops a duplicate in its window no
======================  =====================================================  ========

[1] a message with ``ce-specversion`` claims to be a CloudEvent and must carry ``id``
(else a :class:`~tidings.exceptions.CloudEventError`: dead letters). A message without it is
a plain NATS message: id ``ce-id``, else ``Nats-Msg-Id``, else ``<stream>-<sequence>``
(stable across redeliveries, so idempotent handling works). A missing source is
``tidings``. [2] without ``ce-hlc``, ``ce-time`` gives the time; without either, the time
the message was received. A time before 1970 (a negative ``ce-hlc`` or an earlier
``ce-time``) makes the message undecodable.

An envelope header that can be neither an extension nor a protocol header (a context
attribute's name such as ``subject``; a name starting ``ce-``, ``nats-`` or ``tidings-``;
``content-type``; a name that is no HTTP token; a line break in a protocol header's value)
is refused on publish with a :class:`~tidings.exceptions.HeaderError`. On receipt, headers
other than ``ce-*``, ``content-type``, ``Nats-*`` and ``tidings-*`` become envelope headers.

**Structured mode** (``structured=True`` on the transport). The body is the JSON
CloudEvent of :func:`tidings.to_cloudevent` (binary data as ``data_base64``) and
``content-type`` is ``application/cloudevents+json``; protocol headers and ``Nats-Msg-Id``
are still set. Consumers read both modes whatever their own setting: the content type tells
them apart (its media type, compared without parameters such as ``; charset=utf-8`` and
case-insensitively). A structured event must carry ``specversion`` and ``id``; without
``hlc`` or ``time`` it is stamped with the time it was received.

**Dead letters.** An event that exhausted its deliveries, or that could not be decoded, is
copied, body and headers unchanged, to ``<dead-letter prefix>.<topic>`` (default prefix
``<prefix>-dead``) with these headers added (see :data:`DEAD_HEADERS`):
``tidings-dead-reason`` (``ExceptionType: message``), ``tidings-dead-handler`` (the failing
handler's qualified name), ``tidings-dead-attempts`` (deliveries made),
``tidings-dead-subject`` (the original subject) and ``tidings-dead-sequence`` (the original
stream sequence).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from tidings import codec
from tidings.cloudevents import (
    STRUCTURED_CONTENT_TYPE,
    binary_data,
    envelope_from_attributes,
    media_type,
    percent_encode,
    read_headers,
    structured_attributes,
    structured_data,
    to_binary,
    to_structured,
)
from tidings.event import NO_HEADERS, Envelope
from tidings.exceptions import CloudEventError, DecodeError

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
_MSG_ID_LOWER: Final = MSG_ID.lower()
CONTENT_TYPE_BINARY: Final = "application/json"
CONTENT_TYPE_STRUCTURED: Final = STRUCTURED_CONTENT_TYPE

DEAD_REASON: Final = "tidings-dead-reason"
DEAD_HANDLER: Final = "tidings-dead-handler"
DEAD_ATTEMPTS: Final = "tidings-dead-attempts"
DEAD_SUBJECT: Final = "tidings-dead-subject"
DEAD_SEQUENCE: Final = "tidings-dead-sequence"
DEAD_HEADERS: Final = (DEAD_REASON, DEAD_HANDLER, DEAD_ATTEMPTS, DEAD_SUBJECT, DEAD_SEQUENCE)
"""The headers a dead-lettered message carries on top of its original ones."""


def encode_envelope(
    envelope: Envelope[Any], *, structured: bool = False
) -> tuple[dict[str, str], bytes]:
    """The headers and body of ``envelope`` on the wire (see the module docstring).

    Raises:
        EncodeError: (a TypeError) if the payload cannot be encoded as JSON.
        HeaderError: for an envelope header that cannot travel (see
            :func:`tidings.cloudevents.split_headers`).
    """
    if structured:
        headers, body = to_structured(envelope)
        headers[MSG_ID] = percent_encode(envelope.id)
    else:
        headers, body = to_binary(envelope)
        headers[MSG_ID] = headers["ce-id"]
    return headers, body


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

    Header names are compared case-insensitively; ``ce-*`` values are percent-decoded.

    Args:
        topic: the topic the message's subject names.
        headers: the message's headers, if any.
        body: the message's body.
        payload_type: decode the payload as this class; ``None`` leaves plain JSON values.
        subject: the subject, for error messages.
        fallback_id: the id of a message that is no CloudEvent (no ``ce-specversion``) and
            carries neither ``ce-id`` nor ``Nats-Msg-Id`` (or a function computing it,
            called only then).
        fallback_time: the HLC time when it carries neither ``ce-hlc`` nor ``ce-time``
            (or a function computing it, called only then).

    Raises:
        CloudEventError: (a DecodeError) naming the subject and the attribute at fault: a
            CloudEvent lacking ``id``, a malformed ``time`` or ``hlc``, a time
            outside 1970-2262, an invalid extension name.
        DecodeError: naming the subject and what is wrong with the body.
    """
    try:
        attributes, content_type, others = read_headers(headers or NO_HEADERS)
        msg_id: str | None = None
        plain: dict[str, str] = {}
        for name, value in others.items():
            lowered = name.lower()
            if lowered == _MSG_ID_LOWER:
                msg_id = value
            elif not lowered.startswith(("nats-", "tidings-")):
                plain[name] = value
        media = media_type(content_type)
        data: Callable[[type | None], Any]
        if media == CONTENT_TYPE_STRUCTURED:
            event = codec.decode(bytes(body))
            structured: dict[str, Any] = structured_attributes(event)
            data = structured_data(event)
            is_cloudevent = True
        elif media is not None and media.startswith("application/cloudevents"):
            raise CloudEventError(
                f"content-type {content_type!r} is no CloudEvents format tidings reads on "
                f"NATS (binary mode, or structured {CONTENT_TYPE_STRUCTURED})",
                attribute="datacontenttype",
            )
        else:
            structured = attributes
            if content_type is not None:
                structured["datacontenttype"] = content_type
            data = binary_data(body, content_type)
            is_cloudevent = "specversion" in attributes
        return envelope_from_attributes(
            structured,
            data,
            topic=topic,
            payload_type=payload_type,
            protocol_headers=plain,
            fallback_id=None
            if is_cloudevent
            else (attributes.get("id") or msg_id or _value(fallback_id)),
            fallback_source="tidings",
            fallback_type=topic,
            fallback_time=fallback_time,
        )
    except CloudEventError as exc:
        raise CloudEventError(
            f"{exc} (message on {subject})", attribute=exc.attribute, subject=subject
        ) from None
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


def _value(given: Any) -> Any:
    return given() if callable(given) else given

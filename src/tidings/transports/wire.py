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
    headers, body = to_structured(envelope) if structured else to_binary(envelope)
    headers[MSG_ID] = percent_encode(envelope.id)
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
            CloudEvent lacking ``id`` or ``source``, a malformed ``time`` or ``hlc``, a time
            before 1970, an invalid extension name.
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
            structured = dict(attributes)
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
            fallback_source=None if is_cloudevent else "tidings",
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

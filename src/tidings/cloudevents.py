"""CloudEvents 1.0.2 context attributes: the one mapping between an :class:`Envelope` and a
CloudEvent, shared by every protocol binding (NATS in :mod:`tidings.transports.wire`, HTTP
in :mod:`tidings.transports.http`).

What this module owns, each written once:

- **Names.** An extension attribute's name is ``[a-z0-9]+`` (CloudEvents 1.0.2 section
  "Attribute Naming Convention"; at most 20 characters is recommended, not required, so
  longer names are accepted). :func:`split_headers` sorts an envelope's headers into
  extensions and protocol headers and refuses names that can be neither
  (:class:`~tidings.exceptions.HeaderError`).
- **Header values.** :func:`percent_encode` / :func:`percent_decode`: space, ``"``, ``%``
  and every character outside printable ASCII are percent-encoded as UTF-8 (HTTP binding
  section 3.1.3.2, which the NATS binding's headers follow too).
- **Time.** :func:`format_time` writes an HLC time as RFC 3339 UTC with microseconds (the
  same text in binary and structured mode); :func:`parse_time` reads any RFC 3339 time
  (``T``/``t``, ``Z``/``z``, offsets, any number of fraction digits) into exact
  nanoseconds since the epoch.
- **Events.** :func:`binary_attributes` / :func:`to_cloudevent` render an envelope;
  :func:`envelope_from_attributes` / :func:`from_cloudevent` rebuild one.

Guarantees:

- Every attribute survives a pass through tidings: a foreign event's ``type`` (when it
  differs from the topic), ``subject``, ``dataschema``, ``datacontenttype`` and ``time``
  (its text, as given) go to :attr:`Envelope.attributes`; its extensions to
  :attr:`Envelope.headers`; ``partitionkey`` to :attr:`Envelope.key`; ``hlc`` to
  :attr:`Envelope.time`. The hybrid clock orders a foreign event but never rewrites its
  ``time``.
- ``data`` is the payload when the data content type is JSON (absent, ``application/json``,
  ``text/json`` or ``*+json``); otherwise, and whenever the data came as ``data_base64``,
  the payload is the data itself: ``bytes`` from ``data_base64`` or a binary-mode body,
  except that a text body (``text/*`` or a ``charset`` parameter, valid UTF-8) and a
  structured ``data`` string give ``str``. A ``bytes`` payload always leaves as binary
  data (the body in binary mode, ``data_base64`` in structured mode).
- ``dataschema``: an event of a class declared with :func:`tidings.event` carries its
  schema version (:mod:`tidings.dataschema`); a received event naming an older version of
  its class's type is upcast before it is converted, a newer one refused
  (:class:`~tidings.exceptions.DecodeError`).
- A received event lacking a required attribute (``id``, ``source``, ``type``,
  ``specversion``), or with a malformed one, is refused with a
  :class:`~tidings.exceptions.CloudEventError` naming the attribute. Bindings may supply a
  fallback id and source for messages that do not claim to be CloudEvents (see
  :mod:`tidings.transports.wire`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import re
import urllib.parse
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, overload

import msgspec

from tidings import codec
from tidings.dataschema import decode_versioned, names_class, uri_of
from tidings.event import NO_HEADERS, Envelope, event_type_for
from tidings.exceptions import CloudEventError, HeaderError, InvalidTopicError
from tidings.topics import validate_topic

__all__ = (
    "CORE_ATTRIBUTES",
    "JSON_CONTENT_TYPE",
    "SPEC_VERSION",
    "STRUCTURED_CONTENT_TYPE",
    "binary_attributes",
    "binary_data",
    "encode_data",
    "envelope_from_attributes",
    "format_time",
    "from_cloudevent",
    "is_extension_name",
    "is_json_content_type",
    "media_type",
    "parse_time",
    "percent_decode",
    "percent_encode",
    "read_headers",
    "split_headers",
    "structured_attributes",
    "structured_data",
    "structured_event",
    "to_binary",
    "to_cloudevent",
    "to_structured",
)

SPEC_VERSION: Final = "1.0"
JSON_CONTENT_TYPE: Final = "application/json"
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"

CORE_ATTRIBUTES: Final = frozenset(
    {
        "specversion",
        "id",
        "type",
        "source",
        "time",
        "subject",
        "dataschema",
        "datacontenttype",
        "data",
        "data_base64",
        "hlc",
        "partitionkey",
    }
)
"""Attribute (and structured member) names an envelope header may not take: the context
attributes, the data members and the extensions tidings fills from its own fields."""

_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_RESERVED_PREFIXES = ("ce-", "ce_", "nats-", "tidings-")
_MUST_ENCODE = re.compile(r'[^\x21-\x7e]|["%]')
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([Zz])|([+-])(\d\d):(\d\d))"
)


def is_extension_name(name: str) -> bool:
    """Whether ``name`` is a valid CloudEvents attribute name (``[a-z0-9]+``)."""
    return _EXTENSION_NAME.fullmatch(name) is not None


def is_json_content_type(content_type: str | None) -> bool:
    """Whether data of ``content_type`` is JSON: absent, ``application/json``, ``text/json``
    or a ``+json`` suffix, compared without parameters and case-insensitively."""
    if content_type is None or content_type == JSON_CONTENT_TYPE:
        return True
    media = media_type(content_type) or ""
    return media in (JSON_CONTENT_TYPE, "text/json") or media.endswith("+json")


def split_headers(
    headers: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, str]]:
    """Sort envelope headers into CloudEvents extensions and plain protocol headers.

    A name that is a valid attribute name (``[a-z0-9]+``) is an extension. Any other name
    that is an HTTP token (RFC 9110), such as ``x-request-id``, travels as a protocol header
    beside the event (a NATS or HTTP header of that name, value as given).

    Raises:
        HeaderError: for a name that is a context attribute or tidings extension
            (:data:`CORE_ATTRIBUTES`), that starts with ``ce-``, ``nats-`` or ``tidings-``
            or is ``content-type`` (any case), or that is no HTTP token; and for a protocol
            header's value holding a line break or other control character.
    """
    extensions: dict[str, str] = {}
    plain: dict[str, str] = {}
    for name, value in headers.items():
        if name in _extension_names:
            extensions[name] = value
            continue
        if _EXTENSION_NAME.fullmatch(name):
            if name in CORE_ATTRIBUTES:
                raise HeaderError(
                    f"the header {name!r} is the CloudEvents attribute of that name, which "
                    "tidings fills from the envelope itself; give the header another name",
                    name=name,
                )
            if len(_extension_names) < 4096:  # names repeat: remember valid ones
                _extension_names.add(name)
            extensions[name] = value
            continue
        lowered = name.lower()
        if (
            not _TOKEN.fullmatch(name)
            or lowered.startswith(_RESERVED_PREFIXES)
            or lowered == "content-type"
        ):
            raise HeaderError(
                f"the header {name!r} cannot travel with a CloudEvent: use a name of lowercase "
                "letters and digits (an extension attribute, e.g. 'requestid'), or an HTTP "
                "token that does not start with 'ce-', 'nats-' or 'tidings-' and is not "
                "'content-type' (a protocol header, e.g. 'x-request-id')",
                name=name,
            )
        if not value.isprintable() and any(c < " " or c == "\x7f" for c in value):
            raise HeaderError(
                f"the value of the header {name!r} holds a control character (a line break?), "
                "which a protocol header cannot carry; give it an extension name instead "
                "(lowercase letters and digits), whose values are percent-encoded",
                name=name,
            )
        plain[name] = value
    return extensions, plain


_extension_names: set[str] = set()
"""Valid extension names already seen (none of :data:`CORE_ATTRIBUTES`), up to 4,096."""


def percent_encode(value: str) -> str:
    """``value`` as a header value: space, ``"``, ``%`` and every character outside printable
    ASCII percent-encoded as UTF-8 bytes; returned unchanged when none occurs."""
    if value.isascii() and (
        value.isalnum()  # tidings' ids: one check
        or (value.isprintable() and " " not in value and '"' not in value and "%" not in value)
    ):
        return value  # C-speed checks: most values need no encoding
    return _MUST_ENCODE.sub(
        lambda m: "".join(f"%{byte:02X}" for byte in m.group().encode("utf-8", "surrogatepass")),
        value,
    )


def percent_decode(value: str, attribute: str) -> str:
    """The attribute value a percent-encoded header value stands for.

    Raises:
        CloudEventError: naming ``attribute`` if the decoded bytes are not UTF-8.
    """
    if "%" not in value:
        return value
    try:
        return urllib.parse.unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise CloudEventError(
            f"the CloudEvents attribute {attribute!r} is percent-encoded, but its bytes "
            f"are not UTF-8: {value!r}",
            attribute=attribute,
        ) from None


_last_second = [-1, ""]


def format_time(t: int) -> str:
    """HLC time ``t`` (nanoseconds since the epoch) as RFC 3339 UTC text, microseconds
    truncated: ``2026-11-27T07:24:11.123456Z``."""
    seconds, nanos = divmod(t, 1_000_000_000)
    cached = _last_second
    if cached[0] != seconds:  # one strftime per second of event time
        stamp = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached[:] = [seconds, stamp]
    return f"{cached[1]}.{nanos // 1000:06d}Z"


_EPOCH_DAYS: Final = _dt.date(1970, 1, 1).toordinal()
_LAST_NANOS: Final = 2**63  # HLC times and the stores' columns are signed 64-bit


_seconds_of: dict[str, int] = {}
"""Seconds since the epoch of ``YYYY-MM-DDTHH:MM:SS`` prefixes of UTC (``Z``) times already
parsed: a batch's times mostly share their second, so most parse by one lookup (bounded)."""


def parse_time(value: str) -> int:
    """RFC 3339 time ``value`` as exact nanoseconds since the epoch (fraction digits beyond
    nanoseconds are dropped; a leap second ``60`` reads as the next second's start).

    Raises:
        CloudEventError: (attribute ``time``) if ``value`` is not RFC 3339, or lies outside
            1970 to 2262 (UTC), which an HLC time (64-bit nanoseconds) cannot hold.
    """
    if 21 < len(value) < 32 and value[19] == "." and value[-1] == "Z":
        seconds = _seconds_of.get(value[:19])
        fraction = value[20:-1]
        if seconds is not None and fraction.isascii() and fraction.isdigit():
            return seconds * 1_000_000_000 + int(fraction[:9].ljust(9, "0"))
    ns = _parse_time(value)
    seconds = ns // 1_000_000_000
    if len(value) > 21 and value[19] == "." and value[-1] == "Z":  # cache its second
        if len(_seconds_of) >= 4096:
            _seconds_of.clear()
        if (seconds + 1) * 1_000_000_000 <= _LAST_NANOS:  # any fraction stays in range
            _seconds_of[value[:19]] = seconds
    return ns


def _parse_time(value: str) -> int:
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise CloudEventError(
            f"the CloudEvents attribute 'time' is not an RFC 3339 time: {value!r} "
            "(expected e.g. '2026-11-27T07:24:11.123456Z')",
            attribute="time",
        )
    year, month, day, hour, minute, second, fraction, _, sign, off_h, off_m = match.groups()
    try:
        days = _dt.date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAYS
        if int(hour) > 23 or int(minute) > 59 or int(second) > 60:
            raise ValueError(value)
    except ValueError:
        raise CloudEventError(
            f"the CloudEvents attribute 'time' names no real date and time: {value!r}",
            attribute="time",
        ) from None
    offset = 0 if sign is None else (int(off_h) * 60 + int(off_m)) * (1 if sign == "+" else -1)
    seconds = days * 86_400 + int(hour) * 3_600 + (int(minute) - offset) * 60 + int(second)
    nanos = 0 if fraction is None else int(fraction[:9].ljust(9, "0"))
    ns = seconds * 1_000_000_000 + nanos
    if not 0 <= ns < _LAST_NANOS:
        raise CloudEventError(
            f"the CloudEvents attribute 'time' {value!r} is outside the years 1970 to 2262 "
            "(UTC), which an HLC time (64-bit nanoseconds) cannot hold",
            attribute="time",
        )
    return ns


def _text(value: object) -> str:
    """The canonical string of a structured-mode attribute value."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def binary_attributes(envelope: Envelope[Any]) -> tuple[dict[str, str], dict[str, str]]:
    """The context attributes of ``envelope`` as text, and its plain protocol headers.

    ``datacontenttype`` is always present: the producer's, else ``application/octet-stream``
    for a ``bytes`` payload, else ``application/json``.

    Raises:
        HeaderError: for a header that cannot travel (see :func:`split_headers`).
    """
    return _render(envelope, _NAMES, _as_is)


def _as_is(value: str) -> str:
    return value


_ATTRIBUTE_ORDER: Final = (
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "hlc",
    "partitionkey",
    "subject",
    "dataschema",
    "datacontenttype",
)
_NAMES: Final = {name: name for name in _ATTRIBUTE_ORDER}
_HEADER_NAMES: Final = {
    **{name: f"ce-{name}" for name in _ATTRIBUTE_ORDER},
    "datacontenttype": "content-type",
}


def _render(
    envelope: Envelope[Any], names: Mapping[str, str], encode: Callable[[str], str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The one mapping of an envelope's fields onto attributes, under ``names`` (plain or
    binary-mode header names), free-text values passed through ``encode``."""
    given = envelope.attributes
    time = envelope.time
    given_time = given.get("time") if given else None
    out = {
        names["specversion"]: SPEC_VERSION,
        names["id"]: encode(envelope.id),
        names["type"]: encode(given.get("type") or envelope.topic) if given else envelope.topic,
        names["source"]: encode(envelope.source),
        names["time"]: format_time(time) if given_time is None else encode(given_time),
        names["hlc"]: str(time),
    }
    if envelope.key is not None:
        out[names["partitionkey"]] = encode(envelope.key)
    content_type = None
    if given:
        for name in ("subject", "dataschema"):
            if name in given:
                out[names[name]] = encode(given[name])
        content_type = given.get("datacontenttype")
    if not given or "dataschema" not in given:
        schema = uri_of(type(envelope.payload))  # a declared class: its version
        if schema is not None:
            out[names["dataschema"]] = schema
    if content_type is None:
        content_type = BINARY_CONTENT_TYPE if _is_bytes(envelope.payload) else JSON_CONTENT_TYPE
    out[names["datacontenttype"]] = content_type
    plain: dict[str, str] = {}
    if envelope.headers:
        extensions, plain = split_headers(envelope.headers)
        if names is _NAMES:
            out.update(extensions)
        else:
            for name, value in extensions.items():
                out[f"ce-{name}"] = encode(value)
    return out, plain


_BYTES_TYPES: Final = (bytes, bytearray, memoryview)


def _is_bytes(payload: object) -> bool:
    return isinstance(payload, _BYTES_TYPES)


def encode_data(envelope: Envelope[Any]) -> bytes:
    """The data of ``envelope`` as a binary-mode body: binary data as is, text under a
    non-JSON content type as UTF-8, anything else as JSON.

    Raises:
        EncodeError: if the payload cannot be encoded as JSON.
    """
    payload = envelope.payload
    if _is_bytes(payload):
        return bytes(payload)
    if isinstance(payload, str) and not is_json_content_type(
        envelope.attributes.get("datacontenttype")
    ):
        return payload.encode()
    return codec.encode(payload)


def to_cloudevent(envelope: Envelope[Any]) -> dict[str, Any]:
    """The envelope as a CloudEvents 1.0 structured-mode mapping (JSON-ready): the
    attributes of :func:`binary_attributes` plus ``data`` (or ``data_base64`` for a
    ``bytes`` payload). Plain protocol headers are not part of the event (see
    :func:`structured_event`).

    Raises:
        HeaderError: for a header that cannot travel (see :func:`split_headers`).
    """
    return structured_event(envelope)[0]


def structured_event(envelope: Envelope[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The structured-mode mapping of ``envelope`` (:func:`to_cloudevent`) and the plain
    protocol headers that travel beside it.

    Raises:
        HeaderError: for a header that cannot travel (see :func:`split_headers`).
    """
    out, plain = binary_attributes(envelope)
    payload = envelope.payload
    if _is_bytes(payload):
        out["data_base64"] = base64.b64encode(bytes(payload)).decode("ascii")
        if "datacontenttype" not in envelope.attributes:
            del out["datacontenttype"]
    elif isinstance(payload, str) and not is_json_content_type(out["datacontenttype"]):
        out["data"] = payload
    else:
        out["data"] = msgspec.json.decode(codec.encode(payload))
    return out, plain


def media_type(content_type: str | None) -> str | None:
    """The media type of a ``content-type`` value: parameters dropped, lower case."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def to_binary(envelope: Envelope[Any]) -> tuple[dict[str, str], bytes]:
    """Binary mode: the attributes as percent-encoded ``ce-<name>`` headers,
    ``datacontenttype`` as ``content-type``, the plain protocol headers, and the data as the
    body (:func:`encode_data`).

    Raises:
        EncodeError: if the payload cannot be encoded as JSON.
        HeaderError: for a header that cannot travel (see :func:`split_headers`).
    """
    headers, plain = _render(envelope, _HEADER_NAMES, percent_encode)
    if plain:
        headers.update(plain)
    return headers, encode_data(envelope)


def to_structured(envelope: Envelope[Any]) -> tuple[dict[str, str], bytes]:
    """Structured mode: the plain protocol headers and ``content-type:
    application/cloudevents+json``, and the JSON of :func:`to_cloudevent` as the body.

    Raises:
        EncodeError: if the payload cannot be encoded as JSON.
        HeaderError: for a header that cannot travel (see :func:`split_headers`).
    """
    event, plain = structured_event(envelope)
    return {**plain, "content-type": STRUCTURED_CONTENT_TYPE}, codec.encode(event)


def read_headers(
    headers: Mapping[str, str],
) -> tuple[dict[str, str], str | None, dict[str, str]]:
    """Sort received protocol headers, names compared case-insensitively: the attributes of
    the ``ce-*`` headers (names lower case, values percent-decoded), the ``content-type``
    value, and every other header (names as given).

    Raises:
        CloudEventError: naming an attribute whose value does not percent-decode to UTF-8.
    """
    attributes: dict[str, str] = {}
    content_type: str | None = None
    others: dict[str, str] = {}
    kinds = _header_kinds
    for name, value in headers.items():
        kind = kinds.get(name)
        if kind is None:
            kind = _header_kind(name)
        if kind is _OTHER:
            others[name] = value
        elif kind is _CONTENT_TYPE:
            content_type = value
        else:
            attributes[kind] = percent_decode(value, kind) if "%" in value else value
    return attributes, content_type, others


_OTHER: Final = "\x00other"
_CONTENT_TYPE: Final = "\x00content-type"
_header_kinds: dict[str, str] = {}


def _header_kind(name: str) -> str:
    """What a header name stands for: an attribute's name, :data:`_CONTENT_TYPE` or
    :data:`_OTHER`; remembered (up to 4,096 names), as names repeat on every message."""
    lowered = name.lower()
    if lowered.startswith("ce-"):
        kind = lowered[3:]
    elif lowered == "content-type":
        kind = _CONTENT_TYPE
    else:
        kind = _OTHER
    if len(_header_kinds) < 4096:
        _header_kinds[name] = kind
    return kind


def binary_data(body: bytes, content_type: str | None) -> Callable[[type | None], Any]:
    """The data decoder of a binary-mode body (for :func:`envelope_from_attributes`): JSON
    decoded into the payload class; text (a ``text/*`` type, or one with a ``charset``
    parameter) that is valid UTF-8 as ``str``; anything else as the bytes themselves.

    Raises (when called):
        DecodeError: if JSON data does not fit the payload class (the message names it).
    """
    if is_json_content_type(content_type):
        return lambda target: codec.decode(bytes(body), target)
    data = bytes(body)
    text_type = content_type or ""
    if text_type.lower().lstrip().startswith("text/") or "charset=" in text_type.lower():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return lambda target: text
    return lambda target: data


def structured_attributes(event: object) -> dict[str, Any]:
    """The attributes of a decoded structured-mode event: its members other than ``data``
    and ``data_base64``, null ones left out.

    Raises:
        CloudEventError: if ``event`` is not a JSON object.
    """
    if not isinstance(event, dict):
        raise CloudEventError(
            f"a structured CloudEvent is a JSON object, not {type(event).__name__}",
            attribute="specversion",
        )
    return {
        name: value
        for name, value in event.items()
        if value is not None and name not in ("data", "data_base64")
    }


def envelope_from_attributes(
    attributes: Mapping[str, Any],
    data: Callable[[type | None], Any],
    *,
    topic: str | None,
    payload_type: type | None,
    protocol_headers: Mapping[str, str] = NO_HEADERS,
    fallback_id: str | None = None,
    fallback_source: str | None = None,
    fallback_type: str | None = None,
    fallback_time: int | Callable[[], int] = 0,
) -> Envelope[Any]:
    """Rebuild an envelope from a received event's attributes (names lower case, values
    decoded) and its data.

    Args:
        attributes: the attributes by name; structured-mode values may be JSON scalars.
        data: called with the payload class (``payload_type``, else the class registered for
            the topic, else ``None``) to decode the data.
        topic: the topic the event arrived on; ``None`` takes it from ``type``.
        payload_type: decode the data as this class.
        protocol_headers: plain headers to keep in :attr:`Envelope.headers`.
        fallback_id: the id when ``id`` is missing; ``None`` refuses such an event.
        fallback_source: the source when ``source`` is missing; ``None`` refuses it.
        fallback_type: the type when ``type`` is missing; ``None`` refuses it.
        fallback_time: the HLC time when neither ``hlc`` nor ``time`` is given.

    Raises:
        CloudEventError: naming a missing or malformed attribute.
        DecodeError: if the data does not decode.
    """
    get = attributes.get
    version = get("specversion")
    if version != SPEC_VERSION:
        if version is not None:
            raise CloudEventError(
                f"the CloudEvents attribute 'specversion' is {version!r}; tidings reads '1.0'",
                attribute="specversion",
            )
        if fallback_id is None:
            raise _missing("specversion")
    # the usual case (non-empty strings) tested inline; _required does the rest
    event_id = get("id")
    if type(event_id) is not str or not event_id:
        event_id = _required(attributes, "id", fallback_id)
    source = get("source")
    if type(source) is not str or not source:
        source = _required(attributes, "source", fallback_source)
    type_ = get("type")
    if type(type_) is not str or not type_:
        type_ = _required(attributes, "type", fallback_type)
    if topic is None:
        try:
            topic = validate_topic(type_)
        except InvalidTopicError as exc:
            raise CloudEventError(
                f"the CloudEvents attribute 'type' {type_!r} is no tidings topic ({exc}); "
                "name the topic to deliver it on explicitly",
                attribute="type",
            ) from None
    target = payload_type if payload_type is not None else event_type_for(topic)
    payload = decode_versioned(data, target, get("dataschema"))
    kept: dict[str, str] = {}
    if type_ != topic:
        kept["type"] = type_
    hlc = get("hlc")
    time_text = get("time")
    if hlc is not None:
        time = _parse_hlc(hlc)
        if time_text is not None:
            time_text = _text(time_text)
            if time_text != format_time(time):  # text tidings wrote needs no checking
                parse_time(time_text)
                kept["time"] = time_text
    elif time_text is not None:
        time_text = _text(time_text)
        time = parse_time(time_text)
        if time_text != format_time(time):
            kept["time"] = time_text
    else:
        time = fallback_time() if callable(fallback_time) else fallback_time
    headers: dict[str, str] | None = dict(protocol_headers) if protocol_headers else None
    if not attributes.keys() <= _SETTLED_ATTRIBUTES:  # extensions, or attributes to keep
        if headers is None:
            headers = {}
        for name, value in attributes.items():
            if name in _SETTLED_ATTRIBUTES:
                continue
            if name in CORE_ATTRIBUTES:
                if name == "dataschema" and names_class(value, target):
                    continue  # implied by the payload's class (re-rendered on the way out)
                if name in ("subject", "dataschema") or (
                    name == "datacontenttype" and value != JSON_CONTENT_TYPE
                ):
                    kept[name] = _text(value)
                continue
            if name not in _extension_names:
                _check_extension_name(name)
            headers[name] = _text(value)
    key = get("partitionkey")
    return Envelope(
        topic,
        payload,
        time,
        None if key is None else _text(key),
        source,
        MappingProxyType(headers) if headers else NO_HEADERS,
        event_id,
        "",
        MappingProxyType(kept) if kept else NO_HEADERS,
    )


_SETTLED_ATTRIBUTES: Final = CORE_ATTRIBUTES - {"subject", "dataschema", "datacontenttype"}
"""Attributes :func:`envelope_from_attributes` has read in full before its loop over the
rest (extensions, and the attributes an envelope keeps as given)."""


def _check_extension_name(name: str) -> None:
    if not _EXTENSION_NAME.fullmatch(name):
        raise CloudEventError(
            f"the CloudEvents extension attribute name {name!r} is invalid: attribute "
            "names are lowercase letters and digits only",
            attribute=name,
        )
    if len(_extension_names) < 4096:  # a bounded cache of names already checked
        _extension_names.add(name)


def _missing(attribute: str) -> CloudEventError:
    return CloudEventError(
        f"the CloudEvent lacks its required attribute {attribute!r}", attribute=attribute
    )


def _required(attributes: Mapping[str, Any], name: str, fallback: str | None) -> str:
    value = attributes.get(name)
    if type(value) is str and value:  # the usual case, first
        return value
    if value is None or value == "":
        if fallback is None:
            raise _missing(name)
        return fallback
    return _text(value)


def _parse_hlc(value: object) -> int:
    try:
        hlc = int(_text(value))
    except ValueError:
        hlc = -1
    if hlc < 0:
        raise CloudEventError(
            f"the CloudEvents extension attribute 'hlc' is {value!r}, not a non-negative "
            "decimal integer",
            attribute="hlc",
        )
    return hlc


def structured_data(event: Mapping[str, Any]) -> Callable[[type | None], Any]:
    """The data decoder of a structured-mode event (for :func:`envelope_from_attributes`).

    Raises (when called):
        CloudEventError: (attribute ``data_base64``) if that is not base64, or both ``data``
            and ``data_base64`` are given.
        DecodeError: if JSON data does not fit the payload class (the message names it).
    """

    def decode(target: type | None) -> Any:
        encoded = event.get("data_base64")
        if encoded is not None:
            if "data" in event:
                raise CloudEventError(
                    "the CloudEvent has both 'data' and 'data_base64'; it may have one",
                    attribute="data_base64",
                )
            try:
                return base64.b64decode(str(encoded), validate=True)
            except binascii.Error:
                raise CloudEventError(
                    "the CloudEvents member 'data_base64' is not base64",
                    attribute="data_base64",
                ) from None
        value = event.get("data")
        content_type = event.get("datacontenttype")
        if not is_json_content_type(None if content_type is None else _text(content_type)):
            return value
        return value if target is None else codec.convert(value, target)

    return decode


@overload
def from_cloudevent(mapping: Mapping[str, Any], payload_type: type[Any]) -> Envelope[Any]: ...
@overload
def from_cloudevent(mapping: Mapping[str, Any], payload_type: None = None) -> Envelope[Any]: ...
def from_cloudevent(
    mapping: Mapping[str, Any], payload_type: type[Any] | None = None
) -> Envelope[Any]:
    """Build an envelope from a CloudEvents 1.0 structured-mode mapping; the topic is its
    ``type``.

    ``data`` is converted to ``payload_type`` when given, else to the class registered for
    the event's ``type``, else left as decoded JSON; ``data_base64`` becomes ``bytes``.

    Raises:
        CloudEventError: naming the missing or malformed attribute.
        DecodeError: if ``data`` does not fit the payload type.
    """
    return envelope_from_attributes(
        mapping, structured_data(mapping), topic=None, payload_type=payload_type
    )

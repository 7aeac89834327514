"""CloudEvents 1.0 over HTTP (binary, structured and batch modes), to and from envelopes.

A minimal adapter on :func:`tidings.from_cloudevent` / :func:`tidings.to_cloudevent`, kept
in this one module so that a shared CloudEvents HTTP binding can replace it in one place.

Decoding checks what the spec requires and raises :class:`CloudEventError` naming the
attribute: ``id``, ``source``, ``type`` present and non-empty strings, ``specversion`` "1.0",
``time`` an RFC 3339 timestamp, ``type`` a valid tidings topic. ``subject`` and
``dataschema`` travel as headers of the envelope (and come back out as attributes); any
other extension too. An event without ``time`` is stamped with the time it arrived.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from tidings.event import Envelope, from_cloudevent, to_cloudevent
from tidings.exceptions import InvalidTopicError

__all__ = (
    "BATCH",
    "STRUCTURED",
    "CloudEventError",
    "decode_batch",
    "decode_binary",
    "decode_structured",
    "encode_binary",
    "encode_structured",
)

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_CARRIED = ("subject", "dataschema")
_LAST_NANOS = 2**63  # event times are int64 nanoseconds since the Unix epoch


class CloudEventError(ValueError):
    """A request does not hold a valid CloudEvent; ``attribute`` names what is wrong."""

    def __init__(self, attribute: str, message: str) -> None:
        super().__init__(message)
        self.attribute = attribute


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json", "text/json") or media.endswith("+json")


def _check_time(value: object) -> int:
    if not isinstance(value, str):
        raise CloudEventError("time", "attribute 'time' must be an RFC 3339 timestamp string")
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CloudEventError(
            "time", f"attribute 'time' {value!r} is not an RFC 3339 timestamp"
        ) from None
    if parsed.tzinfo is None:
        raise CloudEventError("time", f"attribute 'time' {value!r} has no UTC offset")
    nanos = int(parsed.timestamp() * 1_000_000) * 1000
    if not 0 <= nanos < _LAST_NANOS:
        raise CloudEventError(
            "time", f"attribute 'time' {value!r} is outside the years 1970 to 2262 (UTC)"
        )
    return nanos


def decode_structured(mapping: object) -> Envelope[Any]:
    """An envelope from one structured-mode event (a JSON object, already parsed).

    Raises:
        CloudEventError: naming the missing or malformed attribute.
    """
    if not isinstance(mapping, dict):
        raise CloudEventError("event", "a structured CloudEvent is a JSON object")
    specversion = mapping.get("specversion")
    if specversion is None:
        raise CloudEventError("specversion", "the required attribute 'specversion' is missing")
    if specversion != "1.0":
        raise CloudEventError(
            "specversion", f"specversion {specversion!r} is not supported; send '1.0'"
        )
    for name in ("id", "source", "type"):
        value = mapping.get(name)
        if value is None:
            raise CloudEventError(name, f"the required attribute {name!r} is missing")
        if not isinstance(value, str) or not value:
            raise CloudEventError(name, f"attribute {name!r} must be a non-empty string")
    clean = dict(mapping)
    if "data_base64" in clean:
        raise CloudEventError("data_base64", "binary data (data_base64) is not accepted; send JSON")
    nanos = _check_time(clean["time"]) if "time" in clean else time.time_ns()
    clean["hlc"] = nanos
    carried = {k: str(clean.pop(k)) for k in _CARRIED if clean.get(k) is not None}
    content_type = clean.get("datacontenttype")
    if isinstance(content_type, str) and not _is_json(content_type):
        carried["datacontenttype"] = content_type
    try:
        envelope = from_cloudevent(clean)
    except InvalidTopicError as exc:
        raise CloudEventError("type", f"attribute 'type' is no valid topic: {exc}") from None
    except (ValueError, msgspec.ValidationError) as exc:
        raise CloudEventError("event", str(exc)) from None
    if carried:
        headers = dict(envelope.headers)
        headers.update(carried)
        envelope = msgspec.structs.replace(envelope, headers=headers)
    return envelope


def decode_binary(headers: Mapping[str, str], body: bytes) -> Envelope[Any]:
    """An envelope from a binary-mode request: ``ce-*`` headers and the body as ``data``.

    Raises:
        CloudEventError: naming the missing or malformed attribute (or the body).
    """
    mapping: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-") and len(lower) > 3:
            mapping[lower[3:]] = value
    content_type = headers.get("content-type", "application/json")
    mapping["datacontenttype"] = content_type
    if body:
        if _is_json(content_type):
            try:
                mapping["data"] = msgspec.json.decode(body)
            except msgspec.DecodeError:
                raise CloudEventError("data", "the body is not valid JSON") from None
        else:
            try:
                mapping["data"] = body.decode("utf-8")
            except UnicodeDecodeError:
                raise CloudEventError("data", "a non-JSON body must be UTF-8 text") from None
    return decode_structured(mapping)


def decode_batch(body: bytes) -> list[Envelope[Any]]:
    """The envelopes of a batch-mode body (a JSON array of structured events).

    Raises:
        CloudEventError: naming the attribute and the index of the bad event.
    """
    items = _json(body)
    if not isinstance(items, list):
        raise CloudEventError("batch", "a CloudEvents batch is a JSON array of events")
    out = []
    for index, item in enumerate(items):
        try:
            out.append(decode_structured(item))
        except CloudEventError as exc:
            raise CloudEventError(exc.attribute, f"event {index} of the batch: {exc}") from None
    return out


def _json(body: bytes) -> object:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise CloudEventError("body", "the body is not valid JSON") from None


def decode_structured_body(body: bytes) -> Envelope[Any]:
    """An envelope from a structured-mode body (JSON bytes)."""
    return decode_structured(_json(body))


def encode_structured(envelope: Envelope[Any]) -> dict[str, Any]:
    """The envelope as a structured-mode mapping (JSON-ready)."""
    out = to_cloudevent(envelope)
    content_type = envelope.headers.get("datacontenttype")
    if content_type is not None:
        out["datacontenttype"] = content_type
    return out


def encode_binary(envelope: Envelope[Any]) -> tuple[dict[str, str], bytes]:
    """The envelope as binary-mode HTTP headers and body."""
    mapping = encode_structured(envelope)
    data = mapping.pop("data", None)
    content_type = str(mapping.pop("datacontenttype", "application/json"))
    headers = {f"ce-{name}": str(value) for name, value in mapping.items()}
    headers["content-type"] = content_type
    if isinstance(data, str) and not _is_json(content_type):
        return headers, data.encode()
    return headers, msgspec.json.encode(data)

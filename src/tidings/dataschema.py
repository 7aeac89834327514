"""Event schema versions on the wire: the CloudEvents ``dataschema`` attribute.

An event whose class is declared with :func:`tidings.event` (``@tidings.event("orders.placed",
version=2)``) leaves tidings with ``dataschema`` :func:`schema_uri`
(``tidings:schemas/orders.placed/versions/2``), so every reader knows which shape its data
has. When an event arrives whose ``dataschema`` names an older version than the receiving
class declares, its data is decoded as plain JSON values, brought forward by the
:data:`upcasters` registered for its type one version at a time, and only then converted
into the class (:func:`decode_versioned`). An event written at a *newer* version than the
class, or an older one with a missing upcaster step, is refused with a
:class:`~tidings.exceptions.DecodeError` saying which (a transport dead-letters it at once):
never a half-decoded object.

Stored records keep their version in the log and are upcast by the store's own upcasters
(:mod:`tidings.store.upcasting`); these upcasters are for events arriving over transports
and the gateway::

    tidings.dataschema.upcasters.register("orders.placed", 1, lambda old: {**old, "currency": "EUR"})
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from tidings import codec
from tidings.event import event_type_for, topic_of, version_of
from tidings.exceptions import DecodeError
from tidings.store.upcasting import Upcasters

__all__ = (
    "decode_versioned",
    "names_class",
    "parse_schema_uri",
    "schema_uri",
    "subject_for",
    "upcasters",
    "uri_of",
)

upcasters: Final = Upcasters()
"""The upcasters applied to events arriving over transports and the gateway."""

_URI: Final = re.compile(r"tidings:schemas/(?P<topic>[^/]+)/versions/(?P<version>\d+)")
_CONFLUENT_URI: Final = re.compile(r".*/subjects/(?P<subject>[^/]+)/versions/(?P<version>\d+)")
_uris: dict[type, str | None] = {}
_parsed: dict[str, tuple[str, int] | None] = {}


def subject_for(topic: str) -> str:
    """The registry subject of ``topic``'s event schemas: ``<topic>-value``."""
    return f"{topic}-value"


def schema_uri(topic: str, version: int) -> str:
    """The ``dataschema`` of an event of ``topic`` written at schema ``version``."""
    return f"tidings:schemas/{topic}/versions/{version}"


def parse_schema_uri(uri: str) -> tuple[str, int] | None:
    """``(subject, version)`` named by a ``dataschema`` URI, or ``None`` if it names none
    (tidings' form, or a registry URL ending ``/subjects/<subject>/versions/<n>``).
    URIs repeat on every event: up to 4,096 are remembered."""
    try:
        return _parsed[uri]
    except KeyError:
        pass
    found = None
    match = _URI.fullmatch(uri)
    if match is not None:
        found = subject_for(match["topic"]), int(match["version"])
    else:
        match = _CONFLUENT_URI.fullmatch(uri)
        if match is not None:
            found = match["subject"], int(match["version"])
    if len(_parsed) < 4096:
        _parsed[uri] = found
    return found


def uri_of(cls: type) -> str | None:
    """The ``dataschema`` of ``cls``'s events, ``None`` for a class not declared with
    :func:`tidings.event` (one dict read after the first call per class)."""
    try:
        return _uris[cls]
    except KeyError:
        pass
    uri = None
    if getattr(cls, "__tidings_version__", None) is not None:
        topic = topic_of(cls)
        if event_type_for(topic) is cls:
            uri = schema_uri(topic, version_of(cls))
    if len(_uris) < 4096:
        _uris[cls] = uri
    return uri


def names_class(dataschema: object, target: type | None) -> bool:
    """Whether ``dataschema`` is tidings' URI of a version of ``target``'s type: once the
    payload is decoded (and upcast) into ``target``, it is implied, not kept."""
    if target is None or not isinstance(dataschema, str):
        return False
    named = parse_schema_uri(dataschema)
    return (
        named is not None
        and _URI.fullmatch(dataschema) is not None
        and (named[0] == subject_for(topic_of(target)))
    )


def decode_versioned(
    data: Callable[[type | None], Any], target: type | None, dataschema: object
) -> Any:
    """Decode ``data`` into ``target``, upcast first when ``dataschema`` names an older
    version of ``target``'s type than it declares.

    Raises:
        DecodeError: if the data was written at a newer version, a step has no upcaster
            or an upcaster fails on it, or the (upcast) data does not fit ``target``.
    """
    if target is None or not isinstance(dataschema, str):
        return data(target)
    named = parse_schema_uri(dataschema)
    declared = version_of(target)
    if named is None or named[1] == declared or named[0] != subject_for(topic_of(target)):
        return data(target)
    type_name = topic_of(target)
    try:
        value = upcasters.upcast(type_name, data(None), named[1], declared)
    except DecodeError:
        raise
    except Exception as exc:  # an upcaster that fails on this data: the data is at fault
        raise DecodeError(
            f"upcasting a {type_name!r} event from version {named[1]} to {declared} failed: "
            f"{exc!r}",
            type_name=type_name,
        ) from exc
    return codec.convert(value, target)

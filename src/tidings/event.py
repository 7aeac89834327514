"""Event classes, their topics, and the :class:`Envelope` every event travels in.

An event is an instance of an ordinary class: a frozen dataclass, a ``msgspec.Struct`` or a
pydantic model. :func:`event` names the topic its instances are published on; without it a
class's topic is derived from its name (``OrderPlaced`` -> ``order_placed``).

An :class:`Envelope` carries one event with its metadata and maps one to one onto a
CloudEvents 1.0 event: ``id``, ``type`` (the topic), ``source``, ``time``, ``data`` (the
payload) and the extensions ``hlc`` (the packed hybrid-clock time), ``partitionkey`` (the
ordering key) and, from the headers, ``traceparent`` and any other header; a foreign
event's other attributes are kept in :attr:`Envelope.attributes`. The mapping itself is
:mod:`tidings.cloudevents`.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Generic, TypeVar, overload

import msgspec

from tidings.clock import format_event_id, to_datetime
from tidings.exceptions import EventTypeConflictError, TopicRequiredError
from tidings.topics import validate_topic

__all__ = (
    "NO_HEADERS",
    "Envelope",
    "event",
    "event_type_for",
    "topic_of",
    "version_of",
)

T = TypeVar("T")
C = TypeVar("C", bound=type)

NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The shared, read-only empty header mapping."""

_TOPIC_ATTR = "__tidings_topic__"
_VERSION_ATTR = "__tidings_version__"
_BUILTIN_MODULES = frozenset({"builtins", "collections", "datetime", "decimal", "uuid", "pathlib"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_registry: dict[str, type] = {}
_topics: dict[type, str] = {}


def _derive_topic(cls: type) -> str:
    return validate_topic(_CAMEL.sub("_", cls.__name__).lower())


@overload
def event(topic: str | None = None, /, *, version: int = 1) -> Callable[[C], C]: ...
@overload
def event(cls: C, /) -> C: ...
def event(topic_or_cls: str | C | None = None, /, *, version: int = 1) -> Callable[[C], C] | C:
    """Declare a class as an event type published on ``topic``, at schema ``version``.

    Use as ``@event("orders.placed")``, ``@event("orders.placed", version=2)`` or bare as
    ``@event`` (topic derived from the class name). The class is returned unchanged apart
    from the ``__tidings_topic__`` and ``__tidings_version__`` attributes; subclasses inherit
    both unless they declare their own. The topic doubles as the event's *type name* in
    stored records and CloudEvents ``type``; the version tells stored records' upcasters
    which shape a payload has.

    Raises:
        InvalidTopicError: if the topic is malformed (the message names the bad token).
        EventTypeConflictError: if another class is already registered for the topic.
        ValueError: if ``version`` is not a positive int.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"an event version is a positive int, not {version!r}")
    if topic_or_cls is None or isinstance(topic_or_cls, str):
        topic = None if topic_or_cls is None else validate_topic(topic_or_cls)

        def decorate(cls: C) -> C:
            return _register(cls, topic or _derive_topic(cls), version)

        return decorate
    return _register(topic_or_cls, _derive_topic(topic_or_cls), version)


def _register(cls: C, topic: str, version: int) -> C:
    known = _registry.get(topic)
    if known is not None and known is not cls and _qualname(known) != _qualname(cls):
        raise EventTypeConflictError(
            f"topic {topic!r} already belongs to {_qualname(known)}; "
            f"give {_qualname(cls)} a topic of its own with @tidings.event('...')"
        )
    setattr(cls, _TOPIC_ATTR, topic)
    setattr(cls, _VERSION_ATTR, version)
    _registry[topic] = cls
    _topics.pop(cls, None)
    return cls


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def topic_of(cls: type) -> str:
    """The topic instances of ``cls`` are published on.

    Raises:
        TopicRequiredError: for builtin and standard-library value types (``int``, ``str``,
            ``dict``...), which name no topic; pass ``topic=`` when publishing them.
    """
    try:
        return _topics[cls]
    except KeyError:
        pass
    topic = getattr(cls, _TOPIC_ATTR, None)
    if topic is None:
        if cls.__module__ in _BUILTIN_MODULES:
            raise TopicRequiredError(
                f"a {cls.__name__} names no topic: pass one, as in "
                f"bus.publish(value, topic='some.topic'), or publish an instance of an "
                "event class (see tidings.event)"
            )
        topic = _derive_topic(cls)
    _topics[cls] = topic
    return topic


def event_type_for(topic: str) -> type | None:
    """The class registered with :func:`event` for ``topic`` (its type name), if any."""
    return _registry.get(topic)


def version_of(cls: type) -> int:
    """The schema version declared with :func:`event` for ``cls`` (1 when undeclared)."""
    version: int = getattr(cls, _VERSION_ATTR, 1)
    return version


class Envelope(msgspec.Struct, Generic[T], frozen=True, gc=False):
    """One event with its metadata. Immutable.

    Attributes:
        topic: the topic the event was published on.
        payload: the event itself.
        time: packed hybrid-logical-clock time (see :mod:`tidings.clock`); it reads as
            nanoseconds since the Unix epoch, and its low 16 bits count events within one
            65.536 µs granule.
        key: the ordering key, or ``None``. Queued and remote deliveries keep publish order
            among envelopes with the same key.
        source: the CloudEvents ``source``: who produced the event.
        headers: string metadata carried across every hop (``traceparent`` and friends).
            Read-only. Names that are CloudEvents extension names (``[a-z0-9]+``) travel as
            extension attributes; others as protocol headers (see ``docs/wire-format.md``).
        attributes: the CloudEvents context attributes of an event that came from elsewhere
            which the other fields do not hold, kept as the producer gave them so that the
            event leaves tidings as it came: ``type`` (when it differs from the topic),
            ``time`` (the producer's text, when it differs from what :attr:`time` formats
            to), ``subject``, ``dataschema`` and ``datacontenttype``. Read-only; empty for
            events published here.
    """

    topic: str
    payload: T
    time: int
    key: str | None = None
    source: str = "tidings"
    headers: Mapping[str, str] = NO_HEADERS
    _id: str | None = None
    _node: str = ""
    attributes: Mapping[str, str] = NO_HEADERS

    @property
    def id(self) -> str:
        """Unique, sortable event id: the HLC time and the producing node, as 32 hex digits.

        Envelopes that arrived from elsewhere keep the id they were given.
        """
        given = self._id
        return given if given is not None else format_event_id(self.time, self._node)

    @property
    def datetime(self) -> _dt.datetime:
        """The physical part of :attr:`time` as an aware UTC ``datetime``."""
        return to_datetime(self.time)

    def __repr__(self) -> str:
        key = "" if self.key is None else f", key={self.key!r}"
        return f"Envelope(id={self.id!r}, topic={self.topic!r}{key}, payload={self.payload!r})"

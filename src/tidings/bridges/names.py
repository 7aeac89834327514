"""Names on the brokers, for bus topics and patterns: pure functions, no client library
(the gateway's config validation uses them without the extras).

- MQTT: topic ``a/b/c`` is bus topic ``a.b.c``; in filters ``+`` is ``*`` and a final
  ``#`` is ``>``. A level that is not a tidings token (empty, or holding ``.`` or another
  character outside ``[A-Za-z0-9_-]``) names no bus topic, so the mapping goes both ways.
- AMQP: routing keys are bus topics as they are; binding keys take ``#`` for ``>``.
"""

from __future__ import annotations

import re

from tidings.exceptions import InvalidTopicError
from tidings.topics import validate_pattern, validate_topic

__all__ = (
    "from_mqtt_filter",
    "from_mqtt_topic",
    "to_binding_key",
    "to_mqtt_filter",
    "to_mqtt_topic",
    "translate_pattern",
)

_LEVEL = re.compile(r"[A-Za-z0-9_-]+")


def translate_pattern(pattern: str, separator: str, one: str, rest: str) -> str:
    """A tidings pattern (``a.*.>``) in a broker's syntax: tokens joined by ``separator``,
    ``*`` as ``one``, ``>`` as ``rest``.

    Raises:
        InvalidTopicError: if ``pattern`` is malformed.
    """
    tokens = validate_pattern(pattern).split(".")
    return separator.join(one if t == "*" else rest if t == ">" else t for t in tokens)


def to_binding_key(pattern: str) -> str:
    """The AMQP binding key of bus pattern ``pattern``: ``a.*.>`` -> ``a.*.#``."""
    return translate_pattern(pattern, ".", "*", "#")


def to_mqtt_topic(topic: str) -> str:
    """The MQTT topic of bus topic ``topic``: ``a.b.c`` -> ``a/b/c``."""
    return validate_topic(topic).replace(".", "/")


def from_mqtt_topic(topic: str) -> str:
    """The bus topic of MQTT topic ``topic``: ``a/b/c`` -> ``a.b.c``.

    Raises:
        InvalidTopicError: if a level is empty or holds a character a tidings token cannot
            (``.`` included, so that the mapping goes both ways).
    """
    for level in topic.split("/"):
        if _LEVEL.fullmatch(level) is None:
            raise InvalidTopicError(
                f"the MQTT topic {topic!r} names no tidings topic: its level {level!r} is "
                "not one or more of A-Z a-z 0-9 _ -",
                topic=topic,
            )
    return validate_topic(topic.replace("/", "."))


def to_mqtt_filter(pattern: str) -> str:
    """The MQTT topic filter of bus pattern ``pattern``: ``a.*.>`` -> ``a/+/#``."""
    return translate_pattern(pattern, "/", "+", "#")


def from_mqtt_filter(topic_filter: str) -> str:
    """The bus pattern of MQTT topic filter ``topic_filter``: ``a/+/#`` -> ``a.*.>``.

    Raises:
        InvalidTopicError: if a level is neither a wildcard nor a tidings token.
    """
    levels = topic_filter.split("/")
    out = []
    for index, level in enumerate(levels):
        if level == "+":
            out.append("*")
        elif level == "#" and index == len(levels) - 1:
            out.append(">")
        elif _LEVEL.fullmatch(level) is None:
            raise InvalidTopicError(
                f"the MQTT topic filter {topic_filter!r} has the level {level!r}, which is "
                "neither + nor a final # nor one or more of A-Z a-z 0-9 _ -",
                topic=topic_filter,
            )
        else:
            out.append(level)
    return validate_pattern(".".join(out))

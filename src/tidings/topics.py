"""Topic names and subscription patterns.

A *topic* is one or more dot-separated tokens, for example ``orders.placed``. A token is
one or more ASCII letters, digits, ``_`` or ``-``; the same rule makes every topic a valid
NATS subject, a valid SQL text and a readable metric label.

A *pattern* is a topic in which whole tokens may be wildcards, as in NATS:

- ``*`` matches exactly one token (``orders.*`` matches ``orders.placed``, not ``orders``
  nor ``orders.eu.placed``);
- ``>`` matches one or more trailing tokens and may only be the last token (``orders.>``
  matches ``orders.placed`` and ``orders.eu.placed``, not ``orders``).

*Internal topics* are those whose first token is ``tidings`` (:data:`INTERNAL_TOKEN`): the
bus's own events, such as dead letters on ``tidings.dead_letter`` and a gateway's
``tidings.gateway.*``. A pattern that starts with a wildcard does not match them: ``>``
and ``*.dead_letter`` see no internal topic, so a catch-all subscriber does not swallow the
dead letters whose absence of subscribers makes failures reach the error log (NATS keeps
``$``-prefixed subjects from its wildcards the same way). Subscribing to them by a pattern
that names the first token works as usual: ``tidings.dead_letter``, ``tidings.>``. This is
the one rule: :func:`compile_pattern` here and the bus's subject trie
(:mod:`tidings.routing`) both apply it.

Validation errors are :class:`~tidings.exceptions.InvalidTopicError` and name the bad token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Final

from tidings.exceptions import InvalidTopicError

__all__ = (
    "INTERNAL_TOKEN",
    "MAX_TOPIC_LENGTH",
    "NOT_IN_TOPIC",
    "TOPIC_SYNTAX",
    "compile_pattern",
    "is_pattern",
    "matches",
    "validate_pattern",
    "validate_topic",
)

INTERNAL_TOKEN = "tidings"
"""The first token of internal topics, which no leading wildcard matches (module docstring)."""

MAX_TOPIC_LENGTH = 255
"""The longest topic or pattern accepted, in characters."""

_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")
_RULE = "tokens are separated by single dots and made of ASCII letters, digits, '_' or '-'"
# A whole valid topic (pattern) in one match: the common case, checked before the token by
# token walk that names what is wrong.
TOPIC_SYNTAX: Final = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")
"""What a valid topic of at most :data:`MAX_TOPIC_LENGTH` characters matches in full: for a
caller that checks topics inline (:func:`validate_topic` says what is wrong with one)."""
NOT_IN_TOPIC: Final = re.compile(r"[^A-Za-z0-9_\-.]")
"""Finds a character no topic has. A str of at most :data:`MAX_TOPIC_LENGTH` characters in
which it finds none, and with no empty token (``"" not in text.split(".")``), is a valid
topic: the check :func:`validate_topic` makes first, for a caller that checks topics inline.
On a valid topic it finds nothing, so it allocates no match object: cheaper than
:data:`TOPIC_SYNTAX`."""
_stray = NOT_IN_TOPIC.search
_VALID_PATTERN = re.compile(r"(?:[A-Za-z0-9_\-]+|\*)(?:\.(?:[A-Za-z0-9_\-]+|\*))*(?:\.>)?|>")


def _check(text: object, *, allow_wildcards: bool) -> list[str]:
    kind = "pattern" if allow_wildcards else "topic"
    if not isinstance(text, str):
        raise _not_a_str(text, kind)
    valid = _VALID_PATTERN if allow_wildcards else TOPIC_SYNTAX
    if len(text) <= MAX_TOPIC_LENGTH and valid.fullmatch(text) is not None:
        return text.split(".")
    if not text:
        raise InvalidTopicError(f"the {kind} is empty; {_RULE}", topic=text)
    if len(text) > MAX_TOPIC_LENGTH:
        raise InvalidTopicError(
            f"{kind} {text[:40]!r}... is {len(text)} characters long, "
            f"more than the {MAX_TOPIC_LENGTH} allowed",
            topic=text,
        )
    tokens = text.split(".")
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        position = f"token {index + 1}"
        if not token:
            raise InvalidTopicError(
                f"invalid {kind} {text!r}: {position} is empty; {_RULE}", topic=text, token=token
            )
        if allow_wildcards and token == "*":
            continue
        if allow_wildcards and token == ">":
            if index != last:
                raise InvalidTopicError(
                    f"invalid pattern {text!r}: '>' matches the rest of a topic, so it may only "
                    f"be the last token (it is {position} of {last + 1})",
                    topic=text,
                    token=token,
                )
            continue
        if _TOKEN.fullmatch(token) is None:
            hint = (
                "; wildcards '*' and '>' must stand alone as a whole token"
                if ("*" in token or ">" in token)
                else ""
            )
            if not allow_wildcards and token in ("*", ">"):
                hint = f"; {token!r} is a wildcard, allowed in subscription patterns only"
            raise InvalidTopicError(
                f"invalid {kind} {text!r}: {position} {token!r} is not allowed; {_RULE}{hint}",
                topic=text,
                token=token,
            )
    return tokens


def _not_a_str(text: object, kind: str) -> InvalidTopicError:
    return InvalidTopicError(f"a {kind} must be a str, not {type(text).__name__}", topic=repr(text))


@lru_cache(maxsize=4096)
def _valid_pattern(pattern: str) -> str:
    if len(pattern) > MAX_TOPIC_LENGTH or _VALID_PATTERN.fullmatch(pattern) is None:
        _check(pattern, allow_wildcards=True)  # raises, naming what is wrong
    return pattern


def _is_topic(text: object) -> bool:
    """Whether ``text`` is a str (not a subclass) and a valid concrete topic: the fast check
    (:data:`NOT_IN_TOPIC`), no cache; it runs when a topic is new to the bus (a route cache
    miss, a subscription), where a cache would mostly miss too."""
    return (
        type(text) is str
        and len(text) <= MAX_TOPIC_LENGTH
        and _stray(text) is None
        and "" not in text.split(".")
    )


def validate_topic(topic: str) -> str:
    """Return ``topic`` unchanged if it is a valid concrete topic (no wildcards).

    Raises:
        InvalidTopicError: naming the first bad token, or saying that ``topic`` is no str.
    """
    if not _is_topic(topic):
        _check(topic, allow_wildcards=False)  # raises, naming what is wrong (or a str subclass)
    return topic


_last_topic: object = None
"""The last topic :func:`validate_pattern` found valid (a str): the same object again (a
literal subscribed to many times) needs no check."""


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` unchanged if it is a valid topic or wildcard pattern.

    A topic is checked as :func:`validate_topic` checks it (the last one found valid is
    remembered); a pattern with a wildcard through a cache (a program subscribes to few
    distinct wildcard patterns).

    Raises:
        InvalidTopicError: naming the first bad token, or saying that ``pattern`` is no str.
    """
    global _last_topic
    if pattern is _last_topic:
        return pattern
    if _is_topic(pattern):
        _last_topic = pattern
        return pattern
    if not isinstance(pattern, str):
        raise _not_a_str(pattern, "pattern")
    return _valid_pattern(pattern)


def is_pattern(text: str) -> bool:
    """Whether ``text`` (already validated) contains a wildcard token."""
    return any(token in ("*", ">") for token in text.split("."))


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """Validate ``pattern`` and return a predicate telling whether a topic matches it
    (built once per pattern, then cached).

    Raises:
        InvalidTopicError: if the pattern is malformed or no str.
    """
    if not isinstance(pattern, str):
        raise _not_a_str(pattern, "pattern")
    return _compiled(pattern)


@lru_cache(maxsize=4096)
def _compiled(pattern: str) -> Callable[[str], bool]:
    tokens = tuple(_check(pattern, allow_wildcards=True))
    if "*" not in tokens and ">" not in tokens:
        return pattern.__eq__
    tail = tokens[-1] == ">"
    fixed = tokens[:-1] if tail else tokens
    width = len(fixed)
    public_only = tokens[0] in ("*", ">")  # a leading wildcard skips internal topics

    def match(topic: str) -> bool:
        parts = topic.split(".")
        if (len(parts) <= width) if tail else (len(parts) != width):
            return False
        if public_only and parts[0] == INTERNAL_TOKEN:
            return False
        return all(want == "*" or want == got for want, got in zip(fixed, parts, strict=False))

    return match


def matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches ``pattern`` (see the module docstring for the rules).

    Raises:
        InvalidTopicError: if the pattern is malformed.
    """
    return compile_pattern(pattern)(topic)

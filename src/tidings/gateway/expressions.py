"""Route conditions: CEL expressions over a CloudEvent, compiled once per config.

A condition sees the CloudEvents attributes as variables: ``id``, ``type``, ``source``,
``subject``, ``time``, ``specversion``, ``datacontenttype``, ``dataschema`` (strings; ``""``
when the event has none), ``data`` (the decoded JSON payload) and ``extensions`` (a map of
every extension attribute, e.g. ``extensions["model-version"]``, also reachable as
``extensions.partitionkey``). Any other top-level name is refused when the config is loaded:
CEL itself only notices unknown names when an evaluation reaches them.

Evaluation never raises: an expression that fails on an event (a missing ``data`` field, a
type mismatch) or yields anything but ``true`` does not match, and :func:`evaluate` tells the
caller it failed so that it can be counted.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import cel

from tidings.exceptions import TidingsError

__all__ = ("ATTRIBUTES", "CelError", "Condition", "compile_condition")

ATTRIBUTES = frozenset(
    {
        "id",
        "type",
        "source",
        "subject",
        "time",
        "specversion",
        "datacontenttype",
        "dataschema",
        "data",
        "extensions",
    }
)
"""The variables a condition may name."""

_KEYWORDS = frozenset(
    {
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    }
)
_STRINGS = re.compile(r"'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"", re.S)
_ROOT = re.compile(r"(?<![\w.])([A-Za-z_]\w*)(?!\s*\(|\w)")
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


class CelError(TidingsError, ValueError):
    """A CEL condition does not compile or names an unknown attribute."""


class Condition:
    """A compiled CEL condition (immutable; share it freely).

    ``names`` are the attributes it refers to: the caller passes only those (the engine
    converts every value it is given, so a smaller context evaluates several times faster).
    """

    __slots__ = ("_program", "names", "text")

    def __init__(self, text: str, program: Any, names: tuple[str, ...]) -> None:
        self.text = text
        self._program = program
        self.names = names

    def evaluate(self, context: Mapping[str, Any]) -> bool | None:
        """``True``/``False``, or ``None`` when the evaluation failed on this event."""
        try:
            return self._program.execute(context) is True
        except Exception:
            return None


@functools.lru_cache(maxsize=4096)
def compile_condition(text: str) -> Condition:
    """Compile ``text`` into a :class:`Condition` (cached: validating a config and building
    its table, or reloading an unchanged route, compiles an expression once).

    Raises:
        CelError: naming the syntax error or the unknown attribute.
    """
    code = _STRINGS.sub("''", text)
    bound = set(_BOUND.findall(code))
    roots = set(_ROOT.findall(code))
    unknown = sorted(roots - ATTRIBUTES - _KEYWORDS - bound)
    if unknown:
        raise CelError(
            f"CEL condition {text!r} names unknown attribute(s) {', '.join(unknown)}; "
            f"a condition sees {', '.join(sorted(ATTRIBUTES))}"
        )
    try:
        program = cel.compile(text)
    except (ValueError, RuntimeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CelError(f"CEL condition {text!r} does not compile: {detail}") from None
    return Condition(text, program, tuple(sorted(roots & ATTRIBUTES)))

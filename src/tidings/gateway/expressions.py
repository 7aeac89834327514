"""Route conditions: CEL expressions over a CloudEvent, compiled once per config.

A condition sees the CloudEvents attributes as variables: ``id``, ``type``, ``source``,
``subject``, ``time``, ``specversion``, ``datacontenttype``, ``dataschema`` (strings; ``""``
when the event has none), ``data`` (the decoded JSON payload) and ``extensions`` (a map of
every extension attribute, e.g. ``extensions["model-version"]``, also reachable as
``extensions.partitionkey``). Any other top-level name is refused when the config is loaded:
CEL itself only notices unknown names when an evaluation reaches them.

The engine converts every value it is given before evaluating (a map costs several times a
scalar), so the caller passes only the variables a condition names. A condition that reads
``data`` only as ``data.FIELD...`` (never whole, indexed, called, or under ``has()``) is
compiled with each ``data.FIELD`` written as a variable of its own
(:func:`data_variable`), and the caller passes just those fields that the payload has
(:attr:`Condition.data_fields`): the outcome is the same (a field the payload lacks is an
error either way), several times faster. :attr:`Condition.text` stays what was written.

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

__all__ = ("ATTRIBUTES", "CelError", "Condition", "compile_condition", "data_variable")

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
_DATA = re.compile(r"(?<![\w.])data(?!\w)")
_DATA_FIELD = re.compile(r"\s*\.\s*([A-Za-z_]\w*)(?!\w|\s*\()")


_HAS = re.compile(r"(?<![\w.])has\s*\(")


def data_variable(field: str) -> str:
    """The variable a flattened condition reads ``data.FIELD`` from."""
    return f"tidings_data_{field}"


def _flattened(text: str, bound: set[str]) -> tuple[str, tuple[str, ...]] | None:
    """``text`` with every ``data.FIELD`` outside string literals written as
    :func:`data_variable` ``(FIELD)``, and the fields; None when ``text`` reads ``data``
    otherwise (whole, indexed, called, bound by a macro) or uses ``has()``."""
    if "data" in bound:
        return None
    out: list[str] = []
    fields: set[str] = set()
    start = 0
    for literal in [*_STRINGS.finditer(text), None]:
        end = len(text) if literal is None else literal.start()
        code = text[start:end]
        if _HAS.search(code):
            return None
        at = 0
        for found in _DATA.finditer(code):
            field = _DATA_FIELD.match(code, found.end())
            if field is None:
                return None
            fields.add(field.group(1))
            out += [code[at : found.start()], data_variable(field.group(1))]
            at = field.end()
        out.append(code[at:])
        if literal is not None:
            out.append(literal.group())
            start = literal.end()
    return "".join(out), tuple(sorted(fields))


class CelError(TidingsError, ValueError):
    """A CEL condition does not compile or names an unknown attribute."""


class Condition:
    """A compiled CEL condition (immutable; share it freely).

    ``names`` are the attributes it refers to: the caller passes only those (the engine
    converts every value it is given, so a smaller context evaluates several times faster).
    """

    __slots__ = ("_program", "data_fields", "names", "text")

    def __init__(
        self,
        text: str,
        program: Any,
        names: tuple[str, ...],
        data_fields: tuple[str, ...] | None = None,
    ) -> None:
        self.text = text
        self._program = program
        self.names = names
        self.data_fields = data_fields
        """None, or the condition was flattened: pass each of these ``data`` fields the
        payload has as :func:`data_variable` ``(FIELD)``, and no ``data``."""

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
    names = tuple(sorted(roots & ATTRIBUTES))
    flat = _flattened(text, bound) if "data" in names else None
    if flat is None:
        return Condition(text, program, names)
    try:
        program = cel.compile(flat[0])
    except (ValueError, RuntimeError):  # not expected; the original form always works
        return Condition(text, program, names)
    return Condition(text, program, names, flat[1])

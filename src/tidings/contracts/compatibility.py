"""Compatibility of schema versions under Confluent's modes, for JSON Schema and Avro.

A *reader* schema can read data written with a *writer* schema when :func:`reader_breaks`
finds nothing. The modes (:data:`MODES`) decide who reads whom at registration:

=====================  ==========================================================
``BACKWARD``           the new schema reads data written with the latest version
``FORWARD``            the latest version reads data written with the new schema
``FULL``               both
``*_TRANSITIVE``       the same against *every* registered version, not only the latest
``NONE``               no check
=====================  ==========================================================

Rules (each :class:`~tidings.contracts.errors.Break` names one, and the field):

- JSON Schema: a field the reader requires that the writer does not
  (``required-field-added`` / ``required-field-removed``); a field the writer has that a
  closed reader (``additionalProperties: false``) lacks (``field-removed``); a type the
  reader does not accept (``type-changed``; integer data read as number is fine);
  enum values the writer may send that the reader lacks (``enum-value-removed``); a
  bound made tighter (``constraint-tightened``: minimum, maximum, lengths, pattern).
- Avro (the specification's schema resolution): a reader field the writer lacks with no
  default (``field-added-without-default`` / ``field-removed-without-default``); types
  that do not resolve (``type-changed``; int -> long -> float -> double and string <->
  bytes are promotions); enum symbols the writer has that the reader lacks with no
  default (``enum-symbol-removed``); union branches that match nothing in the reader.

The check is a walk of both schemas, linear in their size: a 100-field schema against 50
versions takes milliseconds (``benchmarks/bench_contracts.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from tidings.contracts.errors import Break
from tidings.contracts.schemas import resolve_ref

__all__ = ("MODES", "breaks_for_mode", "reader_breaks")

MODES: Final = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)


def breaks_for_mode(
    mode: str, new: Any, earlier: Sequence[tuple[int, Any]], schema_type: str = "JSON"
) -> list[Break]:
    """Every rule ``new`` breaks against ``earlier`` (``(version, schema)``, oldest first)
    under ``mode``; empty when it may be registered.

    Raises:
        ValueError: for an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"compatibility mode {mode!r} is none of {', '.join(MODES)}")
    if mode == "NONE" or not earlier:
        return []
    against = earlier if mode.endswith("_TRANSITIVE") else earlier[-1:]
    base = mode.removesuffix("_TRANSITIVE")
    out: list[Break] = []
    for version, old in against:
        if base in ("BACKWARD", "FULL"):
            out.extend(_versioned(reader_breaks(new, old, schema_type, added=True), version))
        if base in ("FORWARD", "FULL"):
            out.extend(_versioned(reader_breaks(old, new, schema_type, added=False), version))
    return out


def _versioned(breaks: list[Break], version: int) -> list[Break]:
    return [Break(b.rule, b.field, b.detail, version) for b in breaks]


def reader_breaks(
    reader: Any, writer: Any, schema_type: str = "JSON", *, added: bool = True
) -> list[Break]:
    """The rules that keep ``reader`` from reading data written with ``writer``.

    ``added`` names rules from the reader's side (the reader is the new schema: a field
    was *added*); ``False`` from the writer's (the writer is new: a field was *removed*).
    """
    out: list[Break] = []
    if schema_type == "AVRO":
        _Avro(reader, writer, added, out).check(reader, writer, "$")
    else:
        _Json(reader, writer, added, out).check(reader, writer, "$")
    return out


# -- JSON Schema ----------------------------------------------------------------------------

_BOUNDS: Final = (
    ("minimum", 1),
    ("exclusiveMinimum", 1),
    ("minLength", 1),
    ("minItems", 1),
    ("maximum", -1),
    ("exclusiveMaximum", -1),
    ("maxLength", -1),
    ("maxItems", -1),
)


class _Json:
    def __init__(self, reader: Any, writer: Any, added: bool, out: list[Break]) -> None:
        self.reader_root = reader if isinstance(reader, dict) else {}
        self.writer_root = writer if isinstance(writer, dict) else {}
        self.added = added
        self.out = out
        # without references, equal sub-schemas mean equal data: compatible, not walked
        self.no_refs = b'"$ref"' not in msgspec.json.encode([reader, writer])

    def _deref(self, schema: Any, root: dict[str, Any]) -> Any:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
            schema = resolve_ref(root, schema["$ref"])
            seen += 1
        return schema

    def _types(self, schema: Any, root: dict[str, Any]) -> set[str] | None:
        """The JSON types ``schema`` admits, ``None`` for any."""
        schema = self._deref(schema, root)
        if not isinstance(schema, dict):
            return None if schema is not False else set()
        variants = schema.get("anyOf") or schema.get("oneOf")
        if variants:
            out: set[str] = set()
            for variant in variants:
                kinds = self._types(variant, root)
                if kinds is None:
                    return None
                out |= kinds
            return out
        if "enum" in schema:
            return {_json_type(v) for v in schema["enum"]}
        if "const" in schema:
            return {_json_type(schema["const"])}
        kind = schema.get("type")
        if kind is None:
            return None
        return set(kind) if isinstance(kind, list) else {kind}

    def _branch(self, schema: Any, root: dict[str, Any], kind: str) -> Any:
        schema = self._deref(schema, root)
        if not isinstance(schema, dict):
            return {}
        for variant in schema.get("anyOf") or schema.get("oneOf") or ():
            variant = self._deref(variant, root)
            if kind in (self._types(variant, root) or {kind}):
                return variant
        return schema

    def check(self, reader: Any, writer: Any, path: str) -> None:
        if self.no_refs and reader == writer:
            return
        rtypes = self._types(reader, self.reader_root)
        wtypes = self._types(writer, self.writer_root)
        if rtypes is not None:
            accepted = set(rtypes)
            if "number" in accepted:
                accepted.add("integer")
            missing = sorted(wtypes - accepted) if wtypes is not None else ["any value"]
            if missing:
                self.out.append(
                    Break(
                        "type-changed",
                        path,
                        f"the {'new' if self.added else 'old'} schema does not accept "
                        f"{', '.join(missing)} here, which the "
                        f"{'old' if self.added else 'new'} schema allows",
                    )
                )
                return
        r = self._deref(reader, self.reader_root)
        w = self._deref(writer, self.writer_root)
        if not isinstance(r, dict) or not isinstance(w, dict):
            return
        self._enum(r, w, path)
        for kind in sorted(wtypes or ()):
            rb = self._branch(r, self.reader_root, kind)
            wb = self._branch(w, self.writer_root, kind)
            self._bounds(rb, wb, path)
            if kind == "object":
                self._object(rb, wb, path)
            elif kind == "array":
                ri, wi = rb.get("items"), wb.get("items")
                if isinstance(ri, dict) and ri:
                    self.check(ri, wi if wi is not None else {}, f"{path}[]")

    def _enum(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        if "enum" not in r:
            return
        allowed = r["enum"]
        sent = w.get("enum")
        lost = [v for v in sent if v not in allowed] if sent is not None else None
        if lost is None or lost:
            what = ", ".join(map(repr, lost)) if lost else "values outside the enum"
            self.out.append(
                Break(
                    "enum-value-removed" if self.added else "enum-value-added",
                    path,
                    f"{what} may be written but the "
                    f"{'new' if self.added else 'old'} schema's enum lacks them",
                )
            )

    def _bounds(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        for keyword, sign in _BOUNDS:
            if keyword not in r:
                continue
            bound = r[keyword]
            given = w.get(keyword)
            if given is None or (given - bound) * sign < 0:
                self.out.append(
                    Break(
                        "constraint-tightened",
                        path,
                        f"{keyword} {bound!r} in the {'new' if self.added else 'old'} schema "
                        f"rejects values the {'old' if self.added else 'new'} one allows "
                        f"({keyword} {given!r})",
                    )
                )
        if "pattern" in r and r["pattern"] != w.get("pattern"):
            self.out.append(Break("constraint-tightened", path, f"pattern {r['pattern']!r} is new"))

    def _object(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        rprops: dict[str, Any] = r.get("properties", {})
        wprops: dict[str, Any] = w.get("properties", {})
        wrequired = set(w.get("required", ()))
        for name in r.get("required", ()):
            if name not in wrequired:
                self.out.append(
                    Break(
                        "required-field-added" if self.added else "required-field-removed",
                        f"{path}.{name}",
                        f"'{name}' is required by the {'new' if self.added else 'old'} schema "
                        f"but may be missing from data written with the "
                        f"{'old' if self.added else 'new'} one; give it a default "
                        "(make it optional) instead",
                    )
                )
        closed = r.get("additionalProperties") is False
        for name, sub in wprops.items():
            if name in rprops:
                self.check(rprops[name], sub, f"{path}.{name}")
            elif closed:
                self.out.append(
                    Break(
                        "field-removed" if self.added else "field-added",
                        f"{path}.{name}",
                        f"'{name}' may be written but the {'new' if self.added else 'old'} "
                        "schema allows no additional properties",
                    )
                )
        extra = r.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            wextra = w.get("additionalProperties")
            self.check(extra, wextra if isinstance(wextra, dict) else {}, f"{path}.*")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# -- Avro -----------------------------------------------------------------------------------

_PROMOTIONS: Final = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


_PRIMITIVES: Final = frozenset({*_PROMOTIONS, "null", "boolean"})


def _named(schema: Any, table: dict[str, Any], namespace: str = "") -> None:
    if isinstance(schema, list):
        for branch in schema:
            _named(branch, table, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed", "error"):
            name = schema["name"]
            namespace = schema.get("namespace", namespace)
            full = name if "." in name or not namespace else f"{namespace}.{name}"
            table[full] = schema
            table[name] = schema
            for field in schema.get("fields", ()):
                _named(field["type"], table, namespace)
        elif kind == "array":
            _named(schema.get("items"), table, namespace)
        elif kind == "map":
            _named(schema.get("values"), table, namespace)
        elif isinstance(kind, (dict, list)):
            _named(kind, table, namespace)


class _Avro:
    def __init__(self, reader: Any, writer: Any, added: bool, out: list[Break]) -> None:
        self.rnames: dict[str, Any] = {}
        self.wnames: dict[str, Any] = {}
        _named(reader, self.rnames)
        _named(writer, self.wnames)
        self.added = added
        self.out = out
        self.seen: set[tuple[int, int]] = set()

    def _resolve(self, schema: Any, names: dict[str, Any]) -> Any:
        if isinstance(schema, str):
            return names.get(schema, schema)
        if isinstance(schema, dict):
            kind = schema.get("type")
            if isinstance(kind, (dict, list)):
                return self._resolve(kind, names)
            if kind in _PRIMITIVES:
                return kind
        return schema

    def _kind(self, schema: Any) -> str:
        if isinstance(schema, list):
            return "union"
        if isinstance(schema, str):
            return schema
        return str(schema.get("type"))

    def matches(self, reader: Any, writer: Any) -> bool:
        probe: list[Break] = []
        saved, self.out = self.out, probe
        try:
            self.check(reader, writer, "$")
        finally:
            self.out = saved
        return not probe

    def check(self, reader: Any, writer: Any, path: str) -> None:
        r = self._resolve(reader, self.rnames)
        w = self._resolve(writer, self.wnames)
        if isinstance(r, str) and r == w and r in _PRIMITIVES:
            return  # the same primitive: nothing to resolve
        key = (id(r), id(w))
        if key in self.seen:  # recursive types: checked already on this walk
            return
        if isinstance(w, list):
            self.seen.add(key)
            for branch in w:
                self.check(r, branch, path)
            return
        if isinstance(r, list):
            if not any(self.matches(branch, w) for branch in r):
                self._break("type-changed", path, f"no branch of the union reads {self._kind(w)}")
            return
        rk, wk = self._kind(r), self._kind(w)
        if wk in _PROMOTIONS:
            if rk not in _PROMOTIONS[wk]:
                self._break("type-changed", path, f"{wk} data cannot be read as {rk}")
            return
        if rk != wk:
            self._break("type-changed", path, f"{wk} data cannot be read as {rk}")
            return
        self.seen.add(key)
        if rk == "record":
            self._record(r, w, path)
        elif rk == "enum":
            lost = [s for s in w.get("symbols", ()) if s not in r.get("symbols", ())]
            if lost and "default" not in r:
                self._break(
                    "enum-symbol-removed" if self.added else "enum-symbol-added",
                    path,
                    f"symbols {lost!r} may be written but the reader lacks them (and has no "
                    "default symbol)",
                )
        elif rk == "array":
            self.check(r.get("items"), w.get("items"), f"{path}[]")
        elif rk == "map":
            self.check(r.get("values"), w.get("values"), f"{path}.*")
        elif rk == "fixed" and r.get("size") != w.get("size"):
            self._break("type-changed", path, f"fixed size {w.get('size')} -> {r.get('size')}")

    def _record(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        written: dict[str, Any] = {}
        for field in w.get("fields", ()):
            written[field["name"]] = field
        for field in r.get("fields", ()):
            names = [field["name"], *field.get("aliases", ())]
            found = next((written[n] for n in names if n in written), None)
            where = f"{path}.{field['name']}"
            if found is None:
                if "default" not in field:
                    self._break(
                        "field-added-without-default"
                        if self.added
                        else "field-removed-without-default",
                        where,
                        f"'{field['name']}' is read by the {'new' if self.added else 'old'} "
                        f"schema but missing from data written with the "
                        f"{'old' if self.added else 'new'} one; give it a default",
                    )
                continue
            self.check(field["type"], found["type"], where)

    def _break(self, rule: str, path: str, detail: str) -> None:
        self.out.append(Break(rule, path, detail))

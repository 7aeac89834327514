"""Schemas of event classes: JSON Schema for every event type, Avro where the type maps.

- :func:`json_schema` describes a frozen dataclass, ``msgspec.Struct`` (both through
  ``msgspec.json.schema``) or pydantic model (its ``model_json_schema``) as a JSON Schema
  (draft 2020-12): the root object's members at the top, every named type in ``$defs``.
- :func:`avro_schema` translates that JSON Schema into an Avro record (parsed by fastavro,
  so what it returns is a valid Avro schema). Types with no Avro form (a field that may be
  anything, tuples, unions of two record types, non-string enums) raise
  :class:`~tidings.contracts.errors.UnmappableTypeError` naming the field.
- Subjects and versions (re-exported from :mod:`tidings.dataschema`): the schema of a
  topic's events is registered under the subject :func:`subject_for` (``<topic>-value``,
  Confluent's topic-name strategy), and an event of a declared class carries
  ``dataschema`` :func:`schema_uri` (``tidings:schemas/<topic>/versions/<n>``), which
  :func:`parse_schema_uri` reads back.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tidings.codec import is_pydantic_model
from tidings.contracts.errors import UnmappableTypeError
from tidings.dataschema import parse_schema_uri, schema_uri, subject_for
from tidings.event import topic_of, version_of

__all__ = (
    "JSON_SCHEMA_DIALECT",
    "avro_from_json_schema",
    "avro_schema",
    "json_schema",
    "parse_schema_uri",
    "resolve_ref",
    "schema_uri",
    "subject_for",
)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of event class ``cls``.

    The result names the topic and version in ``x-tidings-topic`` / ``x-tidings-version``.

    Raises:
        TypeError: if ``cls`` is no type msgspec or pydantic can describe.
    """
    if is_pydantic_model(cls):
        raw: dict[str, Any] = cls.model_json_schema()  # type: ignore[attr-defined]
        defs = dict(raw.pop("$defs", {}))
        root = raw
    else:
        raw = msgspec.json.schema(cls)
        defs = dict(raw.get("$defs", {}))
        ref = raw.get("$ref")
        if isinstance(ref, str):
            root = dict(resolve_ref({"$defs": defs}, ref))
            if not _referenced(defs, ref):
                defs.pop(ref.rsplit("/", 1)[1], None)
        else:
            root = {k: v for k, v in raw.items() if k != "$defs"}
    out: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, **root}
    if defs:
        out["$defs"] = defs
    out["x-tidings-topic"] = topic_of(cls)
    out["x-tidings-version"] = version_of(cls)
    return out


def _referenced(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_referenced(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_referenced(v, ref) for v in node)
    return False


def resolve_ref(root: dict[str, Any], ref: str) -> dict[str, Any]:
    """The sub-schema a local ``$ref`` (``#/$defs/Name``) points at in ``root``.

    Raises:
        InvalidSchemaError: for a reference that is not local or points nowhere.
    """
    from tidings.contracts.errors import InvalidSchemaError

    if not ref.startswith("#/"):
        raise InvalidSchemaError(f"only local references (#/...) are supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            raise InvalidSchemaError(f"the reference {ref!r} points at nothing in the schema")
        node = node[part]
    if not isinstance(node, dict):
        raise InvalidSchemaError(f"the reference {ref!r} points at no schema")
    return node


def avro_schema(cls: type) -> dict[str, Any]:
    """The Avro record schema of event class ``cls`` (validated by fastavro).

    Raises:
        UnmappableTypeError: naming the first field whose type has no Avro form.
    """
    topic = topic_of(cls)
    namespace = ".".join(re.sub(r"[^A-Za-z0-9_]", "_", t) for t in topic.split(".")[:-1])
    return avro_from_json_schema(json_schema(cls), name=cls.__name__, namespace=namespace)


def avro_from_json_schema(
    schema: dict[str, Any], *, name: str, namespace: str = ""
) -> dict[str, Any]:
    """Translate an object JSON Schema into an Avro record (see the module docstring).

    Raises:
        UnmappableTypeError: naming the field whose type has no Avro form.
    """
    import fastavro

    translator = _AvroTranslator(schema)
    record = translator.record(schema, name, "$")
    if namespace:
        record["namespace"] = namespace
    fastavro.parse_schema(record)
    return record


class _AvroTranslator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.defined: set[str] = set()

    def record(self, schema: dict[str, Any], name: str, path: str) -> dict[str, Any]:
        name = re.sub(r"[^A-Za-z0-9_]", "_", schema.get("title") or name)
        self.defined.add(name)
        required = set(schema.get("required", ()))
        fields = []
        for field, sub in schema.get("properties", {}).items():
            avro = self.type(sub, f"{path}.{field}", field)
            entry: dict[str, Any] = {"name": field, "type": avro}
            if field not in required:
                if "default" in sub:
                    default = sub["default"]
                    if isinstance(avro, list) and "null" in avro:
                        rest = [t for t in avro if t != "null"]
                        entry["type"] = ["null", *rest] if default is None else [*rest, "null"]
                    entry["default"] = default
                elif isinstance(avro, list) and "null" in avro:
                    entry["default"] = None
                else:
                    entry["type"] = ["null", avro]
                    entry["default"] = None
            fields.append(entry)
        return {"type": "record", "name": name, "fields": fields}

    def type(self, schema: dict[str, Any], path: str, hint: str) -> Any:
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = resolve_ref(self.root, ref)
            name = re.sub(r"[^A-Za-z0-9_]", "_", target.get("title") or ref.rsplit("/", 1)[1])
            if name in self.defined:
                return name
            return self.type({**target, "title": name}, path, hint)
        variants = schema.get("anyOf") or schema.get("oneOf")
        if variants:
            out = []
            for variant in variants:
                avro = self.type(variant, path, hint)
                if isinstance(avro, list):
                    raise UnmappableTypeError(f"{path}: a nested union has no Avro form")
                out.append(avro)
            kinds = [a if isinstance(a, str) else a.get("type") for a in out]
            if len(set(map(str, kinds))) != len(kinds):
                raise UnmappableTypeError(
                    f"{path}: a union of two {kinds[0]!s} types has no Avro form; use one type"
                )
            return out
        if "enum" in schema:
            symbols = schema["enum"]
            if not all(isinstance(s, str) and re.fullmatch(r"[A-Za-z_]\w*", s) for s in symbols):
                raise UnmappableTypeError(
                    f"{path}: an enum of {symbols!r} has no Avro form (symbols must be names)"
                )
            name = re.sub(r"[^A-Za-z0-9_]", "_", schema.get("title") or f"{hint}_enum")
            self.defined.add(name)
            return {"type": "enum", "name": name, "symbols": list(symbols)}
        kind = schema.get("type")
        if isinstance(kind, list):
            return [self.type({**schema, "type": k}, path, hint) for k in kind]
        if kind == "string":
            fmt = schema.get("format")
            if fmt == "date-time":
                return {"type": "long", "logicalType": "timestamp-micros"}
            if fmt == "uuid":
                return {"type": "string", "logicalType": "uuid"}
            if schema.get("contentEncoding") == "base64":
                return "bytes"
            return "string"
        if kind == "integer":
            return "long"
        if kind == "number":
            return "double"
        if kind == "boolean":
            return "boolean"
        if kind == "null":
            return "null"
        if kind == "array":
            if "prefixItems" in schema:
                raise UnmappableTypeError(f"{path}: a tuple has no Avro form; use a list")
            return {"type": "array", "items": self.type(schema.get("items", {}), path, hint)}
        if kind == "object":
            if "properties" in schema:
                return self.record(schema, hint.capitalize(), path)
            values = schema.get("additionalProperties")
            if isinstance(values, dict):
                return {"type": "map", "values": self.type(values, path, hint)}
        raise UnmappableTypeError(
            f"{path}: a field of JSON Schema {schema!r} has no Avro form; give it a concrete type"
        )

"""Validation against registered schemas: the msgspec-compiled checker agrees with the
reference implementation (jsonschema), errors name the field and the rule, versions are
chosen by dataschema, the class's version, or the latest."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

import tidings
from tidings.contracts import (
    SchemaRegistry,
    SchemaViolationError,
    Validator,
    compile_schema,
    schema_uri,
)
from tidings.event import Envelope
from tidings.store.sqlite import SQLiteStore

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1, "pattern": "^o"},
        "amount": {"type": "number", "minimum": 0, "exclusiveMaximum": 1000},
        "qty": {"type": "integer", "multipleOf": 2},
        "kind": {"enum": ["a", "b"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "meta": {"type": "object", "additionalProperties": {"type": "integer"}},
        "line": {
            "type": "object",
            "properties": {"sku": {"type": "string"}},
            "required": ["sku"],
            "additionalProperties": False,
        },
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["id", "amount"],
}

CASES: list[tuple[dict[str, Any], tuple[str, str] | None]] = [
    ({"id": "o1", "amount": 5}, None),
    ({"id": "o1", "amount": 5.5, "qty": 4, "kind": "a", "tags": ["x"], "note": None}, None),
    ({"id": "o1", "amount": 5, "meta": {"x": 1}, "line": {"sku": "s"}, "extra": 1}, None),
    ({"amount": 5}, ("$.id", "required")),
    ({"id": "", "amount": 5}, ("$.id", "minLength")),
    ({"id": "x1", "amount": 5}, ("$.id", "pattern")),
    ({"id": "o1", "amount": -1}, ("$.amount", "minimum")),
    ({"id": "o1", "amount": 1000}, ("$.amount", "exclusiveMaximum")),
    ({"id": "o1", "amount": "5"}, ("$.amount", "type")),
    ({"id": "o1", "amount": 5, "qty": 3}, ("$.qty", "multipleOf")),
    ({"id": "o1", "amount": 5, "kind": "c"}, ("$.kind", "enum")),
    ({"id": "o1", "amount": 5, "tags": ["a", "b", "c"]}, ("$.tags", "maxItems")),
    ({"id": "o1", "amount": 5, "meta": {"x": "y"}}, ("$.meta.x", "type")),
    ({"id": "o1", "amount": 5, "line": {}}, ("$.line.sku", "required")),
    ({"id": "o1", "amount": 5, "line": {"sku": "s", "x": 1}}, ("$.line.x", "additionalProperties")),
    ({"id": "o1", "amount": 5, "note": 3}, ("$.note", "anyOf")),
]


@pytest.mark.parametrize(("payload", "expected"), CASES)
def test_the_compiled_checker_agrees_with_jsonschema(
    payload: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    reference = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(payload))
    assert (not reference) == (expected is None)
    for schema in (SCHEMA, {"allOf": [SCHEMA]}):  # msgspec-compiled, and jsonschema's path
        checker = compile_schema(schema)
        data = msgspec.json.encode(payload)
        if expected is None:
            checker(data)
        else:
            with pytest.raises((msgspec.ValidationError, jsonschema.ValidationError)):
                checker(data)


class _Source:
    def __init__(self, *versions: dict[str, Any]) -> None:
        from tidings.contracts import RegisteredSchema

        self.entries = [
            RegisteredSchema(
                "shop.order-value", i + 1, i + 1, "JSON", msgspec.json.encode(v).decode(), v
            )
            for i, v in enumerate(versions)
        ]

    def cached(self, subject: str, version: int | None = None) -> Any:
        if subject != "shop.order-value":
            return None
        if version is None:
            return self.entries[-1]
        return self.entries[version - 1] if 0 < version <= len(self.entries) else None


@pytest.mark.parametrize(("payload", "expected"), [c for c in CASES if c[1] is not None])
def test_a_violation_names_field_and_rule_and_is_counted(
    payload: dict[str, Any], expected: tuple[str, str]
) -> None:
    validator = Validator(_Source(SCHEMA))
    with pytest.raises(SchemaViolationError) as caught:
        validator.check(Envelope("shop.order", payload, 1), "http")
    assert (caught.value.field, caught.value.rule) == expected
    assert caught.value.topic == "shop.order"
    assert expected[0] in str(caught.value)
    assert validator.violations == {("shop.order", "http"): 1}


def test_the_version_is_dataschema_else_the_class_else_the_latest() -> None:
    v1 = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    v2 = {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}
    validator = Validator(_Source(v1, v2))
    validator.check(Envelope("shop.order", {"b": "x"}, 1))  # latest: v2
    old = {"dataschema": schema_uri("shop.order", 1)}
    validator.check(Envelope("shop.order", {"a": "x"}, 1, attributes=old))
    with pytest.raises(SchemaViolationError) as caught:
        validator.check(Envelope("shop.order", {"b": "x"}, 1, attributes=old))
    assert (caught.value.field, caught.value.version) == ("$.a", 1)
    unknown = {"dataschema": schema_uri("shop.order", 9)}
    with pytest.raises(SchemaViolationError, match="version 9") as named:
        validator.check(Envelope("shop.order", {"b": "x"}, 1, attributes=unknown))
    assert named.value.rule == "dataschema"
    with pytest.raises(SchemaViolationError, match="binary"):
        validator.check(Envelope("shop.order", b"\x00", 1))
    Validator(_Source(v1)).check(Envelope("other.topic", {"anything": 1}, 1))  # unregistered


@tidings.event("contracts.versioned", version=1)
@dataclasses.dataclass(frozen=True)
class Versioned:
    a: str


async def test_a_class_is_checked_at_its_own_version(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "log.db") as store:
        registry = SchemaRegistry(store, default_mode="NONE")
        v1 = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 1}}}
        v2 = {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}
        await registry.register("contracts.versioned-value", v1)
        await registry.register("contracts.versioned-value", v2)
        validator = Validator(registry)
        validator.check(Envelope("contracts.versioned", Versioned("x"), 1))  # v1, not latest
        with pytest.raises(SchemaViolationError) as caught:
            validator.check(Envelope("contracts.versioned", Versioned("xx"), 1))
        assert (caught.value.field, caught.value.rule, caught.value.version) == (
            "$.a",
            "maxLength",
            1,
        )


def test_an_avro_schema_is_checked_by_fastavro() -> None:
    from tidings.contracts import RegisteredSchema

    avro = {
        "type": "record",
        "name": "Order",
        "fields": [{"name": "id", "type": "string"}, {"name": "cents", "type": "long"}],
    }

    class Source:
        entry = RegisteredSchema("shop.order-value", 1, 1, "AVRO", json.dumps(avro), avro)

        def cached(self, subject: str, version: int | None = None) -> Any:
            return self.entry

    validator = Validator(Source())
    validator.check(Envelope("shop.order", {"id": "o1", "cents": 5}, 1))
    with pytest.raises(SchemaViolationError) as wrong:
        validator.check(Envelope("shop.order", {"id": "o1", "cents": "5"}, 1))
    assert (wrong.value.field, wrong.value.rule) == ("$.cents", "type")
    with pytest.raises(SchemaViolationError) as missing:
        validator.check(Envelope("shop.order", {"id": "o1"}, 1))
    assert (missing.value.field, missing.value.rule) == ("$.cents", "required")

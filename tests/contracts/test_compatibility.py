"""Compatibility rules under Confluent's modes, for JSON Schema and Avro (each rule and
field named), transitive modes checked against every earlier version."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.contracts import breaks_for_mode, reader_breaks


def obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


V1 = obj(["id"], id={"type": "string"}, amount={"type": "number"})


def rules(breaks: list[Any]) -> list[tuple[str, str]]:
    return [(b.rule, b.field) for b in breaks]


def test_json_adding_a_required_field_breaks_backward_naming_rule_and_field() -> None:
    v2 = obj(["id", "currency"], id={"type": "string"}, currency={"type": "string"})
    assert rules(breaks_for_mode("BACKWARD", v2, [(1, V1)])) == [
        ("required-field-added", "$.currency")
    ]
    optional = obj(["id"], id={"type": "string"}, currency={"type": "string"})
    assert breaks_for_mode("BACKWARD", optional, [(1, V1)]) == []


def test_json_removing_a_required_field_breaks_forward() -> None:
    v2 = obj([], id={"type": "string"})
    assert rules(breaks_for_mode("FORWARD", v2, [(1, V1)])) == [("required-field-removed", "$.id")]
    assert breaks_for_mode("BACKWARD", v2, [(1, V1)]) == []
    assert rules(breaks_for_mode("FULL", v2, [(1, V1)])) == [("required-field-removed", "$.id")]


def test_json_types_widen_but_do_not_narrow() -> None:
    ints = obj(["n"], n={"type": "integer"})
    numbers = obj(["n"], n={"type": "number"})
    assert reader_breaks(numbers, ints) == []
    assert rules(reader_breaks(ints, numbers)) == [("type-changed", "$.n")]
    strings = obj(["n"], n={"type": "string"})
    assert rules(breaks_for_mode("BACKWARD", strings, [(1, ints)])) == [("type-changed", "$.n")]


def test_json_enums_bounds_and_closed_objects() -> None:
    old = obj(["s"], s={"enum": ["a", "b"]}, n={"type": "integer", "minimum": 0})
    new = obj(["s"], s={"enum": ["a"]}, n={"type": "integer", "minimum": 5})
    assert rules(breaks_for_mode("BACKWARD", new, [(1, old)])) == [
        ("enum-value-removed", "$.s"),
        ("constraint-tightened", "$.n"),
    ]
    closed = {**obj(["s"], s={"type": "string"}), "additionalProperties": False}
    assert rules(reader_breaks(closed, old)) == [("field-removed", "$.n")]  # enum of strings: ok


def test_transitive_modes_check_every_earlier_version_plain_ones_the_latest() -> None:
    v1 = obj(["a"], a={"type": "string"})
    v2 = obj([], a={"type": "string"})  # dropped the requirement: fine backward
    v3 = obj(["b"], b={"type": "string"})  # requires b, which neither v1 nor v2 required
    assert rules(breaks_for_mode("FORWARD", v3, [(1, v1), (2, v2)])) == []
    transitive = breaks_for_mode("FORWARD_TRANSITIVE", v3, [(1, v1), (2, v2)])
    assert [(b.rule, b.field, b.version) for b in transitive] == [
        ("required-field-removed", "$.a", 1)
    ]
    assert breaks_for_mode("NONE", v3, [(1, v1)]) == []
    with pytest.raises(ValueError, match="SIDEWAYS"):
        breaks_for_mode("SIDEWAYS", v3, [(1, v1)])


def record(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "R", "fields": list(fields)}


def test_avro_field_added_needs_a_default_and_types_promote() -> None:
    v1 = record({"name": "id", "type": "string"}, {"name": "n", "type": "int"})
    no_default = record(
        {"name": "id", "type": "string"},
        {"name": "n", "type": "int"},
        {"name": "c", "type": "string"},
    )
    assert rules(breaks_for_mode("BACKWARD", no_default, [(1, v1)], "AVRO")) == [
        ("field-added-without-default", "$.c")
    ]
    with_default = record(
        {"name": "id", "type": "string"},
        {"name": "n", "type": "long"},
        {"name": "c", "type": "string", "default": "EUR"},
    )
    assert breaks_for_mode("FULL", with_default, [(1, v1)], "AVRO") == [
        b
        for b in breaks_for_mode("FULL", with_default, [(1, v1)], "AVRO")
        if b.rule == "type-changed"
    ]
    assert rules(breaks_for_mode("FORWARD", with_default, [(1, v1)], "AVRO")) == [
        ("type-changed", "$.n")
    ]  # old readers cannot read long data as int
    assert breaks_for_mode("BACKWARD", with_default, [(1, v1)], "AVRO") == []


def test_avro_removed_field_without_default_breaks_forward_and_enums_unions() -> None:
    v1 = record({"name": "id", "type": "string"}, {"name": "n", "type": "int"})
    v2 = record({"name": "id", "type": "string"})
    assert rules(breaks_for_mode("FORWARD", v2, [(1, v1)], "AVRO")) == [
        ("field-removed-without-default", "$.n")
    ]
    e1 = record({"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A", "B"]}})
    e2 = record({"name": "s", "type": {"type": "enum", "name": "S", "symbols": ["A"]}})
    assert rules(breaks_for_mode("BACKWARD", e2, [(1, e1)], "AVRO")) == [
        ("enum-symbol-removed", "$.s")
    ]
    u1 = record({"name": "x", "type": ["null", "string"], "default": None})
    u2 = record({"name": "x", "type": ["null", "string", "long"], "default": None})
    assert breaks_for_mode("BACKWARD", u2, [(1, u1)], "AVRO") == []
    assert rules(breaks_for_mode("FORWARD", u2, [(1, u1)], "AVRO")) == [("type-changed", "$.x")]

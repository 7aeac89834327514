"""Schemas from event classes: JSON Schema for dataclasses, Structs and pydantic models,
Avro where the type maps (fastavro is the oracle of a valid Avro schema)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from typing import Annotated, Any

import fastavro
import jsonschema
import msgspec
import pydantic
import pytest

import tidings
from tidings.contracts import (
    UnmappableTypeError,
    avro_schema,
    json_schema,
    parse_schema_uri,
    schema_uri,
    subject_for,
)
from tidings.event import version_of


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    qty: int = 1


@tidings.event("contracts.orders.placed", version=2)
@dataclasses.dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: Annotated[float, msgspec.Meta(ge=0)]
    at: dt.datetime
    lines: list[Line]
    note: str | None = None
    tags: dict[str, int] = dataclasses.field(default_factory=dict)


@tidings.event("contracts.payments.made")
class PaymentMade(msgspec.Struct, frozen=True):
    payment_id: str
    cents: int


@tidings.event("contracts.users.joined")
class UserJoined(pydantic.BaseModel):
    user_id: str
    age: int = pydantic.Field(ge=0)


@tidings.event("contracts.odd")
@dataclasses.dataclass(frozen=True)
class Odd:
    anything: Any


@pytest.mark.parametrize("cls", [OrderPlaced, PaymentMade, UserJoined])
def test_json_schema_is_valid_draft_2020_12_and_names_topic_and_version(cls: type) -> None:
    schema = json_schema(cls)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["x-tidings-topic"] == tidings.topic_of(cls)
    assert schema["x-tidings-version"] == version_of(cls)
    assert schema["type"] == "object"


def test_json_schema_accepts_the_classs_own_events_and_refuses_broken_ones() -> None:
    schema = json_schema(OrderPlaced)
    good = OrderPlaced("o1", 5.0, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), [Line("a")])
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(msgspec.to_builtins(good)))
    broken = {**msgspec.to_builtins(good), "amount": -1}
    [error] = validator.iter_errors(broken)
    assert error.validator == "minimum"
    assert json_schema(UserJoined)["properties"]["age"]["minimum"] == 0


def test_avro_schema_round_trips_an_event_through_fastavro() -> None:
    schema = avro_schema(OrderPlaced)
    parsed = fastavro.parse_schema(schema)
    record = {
        "order_id": "o1",
        "amount": 5.0,
        "at": "2026-01-01T00:00:00Z",  # as it travels in JSON
        "lines": [{"sku": "a", "qty": 2}],
        "note": None,
        "tags": {"x": 1},
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, record)
    buffer.seek(0)
    assert fastavro.schemaless_reader(buffer, parsed) == record
    assert schema["namespace"] == "contracts.orders"
    fields = {f["name"]: f for f in schema["fields"]}
    assert fields["note"]["type"] == ["null", "string"]
    assert fields["note"]["default"] is None
    assert fields["at"]["type"] == "string"
    assert avro_schema(PaymentMade)["fields"] == [
        {"name": "payment_id", "type": "string"},
        {"name": "cents", "type": "long"},
    ]
    fastavro.parse_schema(avro_schema(UserJoined))


def test_a_type_with_no_avro_form_is_refused_naming_the_field() -> None:
    with pytest.raises(UnmappableTypeError, match=r"\$\.anything"):
        avro_schema(Odd)


def test_subjects_and_dataschema_uris() -> None:
    assert subject_for("orders.placed") == "orders.placed-value"
    uri = schema_uri("orders.placed", 3)
    assert uri == "tidings:schemas/orders.placed/versions/3"
    assert parse_schema_uri(uri) == ("orders.placed-value", 3)
    assert parse_schema_uri("http://r/subjects/a-value/versions/2") == ("a-value", 2)
    assert parse_schema_uri("https://example.com/schema.json") is None

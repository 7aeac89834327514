"""The payload codec: JSON for dataclasses, Structs, pydantic models and plain values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import msgspec
import pydantic
import pytest

from tidings import codec
from tidings.exceptions import CodecError, DecodeError, EncodeError


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    label: str = ""


class Order(msgspec.Struct, frozen=True):
    order_id: str
    placed_at: dt.datetime
    ref: uuid.UUID


class Customer(pydantic.BaseModel):
    name: str
    tags: list[str] = []


def test_a_dataclass_round_trips() -> None:
    data = codec.encode(Point(1, 2, "a"))
    assert data == b'{"x":1,"y":2,"label":"a"}'
    assert codec.decode(data, Point) == Point(1, 2, "a")


def test_a_struct_with_rich_values_round_trips() -> None:
    order = Order("o1", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), uuid.uuid4())
    assert codec.decode(codec.encode(order), Order) == order


def test_a_pydantic_model_round_trips_through_its_own_methods() -> None:
    customer = Customer(name="Ada", tags=["vip"])
    data = codec.encode(customer)
    assert data == customer.model_dump_json().encode()
    assert codec.decode(data, Customer) == customer
    assert codec.convert({"name": "Bo"}, Customer) == Customer(name="Bo")
    assert codec.is_pydantic_model(Customer)
    assert not codec.is_pydantic_model(Point)
    assert not codec.is_pydantic_model(Customer(name="x"))


@pytest.mark.parametrize("value", [{"a": [1, 2.5, None, True]}, [1, "x"], "text", 7, 2.5, None])
def test_plain_json_values_decode_without_a_type(value: Any) -> None:
    assert codec.decode(codec.encode(value)) == value
    assert codec.decode(codec.encode(value).decode()) == value


def test_convert_builds_a_type_from_plain_values() -> None:
    assert codec.convert({"x": 1, "y": 2}, Point) == Point(1, 2)
    assert codec.convert({"k": 1}) == {"k": 1}


def test_an_unencodable_payload_is_a_typed_error_naming_its_class() -> None:
    with pytest.raises(EncodeError, match="object") as caught:
        codec.encode(object())
    assert caught.value.type_ is object
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, CodecError)
    with pytest.raises(EncodeError, match="Point"):
        codec.encode(Point(1, object(), ""))  # type: ignore[arg-type]


def test_bad_bytes_are_a_typed_error_naming_the_type_and_path() -> None:
    with pytest.raises(DecodeError, match=r"Point.*\$\.y") as caught:
        codec.decode(b'{"x": 1, "y": "two"}', Point)
    assert caught.value.type_name == "Point"
    assert isinstance(caught.value, ValueError)
    with pytest.raises(DecodeError, match="JSON"):
        codec.decode(b"{not json")
    with pytest.raises(DecodeError, match="Customer"):
        codec.decode(b'{"tags": 3}', Customer)
    with pytest.raises(DecodeError, match="Point"):
        codec.convert({"x": "one"}, Point)


def test_codecs_are_built_once_per_type() -> None:
    codec.decode(b'{"x":1,"y":2}', Point)
    first = codec._decoders[Point]
    codec.decode(b'{"x":3,"y":4}', Point)
    assert codec._decoders[Point] is first
    codec.encode(Point(1, 2))
    assert codec._encoders[Point] is codec._encoders[Point]


def test_encoder_is_what_encode_calls_cached_and_raises_the_library_error() -> None:
    @dataclasses.dataclass(frozen=True)
    class Shipped:
        order_id: str

    encode = codec.encoder(Shipped)
    assert encode is codec.encoder(Shipped)
    assert encode(Shipped("o-1")) == codec.encode(Shipped("o-1")) == b'{"order_id":"o-1"}'
    with pytest.raises(TypeError):
        codec.encoder(object)(object())

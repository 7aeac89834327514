"""Event classes, topics, envelopes and the CloudEvents mapping."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import msgspec
import pydantic
import pytest

import tidings
from tidings.cloudevents import from_cloudevent, to_cloudevent
from tidings.event import event_type_for, topic_of, version_of
from tidings.exceptions import EventTypeConflictError, InvalidTopicError, TopicRequiredError


@tidings.event("test.shop.orders.placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float


@dataclass(frozen=True)
class HTTPRequestReceived:
    path: str


class ParcelShipped(msgspec.Struct, frozen=True):
    parcel: str


class Refunded(pydantic.BaseModel):
    order_id: str


def test_decorated_class_keeps_its_topic_and_is_registered() -> None:
    assert topic_of(OrderPlaced) == "test.shop.orders.placed"
    assert event_type_for("test.shop.orders.placed") is OrderPlaced
    assert version_of(OrderPlaced) == 1


def test_default_topic_is_derived_from_the_class_name() -> None:
    assert topic_of(HTTPRequestReceived) == "http_request_received"
    assert topic_of(ParcelShipped) == "parcel_shipped"
    assert topic_of(Refunded) == "refunded"


def test_bare_decorator_and_version() -> None:
    @tidings.event
    @dataclass
    class CartAbandoned:
        cart: str

    @tidings.event("test.shop.carts.merged", version=3)
    @dataclass
    class CartMerged:
        cart: str

    assert topic_of(CartAbandoned) == "cart_abandoned"
    assert version_of(CartMerged) == 3
    with pytest.raises(ValueError, match="positive int"):
        tidings.event("x.y", version=0)


def test_subclass_inherits_topic() -> None:
    @dataclass(frozen=True)
    class BigOrderPlaced(OrderPlaced):
        vip: bool = True

    assert topic_of(BigOrderPlaced) == "test.shop.orders.placed"


def test_bad_topic_in_decorator_names_the_token() -> None:
    with pytest.raises(InvalidTopicError, match="token 2 'or ders'"):
        tidings.event("test.or ders")


def test_two_classes_cannot_share_a_topic() -> None:
    with pytest.raises(EventTypeConflictError, match="already belongs to"):

        @tidings.event("test.shop.orders.placed")
        class Impostor:
            pass


@pytest.mark.parametrize("value", [1, "text", {"a": 1}, [1], 1.5, None])
def test_builtins_name_no_topic(value: object) -> None:
    with pytest.raises(TopicRequiredError, match="names no topic: pass one"):
        topic_of(type(value))


def test_envelope_is_frozen_and_has_a_sortable_id() -> None:
    clock = tidings.HybridClock()
    first = tidings.Envelope("a.b", 1, clock.now(), _node=clock.node)
    second = tidings.Envelope("a.b", 2, clock.now(), _node=clock.node)
    assert len(first.id) == 32
    assert first.id < second.id
    with pytest.raises(AttributeError):
        first.topic = "c"  # type: ignore[misc]
    assert "a.b" in repr(first)


def test_cloudevents_round_trip() -> None:
    bus = tidings.Bus(source="urn:shop")
    envelope = bus.publish(OrderPlaced("o1", 9.5), key="o1", headers={"traceparent": "00-x"})
    ce = to_cloudevent(envelope)
    assert ce["specversion"] == "1.0"
    assert ce["id"] == envelope.id
    assert ce["type"] == "test.shop.orders.placed"
    assert ce["source"] == "urn:shop"
    assert ce["partitionkey"] == "o1"
    assert ce["traceparent"] == "00-x"
    assert ce["hlc"] == str(envelope.time)
    assert ce["data"] == {"order_id": "o1", "amount": 9.5}
    assert ce["time"].endswith("Z")
    back = from_cloudevent(ce)
    assert back.payload == OrderPlaced("o1", 9.5)
    assert (back.id, back.time, back.key, back.source) == (
        envelope.id,
        envelope.time,
        "o1",
        "urn:shop",
    )
    assert dict(back.headers) == {"traceparent": "00-x"}


def test_cloudevent_without_hlc_uses_time_and_unknown_type_stays_json() -> None:
    ce = {
        "specversion": "1.0",
        "id": "abc",
        "type": "some.thing",
        "source": "curl",
        "time": "2026-01-02T03:04:05Z",
        "data": {"x": 1},
    }
    env = from_cloudevent(ce)
    assert env.payload == {"x": 1}
    assert env.id == "abc"
    assert env.datetime.year == 2026


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"id": None}, "required attribute 'id'"),
        ({"specversion": "0.3"}, "'specversion' is '0.3'"),
        ({"hlc": "soon"}, "'hlc' is 'soon'"),
        ({"type": "bad..type"}, "token 2 is empty"),
    ],
)
def test_bad_cloudevents_are_explained(patch: dict[str, object], message: str) -> None:
    ce: dict[str, object] = {"specversion": "1.0", "id": "1", "type": "a.b", "source": "s"}
    for k, v in patch.items():
        if v is None:
            ce.pop(k)
        else:
            ce[k] = v
    with pytest.raises(ValueError, match=message):
        from_cloudevent(ce)


def test_dataclass_payloads_stay_dataclasses() -> None:
    env = tidings.Bus().publish(OrderPlaced("o", 1.0))
    assert dataclasses.is_dataclass(env.payload)

"""Flattened conditions (``data.FIELD`` as variables of their own) decide exactly as the
condition as written, evaluated by the same CEL engine on the whole payload (the oracle)."""

from __future__ import annotations

from typing import Any

import cel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.event import Envelope
from tidings.gateway.config import parse_config
from tidings.gateway.expressions import Condition, compile_condition
from tidings.gateway.table import RouteTable

FLATTENED = {
    'data.amount > 100 && source == "bench"': ("amount",),
    'data.customer.tier == "gold" || data.amount < 3': ("amount", "customer"),
    "data.items.exists(x, x > 2)": ("items",),
    'data.name.startsWith("data.a") && type == "t.x"': ("name",),
    "data.a == data.b": ("a", "b"),
    'data.a + "data.b" == "xdata.b"': ("a",),
}
WHOLE = [
    "size(data) > 2",
    'data["amount"] > 3',
    '"amount" in data',
    "has(data.amount) && data.amount > 1",
    "data.all(k, k != 'x')",
    "[1, 2].exists(data, data > 1) || data.a > 1",
]

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(allow_nan=False)
    | st.sampled_from(["gold", "x", "data.a", "", "xdata.b"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["tier", "amount", "a"]), inner, max_size=3)
    ),
    max_leaves=6,
)
payloads = (
    st.dictionaries(
        st.sampled_from(["amount", "customer", "items", "name", "a", "b", "other"]),
        values,
        max_size=6,
    )
    | values
)


@pytest.mark.parametrize(("text", "fields"), FLATTENED.items())
def test_a_condition_reading_data_fields_only_is_flattened(
    text: str, fields: tuple[str, ...]
) -> None:
    assert compile_condition(text).data_fields == fields


@pytest.mark.parametrize("text", WHOLE)
def test_a_condition_reading_data_otherwise_is_not(text: str) -> None:
    assert compile_condition(text).data_fields is None


def _oracle(text: str, envelope: Envelope[Any]) -> bool | None:
    whole = Condition(text, cel.compile(text), ("data", "source", "type"))
    return whole.evaluate({"data": envelope.payload, "source": envelope.source, "type": "t.x"})


@settings(max_examples=150, deadline=None)
@given(payload=payloads, source=st.sampled_from(["bench", "other"]))
def test_flattened_conditions_decide_as_written(payload: Any, source: str) -> None:
    envelope = Envelope("t.x", payload, 1, source=source, _id="e1")
    for text in [*FLATTENED, *WHOLE]:
        routes = f"routes: [{{name: r, from: t.>, when: {text!r}, to: [{{topic: out}}]}}]\n"
        table = RouteTable.build(parse_config([("g.yaml", routes)]))
        fired = bool(table.route(envelope))
        assert fired == (_oracle(text, envelope) is True), (text, payload)

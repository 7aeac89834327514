"""The route table: conditions, defaults, priorities, sticky splits, redaction."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tidings.event import Envelope
from tidings.gateway import CelError, RouteTable, compile_condition, parse_config
from tidings.gateway.table import VARIANT_HEADER, redact


def table(text: str) -> RouteTable:
    return RouteTable.build(parse_config([("t.yaml", text)]))


def env(topic: str, data: Any, key: str | None = None, **headers: str) -> Envelope[Any]:
    return Envelope(topic, data, 1, key=key, source="s", headers=headers, _id="x")


def test_conditions_see_attributes_extensions_and_comprehension_variables() -> None:
    assert compile_condition("data.items.exists(i, i > 2) && type == 'a'").names == ("data", "type")
    assert compile_condition("extensions['model-version'] == 'v2'").names == ("extensions",)
    assert compile_condition("'nosuch' == source").names == ("source",)  # strings are text
    with pytest.raises(CelError, match="unknown attribute"):
        compile_condition("nosuch.x == 1")
    routes = table(
        "routes:\n"
        "  - {name: v2, from: a, when: \"extensions['model-version'] == 'v2'\", to: []}\n"
        "  - {name: many, from: a, when: 'data.items.exists(i, i > 2)', priority: 5, to: []}\n"
    )
    fired = routes.route(env("a", {"items": [1, 3]}, **{"model-version": "v2"}))
    assert [d.route for d in fired] == ["many", "v2"]  # priority first


def test_defaults_fire_only_when_no_condition_matched_and_failed_conditions_count() -> None:
    routes = table(
        "routes:\n"
        "  - {name: big, from: o.>, when: data.amount > 100, to: [{topic: big}]}\n"
        "  - {name: rest, from: o.>, to: [{topic: rest}]}\n"
        "  - {name: sys, from: '>', when: 'true', to: []}\n"
    )
    assert [d.route for d in routes.route(env("o.x", {"amount": 500}))] == ["big", "sys"]
    assert [d.route for d in routes.route(env("o.x", {"amount": 5}))] == ["sys"]
    assert [d.route for d in routes.route(env("o.x", {"other": 1}))] == ["sys"]
    assert routes.condition_errors == 1  # data.amount is missing: no match, counted
    assert routes.route(env("tidings.gateway.dead_letter", {})) == []  # '>' skips tidings.*
    only = table("routes: [{name: rest, from: o.>, to: [{topic: rest}]}]\n")
    assert [d.route for d in only.route(env("o.x", {}))] == ["rest"]


SPLIT = """\
routes:
  - name: scoring
    from: tx
    split:
      by: {by}
      variants:
        - {{match: v2.4, to: [{{topic: s.v2}}]}}
        - {{name: main, percent: 90, to: [{{topic: s.v1}}]}}
        - {{name: canary, percent: 10, to: [{{topic: s.v2}}]}}
"""


def test_splits_are_sticky_per_value_and_follow_the_percentages() -> None:
    routes = table(SPLIT.format(by="header model-version"))
    pinned = routes.route(env("tx", {}, **{"model-version": "v2.4"}))[0]
    assert pinned.envelope.headers[VARIANT_HEADER] == "v2.4"
    assert [t.address for t in pinned.targets] == ["s.v2"]
    chosen = Counter(
        routes.route(env("tx", {}, **{"model-version": f"u{n}"}))[0].envelope.headers[
            VARIANT_HEADER
        ]
        for n in range(2000)
    )
    assert chosen["main"] + chosen["canary"] == 2000
    assert 100 < chosen["canary"] < 300  # 10 % of 2000, give or take
    again = [
        routes.route(env("tx", {}, **{"model-version": f"u{n}"}))[0].envelope.headers[
            VARIANT_HEADER
        ]
        for n in range(50)
    ]
    rebuilt = table(SPLIT.format(by="header model-version"))
    assert again == [
        rebuilt.route(env("tx", {}, **{"model-version": f"u{n}"}))[0].envelope.headers[
            VARIANT_HEADER
        ]
        for n in range(50)
    ]  # a stable hash, not hash(): the same in another table (and process)
    by_key = table(
        SPLIT.replace("        - {{match: v2.4, to: [{{topic: s.v2}}]}}\n", "").format(by="key")
    )
    first = by_key.route(env("tx", {}, key="customer-7"))[0].envelope.headers[VARIANT_HEADER]
    assert all(
        by_key.route(env("tx", {}, key="customer-7"))[0].envelope.headers[VARIANT_HEADER] == first
        for _ in range(20)
    )


def test_a_dispatch_says_whether_every_target_is_a_topic_split_variants_included() -> None:
    routes = table(
        "routes:\n"
        "  - {name: t, from: a, to: [{topic: x}, {topic: y}]}\n"
        "  - {name: w, from: b, to: [{topic: x}, {webhook: 'http://h/'}]}\n"
        "  - name: s\n"
        "    from: c\n"
        "    to: [{topic: x}]\n"
        "    split:\n"
        "      by: header v\n"
        "      variants:\n"
        "        - {match: one, to: [{topic: y}]}\n"
        "        - {match: two, to: [{webhook: 'http://h/'}]}\n"
    )
    assert routes.route(env("a", {}))[0].topics_only
    assert not routes.route(env("b", {}))[0].topics_only
    assert routes.route(env("c", {}, v="one"))[0].topics_only
    assert not routes.route(env("c", {}, v="two"))[0].topics_only
    assert routes.route(env("c", {}, v="other"))[0].topics_only  # no variant: its own targets


def test_redaction_removes_or_masks_nested_fields_and_leaves_the_original() -> None:
    data = {"card": "4111", "customer": {"email": "a@b", "name": "A"}, "n": 1}
    assert redact(data, (("card",), ("customer", "email"), ("missing", "x")), False) == {
        "customer": {"name": "A"},
        "n": 1,
    }
    assert redact(data, (("card",),), True)["card"] == "***"
    assert data == {"card": "4111", "customer": {"email": "a@b", "name": "A"}, "n": 1}
    assert redact([1, 2], (("card",),), False) == [1, 2]

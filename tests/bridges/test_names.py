"""Broker names for bus topics and patterns (tidings.bridges.names), against the brokers'
own rules: paho-mqtt's filter matcher for MQTT, and round trips both ways.

MQTT and the bus differ in one place only, stated here exactly: a final ``#`` also matches
its parent level (``a/#`` takes ``a``), which ``a.>`` does not.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from tidings.bridges.names import (
    from_mqtt_filter,
    from_mqtt_topic,
    to_binding_key,
    to_mqtt_filter,
    to_mqtt_topic,
)
from tidings.exceptions import InvalidTopicError
from tidings.topics import compile_pattern

TOKENS = st.sampled_from(("a", "b", "c-1", "D_2"))  # "tidings" left out: internal topics
topics = st.lists(TOKENS, min_size=1, max_size=4).map(".".join)
patterns = st.builds(
    lambda tokens, tail: ".".join([*tokens, ">"] if tail else tokens) or ">",
    st.lists(st.one_of(TOKENS, st.just("*")), min_size=0, max_size=4),
    st.booleans(),
)


@given(topics)
def test_a_topic_goes_to_mqtt_and_back_unchanged(topic: str) -> None:
    assert from_mqtt_topic(to_mqtt_topic(topic)) == topic
    assert "." not in to_mqtt_topic(topic)


@given(patterns)
def test_a_pattern_goes_to_an_mqtt_filter_and_back_unchanged(pattern: str) -> None:
    assert from_mqtt_filter(to_mqtt_filter(pattern)) == pattern


@given(patterns, topics)
def test_the_mqtt_filter_matches_what_the_pattern_matches_and_its_parent_level(
    pattern: str, topic: str
) -> None:
    on_the_bus = compile_pattern(pattern)(topic)
    on_mqtt = topic_matches_sub(to_mqtt_filter(pattern), to_mqtt_topic(topic))
    tokens, levels = pattern.split("."), topic.split(".")
    parent = (
        tokens[-1] == ">"
        and len(levels) == len(tokens) - 1
        and compile_pattern(".".join(tokens[:-1]) or ">")(topic)
    )
    assert on_mqtt == (on_the_bus or parent)


@given(patterns)
def test_a_binding_key_is_the_pattern_with_hash_for_the_rest(pattern: str) -> None:
    key = to_binding_key(pattern)
    assert key.split(".") == ["#" if t == ">" else t for t in pattern.split(".")]


@pytest.mark.parametrize("name", ["", "a..b", "a.>.b", "a b"])
def test_malformed_bus_names_are_refused_on_the_way_out(name: str) -> None:
    with pytest.raises(InvalidTopicError):
        to_mqtt_filter(name)
    with pytest.raises(InvalidTopicError):
        to_binding_key(name)

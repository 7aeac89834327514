"""Topic validation and NATS-style pattern matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings import Bus
from tidings.exceptions import InvalidTopicError
from tidings.topics import compile_pattern, is_pattern, matches, validate_pattern, validate_topic


@pytest.mark.parametrize("topic", ["orders", "orders.placed", "a.b-c.d_e.F9", "x" * 255])
def test_valid_topics_pass_unchanged(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "token", "fragment"),
    [
        ("orders..placed", "", "token 2 is empty"),
        (".orders", "", "token 1 is empty"),
        ("orders.", "", "token 2 is empty"),
        ("orders.pla ced", "pla ced", "token 2 'pla ced' is not allowed"),
        ("orders.*", "*", "wildcard, allowed in subscription patterns only"),
        ("orders.>", ">", "wildcard, allowed in subscription patterns only"),
        ("orders.plac*", "plac*", "must stand alone as a whole token"),
        ("ordres.é", "é", "token 2 'é' is not allowed"),
    ],
)
def test_invalid_topics_name_the_bad_token(topic: str, token: str, fragment: str) -> None:
    with pytest.raises(InvalidTopicError) as info:
        validate_topic(topic)
    assert fragment in str(info.value)
    assert info.value.token == token
    assert info.value.topic == topic


def test_empty_long_and_non_str_topics_are_rejected() -> None:
    with pytest.raises(InvalidTopicError, match="empty"):
        validate_topic("")
    with pytest.raises(InvalidTopicError, match="256 characters long"):
        validate_topic("x" * 256)
    with pytest.raises(InvalidTopicError, match="must be a str, not int"):
        validate_topic(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidTopicError, match="must be a str, not list"):
        validate_topic(["orders"])  # type: ignore[arg-type]  # unhashable: not a TypeError


def test_patterns_must_be_strings() -> None:
    for check in (validate_pattern, compile_pattern):
        with pytest.raises(InvalidTopicError, match="pattern must be a str, not list"):
            check(["orders", ">"])  # type: ignore[arg-type]


def test_publish_names_a_bad_topic_whatever_its_type() -> None:
    bus = Bus()
    for topic, match in (("bad..topic", "token 2 is empty"), (["x"], "must be a str, not list")):
        with pytest.raises(InvalidTopicError, match=match):
            bus.publish(1, topic=topic)  # type: ignore[arg-type]
        with pytest.raises(InvalidTopicError, match=match):
            bus.publish(1, topic=topic)  # type: ignore[arg-type]  # nothing cached the first time


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("orders.>.placed", "'>' matches the rest of a topic, so it may only be the last token"),
        ("orders.**", "must stand alone"),
        ("orders..*", "token 2 is empty"),
        ("or>ders", "must stand alone"),
    ],
)
def test_invalid_patterns_are_explained(pattern: str, fragment: str) -> None:
    with pytest.raises(InvalidTopicError, match=fragment.replace("*", r"\*")):
        validate_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders.placed", "orders.placed", True),
        ("orders.placed", "orders.placedx", False),
        ("orders.*", "orders.placed", True),
        ("orders.*", "orders", False),
        ("orders.*", "orders.eu.placed", False),
        ("orders.>", "orders.placed", True),
        ("orders.>", "orders.eu.placed", True),
        ("orders.>", "orders", False),
        ("*.placed", "orders.placed", True),
        ("*.placed", "orders.shipped", False),
        (">", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("a.*.c.>", "a.b.c.d.e", True),
        ("a.*.c.>", "a.b.c", False),
    ],
)
def test_matching(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


def test_is_pattern() -> None:
    assert is_pattern("a.*")
    assert is_pattern(">")
    assert not is_pattern("a.b")


def _reference_match(pattern: str, topic: str) -> bool:
    """A deliberately naive recursive matcher to check the real one against."""
    p, t = pattern.split("."), topic.split(".")

    def go(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(t)
        if p[i] == ">":
            return j < len(t)
        if j == len(t):
            return False
        return (p[i] == "*" or p[i] == t[j]) and go(i + 1, j + 1)

    if p[0] in ("*", ">") and t[0] == "tidings":  # internal topics: no leading wildcard
        return False
    return go(0, 0)


_tokens = st.sampled_from(["a", "b", "c", "orders", "x-1", "tidings"])
_topics = st.lists(_tokens, min_size=1, max_size=5).map(".".join)
_pattern_tokens = st.lists(st.sampled_from(["a", "b", "c", "*", "tidings"]), min_size=0, max_size=5)


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    tokens = draw(_pattern_tokens)
    if draw(st.booleans()) or not tokens:
        tokens = [*tokens, ">"]
    return ".".join(tokens)


@given(pattern=_patterns(), topic=_topics)
def test_matcher_agrees_with_reference(pattern: str, topic: str) -> None:
    assert compile_pattern(pattern)(topic) == _reference_match(pattern, topic)


@given(topic=_topics)
def test_a_topic_matches_itself_and_the_catch_all_unless_internal(topic: str) -> None:
    assert matches(topic, topic)
    assert matches(">", topic) is (topic.split(".")[0] != "tidings")


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        (">", "tidings.dead_letter", False),
        ("*.dead_letter", "tidings.dead_letter", False),
        ("*.>", "tidings.gateway.connected", False),
        ("*", "tidings", False),
        ("tidings.>", "tidings.dead_letter", True),
        ("tidings.*", "tidings.dead_letter", True),
        ("tidings.dead_letter", "tidings.dead_letter", True),
        ("tidings.gateway.>", "tidings.gateway.connected", True),
        (">", "orders.tidings", True),
        ("*.tidings", "orders.tidings", True),
        (">", "tidingsx.a", True),
    ],
)
def test_a_leading_wildcard_does_not_match_an_internal_topic(
    pattern: str, topic: str, expected: bool
) -> None:
    assert matches(pattern, topic) is expected


def _follows_the_rules(text: str, wildcards: bool) -> bool:
    """The rules of the module docstring, token by token (the slow way)."""
    tokens = text.split(".")
    if not text or len(text) > 255:
        return False
    for index, token in enumerate(tokens):
        if wildcards and (token == "*" or (token == ">" and index == len(tokens) - 1)):
            continue
        if not token or any(c not in "abAZ09_-" for c in token):
            return False
    return True


@given(st.text(alphabet="ab.*>-_ é\n", max_size=12))
def test_validation_accepts_exactly_what_the_rules_allow(text: str) -> None:
    for wildcards, validate in ((False, validate_topic), (True, validate_pattern)):
        try:
            validate(text)
        except InvalidTopicError:
            assert not _follows_the_rules(text, wildcards), text
        else:
            assert _follows_the_rules(text, wildcards), text

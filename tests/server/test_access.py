"""API tokens and the per-token rate limit (tidings.server.access): constant-time comparison,
scopes against a brute-force oracle, the token bucket; and a subscribe scope over HTTP."""

from __future__ import annotations

import hmac
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.gateway.config import RateLimitConfig, TokenConfig
from tidings.server.access import ANONYMOUS, Access, Caller, TokenBucket
from tidings.topics import compile_pattern

from .conftest import service

TOKENS = (
    TokenConfig("shop", "T_SHOP", publish=("orders.>",), subscribe=("orders.*",)),
    TokenConfig("audit", "T_AUDIT", publish=(), subscribe=(">",)),
    TokenConfig("ops", "T_OPS"),
)


@pytest.fixture
def access(monkeypatch: pytest.MonkeyPatch) -> Access:
    for env, secret in (("T_SHOP", "s-shop"), ("T_AUDIT", "s-audit"), ("T_OPS", "s-ops")):
        monkeypatch.setenv(env, secret)
    return Access(TOKENS, None)


@pytest.mark.parametrize(
    ("authorization", "name"),
    [
        ("Bearer s-shop", "shop"),  # the first secret
        ("Bearer s-ops", "ops"),  # the last
        ("bearer  s-audit ", "audit"),  # scheme in any case, spaces around the secret
        ("Bearer s-shop-and-more", None),  # a longer secret sharing a prefix
        ("Bearer ", None),
        ("Basic s-shop", None),
        (None, None),
    ],
)
def test_every_secret_is_compared_in_constant_time_whichever_matches(
    access: Access, monkeypatch: pytest.MonkeyPatch, authorization: str | None, name: str | None
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    caller = access.identify(authorization)
    assert (caller.name if caller is not None else None) == name
    bearer = authorization is not None and authorization.lower().startswith("bearer ")
    # a bearer token is compared with all three secrets, not stopping at a match; no
    # bearer token is refused before any comparison
    assert len(compared) == (3 if bearer else 0)
    assert {a for a, _ in compared} == ({b"s-shop", b"s-audit", b"s-ops"} if bearer else set())


def test_scopes_are_topic_patterns(access: Access) -> None:
    shop = access.identify("Bearer s-shop")
    audit = access.identify("Bearer s-audit")
    assert shop is not None
    assert audit is not None
    assert shop.may_publish("orders.placed")
    assert shop.may_publish("orders.eu.placed")
    assert not shop.may_publish("users.new")
    assert shop.may_subscribe("orders.placed")
    assert shop.may_subscribe("orders.*")
    assert not shop.may_subscribe("orders.>")
    assert not shop.may_subscribe(">")
    assert not audit.may_publish("orders.placed")
    assert audit.may_subscribe("orders.>")
    assert audit.may_subscribe(">")


def test_without_tokens_every_request_is_anonymous_with_every_scope() -> None:
    open_access = Access((), None)
    assert open_access.open
    assert open_access.identify(None) is ANONYMOUS
    assert open_access.identify("Bearer anything") is ANONYMOUS
    assert ANONYMOUS.may_publish("x.y")
    assert ANONYMOUS.may_subscribe(">")


def test_a_token_whose_variable_is_unset_is_an_error_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("T_UNSET", raising=False)
    with pytest.raises(ValueError, match=r"token .ci. .* T_UNSET, which is not set"):
        Access((TokenConfig("ci", "T_UNSET"),), None)


def test_the_bucket_lets_a_burst_through_then_says_how_long_to_wait() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token comes every 1/rate s
    now[0] += 0.5
    assert bucket.take() == 0.0
    assert bucket.take(2) == pytest.approx(1.0)
    now[0] += 10  # idle: the bucket refills to its burst, no more
    assert bucket.take(3) == 0.0
    assert bucket.take(5) == pytest.approx(1.5)  # more than a burst: waits for a full one


def test_each_token_has_its_own_bucket(access: Access) -> None:
    limited = Access(TOKENS, RateLimitConfig(rate=1, burst=2))
    shop, ops = limited.identify("Bearer s-shop"), limited.identify("Bearer s-ops")
    assert shop is not None
    assert ops is not None
    assert [limited.throttle(shop, 1) for _ in range(2)] == [0.0, 0.0]
    assert limited.throttle(shop, 1) > 0
    assert limited.throttle(ops, 2) == 0.0  # another token's budget is untouched
    assert access.throttle(shop, 1000) == 0.0  # no rate_limit: never throttled


# -- subscribe scopes against a brute force ---------------------------------------------------

UNIVERSE = [
    ".".join(tokens)
    for length in range(1, 6)
    for tokens in itertools.product(("a", "b", "c"), repeat=length)
]
scope_patterns = st.builds(
    lambda tokens, tail: ".".join([*tokens, ">"] if tail else tokens) or ">",
    st.lists(st.sampled_from(("a", "b", "*")), min_size=0, max_size=3),
    st.booleans(),
)


@given(scope_patterns, scope_patterns)
def test_a_scope_covers_a_pattern_exactly_when_it_matches_every_topic_the_pattern_does(
    scope: str, pattern: str
) -> None:
    caller = Caller("t", (), (compile_pattern(scope),))
    wanted = compile_pattern(pattern)
    covered = all(compile_pattern(scope)(t) for t in UNIVERSE if wanted(t))
    assert caller.may_subscribe(pattern) == covered


async def test_a_one_token_scope_cannot_stream_every_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_SHOP", "s-shop")
    config = (
        "http:\n  tokens: [{name: shop, token_env: T_SHOP, subscribe: ['orders.*']}]\nroutes: []\n"
    )
    async with service(tmp_path, config, authorization="Bearer s-shop") as svc:
        deeper = await svc.client.get("/events", params={"topic": "orders.>"})
        everything = await svc.client.get("/events", params={"topic": ">"})
    assert (deeper.status_code, everything.status_code) == (403, 403)
    assert "'orders.>'" in deeper.json()["detail"]

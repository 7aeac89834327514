"""The route table: trie plus bounded cache against a brute-force matcher, eviction bounds,
precise invalidation, exact statistics across eviction, and no stale route under threads."""

from __future__ import annotations

import gc
import sys
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import tidings
from tidings.routing import Route, RouteTable, subscription_order
from tidings.subscription import Subscription


@tidings.event("rtq.a")
@dataclass(frozen=True)
class Base:
    n: int = 0


@dataclass(frozen=True)
class Child(Base):
    """Published on its parent's topic, ``rtq.a``."""


@tidings.event("rtq.b")
@dataclass(frozen=True)
class Other:
    n: int = 0


TOKENS = ("rtq", "a", "b", "tidings")  # "tidings" first: an internal topic
TYPES: tuple[type, ...] = (Base, Child, Other)


def _handler(event: object) -> None:
    pass


def _subscription(target: type | str, priority: float = 0) -> Subscription[Any]:
    return Subscription(
        None,
        target,
        _handler,
        priority=priority,
        where=None,
        once=False,
        weak=False,
        owner=None,
        envelope=None,
        mode=None,
    )


def brute_force(subs: list[Subscription[Any]], event_type: type, topic: str) -> list[Any]:
    """What main's routing did: test every subscription, in dispatch order."""
    ordered = sorted(subs, key=subscription_order)
    return [s for s in ordered if s.active and s.matches(topic, event_type)]


topics = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=3).map(".".join)
patterns = st.builds(
    lambda tokens, tail: ".".join([*tokens, ">"] if tail else tokens) or ">",
    st.lists(st.sampled_from((*TOKENS, "*")), min_size=0, max_size=3),
    st.booleans(),
)
targets = st.one_of(patterns, st.sampled_from(TYPES))


class TrieAndCacheAgainstBruteForce(RuleBasedStateMachine):
    """Random subscribe / cancel / route: the table's routes are exactly the brute force's
    (same subscriptions, same order), with a cache small enough to evict all the time."""

    subscriptions = Bundle("subscriptions")

    def __init__(self) -> None:
        super().__init__()
        self.size = 3
        self.table = RouteTable(self.size)
        self.subs: list[Subscription[Any]] = []

    @rule(target=subscriptions, what=targets, priority=st.sampled_from((0, 0, 1, -1, 2.5)))
    def subscribe(self, what: type | str, priority: float) -> Subscription[Any]:
        sub = _subscription(what, priority)
        self.table.add(sub)
        self.subs.append(sub)
        return sub

    @rule(sub=consumes(subscriptions))
    def cancel(self, sub: Subscription[Any]) -> None:
        sub.active = False
        assert self.table.remove(sub)
        assert not self.table.remove(sub)  # a second removal changes nothing
        self.subs.remove(sub)

    @rule(event_type=st.sampled_from(TYPES), topic=st.one_of(st.none(), topics))
    def route(self, event_type: type, topic: str | None) -> None:
        route = self.table.route(event_type, topic)
        expected = brute_force(self.subs, event_type, topic or tidings.topic_of(event_type))
        assert list(route.subs) == expected
        assert self.table.route(event_type, topic).subs == route.subs  # cached or rebuilt

    @invariant()
    def cache_is_bounded(self) -> None:
        assert self.table.cached <= self.size

    @invariant()
    def table_lists_the_subscriptions_in_order(self) -> None:
        assert list(self.table.subscriptions()) == self.subs


TrieAndCacheAgainstBruteForce.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTrieAndCacheAgainstBruteForce = TrieAndCacheAgainstBruteForce.TestCase


def test_a_bus_dispatches_in_priority_then_subscription_order_across_patterns() -> None:
    bus = tidings.Bus(route_cache_size=2)
    calls: list[str] = []
    for name, target, priority in (
        ("gt", "rtq.>", 0),
        ("class", Base, 0),
        ("star-high", "rtq.*", 5),
        ("literal", "rtq.a", 0),
        ("star", "*.a", 0),
        ("other", "rtq.b", 9),
    ):
        bus.subscribe(target, lambda e, name=name: calls.append(name), priority=priority)
    for n in range(3):  # evicted and rebuilt in between: same order each time
        bus.publish(Child(n))
        bus.publish(Other(n), topic=f"rtq.x{n}")
        assert calls == ["star-high", "gt", "class", "literal", "star", "star-high", "gt"]
        calls.clear()


def test_the_cache_stays_within_its_size_over_20000_distinct_topics() -> None:
    table = RouteTable(64)
    table.add(_subscription("dev.*.telemetry"))
    table.add(_subscription("dev.>"))
    for i in range(20_000):
        route = table.route(Other, f"dev.d{i}.telemetry")
        assert len(route.subs) == 2
        assert table.cached <= 64
    assert table.cached == 64


def test_a_bus_publishing_to_20000_distinct_topics_keeps_its_cache_size() -> None:
    bus = tidings.Bus(route_cache_size=100)
    hits = [0]

    def count(event: object) -> None:
        hits[0] += 1

    sub = bus.subscribe("dev.>", count)
    for i in range(20_000):
        bus.publish(Other(i), topic=f"dev.d{i}")
    assert hits[0] == 20_000
    assert sub.delivered == 20_000  # route counters of evicted routes folded exactly
    assert bus.statistics().delivered == 20_000


def test_a_literal_change_drops_exactly_its_topics_routes() -> None:
    table = RouteTable()
    table.add(_subscription("rtq.a"))
    a, b, typed = (
        table.route(Other, "rtq.a"),
        table.route(Other, "rtq.b"),
        table.route(Base, None),
    )
    table.add(_subscription("rtq.b"))
    assert table.route(Other, "rtq.a") is a  # untouched
    assert table.route(Base, None) is typed
    assert table.route(Other, "rtq.b") is not b  # rebuilt, with the new subscription
    assert len(table.route(Other, "rtq.b").subs) == 1
    table.add(_subscription(Base))  # a class subscription sits at its topic, rtq.a
    assert table.route(Other, "rtq.b").subs == table.route(Other, "rtq.b").subs
    assert table.route(Other, "rtq.a") is not a
    assert table.route(Base, None) is not typed
    assert len(table.route(Base, None).subs) == 2
    assert len(table.route(Other, "rtq.a").subs) == 1  # Other is no Base


def test_a_wildcard_change_drops_the_cached_topics_it_matches_only() -> None:
    table = RouteTable()
    routes = {t: table.route(Other, t) for t in ("x.a", "x.b", "x.a.b", "y.a")}
    star = _subscription("x.*")
    table.add(star)
    assert table.route(Other, "x.a") is not routes["x.a"]
    assert table.route(Other, "x.b") is not routes["x.b"]
    assert table.route(Other, "x.a.b") is routes["x.a.b"]
    assert table.route(Other, "y.a") is routes["y.a"]
    kept = table.route(Other, "x.a")
    star.active = False
    table.remove(star)
    assert table.route(Other, "x.a") is not kept
    assert table.route(Other, "x.a").subs == ()
    assert table.route(Other, "x.a.b") is routes["x.a.b"]


def test_release_drops_every_route_and_later_routes_skip_the_released() -> None:
    table = RouteTable()
    gone = _subscription("rtq.a")
    table.add(gone)
    before = table.route(Other, "rtq.a")
    gone.active = False  # as Subscription._owner_gone does before the bus releases it
    table.release(gone)
    assert table.cached == 0
    assert table.route(Other, "rtq.a") is not before
    assert table.route(Other, "rtq.a").subs == ()
    assert table.remove(gone)


def test_route_cache_size_is_checked() -> None:
    with pytest.raises(TypeError, match="route_cache_size"):
        tidings.Bus(route_cache_size="4096")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        tidings.Bus(route_cache_size=0)
    tidings.Bus(route_cache_size=1).publish(Other(1))


def test_statistics_stay_exact_while_routes_are_evicted_and_held() -> None:
    bus = tidings.Bus(route_cache_size=2)
    hits = [0]

    def count(event: object) -> None:
        hits[0] += 1

    fast = bus.subscribe("rtq.>", count)
    held: list[Route] = []
    for i in range(500):
        bus.publish(Other(i), topic=f"rtq.t{i % 7}")
        if i % 50 == 0:  # a route kept alive past its eviction, as an in-flight dispatch does
            held.append(bus._route(Other, f"rtq.t{i % 7}"))
    assert fast.delivered == hits[0] == 500
    for route in held:
        next(route.count)  # a dispatch through an evicted route still counts
    assert fast.delivered == 500 + len(held)
    held.clear()
    gc.collect()
    bus.publish(Other(0), topic="rtq.last")  # folds the freed routes' counters
    assert fast.delivered == 501 + 10
    assert bus.statistics().delivered == 511


def test_no_stale_route_while_threads_publish_and_another_subscribes_and_cancels() -> None:
    """Threads publish (missing the 4-route cache all the time) while the main thread
    subscribes and cancels: a publish that starts after cancel() returned never reaches the
    cancelled handler, and one after subscribe() returned always reaches the new one."""
    bus = tidings.Bus(route_cache_size=4)
    epoch = [0]  # 2i+1 once subscription i is in, 2i+2 once it is cancelled
    stop = threading.Event()
    errors: list[str] = []
    published = [0] * 3

    def publisher(index: int) -> None:
        n = 0
        while not stop.is_set() and n < 200_000:
            bus.publish(Other(epoch[0]), topic=f"live.t{n % 9}")
            n += 1
        published[index] = n

    def handler_for(i: int) -> Any:
        def handler(event: Other) -> None:
            if event.n >= 2 * i + 2:
                errors.append(f"subscription {i} got an event published in epoch {event.n}")

        return handler

    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: more interleavings
    for thread in threads:
        thread.start()
    try:
        for i in range(300):
            pattern = ("live.t3", "live.*", "live.>", "*.t3")[i % 4]
            got: list[object] = []
            sub = bus.subscribe(pattern, handler_for(i))
            probe = bus.subscribe(pattern, got.append, where=lambda e: e.n < 0)  # main's only
            epoch[0] = 2 * i + 1
            bus.publish(Other(-1), topic="live.t3")
            assert len(got) == 1, "a publish after subscribe() returned missed the handler"
            sub.cancel()
            probe.cancel()
            epoch[0] = 2 * i + 2
            bus.publish(Other(-2), topic="live.t3")
            assert len(got) == 1, "a publish after cancel() returned reached the handler"
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert all(n > 0 for n in published)
    assert bus.subscriptions() == ()


def test_a_route_built_across_a_subscribe_is_not_cached() -> None:
    """The generation check, made deterministic: another thread's subscribe lands between
    a build's trie walk and its insert (here: while the build compiles the leaf it found)."""
    table = RouteTable()
    first = _subscription("rtq.a")
    table.add(first)
    late = _subscription("rtq.*")
    compile_leaf = table._compile_leaf

    def compile_then_subscribe(leaf: Any, event_type: type, generation: int) -> Any:
        del table._compile_leaf  # once
        table.add(late)
        return compile_leaf(leaf, event_type, generation)

    table._compile_leaf = compile_then_subscribe  # type: ignore[method-assign]
    assert table.route(Other, "rtq.a").subs == (first,)  # its publish started before
    assert table.cached == 0
    assert table.route(Other, "rtq.a").subs == (first, late)  # not cached: rebuilt


class _ChangingAsItInserts(dict[Any, Route]):
    """A route cache that runs ``change`` once, as a build inserts its route (the build
    takes no lock: a change may land between its generation check and its insert)."""

    def __init__(self, change: Any) -> None:
        super().__init__()
        self.change = change

    def __setitem__(self, key: Any, route: Route) -> None:
        change, self.change = self.change, None
        if change is not None:
            change()
        super().__setitem__(key, route)


def test_a_route_inserted_while_its_subscription_is_released_is_dropped() -> None:
    """The check after the insert: the owner of a routed subscription is collected (release,
    lock-free) between a build's generation check and its insert."""
    table = RouteTable()
    gone = _subscription("rtq.a")
    table.add(gone)

    def release() -> None:
        gone.active = False
        table.release(gone)

    table.by_topic = _ChangingAsItInserts(release)
    assert table.route(Other, "rtq.a").subs == (gone,)  # built before the release
    assert table.cached == 0
    assert table.route(Other, "rtq.a").subs == ()


@pytest.mark.parametrize("late", ["rtq.a", "rtq.*", "rtq.>", ">"])
def test_a_route_inserted_while_a_subscribe_lands_is_dropped(late: str) -> None:
    """A subscribe (literal or wildcard) made entirely between a build's generation check
    and its insert: the build's check after the insert sees it, so the route that missed
    the new subscription is not left cached."""
    table = RouteTable()
    first = _subscription("rtq.a")
    table.add(first)
    added = _subscription(late)
    table.by_topic = _ChangingAsItInserts(lambda: table.add(added))
    assert table.route(Other, "rtq.a").subs == (first,)  # built before the subscribe
    assert table.cached == 0
    assert table.route(Other, "rtq.a").subs == (first, added)


def test_a_change_drops_the_routes_of_every_event_class_on_its_topic() -> None:
    """The routes of one topic for several event classes (``topic=``) and of a class on its
    own topic are all dropped by a literal and by a wildcard change, none other."""
    table = RouteTable()
    on_a = {cls: table.route(cls, "rtq.a") for cls in TYPES}
    typed = table.route(Base, None)  # Base's own topic: rtq.a
    other = table.route(Other, None)  # rtq.b
    elsewhere = table.route(Other, "rtq.b.c")
    table.add(_subscription("rtq.a"))
    assert all(table.route(cls, "rtq.a") is not on_a[cls] for cls in TYPES)
    assert all(len(table.route(cls, "rtq.a").subs) == 1 for cls in TYPES)
    assert table.route(Base, None) is not typed
    assert table.route(Other, None) is other
    assert table.route(Other, "rtq.b.c") is elsewhere
    kept = {cls: table.route(cls, "rtq.a") for cls in TYPES}
    typed = table.route(Base, None)
    table.add(_subscription("*.a"))
    assert all(len(table.route(cls, "rtq.a").subs) == 2 for cls in TYPES)
    assert all(table.route(cls, "rtq.a") is not kept[cls] for cls in TYPES)
    assert table.route(Base, None) is not typed
    assert len(table.route(Base, None).subs) == 2
    assert table.route(Other, None) is other
    assert table.route(Other, "rtq.b.c") is elsewhere


@pytest.mark.parametrize(
    "topic",
    [
        *("", "a..b", ".a", "a.", "a.*", "a.>", "*", "a b", "a.é", "x" * 256, 7, None.__class__),
        # tokens reached through literal, ``*`` and ``>`` nodes before and after the bad one
        *("a.b.", "a.b..c", "a.*.c", "a.b.*", "a.b.>", "a.x y.c", "a.b.c d", "a.é.c", "b.."),
        *("tidings.*", "tidings..x", "tidings.x.", "a.b.c.", ".", "a.b\n", "a.\x00.c"),
    ],
)
def test_an_invalid_topic_raises_on_every_path_and_is_never_cached(topic: Any) -> None:
    """route() and build() (the bus's path after a cache miss) both refuse a bad topic with
    the typed error, whether or not the trie has nodes its tokens would reach, and cache
    nothing; a bus refuses it on every publish."""
    table = RouteTable()
    for pattern in ("a.*", "a.>", "*", ">", "a.b", "a.*.c", "a.b.c", "tidings.x", "tidings.*"):
        table.add(_subscription(pattern))
    for _ in range(2):
        with pytest.raises(tidings.InvalidTopicError):
            table.route(Other, topic)
        with pytest.raises(tidings.InvalidTopicError):
            table.build(Other, topic)
    assert table.cached == 0
    bus = tidings.Bus()
    bus.subscribe(">", _handler)
    bus.publish(Other(), topic="a.b")  # a valid topic: cached
    for _ in range(2):
        with pytest.raises(tidings.InvalidTopicError):
            bus.publish(Other(), topic=topic)

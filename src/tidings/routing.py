"""The route table: which subscriptions an event of a given class on a given topic goes to.

A :class:`Route` is the precomputed handler table of one (topic, event class). The
:class:`RouteTable` finds routes through a *subject trie* and keeps the ones in use in a
bounded *route cache* in front of it:

- **Trie.** Each subscription sits at the node its pattern spells, one node per token:
  literal tokens, ``*`` and ``>`` nodes; a class subscription at its class's topic. Matching
  a topic walks its tokens (the literal child, the ``*`` child, and the subscriptions of a
  ``>`` child at each level), so it costs O(topic depth), not O(subscriptions). An
  internal topic (first token ``tidings``, see :mod:`tidings.topics`) is walked from the
  root's literal child only: no leading wildcard matches it. Class
  subscriptions are then kept only for subclasses of their class, as
  :meth:`Subscription.matches <tidings.Subscription.matches>` says.
- **Order.** A route lists its subscriptions by priority, higher first, ties in
  subscription order (the subscription's id, a process-wide sequence number).
- **Cache.** Built routes are kept in two dicts that the bus reads without a lock:
  :attr:`RouteTable.by_type` (events published on their class's topic) and
  :attr:`RouteTable.by_topic` (``(topic, event class)``). Together they hold at most
  ``size`` routes; inserting past that evicts the oldest. Publishing to millions of
  distinct topics therefore keeps memory flat.
- **Cheap changes.** Subscribing and cancelling touch the subscription's trie path and
  the cached routes it matches: a literal pattern drops exactly its topic's routes, a
  wildcard the cached topics it matches. No other route is rebuilt.

Guarantees and invariants:

- **Replaced, never mutated.** A route is immutable once built: a dispatch keeps working
  on the subscriptions its route had when it started. A cache hit is one ``dict.get``.
- **No stale route.** Every change (add, remove, :meth:`RouteTable.drop_all`) is made
  under the table's lock: the trie first, then the cached routes it affects, then a new
  *generation* (a unique number from an atomic counter) is published. A route is built
  from a lock-free trie walk that starts by reading the generation; it is cached, under
  the lock, only if the generation is still the one it started from, and it is dropped
  again if the generation moved while it was being inserted. So a route that missed a
  change (or saw half of one) is never cached after that change returned, even while other
  threads build routes. A route built from a moved generation still serves the publish
  that built it: that publish started before the change returned.
- **Lock-free release.** :meth:`RouteTable.release` (a subscription's owner was collected:
  called from a weakref callback, possibly inside this thread's locked code) takes no lock:
  the subscription is already inactive, so routes built from now on skip it; release
  publishes a new generation and empties both cache dicts in place. The subscription stays
  in the trie until the owner of the table removes it in ordinary code.
- **Exact statistics.** A route whose subscriptions are all plain counts its dispatches
  once: a route of one subscription in that subscription's own delivery counter, a route
  of several in a route counter that each subscription adds to its ``delivered``. When the route
  is freed (evicted, dropped, or no longer held by any dispatch) it hands its counter to a
  queue; the table folds queued counters into the subscriptions' own counts at its next
  change or build, in ordinary code. Until folded a counter is still summed by the
  subscriptions, so no dispatch is lost or counted twice, and freeing a route anywhere
  (even from the garbage collector inside a locked section) takes no lock.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Final

from tidings.event import topic_of
from tidings.subscription import INLINE, TASK, Subscription, route_counters
from tidings.topics import INTERNAL_TOKEN, compile_pattern, validate_topic

__all__ = ("DEFAULT_ROUTE_CACHE_SIZE", "Route", "RouteTable", "subscription_order")

DEFAULT_ROUTE_CACHE_SIZE = 4096
"""How many routes a bus keeps by default (``Bus(route_cache_size=...)``)."""

_generations = itertools.count(1)
"""Unique generation numbers; ``next()`` on a count is atomic."""


def subscription_order(sub: Subscription[Any]) -> tuple[float, int]:
    """Dispatch order: priority, higher first; ties in subscription order."""
    return (-sub.priority, sub.id)


_by_id = attrgetter("id")
_by_priority = attrgetter("priority")


class Route:
    """The precomputed handler table of one (topic, event class): replaced, never mutated.

    ``fast`` holds the handlers when every subscription is a plain sync one (called straight
    with the payload); ``fast_async`` when every one is a plain coroutine function. Dispatches
    through either are counted once in ``count`` rather than once per handler: the
    subscription's own delivery counter when the route has one subscription, else a route
    counter shared by its subscriptions (:class:`~tidings.subscription.RouteCounters`).
    ``chained`` holds, when every subscription is an inline one with middleware and nothing
    else in the way (:attr:`Subscription.chained <tidings.Subscription.chained>`), each
    subscription with its chain and its own delivery counter, for
    :func:`tidings.dispatch.call_chained`. ``fast=False`` builds none of the three: every
    handler is then called through :meth:`Subscription.call`.
    """

    __slots__ = (
        "_counter_key",
        "_slow",
        "chained",
        "count",
        "fast",
        "fast_async",
        "subs",
        "topic",
    )

    def __init__(self, topic: str, subs: tuple[Subscription[Any], ...], fast: bool = True) -> None:
        self.topic = topic
        self.subs = subs
        self.fast: tuple[Callable[[Any], Any], ...] | None = None
        self.fast_async: tuple[Callable[[Any], Any], ...] | None = None
        self.chained: tuple[tuple[Subscription[Any], Any, itertools.count[int]], ...] | None = None
        self.count = _UNCOUNTED
        if not fast:
            self._slow: Route | None = self
            return
        self._slow = None
        if len(subs) == 1:  # the commonest route of a new topic: built in one step
            sub = subs[0]
            if not sub.plain:
                self._chain(subs)
            elif sub.kind == INLINE:
                self.fast = (sub.handler,)  # type: ignore[assignment] # plain: held strongly
                self.count = sub.delivery_counter()
            elif sub.kind == TASK:
                self.fast_async = (sub.handler,)  # type: ignore[assignment] # as above
                self.count = sub.delivery_counter()
            return
        if not subs:
            return
        kind = subs[0].kind
        for sub in subs:
            if not sub.plain or sub.kind != kind:
                self._chain(subs)
                return
        handlers: tuple[Any, ...] = tuple([s.handler for s in subs])
        if len({id(h) for h in handlers}) != len(handlers):
            return
        if kind == INLINE:
            self.fast = handlers
        elif kind == TASK:
            self.fast_async = handlers
        else:  # pragma: no cover - a plain subscription is never queued
            return
        self.count = itertools.count()
        self._counter_key = route_counters.open(subs, self.count)
        self.__class__ = _SharedCountRoute

    def _chain(self, subs: tuple[Subscription[Any], ...]) -> None:
        """Set ``chained`` when every subscription has a middleware chain the route may
        call straight (:attr:`Subscription.chained <tidings.Subscription.chained>`)."""
        calls = []
        for sub in subs:
            chain = sub.chained
            if chain is None:
                return
            calls.append((sub, chain, sub.delivery_counter()))
        self.chained = tuple(calls)

    def slow(self) -> Route:
        """This route without its fast paths (built once)."""
        slow = self._slow
        if slow is None:
            slow = self._slow = Route(self.topic, self.subs, fast=False)
        return slow


class _SharedCountRoute(Route):
    """A route whose fast-path dispatches are counted in a route counter shared by its
    subscriptions, which it retires when it is freed."""

    __slots__ = ()

    def __del__(self) -> None:
        # Takes no lock: this may run anywhere, even inside a locked section (cyclic GC).
        route_counters.retire(self._counter_key)


_UNCOUNTED: itertools.count[int] = itertools.count()
"""The ``count`` of a route without fast paths (never advanced: only fast paths count)."""


fold_retired = route_counters.fold
"""Fold the counters of freed routes into their subscriptions' own counts."""
_retired = route_counters.retired
"""The keys :func:`fold_retired` has to fold (tested first: most changes retire none)."""


_Node = tuple[dict[str, "_Node"], dict[Subscription[Any], None]]
"""One token of the trie: the next tokens (literal tokens, ``*`` and ``>``) and the
subscriptions whose pattern ends here (insertion-ordered). A tuple of two dicts: a trie
grows by one per new token subscribed, so nodes are as cheap to make as can be."""
_CHILDREN: Final = 0
_SUBS: Final = 1


class RouteTable:
    """The subscriptions of a bus, their trie and the bounded route cache (see the module
    docstring).

    Args:
        size: the most routes cached at once (at least 1).

    Raises:
        TypeError: if ``size`` is not an int; ValueError: if it is below 1.
    """

    def __init__(self, size: int = DEFAULT_ROUTE_CACHE_SIZE) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(
                f"route_cache_size= is a number of routes (an int), not "
                f"{type(size).__name__} {size!r}"
            )
        if size < 1:
            raise ValueError(
                f"route_cache_size= must be at least 1 (routes kept for reuse), not {size!r}"
            )
        self.size = size
        self.by_type: dict[type, Route] = {}
        """Routes of events published on their class's topic; read without a lock."""
        self.by_topic: dict[tuple[str, type], Route] = {}
        """Routes of events published with ``topic=``, by (topic, class); read without a
        lock."""
        self._lock = threading.Lock()
        self._subs: dict[Subscription[Any], None] = {}  # insertion-ordered
        self._root: _Node = ({}, {})
        self._generation = next(_generations)
        # Cached keys, oldest first, with their topics; and the keys cached per topic. Both
        # may also hold keys that release() emptied from the dicts (harmless: dropping or
        # evicting a key no longer cached does nothing), never fewer.
        self._order: OrderedDict[Any, str] = OrderedDict()
        self._topics: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def subscriptions(self) -> tuple[Subscription[Any], ...]:
        """The subscriptions in the table, in the order they were added (no lock taken)."""
        return tuple(self._subs)

    @property
    def cached(self) -> int:
        """How many routes are cached now."""
        return len(self.by_type) + len(self.by_topic)

    # ------------------------------------------------------------------ changes

    def add(self, sub: Subscription[Any]) -> None:
        """Route events to ``sub`` from now on."""
        pattern = sub.pattern
        with self._lock:
            self._subs[sub] = None
            node = self._root
            for token in pattern.split("."):
                children = node[_CHILDREN]
                child = children.get(token)
                if child is None:
                    child = children[token] = ({}, {})
                node = child
            node[_SUBS][sub] = None
            if "*" in pattern or ">" in pattern:
                self._drop_matching(pattern)
            elif pattern in self._topics:  # a topic: its routes, if any is cached
                self._drop_topic(pattern)
            self._generation = next(_generations)
        if _retired:
            fold_retired()

    def remove(self, sub: Subscription[Any]) -> bool:
        """Stop routing events to ``sub``; whether it was in the table."""
        pattern = sub.pattern
        tokens = pattern.split(".")
        with self._lock:
            if self._subs.pop(sub, False) is False:
                return False
            path = [self._root]
            for token in tokens:
                path.append(path[-1][_CHILDREN][token])
            del path[-1][_SUBS][sub]
            for depth in range(len(tokens), 0, -1):  # prune the nodes left empty
                node = path[depth]
                if node[_SUBS] or node[_CHILDREN]:
                    break
                del path[depth - 1][_CHILDREN][tokens[depth - 1]]
            self._drop_matching(pattern)
            self._generation = next(_generations)
        if _retired:
            fold_retired()
        return True

    def drop_all(self) -> None:
        """Drop every cached route, so each is rebuilt when next used (for example after
        subscriptions' plainness changed)."""
        with self._lock:
            self._drop_all_locked()
        if _retired:
            fold_retired()

    def release(self, sub: Subscription[Any]) -> None:
        """Stop using ``sub`` (already inactive) without taking a lock: drop every cached
        route. Safe from a weakref callback inside this thread's locked code; ``sub`` stays
        in the trie, skipped, until :meth:`remove`."""
        self._generation = next(_generations)
        self.by_type.clear()
        self.by_topic.clear()

    def _drop_all_locked(self) -> None:
        self.by_type.clear()
        self.by_topic.clear()
        self._order.clear()
        self._topics.clear()
        self._generation = next(_generations)

    def _drop_matching(self, pattern: str) -> None:
        """Drop the cached routes of the topics ``pattern`` matches (lock held)."""
        if "*" not in pattern and ">" not in pattern:  # validated: no wildcard token
            self._drop_topic(pattern)
            return
        match = compile_pattern(pattern)
        for topic in [t for t in self._topics if match(t)]:
            self._drop_topic(topic)

    def _drop_topic(self, topic: str) -> None:
        keys = self._topics.pop(topic, None)
        if keys is None:
            return
        order, by_topic, by_type = self._order, self.by_topic, self.by_type
        for key in keys:
            del order[key]
            if type(key) is tuple:  # _forget, inlined
                by_topic.pop(key, None)
            else:
                by_type.pop(key, None)

    def _forget(self, key: Any) -> None:
        if type(key) is tuple:
            self.by_topic.pop(key, None)
        else:
            self.by_type.pop(key, None)

    # ------------------------------------------------------------------ routes

    def route(self, event_type: type, topic: str | None) -> Route:
        """The route of an event of ``event_type`` published on ``topic`` (``None``: its
        class's topic): from the cache, else built and cached.

        Raises:
            TopicRequiredError: if ``topic`` is ``None`` and the class names no topic.
            InvalidTopicError: if ``topic`` is malformed.
        """
        if topic is None:
            route = self.by_type.get(event_type)
            if route is not None:
                return route
            return self._build(event_type, event_type, topic_of(event_type))
        topic = validate_topic(topic)
        key = (topic, event_type)
        route = self.by_topic.get(key)
        if route is not None:
            return route
        return self._build(key, event_type, topic)

    def _build(self, key: Any, event_type: type, topic: str) -> Route:
        generation = self._generation
        subs: list[Subscription[Any]] = []
        for sub in self._match(topic.split(".")):  # a loop: cheaper than a comprehension here
            if sub.active and (sub.event_type is None or issubclass(event_type, sub.event_type)):
                subs.append(sub)  # noqa: PERF401 - see above
        if len(subs) > 1:  # subscription_order, as two sorts keyed in C (both stable)
            subs.sort(key=_by_id)
            subs.sort(key=_by_priority, reverse=True)
        route = Route(topic, tuple(subs))
        cache: dict[Any, Route] = self.by_topic if type(key) is tuple else self.by_type
        with self._lock:
            if self._generation == generation:
                cached = cache.get(key)
                if cached is not None:  # another thread built it meanwhile
                    route = cached
                else:
                    self._insert(key, topic, route, cache)
                    if self._generation != generation:  # released while inserting
                        cache.pop(key, None)
        if _retired:
            fold_retired()
        return route

    def _match(self, tokens: list[str]) -> list[Subscription[Any]]:
        """The subscriptions whose patterns match ``tokens``, unordered.

        Takes no lock: each step reads the trie with one dict operation (atomic under the
        GIL), and a change made meanwhile moves the generation, so the caller's route is
        then not cached.
        """
        found: list[Subscription[Any]] = []
        node = self._root
        if tokens[0] == INTERNAL_TOKEN:  # an internal topic: no leading wildcard matches it
            child = node[_CHILDREN].get(INTERNAL_TOKEN)
            if child is None:
                return found
            node = child
            tokens = tokens[1:]
        # One node matches so far (the common case: no list per token), until a token
        # matches both a literal and a ``*`` child; then every node of the frontier.
        for depth, token in enumerate(tokens):
            children = node[_CHILDREN]
            if not children:
                return found
            # Most nodes have no wildcard child: a containment test says so without a
            # call; the read itself is still one dict operation (get), as above.
            if ">" in children:
                tail = children.get(">")
                if tail is not None:
                    found.extend(tail[_SUBS])
            child = children.get(token)
            star = children.get("*") if "*" in children else None
            if star is None:
                if child is None:
                    return found
                node = child
            elif child is None:
                node = star
            else:
                return self._match_from([child, star], tokens, depth + 1, found)
        found.extend(node[_SUBS])
        return found

    @staticmethod
    def _match_from(
        frontier: list[_Node], tokens: list[str], start: int, found: list[Subscription[Any]]
    ) -> list[Subscription[Any]]:
        """:meth:`_match` from the nodes ``frontier`` matching ``tokens[:start]``."""
        for token in tokens[start:]:
            following: list[_Node] = []
            for children, _ in frontier:
                if not children:
                    continue
                if ">" in children:
                    tail = children.get(">")
                    if tail is not None:
                        found.extend(tail[_SUBS])
                child = children.get(token)
                if child is not None:
                    following.append(child)
                if "*" in children:
                    child = children.get("*")
                    if child is not None:
                        following.append(child)
            if not following:
                return found
            frontier = following
        for node in frontier:
            found.extend(node[_SUBS])
        return found

    def _insert(self, key: Any, topic: str, route: Route, cache: dict[Any, Route]) -> None:
        """Cache ``route`` under ``key`` (lock held), evicting the oldest past the size."""
        order = self._order
        if key in order:  # emptied by release(): still indexed, take its place again
            order.move_to_end(key)
        else:
            if len(order) >= self.size:  # full: evict the oldest (order never holds more)
                old, old_topic = order.popitem(False)
                keys = self._topics[old_topic]
                keys.remove(old)
                if not keys:
                    del self._topics[old_topic]
                if type(old) is tuple:  # _forget, inlined
                    self.by_topic.pop(old, None)
                else:
                    self.by_type.pop(old, None)
            order[key] = topic
            listed = self._topics.get(topic)
            if listed is None:
                self._topics[topic] = [key]
            else:
                listed.append(key)
        cache[key] = route

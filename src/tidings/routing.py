"""The route table: which subscriptions an event of a given class on a given topic goes to.

A :class:`Route` is the precomputed handler table of one (topic, event class). The
:class:`RouteTable` finds routes through a *subject trie* and keeps the ones in use in a
bounded *route cache* in front of it:

- **Trie.** Each subscription sits at the leaf its pattern spells, one node per token:
  literal tokens, ``*`` and ``>``; a class subscription at its class's topic. A node is one
  dict (its next tokens, its leaves under keys no topic token can be: see :data:`_Node`).
  Matching a topic walks its tokens (the literal child, the ``*`` child, and the leaf of
  a ``>`` child at each level), so it costs O(topic depth), not O(subscriptions). An
  internal topic (first token ``tidings``, see :mod:`tidings.topics`) is walked from the
  root's literal child only: no leading wildcard matches it. Class
  subscriptions are then kept only for subclasses of their class, as
  :meth:`Subscription.matches <tidings.Subscription.matches>` says.
- **Topic check on the walk.** A topic not cached is checked as
  :func:`~tidings.topics.validate_topic` checks it, but a token the walk finds as a
  literal child needs no check (it is a token of a validated pattern): only the tokens
  matched by ``*`` are checked one by one, and the whole topic where the walk leaves the
  trie or forks. An invalid topic raises :class:`~tidings.InvalidTopicError` on every
  path and is never cached.
- **Order.** A route lists its subscriptions by priority, higher first, ties in
  subscription order (the subscription's id, a process-wide sequence number).
- **Compiled leaves.** What a route holds besides its topic (its subscriptions in order,
  fast paths, counter) is compiled once per leaf and event class, kept in the leaf
  and valid for the table's generation it was compiled at; so a route of one leaf's
  subscriptions (the common case: a new topic matched by one pattern) is a trie walk
  (checking the tokens no literal node matched) and a copy of the leaf's compiled parts
  into a new :class:`Route`, cached without a lock. Routes matched by several leaves are
  compiled from their merged subscriptions each time.
- **Cache.** Built routes are kept in two dicts that the bus reads without a lock:
  :attr:`RouteTable.by_type` (events published on their class's topic) and
  :attr:`RouteTable.by_topic` (``(topic, event class)``). Together they hold at most
  ``size`` routes (plus, for a moment, one per build still inserting on another thread):
  each insert takes the next slot of a ring of ``size`` keys and evicts the key inserted
  there ``size`` inserts before, if it is still cached (first in, first out). Publishing
  to millions of distinct topics therefore keeps memory flat.
- **Cheap changes.** Subscribing and cancelling touch the subscription's trie path and
  the cached routes it matches: a literal pattern drops exactly its topic's routes (one
  lookup per event class ever published with ``topic=``, as the table lists them), a
  wildcard the cached topics it matches. No other route is rebuilt.

Guarantees and invariants:

- **Replaced, never mutated.** A route is immutable once built: a dispatch keeps working
  on the subscriptions its route had when it started. A cache hit is one ``dict.get``.
- **No stale route.** Every change (add, remove, :meth:`RouteTable.drop_all`) is made
  under the table's lock: the trie first, then a new *generation* (a unique number from an
  atomic counter) is published, then the cached routes it affects are dropped; a compiled
  leaf is used only at the generation it was compiled at. A route is built without a lock,
  from a trie walk that starts by reading the generation; it is inserted only if the
  generation is still the one it started from (the very object: compared with ``is``),
  and dropped again if the generation moved by the time the insert is done. A change that landed before that last check is seen by
  it; one that did not drops the route itself (its drop follows its new generation). So
  a route that missed a change (or saw half of one) is never cached after that change
  returned, even while other threads build routes. A route built from a moved generation
  still serves the publish that built it: that publish started before the change
  returned.
- **Lock-free release.** :meth:`RouteTable.release` (a subscription's owner was collected:
  called from a weakref callback, possibly inside this thread's locked code) takes no lock:
  the subscription is already inactive, so routes built from now on skip it; release
  publishes a new generation and empties both cache dicts in place. The subscription stays
  in the trie until the owner of the table removes it in ordinary code.
- **Exact statistics.** A route whose subscriptions are all plain counts its dispatches
  once: a route of one subscription in that subscription's own delivery counter, a route
  of several in a route counter (shared by the routes compiled from one leaf) that each
  subscription adds to its ``delivered``. When the last route and compiled leaf holding a
  route counter are freed (evicted, dropped, recompiled, or no longer held by any
  dispatch) the counter goes to a queue; the table folds queued counters into the
  subscriptions' own counts at its next change or build, in ordinary code. Until folded a counter is still summed by the
  subscriptions, so no dispatch is lost or counted twice, and freeing a route anywhere
  (even from the garbage collector inside a locked section) takes no lock.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Any, Final

from tidings.event import topic_of
from tidings.subscription import INLINE, TASK, Subscription, route_counters
from tidings.topics import (
    INTERNAL_TOKEN,
    MAX_TOPIC_LENGTH,
    NOT_IN_TOPIC,
    compile_pattern,
    validate_topic,
)

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
        "_counter",
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
        if fast:
            self._slow: Route | None = None
            _, _, self.fast, self.fast_async, self.chained, self.count, self._counter = _compile(
                0, subs
            )
        else:
            self._slow = self
            self.fast = self.fast_async = self.chained = None
            self.count = _UNCOUNTED
            self._counter = None

    def slow(self) -> Route:
        """This route without its fast paths (built once)."""
        slow = self._slow
        if slow is None:
            slow = self._slow = Route(self.topic, self.subs, fast=False)
        return slow


class _RouteCounter:
    """Holds a route counter open (:meth:`RouteCounters.open
    <tidings.subscription.RouteCounters.open>`) while a route or a compiled leaf (see
    :class:`RouteTable`) that counts in it lives, and retires it when freed."""

    __slots__ = ("key",)

    def __init__(self, key: int) -> None:
        self.key = key

    def __del__(self) -> None:
        # Takes no lock: this may run anywhere, even inside a locked section (cyclic GC).
        route_counters.retire(self.key)


_UNCOUNTED: itertools.count[int] = itertools.count()
"""The ``count`` of a route without fast paths (never advanced: only fast paths count)."""

_Handlers = tuple[Callable[[Any], Any], ...]
_Chained = tuple[tuple[Subscription[Any], Any, "itertools.count[int]"], ...]
_Compiled = tuple[
    int,
    tuple[Subscription[Any], ...],
    _Handlers | None,
    _Handlers | None,
    _Chained | None,
    "itertools.count[int]",
    _RouteCounter | None,
]
"""Everything a :class:`Route` holds but its topic, as built for ``subs`` at a generation
of a route table: (generation, subs, fast, fast_async, chained, count, route counter)."""


def _compile(generation: int, subs: tuple[Subscription[Any], ...]) -> _Compiled:
    """The fast paths of a route to ``subs`` (in dispatch order); see :class:`Route`."""
    if len(subs) == 1:  # the commonest route of a new topic: built in one step
        sub = subs[0]
        if not sub.plain:
            return (generation, subs, None, None, _chain(subs), _UNCOUNTED, None)
        handler: Any = sub.handler  # plain: held strongly, never None
        if sub.kind == INLINE:
            return (generation, subs, (handler,), None, None, sub.delivery_counter(), None)
        if sub.kind == TASK:
            return (generation, subs, None, (handler,), None, sub.delivery_counter(), None)
        return (generation, subs, None, None, None, _UNCOUNTED, None)  # pragma: no cover
    if not subs:
        return (generation, subs, None, None, None, _UNCOUNTED, None)
    kind = subs[0].kind
    for sub in subs:
        if not sub.plain or sub.kind != kind:
            return (generation, subs, None, None, _chain(subs), _UNCOUNTED, None)
    handlers: tuple[Any, ...] = tuple([s.handler for s in subs])
    if len({id(h) for h in handlers}) != len(handlers) or kind not in (INLINE, TASK):
        return (generation, subs, None, None, None, _UNCOUNTED, None)
    count = itertools.count()
    counter = _RouteCounter(route_counters.open(subs, count))
    if kind == INLINE:
        return (generation, subs, handlers, None, None, count, counter)
    return (generation, subs, None, handlers, None, count, counter)


def _chain(subs: tuple[Subscription[Any], ...]) -> _Chained | None:
    """Each subscription with its middleware chain and delivery counter, when every one has
    a chain a route may call straight (:attr:`Subscription.chained
    <tidings.Subscription.chained>`); else ``None``."""
    calls = []
    for sub in subs:
        chain = sub.chained
        if chain is None:
            return None
        calls.append((sub, chain, sub.delivery_counter()))
    return tuple(calls)


_NO_ROUTE: Final[_Compiled] = (0, (), None, None, None, _UNCOUNTED, None)
"""What a route to no subscription holds (whatever the generation)."""
_NOTHING_COMPILED: Final[tuple[None, _Compiled]] = (None, _NO_ROUTE)
"""A leaf's ``last`` before it compiles a route (no class is ``None``)."""

fold_retired = route_counters.fold
"""Fold the counters of freed routes into their subscriptions' own counts."""
_retired = route_counters.retired
"""The keys :func:`fold_retired` has to fold (tested first: most changes retire none)."""

_stray = NOT_IN_TOPIC.search
"""Finds a character no topic has (in a valid topic: nothing, so no match is allocated)."""

_new_route = object.__new__
"""Allocates a :class:`Route` whose slots the table then fills from a compiled leaf."""


class _Leaf:
    """Where patterns end in the trie: the subscriptions whose pattern ends here
    (insertion-ordered) and, by event class, what a route to those of them the class
    matches holds (compiled when first needed, valid for the generation it names); the
    class compiled last, with its parts, also in ``last`` (one tuple, replaced whole: read
    without a lock), where a build looks first.

    A node's leaf is under the key ``"."`` in its dict; a ``>`` pattern's leaf under the key
    ``".>"`` of the node before it (``>`` is always the last token, so nothing comes after
    it). A leaf is in the trie only while it has subscriptions."""

    __slots__ = ("compiled", "last", "subs")
    # No __init__ (a call fewer): the table fills the slots of a new leaf.

    subs: dict[Subscription[Any], None]
    compiled: dict[type, _Compiled]
    last: tuple[type | None, _Compiled]


_Node = dict[str, Any]
"""One token of the trie: a dict of the next tokens, each to its node (a ``*`` token under
the key ``".*"``), with ``".>"`` to the leaf of the ``>`` pattern ending here and ``"."`` to
the leaf of the patterns ending at this token (:class:`_Leaf`). No token of a topic, valid
or not, contains a dot (a topic is split at dots), so a topic's token found in a node is a
literal token of a subscribed pattern: a valid token. One dict per node: a walk reads one
object per token, and a trie grows by one dict per new token subscribed."""
_HERE: Final = "."
"""A node's key for its leaf."""
_KEYS: Final = {"*": ".*", ">": ".>"}
"""The keys of the wildcard tokens in a node."""
_EMPTY: Final[dict[Any, Any]] = {}
"""The empty dict a leaf holds until it compiles its first route: read, never written (the
table replaces it in the leaf before adding to it)."""
_NOWHERE: Final[_Node] = {}
"""A node outside the trie, with nothing: where a walk whose first step found no node goes
on (read, never written)."""


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
        self._root: _Node = {}
        self._generation = next(_generations)
        # The cached keys in insertion order, as a ring of ``size`` slots: inserting a key
        # evicts the one inserted ``size`` insertions before it (if it is still cached).
        self._ring: list[Any] = [None] * size
        self._slots = itertools.cycle(range(size))
        # What a change needs to find the cached routes of a topic: the event classes ever
        # cached in ``by_topic`` (its keys of a topic are (topic, class) for these), and the
        # classes ever cached in ``by_type``, by their topic. Both may list classes no longer
        # cached (dropping a key not cached does nothing), never fewer; both grow only with
        # the program's event classes, not with topics. Tuples, replaced under the lock
        # (once per class), never changed: read without a copy.
        self._topic_classes: tuple[type, ...] = ()
        self._type_topics: dict[str, tuple[type, ...]] = {}

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
        tokens = pattern.split(".")
        if "*" in pattern or ">" in pattern:  # validated: a wildcard is a whole token
            tokens = [_KEYS.get(token, token) for token in tokens]
        lock = self._lock
        lock.acquire()  # not ``with``: two calls fewer
        try:
            self._subs[sub] = None
            node = self._root
            last = tokens.pop()
            for token in tokens:
                child = node.get(token)
                if child is None:
                    child = node[token] = {}
                node = child
            if last != ".>":  # the leaf is in the last token's node; a ``>`` leaf in this one
                child = node.get(last)
                if child is None:
                    child = node[last] = {}
                node, last = child, _HERE
            leaf = node.get(last)
            if leaf is None:
                leaf = _Leaf()
                leaf.subs = {sub: None}
                leaf.compiled = _EMPTY
                leaf.last = _NOTHING_COMPILED
                node[last] = leaf
            else:
                leaf.subs[sub] = None
                leaf.compiled = _EMPTY  # compiled without ``sub``
                leaf.last = _NOTHING_COMPILED
            self._generation = next(_generations)  # before the drop: see build()
            self._drop_matching(pattern)
        finally:
            lock.release()
        if _retired:
            fold_retired()

    def remove(self, sub: Subscription[Any]) -> bool:
        """Stop routing events to ``sub``; whether it was in the table."""
        pattern = sub.pattern
        tokens = pattern.split(".")
        if "*" in pattern or ">" in pattern:
            tokens = [_KEYS.get(token, token) for token in tokens]
        with self._lock:
            if self._subs.pop(sub, False) is False:
                return False
            node = self._root
            path = [node]
            last = tokens.pop()
            for token in tokens:
                node = node[token]
                path.append(node)
            if last != ".>":  # the leaf is in the last token's node; a ``>`` leaf in this one
                node = node[last]
                path.append(node)
                tokens.append(last)
                last = _HERE
            leaf = node[last]
            subs = leaf.subs
            del subs[sub]
            leaf.compiled = _EMPTY  # no longer holding ``sub`` (nor its handler) alive
            leaf.last = _NOTHING_COMPILED
            if not subs:
                del node[last]
                depth = len(tokens)
                while depth and not path[depth]:  # prune the nodes left empty
                    depth -= 1
                    del path[depth][tokens[depth]]
            self._generation = next(_generations)  # before the drop: see build()
            self._drop_matching(pattern)
        if _retired:
            fold_retired()
        return True

    def drop_all(self) -> None:
        """Drop every cached route, so each is rebuilt when next used (for example after
        subscriptions' plainness changed)."""
        with self._lock:
            self._drop_everything()
        if _retired:
            fold_retired()

    def release(self, sub: Subscription[Any]) -> None:
        """Stop using ``sub`` (already inactive) without taking a lock: drop every cached
        route. Safe from a weakref callback inside this thread's locked code; ``sub`` stays
        in the trie, skipped, until :meth:`remove`."""
        self._drop_everything()

    def _drop_everything(self) -> None:
        """A new generation, then both cache dicts emptied in place (takes no lock)."""
        self._generation = next(_generations)
        self.by_type.clear()
        self.by_topic.clear()

    def _drop_matching(self, pattern: str) -> None:
        """Drop the cached routes of the topics ``pattern`` matches (lock held): for a topic,
        one lookup per event class ever cached with ``topic=``; for a wildcard, a test of
        each cached topic."""
        by_topic = self.by_topic
        if "*" not in pattern and ">" not in pattern:  # validated: no wildcard token
            for event_type in self._topic_classes:
                by_topic.pop((pattern, event_type), None)
            classes = self._type_topics.get(pattern)
            if classes is not None:
                for event_type in classes:
                    self.by_type.pop(event_type, None)
            return
        match = compile_pattern(pattern)
        # A copy of the keys in one C call: builds insert without the lock.
        for key in [k for k in tuple(by_topic) if match(k[0])]:
            by_topic.pop(key, None)
        for topic, classes in tuple(self._type_topics.items()):
            if match(topic):
                for event_type in classes:
                    self.by_type.pop(event_type, None)

    def _list_class(self, event_type: type, topic: str | None) -> None:
        """List ``event_type`` as cached in ``by_topic`` (``topic`` None) or in ``by_type`` on
        ``topic``, so that changes find its routes: under the lock, once per class."""
        with self._lock:
            if topic is None:
                if event_type not in self._topic_classes:
                    self._topic_classes = (*self._topic_classes, event_type)
            else:
                listed = self._type_topics.get(topic, ())
                if event_type not in listed:
                    self._type_topics[topic] = (*listed, event_type)

    # ------------------------------------------------------------------ routes

    def route(self, event_type: type, topic: str | None) -> Route:
        """The route of an event of ``event_type`` published on ``topic`` (``None``: its
        class's topic): from the cache, else built and cached (:meth:`build`).

        Raises:
            TopicRequiredError: if ``topic`` is ``None`` and the class names no topic.
            InvalidTopicError: if ``topic`` is malformed.
        """
        if topic is None:
            route = self.by_type.get(event_type)
        else:
            try:
                route = self.by_topic.get((topic, event_type))
            except TypeError:  # an unhashable topic: build() says what is wrong with it
                route = None
        if route is None:
            return self.build(event_type, topic)
        return route

    def build(self, event_type: type, topic: str | None) -> Route:
        """:meth:`route` for a caller that has just looked in the cache and missed: build the
        route and cache it, without a second lookup. Only a topic that is not cached is
        validated (an invalid one is never cached).

        Raises:
            TopicRequiredError: if ``topic`` is ``None`` and the class names no topic.
            InvalidTopicError: if ``topic`` is malformed.
        """
        key: Any
        cache: dict[Any, Route]
        if topic is None:
            topic = topic_of(event_type)
            key, cache = event_type, self.by_type
            if event_type not in self._type_topics.get(topic, ()):
                self._list_class(event_type, topic)
            checked = True
        else:
            # Checked as it is walked (validate_topic's rule: no character outside a
            # topic's, no empty token, at most MAX_TOPIC_LENGTH characters): a token that
            # matches a literal child of the trie is a valid token (patterns are validated),
            # so only the others are checked, below.
            if type(topic) is str and len(topic) <= MAX_TOPIC_LENGTH:
                checked = False
            else:
                topic = validate_topic(topic)  # raises, naming what is wrong (a str subclass)
                checked = True
            key, cache = (topic, event_type), self.by_topic
            if event_type not in self._topic_classes:
                self._list_class(event_type, None)
        tokens = topic.split(".")
        # Build the route, then cache it unless the table changed meanwhile. Takes no lock:
        # a change moves the generation after changing the trie and before dropping the
        # cached routes it affects, and this inserts before checking the generation again.
        # So either that check sees the change (the route is dropped here), or the change's
        # drop comes after this insert (and drops it): a route that missed a change is
        # never left cached after the change returned.
        generation = self._generation
        # The trie walk, lock-free: each step reads the trie with one dict operation (atomic
        # under the GIL). One node matches so far (the common case: no list per token), until
        # a token matches both a literal and a ``*`` child; then every node of the frontier
        # (_match_from). Most nodes have no wildcard child: a containment test says so
        # without a call. ``first`` is the first leaf found, ``found`` every leaf once there
        # are two (the common case, one, allocates no list).
        first: _Leaf | None = None
        found: list[_Leaf] | None = None
        node: _Node = self._root
        rest = iter(tokens)
        if tokens[0] == INTERNAL_TOKEN:  # an internal topic: no leading wildcard matches it
            node = node.get(next(rest)) or _NOWHERE
        for token in rest:
            if ".>" in node:
                tail = node.get(".>")
                if tail is not None:
                    if first is None:
                        first = tail
                    else:
                        found = [first, tail] if found is None else [*found, tail]
            child = node.get(token)
            if ".*" in node:
                star = node.get(".*")
                if star is not None:
                    if child is None:
                        if not checked and (not token or _stray(token) is not None):
                            validate_topic(topic)  # raises, naming what is wrong
                        node = star
                        continue
                    if not checked and (_stray(topic) is not None or "" in tokens):
                        validate_topic(topic)  # raises, naming what is wrong
                    if found is None:
                        found = [] if first is None else [first]
                    _match_from([child, star], rest, found)
                    break
            if child is None:
                # The tokens from here on matched no literal child: check the whole topic.
                if not checked and (_stray(topic) is not None or "" in tokens):
                    validate_topic(topic)  # raises, naming what is wrong
                break
            node = child
        else:
            here = node.get(_HERE)
            if here is not None:
                if first is None:
                    first = here
                else:
                    found = [first, here] if found is None else [*found, here]
        if found is not None and len(found) < 2:
            first = found[0] if found else None
            found = None
        compiled: _Compiled | None
        if found is not None:
            compiled = _compile(generation, _matching(found, event_type))
        elif first is not None:  # the common case: the route of one leaf's subscriptions
            last = first.last
            compiled = last[1] if last[0] is event_type else first.compiled.get(event_type)
            # ``is``: the generation read above is the very object a compile stored
            if compiled is None or compiled[0] is not generation:
                compiled = self._compile_leaf(first, event_type, generation)
        else:
            compiled = _NO_ROUTE
        # A Route from its compiled parts, slot by slot: no __init__ to call.
        route: Route = _new_route(Route)
        route.topic = topic
        _, route.subs, route.fast, route.fast_async, route.chained, route.count, route._counter = (
            compiled
        )
        route._slow = None
        if self._generation is generation:
            # Take the next slot of the ring, evicting the key inserted there ``size``
            # inserts ago (if it is still cached), then insert.
            at = next(self._slots)
            ring = self._ring
            old = ring[at]
            ring[at] = key
            if old is not None:
                try:  # a del: no method call (the key may have been dropped meanwhile)
                    if type(old) is tuple:
                        del self.by_topic[old]
                    else:
                        del self.by_type[old]
                except KeyError:
                    pass
            cache[key] = route  # another thread's build of the same key meanwhile: replaced
            if self._generation is not generation:  # changed (or released) while inserting
                cache.pop(key, None)
        if _retired:
            fold_retired()
        return route

    @staticmethod
    def _compile_leaf(leaf: _Leaf, event_type: type, generation: int) -> _Compiled:
        """What a route to the subscriptions at ``leaf`` that match ``event_type`` holds, at
        ``generation``: compiled once per leaf, class and generation, and kept in the leaf.

        Takes no lock: a change made meanwhile moves the generation, so what this keeps is
        then never used.
        """
        subs = tuple(leaf.subs)  # one C call: a copy another thread cannot change midway
        if len(subs) == 1:  # the common case, without a list to sort
            sub = subs[0]
            if sub.active and (sub.event_type is None or issubclass(event_type, sub.event_type)):
                compiled = _compile(generation, subs)
            else:
                compiled = _compile(generation, ())
        else:
            compiled = _compile(generation, _matching((leaf,), event_type))
        held = leaf.compiled
        if held is _EMPTY:
            leaf.compiled = {event_type: compiled}
        else:
            held[event_type] = compiled
        leaf.last = (event_type, compiled)
        return compiled


def _match_from(frontier: list[_Node], rest: Iterator[str], found: list[_Leaf]) -> None:
    """The trie walk of :meth:`RouteTable.build` from the nodes ``frontier`` onwards, for the
    tokens ``rest``: adds the leaves whose patterns match to ``found``."""
    for token in rest:
        following: list[_Node] = []
        for node in frontier:
            if ".>" in node:
                tail = node.get(".>")
                if tail is not None:
                    found.append(tail)
            child = node.get(token)
            if child is not None:
                following.append(child)
            if ".*" in node:
                child = node.get(".*")
                if child is not None:
                    following.append(child)
        if not following:
            return
        frontier = following
    for node in frontier:
        leaf = node.get(_HERE)
        if leaf is not None:
            found.append(leaf)


def _matching(leaves: Iterable[_Leaf], event_type: type) -> tuple[Subscription[Any], ...]:
    """The active subscriptions at ``leaves`` that take events of ``event_type``, in dispatch
    order (:func:`subscription_order`, as two sorts keyed in C, both stable)."""
    candidates: list[Subscription[Any]] = []
    for leaf in leaves:  # extend: one C call each, which another thread cannot change midway
        candidates.extend(leaf.subs)
    subs: list[Subscription[Any]] = []
    for sub in candidates:  # a loop: cheaper than a comprehension here
        if sub.active and (sub.event_type is None or issubclass(event_type, sub.event_type)):
            subs.append(sub)  # noqa: PERF401 - see above
    if len(subs) > 1:
        subs.sort(key=_by_id)
        subs.sort(key=_by_priority, reverse=True)
    return tuple(subs)

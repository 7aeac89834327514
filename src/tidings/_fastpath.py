"""The publish hot path of :class:`~tidings.Bus`: stamp an event with the hybrid clock, wrap it
in its :class:`~tidings.Envelope` and call a route of plain sync handlers, in one step.

This module is the one source of that step. ``hatch_build.py`` compiles a copy of it with
mypyc, as ``tidings._fastpath_c``, when the installing machine has a C compiler; the bus uses
whichever :mod:`tidings._speedups` loads, and both run this same code. So it is written for
both: it imports nothing from tidings (the compile sees this file alone), its hot values are
typed for mypyc (tagged ints, native classes, ``Final`` aliases that compile to C statics) and
nothing in it depends on which one runs.

Invariants:

- :meth:`Publisher.publish_plain` stamps with every guarantee of :meth:`HybridClock.now
  <tidings.HybridClock.now>` on the clock whose state it shares: its first attempt is the
  clock's send rule, claimed with the same atomic :func:`heapq.heappushpop` step, and a lost
  race is retried by the clock itself.
- An :class:`ObservedPublisher` hands its observer's hook every publish that its fast path
  does not finish itself, and counts (in ``marks``) each one it finishes; it never stamps,
  dispatches or counts a publish twice.
- A :class:`DispatchState`'s ``busy`` is true exactly while its thread runs one of its bus's
  dispatches; ``queue`` holds, in publish order, what that thread's handlers published
  meanwhile (see :mod:`tidings._reentry`).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol

__all__ = ("DispatchState", "ObservedPublisher", "Publisher")

_PHYSICAL_MASK: Final = -0x10000
"""A packed time's physical bits (:data:`tidings.clock.PHYSICAL_MASK`)."""

_heappushpop: Final = heapq.heappushpop
_next: Final = next
"""Aliases that mypyc keeps in C statics: no module dictionary lookup per call (mypyc
compiles a plain ``next(...)`` to a lookup of ``builtins.next``)."""


class DispatchState:
    """One thread's dispatch state on one bus (see :mod:`tidings._reentry`)."""

    __slots__ = ("busy", "queue")

    def __init__(self) -> None:
        self.busy = False
        self.queue: deque[tuple[Any, Any]] = deque()


class _Threads(Protocol):
    """Each thread's :class:`DispatchState` (:class:`tidings._reentry.ThreadDispatch`, a
    :class:`threading.local`): its ``state``, which its per-thread ``__dict__`` holds."""

    state: DispatchState


class Publisher:
    """One bus's hot path: its clock, envelope fields, dispatch states and failure reporter.

    Args:
        clock_state: the :class:`~tidings.HybridClock`'s one-element state heap, shared.
        wall: the clock's physical clock (nanoseconds since the epoch).
        now: the clock's :meth:`~tidings.HybridClock.now`, for a lost race.
        envelope: the :class:`~tidings.Envelope` class.
        source: the bus's CloudEvents ``source``.
        node: the clock's node id.
        threads: the bus's per-thread dispatch states.
        report: reports a plain handler's failure ``(route, handler, envelope, exception)``.
        drain: dispatches the events a thread's handlers published meanwhile.
        drop: empties and reports that queue when an exception (an interrupt) ends the
            dispatch before it is drained.
    """

    __slots__ = (
        "_clock_state",
        "_drain",
        "_drop",
        "_envelope",
        "_node",
        "_now",
        "_report",
        "_source",
        "_threads",
        "_wall",
    )

    def __init__(
        self,
        clock_state: list[int],
        wall: Callable[[], int],
        now: Callable[[], int],
        envelope: Callable[..., Any],
        source: str,
        node: str,
        threads: _Threads,
        report: Callable[[Any, Any, Any, Exception], object],
        drain: Callable[[deque[tuple[Any, Any]]], object],
        drop: Callable[[deque[tuple[Any, Any]], BaseException], object],
    ) -> None:
        self._clock_state = clock_state
        self._wall = wall
        self._now = now
        self._envelope = envelope
        self._source = source
        self._node = node
        self._threads = threads
        self._report = report
        self._drain = drain
        self._drop = drop

    def publish_plain(
        self,
        route: object,
        handlers: tuple[Callable[[Any], object], ...] | None,
        count: Iterator[int],
        topic: str,
        event: object,
        key: str | None,
        headers: object,
    ) -> Any:
        """A new envelope of ``event`` on ``topic``, at the clock's next time; then, unless
        ``handlers`` is None (the caller dispatches it), each of ``handlers`` called with the
        event, in order (``route``'s plain sync handlers, counted once in ``count``).

        ``key`` and ``headers`` are the caller's, already checked (and copied). A handler's
        exception goes to ``report`` and the next handler runs. Called inside a dispatch of
        this thread, the event is queued behind it instead; a dispatch drains what its
        handlers published before it returns, or, when a handler's ``BaseException`` (a
        ``KeyboardInterrupt``) ends it, hands that queue to ``drop`` and lets the exception
        through. Returns the envelope.

        One method for both (no separate ``stamp``): pure Python pays for every call.
        """
        # HybridClock.now's send rule: t = max(last + 1, physical), claimed atomically by
        # heappushpop, which hands back ``t`` itself exactly when ``t`` lost (the old state,
        # a smaller value, so another object, when it won): ``is`` tells, without comparing.
        # Callable attributes are read into locals first: pure Python calls ``self.x()``
        # through a method lookup that it cannot specialise for an instance attribute.
        state = self._clock_state
        t = state[0] + 1
        wall = self._wall
        pt = wall() & _PHYSICAL_MASK
        if pt > t:
            t = pt
        time: Any = t  # one object (boxed once by mypyc) for the claim and the envelope
        if _heappushpop(state, time) is time:  # another thread took ``t``: the clock retries
            now = self._now
            time = now()
        envelope = self._envelope
        env = envelope(topic, event, time, key, self._source, headers, None, self._node)
        if handlers is None:
            return env
        # This thread's state: the thread-local's own dict (made, with the state, on the
        # thread's first look), read without the generic attribute lookup of ``.state``.
        dispatch: DispatchState = self._threads.__dict__["state"]
        if dispatch.busy:  # published by a handler: dispatched after the current event
            dispatch.queue.append((route, env))
            return env
        dispatch.busy = True
        try:
            _next(count)
            for handler in handlers:
                try:
                    handler(event)
                except Exception as exc:
                    self._report(route, handler, env, exc)
            if dispatch.queue:
                self._drain(dispatch.queue)
        except BaseException as exc:  # an interrupt (KeyboardInterrupt...) goes on at once
            if dispatch.queue:  # never dispatched later as if nothing happened: dropped
                self._drop(dispatch.queue, exc)
            raise
        finally:
            dispatch.busy = False
        return env


class ObservedPublisher:
    """An observed bus's hot path (:mod:`tidings.observability`): its :class:`Publisher`,
    with the observer's two per-publish tests carried here, so that a publish neither traced
    nor timed costs the observer no Python frame.

    The bus calls :meth:`publish_plain` as it calls :class:`Publisher`'s. A publish to a
    route of plain sync handlers (``handlers`` given) that ``quick`` says cannot be traced
    and that the metrics countdown does not time is published by ``plain`` and its topic
    appended to ``marks``: the observer counts it there. Every other publish, those the bus
    does not dispatch here (``handlers`` None: a carrier, handlers that are not all plain)
    included, goes whole to ``hook``, which publishes it (traced, timed or neither), counts
    it and, when it timed it, sets :attr:`countdown` anew; the bus returns what it returns.

    Args:
        plain: the bus's own publisher, which publishes the events this one lets through.
        hook: ``hook(route, handlers, count, topic, event, key, headers)`` publishes,
            observed, what the fast path leaves it, and returns the envelope.
        quick: when it returns false, a publish without headers made now is not traced (a
            call into C: :data:`tidings.observability._observer.PublishGate`); ``None``
            without tracing.
        marks: where the topic of each publish finished here is appended; ``None`` without
            metrics (then nothing is counted down).
        no_headers: what the bus passes as ``headers`` when the publisher gave none.

    Attributes:
        countdown: publishes until the next timed one, that one included (with ``marks``):
            each publish takes one; the one that takes the last (the first publish, at
            first) goes to ``hook``, which sets the next gap. Threads racing on it change
            which publishes are timed, never the counts.
    """

    __slots__ = ("_hook", "_marks", "_no_headers", "_plain", "_quick", "countdown")

    def __init__(
        self,
        plain: Publisher,
        hook: Callable[..., Any],
        quick: Callable[[], object] | None,
        marks: list[str] | None,
        no_headers: object,
    ) -> None:
        self._plain = plain
        self._hook = hook
        self._quick = quick
        self._marks = marks
        self._no_headers = no_headers
        self.countdown = 1

    def publish_plain(
        self,
        route: object,
        handlers: tuple[Callable[[Any], object], ...] | None,
        count: Iterator[int],
        topic: str,
        event: object,
        key: str | None,
        headers: object,
    ) -> Any:
        """:meth:`Publisher.publish_plain`, observed (see the class)."""
        marks = self._marks
        if marks is not None:
            countdown = self.countdown - 1
            self.countdown = countdown
            if countdown <= 0:
                return self._hook(route, handlers, count, topic, event, key, headers)
        quick = self._quick
        if handlers is None or (quick is not None and (headers is not self._no_headers or quick())):
            return self._hook(route, handlers, count, topic, event, key, headers)
        plain = self._plain
        env = plain.publish_plain(route, handlers, count, topic, event, key, headers)
        if marks is not None:
            marks.append(topic)
        return env

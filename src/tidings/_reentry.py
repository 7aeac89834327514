"""The bus's re-entrancy guard: which threads are dispatching, and what their handlers published.

An event published from inside a handler, on the thread that is dispatching, is queued and
dispatched after the current event's handlers have all run (breadth first); another thread's
publish dispatches at once. The guard is one :class:`DispatchState` per thread and bus, held
by the bus's :class:`ThreadDispatch` (a :class:`threading.local`), so it takes no lock and
a publish reads it with one lookup (no thread id, no shared set to update): the hot path
(:mod:`tidings._fastpath`) reads the thread-local's per-thread ``__dict__`` and takes
``state`` from it, which makes the state on the thread's first look just as ``.state`` does.
:class:`DispatchState` itself is defined with the publish hot path in :mod:`tidings._fastpath`
(compiled there when tidings' install could: :mod:`tidings._speedups`).

Invariants:

- ``state.busy`` is true exactly while its thread runs one of its bus's dispatches (a
  publish, an emit, a drained event, handed-off async steps); only that thread reads or
  writes its state;
- ``state.queue`` holds, in publish order, the ``(route, envelope)`` pairs its thread's
  handlers published during the current dispatch; the dispatch that set ``busy`` drains it
  before clearing ``busy``. When an exception that is not a reported handler failure (a
  ``KeyboardInterrupt``, a cancelled ``emit``) ends that dispatch first, it empties the
  queue through the bus's ``_drop`` (counted as dropped, logged) before the exception goes
  on: the queue is empty whenever ``busy`` is false, so a thread's next publish never
  dispatches what an interrupted one left.
"""

from __future__ import annotations

import threading

from tidings._speedups import DispatchState

__all__ = ("ThreadDispatch",)


class ThreadDispatch(threading.local):
    """Each thread's :class:`DispatchState` on one bus, made on the thread's first look."""

    def __init__(self) -> None:
        self.state = DispatchState()

"""Dedupe: handle each event id once, dropping redeliveries.

``Dedupe(window=1024)`` remembers the ids of the last ``window`` events each wrapped handler
took, in memory, and drops an event whose id it remembers: the handler is not called, the
call returns :data:`~tidings.middleware.DROPPED` (the bus counts it dropped on the
subscription, not delivered) and ``dropped`` counts it. An id is remembered when its call starts, so a duplicate arriving
while the first is still running is dropped too; a call that fails forgets its id, so a
redelivery after a failure is handled again.

Durable: ``Dedupe(store=bus.store)`` also records each handled id in the store, with the
store's idempotent-consumer records (:meth:`EventStore.commit
<tidings.store.EventStore.commit>` with ``handled_ids``, read back by
:meth:`~tidings.store.EventStore.was_handled`), under the consumer name
``"dedupe:" + consumer`` (default ``consumer``: the handler's ``module.qualname``). So
dedupe holds across a restart and across processes sharing the store; the memory window
then only saves store reads. The id is recorded after the handler returns: a crash between
the two redelivers the event once more (at least once, effectively once).

With a store, async handlers work with every store; sync handlers need a store whose
operations are synchronous (``store.features.sync_append``: memory, SQLite), else they are
refused at subscribe time with :class:`~tidings.InvalidHandlerError`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from tidings.event import Envelope
from tidings.exceptions import InvalidHandlerError
from tidings.middleware.base import DROPPED, Handler, is_async, name_of, wraps

if TYPE_CHECKING:
    from tidings.store.base import EventStore

__all__ = ("Dedupe",)

T = TypeVar("T")


class _Window:
    """The ids one handler took lately, at most ``size`` of them (thread-safe)."""

    __slots__ = ("_ids", "_lock", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, event_id: str) -> bool:
        """Remember ``event_id``; whether it was new."""
        with self._lock:
            ids = self._ids
            if event_id in ids:
                return False
            ids[event_id] = None
            if len(ids) > self.size:
                ids.popitem(last=False)
            return True

    def forget(self, event_id: str) -> None:
        with self._lock:
            self._ids.pop(event_id, None)


def _now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of a store with synchronous operations, which never suspends."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()  # pragma: no cover - only stores with synchronous operations get here
    raise RuntimeError("a store operation suspended in a sync handler's dedupe")


class Dedupe:
    """Middleware dropping events whose id a handler already took (see the module docstring).

    Args:
        window: how many recent ids each handler remembers in memory (at least 1).
        store: also record handled ids in this store, so dedupe holds across restarts.
        consumer: the store's consumer name for the wrapped handler (after ``"dedupe:"``);
            default its ``module.qualname``.

    Attributes:
        dropped: events dropped as duplicates, over every handler wrapped.

    Raises:
        ValueError: a ``window`` below 1.
    """

    def __init__(
        self,
        window: int = 1024,
        *,
        store: EventStore | None = None,
        consumer: str | None = None,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"Dedupe(window=) is an int >= 1, not {window!r}")
        if consumer is not None and (not isinstance(consumer, str) or not consumer.strip()):
            raise ValueError(f"Dedupe(consumer=) is a non-empty name, not {consumer!r}")
        self.window = window
        self.store = store
        self.consumer = consumer
        self._dropped_lock = threading.Lock()
        self.dropped = 0

    def _drop(self) -> None:
        with self._dropped_lock:
            self.dropped += 1

    def __call__(self, handler: Handler) -> Handler:
        window = _Window(self.window)
        store = self.store
        name = "dedupe:" + (self.consumer or name_of(handler))
        if is_async(handler):

            @wraps(handler)
            async def deduped_async(env: Envelope[Any]) -> Any:
                event_id = env.id
                if not window.claim(event_id) or (
                    store is not None and await store.was_handled(name, event_id)
                ):
                    self._drop()
                    return DROPPED
                try:
                    result = await handler(env)
                except BaseException:
                    window.forget(event_id)
                    raise
                if store is not None:
                    await store.commit(name, 0, handled_ids=(event_id,))
                return result

            return deduped_async

        if store is not None and not store.features.sync_append:
            raise InvalidHandlerError(
                f"Dedupe(store=) on the sync handler {name_of(handler)} needs a store with "
                f"synchronous operations (memory, SQLite); {type(store).__name__} is async "
                "only: make the handler a coroutine function"
            )

        @wraps(handler)
        def deduped(env: Envelope[Any]) -> Any:
            event_id = env.id
            if not window.claim(event_id) or (
                store is not None and _now(store.was_handled(name, event_id))
            ):
                self._drop()
                return DROPPED
            try:
                result = handler(env)
            except BaseException:
                window.forget(event_id)
                raise
            if store is not None:
                _now(store.commit(name, 0, handled_ids=(event_id,)))
            return result

        return deduped

    def __repr__(self) -> str:
        return f"Dedupe(window={self.window}, store={self.store!r})"

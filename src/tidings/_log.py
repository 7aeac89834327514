"""The bus's side of the durable log: write-ahead appends and log-following subscriptions.

With ``Bus(store=...)`` every published envelope is appended to the store *before* any handler
sees it (write-ahead), so what a handler saw is always in the log:

- stores that append synchronously (:class:`~tidings.store.MemoryStore`,
  :class:`~tidings.store.SQLiteStore`) append inside ``publish``;
- an async-only store (:class:`~tidings.store.PostgresStore`) is awaited by ``emit``; a
  ``publish`` from another thread waits for the append on the bus's loop; a ``publish`` on
  the loop's own thread cannot wait, so the append and then the dispatch run in a task
  (``aclose`` waits for it; a failed append is logged, as the publisher has returned).

Log-following subscriptions (``from_=`` or ``durable=``) do not sit in the in-process handler
tables: a task follows the store (:meth:`EventStore.subscribe`) and calls the handler for each
matching record in log order, history first and then live, with no gap and no duplicate at the
seam. A durable subscription starts after its checkpoint and commits each handled position;
with ``idempotent=True`` the handled event id is recorded in the same transaction and a record
already handled is skipped. A failing handler is retried ``max_attempts`` times with
exponential backoff, then dead-lettered, and the subscription moves on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from typing import TYPE_CHECKING, Any

from tidings.exceptions import LoopNotRunningError
from tidings.observability._observer import replaying
from tidings.store.base import EventStore, LogSubscription, SupportsSyncAppend
from tidings.subscription import SKIP

if TYPE_CHECKING:
    from tidings.bus import Bus, _Route
    from tidings.event import Envelope
    from tidings.store.records import StoredEvent
    from tidings.subscription import Subscription

__all__ = ("Follower", "Log")

logger = logging.getLogger("tidings")

RETRY_BASE = 0.05
"""Seconds before a log follower's first retry; doubled for each later one."""


class Log:
    """A bus's binding to its store."""

    def __init__(self, bus: Bus, store: EventStore) -> None:
        self.bus = bus
        self.store = store
        self._append_sync = store.append_sync if isinstance(store, SupportsSyncAppend) else None
        self.followers: dict[Subscription[Any], Follower] = {}
        self._pending: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ write-ahead

    def write_ahead(self, route: _Route, env: Envelope[Any]) -> bool:
        """Append ``env`` before it is dispatched. Returns ``False`` when the append (and the
        dispatch after it) was left to a task, so the caller must not dispatch it.

        Raises:
            EncodeError, StoreError: the append failed; nothing was dispatched.
            LoopNotRunningError: an async-only store, and no event loop to run it on.
        """
        if self._append_sync is not None:
            self._append_sync([env])
            self.counted(appended=1)
            return True
        bus = self.bus
        loop = bus._loop
        if loop is None or loop.is_closed():
            raise LoopNotRunningError(
                f"{type(self.store).__name__} appends asynchronously: publish from inside "
                "asyncio after 'async with Bus(store=...)', or use 'await bus.emit(...)'"
            )
        if bus._loop_thread == threading.get_ident():
            task = loop.create_task(self._append_then_dispatch(route, env))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return False
        asyncio.run_coroutine_threadsafe(self.store.append([env]), loop).result()
        self.counted(appended=1)
        return True

    async def _append_then_dispatch(self, route: _Route, env: Envelope[Any]) -> None:
        try:
            await self.store.append([env])
        except Exception:
            logger.exception(
                "could not append event %s (%s) to the log; it was not dispatched",
                env.id,
                env.topic,
                extra={"event_id": env.id, "topic": env.topic},
            )
            return
        self.counted(appended=1)
        self.bus._after_write_ahead(route, env)

    async def append(self, env: Envelope[Any]) -> None:
        """Append ``env`` (for ``emit``)."""
        await self.store.append([env])
        self.counted(appended=1)

    def counted(self, *, appended: int = 0, read: int = 0) -> None:
        """Tell the bus's observer (metrics) of records appended or read."""
        observer = self.bus._observer
        if observer is not None:
            observer.store_counted(appended, read)

    async def settle(self, deadline: float) -> None:
        """Wait until deferred appends are done or the loop time passes ``deadline``."""
        loop = asyncio.get_running_loop()
        while self._pending and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._pending), timeout=remaining)

    # ------------------------------------------------------------------ followers

    def follow(
        self,
        sub: Subscription[Any],
        *,
        start: int,
        durable: str | None,
        idempotent: bool,
        max_attempts: int,
    ) -> None:
        """Deliver the log to ``sub`` (see the module docstring); starts with the loop."""
        follower = Follower(self, sub, start, durable, idempotent, max_attempts)
        self.followers[sub] = follower
        if self.bus._loop is not None and not self.bus._loop.is_closed():
            follower.start(self.bus._loop)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start every follower not yet running."""
        for follower in list(self.followers.values()):
            follower.start(loop)

    def unfollow(self, sub: Subscription[Any]) -> bool:
        """Stop ``sub``'s follower; whether ``sub`` was a log follower."""
        follower = self.followers.pop(sub, None)
        if follower is None:
            return False
        follower.stop()
        return True

    async def aclose(self, deadline: float) -> list[str]:
        """Stop every follower (letting handlers in flight finish until ``deadline``) and
        return what did not finish."""
        followers = list(self.followers.values())
        self.followers.clear()
        for follower in followers:
            follower.stop()
        loop = asyncio.get_running_loop()
        tasks = [f.task for f in followers if f.task is not None and not f.task.done()]
        if tasks and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(tasks, timeout=remaining)
        unfinished = []
        for follower in followers:
            task = follower.task
            if task is not None and not task.done():
                unfinished.append(
                    f"{follower.sub.name}: log follower at position {follower.position}"
                )
                task.cancel()
        return unfinished


class Follower:
    """One log-following subscription: its task, its store subscription, its position."""

    def __init__(
        self,
        log: Log,
        sub: Subscription[Any],
        start: int,
        durable: str | None,
        idempotent: bool,
        max_attempts: int,
    ) -> None:
        self.log = log
        self.sub = sub
        self.position = start
        self.durable = durable
        self.idempotent = idempotent
        self.max_attempts = max_attempts
        self.task: asyncio.Task[None] | None = None
        self._stream: LogSubscription | None = None
        self._stopped = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.task is None and not self._stopped:
            self.task = loop.create_task(self._run(), name=f"tidings-follower:{self.sub.name}")

    def stop(self) -> None:
        """Stop after the record in hand (if any)."""
        self._stopped = True
        if self._stream is not None:
            self._stream.close()
        elif self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        store = self.log.store
        if self.durable is not None:
            self.position = await store.load_checkpoint(self.durable) or self.position
        self._stream = store.subscribe(after=self.position, topic=self.sub.pattern)
        async with self._stream as records:
            async for record in records:
                await self._one(record)
                if self._stopped:
                    return

    async def _one(self, record: StoredEvent) -> None:
        sub, store, name = self.sub, self.log.store, self.durable
        env = record.envelope
        self.log.counted(read=1)
        handled = False
        if sub.event_type is None or isinstance(env.payload, sub.event_type):
            if self.idempotent and name is not None and await store.was_handled(name, env.id):
                pass
            elif sub.accepts(env):
                handled = await self._handle(env)
        self.position = record.position
        if name is not None:
            ids = (env.id,) if handled and self.idempotent else ()
            await store.commit(name, record.position, handled_ids=ids)

    async def _handle(self, env: Envelope[Any]) -> bool:
        """Call the handler, retrying with backoff; dead-letter after the last attempt.
        Returns whether it succeeded."""
        sub = self.sub
        for attempt in range(1, self.max_attempts + 1):
            try:
                with replaying():  # traced as a replay: linked to the event's original trace
                    result = sub.call(sub.argument(env))
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                if attempt == self.max_attempts:
                    self.log.bus._failed(sub, env, exc, attempts=attempt)
                    return False
                await asyncio.sleep(RETRY_BASE * 2 ** (attempt - 1))
            else:
                if result is not SKIP:
                    sub.record_delivered()
                return True
        return False

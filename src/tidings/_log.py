"""The bus's side of the durable log: write-ahead appends and log-following subscriptions.

With ``Bus(store=...)`` every published envelope is appended to the store *before* any handler
sees it (write-ahead), so what a handler saw is always in the log:

- stores that append synchronously (:class:`~tidings.store.MemoryStore`,
  :class:`~tidings.store.SQLiteStore`) append inside ``publish``;
- ``emit`` appends through a FIFO that one task appends in batches (concurrent emits, e.g.
  a gateway's topic targets for the events of one request, share one transaction; an
  ``emit`` returns once its own event is stored);
- an async-only store (:class:`~tidings.store.PostgresStore`) is awaited by ``emit``; a
  ``publish`` from another thread waits for the append on the bus's loop; a ``publish`` on
  the loop's own thread cannot wait, so the event joins a FIFO that one task appends (in
  batches, in publish order) and then dispatches (``aclose`` waits for it; a failed append
  is logged, as the publisher has returned, its events are not dispatched, and
  :attr:`Log.append_failed` is told, if set). An
  ``emit`` on the loop's thread appends through the same FIFO, after what was published
  before it.

Appending together (:meth:`Log.together`, ``Bus.appending_together``): while an
:class:`AppendBatch` is open on the loop's thread, ``publish`` defers its append to that FIFO
on every store, synchronous ones included, so the events published in it are appended in
one transaction and dispatched after it, in publish order; ``await batch.wait()`` returns
once they are, with each one's append error, if any (an event whose append failed is not
dispatched). A gateway publishes the topic targets of the events one request brought in
this way: one transaction for all of them rather than one each.

Read your writes: :meth:`Log.flush` waits until that FIFO is empty, and the bus's reads
(``replay``, ``project``) flush first, so they see every event published before them on any
store. A read straight from the store (``store.read()``) after a ``publish`` on the loop's
thread must ``await bus.flush()`` first on an async-only store.

Log-following subscriptions (``from_=`` or ``durable=``) do not sit in the in-process handler
tables: a task follows the store (:meth:`EventStore.subscribe`) and calls the handler for each
matching record in log order, history first and then live, with no gap and no duplicate at the
seam. A durable subscription starts after its checkpoint and commits each handled position;
with ``idempotent=True`` the handled event id is recorded in the same transaction and a record
already handled is skipped. A failing handler is retried ``max_attempts`` times with
exponential backoff, then dead-lettered, and the subscription moves on. A ``where=`` filter
that raises counts as a failure of the handler. When the store itself fails (a record that
does not decode, a lost connection), the follower logs the error, waits (backing off up to
:data:`FOLLOW_RETRY_MAX` seconds) and resumes from its last handled position: it stalls on an
undecodable record rather than skip it (register its class or upcaster, and it goes on), and
``aclose`` reports a follower that is stalled.

A *transactional* durable subscription (``transactional=True``, stores with
``features.transactions``) hands its handler the :class:`~tidings.store.Transaction` that
commits the checkpoint (:meth:`EventStore.commit_with`): the handler's effect, written through
``transaction.connection``, commits with the checkpoint or not at all, so a crash at any point
neither loses nor repeats it (exactly once in effect). A failed attempt rolls its effect back
before the retry; after the last attempt the event is dead-lettered and the checkpoint moves
on without an effect. The handler gets the transaction as its second argument through
:func:`with_transaction`, which reads it from a context variable the follower sets.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from tidings.exceptions import LoopNotRunningError
from tidings.observability._observer import replaying
from tidings.observability.logs import log_fields
from tidings.store._sync import SyncStore
from tidings.store.base import EventStore, LogSubscription, SupportsSyncAppend
from tidings.subscription import SKIP

if TYPE_CHECKING:
    from tidings._ports import BusPort
    from tidings.event import Envelope
    from tidings.routing import Route
    from tidings.store.records import StoredEvent, Transaction
    from tidings.subscription import Subscription

__all__ = ("AppendBatch", "Follower", "Log", "with_transaction")

logger = logging.getLogger("tidings")

RETRY_BASE = 0.05
"""Seconds before a log follower's first retry; doubled for each later one."""
FOLLOW_RETRY_MAX = 5.0
"""The longest wait, in seconds, before a log follower tries its store again."""


_TRANSACTION: ContextVar[Transaction] = ContextVar("tidings_transaction")


def with_transaction(handler: Callable[..., Any]) -> Callable[[Any], Any]:
    """A one-argument handler calling ``handler(event, transaction)`` with the transaction
    of the commit in progress (see the module docstring); keeps the handler's name,
    signature and kind (coroutine function or not)."""
    if inspect.iscoroutinefunction(handler):

        @functools.wraps(handler)
        async def call_async(arg: Any) -> Any:
            return await handler(arg, _TRANSACTION.get())

        return call_async

    @functools.wraps(handler)
    def call(arg: Any) -> Any:
        return handler(arg, _TRANSACTION.get())

    return call


class AppendBatch:
    """Publishes appended together (see the module docstring): a context manager, open on
    the loop's thread; :meth:`wait` after closing it.

    One future for the whole batch (made by :meth:`wait`), not one per publish: the
    appender settles the batch's publishes in publish order (the FIFO is appended in order),
    recording each one's error, and resolves the future when the last one is settled."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self._size = 0
        self._errors: list[Exception | None] = []
        self._done: asyncio.Future[None] | None = None

    def __enter__(self) -> AppendBatch:
        self._log.batch = self
        return self

    def __exit__(self, *exc: object) -> None:
        self._log.batch = None

    @property
    def size(self) -> int:
        """How many publishes joined the batch so far."""
        return self._size

    def joined(self) -> None:
        """Count one more deferred publish of this batch (settled by :meth:`settled`)."""
        self._size += 1

    def settled(self, error: Exception | None) -> None:
        """The next of the batch's publishes, in publish order, is appended (and
        dispatched) or failed with ``error``."""
        errors = self._errors
        errors.append(error)
        done = self._done
        if len(errors) == self._size and done is not None and not done.done():
            done.set_result(None)

    async def wait(self) -> list[Exception | None]:
        """Wait until every event published in the batch is appended (and dispatched);
        each one's append error, or None, in publish order."""
        while len(self._errors) < self._size:
            done = self._done
            if done is None or done.done():  # none yet, or a cancelled wait cancelled it
                done = self._done = asyncio.get_running_loop().create_future()
            await done
        return list(self._errors)


class Log:
    """A bus's binding to its store; the :class:`~tidings._ports.Carrier` of a bus with a
    store and no transport."""

    def __init__(self, bus: BusPort, store: EventStore) -> None:
        self.bus = bus
        self.store = store
        self._append_sync = store.append_sync if isinstance(store, SupportsSyncAppend) else None
        self.followers: dict[Subscription[Any], Follower] = {}
        # Deferred appends, in publish order: (route, envelope, future, batch); no route marks
        # an emit's append (its future settled, not dispatched), a route a publish's
        # (dispatched after; its batch, if any, told: a publish in an AppendBatch).
        self._fifo: list[
            tuple[Route | None, Envelope[Any], asyncio.Future[None] | None, AppendBatch | None]
        ] = []
        self._appender: asyncio.Task[None] | None = None
        # Told of each deferred publish whose append failed (set by a store-and-forward
        # carrier, which counts the event as pending until then).
        self.append_failed: Callable[[Envelope[Any], Exception], None] | None = None
        self.batch: AppendBatch | None = None
        """The :class:`AppendBatch` open on the loop's thread, if any."""

    def together(self) -> AppendBatch:
        """A new :class:`AppendBatch` (open it with ``with``, on the loop's thread)."""
        return AppendBatch(self)

    # ------------------------------------------------------------------ write-ahead

    def write_ahead(self, route: Route, env: Envelope[Any]) -> bool:
        """Append ``env`` before it is dispatched. Returns ``False`` when the append (and the
        dispatch after it) was left to a task, so the caller must not dispatch it.

        Raises:
            EncodeError, StoreError: the append failed; nothing was dispatched.
            LoopNotRunningError: an async-only store, and no event loop to run it on.
        """
        batch = self.batch
        if self._append_sync is not None and (
            batch is None or self.bus.loop_thread != threading.get_ident()
        ):
            self._append_sync([env])
            self.counted(appended=1)
            return True
        bus = self.bus
        loop = bus.loop
        if loop is None or loop.is_closed():
            raise LoopNotRunningError(
                f"{type(self.store).__name__} appends asynchronously: publish from inside "
                "asyncio after 'async with Bus(store=...)', or use 'await bus.emit(...)'"
            )
        if bus.loop_thread == threading.get_ident():
            if batch is not None:
                batch.joined()
            self._defer(loop, route, env, None, batch)
            return False
        asyncio.run_coroutine_threadsafe(self.store.append([env]), loop).result()
        self.counted(appended=1)
        return True

    def _defer(
        self,
        loop: asyncio.AbstractEventLoop,
        route: Route | None,
        env: Envelope[Any],
        done: asyncio.Future[None] | None,
        batch: AppendBatch | None = None,
    ) -> None:
        self._fifo.append((route, env, done, batch))
        if self._appender is None:
            self._appender = loop.create_task(self._append_deferred(), name="tidings:appender")

    async def _append_deferred(self) -> None:
        """Append the FIFO in batches, in order; then dispatch each publish's event, and
        settle each emit's (or batched publish's) future."""
        try:
            while self._fifo:
                batch, self._fifo = self._fifo, []
                errors = await self._append_batch([item[1] for item in batch])
                for (route, env, done, together), error in zip(batch, errors, strict=True):
                    if route is not None and error is None:
                        self.bus.after_write_ahead(route, env)
                    if together is not None:
                        together.settled(error)
                    elif done is not None:
                        if done.done():  # the emit was cancelled
                            continue
                        if error is None:
                            done.set_result(None)
                        else:
                            done.set_exception(error)
                    elif error is not None:
                        logger.error(
                            "could not append event %s (%s) to the log; it was not dispatched: %s",
                            env.id,
                            env.topic,
                            error,
                            extra={"event_id": env.id, "topic": env.topic},
                        )
                        if self.append_failed is not None:
                            self.append_failed(env, error)
        finally:
            self._appender = None

    async def _append_batch(self, envs: list[Envelope[Any]]) -> list[Exception | None]:
        """Append ``envs`` in one call; if that fails, each alone (appends are idempotent),
        so that one bad event fails alone. The error of each, if any."""
        try:
            await self.store.append(envs)
        except Exception as exc:
            if len(envs) == 1:
                return [exc]
        else:
            self.counted(appended=len(envs))
            return [None] * len(envs)
        errors: list[Exception | None] = []
        for env in envs:
            try:
                await self.store.append([env])
            except Exception as exc:
                errors.append(exc)
            else:
                self.counted(appended=1)
                errors.append(None)
        return errors

    def send(self, env: Envelope[Any]) -> None:
        """Nothing to send after a deferred append: the log is not a transport."""

    async def carry(self, env: Envelope[Any]) -> None:
        """Append ``env`` (for ``emit``) through the FIFO of deferred appends: after every
        event deferred before it, and in one transaction with the other emits that wait
        meanwhile (group commit: concurrent emits cost one store call, not one each). On a
        loop other than the bus's, a synchronous store appends at once."""
        loop = asyncio.get_running_loop()
        if self._append_sync is not None and loop is not self.bus.loop:
            await self.store.append([env])
            self.counted(appended=1)
            return
        done = loop.create_future()
        self._defer(loop, None, env, done)
        await done

    async def flush(self) -> None:
        """Wait until every deferred append (publishes on the loop's thread to an async-only
        store) made so far is done, in the store or failed (failures are logged)."""
        while (task := self._appender) is not None:
            await asyncio.wait({task})

    async def acknowledged(self) -> None:
        """Nothing to wait for: no transport."""

    def counted(self, *, appended: int = 0, read: int = 0) -> None:
        """Tell the bus's observer (metrics) of records appended or read."""
        observer = self.bus.observer
        if observer is not None:
            observer.store_counted(appended, read)

    async def settle(self, deadline: float) -> None:
        """Wait until deferred appends are done or the loop time passes ``deadline``."""
        loop = asyncio.get_running_loop()
        while (task := self._appender) is not None and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait({task}, timeout=remaining)

    # ------------------------------------------------------------------ followers

    def follow(
        self,
        sub: Subscription[Any],
        *,
        start: int,
        durable: str | None,
        idempotent: bool,
        max_attempts: int,
        transactional: bool = False,
    ) -> None:
        """Deliver the log to ``sub`` (see the module docstring); starts with the loop.
        ``transactional``: ``sub``'s handler was made with :func:`with_transaction`."""
        follower = Follower(self, sub, start, durable, idempotent, max_attempts, transactional)
        self.followers[sub] = follower
        if self.bus.loop is not None and not self.bus.loop.is_closed():
            follower.start(self.bus.loop)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start every follower not yet running."""
        for follower in list(self.followers.values()):
            follower.start(loop)

    async def connect(self) -> None:
        """Nothing to connect: the store opens itself."""

    async def disconnect(self, timeout: float) -> None:
        """Nothing to disconnect: followers stop in :meth:`aclose`."""

    def unfollow(self, sub: Subscription[Any]) -> bool:
        """Stop ``sub``'s follower; whether ``sub`` was a log follower."""
        follower = self.followers.pop(sub, None)
        if follower is None:
            return False
        follower.stop()
        return True

    def close_sync(self) -> None:
        """Close the store from synchronous code if it can be (a :class:`SyncStore`) and
        no follower is still running on a loop; otherwise leave it to :meth:`aclose`."""
        running = any(f.task is not None and not f.task.done() for f in self.followers.values())
        if isinstance(self.store, SyncStore) and not running:
            self.store.close_sync()

    async def aclose(self, deadline: float) -> list[str]:
        """Stop every follower (letting handlers in flight finish until ``deadline``), then
        close the store; return what did not finish."""
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
            elif follower.stalled is not None:
                unfinished.append(
                    f"{follower.sub.name}: log follower stalled after position "
                    f"{follower.position}: {follower.stalled}"
                )
        await self.store.aclose()
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
        transactional: bool = False,
    ) -> None:
        self.log = log
        self.sub = sub
        self.position = start
        self.durable = durable
        self.idempotent = idempotent
        self.transactional = transactional and durable is not None
        self.max_attempts = max_attempts
        self.task: asyncio.Task[None] | None = None
        self.stalled: Exception | None = None
        """The store error the follower is waiting to retry after, if any."""
        self._stream: LogSubscription | None = None
        self._stopped = False
        self._backing_off = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.task is None and not self._stopped:
            self.task = loop.create_task(self._run(), name=f"tidings-follower:{self.sub.name}")

    def stop(self) -> None:
        """Stop after the record in hand (if any)."""
        self._stopped = True
        if self._stream is not None and not self._backing_off:
            self._stream.close()
        elif self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        """Follow the store; on a store error, log it, back off and resume."""
        store = self.log.store
        delay = RETRY_BASE
        loaded = self.durable is None
        while not self._stopped:
            try:
                if not loaded:
                    assert self.durable is not None
                    self.position = await store.load_checkpoint(self.durable) or self.position
                    loaded = True
                await self._follow()
                return
            except Exception as exc:
                self.stalled = exc
                logger.error(
                    "log follower %s stalled after position %d: %s; retrying in %.2f s",
                    self.sub.name,
                    self.position,
                    exc,
                    delay,
                    extra=log_fields(subscription=self.sub),
                )
            self._backing_off = True
            try:
                await asyncio.sleep(delay)
            finally:
                self._backing_off = False
            delay = min(delay * 2, FOLLOW_RETRY_MAX)

    async def _follow(self) -> None:
        self._stream = self.log.store.subscribe(after=self.position, topic=self.sub.pattern)
        async with self._stream as records:
            async for record in records:
                self.stalled = None
                await self._one(record)
                if self._stopped:
                    return

    async def _one(self, record: StoredEvent) -> None:
        sub, store, name = self.sub, self.log.store, self.durable
        env = record.envelope
        self.log.counted(read=1)
        wanted = sub.event_type is None or isinstance(env.payload, sub.event_type)
        if wanted and self.idempotent and name is not None:
            wanted = not await store.was_handled(name, env.id)
        if wanted and self.transactional:
            if await self._handle(env, record.position):
                self.position = record.position  # committed with the handler's effect
                return
            wanted = False  # dead-lettered: the checkpoint moves on without an effect
        handled = await self._handle(env) if wanted else False
        if name is not None:
            ids = (env.id,) if handled and self.idempotent else ()
            await store.commit(name, record.position, handled_ids=ids)
        self.position = record.position  # after the commit: a failed commit retries the record

    async def _handle(self, env: Envelope[Any], position: int | None = None) -> bool:
        """Call the handler, retrying with backoff; dead-letter after the last attempt.
        With ``position`` (transactional), each attempt runs in the transaction that
        commits the checkpoint at ``position``. Returns whether it succeeded."""
        sub = self.sub
        for attempt in range(1, self.max_attempts + 1):
            try:
                if not sub.accepts(env):  # a where= that raises fails like the handler
                    return False
                if position is None:
                    result = await self._call(env)
                else:
                    result = await self._call_in_transaction(env, position)
            except Exception as exc:
                if attempt == self.max_attempts:
                    self.log.bus.failures.report(sub, env, exc, attempts=attempt)
                    return False
                await asyncio.sleep(RETRY_BASE * 2 ** (attempt - 1))
            else:
                # Counted here, after the checkpoint's commit (a transactional call that
                # fails to commit is retried, not delivered); SKIP: the handler is gone.
                if result is not SKIP:
                    sub.record_delivered()
                return True
        return False

    async def _call(self, env: Envelope[Any]) -> object:
        """Call the handler once (awaiting it if it is async); its result."""
        with replaying():  # traced as a replay: linked to the event's original trace
            result = self.sub.call(self.sub.argument(env))
        if inspect.isawaitable(result):
            await result
        return result

    async def _call_in_transaction(self, env: Envelope[Any], position: int) -> object:
        """Call the handler once inside the store transaction that commits the checkpoint
        at ``position`` (and the event id, if idempotent); its result."""
        assert self.durable is not None
        outcome: list[object] = []

        async def effect(transaction: Transaction) -> None:
            token = _TRANSACTION.set(transaction)
            try:
                outcome.append(await self._call(env))
            finally:
                _TRANSACTION.reset(token)

        ids = (env.id,) if self.idempotent else ()
        await self.log.store.commit_with(self.durable, position, effect, handled_ids=ids)
        return outcome[0] if outcome else None

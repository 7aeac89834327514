"""A bounded multi-producer multi-consumer ring buffer, for threads and asyncio at once.

:class:`RingBuffer` is the buffer behind queued subscriptions. Any mix of callers may use one
buffer at the same time: threads through the blocking methods (``put``, ``get``...), tasks on
one or several event loops through the ``a``-prefixed coroutines (``aput``, ``aget``...), and
anyone through the ``*_nowait`` methods, which never wait.

Guarantees:

- **Bounded.** It never holds more than ``capacity`` items.
- **Order.** Items leave in the order they entered (FIFO). A batch put by ``put_many`` stays
  contiguous and in order; items put by one producer are got in the order it put them.
- **Nothing lost silently.** An item that was put is got exactly once, unless the overflow
  policy evicted or refused it; each such item is counted in :meth:`RingBuffer.statistics`.
  Counters are exact under any concurrency: at every moment
  ``size == put_count - get_count - dropped_oldest``.
- **Cancellation and timeouts are safe.** A waiting caller is only woken to *try again*;
  items are never handed to a waiter. So a cancelled ``aget`` consumes nothing and a cancelled
  ``aput`` stores nothing (``aput_many`` may have stored a prefix of its batch, see below),
  and a wake-up meant for a waiter that gave up is passed on to the next one.
- **Waking.** Waiters are only signalled when one is actually waiting, and at most one per
  item put (or slot freed), plus one passed on by each woken waiter that gave up. Async waiters are futures on their own loop: woken directly from
  that loop's thread, through ``loop.call_soon_threadsafe`` from any other thread. Waiters
  are served roughly first come first served, but a caller that arrives while a woken waiter
  has not run yet may take the item first; the waiter then waits again at the front.

Overflow policies, applied when a put finds the buffer full:

========================  =================================================================
``"block"`` (default)     wait for room; ``put_nowait`` raises :class:`~tidings.WouldBlock`.
``"drop_oldest"``         evict the oldest item to make room (counted in ``dropped_oldest``).
``"drop_newest"``         discard the incoming item (counted in ``dropped_newest``).
``"error"``               raise :class:`~tidings.QueueFullError` naming the buffer.
========================  =================================================================

The drop policies never wait. ``put_many(items)`` under each policy:

- ``"block"``: stores items in order as room appears, waiting as long as needed (so a batch
  larger than the capacity goes through in pieces). If it stops early (timeout, close,
  cancellation) the items stored so far, a prefix of the batch, stay stored and the rest are
  not; the exception carries a note saying how many were stored.
- ``"drop_oldest"``: stores the whole batch, evicting as many of the oldest items as needed;
  when the batch alone exceeds the capacity, its own first items are evicted too, so exactly
  its last ``capacity`` items remain. Every eviction counts in ``dropped_oldest``.
- ``"drop_newest"``: stores as many of the batch's first items as fit and discards the rest,
  counted in ``dropped_newest`` (the same as putting the items one by one).
- ``"error"``: all or nothing: when the whole batch does not fit, nothing is stored and
  :class:`~tidings.QueueFullError` is raised (always so for a batch larger than the capacity).

``put_many`` returns how many items of the batch it stored: the batch's length, except under
``"drop_newest"``.

:meth:`RingBuffer.close` is idempotent and wakes every waiter. After it, puts raise
:class:`~tidings.QueueClosedError`; gets return what is left, then raise it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Literal, TypeVar, get_args

from tidings.exceptions import QueueClosedError, QueueFullError, WouldBlock

__all__ = ("Overflow", "QueueStatistics", "RingBuffer")

T = TypeVar("T")
R = TypeVar("R")

Overflow = Literal["block", "drop_oldest", "drop_newest", "error"]
"""What a put does when the buffer is full; see the module docstring."""

_get_running_loop = asyncio.events._get_running_loop

# The lock is taken with acquire() and try/finally rather than ``with``: on CPython 3.11 that
# costs half as much, and every put and get pays it.

_ABANDON_LOCK_TIMEOUT = 0.1
"""How long a task destroyed while waiting waits for the lock to unregister itself."""


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """A consistent snapshot of one :class:`RingBuffer`, taken under its lock.

    Attributes:
        name: the buffer's name.
        overflow: its overflow policy.
        size: items held now.
        capacity: the most items it can hold.
        high_water: the largest size it ever had.
        put_count: items stored by puts (including those later evicted by ``drop_oldest``,
            excluding those refused by ``drop_newest``).
        get_count: items returned by gets.
        dropped_oldest: items evicted by ``drop_oldest``.
        dropped_newest: items discarded by ``drop_newest``.
        waiting_producers: threads and tasks waiting in a put now.
        waiting_consumers: threads and tasks waiting in a get now.
        closed: whether :meth:`RingBuffer.close` was called.
    """

    name: str
    overflow: Overflow
    size: int
    capacity: int
    high_water: int
    put_count: int
    get_count: int
    dropped_oldest: int
    dropped_newest: int
    waiting_producers: int
    waiting_consumers: int
    closed: bool

    @property
    def dropped(self) -> int:
        """Items lost to the overflow policy, of either kind."""
        return self.dropped_oldest + self.dropped_newest


class _Wait(Enum):
    """The answer of an attempt that must wait (a sentinel no item can be).

    An attempt given a waiter lists it, under the same hold of the lock, before answering
    ``WAIT``: no wake-up can slip in between.
    """

    WAIT = 0


_WAIT = _Wait.WAIT


class _ThreadWaiter:
    """A thread parked on a lock of its own, which a waker releases.

    ``retry`` marks a waiter that was woken before and found nothing to do: it is listed
    first, ahead of callers that came later.
    """

    __slots__ = ("_lock", "retry")

    def __init__(self, retry: bool) -> None:
        self.retry = retry
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> bool:
        self._lock.release()
        return True

    def wait(self, timeout: float | None) -> bool:
        """Wait to be woken; ``False`` when the timeout passed first."""
        return self._lock.acquire(True, -1 if timeout is None else timeout)


class _AsyncWaiter:
    """A task parked on a future of its own loop (``retry`` as for :class:`_ThreadWaiter`)."""

    __slots__ = ("abandoned", "future", "loop", "retry")

    def __init__(self, loop: asyncio.AbstractEventLoop, retry: bool) -> None:
        self.retry = retry
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.abandoned = False

    def wake(self) -> bool:
        """Resolve the future, thread-safely; ``False`` when nobody can be woken by it."""
        future = self.future
        if future.done() or self.abandoned:  # cancelled or gone: it passes wake-ups on itself
            return False
        loop = self.loop
        if _get_running_loop() is loop:
            future.set_result(None)
            return True
        try:
            loop.call_soon_threadsafe(_resolve, future)
        except RuntimeError:  # the loop is closed: nobody will ever run there again
            return False
        return True


_Waiter = _ThreadWaiter | _AsyncWaiter


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake(waiters: deque[_Waiter], count: int) -> None:
    """Wake up to ``count`` of ``waiters``, oldest first (the buffer's lock is held)."""
    while count > 0 and waiters:
        if waiters.popleft().wake():
            count -= 1


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be None or non-negative, not {timeout!r}")
    return time.monotonic() + timeout


class RingBuffer(Generic[T]):
    """A bounded FIFO buffer shared by any number of producer and consumer threads and tasks.

    Args:
        capacity: the most items it holds; at least 1.
        overflow: what a put does when it is full (see :data:`Overflow` and the module
            docstring).
        name: what errors and statistics call it (a subscription's handler name, say).

    Raises:
        ValueError: for a capacity below 1 or an unknown overflow policy.

    Every method is safe from any thread; the coroutines are safe from any event loop, several
    loops at once included. See the module docstring for the guarantees.
    """

    __slots__ = (
        "__weakref__",
        "_capacity",
        "_closed",
        "_dropped_newest",
        "_dropped_oldest",
        "_get_count",
        "_getters",
        "_high_water",
        "_items",
        "_limit",
        "_lock",
        "_name",
        "_overflow",
        "_putters",
        "_waiting_consumers",
        "_waiting_producers",
    )

    def __init__(self, capacity: int, *, overflow: Overflow = "block", name: str = "queue") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int of at least 1, not {capacity!r}")
        if overflow not in get_args(Overflow):
            raise ValueError(
                f"overflow must be one of {', '.join(get_args(Overflow))}, not {overflow!r}"
            )
        self._capacity = capacity
        self._limit = capacity  # the capacity while open, 0 once closed: one test on the fast path
        self._overflow: Overflow = overflow
        self._name = name
        # Under drop_oldest the deque evicts by itself (in C), on append and on extend.
        self._items: deque[T] = deque(maxlen=capacity if overflow == "drop_oldest" else None)
        self._lock = threading.Lock()
        self._getters: deque[_Waiter] = deque()
        self._putters: deque[_Waiter] = deque()
        self._closed = False
        self._high_water = 0
        self._get_count = 0
        self._dropped_oldest = 0
        self._dropped_newest = 0
        self._waiting_producers = 0
        self._waiting_consumers = 0

    # ------------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        """The most items the buffer holds."""
        return self._capacity

    @property
    def overflow(self) -> Overflow:
        """What a put does when the buffer is full."""
        return self._overflow

    @property
    def name(self) -> str:
        """What errors and statistics call the buffer."""
        return self._name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (items may remain to be got)."""
        return self._closed

    def __len__(self) -> int:
        """How many items the buffer holds now."""
        return len(self._items)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<RingBuffer {self._name!r} {len(self._items)}/{self._capacity} "
            f"overflow={self._overflow} {state}>"
        )

    # ------------------------------------------------------------------ putting

    def put(self, item: T, timeout: float | None = None) -> None:
        """Put one item, waiting for room under ``"block"`` (from a thread, not a loop).

        Args:
            item: the item.
            timeout: the most seconds to wait for room; ``None`` waits as long as needed.

        Raises:
            TimeoutError: if there was no room within ``timeout`` (nothing was stored).
            QueueFullError: if the buffer is full and the policy is ``"error"``.
            QueueClosedError: if the buffer is closed, or is closed while this waits.
            ValueError: if it has to wait and ``timeout`` is negative.
        """
        if self._offer(item) is _WAIT:
            self._wait_thread(lambda waiter: self._offer(item, waiter), True, _deadline(timeout))

    async def aput(self, item: T) -> None:
        """Put one item, waiting for room under ``"block"`` without blocking the loop.

        Cancellation leaves the item unstored. Bound the wait with ``asyncio.timeout()``.

        Raises:
            QueueFullError: if the buffer is full and the policy is ``"error"``.
            QueueClosedError: if the buffer is closed, or is closed while this waits.
        """
        if self._offer(item) is _WAIT:
            await self._wait_async(lambda waiter: self._offer(item, waiter), True)

    def put_nowait(self, item: T) -> None:
        """Put one item without waiting.

        Raises:
            WouldBlock: if the buffer is full and the policy is ``"block"``.
            QueueFullError: if the buffer is full and the policy is ``"error"``.
            QueueClosedError: if the buffer is closed.
        """
        if self._offer(item) is _WAIT:
            raise WouldBlock(
                f"queue {self._name!r} is full ({self._capacity} items); wait with put() or "
                "aput(), or choose a drop policy"
            )

    def put_many(self, items: Iterable[T], timeout: float | None = None) -> int:
        """Put a batch of items in order, waiting for room under ``"block"`` (from a thread).

        What each policy does with a batch that does not fit is in the module docstring.

        Args:
            items: the batch.
            timeout: the most seconds to wait, for the whole batch; ``None`` waits as long as
                needed.

        Returns:
            How many of the items were stored: all of them, except under ``"drop_newest"``.

        Raises:
            TimeoutError: if the batch did not all fit within ``timeout``; the items stored
                by then (a prefix of the batch) stay stored, as a note on the error says.
            QueueFullError: under ``"error"``, if the batch does not fit (nothing is stored).
            QueueClosedError: if the buffer is closed, or is closed while this waits (with a
                note saying how many items were stored).
            ValueError: for a negative timeout.
        """
        deadline = _deadline(timeout)
        attempt = _BatchPut(self, items)
        if attempt.done:
            return attempt.stored
        try:
            return self._wait_thread(attempt, True, deadline)
        except (TimeoutError, QueueClosedError) as exc:
            exc.add_note(attempt.note())
            raise

    async def aput_many(self, items: Iterable[T]) -> int:
        """Put a batch of items in order, waiting for room under ``"block"`` without blocking.

        Like :meth:`put_many`; on cancellation the items stored so far (a prefix of the batch)
        stay stored. Bound the wait with ``asyncio.timeout()``.

        Returns:
            How many of the items were stored: all of them, except under ``"drop_newest"``.

        Raises:
            QueueFullError: under ``"error"``, if the batch does not fit (nothing is stored).
            QueueClosedError: if the buffer is closed, or is closed while this waits (with a
                note saying how many items were stored).
        """
        attempt = _BatchPut(self, items)
        if attempt.done:
            return attempt.stored
        try:
            return await self._wait_async(attempt, True)
        except (QueueClosedError, asyncio.CancelledError) as exc:
            exc.add_note(attempt.note())
            raise

    # ------------------------------------------------------------------ getting

    def get(self, timeout: float | None = None) -> T:
        """Remove and return the oldest item, waiting for one (from a thread, not a loop).

        Args:
            timeout: the most seconds to wait; ``None`` waits as long as needed.

        Raises:
            TimeoutError: if no item came within ``timeout``.
            QueueClosedError: if the buffer is closed and empty, or is closed while this waits.
            ValueError: if it has to wait and ``timeout`` is negative.
        """
        item = self._take()
        if item is _WAIT:
            return self._wait_thread(self._take, False, _deadline(timeout))
        return item

    async def aget(self) -> T:
        """Remove and return the oldest item, waiting for one without blocking the loop.

        Cancellation consumes nothing. Bound the wait with ``asyncio.timeout()``.

        Raises:
            QueueClosedError: if the buffer is closed and empty, or is closed while this waits.
        """
        item = self._take()
        if item is _WAIT:
            return await self._wait_async(self._take, False)
        return item

    def get_nowait(self) -> T:
        """Remove and return the oldest item without waiting.

        Raises:
            WouldBlock: if the buffer is empty (and open).
            QueueClosedError: if the buffer is closed and empty.
        """
        item = self._take()
        if item is _WAIT:
            raise self._empty_error()
        return item

    def get_many(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Wait for at least one item, then remove and return up to ``max_items`` (from a thread).

        It returns as soon as one item is there, with as many as are there (up to
        ``max_items``), oldest first, and never waits for more.

        Raises:
            TimeoutError: if no item came within ``timeout``.
            QueueClosedError: if the buffer is closed and empty, or is closed while this waits.
            ValueError: for ``max_items`` below 1 or a negative timeout.
        """
        deadline = _deadline(timeout)
        batch = self._take_many(max_items)
        if batch is _WAIT:
            return self._wait_thread(
                lambda waiter: self._take_many(max_items, waiter), False, deadline
            )
        return batch

    async def aget_many(self, max_items: int) -> list[T]:
        """Wait for at least one item without blocking the loop, then return up to ``max_items``.

        Like :meth:`get_many`. Cancellation consumes nothing.

        Raises:
            QueueClosedError: if the buffer is closed and empty, or is closed while this waits.
            ValueError: for ``max_items`` below 1.
        """
        batch = self._take_many(max_items)
        if batch is _WAIT:
            return await self._wait_async(lambda waiter: self._take_many(max_items, waiter), False)
        return batch

    def get_many_nowait(self, max_items: int) -> list[T]:
        """Remove and return up to ``max_items`` items, oldest first, without waiting.

        Raises:
            WouldBlock: if the buffer is empty (and open).
            QueueClosedError: if the buffer is closed and empty.
            ValueError: for ``max_items`` below 1.
        """
        batch = self._take_many(max_items)
        if batch is _WAIT:
            raise self._empty_error()
        return batch

    # ------------------------------------------------------------------ closing, statistics

    def close(self) -> None:
        """Refuse further puts and wake every waiting producer and consumer. Idempotent.

        Waiting and later puts raise :class:`~tidings.QueueClosedError`; gets return the
        items left, then raise it.
        """
        lock = self._lock
        lock.acquire()
        try:
            self._closed = True
            self._limit = 0
            _wake(self._getters, len(self._getters))
            _wake(self._putters, len(self._putters))
        finally:
            lock.release()

    def statistics(self) -> QueueStatistics:
        """A consistent snapshot of the buffer's size, counters and waiters."""
        lock = self._lock
        lock.acquire()
        try:
            return QueueStatistics(
                name=self._name,
                overflow=self._overflow,
                size=len(self._items),
                capacity=self._capacity,
                high_water=self._high_water,
                put_count=self._get_count + len(self._items) + self._dropped_oldest,
                get_count=self._get_count,
                dropped_oldest=self._dropped_oldest,
                dropped_newest=self._dropped_newest,
                waiting_producers=self._waiting_producers,
                waiting_consumers=self._waiting_consumers,
                closed=self._closed,
            )
        finally:
            lock.release()

    # ------------------------------------------------------------------ attempts
    # Each takes the lock, does what it can without waiting, and answers _WAIT when the caller
    # must wait, having listed ``waiter`` (if given) under the same hold of the lock.

    def _offer(self, item: T, waiter: _Waiter | None = None) -> _Wait | None:
        """Store ``item`` as the policy says; ``_WAIT`` when it must wait for room."""
        lock = self._lock
        lock.acquire()
        try:
            items = self._items
            size = len(items)
            if size < self._limit:
                items.append(item)
                if size >= self._high_water:
                    self._high_water = size + 1
                if self._getters:
                    _wake(self._getters, 1)
                return None
            if self._closed:
                raise self._closed_error()
            overflow = self._overflow
            if overflow == "block":
                if waiter is not None:
                    self._enlist(waiter, True)
                return _WAIT
            if overflow == "drop_oldest":
                items.append(item)  # the deque's maxlen evicts the oldest
                self._dropped_oldest += 1
            elif overflow == "drop_newest":
                self._dropped_newest += 1
            else:
                raise self._full_error(1)
            return None
        finally:
            lock.release()

    def _offer_many(self, batch: Sequence[T], start: int, waiter: _Waiter | None) -> int:
        """Store ``batch[start:]`` as the policy says; return how many items were stored.

        Under ``"block"`` that is as many as fit (``waiter`` is listed when some do not);
        under the other policies the whole rest of the batch is dealt with at once (stored,
        evicted, discarded or refused).
        """
        lock = self._lock
        lock.acquire()
        try:
            if self._closed:
                raise self._closed_error()
            items = self._items
            size = len(items)
            count = len(batch) - start
            room = self._capacity - size
            if count <= room:
                items.extend(batch[start:] if start else batch)
                stored = count
            else:
                overflow = self._overflow
                if overflow == "drop_oldest":
                    items.extend(batch[start:] if start else batch)  # maxlen evicts the oldest
                    self._dropped_oldest += size + count - len(items)
                    stored = count
                elif overflow == "error":
                    raise self._full_error(count)
                else:
                    items.extend(batch[start : start + room])
                    stored = room
                    if overflow == "drop_newest":
                        self._dropped_newest += count - room
                    elif waiter is not None:
                        self._enlist(waiter, True)
            if stored:
                size = len(items)
                if size > self._high_water:
                    self._high_water = size
                if self._getters:
                    _wake(self._getters, stored)
            return stored
        finally:
            lock.release()

    def _take(self, waiter: _Waiter | None = None) -> T | _Wait:
        """Remove the oldest item; ``_WAIT`` when there is none yet."""
        lock = self._lock
        lock.acquire()
        try:
            items = self._items
            if items:
                item = items.popleft()
                self._get_count += 1
                if self._putters:
                    _wake(self._putters, 1)
                return item
            if self._closed:
                raise self._drained_error()
            if waiter is not None:
                self._enlist(waiter, False)
            return _WAIT
        finally:
            lock.release()

    def _take_many(self, max_items: int, waiter: _Waiter | None = None) -> list[T] | _Wait:
        """Remove up to ``max_items`` of the oldest items; ``_WAIT`` when there is none yet."""
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items!r}")
        lock = self._lock
        lock.acquire()
        try:
            items = self._items
            size = len(items)
            if not size:
                if self._closed:
                    raise self._drained_error()
                if waiter is not None:
                    self._enlist(waiter, False)
                return _WAIT
            if max_items >= size:
                batch = list(items)
                items.clear()
            else:
                popleft = items.popleft
                batch = [popleft() for _ in range(max_items)]
            taken = len(batch)
            self._get_count += taken
            if self._putters:
                _wake(self._putters, taken)
            return batch
        finally:
            lock.release()

    # ------------------------------------------------------------------ waiting

    def _wait_thread(
        self, attempt: Callable[[_Waiter | None], R | _Wait], producer: bool, deadline: float | None
    ) -> R:
        """Repeat ``attempt`` until it succeeds, parking the thread between tries."""
        retry = False
        while True:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:  # one last try, without waiting
                    result = attempt(None)
                    if result is _WAIT:
                        raise TimeoutError(f"timed out waiting on queue {self._name!r}")
                    return result
            waiter = _ThreadWaiter(retry)
            result = attempt(waiter)
            if result is not _WAIT:
                return result
            woken = False
            try:
                woken = waiter.wait(timeout)
            finally:
                self._delist(waiter, producer, woken)
            retry = woken

    async def _wait_async(
        self, attempt: Callable[[_Waiter | None], R | _Wait], producer: bool
    ) -> R:
        """Repeat ``attempt`` until it succeeds, parking the task between tries."""
        loop = asyncio.get_running_loop()
        retry = False
        while True:
            waiter = _AsyncWaiter(loop, retry)
            result = attempt(waiter)
            if result is not _WAIT:
                return result
            try:
                await waiter.future
            except GeneratorExit:
                # The task is being destroyed unfinished (its loop was abandoned), perhaps by
                # the garbage collector while this very thread holds the lock: do not wait for
                # the lock for long, and make sure no wake-up is ever spent on this waiter. (If
                # the lock stays busy, waiting_* keeps counting this waiter.)
                waiter.abandoned = True
                self._delist(waiter, producer, False, lock_timeout=_ABANDON_LOCK_TIMEOUT)
                raise
            except BaseException:
                self._delist(waiter, producer, False)
                raise
            self._delist(waiter, producer, True)
            retry = True

    def _enlist(self, waiter: _Waiter, producer: bool) -> None:
        """List a waiter (lock held); one that waits again goes first."""
        waiters = self._putters if producer else self._getters
        if waiter.retry:
            waiters.appendleft(waiter)
        else:
            waiters.append(waiter)
        if producer:
            self._waiting_producers += 1
        else:
            self._waiting_consumers += 1

    def _delist(
        self, waiter: _Waiter, producer: bool, woken: bool, *, lock_timeout: float = -1
    ) -> None:
        """Unlist a waiter that stopped waiting, passing on a wake-up it will not use.

        A waiter that was not woken (timeout, cancellation, interruption) may still have been
        picked by a waker meanwhile: then it is no longer listed, and the wake-up goes to the
        next waiter if the buffer still has room (or items) for it. It gives up when the lock
        stays busy for ``lock_timeout`` seconds.
        """
        lock = self._lock
        if not lock.acquire(True, lock_timeout):
            return
        try:
            if producer:
                self._waiting_producers -= 1
            else:
                self._waiting_consumers -= 1
            if woken:
                return
            waiters = self._putters if producer else self._getters
            try:
                waiters.remove(waiter)
            except ValueError:  # picked by a waker: pass its wake-up on
                if producer:
                    if len(self._items) < self._capacity:
                        _wake(waiters, 1)
                elif self._items:
                    _wake(waiters, 1)
        finally:
            lock.release()

    # ------------------------------------------------------------------ errors

    def _closed_error(self) -> QueueClosedError:
        return QueueClosedError(f"queue {self._name!r} is closed; it accepts no more items")

    def _drained_error(self) -> QueueClosedError:
        return QueueClosedError(f"queue {self._name!r} is closed and every item has been got")

    def _empty_error(self) -> WouldBlock:
        return WouldBlock(
            f"queue {self._name!r} is empty; wait with get() or aget(), or try again later"
        )

    def _full_error(self, count: int) -> QueueFullError:
        what = "one more item" if count == 1 else f"{count} more items"
        return QueueFullError(
            f"queue {self._name!r} cannot take {what}: it holds {len(self._items)} of "
            f"{self._capacity} and its overflow policy is 'error'; consume faster, raise the "
            "capacity or choose another policy",
            name=self._name,
            capacity=self._capacity,
        )


class _BatchPut(Generic[T]):
    """One ``put_many``: its first try at construction, then the attempt that stores the rest."""

    __slots__ = ("_batch", "_buffer", "done", "stored")

    def __init__(self, buffer: RingBuffer[T], items: Iterable[T]) -> None:
        self._buffer = buffer
        self._batch = items if isinstance(items, list | tuple) else list(items)
        self.stored = buffer._offer_many(self._batch, 0, None)
        self.done = self.stored == len(self._batch) or buffer.overflow != "block"
        """Whether the batch was dealt with (under ``"drop_newest"``, not all stored)."""

    def __call__(self, waiter: _Waiter | None) -> int | _Wait:
        batch = self._batch
        self.stored += self._buffer._offer_many(batch, self.stored, waiter)
        return self.stored if self.stored == len(batch) else _WAIT

    def note(self) -> str:
        return f"{self.stored} of the batch's {len(self._batch)} items were stored"

"""Queued delivery: bounded buffers, worker threads or tasks, batches.

A queued subscription puts each accepted envelope into a bounded
:class:`~tidings.queues.RingBuffer` and returns; workers take envelopes out and call the
handler. Sync handlers get worker threads, coroutine functions get worker tasks on the bus's
loop, and a subscription on a shared :class:`~tidings.scheduling.WorkerPool` is served by the
pool's workers instead.

Bounds: a worker takes one envelope at a time (one batch, for a batch handler), so a
subscription never holds more than ``maxsize`` waiting envelopes plus one (one batch) in each
worker's hands, and its overflow policy acts as soon as the buffers are full.

Order: with ``workers=N`` the subscription has N buffers (partitions), one per worker.
Envelopes with the same ``key`` always go to the same partition, so they are handled in
publish order; envelopes without a key are spread round-robin. A key's partition is chosen
by :func:`stable_hash` of the key (not Python's ``hash()``, which changes from process to
process), so the same keys meet the same partitions in every run.

Capacity: ``maxsize`` is the subscription's total: its N partitions hold ``maxsize``
envelopes between them, split as evenly as possible (the first ``maxsize % N`` partitions
hold one more), so ``maxsize`` must be at least N. A partition's overflow policy acts when
that partition is full.

Batches: a batch handler receives a list of payloads (or envelopes). A worker takes what is
waiting, up to the current batch size, and waits at most ``max_wait`` seconds after the first
envelope for more. With ``adaptive=True`` (the default) the batch size starts at
``min_size`` and, after each batch, doubles (up to ``max_size``) while the buffer is more than
80% full and halves (down to ``min_size``) while it is less than 20% full: big batches while
the buffer fills faster than it drains, small ones (low latency) when it runs light.

Failures: a handler that raises fails every envelope of its call (one, or the whole batch);
each is counted and dead-lettered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from heapq import heappushpop as _heappushpop
from typing import TYPE_CHECKING, Any, NoReturn
from zlib import crc32 as _crc32

from tidings.dispatch import acall_counted, call_counted
from tidings.event import Envelope
from tidings.exceptions import InvalidHandlerError, QueueClosedError, WouldBlock
from tidings.observability.logs import log_fields
from tidings.queues import Overflow, RingBuffer
from tidings.subscription import count_value

if TYPE_CHECKING:
    from tidings.scheduling import WorkerPool
    from tidings.subscription import Subscription

__all__ = ("Batch", "Queued")

logger = logging.getLogger("tidings")
_get_ident = threading.get_ident

FailureHook = Callable[["Subscription[Any]", Envelope[Any], BaseException], None]


def stable_hash(key: str) -> int:
    """A hash of ``key`` that is the same in every process (unlike ``hash()``): CRC-32 of
    its UTF-8 bytes, mixed by a multiplication so keys that differ only in their last
    character spread over small numbers of partitions too (16 bits)."""
    return ((_crc32(key.encode()) * 0x9E3779B1) & 0xFFFFFFFF) >> 16


@dataclass(frozen=True, slots=True)
class Batch:
    """How a batch handler's lists are formed (see the module docstring for the rule).

    Attributes:
        max_size: the largest list handed to the handler.
        max_wait: seconds a worker waits after the first envelope for the list to fill.
        adaptive: adapt the size to the buffer's fill between ``min_size`` and ``max_size``.
        min_size: the smallest adaptive size.

    Raises:
        TypeError: a size that is not an int, or a wait that is not a number of seconds.
        ValueError: a size below 1 or a negative wait.
    """

    max_size: int = 256
    max_wait: float = 0.05
    adaptive: bool = True
    min_size: int = 16

    def __post_init__(self) -> None:
        for name in ("max_size", "min_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Batch({name}=) must be an int, not {type(value).__name__}")
        if isinstance(self.max_wait, bool) or not isinstance(self.max_wait, int | float):
            raise TypeError(f"Batch(max_wait=) must be seconds, not {type(self.max_wait).__name__}")
        if self.max_size < 1 or self.min_size < 1:
            raise ValueError(
                f"batch sizes must be positive, not max_size={self.max_size}, "
                f"min_size={self.min_size}"
            )
        if self.max_wait < 0:
            raise ValueError(f"max_wait must be >= 0 seconds, not {self.max_wait}")

    def first_size(self) -> int:
        """The size of the first batch."""
        return min(self.min_size, self.max_size) if self.adaptive else self.max_size

    def next_size(self, size: int, fill: float) -> int:
        """The size after a batch, given the buffer's fill ratio (0.0 to 1.0)."""
        if not self.adaptive:
            return size
        if fill > 0.8:
            return min(self.max_size, size * 2)
        if fill < 0.2:
            return max(min(self.min_size, self.max_size), size // 2)
        return size


class Queued:
    """The buffers and workers of one queued subscription.

    Args:
        sub: the subscription served.
        workers: worker threads or tasks (ignored with ``pool``).
        maxsize: the total capacity of its buffers.
        overflow: the buffers' overflow policy.
        batch: hand the handler lists, formed as this says.
        pool: serve from this shared pool instead of own workers.
        weight: the subscription's share of the pool.
        on_failure: called for each envelope whose handler call raised.
        on_drained: called once, from whichever thread gets there, when it is closed and
            nothing it accepted is left to handle (a stream's buffer: at once when closed).
        external: no workers: the buffer is consumed by someone else (a stream).

    Raises:
        ValueError: for a non-positive ``workers`` or ``maxsize``, or an unknown ``overflow``.
        InvalidHandlerError: if ``batch`` is not a :class:`Batch`.

    Workers never die silently: an unexpected error of the bus's own (not the handler's) is
    logged at ERROR with the log fields (see :mod:`tidings.observability.logs`); one met
    while serving envelopes leaves them counted as handled and the worker goes on.
    """

    def __init__(
        self,
        sub: Subscription[Any],
        *,
        workers: int,
        maxsize: int,
        overflow: Overflow,
        batch: Batch | None,
        pool: WorkerPool | None,
        weight: float,
        on_failure: FailureHook,
        on_drained: Callable[[Queued], None],
        external: bool = False,
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, not {workers!r}")
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive int, not {maxsize!r}")
        count = 1 if pool is not None else workers
        if maxsize < count:
            raise ValueError(
                f"maxsize is the subscription's total buffer, split between its {count} "
                f"workers' partitions, so it must be at least {count}, not {maxsize!r}"
            )
        given: object = batch  # annotations are not enforced at run time
        if given is not None and not isinstance(given, Batch):
            raise InvalidHandlerError(
                f"batch= takes a tidings.Batch (for example Batch(max_size=256)), not "
                f"{type(given).__name__} {given!r}"
            )
        share, extra = divmod(maxsize, count)
        name = sub.name
        self.partitions = [
            RingBuffer[Envelope[Any]](
                share + (i < extra),
                overflow=overflow,
                name=name if count == 1 else f"{name}[{i}]",
            )
            for i in range(count)
        ]
        self.sub = sub
        self.batch = batch
        self.pool = pool
        self.weight = weight
        self.overflow = overflow
        self.external = external
        self._on_failure = on_failure
        self._on_drained: Callable[[Queued], None] | None = on_drained  # None once called
        self.closed = False
        self._spread = itertools.count()
        self._threads: list[threading.Thread] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._handled = 0
        self._progress = threading.Condition()
        self._refused = itertools.count()
        self._high_water = [0]  # the most the partitions held at once (several partitions)
        # Who is serving it right now: worker (or pool) threads' idents and worker tasks.
        self._serving: set[object] = set()

    # ------------------------------------------------------------------ intake

    def partition(self, key: str | None) -> RingBuffer[Envelope[Any]]:
        """The buffer an envelope with ``key`` goes to."""
        parts = self.partitions
        if len(parts) == 1:
            return parts[0]
        index = next(self._spread) if key is None else stable_hash(key)
        return parts[index % len(parts)]

    def offer(self, env: Envelope[Any], *, can_wait: bool) -> None:
        """Put ``env`` in its buffer, as the overflow policy says.

        Under ``"block"`` a full buffer makes the caller wait when ``can_wait`` (a thread that
        is not the one the consumers need) and the caller is not one of this subscription's
        own workers (serving it, it would wait for itself), else raises
        :class:`~tidings.WouldBlock`.

        The subscription's last envelope (``once=True``: it is no longer active) closes the
        buffer behind it, whether it was stored or refused.

        Raises:
            WouldBlock: full under ``"block"`` and the caller cannot wait.
            QueueFullError: full under ``"error"``.
            QueueClosedError: the subscription was cancelled meanwhile.
        """
        buffer = self.partition(env.key)
        own = can_wait and _get_ident() in self._serving
        try:
            if can_wait and not own:
                buffer.put(env)
            else:
                buffer.put_nowait(env)
        except Exception as exc:
            self._refuse(exc, buffer, own)
        finally:
            if not self.sub.active:
                self.close()
        self._stored()

    async def aoffer(self, env: Envelope[Any]) -> None:
        """Put ``env`` in its buffer, awaiting room under ``"block"``.

        The last envelope closes the buffer behind it, as in :meth:`offer`. One of the
        subscription's own worker tasks does not wait (it would wait for itself).

        Raises:
            WouldBlock: full under ``"block"`` and the caller is one of its own worker tasks.
            QueueFullError: full under ``"error"``.
            QueueClosedError: the subscription was cancelled meanwhile.
        """
        buffer = self.partition(env.key)
        try:
            if asyncio.current_task() in self._serving:
                buffer.put_nowait(env)
            else:
                await buffer.aput(env)
        except Exception as exc:
            self._refuse(exc, buffer, True)
        finally:
            if not self.sub.active:
                self.close()
        self._stored()

    def _stored(self) -> None:
        """After a put: note the combined depth of several partitions (one partition keeps
        its own high-water mark); wake the pool."""
        parts = self.partitions
        if len(parts) > 1:
            # One C call each, so atomic under the GIL: a snapshot of every partition's size,
            # then max(mark, size) kept in the one-item heap. Sampled after each put, when
            # the combined size can have grown: never more than the buffers held at once.
            _heappushpop(self._high_water, sum(map(len, parts)))
        if self.pool is not None:
            self.pool.ready(self)

    def _refuse(self, exc: Exception, buffer: RingBuffer[Envelope[Any]], own: bool) -> NoReturn:
        """Raise for a put that raised ``exc``: counted as refused unless the buffer was
        closed; a :class:`~tidings.WouldBlock` is replaced by one saying why the event cannot
        wait here."""
        if isinstance(exc, QueueClosedError):
            raise exc
        next(self._refused)
        if not isinstance(exc, WouldBlock):
            raise exc
        where = (
            "this is one of its own workers, which would wait for itself"
            if own
            else "its consumers run on this thread's event loop"
        )
        raise WouldBlock(
            f"{self.sub.name} is full ({buffer.capacity} events, overflow='block') and "
            f"{where}, so the event cannot wait for room here; use 'await bus.emit(...)' "
            "or publish from another thread, raise maxsize, or choose a drop policy"
        ) from None

    # ------------------------------------------------------------------ workers

    def start(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Start own workers: threads now; tasks once ``loop`` is known. Idempotent."""
        if self.external:
            return
        if self.pool is not None:
            self.pool.attach(self, loop)
            return
        if self.sub.is_async:
            if loop is not None and not self._tasks:
                self._tasks = [
                    loop.create_task(self._async_worker(p), name=f"tidings-worker:{p.name}")
                    for p in self.partitions
                ]
            return
        if not self._threads:
            self._threads = [
                threading.Thread(
                    target=self._thread_worker,
                    args=(p,),
                    name=f"tidings-worker:{p.name}",
                    daemon=True,
                )
                for p in self.partitions
            ]
            for thread in self._threads:
                thread.start()

    def _thread_worker(self, buffer: RingBuffer[Envelope[Any]]) -> None:
        try:
            self._take_and_serve(buffer)
        except Exception:
            self._worker_stopped(buffer)

    def _worker_stopped(self, buffer: RingBuffer[Envelope[Any]]) -> None:
        logger.exception(
            "a worker of %s (%s) stopped on an unexpected error; %d event(s) wait in its buffer",
            self.sub.name,
            buffer.name,
            len(buffer),
            extra=log_fields(None, self.sub),
        )

    def _take_and_serve(self, buffer: RingBuffer[Envelope[Any]]) -> None:
        size = self.batch.first_size() if self.batch is not None else 1
        while True:
            try:
                envs = buffer.get_many(size)
                if self.batch is not None:
                    envs = self._fill(buffer, envs, size)
            except QueueClosedError:
                return
            self.serve(envs)
            if self.batch is not None:
                size = self.batch.next_size(size, len(buffer) / buffer.capacity)

    def _fill(
        self, buffer: RingBuffer[Envelope[Any]], envs: list[Envelope[Any]], size: int
    ) -> list[Envelope[Any]]:
        assert self.batch is not None
        deadline = time.monotonic() + self.batch.max_wait
        while len(envs) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                envs.extend(buffer.get_many(size - len(envs), timeout=remaining))
            except (TimeoutError, QueueClosedError):
                break
        return envs

    async def _async_worker(self, buffer: RingBuffer[Envelope[Any]]) -> None:
        try:
            await self._atake_and_serve(buffer)
        except Exception:
            self._worker_stopped(buffer)

    async def _atake_and_serve(self, buffer: RingBuffer[Envelope[Any]]) -> None:
        size = self.batch.first_size() if self.batch is not None else 1
        while True:
            try:
                envs = await buffer.aget_many(size)
                if self.batch is not None:
                    envs = await self._afill(buffer, envs, size)
            except QueueClosedError:
                return
            await self.aserve(envs)
            if self.batch is not None:
                size = self.batch.next_size(size, len(buffer) / buffer.capacity)

    async def _afill(
        self, buffer: RingBuffer[Envelope[Any]], envs: list[Envelope[Any]], size: int
    ) -> list[Envelope[Any]]:
        assert self.batch is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch.max_wait
        while len(envs) < size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    envs.extend(await buffer.aget_many(size - len(envs)))
            except (TimeoutError, QueueClosedError):
                break
        return envs

    # ------------------------------------------------------------------ handling

    def serve(self, envs: Sequence[Envelope[Any]]) -> None:
        """Handle envelopes taken from the buffers (sync handler) and account for them.
        Raises nothing: an unexpected error is logged (see the class docstring)."""
        me = _get_ident()
        self._serving.add(me)
        try:
            self.handle(envs)
        except Exception:
            self._unexpected(envs)
        finally:
            self._serving.discard(me)
            self._finished(len(envs))

    async def aserve(self, envs: Sequence[Envelope[Any]]) -> None:
        """Handle envelopes taken from the buffers (coroutine handler), accounting for them.
        Raises nothing but cancellation: an unexpected error is logged."""
        me = asyncio.current_task()
        self._serving.add(me)
        try:
            await self.ahandle(envs)
        except Exception:
            self._unexpected(envs)
        finally:
            self._serving.discard(me)
            self._finished(len(envs))

    def _unexpected(self, envs: Sequence[Envelope[Any]]) -> None:
        logger.exception(
            "a worker of %s failed unexpectedly while serving %d event(s) from event %s; "
            "it goes on with the next",
            self.sub.name,
            len(envs),
            envs[0].id,
            extra=log_fields(envs[0], self.sub),
        )

    def _finished(self, n: int) -> None:
        with self._progress:
            self._handled += n
            self._progress.notify_all()
        if self.closed:
            self._check_drained()

    def _check_drained(self) -> None:
        """Call ``on_drained`` if closed and nothing is left to handle (once)."""
        with self._progress:
            hook = self._on_drained
            if hook is None or self.pending():
                return
            self._on_drained = None
        hook(self)

    def handle(self, envs: Sequence[Envelope[Any]]) -> None:
        """Call the sync handler for ``envs`` (one call per envelope, or one per batch)."""
        sub = self.sub
        if self.batch is not None:
            try:
                call_counted(sub, [sub.argument(e) for e in envs], len(envs))
            except Exception as exc:
                self._failed(envs, exc)
            return
        for env in envs:
            try:
                call_counted(sub, sub.argument(env))
            except Exception as exc:
                self._failed((env,), exc)

    async def ahandle(self, envs: Sequence[Envelope[Any]]) -> None:
        """Await the coroutine handler for ``envs`` (one call per envelope, or per batch)."""
        sub = self.sub
        if self.batch is not None:
            try:
                await acall_counted(sub, [sub.argument(e) for e in envs], len(envs))
            except Exception as exc:
                self._failed(envs, exc)
            return
        for env in envs:
            try:
                await acall_counted(sub, sub.argument(env))
            except Exception as exc:
                self._failed((env,), exc)

    def _failed(self, envs: Sequence[Envelope[Any]], exc: Exception) -> None:
        for env in envs:
            self._on_failure(self.sub, env, exc)

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Refuse new envelopes; workers finish what the buffers hold, then stop. Idempotent."""
        for buffer in self.partitions:
            buffer.close()
        self.closed = True
        if self.pool is not None:
            self.pool.ready(self)
        self._check_drained()

    def pending(self) -> int:
        """Envelopes accepted but not yet handled: waiting, or in a worker's hands; for a
        stream's buffer (``external``), the envelopes still in it (its reader took the rest).

        Exact: every envelope stored and not evicted by ``drop_oldest`` is either still in a
        buffer or handled (successfully or not) exactly once.
        """
        if self.external:
            return sum(len(p) for p in self.partitions)
        stats = [p.statistics() for p in self.partitions]
        with self._progress:
            return sum(s.put_count - s.dropped_oldest for s in stats) - self._handled

    def wait_handled(self, timeout: float) -> bool:
        """Block until nothing is pending or ``timeout`` seconds pass; whether it drained."""
        if self.external:
            return True  # its reader decides when it is done
        with self._progress:
            return self._progress.wait_for(
                lambda: self.pending() == 0, timeout=None if math.isinf(timeout) else timeout
            )

    async def wait_idle(self, deadline: float) -> None:
        """Wait without blocking the loop until nothing is pending or the loop time passes
        ``deadline``."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0 and self.pending():
            await asyncio.to_thread(self.wait_handled, remaining)

    def cancel_workers(self) -> None:
        """Stop worker tasks that did not finish in time."""
        for task in self._tasks:
            task.cancel()

    def levels(self) -> tuple[int, int, int]:
        """``(queue depth, high-water mark, dropped by policy)`` across the partitions."""
        stats = [p.statistics() for p in self.partitions]
        depth = sum(s.size for s in stats)
        high = stats[0].high_water if len(stats) == 1 else self._high_water[0]
        dropped = sum(s.dropped for s in stats) + _value(self._refused)
        return depth, high, dropped


def _value(counter: itertools.count[int]) -> int:
    return count_value(counter)

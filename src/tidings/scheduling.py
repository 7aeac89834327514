"""Weighted fair scheduling: one worker pool shared by several queued subscriptions.

A :class:`WorkerPool` serves the buffers of every queued subscription attached to it with
**deficit round robin** (Shreedhar & Varghese, 1995). The pool visits backlogged
subscriptions in turn; on each visit a subscription's *deficit* grows by
``quantum x weight`` and the visiting worker handles up to that many of its events, leaving
the unused remainder for its next turn (reset to zero when its buffer empties). Over any
busy period every subscription is served in proportion to its weight, and none starves: each
backlogged one gets a turn every round.

A subscription is served by at most one pool worker at a time, which keeps its events in
publish order; several subscriptions are served in parallel.

Adaptive weights (:class:`AdaptiveWeight`): after each turn the pool updates an exponential
moving average of the subscription's handler time per event. While that average exceeds
``target`` the subscription's effective weight is multiplied by ``decrease`` (never below
``floor x weight``); once the average is back at or under ``target`` it is multiplied by
``increase`` (never above its configured weight). A slow handler thus yields pool time to
the others and gets it back when it recovers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tidings.delivery import Queued

__all__ = ("AdaptiveWeight", "WorkerPool")


@dataclass(frozen=True, slots=True)
class AdaptiveWeight:
    """The rule that lowers a slow subscription's weight (see the module docstring).

    Attributes:
        target: handler seconds per event above which the weight is lowered.
        floor: the effective weight never drops below ``floor x weight``.
        decrease: factor applied while too slow (0 < decrease < 1).
        increase: factor applied once fast enough again (> 1).
        smoothing: weight of the newest sample in the moving average (0 < smoothing <= 1).
    """

    target: float
    floor: float = 0.1
    decrease: float = 0.5
    increase: float = 2.0
    smoothing: float = 0.3

    def __post_init__(self) -> None:
        if not (self.target > 0 and 0 < self.floor <= 1 and 0 < self.decrease < 1):
            raise ValueError("AdaptiveWeight needs target > 0, 0 < floor <= 1 and 0 < decrease < 1")
        if not (self.increase > 1 and 0 < self.smoothing <= 1):
            raise ValueError("AdaptiveWeight needs increase > 1 and 0 < smoothing <= 1")


class _Flow:
    """One subscription's place in the pool's round."""

    __slots__ = ("average", "deficit", "effective", "leased", "queued")

    def __init__(self, queued: Queued) -> None:
        self.queued = queued
        self.deficit = 0.0
        self.effective = float(queued.weight)
        self.leased = False
        self.average: float | None = None

    def backlog(self) -> int:
        return sum(len(p) for p in self.queued.partitions)


class WorkerPool:
    """Workers shared by queued subscriptions, served by weight (see the module docstring).

    Args:
        workers: how many threads (``kind="thread"``, for sync handlers) or tasks
            (``kind="async"``, for coroutine functions) serve the pool.
        kind: which handlers the pool runs.
        quantum: events a weight-1 subscription may handle per turn.
        adaptive: lower slow subscriptions' weights, as this rule says.
        name: used in worker names and errors.

    Raises:
        ValueError: on a non-positive ``workers`` or ``quantum`` or an unknown ``kind``.
    """

    def __init__(
        self,
        workers: int = 4,
        *,
        kind: Literal["thread", "async"] = "thread",
        quantum: int = 8,
        adaptive: AdaptiveWeight | None = None,
        name: str = "pool",
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, not {workers!r}")
        if not isinstance(quantum, int) or quantum < 1:
            raise ValueError(f"quantum must be a positive int, not {quantum!r}")
        if kind not in ("thread", "async"):
            raise ValueError(f"kind must be 'thread' or 'async', not {kind!r}")
        self.workers = workers
        self.kind = kind
        self.quantum = quantum
        self.adaptive = adaptive
        self.name = name
        self._flows: deque[_Flow] = deque()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._work: asyncio.Event | None = None
        self._closed = False

    # ------------------------------------------------------------------ membership

    def attach(self, queued: Queued, loop: asyncio.AbstractEventLoop | None) -> None:
        """Serve ``queued`` from now on; start the workers if they are not running."""
        if queued.sub.is_async != (self.kind == "async"):
            from tidings.exceptions import InvalidHandlerError

            raise InvalidHandlerError(
                f"pool {self.name!r} runs {'coroutine functions' if self.kind == 'async' else 'sync handlers'}"
                f"; {queued.sub.name} needs a pool of kind={'async' if queued.sub.is_async else 'thread'!r}"
            )
        with self._lock:
            if not any(f.queued is queued for f in self._flows):
                self._flows.append(_Flow(queued))
        self._start(loop)

    def weight_of(self, queued: Queued) -> float:
        """The effective (possibly adapted) weight of an attached subscription."""
        with self._lock:
            for flow in self._flows:
                if flow.queued is queued:
                    return flow.effective
        raise KeyError(queued.sub.name)

    def ready(self, queued: Queued) -> None:
        """Wake a worker: ``queued`` has events (or was closed)."""
        with self._lock:
            self._wakeup.notify()
        if self._work is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._work.set)

    # ------------------------------------------------------------------ scheduling

    def _pick(self) -> tuple[_Flow, int] | None:
        """Under the lock: the next flow to serve and how many events it may take."""
        flows = self._flows
        for _ in range(len(flows)):
            flow = flows[0]
            flows.rotate(-1)
            if flow.leased:
                continue
            if not flow.backlog():
                flow.deficit = 0.0
                continue
            flow.deficit += self.quantum * flow.effective
            allowance = int(flow.deficit)
            if allowance >= 1:
                flow.leased = True
                return flow, allowance
        return None

    def _done(self, flow: _Flow, served: int, seconds: float) -> None:
        """Under the lock: account a finished turn."""
        flow.leased = False
        flow.deficit = 0.0 if not flow.backlog() else max(0.0, flow.deficit - served)
        rule = self.adaptive
        if rule is None or served == 0:
            return
        sample = seconds / served
        flow.average = (
            sample
            if flow.average is None
            else rule.smoothing * sample + (1 - rule.smoothing) * flow.average
        )
        weight = float(flow.queued.weight)
        if flow.average > rule.target:
            flow.effective = max(weight * rule.floor, flow.effective * rule.decrease)
        else:
            flow.effective = min(weight, flow.effective * rule.increase)

    def _reap(self) -> None:
        """Under the lock: forget closed, drained flows."""
        for flow in list(self._flows):
            if (
                not flow.leased
                and not flow.backlog()
                and all(p.closed for p in flow.queued.partitions)
            ):
                self._flows.remove(flow)

    # ------------------------------------------------------------------ workers

    def _start(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if self.kind == "thread":
            with self._lock:
                if self._threads:
                    return
                self._threads = [
                    threading.Thread(
                        target=self._thread_worker,
                        name=f"tidings-pool:{self.name}[{i}]",
                        daemon=True,
                    )
                    for i in range(self.workers)
                ]
            for thread in self._threads:
                thread.start()
        elif loop is not None and not self._tasks:
            self._loop = loop
            self._work = asyncio.Event()
            self._tasks = [
                loop.create_task(self._async_worker(), name=f"tidings-pool:{self.name}[{i}]")
                for i in range(self.workers)
            ]

    def _thread_worker(self) -> None:
        while True:
            with self._lock:
                while True:
                    picked = self._pick()
                    if picked is not None:
                        break
                    self._reap()
                    if self._closed and not self._flows:
                        return
                    self._wakeup.wait(timeout=1.0)
            flow, allowance = picked
            started = time.perf_counter()
            envs = []
            for buffer in flow.queued.partitions:
                envs = buffer.get_many_nowait(allowance) if len(buffer) else []
            if envs:
                flow.queued.serve(envs)
            with self._lock:
                self._done(flow, len(envs), time.perf_counter() - started)
                self._wakeup.notify()

    async def _async_worker(self) -> None:
        assert self._work is not None
        work = self._work
        while True:
            work.clear()
            with self._lock:
                picked = self._pick()
                if picked is None:
                    self._reap()
                    if self._closed and not self._flows:
                        return
            if picked is None:
                await work.wait()
                continue
            flow, allowance = picked
            started = time.perf_counter()
            envs = []
            for buffer in flow.queued.partitions:
                envs = buffer.get_many_nowait(allowance) if len(buffer) else []
            try:
                if envs:
                    await flow.queued.aserve(envs)
            finally:
                with self._lock:
                    self._done(flow, len(envs), time.perf_counter() - started)
                work.set()

    def close(self) -> None:
        """Let the workers stop once every attached subscription is closed and drained."""
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()
        if self._work is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._work.set)

    def __repr__(self) -> str:
        return f"<WorkerPool {self.name!r} {self.kind} workers={self.workers} flows={len(self._flows)}>"

"""Awaited emit and middleware cost, side by side in one process.

- **E1**: ``await bus.emit(event)`` with 10 async handlers against blinker's
  ``await signal.send_async(...)`` with 10 async receivers, and a raw loop awaiting the same
  handlers in turn (the floor). Each awaits every handler; none of the handlers suspends.
- **M1**: what one no-op middleware per subscription costs: ``publish`` to 10 sync handlers
  and ``await emit`` to 10 async ones, each with and without a middleware that only calls
  through.

Every case counts handler calls and raises :class:`DeliveryMismatchError` if one is missing.
Run alone with ``python benchmarks/bench_emit.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blinker

import tidings
from _harness import Row, check

if TYPE_CHECKING:
    from tidings.middleware import Handler

__all__ = ("run",)

HANDLERS = 10
REPEAT = 5

Case = Callable[[], Awaitable[float]]


@tidings.event("bench.emit")
@dataclass(frozen=True, slots=True)
class Tick:
    n: int


def _async_handlers(hits: list[int]) -> list[Callable[[Any], Awaitable[None]]]:
    def make() -> Callable[[Any], Awaitable[None]]:
        async def handler(e: Any) -> None:
            hits[0] += 1

        return handler

    return [make() for _ in range(HANDLERS)]


def _sync_handlers(hits: list[int]) -> list[Callable[[Any], None]]:
    def make() -> Callable[[Any], None]:
        def handler(e: Any) -> None:
            hits[0] += 1

        return handler

    return [make() for _ in range(HANDLERS)]


def _no_op(handler: Handler) -> Handler:
    """A middleware that only calls through, of the handler's kind."""
    from tidings.middleware import is_async

    if is_async(handler):

        async def through_async(env: tidings.Envelope[Any]) -> Any:
            return await handler(env)

        return through_async

    def through(env: tidings.Envelope[Any]) -> Any:
        return handler(env)

    return through


def _awaiting(send: Callable[[Tick], Awaitable[object]], ticks: list[Tick]) -> Case:
    """A case awaiting ``send(tick)`` for every tick; its wall time."""

    async def case() -> float:
        start = time.perf_counter()
        for tick in ticks:
            await send(tick)
        return time.perf_counter() - start

    return case


def _calling(send: Callable[[Tick], object], ticks: list[Tick]) -> Case:
    """A case calling ``send(tick)`` for every tick; its wall time."""

    async def case() -> float:
        start = time.perf_counter()
        for tick in ticks:
            send(tick)
        return time.perf_counter() - start

    return case


async def _best(case: Case) -> float:
    best = float("inf")
    for _ in range(REPEAT):
        gc.collect()
        gc.disable()
        try:
            best = min(best, await case())
        finally:
            gc.enable()
    return best


def e1(count: int) -> list[Row]:
    """E1: await emit vs blinker send_async vs a raw loop, 10 async handlers."""

    async def main() -> list[Row]:
        ticks = [Tick(i) for i in range(count)]
        hits = [0]

        async def raw() -> float:
            handlers = _async_handlers(hits)
            start = time.perf_counter()
            for tick in ticks:
                for handler in handlers:
                    await handler(tick)
            return time.perf_counter() - start

        bus = tidings.Bus()
        await bus.start()
        for handler in _async_handlers(hits):
            bus.subscribe(Tick, handler)

        signal = blinker.Signal()
        for handler in _async_handlers(hits):
            signal.connect(handler, weak=False)

        rows = []
        cases: list[tuple[str, Case, str]] = [
            ("raw loop", raw, "await each handler in turn"),
            ("tidings", _awaiting(bus.emit, ticks), "await bus.emit()"),
            ("blinker", _awaiting(signal.send_async, ticks), "await signal.send_async()"),
        ]
        for library, case, note in cases:
            hits[0] = 0
            seconds = await _best(case)
            check("E1", library, hits[0], REPEAT * count * HANDLERS)
            rows.append(Row("E1", library, "events/s", count / seconds, "/s", note))
        await bus.aclose()
        return rows

    return asyncio.run(main())


def m1(count: int) -> list[Row]:
    """M1: one no-op middleware per subscription against none (publish and emit)."""

    async def main() -> list[Row]:
        ticks = [Tick(i) for i in range(count)]
        rows = []
        for label, middleware in (("tidings", []), ("tidings + no-op middleware", [_no_op])):
            hits = [0]
            sync_bus = tidings.Bus()
            for handler in _sync_handlers(hits):
                sync_bus.subscribe(Tick, handler, middleware=middleware)

            seconds = await _best(_calling(sync_bus.publish, ticks))
            check("M1 publish", label, hits[0], REPEAT * count * HANDLERS)
            rows.append(Row("M1 publish", label, "events/s", count / seconds, "/s", "10 sync"))

            hits[0] = 0
            async_bus = tidings.Bus()
            await async_bus.start()
            for handler in _async_handlers(hits):
                async_bus.subscribe(Tick, handler, middleware=middleware)

            seconds = await _best(_awaiting(async_bus.emit, ticks))
            check("M1 emit", label, hits[0], REPEAT * count * HANDLERS)
            rows.append(Row("M1 emit", label, "events/s", count / seconds, "/s", "10 async"))
            await async_bus.aclose()
        return sorted(rows, key=lambda r: r.scenario)

    return asyncio.run(main())


def run(quick: bool = False) -> list[Row]:
    """E1 and M1; ``quick`` shrinks them for a smoke run."""
    scale = 10 if quick else 1
    return [*e1(50_000 // scale), *m1(50_000 // scale)]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.scenario:12} {row.library:28} {row.value:12,.0f} {row.metric}  {row.note}")

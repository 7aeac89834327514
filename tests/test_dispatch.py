"""The one failure reporter and the one call-and-count step (:mod:`tidings.dispatch`): every
delivery path counts, reports and dead-letters a failure the same way."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass
from typing import Any

import tidings
from tidings import Batch, DeadLetter, Envelope
from tidings.dispatch import acall_counted, call_counted
from tidings.subscription import SKIP, Subscription


@dataclass(frozen=True)
class Work:
    n: int


def _boom(work: Any) -> None:
    raise ValueError(f"boom {work}")


async def _aboom(work: Any) -> None:
    await asyncio.sleep(0)  # fails after suspending: reported when its task ends
    raise ValueError(f"boom {work}")


async def test_every_delivery_path_reports_each_failure_once_through_the_one_reporter() -> None:
    reported: list[tuple[str, int]] = []
    letters: list[DeadLetter] = []

    def on_error(env: Envelope[Any], sub: Subscription[Any], exc: BaseException) -> None:
        reported.append((sub.name.rsplit(".", 1)[-1], env.payload.n))

    async with tidings.Bus(on_error=on_error) as bus:
        bus.subscribe(DeadLetter, letters.append)
        subs = {
            "inline": bus.subscribe(Work, lambda w: _boom(w)),  # a plain handler: fast path
            "filtered": bus.subscribe(Work, _boom, where=lambda w: True),  # _dispatch_each
            "task": bus.subscribe(Work, _aboom),
            "queued": bus.subscribe(Work, _boom, mode="queued"),
            "batch": bus.subscribe(Work, lambda ws: _boom(ws[0]), batch=Batch(max_size=2)),
        }
        bus.publish(Work(1))
        await bus.emit(Work(2))
        for sub in subs.values():
            assert await sub.drained(timeout=10)
        for _ in range(200):  # the async handler's tasks end on the loop
            if len(letters) == 10:
                break
            await asyncio.sleep(0.01)
    assert {name: sub.failed for name, sub in subs.items()} == dict.fromkeys(subs, 2)
    assert {name: sub.delivered for name, sub in subs.items()} == dict.fromkeys(subs, 0)
    assert len(reported) == 10
    assert len(letters) == 10
    assert sorted(letter.envelope.payload.n for letter in letters) == [1] * 5 + [2] * 5


def test_call_counted_counts_a_call_and_not_a_collected_handler() -> None:
    seen: list[int] = []

    class Consumer:
        def take(self, work: Work) -> None:
            seen.append(work.n)

    bus = tidings.Bus()
    consumer = Consumer()
    sub = bus.subscribe(Work, consumer.take)
    assert call_counted(sub, Work(1)) is None
    assert (seen, sub.delivered) == ([1], 1)
    del consumer
    gc.collect()
    assert call_counted(sub, Work(2)) is SKIP  # nobody saw it: nothing counted
    assert (seen, sub.delivered, sub.failed) == ([1], 1, 0)


async def test_acall_counted_counts_once_the_coroutine_has_finished() -> None:
    gate = asyncio.Event()

    async def handler(work: Work) -> int:
        await gate.wait()
        return work.n

    bus = tidings.Bus()
    sub = bus.subscribe(Work, handler)
    call = asyncio.ensure_future(acall_counted(sub, Work(3)))
    await asyncio.sleep(0)
    assert sub.delivered == 0  # suspended: not delivered yet
    gate.set()
    assert await call == 3
    assert sub.delivered == 1


def test_a_failing_dead_letter_handler_is_logged_not_dead_lettered_again(
    caplog: Any,
) -> None:
    with tidings.Bus() as bus:
        bus.subscribe(DeadLetter, _boom)
        bus.subscribe(Work, _boom)
        with caplog.at_level("ERROR", logger="tidings"):
            bus.publish(Work(1))
    assert [r.getMessage().split(";")[1].strip() for r in caplog.records] == [
        "not dead-lettered again"
    ]


def test_on_errors_own_failure_is_logged_never_raised(
    caplog: Any,
) -> None:
    def on_error(env: Envelope[Any], sub: Subscription[Any], exc: BaseException) -> None:
        raise RuntimeError("on_error broke")

    with tidings.Bus(on_error=on_error) as bus:
        sub = bus.subscribe(Work, _boom)
        with caplog.at_level("ERROR", logger="tidings"):
            bus.publish(Work(1))  # neither the handler's error nor on_error's is raised
    assert sub.failed == 1
    assert any("on_error hook failed" in r.getMessage() for r in caplog.records)


def test_a_route_of_inline_middleware_subscriptions_counts_delivered_dropped_and_failed() -> None:
    from tidings.middleware import DROPPED

    def drop_odd(handler: Any) -> Any:
        def dropping(env: Envelope[Any]) -> Any:
            return DROPPED if env.payload.n % 2 else handler(env)

        return dropping

    def passing(handler: Any) -> Any:
        def through(env: Envelope[Any]) -> Any:
            return handler(env)

        return through

    seen: list[tuple[str, int]] = []
    letters: list[DeadLetter] = []
    bus = tidings.Bus()
    bus.subscribe(DeadLetter, letters.append)
    dropping = bus.subscribe(Work, lambda w: seen.append(("d", w.n)), middleware=[drop_odd])
    failing = bus.subscribe(Work, _boom, middleware=[passing], priority=-1)
    whole = bus.subscribe(
        Work, lambda e: seen.append(("e", e.payload.n)), middleware=[passing], envelope=True
    )
    for n in range(4):
        bus.publish(Work(n))
    assert seen == [("d", 0), ("e", 0), ("e", 1), ("d", 2), ("e", 2), ("e", 3)]
    assert (dropping.delivered, dropping.dropped, dropping.failed) == (2, 2, 0)
    assert (whole.delivered, whole.dropped, whole.failed) == (4, 0, 0)
    assert (failing.delivered, failing.dropped, failing.failed) == (0, 0, 4)
    assert [letter.envelope.payload.n for letter in letters] == [0, 1, 2, 3]

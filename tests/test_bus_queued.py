"""Queued subscriptions: buffers, workers, order per key, overflow, batches, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

import tidings
from tidings import Batch, DeadLetter


@tidings.event("test.queued.job")
@dataclass(frozen=True)
class Job:
    key: str
    seq: int


class BoomError(Exception):
    pass


def _wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.001)


async def test_queued_sync_handler_runs_on_a_worker_thread() -> None:
    async with tidings.Bus() as bus:
        threads: list[int] = []
        done = threading.Event()

        def handler(job: Job) -> None:
            threads.append(threading.get_ident())
            done.set()

        sub = bus.subscribe(Job, handler, mode="queued")
        assert sub.mode == "queued"
        bus.publish(Job("a", 1))
        assert await asyncio.to_thread(done.wait, 10)
        assert threads[0] != threading.get_ident()


async def test_four_workers_keep_order_per_key_and_deliver_everything_once() -> None:
    keys = [f"k{i}" for i in range(16)]
    per_key = 500
    seen: dict[str, list[int]] = {k: [] for k in keys}
    lock = threading.Lock()
    worker_threads: set[int] = set()

    def handler(job: Job) -> None:
        with lock:
            seen[job.key].append(job.seq)
            worker_threads.add(threading.get_ident())

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Job, handler, workers=4, maxsize=256)

        def produce(part: list[str]) -> None:
            for seq in range(per_key):
                for key in part:
                    bus.publish(Job(key, seq), key=key)

        producers = [threading.Thread(target=produce, args=(keys[i::4],)) for i in range(4)]
        for t in producers:
            t.start()
        for t in producers:
            await asyncio.to_thread(t.join, 30)
        report = await bus.aclose(timeout=30)
    assert report.clean
    for key in keys:
        assert seen[key] == list(range(per_key)), key
    assert len(worker_threads) > 1
    assert sub.delivered == len(keys) * per_key


async def test_async_workers_keep_order_per_key() -> None:
    seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}

    async def handler(job: Job) -> None:
        if job.seq % 3 == 0:
            await asyncio.sleep(0)
        seen[job.key].append(job.seq)

    async with tidings.Bus() as bus:
        bus.subscribe(Job, handler, workers=3, maxsize=64)
        for seq in range(200):
            for key in seen:
                await bus.emit(Job(key, seq), key=key)
        assert (await bus.aclose(timeout=30)).clean
    assert all(v == list(range(200)) for v in seen.values())


def _blocked_bus(overflow: Any, maxsize: int = 3) -> tuple[tidings.Bus, threading.Event, list[int]]:
    """A bus whose queued handler is stuck on its first event until the gate opens."""
    bus = tidings.Bus()
    gate = threading.Event()
    started = threading.Event()
    handled: list[int] = []

    def handler(job: Job) -> None:
        started.set()
        assert gate.wait(10)
        handled.append(job.seq)

    bus.subscribe(Job, handler, mode="queued", maxsize=maxsize, overflow=overflow)
    bus.publish(Job("k", 0))
    assert started.wait(10)  # the worker holds event 0; the buffer is empty again
    return bus, gate, handled


@pytest.mark.parametrize(
    ("overflow", "survivors", "dropped"),
    [("drop_oldest", [0, 3, 4, 5], 2), ("drop_newest", [0, 1, 2, 3], 2)],
)
def test_drop_policies_at_the_edge(overflow: Any, survivors: list[int], dropped: int) -> None:
    bus, gate, handled = _blocked_bus(overflow)
    for seq in range(1, 6):  # 5 more into a buffer of 3
        bus.publish(Job("k", seq))
    stats = bus.statistics().subscriptions[0]
    assert (stats.queue_depth, stats.high_water, stats.dropped) == (3, 3, dropped)
    gate.set()
    _wait_until(lambda: len(handled) == 4)
    bus.close()
    assert handled == survivors


def test_error_policy_raises_a_typed_error_naming_the_subscription() -> None:
    bus, gate, handled = _blocked_bus("error", maxsize=2)
    bus.publish(Job("k", 1))
    bus.publish(Job("k", 2))
    with pytest.raises(tidings.QueueFullError) as info:
        bus.publish(Job("k", 3))
    assert "_blocked_bus.<locals>.handler" in info.value.name
    assert info.value.capacity == 2
    assert "overflow policy is 'error'" in str(info.value)
    assert bus.statistics().subscriptions[0].dropped == 1
    gate.set()
    _wait_until(lambda: len(handled) == 3)
    assert handled == [0, 1, 2]
    bus.close()


def test_a_refused_event_still_dispatches_what_its_other_handlers_published() -> None:
    """A full ``error`` subscription refuses the event after every other handler ran; what
    those published is dispatched before the refusal is raised, not left for (or dropped
    by) the thread's next publish."""
    bus, gate, handled = _blocked_bus("error", maxsize=1)
    bus.publish(Job("k", 1))  # fills the buffer
    log: list[str] = []
    bus.subscribe(Job, lambda job: bus.publish(job.seq, topic="test.queued.note"))
    bus.subscribe("test.queued.note", lambda seq: log.append(f"note {seq}"))
    with pytest.raises(tidings.QueueFullError):
        bus.publish(Job("k", 2))
    assert log == ["note 2"]
    with pytest.raises(tidings.QueueFullError):
        bus.publish(Job("k", 3))
    assert log == ["note 2", "note 3"]
    assert bus.statistics().subscriptions[0].dropped == 2
    gate.set()
    _wait_until(lambda: len(handled) == 2)
    assert handled == [0, 1]
    bus.close()


def test_block_policy_makes_a_thread_publisher_wait_and_loses_nothing() -> None:
    bus, gate, handled = _blocked_bus("block", maxsize=2)
    bus.publish(Job("k", 1))
    bus.publish(Job("k", 2))
    published = threading.Event()

    def late() -> None:
        bus.publish(Job("k", 3))
        published.set()

    thread = threading.Thread(target=late)
    thread.start()
    assert not published.wait(0.05)  # blocked: the buffer is full
    gate.set()
    assert published.wait(10)
    thread.join(10)
    _wait_until(lambda: len(handled) == 4)
    assert handled == [0, 1, 2, 3]
    assert bus.statistics().subscriptions[0].dropped == 0
    bus.close()


async def test_aclose_handles_everything_accepted_under_block() -> None:
    handled: list[int] = []

    def slow(job: Job) -> None:
        time.sleep(0.0005)
        handled.append(job.seq)

    bus = await tidings.Bus().start()
    bus.subscribe(Job, slow, workers=2, maxsize=8)
    thread = threading.Thread(
        target=lambda: [bus.publish(Job(str(i), i), key=str(i)) for i in range(200)]
    )
    thread.start()
    await asyncio.to_thread(thread.join, 30)
    report = await bus.aclose(timeout=30)
    assert report.clean
    assert sorted(handled) == list(range(200))


async def test_aclose_reports_queued_events_it_could_not_finish() -> None:
    gate = threading.Event()
    bus = await tidings.Bus().start()
    bus.subscribe(Job, lambda job: gate.wait(10), mode="queued", maxsize=10)
    for i in range(5):
        bus.publish(Job("k", i))
    report = await bus.aclose(timeout=0.1)
    gate.set()
    assert not report.clean
    # the worker holds event 0 (stuck at the gate); the other four never left the buffer
    assert [line.split(": ", 1)[1] for line in report.unfinished] == [
        "5 queued event(s) not handled"
    ]


async def test_queued_failures_are_counted_and_dead_lettered() -> None:
    async with tidings.Bus() as bus:
        dead: list[DeadLetter] = []
        bus.subscribe(DeadLetter, dead.append)

        def fails_on_odd(job: Job) -> None:
            if job.seq % 2:
                raise BoomError(str(job.seq))

        sub = bus.subscribe(Job, fails_on_odd, mode="queued")
        for i in range(10):
            bus.publish(Job("k", i))
        assert (await bus.aclose(timeout=10)).clean
    assert sorted(int(str(d.error)) for d in dead) == [1, 3, 5, 7, 9]
    assert (sub.delivered, sub.failed) == (5, 5)


async def test_batch_handler_gets_lists_bounded_by_max_size() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def handle(jobs: list[Job]) -> None:
        gate.wait(10)
        batches.append([j.seq for j in jobs])

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Job, handle, batch=Batch(max_size=10, max_wait=0.01, adaptive=False))
        for i in range(35):
            bus.publish(Job("k", i))
        gate.set()
        assert (await bus.aclose(timeout=10)).clean
    assert [seq for batch in batches for seq in batch] == list(range(35))
    assert all(1 <= len(b) <= 10 for b in batches)
    assert sub.delivered == 35


async def test_batch_of_envelopes_and_failures_dead_letter_the_whole_batch() -> None:
    async with tidings.Bus() as bus:
        dead: list[DeadLetter] = []
        bus.subscribe(DeadLetter, dead.append)

        async def handle(envelopes: list[tidings.Envelope[Job]]) -> None:
            assert all(isinstance(e, tidings.Envelope) for e in envelopes)
            raise BoomError("batch failed")

        sub = bus.subscribe(Job, handle, batch=Batch(max_size=4, max_wait=0.0))
        for i in range(3):
            await bus.emit(Job("k", i))
        assert (await bus.aclose(timeout=10)).clean
    assert sorted(d.envelope.payload.seq for d in dead) == [0, 1, 2]
    assert sub.failed == 3


def test_adaptive_batch_size_rule() -> None:
    rule = Batch(max_size=256, min_size=16)
    size = rule.first_size()
    assert size == 16
    for _ in range(10):
        size = rule.next_size(size, fill=0.9)
    assert size == 256
    assert rule.next_size(256, fill=0.5) == 256
    for _ in range(10):
        size = rule.next_size(size, fill=0.1)
    assert size == 16
    assert Batch(max_size=8).first_size() == 8
    assert Batch(max_size=50, adaptive=False).next_size(50, 0.99) == 50
    with pytest.raises(ValueError, match="positive"):
        Batch(max_size=0)
    with pytest.raises(ValueError, match="max_wait"):
        Batch(max_wait=-1)


async def test_adaptive_batches_grow_under_a_burst() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def handle(jobs: list[Job]) -> None:
        gate.wait(10)
        sizes.append(len(jobs))

    async with tidings.Bus() as bus:
        bus.subscribe(Job, handle, batch=Batch(max_size=256, max_wait=0.0), maxsize=1024)
        for i in range(1000):
            bus.publish(Job("k", i))
        gate.set()
        assert (await bus.aclose(timeout=10)).clean
    assert sum(sizes) == 1000
    assert sizes[0] <= 16
    assert max(sizes) > 16  # the buffer was over 80% full, so the batches grew


def test_bad_queue_settings_are_explained(bus: tidings.Bus) -> None:
    with pytest.raises(ValueError, match="workers must be a positive int"):
        bus.subscribe(Job, print, workers=0)
    with pytest.raises(ValueError, match="maxsize must be a positive int"):
        bus.subscribe(Job, print, mode="queued", maxsize=0)
    with pytest.raises(ValueError, match="overflow"):
        bus.subscribe(Job, print, mode="queued", overflow="sometimes")  # type: ignore[call-overload]
    with pytest.raises(tidings.InvalidHandlerError, match="mode='task' runs coroutine functions"):
        bus.subscribe(Job, print, mode="task")

    async def coro(job: Job) -> None: ...

    with pytest.raises(tidings.InvalidHandlerError, match="mode='inline' runs sync handlers"):
        bus.subscribe(Job, coro, mode="inline")
    with pytest.raises(ValueError, match="weight must be positive"):
        bus.subscribe(Job, print, mode="queued", weight=0)


def test_buffer_options_on_an_unbuffered_subscription_are_refused(bus: tidings.Bus) -> None:
    async def coro(job: Job) -> None: ...

    with pytest.raises(
        tidings.InvalidHandlerError, match="is delivered inline: pass mode='queued'"
    ):
        bus.subscribe(Job, print, maxsize=10)
    with pytest.raises(tidings.InvalidHandlerError, match="is delivered task: pass mode='queued'"):
        bus.subscribe(Job, coro, overflow="drop_oldest")
    with pytest.raises(tidings.InvalidHandlerError, match="maxsize=, overflow= and weight="):
        bus.on(Job, weight=2)(print)
    assert bus.statistics().subscriptions == ()  # nothing was registered
    bus.subscribe(Job, print, maxsize=10, mode="queued").cancel()


def test_statistics_count_inline_deliveries_and_failures(bus: tidings.Bus) -> None:
    def sometimes(job: Job) -> None:
        if job.seq == 3:
            raise BoomError("3")

    plain = bus.subscribe(Job, lambda j: None)
    failing = bus.subscribe(Job, sometimes)
    filtered = bus.subscribe(Job, lambda j: None, where=lambda j: j.seq < 2)
    for i in range(5):
        bus.publish(Job("k", i))
    assert (plain.delivered, plain.failed) == (5, 0)
    assert (failing.delivered, failing.failed) == (4, 1)
    assert (filtered.delivered, filtered.failed) == (2, 0)
    stats = bus.statistics()
    assert (stats.delivered, stats.failed, stats.dropped) == (11, 1, 0)
    # re-subscribing rebuilds the routes; counts survive the old routes
    extra = bus.subscribe(Job, lambda j: None)
    bus.publish(Job("k", 9))
    import gc

    gc.collect()
    assert plain.delivered == 6
    assert extra.delivered == 1


def test_statistics_are_exact_across_threads(bus: tidings.Bus) -> None:
    sub = bus.subscribe(Job, lambda j: None)
    threads = [
        threading.Thread(target=lambda: [bus.publish(Job("k", i)) for i in range(5_000)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sub.delivered == 20_000


async def test_drained_waits_for_a_queued_subscription_to_finish() -> None:
    handled: list[int] = []

    async def slow(job: Job) -> None:
        await asyncio.sleep(0.001)
        handled.append(job.seq)

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Job, slow, mode="queued", maxsize=100)
        inline = bus.subscribe(Job, lambda j: None)
        for i in range(20):
            bus.publish(Job("k", i))
        assert await sub.drained(timeout=10)
        assert handled == list(range(20))
        assert await inline.drained()


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "queued"},
        {"workers": 3},
        {"batch": Batch(max_size=4, max_wait=0.0)},
        {"pool": "thread"},
        {"mode": "queued", "async": True},
        {"pool": "async", "async": True},
    ],
    ids=["queued", "workers", "batch", "pool", "async", "async-pool"],
)
async def test_a_queued_once_subscription_handles_exactly_one_event(
    options: dict[str, Any],
) -> None:
    handled: list[int] = []
    options = dict(options)
    is_async = options.pop("async", False)
    if "pool" in options:
        options["pool"] = tidings.WorkerPool(2, kind=options["pool"])

    def sync_handler(arg: Job | list[Job]) -> None:
        handled.extend(j.seq for j in (arg if isinstance(arg, list) else [arg]))

    async def async_handler(arg: Job | list[Job]) -> None:
        sync_handler(arg)

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Job, async_handler if is_async else sync_handler, once=True, **options)
        assert sub.mode == "queued"
        for i in range(3):
            bus.publish(Job("k", i))
        assert not sub.active
        assert await sub.drained(timeout=10)
        assert bus.subscriptions() == ()
        assert (await bus.aclose(timeout=10)).clean
    assert handled == [0]
    assert (sub.delivered, sub.failed, sub.statistics().dropped) == (1, 0, 0)


async def test_a_queued_once_subscription_takes_one_event_from_emit() -> None:
    handled = threading.Event()
    async with tidings.Bus() as bus:
        sub = bus.subscribe(Job, lambda job: handled.set(), mode="queued", once=True)
        delivery = await bus.emit(Job("k", 1))
        assert [o.queued for o in delivery.outcomes] == [True]
        assert (await bus.emit(Job("k", 2))).outcomes == ()
        assert await asyncio.to_thread(handled.wait, 10)
        assert await sub.drained(timeout=10)
    assert sub.delivered == 1


def test_batch_must_be_a_batch_and_nothing_starts_before_the_checks(bus: tidings.Bus) -> None:
    def refused(job: Job) -> None: ...

    with pytest.raises(tidings.InvalidHandlerError, match=r"batch= takes a tidings\.Batch.*int 5"):
        bus.subscribe(Job, refused, batch=5)  # type: ignore[call-overload]
    for bad in ("high", None, True, float("nan")):
        with pytest.raises(
            tidings.InvalidHandlerError, match="priority= must be an int or a float"
        ):
            bus.subscribe(Job, refused, priority=bad, mode="queued")  # type: ignore[call-overload]
    with pytest.raises(tidings.InvalidHandlerError, match="once= must be True or False, not 'yes'"):
        bus.subscribe(Job, refused, once="yes", mode="queued")  # type: ignore[call-overload]
    for kwargs, message in (
        ({"max_size": "a"}, r"Batch\(max_size=\) must be an int, not str"),
        ({"min_size": 2.5}, r"Batch\(min_size=\) must be an int, not float"),
        ({"max_wait": "1s"}, r"Batch\(max_wait=\) must be seconds, not str"),
    ):
        with pytest.raises(TypeError, match=message):
            tidings.Batch(**kwargs)
    workers = [t.name for t in threading.enumerate() if "refused" in t.name]
    assert workers == []  # no worker was started
    assert bus.subscriptions() == ()
    assert bus._queued == []
    assert bus.subscribe(Job, print, priority=1.5).priority == 1.5


async def test_a_worker_logs_an_unexpected_error_and_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tidings.delivery import Queued

    handle = Queued.handle
    broken = [True]

    def handle_once_broken(self: Queued, envs: Any) -> None:
        if broken:
            broken.clear()
            raise RuntimeError("internal")
        handle(self, envs)

    monkeypatch.setattr(Queued, "handle", handle_once_broken)
    handled: list[int] = []
    async with tidings.Bus() as bus:
        sub = bus.subscribe(Job, lambda job: handled.append(job.seq), mode="queued")
        bus.publish(Job("k", 1))
        bus.publish(Job("k", 2))
        assert await sub.drained(timeout=10)
    assert handled == [2]
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "failed unexpectedly" in record.getMessage()
    assert record.subscription == sub.name  # type: ignore[attr-defined]
    assert record.event_id  # type: ignore[attr-defined]


async def test_a_worker_that_stops_on_an_unexpected_error_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tidings.delivery import Queued

    def broken(self: Queued, buffer: Any) -> None:
        raise RuntimeError("internal")

    monkeypatch.setattr(Queued, "_take_and_serve", broken)
    bus = tidings.Bus()
    sub = bus.subscribe(Job, print, mode="queued")
    assert sub.queued is not None
    for thread in sub.queued._threads:
        thread.join(10)
    bus.close()
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "stopped on an unexpected error" in record.getMessage()
    assert record.subscription == sub.name  # type: ignore[attr-defined]


def test_a_queued_handler_publishing_to_its_own_full_buffer_is_refused_not_deadlocked() -> None:
    bus = tidings.Bus()
    refused: list[tidings.WouldBlock] = []
    handled: list[int] = []
    done = threading.Event()

    def work(job: Job) -> None:
        handled.append(job.seq)
        if job.seq == 0:
            for i in range(1, 4):  # 3 follow-ups into a buffer of 2
                try:
                    bus.publish(Job("k", i))
                except tidings.WouldBlock as exc:
                    refused.append(exc)
        if len(handled) == 3:
            done.set()

    sub = bus.subscribe(Job, work, mode="queued", maxsize=2)
    bus.publish(Job("k", 0))
    assert done.wait(10)
    assert handled == [0, 1, 2]
    [error] = refused
    assert "one of its own workers" in str(error)
    assert sub.statistics().dropped == 1
    bus.close()


async def test_an_async_queued_handler_emitting_to_its_own_full_buffer_is_refused() -> None:
    refused: list[BaseException] = []

    async with tidings.Bus() as bus:

        async def work(job: Job) -> None:
            if job.seq == 0:
                for i in range(1, 4):  # 3 follow-ups into a buffer of 2
                    try:
                        await bus.emit(Job("k", i))
                    except tidings.WouldBlock as exc:
                        refused.append(exc)

        sub = bus.subscribe(Job, work, mode="queued", maxsize=2)
        await asyncio.wait_for(bus.emit(Job("k", 0)), 10)
        assert await sub.drained(timeout=10)
    assert len(refused) == 1
    assert "one of its own workers" in str(refused[0])


async def test_publish_on_the_loop_to_a_full_async_pool_subscription_is_refused() -> None:
    async with tidings.Bus() as bus:
        handled: list[int] = []

        async def work(job: Job) -> None:
            handled.append(job.seq)

        pool = tidings.WorkerPool(1, kind="async")
        sub = bus.subscribe(Job, work, pool=pool, maxsize=1)
        bus.publish(Job("k", 0))  # the pool's task has not run yet: the buffer is full
        with pytest.raises(tidings.WouldBlock, match="event loop"):
            bus.publish(Job("k", 1))
        assert await sub.drained(timeout=10)
    assert handled == [0]


async def test_a_cancelled_queued_subscription_is_forgotten_once_drained() -> None:
    gate = threading.Event()
    handled: list[int] = []

    def held(job: Job) -> None:
        gate.wait(10)
        handled.append(job.seq)

    async with tidings.Bus() as bus:
        sub = bus.subscribe(Job, held, workers=2)
        for i in range(4):
            bus.publish(Job(str(i), i), key=str(i))
        sub.cancel()
        assert bus._queued == [sub.queued]  # still draining: aclose would wait for it
        gate.set()
        assert await sub.drained(timeout=10)
        _wait_until(lambda: not bus._queued)
        report = await bus.aclose(timeout=10)
    assert report.clean
    assert sorted(handled) == [0, 1, 2, 3]


def test_high_water_counts_every_partition_at_once_not_each_one_s_peak(bus: tidings.Bus) -> None:
    gates: dict[str, threading.Event] = {}
    sub = bus.subscribe(Job, lambda job: gates[job.key].wait(10), workers=2, maxsize=100)
    queued = sub.queued
    assert queued is not None
    keys: dict[int, str] = {}  # a key for each partition
    for i in range(1000):
        keys.setdefault(queued.partitions.index(queued.partition(f"k{i}")), f"k{i}")
        if len(keys) == 2:
            break
    for key in keys.values():
        gates[key] = threading.Event()
        for i in range(5):  # one partition at a time: the other one is empty meanwhile
            bus.publish(Job(key, i), key=key)
        gates[key].set()
        assert queued.wait_handled(10)
    assert 4 <= sub.statistics().high_water <= 5  # a worker may hold one of them


async def test_a_batch_whose_handler_object_was_collected_counts_nothing_delivered() -> None:
    # Regression: a batch worker counted every event of a batch as delivered although the
    # handler's object was gone and no handler saw them.
    import gc

    seen: list[int] = []

    class Consumer:
        async def take(self, jobs: list[Job]) -> None:  # pragma: no cover - never called
            seen.extend(j.seq for j in jobs)

    bus = tidings.Bus()  # no loop yet: the async batch worker starts with the loop
    consumer = Consumer()
    sub = bus.subscribe(Job, consumer.take, batch=Batch(max_size=8, max_wait=0))
    for i in range(3):
        bus.publish(Job("k", i))
    del consumer
    gc.collect()
    assert not sub.active
    async with bus:
        assert await sub.drained(timeout=10)
    assert seen == []
    assert (sub.delivered, sub.failed) == (0, 0)


def test_a_sync_batch_whose_handler_object_was_collected_counts_nothing_delivered() -> None:
    import gc

    seen: list[int] = []
    pool = tidings.WorkerPool(1)
    gate = threading.Event()
    pool_blocker = threading.Event()

    class Consumer:
        def take(self, jobs: list[Job]) -> None:  # pragma: no cover - never called
            seen.extend(j.seq for j in jobs)

    bus = tidings.Bus()

    def hold(jobs: list[Job]) -> None:
        pool_blocker.set()
        gate.wait(10)

    # One pool worker: held busy by the first subscription while the batch waits.
    bus.subscribe("test.queued.hold", hold, batch=Batch(max_size=1, max_wait=0), pool=pool)
    consumer = Consumer()
    sub = bus.subscribe(Job, consumer.take, batch=Batch(max_size=8, max_wait=0), pool=pool)
    bus.publish({"x": 1}, topic="test.queued.hold")
    assert pool_blocker.wait(10)
    for i in range(3):
        bus.publish(Job("k", i))
    del consumer
    gc.collect()
    gate.set()
    _wait_until(lambda: sub.queued is not None and sub.queued.pending() == 0)
    assert seen == []
    assert (sub.delivered, sub.failed) == (0, 0)
    bus.close()


def test_maxsize_is_the_subscriptions_total_over_all_partitions(bus: tidings.Bus) -> None:
    # Regression: each of N partitions held ceil(maxsize / N), so workers=3, maxsize=7
    # held 9 events.
    holding = threading.Semaphore(0)
    release = threading.Event()

    def handler(job: Job) -> None:
        holding.release()
        release.wait(10)

    sub = bus.subscribe(Job, handler, workers=3, maxsize=7, overflow="drop_newest")
    for i in range(3):  # without a key: round-robin, one for each worker to hold
        bus.publish(Job("", i))
    for _ in range(3):
        assert holding.acquire(timeout=10)
    for i in range(30):
        bus.publish(Job("", 3 + i))
    stats = sub.statistics()
    assert (stats.queue_depth, stats.dropped) == (7, 23)
    release.set()
    queued = sub.queued
    assert queued is not None
    assert queued.wait_handled(10)
    assert sub.statistics().delivered == 10


def test_maxsize_below_the_worker_count_is_refused(bus: tidings.Bus) -> None:
    with pytest.raises(ValueError, match="must be at least 4"):
        bus.subscribe(Job, lambda job: None, workers=4, maxsize=3)


def test_a_key_goes_to_the_same_partition_in_every_process() -> None:
    # Regression: keys went to partitions by hash(), which PYTHONHASHSEED changes.
    import json
    import os
    import subprocess
    import sys

    script = (
        "import tidings\n"
        "from tidings.bus import Bus\n"
        "bus = Bus()\n"
        "sub = bus.subscribe('jobs', lambda env: None, workers=4, maxsize=8)\n"
        "q = sub.queued\n"
        "print([q.partitions.index(q.partition(f'k{i}')) for i in range(40)])\n"
        "bus.close()\n"
    )
    seen = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        seen.add(done.stdout)
    assert len(seen) == 1, seen
    assert len(set(json.loads(next(iter(seen))))) == 4  # every partition gets keys

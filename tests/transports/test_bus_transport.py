"""Bus(transport=...): the bus API carried over a transport (in memory and on nats-server)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
import pytest

import tidings
from tidings.clock import HybridClock
from tidings.contracts import Validator
from tidings.contracts.transport import ValidatingTransport
from tidings.testing.nats_server import NatsServer
from tidings.testing.transport_conformance import TIMEOUT, make_envelope
from tidings.transports import DeadLetterRecord, DeliveryPolicy, MemoryBroker, MemoryTransport
from tidings.transports.base import PublishAck, Transport
from tidings.transports.nats import NatsTransport, StreamSettings

FAST = DeliveryPolicy(max_deliver=3, backoff=0.02, backoff_max=0.1, ack_wait=5.0)


@tidings.event("remote.order")
@dataclass(frozen=True)
class RemoteOrder:
    order_id: str
    amount: float


@dataclass(frozen=True)
class Unregistered:  # topic derived from the class name, never decorated
    n: int


@pytest.fixture(params=["memory", "nats"])
def make_transport(
    request: pytest.FixtureRequest,
) -> Callable[[], Transport]:
    if request.param == "memory":
        broker = MemoryBroker()
        return lambda: MemoryTransport(broker, policy=FAST)
    factory: Callable[..., NatsTransport] = request.getfixturevalue("nats_factory")
    return lambda: factory(policy=FAST)


class Waiter:
    """Collects values and wakes tests waiting for a count."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_count(self, count: int, timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()


async def test_typed_handlers_receive_events_in_priority_order(
    make_transport: Callable[[], Transport],
) -> None:
    seen = Waiter()
    async with tidings.Bus(transport=make_transport()) as bus:

        @bus.on(RemoteOrder, priority=0)
        def low(order: RemoteOrder) -> None:
            seen.add(("low", order))

        @bus.on(RemoteOrder, priority=10)
        async def high(envelope: tidings.Envelope[RemoteOrder]) -> None:
            seen.add(("high", envelope.payload))

        @bus.on(Unregistered)
        def plain(value: Unregistered) -> None:
            seen.add(("plain", value))

        await bus.start()  # the subscriptions above are live from here
        delivery = await bus.emit(RemoteOrder("o1", 5.0), key="c1")
        assert delivery.outcomes == ()  # handlers run as the server delivers the event
        bus.publish(Unregistered(3))
        await seen.wait_count(3)
    assert seen.items[:2] == [("high", RemoteOrder("o1", 5.0)), ("low", RemoteOrder("o1", 5.0))]
    assert seen.items[2] == ("plain", Unregistered(3))


async def test_group_shares_events_and_ungrouped_buses_get_all(
    make_transport: Callable[[], Transport],
) -> None:
    grouped, everyone = Waiter(), Waiter()
    buses = [tidings.Bus(transport=make_transport()) for _ in range(3)]
    for bus in buses[:2]:
        bus.subscribe(RemoteOrder, grouped.add, group="billing")
        bus.subscribe(RemoteOrder, everyone.add)
    for bus in buses:
        await bus.start()
    try:
        for i in range(50):
            buses[2].publish(RemoteOrder(f"o{i}", i))
        await grouped.wait_count(50)
        await everyone.wait_count(100)
    finally:
        for bus in buses:
            await bus.aclose()
    assert sorted(o.order_id for o in grouped.items) == sorted(f"o{i}" for i in range(50))
    assert len(everyone.items) == 100


async def test_failures_retry_only_failing_handlers_then_dead_letter(
    make_transport: Callable[[], Transport],
) -> None:
    calls: dict[str, int] = {"ok": 0, "flaky": 0, "broken": 0}
    errors: list[str] = []
    letters = Waiter()
    transport = make_transport()

    def on_error(
        env: tidings.Envelope[Any], sub: tidings.Subscription[Any], exc: BaseException
    ) -> None:
        errors.append(sub.name.rsplit(".", 1)[-1])

    async with tidings.Bus(transport=transport, on_error=on_error) as bus:

        @bus.on(RemoteOrder, priority=3)
        def ok(order: RemoteOrder) -> None:
            calls["ok"] += 1

        @bus.on(RemoteOrder, priority=2)
        def flaky(order: RemoteOrder) -> None:
            calls["flaky"] += 1
            if calls["flaky"] < 3:
                raise RuntimeError("not yet")

        @bus.on(RemoteOrder, priority=1)
        def broken(order: RemoteOrder) -> None:
            calls["broken"] += 1
            raise ValueError("never")

        bus.subscribe(tidings.DeadLetter, letters.add)  # stays in the process
        records: list[DeadLetterRecord] = []
        stored = asyncio.Event()

        async def on_record(record: DeadLetterRecord) -> None:
            records.append(record)
            stored.set()

        await bus.start()
        await transport.subscribe_dead_letters(on_record)
        await bus.emit(RemoteOrder("poison", 1.0))
        await letters.wait_count(1)
        await asyncio.wait_for(stored.wait(), TIMEOUT)
    assert calls == {"ok": 1, "flaky": 3, "broken": 3}
    [letter] = letters.items
    assert letter.handler.endswith("broken")
    assert letter.attempts == 3
    assert letter.reason == "ValueError: never"
    assert errors.count("broken") == 3
    assert errors.count("flaky") == 2
    [record] = records
    assert record.reason == "ValueError: never"
    assert record.handler.endswith("broken")
    assert record.attempts == 3


async def test_publish_from_another_thread_and_clean_close_loses_nothing(
    make_transport: Callable[[], Transport],
) -> None:
    got = Waiter()
    transport = make_transport()
    consumer = tidings.Bus(transport=make_transport())
    consumer.subscribe(RemoteOrder, got.add, group="close")
    await consumer.start()
    async with tidings.Bus(transport=transport) as bus:

        def from_thread() -> None:
            for i in range(100):
                bus.publish(RemoteOrder(f"t{i}", i))

        thread = threading.Thread(target=from_thread)
        thread.start()
        await asyncio.to_thread(thread.join, TIMEOUT)
        for i in range(100):
            bus.publish(RemoteOrder(f"l{i}", i))
    # aclose sent the outbox and waited for every ack: the consumer gets all 200.
    await got.wait_count(200)
    await consumer.aclose()
    assert len({o.order_id for o in got.items}) == 200


async def test_a_bus_with_a_transport_needs_its_loop() -> None:
    bus = tidings.Bus(transport=MemoryTransport())
    with pytest.raises(tidings.LoopNotRunningError):
        bus.publish(RemoteOrder("x", 1.0))


async def test_an_event_the_transport_refuses_is_not_logged_either() -> None:
    store = tidings.MemoryStore()
    bus = tidings.Bus(transport=MemoryTransport(), store=store)
    for _ in range(2):
        with pytest.raises(tidings.LoopNotRunningError):
            bus.publish(RemoteOrder("x", 1.0))
        with pytest.raises(tidings.LoopNotRunningError):
            await bus.emit(RemoteOrder("y", 2.0))
    assert await store.last_position() == 0


async def test_a_retry_skips_what_succeeded_even_when_two_patterns_match() -> None:
    calls = {"ok": 0, "flaky": 0, "other": 0}
    done = Waiter()
    async with tidings.Bus(transport=MemoryTransport(MemoryBroker(), policy=FAST)) as bus:

        @bus.on("remote.>")
        def ok(order: Any) -> None:
            calls["ok"] += 1

        @bus.on("remote.>")
        def flaky(order: Any) -> None:
            calls["flaky"] += 1
            if calls["flaky"] == 1:
                raise RuntimeError("once")
            done.add(order)

        @bus.on(RemoteOrder)  # a second transport subscription gets the same event
        def other(order: RemoteOrder) -> None:
            calls["other"] += 1

        await bus.start()
        await bus.emit(RemoteOrder("o1", 1.0))
        await done.wait_count(1)
    assert calls == {"ok": 1, "flaky": 2, "other": 1}


async def test_idempotent_handlers_skip_events_already_recorded(
    make_transport: Callable[[], Transport],
) -> None:
    seen = Waiter()
    store = tidings.MemoryStore()
    async with tidings.Bus(transport=make_transport(), store=store) as bus:
        bus.subscribe(RemoteOrder, seen.add, group="billing", idempotent=True)
        await bus.start()
        first = await bus.emit(RemoteOrder("o1", 1.0))
        await seen.wait_count(1)
        async with asyncio.timeout(TIMEOUT):
            while not await store.was_handled("billing", first.envelope.id):  # noqa: ASYNC110
                await asyncio.sleep(0.001)  # recorded right after the handler returned
        # An event recorded as handled elsewhere (say, by a process killed before its ack)
        # is skipped when it arrives; the next one is handled.
        recorded = bus._envelope(bus._route(RemoteOrder, None), RemoteOrder("o2", 2.0), None, None)
        await store.commit("billing", 0, handled_ids=[recorded.id])
        assert bus._remote is not None
        await bus._remote.publish(recorded)
        await bus.emit(RemoteOrder("o3", 3.0))
        await seen.wait_count(2)
    assert [o.order_id for o in seen.items] == ["o1", "o3"]


async def test_close_leaves_a_transport_s_store_open_and_aclose_still_closes_both() -> None:
    seen = Waiter()
    store = tidings.MemoryStore()
    transport = MemoryTransport(policy=FAST)
    bus = tidings.Bus(transport=transport, store=store)
    async with bus:
        bus.subscribe(RemoteOrder, seen.add, group="billing", idempotent=True)
        await bus.start()
        bus.close()
        left_open = not store.closed  # the transport's subscription records into it
        assert left_open
        await transport.publish_raw(
            "remote.order", b'{"order_id": "o1", "amount": 1.0}', {"ce-id": "x1"}
        )
        await seen.wait_count(1)
    assert store.closed
    with pytest.raises(tidings.TransportClosedError):
        await transport.publish_raw("remote.order", b"{}")


async def test_an_aclose_cancelled_midway_is_finished_by_the_next_call() -> None:
    transport = MemoryTransport(policy=FAST)
    bus = tidings.Bus(transport=transport)
    started, gate = asyncio.Event(), asyncio.Event()

    async def slow(order: RemoteOrder) -> None:
        started.set()
        await gate.wait()

    bus.subscribe(RemoteOrder, slow, group="g")
    await bus.start()
    await bus.emit(RemoteOrder("o1", 1.0))
    await asyncio.wait_for(started.wait(), TIMEOUT)
    closing = asyncio.create_task(bus.aclose(timeout=10))
    await asyncio.sleep(0)  # the close starts: it waits for the handler
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    gate.set()
    await asyncio.wait_for(bus.aclose(timeout=10), TIMEOUT)
    with pytest.raises(tidings.TransportClosedError):
        await transport.publish_raw("remote.order", b"{}")


async def test_idempotent_on_a_transport_needs_a_store() -> None:
    async with tidings.Bus(transport=MemoryTransport()) as bus:
        with pytest.raises(tidings.InvalidHandlerError, match=r"store=\.\.\."):
            bus.subscribe(RemoteOrder, print, group="g", idempotent=True)
        with pytest.raises(tidings.InvalidHandlerError, match="from_= is not"):
            bus.subscribe(RemoteOrder, print, from_=0)


async def test_aclose_reports_every_event_the_outbox_could_not_send(
    nats_factory: Callable[..., NatsTransport],
    nats_server: NatsServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A window of one and a stream that is gone: the first publish is answered "not stored"
    # and resent (probed) until the close, the outbox waits for a window slot for the
    # second, the third is queued.
    transport = nats_factory(window=1, ack_timeout=0.5, publish_timeout=60.0)
    bus = tidings.Bus(transport=transport)
    await bus.start()
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().delete_stream(transport.stream.name)
    await nc.close()
    first, *queued = [bus.publish(RemoteOrder(f"o{i}", 1.0)).id for i in range(3)]
    with caplog.at_level(logging.ERROR, logger="tidings"):
        await bus.aclose(timeout=1.0)
    reported = [
        (getattr(r, "event_id", ""), r.message)
        for r in caplog.records
        if getattr(r, "event_id", None) in (first, *queued)
    ]
    assert sorted(event_id for event_id, _ in reported) == sorted([first, *queued])  # once each
    for event_id, message in reported:
        if event_id in queued:  # never handed to the transport
            assert "was not stored and will not be: the bus closed before it was sent" in message
        else:
            # The transport had it: "not stored" if each copy was answered so, and "may or
            # may not be stored" if the close caught a resent copy still unanswered (the
            # more likely the slower the machine).
            assert "was not stored" in message or "may or may not be stored" in message


class _StuckTransport(MemoryTransport):
    """A memory transport whose :meth:`send` never returns (a broker gone, a window full)."""

    async def send(self, envelope: tidings.Envelope[Any]) -> asyncio.Future[PublishAck]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_flush_waiting_when_the_bus_closes_raises_for_the_event_never_sent() -> None:
    # Regression: flush waited for the outbox to drain; the close gave up on the stuck send
    # and emptied the outbox without saying it was drained, so the flush waited forever.
    bus = tidings.Bus(transport=_StuckTransport())
    await bus.start()
    env = bus.publish(RemoteOrder("o1", 1.0))
    flushing = asyncio.ensure_future(bus.flush())
    await asyncio.sleep(0)  # the flush waits for the outbox
    assert not flushing.done()
    await bus.aclose(timeout=0.2)
    with pytest.raises(tidings.PublishError, match="closed before it was sent") as failed:
        await asyncio.wait_for(flushing, TIMEOUT)
    assert failed.value.event_id == env.id


class _RecordingTransport(MemoryTransport):
    """A memory transport that records each event handed to :meth:`send`."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    async def send(self, envelope: tidings.Envelope[Any]) -> asyncio.Future[PublishAck]:
        self.sent.append(envelope.id)
        return await super().send(envelope)


async def test_flush_waits_for_an_event_another_thread_published_before_it() -> None:
    # Regression: an event published from another thread reaches the outbox through the
    # loop; a flush right after found the outbox empty and returned before it was sent.
    transport = _RecordingTransport()
    async with tidings.Bus(transport=transport) as bus:
        await bus.start()
        published: list[str] = []
        thread = threading.Thread(
            target=lambda: published.append(bus.publish(RemoteOrder("o1", 1.0)).id)
        )
        thread.start()
        thread.join(TIMEOUT)  # blocks the loop: the event waits for it to enqueue
        assert len(published) == 1
        async with asyncio.timeout(TIMEOUT):  # in this task: a new one lets the loop run first
            await bus.flush()
        assert transport.sent == published


class _PublishingWhileClosing(MemoryTransport):
    """A memory transport on whose close an event is published (as by another task)."""

    def __init__(self) -> None:
        super().__init__()
        self.late: list[tidings.Envelope[Any]] = []
        self.bus: tidings.Bus | None = None

    async def aclose(self, timeout: float = 10.0) -> None:
        assert self.bus is not None
        self.late.append(self.bus.publish(RemoteOrder("late", 1.0)))
        await super().aclose(timeout)


async def test_an_event_published_after_the_outbox_stopped_is_reported_and_flush_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regression: the bus takes events until its transport is closed, but the outbox had
    # stopped: such an event was never sent nor reported, and a flush waited for ever.
    transport = _PublishingWhileClosing()
    bus = tidings.Bus(transport=transport)
    transport.bus = bus
    await bus.start()
    with caplog.at_level(logging.ERROR, logger="tidings"):
        await bus.aclose(timeout=1.0)
    [late] = transport.late
    expected = (
        f"event {late.id} on 'remote.order' was not stored and will not be: the bus closed "
        "before it was sent"
    )
    reported = [r.getMessage() for r in caplog.records if getattr(r, "event_id", None) == late.id]
    assert reported == [expected]
    with pytest.raises(tidings.PublishError, match="closed before it was sent") as failed:
        await asyncio.wait_for(bus.flush(), TIMEOUT)
    assert failed.value.event_id == late.id


class _FailingTransport(MemoryTransport):
    """A memory transport that refuses events of amount 0 and cannot tell the outcome of
    those of a negative amount."""

    async def send(self, envelope: tidings.Envelope[Any]) -> asyncio.Future[PublishAck]:
        amount = envelope.payload.amount
        if amount == 0:
            raise tidings.PublishError("refused", event_id=envelope.id, topic=envelope.topic)
        if amount < 0:
            raise tidings.PublishOutcomeUnknownError(
                "unknown", event_id=envelope.id, topic=envelope.topic, envelope=envelope
            )
        return await super().send(envelope)


async def test_flush_raises_publish_error_for_a_refusal_older_than_the_failures_named() -> None:
    # Regression: flush names the latest 256 failures; a refusal before 300 events of unknown
    # outcome was forgotten, and flush raised PublishOutcomeUnknownError (none refused).
    async with tidings.Bus(transport=_FailingTransport()) as bus:
        await bus.start()
        refused = bus.publish(RemoteOrder("refused", 0.0))
        for i in range(300):
            bus.publish(RemoteOrder(f"unknown {i}", -1.0))
        with pytest.raises(tidings.PublishError, match="301 publishes failed in all") as failed:
            await asyncio.wait_for(bus.flush(), TIMEOUT)
        assert type(failed.value) is tidings.PublishError
        assert failed.value.event_id == refused.id
        await asyncio.wait_for(bus.flush(), TIMEOUT)  # reported once


class _NoSchemas:
    """A schema source without schemas: a validator over it lets every event through."""

    def cached(self, subject: str, version: int | None = None) -> None:
        return None


@pytest.mark.parametrize("validating", [False, True], ids=["nats", "validating nats"])
async def test_a_bus_flush_leaves_the_transport_s_failure_count_to_its_flush(
    nats_factory: Callable[..., NatsTransport], nats_server: NatsServer, validating: bool
) -> None:
    # Regression: bus.flush() flushed the transport, which returns how many sends failed
    # since its last flush and starts counting again: a caller of transport.flush() after
    # it got 0 for a send that had failed.
    nats_transport = nats_factory(
        prefix="counted",
        stream=StreamSettings(name="COUNTED"),
        ack_timeout=0.5,  # each copy is answered "no responders" well within it
        publish_timeout=1.0,
    )
    transport: Transport = nats_transport
    if validating:  # it waits as its inner transport does
        transport = ValidatingTransport(nats_transport, Validator(_NoSchemas()))
    async with tidings.Bus(transport=transport) as bus:
        await bus.start()
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().delete_stream("COUNTED")  # now no send is stored
        finally:
            await nc.close()
        lost = make_envelope(HybridClock(), "lost")
        sent = await transport.send(lost)  # beside the bus, on its transport
        with pytest.raises(tidings.PublishError, match="not stored") as failed:
            await asyncio.wait_for(bus.flush(), TIMEOUT)  # the bus reports it too
        assert failed.value.event_id == lost.id
        assert isinstance(sent.exception(), tidings.PublishError)
        assert await transport.flush(TIMEOUT) == 1  # before: 0, the bus's flush took it
        assert await transport.flush(TIMEOUT) == 0

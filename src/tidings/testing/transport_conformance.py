"""One conformance suite every :class:`~tidings.transports.Transport` must pass.

Subclass :class:`TransportConformance` in a test module and provide the
``transport_factory`` fixture: a callable that returns a new, unstarted transport (standing
for one process) connected to the same backend as every other transport it returns, and
isolated from other tests. Keyword arguments it receives (``policy=``, ``structured=``)
go to the transport's constructor. Needs pytest and pytest-asyncio::

    from tidings.testing.transport_conformance import TransportConformance

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def transport_factory(self):
            broker = MemoryBroker()
            return lambda **options: MemoryTransport(broker, **options)

Every wait in the suite has a timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from tidings.clock import HybridClock
from tidings.event import Envelope, event
from tidings.exceptions import ConsumerConfigError, TransportClosedError
from tidings.transports.base import (
    DeadLetterRecord,
    DeliveryPolicy,
    Message,
    Transport,
)

__all__ = ("Collector", "DeadLetters", "TransportConformance", "TransportFactory", "eventually")

TransportFactory = Callable[..., Transport]
"""``factory(**options) -> Transport``: a new unstarted transport on the test's backend."""

TIMEOUT = 15.0
"""The longest any single wait of the suite takes before failing."""

FAST = DeliveryPolicy(max_deliver=3, ack_wait=2.0, backoff=0.05, backoff_max=0.5)


@event("conformance.order")
@dataclass(frozen=True)
class ConformanceOrder:
    """The event class the suite publishes."""

    order_id: str
    amount: float


class Collector:
    """An async message handler that records what it gets and lets tests wait for it."""

    def __init__(self, fail: Callable[[Message], bool] | None = None) -> None:
        self.messages: list[Message] = []
        self.times: list[float] = []
        self._fail = fail
        self._changed = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.times.append(time.monotonic())
        self._changed.set()
        if self._fail is not None and self._fail(message):
            raise RuntimeError(f"refusing {message.envelope.id}")

    @property
    def ids(self) -> list[str]:
        """The event ids received, redeliveries included, in order."""
        return [m.envelope.id for m in self.messages]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait until ``predicate()`` holds, re-checking after every message.

        Raises:
            TimeoutError: if it does not hold within ``timeout`` seconds.
        """
        await _wait_until(
            predicate,
            self._changed,
            timeout,
            lambda: f"condition not met within {timeout}s ({len(self.messages)} messages)",
        )

    async def wait_count(self, count: int, timeout: float = TIMEOUT) -> None:
        """Wait until at least ``count`` messages arrived."""
        await self.wait_for(lambda: len(self.messages) >= count, timeout)


async def _wait_until(
    predicate: Callable[[], bool],
    changed: asyncio.Event,
    timeout: float,
    failure: Callable[[], str],
) -> None:
    """Wait until ``predicate()`` holds, re-checking it each time ``changed`` is set.

    Raises:
        TimeoutError: with the message ``failure()``, if it does not hold within ``timeout``
            seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError(failure())
        changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), remaining)


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds, checking every 10 ms.

    Raises:
        TimeoutError: if it does not hold within ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


class _FailingClock(HybridClock):
    """A clock that cannot merge any received time."""

    def update(self, remote: int) -> int:
        raise ValueError(f"cannot merge {remote}")


class DeadLetters:
    """A dead-letter handler for ``transport.subscribe_dead_letters`` that keeps every
    :class:`DeadLetterRecord` it is given, in order, and can wait for a count."""

    def __init__(self) -> None:
        self.records: list[DeadLetterRecord] = []
        self.changed = asyncio.Event()

    async def __call__(self, record: DeadLetterRecord) -> None:
        self.records.append(record)
        self.changed.set()

    async def wait_count(self, count: int, timeout: float = TIMEOUT) -> None:
        """Wait until at least ``count`` dead letters arrived.

        Raises:
            TimeoutError: if they do not within ``timeout`` seconds.
        """
        await _wait_until(
            lambda: len(self.records) >= count,
            self.changed,
            timeout,
            lambda: f"{len(self.records)} dead letters, expected {count}",
        )


def make_envelope(
    clock: HybridClock,
    order_id: str,
    *,
    key: str | None = None,
    topic: str = "conformance.order",
    headers: dict[str, str] | None = None,
) -> Envelope[ConformanceOrder]:
    """A fresh envelope of :class:`ConformanceOrder` stamped by ``clock``."""
    return Envelope(
        topic,
        ConformanceOrder(order_id, float(len(order_id))),
        clock.now(),
        key,
        "conformance",
        headers if headers is not None else {},
        None,
        clock.node,
    )


async def _member(open_transport: Callable[..., Any], *features: str) -> Transport:
    """A started transport on the test's backend (one process); skip the test unless it
    has every one of ``features`` (names of :class:`~tidings.transports.base.TransportFeatures` fields)."""
    transport: Transport = await open_transport()
    lacking = [f for f in features if not getattr(transport.features, f)]
    if lacking:
        pytest.skip(f"transport lacks {', '.join(lacking)}")
    return transport


async def _members(
    open_transport: Callable[..., Any], *features: str
) -> tuple[Transport, Transport]:
    """Two started transports on one backend (two processes); skip without ``features``."""
    one = await _member(open_transport, *features)
    two: Transport = await open_transport()
    return one, two


async def _group_handles_what_is_sent(
    publisher: Transport, clock: HybridClock, *members: Collector
) -> tuple[set[str], set[str]]:
    """Send 30 keyed events (every partition gets some) and wait until the group's
    ``members`` handled each: (the ids sent, the ids the members handled)."""
    sent = [make_envelope(clock, f"sent-{i}", key=f"k{i}") for i in range(30)]
    for env in sent:
        await publisher.send(env)
    assert await publisher.flush(TIMEOUT) == 0
    wanted = {env.id for env in sent}

    def handled() -> set[str]:
        return {i for member in members for i in member.ids}

    await eventually(lambda: wanted <= handled())
    return wanted, handled()


class TransportConformance:
    """The transport conformance suite; see the module docstring."""

    pytestmark = pytest.mark.asyncio

    @pytest.fixture
    def transport_factory(self) -> TransportFactory:
        raise NotImplementedError("define the transport_factory fixture in your subclass")

    @pytest.fixture
    async def open_transport(
        self, transport_factory: TransportFactory
    ) -> AsyncIterator[Callable[..., Any]]:
        """``await open_transport(**options)``: a started transport, closed after the test."""
        opened: list[Transport] = []

        async def open_one(**options: Any) -> Transport:
            transport = transport_factory(**options)
            await asyncio.wait_for(transport.start(), TIMEOUT)
            opened.append(transport)
            return transport

        yield open_one
        for transport in reversed(opened):
            await asyncio.wait_for(transport.aclose(timeout=5.0), TIMEOUT)

    # ------------------------------------------------------------------ publish and receive

    async def test_envelope_round_trip(self, open_transport: Callable[..., Any]) -> None:
        transport: Transport = await open_transport()
        got = Collector()
        await transport.subscribe("conformance.>", got)
        clock = HybridClock()
        sent = make_envelope(clock, "o-1", key="k1", headers={"traceparent": "00-ab-cd-01"})
        ack = await transport.publish(sent)
        assert ack.sequence >= 1
        assert not ack.duplicate
        await got.wait_count(1)
        [message] = got.messages
        received = message.envelope
        assert message.attempt == 1
        assert received.id == sent.id
        assert received.topic == sent.topic
        assert received.time == sent.time
        assert received.key == "k1"
        assert received.source == "conformance"
        assert received.payload == sent.payload
        assert isinstance(received.payload, ConformanceOrder)
        assert dict(received.headers) == {"traceparent": "00-ab-cd-01"}

    async def test_structured_mode_round_trip(self, open_transport: Callable[..., Any]) -> None:
        publisher: Transport = await open_transport(structured=True)
        consumer: Transport = await open_transport()
        got = Collector()
        await consumer.subscribe("conformance.order", got)
        sent = make_envelope(HybridClock(), "o-2", key="k", headers={"traceparent": "00-x-y-01"})
        await publisher.publish(sent)
        await got.wait_count(1)
        received = got.messages[0].envelope
        assert (received.id, received.time, received.key, received.payload) == (
            sent.id,
            sent.time,
            "k",
            sent.payload,
        )
        assert received.headers.get("traceparent") == "00-x-y-01"

    async def test_pattern_selects_topics(self, open_transport: Callable[..., Any]) -> None:
        transport: Transport = await open_transport()
        star, tail = Collector(), Collector()
        await transport.subscribe("conformance.a.*", star)
        await transport.subscribe("conformance.>", tail)
        clock = HybridClock()
        for topic in ("conformance.a.x", "conformance.b.x", "conformance.a.x.y"):
            await transport.publish(make_envelope(clock, topic, topic=topic))
        await tail.wait_count(3)
        await star.wait_count(1)  # subscriptions run independently (Kafka: one consumer each)
        assert [m.envelope.topic for m in star.messages] == ["conformance.a.x"]

    async def test_pipelined_sends_are_all_acknowledged(
        self, open_transport: Callable[..., Any]
    ) -> None:
        transport: Transport = await open_transport()
        got = Collector()
        await transport.subscribe("conformance.>", got)
        clock = HybridClock()
        sent = [make_envelope(clock, f"p-{i}") for i in range(300)]
        futures = [await transport.send(env) for env in sent]
        assert await transport.flush(TIMEOUT) == 0
        sequences = [future.result().sequence for future in futures]
        assert sequences == sorted(sequences)
        assert len(set(sequences)) == 300
        await got.wait_count(300)
        assert got.ids == [env.id for env in sent]

    async def test_wait_acknowledged_waits_for_every_send_as_flush_does(
        self, open_transport: Callable[..., Any]
    ) -> None:
        # What a bus's flush and close wait with: every send acknowledged when it returns.
        transport: Transport = await open_transport()
        clock = HybridClock()
        futures = [await transport.send(make_envelope(clock, f"w-{i}")) for i in range(100)]
        await transport.wait_acknowledged(TIMEOUT)
        assert [f.done() and f.exception() is None for f in futures] == [True] * 100
        assert len({f.result().sequence for f in futures}) == 100
        assert await transport.flush(TIMEOUT) == 0

    async def test_duplicate_publish_is_dropped(self, open_transport: Callable[..., Any]) -> None:
        transport = await _member(open_transport, "dedup")
        got = Collector()
        await transport.subscribe("conformance.>", got)
        clock = HybridClock()
        first = make_envelope(clock, "dup")
        await transport.publish(first)
        again = await transport.publish(first)
        assert again.duplicate
        await transport.publish(make_envelope(clock, "after"))
        await got.wait_count(2)
        assert [m.envelope.payload.order_id for m in got.messages] == ["dup", "after"]

    @pytest.mark.parametrize("group", [None, "late"])
    async def test_start_new_delivers_what_is_published_once_subscribe_returned(
        self, open_transport: Callable[..., Any], group: str | None
    ) -> None:
        """``start="new"`` on a topic that already holds events: none of those, and every
        event published after ``subscribe`` returned (however soon)."""
        transport: Transport = await open_transport()
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "before", key="k0"))
        got = Collector()
        policy = DeliveryPolicy(start="new")
        await transport.subscribe("conformance.order", got, group=group, policy=policy)
        sent = [make_envelope(clock, f"after-{i}", key=f"k{i}") for i in range(3)]
        for env in sent:
            await transport.publish(env)
        await got.wait_count(3)
        assert sorted(got.ids) == sorted(env.id for env in sent)

    # ------------------------------------------------------------------ fan-out and groups

    async def test_every_ungrouped_subscription_gets_every_event(
        self, open_transport: Callable[..., Any]
    ) -> None:
        one: Transport = await open_transport()
        two: Transport = await open_transport()
        a, b = Collector(), Collector()
        await one.subscribe("conformance.>", a)
        await two.subscribe("conformance.>", b)
        clock = HybridClock()
        for i in range(20):
            await one.publish(make_envelope(clock, f"f-{i}"))
        await a.wait_count(20)
        await b.wait_count(20)
        assert a.ids == b.ids

    async def test_group_members_share_the_events(self, open_transport: Callable[..., Any]) -> None:
        one, two = await _members(open_transport, "groups")
        a, b = Collector(), Collector()
        policy = DeliveryPolicy(prefetch=4)
        await one.subscribe("conformance.>", a, group="workers", policy=policy)
        await two.subscribe("conformance.>", b, group="workers", policy=policy)
        clock = HybridClock()
        sent = [make_envelope(clock, f"g-{i}") for i in range(200)]
        for env in sent:
            await one.send(env)
        assert await one.flush(TIMEOUT) == 0
        await eventually(lambda: len(a.messages) + len(b.messages) >= 200)
        assert sorted(a.ids + b.ids) == sorted(e.id for e in sent)
        assert not set(a.ids) & set(b.ids)

    @pytest.mark.parametrize("same_transport", [False, True])
    async def test_group_members_subscribing_together_get_what_is_published_after(
        self, open_transport: Callable[..., Any], same_transport: bool
    ) -> None:
        """Two members of a new group subscribe with ``start="new"`` at once (two processes,
        or two subscriptions of one): every event published once both ``subscribe`` calls
        returned is handled by the group (at least once), none published before."""
        one = await _member(open_transport, "groups")
        two: Transport = one if same_transport else await open_transport()
        clock = HybridClock()
        await one.publish(make_envelope(clock, "before", key="k0"))
        a, b = Collector(), Collector()
        policy = DeliveryPolicy(start="new")
        await asyncio.wait_for(
            asyncio.gather(
                one.subscribe("conformance.order", a, group="together", policy=policy),
                two.subscribe("conformance.order", b, group="together", policy=policy),
            ),
            TIMEOUT,
        )
        wanted, handled = await _group_handles_what_is_sent(one, clock, a, b)
        assert handled == wanted

    @pytest.mark.parametrize("first", ["all", "new"])
    async def test_group_members_with_different_starts_get_what_is_published_after(
        self, open_transport: Callable[..., Any], first: str
    ) -> None:
        """Members of one group subscribe one with ``start="all"``, one with
        ``start="new"`` (``first`` subscribes first): ``subscribe`` returns for both, and
        every event published once both returned is handled by the group (at least once).
        The group's position decides where it reads; ``start`` only matters where the group
        has none (so the event published before may be handled, nothing else)."""
        one, two = await _members(open_transport, "groups")
        clock = HybridClock()
        before = make_envelope(clock, "before", key="k0")
        await one.publish(before)
        a, b = Collector(), Collector()
        starts: tuple[Literal["all", "new"], ...] = (
            ("all", "new") if first == "all" else ("new", "all")
        )
        for member, got, start in zip((one, two), (a, b), starts, strict=True):
            policy = DeliveryPolicy(start=start)
            await asyncio.wait_for(
                member.subscribe("conformance.order", got, group="mixed", policy=policy),
                TIMEOUT,
            )
        wanted, handled = await _group_handles_what_is_sent(one, clock, a, b)
        assert handled - wanted <= {before.id}

    # ------------------------------------------------------------------ failures

    async def test_failing_event_is_retried_with_backoff_then_dead_lettered(
        self, open_transport: Callable[..., Any]
    ) -> None:
        transport: Transport = await open_transport()
        policy = DeliveryPolicy(max_deliver=3, ack_wait=5.0, backoff=0.1, backoff_max=1.0)
        got = Collector(fail=lambda m: m.envelope.payload.order_id == "poison")
        await transport.subscribe("conformance.>", got, policy=policy, name="poison.handler")
        dead = DeadLetters()
        await transport.subscribe_dead_letters(dead)
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "poison"))
        for i in range(5):
            await transport.publish(make_envelope(clock, f"ok-{i}"))
        await dead.wait_count(1)
        [record] = dead.records
        assert record.envelope is not None
        assert record.reason == "RuntimeError: refusing " + record.envelope.id
        assert record.handler == "poison.handler"
        assert record.attempts == 3
        assert record.topic == "conformance.order"
        assert record.envelope.payload == ConformanceOrder("poison", 6.0)
        poison = [
            (m.attempt, t)
            for m, t in zip(got.messages, got.times, strict=True)
            if m.envelope.payload.order_id == "poison"
        ]
        assert [attempt for attempt, _ in poison] == [1, 2, 3]
        gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(poison)]
        assert gaps[0] >= 0.1 * 0.9
        assert gaps[1] >= 0.2 * 0.9
        handled = {m.envelope.payload.order_id for m in got.messages}
        assert {f"ok-{i}" for i in range(5)} <= handled

    async def test_undecodable_message_is_dead_lettered_and_consumer_goes_on(
        self, open_transport: Callable[..., Any]
    ) -> None:
        transport = await _member(open_transport, "raw_publish")
        got = Collector()
        await transport.subscribe("conformance.>", got, policy=FAST)
        dead = DeadLetters()
        await transport.subscribe_dead_letters(dead)
        await transport.publish_raw("conformance.order", b"\xff not json {")
        await transport.publish_raw("conformance.order", b'{"order_id": 7}')
        await transport.publish_raw(
            "conformance.order",
            b'{"order_id": "old", "amount": 1.0}',
            {"ce-id": "old-1", "ce-time": "1969-12-31T23:59:59Z"},
        )
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "fine"))
        await got.wait_count(1)
        await dead.wait_count(3)
        assert [m.envelope.payload.order_id for m in got.messages] == ["fine"]
        for record in dead.records:
            assert record.handler == "tidings.decode"
            assert record.attempts == 1
            assert record.envelope is None
        assert [
            r.reason.startswith("DecodeError: cannot decode the body") for r in dead.records
        ] == [True, True, False]
        assert dead.records[0].body == b"\xff not json {"
        assert "ConformanceOrder" in dead.records[1].reason
        assert "outside the years 1970 to 2262" in dead.records[2].reason

    async def test_event_whose_time_cannot_be_merged_is_dead_lettered(
        self, open_transport: Callable[..., Any]
    ) -> None:
        transport: Transport = await open_transport(clock=_FailingClock())
        got = Collector()
        sub = await transport.subscribe("conformance.>", got, policy=FAST)
        dead = DeadLetters()
        observer: Transport = await open_transport()  # its clock reads the dead letters
        await observer.subscribe_dead_letters(dead)
        clock = HybridClock()
        for name in ("first", "second"):
            await transport.publish(make_envelope(clock, name))
        await dead.wait_count(2)  # the subscription went on after the first
        assert got.messages == []
        assert [r.reason.startswith("ValueError: cannot merge") for r in dead.records] == [
            True,
            True,
        ]
        assert {r.handler for r in dead.records} == {"tidings.decode"}
        assert sub.stats().decode_errors == 2

    async def test_plain_json_from_a_foreign_client_is_accepted(
        self, open_transport: Callable[..., Any]
    ) -> None:
        transport = await _member(open_transport, "raw_publish")
        got = Collector()
        await transport.subscribe("conformance.>", got)
        await transport.publish_raw(
            "conformance.order",
            b'{"order_id": "go-1", "amount": 2.5}',
            {"ce-specversion": "1.0", "ce-id": "go-1", "ce-source": "go-client"},
        )
        await got.wait_count(1)
        received = got.messages[0].envelope
        assert received.id == "go-1"
        assert received.source == "go-client"
        assert received.payload == ConformanceOrder("go-1", 2.5)

    async def test_explicit_settlement(self, open_transport: Callable[..., Any]) -> None:
        transport: Transport = await open_transport()

        async def handler(message: Message) -> None:
            await got(message)
            name = message.envelope.payload.order_id
            if name == "nak" and message.attempt == 1:
                await message.nak(0.05)
            elif name == "term":
                await message.term()

        got = Collector()
        await transport.subscribe("conformance.>", handler, policy=FAST)
        clock = HybridClock()
        for name in ("nak", "term", "last"):
            await transport.publish(make_envelope(clock, name))
        await got.wait_for(
            lambda: [m.envelope.payload.order_id for m in got.messages].count("nak") == 2
        )
        attempts = [(m.envelope.payload.order_id, m.attempt) for m in got.messages]
        assert ("nak", 2) in attempts
        assert [a for a in attempts if a[0] == "term"] == [("term", 1)]

    async def test_unsettled_event_is_redelivered_after_ack_wait(
        self, open_transport: Callable[..., Any]
    ) -> None:
        stuck, rescuer = await _members(open_transport, "redelivery", "groups")
        release = asyncio.Event()
        policy = DeliveryPolicy(ack_wait=1.0, heartbeats=False, prefetch=1)
        hung = Collector()

        async def hang(message: Message) -> None:
            await hung(message)
            await release.wait()

        await stuck.subscribe("conformance.>", hang, group="redeliver", policy=policy)
        clock = HybridClock()
        await stuck.publish(make_envelope(clock, "slow"))
        await hung.wait_count(1)
        rescued = Collector()
        await rescuer.subscribe("conformance.>", rescued, group="redeliver", policy=policy)
        await rescued.wait_count(1, timeout=TIMEOUT)
        assert rescued.messages[0].attempt == 2
        assert rescued.messages[0].envelope.id == hung.messages[0].envelope.id
        release.set()

    async def test_heartbeats_keep_a_long_handler_from_redelivery(
        self, open_transport: Callable[..., Any]
    ) -> None:
        one: Transport = await open_transport()
        two: Transport = await open_transport()
        policy = DeliveryPolicy(ack_wait=1.0, prefetch=1)
        got = Collector()
        finished = asyncio.Event()

        async def slow(message: Message) -> None:
            await got(message)
            if message.envelope.payload.order_id == "long":
                await asyncio.sleep(2.5)  # the handler's work: it outlives ack_wait
                finished.set()

        await one.subscribe("conformance.>", slow, group="beats", policy=policy)
        await two.subscribe("conformance.>", slow, group="beats", policy=policy)
        clock = HybridClock()
        await one.publish(make_envelope(clock, "long"))
        await asyncio.wait_for(finished.wait(), TIMEOUT)
        await one.publish(make_envelope(clock, "marker"))
        await got.wait_for(lambda: got.messages[-1].envelope.payload.order_id == "marker")
        assert [m.envelope.payload.order_id for m in got.messages] == ["long", "marker"]

    async def test_messages_waiting_for_a_worker_get_heartbeats(
        self, open_transport: Callable[..., Any]
    ) -> None:
        one, two = await _members(open_transport, "redelivery", "groups")
        policy = DeliveryPolicy(ack_wait=1.5, prefetch=8, workers=1, max_deliver=1)
        got, other = Collector(), Collector()

        async def slow(message: Message) -> None:
            await got(message)
            await asyncio.sleep(0.3)  # the handler's work: eight outlive ack_wait

        sub = await one.subscribe("conformance.>", slow, group="waiting", policy=policy)
        clock = HybridClock()
        for i in range(8):
            await one.publish(make_envelope(clock, f"w-{i}"))
        await eventually(lambda: sub.stats().delivered == 8)  # all held by one
        await two.subscribe("conformance.>", other, group="waiting", policy=policy)
        await eventually(lambda: sub.stats().acked == 8)
        assert other.messages == []  # nothing came back to the group
        assert [m.attempt for m in got.messages] == [1] * 8
        stats = sub.stats()
        assert (stats.dead_lettered, stats.duplicates) == (0, 0)

    async def test_redelivered_copy_of_a_held_message_is_not_handled_again(
        self, open_transport: Callable[..., Any]
    ) -> None:
        transport = await _member(open_transport, "redelivery")
        release = asyncio.Event()
        got = Collector()

        async def held(message: Message) -> None:
            await got(message)
            await release.wait()

        policy = DeliveryPolicy(ack_wait=1.0, heartbeats=False, prefetch=4, max_deliver=1)
        sub = await transport.subscribe("conformance.>", held, policy=policy)
        dead = DeadLetters()
        await transport.subscribe_dead_letters(dead)
        clock = HybridClock()
        sent = [make_envelope(clock, f"h-{i}") for i in range(3)]
        for env in sent:
            await transport.publish(env)
        await eventually(lambda: sub.stats().duplicates >= 1)  # redelivered after ack_wait
        release.set()
        await eventually(lambda: sub.stats().acked == 3)
        assert got.ids == [env.id for env in sent]
        assert dead.records == []
        assert sub.stats().dead_lettered == 0

    # ------------------------------------------------------------------ flow and order

    async def test_prefetch_bounds_unacknowledged_messages(
        self, open_transport: Callable[..., Any]
    ) -> None:
        transport: Transport = await open_transport()
        gate = asyncio.Event()
        got = Collector()

        async def gated(message: Message) -> None:
            await got(message)
            await gate.wait()

        policy = DeliveryPolicy(prefetch=4, workers=2)
        sub = await transport.subscribe("conformance.>", gated, policy=policy)
        clock = HybridClock()
        for i in range(40):
            await transport.send(make_envelope(clock, f"b-{i}", key=str(i % 2)))
        assert await transport.flush(TIMEOUT) == 0
        await got.wait_count(1)  # both keys may share a worker: one handler runs at least
        assert sub.stats().in_memory <= 4
        gate.set()
        await got.wait_count(40)
        stats = sub.stats()
        assert stats.max_in_memory <= 4
        assert stats.delivered == 40

    async def test_order_per_key_with_several_workers(
        self, open_transport: Callable[..., Any]
    ) -> None:
        transport = await _member(open_transport, "ordered_per_key")
        got = Collector()

        async def jittery(message: Message) -> None:
            if int(message.envelope.payload.order_id.split("-")[2]) % 3 == 0:
                await asyncio.sleep(0)  # let other workers interleave
            await got(message)

        policy = DeliveryPolicy(workers=4, prefetch=64)
        await transport.subscribe("conformance.>", jittery, policy=policy)
        clock = HybridClock()
        for i in range(200):
            await transport.send(make_envelope(clock, f"k{i % 5}-n-{i}", key=f"k{i % 5}"))
        assert await transport.flush(TIMEOUT) == 0
        await got.wait_count(200)
        for key in (f"k{j}" for j in range(5)):
            numbers = [
                int(m.envelope.payload.order_id.split("-")[2])
                for m in got.messages
                if m.envelope.key == key
            ]
            assert numbers == sorted(numbers)
            assert len(numbers) == 40

    async def test_exclusive_group_keeps_key_order_across_members_then_hands_over(
        self, open_transport: Callable[..., Any]
    ) -> None:
        one, two = await _members(open_transport, "exclusive_groups")
        got = {id(one): Collector(), id(two): Collector()}
        policy = DeliveryPolicy(workers=4, prefetch=16, exclusive=True, takeover=3.0)
        subs = {
            id(t): await t.subscribe("conformance.>", got[id(t)], group="pinned", policy=policy)
            for t in (one, two)
        }
        clock = HybridClock()

        async def send(start: int) -> None:
            for i in range(start, start + 100):
                await one.send(make_envelope(clock, f"k{i % 5}-n-{i}", key=f"k{i % 5}"))
            assert await one.flush(TIMEOUT) == 0

        def in_key_order(messages: list[Message]) -> bool:
            last: dict[str | None, int] = {}
            for m in messages:
                n = int(m.envelope.payload.order_id.split("-")[2])
                if n <= last.get(m.envelope.key, -1):
                    return False
                last[m.envelope.key] = n
            return True

        await send(0)
        await eventually(lambda: sum(len(c.messages) for c in got.values()) >= 100)
        active = next(t for t in (one, two) if got[id(t)].messages)
        standby = two if active is one else one
        assert len(got[id(active)].messages) == 100  # one member had them all, in key order
        assert not got[id(standby)].messages
        assert in_key_order(got[id(active)].messages)
        await subs[id(active)].cancel()  # the active member leaves: the standby takes over
        await send(100)
        await got[id(standby)].wait_count(100)
        assert in_key_order(got[id(standby)].messages)
        handled = got[id(active)].ids + got[id(standby)].ids
        assert len(handled) == len(set(handled)) == 200

    async def test_group_members_must_agree_on_exclusive_and_takeover(
        self, open_transport: Callable[..., Any]
    ) -> None:
        one, two = await _members(open_transport, "exclusive_groups")
        got = Collector()
        exclusive = DeliveryPolicy(exclusive=True, takeover=5.0)  # no stall can move the pin
        await one.subscribe("conformance.>", got, group="agree", policy=exclusive)
        clock = HybridClock()
        await one.send(make_envelope(clock, "running"))
        await got.wait_count(1)  # the member runs: the group's policy is set
        with pytest.raises(ConsumerConfigError, match="exclusive: server has True, configured"):
            await two.subscribe("conformance.>", Collector(), group="agree")
        policy = DeliveryPolicy(exclusive=True, takeover=6.0)
        with pytest.raises(ConsumerConfigError, match="takeover: server has 5s, configured 6s"):
            await two.subscribe("conformance.>", Collector(), group="agree", policy=policy)
        await one.send(make_envelope(clock, "agreed"))  # the group still works
        await got.wait_count(2)
        # With every member stopped, the next to start sets the policy; the group keeps its
        # position (an event published meanwhile is delivered).
        await one.aclose(timeout=5.0)
        await two.send(make_envelope(clock, "meanwhile"))
        assert await two.flush(TIMEOUT) == 0
        later = Collector()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:  # until the server no longer counts the stopped member's last request
            try:
                await two.subscribe("conformance.>", later, group="agree", policy=policy)
                break
            except ConsumerConfigError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        await later.wait_count(1)
        assert later.messages[0].envelope.payload.order_id == "meanwhile"

    async def test_received_times_merge_into_the_clock(
        self, open_transport: Callable[..., Any]
    ) -> None:
        local = HybridClock()
        transport: Transport = await open_transport()
        transport_clock = transport.clock
        got = Collector()
        sub = await transport.subscribe("conformance.>", got)
        ahead = HybridClock(wall=lambda: time.time_ns() + 200_000_000)  # 0.2 s ahead
        sent = make_envelope(ahead, "ahead")
        await transport.publish(sent)
        far = time.time_ns() + 3600 * 10**9
        await transport.publish(
            Envelope("conformance.order", ConformanceOrder("far", 1.0), far, None, "x", {}, "far-1")
        )
        await got.wait_count(2)
        assert transport_clock.now() > sent.time
        assert sub.stats().clock_skew == 1
        assert [m.envelope.id for m in got.messages] == [sent.id, "far-1"]
        assert local.now() > 0

    # ------------------------------------------------------------------ lifecycle

    async def test_cancel_stops_delivery(self, open_transport: Callable[..., Any]) -> None:
        transport: Transport = await open_transport()
        got, other = Collector(), Collector()
        sub = await transport.subscribe("conformance.>", got)
        await transport.subscribe("conformance.>", other)
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "before"))
        await got.wait_count(1)
        await sub.cancel()
        await sub.cancel()
        await transport.publish(make_envelope(clock, "after"))
        await other.wait_count(2)
        assert got.ids == other.ids[:1]

    async def test_aclose_finishes_in_flight_handlers_and_acks(
        self, transport_factory: TransportFactory, open_transport: Callable[..., Any]
    ) -> None:
        closing: Transport = transport_factory()
        await closing.start()
        started, release = asyncio.Event(), asyncio.Event()
        finished: list[str] = []

        async def slow(message: Message) -> None:
            started.set()
            await release.wait()
            finished.append(message.envelope.id)

        policy = DeliveryPolicy(ack_wait=1.0)
        sub = await closing.subscribe("conformance.>", slow, group="closing", policy=policy)
        clock = HybridClock()
        sent = make_envelope(clock, "in-flight")
        await closing.publish(sent)
        await asyncio.wait_for(started.wait(), TIMEOUT)
        close = asyncio.create_task(closing.aclose(timeout=TIMEOUT))
        await asyncio.sleep(0)
        assert not close.done()
        release.set()
        await asyncio.wait_for(close, TIMEOUT)
        assert finished == [sent.id]
        assert sub.stats().acked == 1
        with pytest.raises(TransportClosedError):
            await closing.publish(make_envelope(clock, "late"))
        # The group does not get the finished event again; the next one it does.
        other: Transport = await open_transport()
        got = Collector()
        await other.subscribe("conformance.>", got, group="closing", policy=policy)
        marker = make_envelope(clock, "marker")
        await other.publish(marker)
        await got.wait_count(1)
        assert got.ids == [marker.id]

    async def test_a_handler_runs_in_a_task_of_its_own(
        self, open_transport: Callable[..., Any]
    ) -> None:
        """A handler's ``asyncio.timeout`` cancels that handler, not the subscription's
        fetching, and a context variable it sets holds across its suspensions."""
        transport: Transport = await open_transport()
        got = Collector()
        outcomes: list[tuple[str, str, str]] = []
        mark: contextvars.ContextVar[str] = contextvars.ContextVar("conformance_mark")

        async def bounded(message: Message) -> None:
            order_id = message.envelope.payload.order_id
            mark.set(order_id)
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(TIMEOUT)  # the handler's slow work, cut short
                outcome = "not cut short"
            except TimeoutError:
                outcome = "timed out"
            outcomes.append((order_id, outcome, mark.get("unset")))
            await got(message)

        await transport.subscribe("conformance.>", bounded, policy=FAST)
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "first"))
        await got.wait_count(1)
        await transport.publish(make_envelope(clock, "second"))  # fetched after the first
        await got.wait_count(2)
        assert outcomes == [
            ("first", "timed out", "first"),
            ("second", "timed out", "second"),
        ]

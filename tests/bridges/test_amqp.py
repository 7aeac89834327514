"""The AMQP 0-9-1 bridge against the real RabbitMQ: exchanges and routing keys, the
CloudEvents AMQP binding (made and read by the cloudevents SDK's AMQP binding), publisher
confirms, manual acks after acceptance, dead letters through the broker's DLX, and the
broker gone mid-run (the chaos toolkit's FaultProxy resets and partitions the connection: the
shared RabbitMQ is not restarted)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import msgspec
import pytest
from aio_pika.abc import AbstractIncomingMessage
from cloudevents.core.bindings import amqp as sdk_amqp
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import tidings
from tidings.bridges.amqp import DEAD_QUEUE, DEAD_REASON, AmqpBridge, to_binding_key
from tidings.chaos.proxy import FaultProxy
from tidings.event import Envelope
from tidings.exceptions import EncodeError, TransportError, TransportUnavailableError
from tidings.testing.brokers import wait_until
from tidings.testing.nats_server import free_port

from .counting import CountingStore
from .flaky_sink import FlakySink
from .sdk_events import SAMPLE, assert_bad_input_reasons
from .stored import until_stored

WAIT = 30.0


# AMQP's binary mode carries the time in milliseconds: the sample's, to the millisecond.
INVOICE = dataclasses.replace(SAMPLE, time=SAMPLE.time.replace(microsecond=123000))
sdk_event = INVOICE.event


def to_aio_pika(message: sdk_amqp.AMQPMessage) -> aio_pika.Message:
    """The SDK's AMQP message as an AMQP 0-9-1 message (application properties as
    headers, content-type as the content_type property)."""
    return aio_pika.Message(
        message.application_data,
        headers=dict(message.application_properties),
        content_type=message.properties.get("content-type"),
    )


def from_aio_pika(message: AbstractIncomingMessage) -> CloudEvent:
    """Read what the bridge sent with the SDK's AMQP binding."""
    properties = {} if message.content_type is None else {"content-type": message.content_type}
    parsed = sdk_amqp.from_amqp(
        sdk_amqp.AMQPMessage(properties, dict(message.headers or {}), message.body), JSONFormat()
    )
    assert isinstance(parsed, CloudEvent)
    return parsed


@dataclass
class Rabbit:
    """The names of one test on the shared RabbitMQ, and a connection of its own."""

    url: str
    exchange: str
    dead: str
    queue: str
    connection: aio_pika.abc.AbstractConnection
    created_queues: list[str]

    async def publish(self, messages: Sequence[tuple[str, aio_pika.Message]]) -> None:
        """Publish to the test's exchange with confirms."""
        channel = await self.connection.channel()
        exchange = await channel.get_exchange(self.exchange)
        for routing_key, message in messages:
            await exchange.publish(message, routing_key=routing_key)
        await channel.close()

    async def collect(self, exchange: str, key: str = "#") -> Collected:
        """A queue of the test's own bound to ``exchange`` with ``key``, collecting."""
        channel = await self.connection.channel()
        name = f"{self.queue}-c{len(self.created_queues)}"
        self.created_queues.append(name)
        queue = await channel.declare_queue(name, durable=False, auto_delete=True)
        await queue.bind(exchange, key)
        collected = Collected()
        await queue.consume(collected.take, no_ack=True)
        return collected


class Collected:
    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []

    async def take(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)


@pytest.fixture
async def rabbit(amqp_url: str, unique: str) -> AsyncIterator[Rabbit]:
    """Unique exchange, dead-letter exchange and queue names; deleted after the test."""
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(unique, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(
        f"{unique}.dead", aio_pika.ExchangeType.TOPIC, durable=True, auto_delete=False
    )
    del exchange
    rabbit = Rabbit(amqp_url, unique, f"{unique}.dead", f"{unique}.q", connection, [])
    try:
        yield rabbit
    finally:
        cleanup = await connection.channel()
        for name in [rabbit.queue, *rabbit.created_queues]:
            await cleanup.queue_delete(name)
        await cleanup.exchange_delete(rabbit.exchange)
        await cleanup.exchange_delete(rabbit.dead)
        await connection.close()


def bridge(rabbit: Rabbit, bus: tidings.Bus | None = None, **options: Any) -> AmqpBridge:
    options.setdefault("exchange", rabbit.exchange)
    options.setdefault("dead_letter_exchange", rabbit.dead)
    options.setdefault("backoff_limit", 0.5)
    return AmqpBridge(bus, options.pop("url", rabbit.url), **options)


def test_binding_keys() -> None:
    assert to_binding_key("orders.*.>") == "orders.*.#"
    assert to_binding_key("orders.placed") == "orders.placed"


# -- out --------------------------------------------------------------------------------------


async def test_bus_topics_go_out_with_confirms_as_cloudevents_the_sdk_reads(
    rabbit: Rabbit,
) -> None:
    collected = await rabbit.collect(rabbit.exchange, "billing.#")
    async with (
        tidings.Bus(source="shop") as bus,
        bridge(rabbit, bus, publish=["billing.binary"]) as binary,
        bridge(rabbit, bus, publish=["billing.structured"], structured=True) as structured,
    ):
        first = await bus.emit({"n": 1}, topic="billing.binary", key="k1", headers={"tenant": "a"})
        second = await bus.emit({"n": 2}, topic="billing.structured")
        await wait_until(lambda: binary.counts.published == 1 and structured.counts.published == 1)
        await wait_until(lambda: len(collected.messages) == 2)
    by_key = {m.routing_key: m for m in collected.messages}
    out = by_key["billing.binary"]
    assert out.headers is not None
    assert out.headers["cloudEvents:id"] == first.envelope.id
    assert out.message_id == first.envelope.id
    assert out.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    event = from_aio_pika(out)
    assert event.get_id() == first.envelope.id
    assert (event.get_type(), event.get_source()) == ("billing.binary", "shop")
    assert event.get_data() == {"n": 1}
    assert event.get_extension("partitionkey") == "k1"
    assert event.get_extension("tenant") == "a"
    parsed = from_aio_pika(by_key["billing.structured"])
    assert by_key["billing.structured"].content_type == "application/cloudevents+json"
    assert (parsed.get_id(), parsed.get_data()) == (second.envelope.id, {"n": 2})


# -- in ---------------------------------------------------------------------------------------


async def test_queues_onto_the_bus_in_every_mode(rabbit: Rabbit) -> None:
    format_ = JSONFormat()
    sdk_binary = to_aio_pika(sdk_amqp.to_binary(sdk_event(id="bin-1"), format_))  # cloudEvents_
    colon = to_aio_pika(sdk_amqp.to_binary(sdk_event(id="colon-1"), format_))
    colon.headers = {
        name.replace("cloudEvents_", "cloudEvents:"): value
        for name, value in (colon.headers or {}).items()
    }
    sdk_structured = to_aio_pika(sdk_amqp.to_structured(sdk_event(id="str-1"), format_))
    plain = aio_pika.Message(b'{"legacy": true}', headers={"origin": "mainframe"})
    async with tidings.Bus() as bus:
        got: list[Envelope[Any]] = []
        bus.subscribe("invoices.>", got.append, envelope=True)
        async with bridge(
            rabbit, bus, queues=[rabbit.queue], bind=["invoices.>"], wrap_type="legacy.message"
        ) as amqp:
            await rabbit.publish(
                [
                    ("invoices.eu", sdk_binary),
                    ("invoices.eu", colon),
                    ("invoices.eu", sdk_structured),
                    ("invoices.us", plain),
                ]
            )
            await wait_until(lambda: amqp.counts.acknowledged == 4)
    by_id = {env.id: env for env in got}
    for event_id in ("bin-1", "colon-1", "str-1"):
        env = by_id.pop(event_id)
        assert env.topic == "invoices.eu"
        INVOICE.assert_taken_in(env, time="2026-01-02T12:30:45.123000Z")
    [wrapped] = by_id.values()
    assert (wrapped.topic, wrapped.payload) == ("invoices.us", {"legacy": True})
    assert wrapped.attributes == {
        "type": "legacy.message",
        "subject": f"{rabbit.exchange}/invoices.us",
    }
    assert wrapped.headers == {"origin": "mainframe"}
    assert amqp.counts.accepted == 4


@dataclass(frozen=True)
class Invoice:
    total: float


async def test_bad_input_is_dead_lettered_through_the_dlx_with_the_reason(rabbit: Rabbit) -> None:
    tidings.event("typed.invoice")(Invoice)
    format_ = JSONFormat()
    bad_time = to_aio_pika(sdk_amqp.to_binary(sdk_event(id="t"), format_))
    assert bad_time.headers is not None
    bad_time.headers = {**bad_time.headers, "cloudEvents_time": "yesterday"}
    no_id = to_aio_pika(sdk_amqp.to_binary(sdk_event(), format_))
    no_id.headers = {k: v for k, v in (no_id.headers or {}).items() if k != "cloudEvents_id"}
    unknown = to_aio_pika(sdk_amqp.to_binary(sdk_event(id="u", type="com.example.other"), format_))
    not_json = aio_pika.Message(b"{nope", content_type="application/cloudevents+json")
    messages = [
        ("in.bad", bad_time),
        ("in.bad", no_id),
        ("in.bad", unknown),
        ("in.bad", not_json),
        ("typed.invoice", aio_pika.Message(b'{"sum": "x"}')),  # not an Invoice
        ("in.a-b..c", aio_pika.Message(b"1")),  # a routing key that is no tidings topic
        ("in.good", aio_pika.Message(b"2")),
        ("typed.invoice", aio_pika.Message(b'{"total": 3.5}')),
    ]
    dead = await rabbit.collect(rabbit.dead)
    async with tidings.Bus() as bus:
        good: list[Any] = []
        bus.subscribe("in.good", good.append)
        bus.subscribe(Invoice, good.append)
        async with bridge(
            rabbit,
            bus,
            queues=[rabbit.queue],
            bind=["in.>", "typed.>"],
            types=[SAMPLE.type],
        ) as amqp:
            channel = await rabbit.connection.channel()
            exchange = await channel.get_exchange(rabbit.exchange)
            queue = await channel.get_queue(rabbit.queue)
            await queue.bind(exchange, "in.a-b..c")  # so the bad routing key reaches it
            await rabbit.publish(messages)
            await wait_until(lambda: amqp.counts.acknowledged == len(messages))
            await wait_until(lambda: len(dead.messages) == 6)
    assert good == [2, Invoice(3.5)]
    assert (amqp.counts.received, amqp.counts.accepted, amqp.counts.dead_lettered) == (8, 2, 6)
    reasons = [str((m.headers or {})[DEAD_REASON]) for m in dead.messages]
    assert_bad_input_reasons(reasons, wrong_type="Invoice", bad_name="in.a-b..c")
    assert {str((m.headers or {})[DEAD_QUEUE]) for m in dead.messages} == {rabbit.queue}
    assert dead.messages[4].body == b'{"sum": "x"}'  # body unchanged
    assert [m.routing_key for m in dead.messages][4:] == ["typed.invoice", "in.a-b..c"]


async def test_without_a_dead_letter_exchange_malformed_messages_are_rejected(
    rabbit: Rabbit,
) -> None:
    async with (
        tidings.Bus() as bus,
        bridge(
            rabbit, bus, queues=[rabbit.queue], bind=["in.>"], dead_letter_exchange=None
        ) as amqp,
    ):
        await rabbit.publish(
            [("in.x", aio_pika.Message(b"{", content_type="application/cloudevents+json"))]
        )
        await wait_until(lambda: amqp.counts.dead_lettered == 1)
        channel = await rabbit.connection.channel()
        queue = await channel.declare_queue(rabbit.queue, passive=True)
        assert queue.declaration_result.message_count == 0
    assert amqp.counts.acknowledged == 0


async def _busy_with_one(
    rabbit: Rabbit,
    sink: Callable[[Sequence[Envelope[Any]]], Awaitable[None]],
    busy: asyncio.Event,
    id: str,
) -> AmqpBridge:
    """A started bridge taking ``rabbit``'s queue into ``sink``, once ``sink`` has the event
    ``id`` published to ``{id}.x`` and set ``busy``."""
    amqp = bridge(rabbit, sink=sink, queues=[rabbit.queue], bind=[f"{id}.>"])
    await amqp.start()
    message = to_aio_pika(sdk_amqp.to_binary(sdk_event(id=id), JSONFormat()))
    await rabbit.publish([(f"{id}.x", message)])
    async with asyncio.timeout(WAIT):
        await busy.wait()
    return amqp


async def test_a_message_is_acknowledged_only_after_it_was_accepted(rabbit: Rabbit) -> None:
    stuck = asyncio.Event()
    accepted: list[str] = []

    async def never(envelopes: Sequence[Envelope[Any]]) -> None:
        stuck.set()
        await asyncio.Event().wait()

    async def works(envelopes: Sequence[Envelope[Any]]) -> None:
        accepted.extend(env.id for env in envelopes)

    first = await _busy_with_one(rabbit, never, stuck, "held")
    assert first.counts.acknowledged == 0
    await first.aclose()  # unacknowledged: back to the queue
    async with bridge(rabbit, sink=works, queues=[rabbit.queue]) as second:
        await wait_until(lambda: second.counts.acknowledged == 1)
    assert accepted == ["held"]


async def test_cancelling_aclose_while_a_worker_finishes_is_not_swallowed(rabbit: Rabbit) -> None:
    """``aclose()`` cancelled (its caller's timeout) while it waits for a worker whose sink
    finishes its write in flight: the cancellation goes on up, not swallowed with aclose
    going on to close the connection under the worker; a second ``aclose()`` finishes."""
    busy = asyncio.Event()
    release = asyncio.Event()

    async def finishing(envelopes: Sequence[Envelope[Any]]) -> None:
        busy.set()
        try:
            await asyncio.Event().wait()
        finally:  # cancelled: the write in flight ends first
            async with asyncio.timeout(WAIT):
                await release.wait()

    amqp = await _busy_with_one(rabbit, finishing, busy, "slow")
    workers = {t for t in asyncio.all_tasks() if t.get_name().startswith(f"tidings-{amqp.name}-")}
    assert len(workers) == 1
    closing = asyncio.create_task(amqp.aclose())
    await asyncio.sleep(0)  # closing cancels the worker and waits for its end
    assert not closing.done()
    closing.cancel()
    await asyncio.wait({closing}, timeout=WAIT / 2)
    assert closing.cancelled()
    assert not any(worker.done() for worker in workers)
    connected = amqp.connected  # not closed under the worker
    release.set()
    async with asyncio.timeout(WAIT):
        await amqp.aclose()
    assert all(worker.done() for worker in workers)
    assert (connected, amqp.connected) == (True, False)
    assert amqp.counts.acknowledged == 0  # unacknowledged: back to the queue


async def test_a_burst_is_appended_together_in_order_then_acknowledged(
    rabbit: Rabbit, tmp_path: Path
) -> None:
    """300 CloudEvents wait in the queue (every 50th a structured event that is not JSON):
    the bridge appends them in far fewer transactions than messages, in delivery order,
    dead-letters the 6 bad ones through the DLX and acknowledges every one."""
    total = 300
    async with bridge(rabbit, tidings.Bus(), queues=[rabbit.queue], bind=["burst.>"]):
        pass  # the queue and its binding now exist
    format_ = JSONFormat()
    messages = [
        (
            "burst.x",
            aio_pika.Message(b"{nope", content_type="application/cloudevents+json")
            if i % 50 == 49
            else to_aio_pika(
                sdk_amqp.to_binary(sdk_event(id=f"e-{i:03d}", data={"i": i}), format_)
            ),
        )
        for i in range(total)
    ]
    await rabbit.publish(messages)
    dead = await rabbit.collect(rabbit.dead)
    store = CountingStore(tmp_path / "log.db")
    async with (
        tidings.Bus(store=store) as bus,
        bridge(rabbit, bus, queues=[rabbit.queue], bind=["burst.>"]) as amqp,
    ):
        await wait_until(lambda: amqp.counts.acknowledged == total)
        await wait_until(lambda: len(dead.messages) == 6)
        records = await store.read(topic="burst.x")
    assert [r.envelope.id for r in records] == [f"e-{i:03d}" for i in range(total) if i % 50 != 49]
    counts = amqp.counts
    assert (counts.received, counts.accepted, counts.dead_lettered) == (total, 294, 6)
    assert max(store.batches) > 1
    assert len(store.batches) < total // 4  # together, not one transaction each


async def test_refusals_that_may_pass_are_retried_while_the_message_waits(rabbit: Rabbit) -> None:
    flaky = FlakySink(refusals=3)
    async with bridge(rabbit, sink=flaky, queues=[rabbit.queue], bind=["f.>"]) as amqp:
        message = to_aio_pika(sdk_amqp.to_binary(sdk_event(id="f1"), JSONFormat()))
        await rabbit.publish([("f.x", message)])
        await wait_until(lambda: amqp.counts.acknowledged == 1)
    assert flaky.accepted == ["f1"]
    assert (amqp.counts.retried, amqp.counts.accepted) == (3, 1)


# -- faults -----------------------------------------------------------------------------------


async def test_unreachable_broker_at_start_is_a_typed_error_within_the_timeout() -> None:
    amqp = AmqpBridge(
        tidings.Bus(), f"amqp://guest:guest@127.0.0.1:{free_port()}/", connect_timeout=2
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransportUnavailableError, match="did not accept a connection"):
        await amqp.start()
    assert loop.time() - started < 5


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _cut(proxy: FaultProxy) -> None:
    """The broker "goes away" for the bridge: its connections are reset, new ones held
    (a partition) until ``proxy.heal()``."""
    proxy.partition("both")
    proxy.reset()


def _through(proxy: FaultProxy, url: str) -> str:
    """``url`` pointed at ``proxy``, reconnecting every 0.3 s while cut."""
    rest = url.split("@", 1)[1].split("/", 1)[1]
    credentials = url.split("://", 1)[1].split("@", 1)[0]
    return f"amqp://{credentials}@127.0.0.1:{proxy.port}/{rest}?reconnect_interval=0.3"


async def test_broker_gone_mid_run_loses_no_accepted_message(
    rabbit: Rabbit, tmp_path: Path
) -> None:
    """400 CloudEvents published (with confirms, straight to RabbitMQ) into the queue while
    the bridge's connection is cut and restored mid-stream: every one is in the bus's log,
    once."""
    total = 400
    proxy = await FaultProxy(("127.0.0.1", _port(rabbit.url))).start()
    async with (
        tidings.Bus(store=f"sqlite:///{tmp_path}/log.db") as bus,
        bridge(
            rabbit,
            bus,
            url=_through(proxy, rabbit.url),
            queues=[rabbit.queue],
            bind=["gone.>"],
            prefetch=32,
        ) as amqp,
    ):
        format_ = JSONFormat()
        messages = [
            (
                "gone.x",
                to_aio_pika(sdk_amqp.to_binary(sdk_event(id=f"e-{i:04d}", data={"i": i}), format_)),
            )
            for i in range(total)
        ]
        await rabbit.publish(messages[:150])
        await wait_until(lambda: amqp.counts.accepted >= 60)
        _cut(proxy)
        await rabbit.publish(messages[150:])  # the broker holds them meanwhile
        await wait_until(lambda: not amqp.connected, timeout=10)  # the bridge saw it go
        proxy.heal()
        store = bus.store
        assert store is not None
        await until_stored(store, "gone.x", total, 60)
        # a batch is counted accepted once its append returns, just after the log shows it
        await wait_until(lambda: amqp.counts.accepted >= total, timeout=10)
        records = await store.read(topic="gone.x")
    await proxy.aclose()
    assert sorted(r.envelope.id for r in records) == [f"e-{i:04d}" for i in range(total)]
    assert amqp.counts.dead_lettered == 0
    assert amqp.counts.reconnects >= 1
    assert amqp.counts.accepted >= total  # redeliveries of what was unacknowledged at the cut
    assert amqp.counts.acknowledged <= amqp.counts.accepted


async def _emit_across_a_cut(
    bus: tidings.Bus, amqp: AmqpBridge, proxy: FaultProxy, topic: str, total: int
) -> None:
    """Emit ``total`` events (data ``{"i": i}``) on ``topic``: half, then (once 50 are
    published) the bridge's connection is cut, the other half, and it heals."""
    for i in range(total // 2):
        await bus.emit({"i": i}, topic=topic)
    await wait_until(lambda: amqp.counts.published >= 50)
    _cut(proxy)
    for i in range(total // 2, total):
        await bus.emit({"i": i}, topic=topic)
    await wait_until(lambda: not amqp.connected, timeout=10)  # the bridge saw it go
    proxy.heal()


async def test_events_out_survive_the_broker_going_away(rabbit: Rabbit, tmp_path: Path) -> None:
    """300 events on a bus with a store while the bridge's connection is cut and restored:
    the durable consumer retries each until confirmed; the queue gets every one."""
    total = 300
    proxy = await FaultProxy(("127.0.0.1", _port(rabbit.url))).start()
    collected = await rabbit.collect(rabbit.exchange, "away.#")
    async with (
        tidings.Bus(store=f"sqlite:///{tmp_path}/log.db") as bus,
        bridge(rabbit, bus, url=_through(proxy, rabbit.url), publish=["away.>"]) as amqp,
    ):
        await _emit_across_a_cut(bus, amqp, proxy, "away.x", total)
        await wait_until(lambda: amqp.counts.published >= total, timeout=60)

        def seen() -> set[int]:
            out = set()
            for message in collected.messages:
                data: Any = JSONFormat().read_data(message.body, None)
                out.add(data["i"])
            return out

        await wait_until(lambda: len(seen()) == total, timeout=60)
    await proxy.aclose()
    assert seen() == set(range(total))
    assert amqp.counts.reconnects >= 1
    assert amqp.counts.publish_failed >= 1


async def test_a_queue_declared_otherwise_is_a_typed_error_that_says_what_to_do(
    rabbit: Rabbit,
) -> None:
    channel = await rabbit.connection.channel()
    await channel.declare_queue(rabbit.queue, durable=False)  # no dead-letter exchange
    with pytest.raises(TransportError, match="declare=False"):
        await bridge(rabbit, tidings.Bus(), queues=[rabbit.queue]).start()
    missing = bridge(rabbit, exchange=f"{rabbit.exchange}.none", declare=False)
    with pytest.raises(TransportError, match="must exist"):
        await missing.start()


# -- out, pipelined confirms (a bus without a store) --------------------------------------------


def _numbers(collected: Collected) -> list[int]:
    """The ``i`` of each message ``collected`` took, in arrival order."""
    return [msgspec.json.decode(message.body)["i"] for message in collected.messages]


async def test_pipelined_confirms_keep_the_order_of_each_routing_key(rabbit: Rabbit) -> None:
    """1,000 events over 4 routing keys, up to 64 in flight: each arrives once, in emit
    order per routing key; every one counted published, none failed or dead-lettered."""
    keys = [f"seq.k{j}" for j in range(4)]
    collected = {key: await rabbit.collect(rabbit.exchange, key) for key in keys}
    dead: list[tidings.DeadLetter] = []
    async with tidings.Bus() as bus, bridge(rabbit, bus, publish=["seq.>"], window=64) as amqp:
        bus.subscribe(tidings.DeadLetter, dead.append)
        for i in range(1_000):
            await bus.emit({"i": i}, topic=keys[i % 4])
        await wait_until(lambda: amqp.counts.published == 1_000, timeout=60)
        await wait_until(lambda: sum(len(c.messages) for c in collected.values()) >= 1_000)
    for j, key in enumerate(keys):
        assert _numbers(collected[key]) == list(range(j, 1_000, 4))  # once each, in order
    assert (amqp.counts.published, amqp.counts.publish_failed) == (1_000, 0)
    assert dead == []


async def test_a_nack_in_the_middle_of_a_window_is_published_again(rabbit: Rabbit) -> None:
    """40 events in one window, alternating between a queue that takes 10 and then refuses
    (``x-overflow: reject-publish``: the broker nacks) and one that takes all: the nacked
    ones are published again until confirmed; each event arrives once, the other routing
    key in order."""
    channel = await rabbit.connection.channel()
    full = await channel.declare_queue(
        rabbit.queue,
        durable=False,
        arguments={"x-max-length": 10, "x-overflow": "reject-publish"},
    )
    await full.bind(rabbit.exchange, "mixed.full")
    free = await rabbit.collect(rabbit.exchange, "mixed.free")
    taken = Collected()
    async with tidings.Bus() as bus, bridge(rabbit, bus, publish=["mixed.>"]) as amqp:
        for i in range(40):
            await bus.emit({"i": i}, topic="mixed.full" if i % 2 == 0 else "mixed.free")
        await wait_until(lambda: amqp.counts.publish_failed >= 10)  # the queue is full
        assert amqp.counts.published == 30  # the window's other events are confirmed
        await full.consume(taken.take, no_ack=True)
        await wait_until(lambda: amqp.counts.published == 40)
        await wait_until(lambda: len(taken.messages) + len(free.messages) >= 40)
    numbers = _numbers(taken)
    assert numbers[:10] == list(range(0, 20, 2))  # the ones the queue took first, in order
    assert sorted(numbers) == list(range(0, 40, 2))  # each once: a nacked one is not there
    assert _numbers(free) == list(range(1, 40, 2))
    assert amqp.counts.published == 40
    assert amqp.counts.publish_failed >= 10


async def test_a_return_in_the_middle_of_a_window_is_published_again(rabbit: Rabbit) -> None:
    """With ``mandatory``, events of a routing key no queue is bound for yet are returned
    in the middle of their window and published again until a queue is bound; the others
    are confirmed meanwhile. Each arrives once; the bound key's events in order."""
    bound = await rabbit.collect(rabbit.exchange, "ret.bound")
    async with (
        tidings.Bus() as bus,
        bridge(rabbit, bus, publish=["ret.>"], mandatory=True) as amqp,
    ):
        for i in range(30):
            await bus.emit({"i": i}, topic="ret.later" if i % 3 == 1 else "ret.bound")
        await wait_until(lambda: amqp.counts.publish_failed >= 10)  # returned: no queue
        assert amqp.counts.published == 20
        later = await rabbit.collect(rabbit.exchange, "ret.later")
        await wait_until(lambda: amqp.counts.published == 30)
        await wait_until(lambda: len(bound.messages) + len(later.messages) >= 30)
    assert _numbers(bound) == [i for i in range(30) if i % 3 != 1]
    assert sorted(_numbers(later)) == list(range(1, 30, 3))  # each once
    assert amqp.counts.published == 30
    assert amqp.counts.publish_failed >= 10


async def test_an_event_that_cannot_be_encoded_is_dead_lettered_and_its_window_goes(
    rabbit: Rabbit,
) -> None:
    collected = await rabbit.collect(rabbit.exchange, "enc.#")
    dead: list[tidings.DeadLetter] = []
    async with tidings.Bus() as bus, bridge(rabbit, bus, publish=["enc.>"]) as amqp:
        bus.subscribe(tidings.DeadLetter, dead.append)
        await bus.emit({"i": 0}, topic="enc.x")
        bad = await bus.emit({"i": object()}, topic="enc.x")
        await bus.emit({"i": 2}, topic="enc.x")
        await wait_until(lambda: amqp.counts.published == 2 and len(dead) == 1)
        await wait_until(lambda: len(collected.messages) == 2)
    assert _numbers(collected) == [0, 2]
    assert dead[0].envelope.id == bad.envelope.id
    assert isinstance(dead[0].error, EncodeError)
    assert amqp.counts.publish_failed == 0


async def test_a_window_in_flight_survives_the_broker_going_away(rabbit: Rabbit) -> None:
    """300 events on a bus without a store, up to 64 in flight, while the bridge's
    connection is cut and restored: every event arrives; the only duplicates are events
    that were in flight at the cut (at most a window's)."""
    total = 300
    proxy = await FaultProxy(("127.0.0.1", _port(rabbit.url))).start()
    collected = await rabbit.collect(rabbit.exchange, "flight.#")
    async with (
        tidings.Bus() as bus,
        bridge(
            rabbit, bus, url=_through(proxy, rabbit.url), publish=["flight.>"], window=64
        ) as amqp,
    ):
        await _emit_across_a_cut(bus, amqp, proxy, "flight.x", total)
        await wait_until(lambda: amqp.counts.published == total, timeout=60)
        await wait_until(lambda: set(_numbers(collected)) == set(range(total)), timeout=60)
    await proxy.aclose()
    numbers = _numbers(collected)
    assert amqp.counts.published == total  # each counted once, when confirmed
    assert amqp.counts.reconnects >= 1
    assert amqp.counts.publish_failed >= 1
    assert len(numbers) - total <= 64  # duplicates: confirms lost with the connection


async def test_one_event_twice_in_a_window_with_mandatory_is_returned_and_sent_twice(
    rabbit: Rabbit,
) -> None:
    """A broker's return names its message by ``message_id`` only: the same event twice in
    one window (emitted twice) is returned twice and published twice, neither copy counted
    published before it was routed."""
    async with (
        tidings.Bus() as bus,
        bridge(rabbit, bus, publish=["twice.>"], mandatory=True) as amqp,
    ):
        first = await bus.emit({"i": 0}, topic="twice.x")
        await bus.emit_envelope(first.envelope)
        await bus.emit({"i": 1}, topic="twice.x")
        await wait_until(lambda: amqp.counts.publish_failed >= 3)  # no queue: all returned
        assert amqp.counts.published == 0
        collected = await rabbit.collect(rabbit.exchange, "twice.#")
        await wait_until(lambda: amqp.counts.published == 3)
        await wait_until(lambda: len(collected.messages) >= 3)
    assert sorted(_numbers(collected)) == [0, 0, 1]
    assert amqp.counts.published == 3

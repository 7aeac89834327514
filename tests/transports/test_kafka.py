"""KafkaTransport beyond the conformance suite: the CloudEvents Kafka binding (judged by the
cloudevents SDK), commits, retries, dead letters, rebalances, publish errors, URLs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, TopicPartition
from cloudevents.v1.http import CloudEvent
from cloudevents.v1.kafka import KafkaMessage, from_binary, to_binary, to_structured

import tidings
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import (
    InvalidTransportURLError,
    PublishError,
    PublishOutcomeUnknownError,
    TransportUnavailableError,
)
from tidings.store import SQLiteStore
from tidings.testing.kafka_broker import TansuBroker
from tidings.testing.nats_server import free_port
from tidings.testing.transport_conformance import (
    Collector,
    ConformanceOrder,
    DeadLetters,
    eventually,
    make_envelope,
)
from tidings.transports import DeliveryPolicy, Message
from tidings.transports.kafka import DEAD_PARTITION, KafkaTransport, kafka_servers

TIMEOUT = 30.0


HELD_WINDOW = 0.5
"""Seconds a send must stay unfinished to count as held by a frozen broker. That nothing
happens cannot be awaited: the transport has no signal for "waiting on the broker", so
these few tests observe the absence for this window, stated where they do it."""


async def _committed(
    broker: Any,
    transport: KafkaTransport,
    group: str,
    topic: str = "conformance.order",
    *,
    pattern: str = "conformance.>",
) -> dict[int, int]:
    """The group's committed offset per partition of ``topic``'s Kafka topic, as the
    broker has them (read by a consumer of the group of subscriptions to ``pattern``, that
    does not join it)."""
    topic = transport.destination(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=transport.group_id(pattern, group),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(transport.partitions)]
        consumer.assign(partitions)
        offsets = {tp.partition: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    return {p: o for p, o in offsets.items() if o is not None}


async def _until_committed(
    broker: Any,
    transport: KafkaTransport,
    group: str,
    offsets: dict[int, int],
    topic: str = "conformance.order",
) -> None:
    """Wait (up to TIMEOUT) until the broker has exactly ``offsets`` committed for
    ``group`` on ``topic`` (the broker has no event to await: polled every 0.1 s)."""
    deadline = time.monotonic() + TIMEOUT
    while (committed := await _committed(broker, transport, group, topic)) != offsets:
        assert time.monotonic() < deadline, f"committed {committed}, not {offsets}"
        await asyncio.sleep(0.1)


async def _group_state(broker: Any, group_id: str) -> str:
    """The consumer group's state as the broker tells it (``Stable``, ``PreparingRebalance``,
    ...)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    [(_error, _group, state, *_rest)] = response.groups
    return str(state)


async def _raw_records(broker: Any, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


# ---------------------------------------------------------------------- the binding


async def test_a_published_event_is_a_binary_cloudevent_for_the_sdk(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    async with kafka_factory() as transport:
        sent = make_envelope(
            HybridClock(),
            "sdk-1",
            key="customer-7",
            headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        )
        await transport.publish(sent)
        [record] = await _raw_records(kafka_broker, transport.destination(sent.topic), 1)
    assert record.key == b"customer-7"
    # The partition Kafka's default (Java-compatible) partitioner picks for the key.
    assert record.partition == DefaultPartitioner()(b"customer-7", [0, 1, 2], [0, 1, 2])
    names = [name for name, _ in record.headers]
    assert "ce_id" in names
    assert "content-type" in names
    assert "ce_partitionkey" not in names  # the key is the record key
    event = from_binary(KafkaMessage(dict(record.headers), record.key, record.value))
    assert event["id"] == sent.id
    assert event["type"] == "conformance.order"
    assert event["source"] == "conformance"
    assert event["partitionkey"] == b"customer-7"
    assert event["traceparent"] == sent.headers["traceparent"]
    assert event.get_data() == {"order_id": "sdk-1", "amount": 5.0}


async def test_sdk_records_in_binary_and_structured_mode_are_received(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    async with kafka_factory() as transport:
        got = Collector()
        await transport.subscribe("conformance.order", got)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
        await producer.start()
        try:
            for mode, convert in (("binary", to_binary), ("structured", to_structured)):
                event = CloudEvent.create(
                    {
                        "id": f"sdk-{mode}",
                        "type": "conformance.order",
                        "source": "sdk",
                        "partitionkey": f"key-{mode}",
                        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
                        "datacontenttype": "application/json",
                    },
                    {"order_id": mode, "amount": 1.5},
                )
                message = convert(event)
                headers = dict(message.headers)
                if mode == "structured":
                    # The binding's structured mode names the event format; the SDK (2.x) puts
                    # the data's content type there, which reads as binary mode.
                    headers["content-type"] = b"application/cloudevents+json"
                await producer.send_and_wait(
                    transport.destination("conformance.order"),
                    message.value,
                    key=message.key.encode() if isinstance(message.key, str) else message.key,
                    headers=list(headers.items()),
                )
        finally:
            await producer.stop()
        await got.wait_count(2, TIMEOUT)
    by_id = {m.envelope.id: m.envelope for m in got.messages}
    for mode in ("binary", "structured"):
        env = by_id[f"sdk-{mode}"]
        assert env.key == f"key-{mode}"
        assert env.source == "sdk"
        assert env.payload == ConformanceOrder(mode, 1.5)
        assert env.headers["traceparent"].startswith("00-0af7651916cd43dd")


# ---------------------------------------------------------------------- commits and retries


async def test_offsets_are_committed_only_after_every_earlier_record_finished(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    """ "slow" holds the first offset while the six records behind it finish: the offset
    stays uncommitted through a commit round that came after they all finished. That round
    is seen on the broker: it also committed a marker on another topic (one commit request
    covers every partition of the subscription), handled after the six."""
    transport = kafka_factory(partitions=1)
    async with transport:
        gate = asyncio.Event()
        got = Collector()
        clock = HybridClock()
        slow = make_envelope(clock, "slow")

        async def handler(message: Message) -> None:
            await got(message)
            if message.envelope.id == slow.id:
                await gate.wait()

        # Both topics exist before the subscription, which starts at their end (offset 1)
        # once the group is assigned them: it commits that position then.
        topics = ("conformance.order", "conformance.marker")
        for topic in topics:
            await transport.publish(make_envelope(clock, "before", topic=topic))
        # Keyless events go to the workers round robin: "slow" holds one worker only.
        policy = DeliveryPolicy(workers=8, prefetch=16)
        sub = await transport.subscribe("conformance.>", handler, group="commits", policy=policy)
        for topic in topics:
            await _until_committed(kafka_broker, transport, "commits", {0: 1}, topic)
        await transport.publish(slow)
        for i in range(6):
            await transport.publish(make_envelope(clock, f"fast-{i}"))
        await got.wait_count(7, TIMEOUT)
        await eventually(lambda: sub.stats().acked == 6, TIMEOUT)  # the six finished
        await transport.publish(make_envelope(clock, "marker", topic="conformance.marker"))
        await _until_committed(kafka_broker, transport, "commits", {0: 2}, "conformance.marker")
        assert await _committed(kafka_broker, transport, "commits") == {0: 1}  # "slow"'s
        gate.set()
        await _until_committed(kafka_broker, transport, "commits", {0: 8})


async def test_held_records_are_left_to_reference_counting_and_a_closed_transport_is_freed(
    kafka_factory: Callable[..., KafkaTransport],
) -> None:
    # Records are untracked by the garbage collector (see kafka._Record): that is only safe
    # while none can be part of a reference cycle. Close with records still queued and one
    # still running, then drop the transport: nothing may keep it alive.
    transport = kafka_factory(partitions=1)
    gate = asyncio.Event()
    got = Collector()

    async def handler(message: Message) -> None:
        await got(message)
        await gate.wait()

    async with transport:
        await transport.subscribe("conformance.>", handler, policy=DeliveryPolicy(prefetch=16))
        clock = HybridClock()
        for i in range(5):
            await transport.publish(make_envelope(clock, f"o-{i}"))
        await got.wait_count(1, TIMEOUT)
        await transport.aclose(timeout=0.5)  # the running handler is cancelled
    freed = weakref.ref(transport)
    del transport, handler
    gc.collect()
    assert freed() is None


async def test_handlers_that_suspend_now_and_then_keep_the_partition_order_and_commit_it_all(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    """Records fetched in large batches, some of whose handlers suspend: the records behind
    one that suspends wait for it (order kept), and every offset is committed."""
    transport = kafka_factory(partitions=1)
    async with transport:
        clock = HybridClock()
        ids = [f"o-{i}" for i in range(60)]
        for order_id in ids:  # stored before the subscription: fetched in large batches
            await transport.send(make_envelope(clock, order_id, key="k"))
        assert await transport.flush(TIMEOUT) == 0
        seen: list[str] = []
        done = asyncio.Event()

        async def handler(message: Message) -> None:
            order_id = message.envelope.payload.order_id
            if int(order_id[2:]) % 7 == 3:
                await asyncio.sleep(0.01)
            seen.append(order_id)
            if len(seen) == len(ids):
                done.set()

        policy = DeliveryPolicy(workers=1, prefetch=32, start="all")
        sub = await transport.subscribe("conformance.>", handler, group="inline", policy=policy)
        await asyncio.wait_for(done.wait(), TIMEOUT)
        assert seen == ids
        await eventually(
            lambda: sub.stats().acked == len(ids) and sub.stats().in_memory == 0, TIMEOUT
        )
        stats = sub.stats()
        assert (stats.delivered, stats.retried, stats.duplicates) == (len(ids), 0, 0)

        await _until_committed(kafka_broker, transport, "inline", {0: len(ids)})


async def test_a_retrying_record_does_not_block_its_partition_then_is_dead_lettered(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    transport = kafka_factory(partitions=1)
    async with transport:
        got = Collector(fail=lambda m: m.envelope.payload.order_id == "poison")
        policy = DeliveryPolicy(max_deliver=3, backoff=0.3, backoff_max=1.0)
        await transport.subscribe(
            "conformance.>", got, group="retries", policy=policy, name="orders.handler"
        )
        dead = DeadLetters()
        await transport.subscribe_dead_letters(dead)
        clock = HybridClock()
        poison = make_envelope(clock, "poison", key="same")
        await transport.publish(poison)
        for i in range(5):
            await transport.publish(make_envelope(clock, f"ok-{i}", key="same"))
        await dead.wait_count(1, TIMEOUT)
        order = [(m.envelope.payload.order_id, m.attempt) for m in got.messages]
        # The later records of the partition (same key even) went on during the backoff.
        assert order.index(("ok-4", 1)) < order.index(("poison", 2))
        assert [a for name, a in order if name == "poison"] == [1, 2, 3]
        [record] = dead.records
        assert record.handler == "orders.handler"
        assert record.reason == f"RuntimeError: refusing {poison.id}"
        assert record.attempts == 3
        assert record.subject == transport.destination("conformance.order")
        assert record.headers[DEAD_PARTITION] == "0"
        assert record.sequence == 0  # the original offset
        assert record.envelope is not None
        assert record.envelope.key == "same"
        await _until_committed(kafka_broker, transport, "retries", {0: 6})


async def test_malformed_records_are_dead_lettered_without_blocking_the_partition(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    transport = kafka_factory(partitions=1)
    async with transport:
        got = Collector()
        await transport.subscribe("conformance.>", got, group="malformed")
        dead = DeadLetters()
        await transport.subscribe_dead_letters(dead)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
        await producer.start()
        topic = transport.destination("conformance.order")
        try:
            for value, headers in (
                (b"\xff not json", []),  # not a CloudEvent, not JSON
                (
                    b'{"order_id": "t", "amount": 1}',
                    [
                        ("ce_specversion", b"1.0"),
                        ("ce_id", b"t"),
                        ("ce_source", b"x"),
                        ("ce_type", b"t"),
                        ("ce_time", b"yesterday"),
                    ],
                ),
                (
                    b'{"unknown": true}',
                    [
                        ("ce_specversion", b"1.0"),
                        ("ce_id", b"u"),
                        ("ce_source", b"x"),
                        ("ce_type", b"some.unknown.type"),
                    ],
                ),
                (b'{"order_id": "h", "amount": 1}', [("ce_id", b"\xff\xfe")]),
            ):
                await producer.send_and_wait(topic, value, key=b"k", headers=headers)
        finally:
            await producer.stop()
        await transport.publish(make_envelope(HybridClock(), "fine", key="k"))
        await got.wait_count(1, TIMEOUT)
        await dead.wait_count(4, TIMEOUT)
    assert [m.envelope.payload.order_id for m in got.messages] == ["fine"]
    reasons = [r.reason for r in dead.records]
    assert reasons[0].startswith("DecodeError: cannot decode the body")
    assert "time" in reasons[1]
    assert "ConformanceOrder" in reasons[2]
    assert "not UTF-8" in reasons[3]
    assert {r.handler for r in dead.records} == {"tidings.decode"}
    assert [r.sequence for r in dead.records] == [0, 1, 2, 3]


@pytest.mark.parametrize("workers", [1, 2])
async def test_received_times_are_merged_before_the_handler_and_a_skewed_one_is_counted(
    kafka_factory: Callable[..., KafkaTransport], workers: int
) -> None:
    """One worker decodes each record right before its handler, several decode a batch
    as it is taken in: either way the clock has merged an event's time when its handler
    runs, and an event too far ahead is handled and counted as skewed."""
    transport = kafka_factory(partitions=1)
    ahead = HybridClock(wall=lambda: time.time_ns() + 200_000_000)  # within max_offset
    too_far = HybridClock(wall=lambda: time.time_ns() + 3_600_000_000_000)
    merged: list[bool] = []
    got = Collector()

    async def record(message: Message) -> None:
        merged.append(transport.clock.peek() >= message.envelope.time)
        await got(message)

    async with transport:
        sub = await transport.subscribe(
            "conformance.order", record, group="merge", policy=DeliveryPolicy(workers=workers)
        )
        await transport.publish(make_envelope(too_far, "far", key="k"))
        await transport.publish(make_envelope(ahead, "near", key="k"))
        await got.wait_count(2, TIMEOUT)
        stats = sub.stats()
    assert [m.envelope.payload.order_id for m in got.messages] == ["far", "near"]
    assert merged == [False, True]  # the skewed time is not merged; the other one is
    assert stats.clock_skew == 1
    assert stats.dead_lettered == 0


async def test_a_rebalance_commits_the_revoked_partitions_and_hands_over_cleanly(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    """A second member joins while a handler of the first is held: the rebalance (seen
    begun on the broker) waits for it, the revoked partitions are committed, and every
    event is handled once. Once both members hold nothing and are closed (which commits),
    every partition is committed to its end: a copy read again from a stale commit would
    have been handled, and counted, before that."""
    # No periodic commits: only the commit on revoke can tell the new owner where to start.
    one = kafka_factory(partitions=4, commit_interval=3600.0)
    two = kafka_factory(partitions=4, commit_interval=3600.0)
    async with one, two:
        a, b = Collector(), Collector()
        gate = asyncio.Event()

        async def held(message: Message) -> None:
            await a(message)
            if message.envelope.payload.order_id == "held":
                await gate.wait()

        policy = DeliveryPolicy(workers=4)
        first = await one.subscribe("conformance.>", held, group="handover", policy=policy)
        clock = HybridClock()
        sent = [make_envelope(clock, f"e-{i}", key=f"k{i % 8}") for i in range(40)]
        for env in sent:
            await one.send(env)
        assert await one.flush(TIMEOUT) == 0
        await a.wait_count(40, TIMEOUT)
        # Last, alone: whatever shares its worker is not stuck behind it.
        sent.append(make_envelope(clock, "held", key="k0"))
        await one.publish(sent[-1])
        await a.wait_count(41, TIMEOUT)
        joining = asyncio.create_task(
            two.subscribe("conformance.>", b, group="handover", policy=policy)
        )
        group_id = one.group_id("conformance.>", "handover")
        deadline = time.monotonic() + TIMEOUT
        while await _group_state(kafka_broker, group_id) == "Stable":
            assert time.monotonic() < deadline, "no rebalance began"
            await asyncio.sleep(0.05)
        assert not joining.done()  # the rebalance waits for the held handler
        gate.set()
        second = await asyncio.wait_for(joining, TIMEOUT)
        # Every revoked partition was finished and committed: none of their ledgers is kept
        # (they were, for the subscription's life).
        (kept,) = one._kafka_subs
        assert kept.revoked == {}
        later = [make_envelope(clock, f"l-{i}", key=f"k{i % 8}") for i in range(40)]
        for env in later:
            await one.send(env)
        assert await one.flush(TIMEOUT) == 0
        await eventually(lambda: len(a.messages) + len(b.messages) >= 81, TIMEOUT)
        await eventually(
            lambda: first.stats().in_memory == 0 and second.stats().in_memory == 0, TIMEOUT
        )
    committed = await _committed(kafka_broker, one, "handover")
    assert sum(committed.values()) == len(sent + later)  # every partition to its end
    handled = a.ids + b.ids
    assert sorted(handled) == sorted(e.id for e in sent + later)  # once each
    assert b.messages, "the new member got partitions"


async def _slow_and_six(transport: KafkaTransport) -> tuple[HybridClock, Any, list[Any]]:
    """Create the topic with one record ("before", offset 0, which ``start="new"`` does not
    read); the clock, and "slow" and six more to publish."""
    clock = HybridClock()
    await transport.publish(make_envelope(clock, "before"))
    return clock, make_envelope(clock, "slow"), [make_envelope(clock, f"f-{i}") for i in range(6)]


async def _held_then_six(
    broker: Any,
    transport: KafkaTransport,
    sub: Any,
    got: Collector,
    events: list[Any],
    group: str,
) -> None:
    """Once ``group`` is positioned (committed at offset 1), publish ``events``: the first,
    which its handler holds, then six that finish behind it (keyless events go to the
    workers round robin: with eight, none waits behind the held one)."""
    await _until_committed(broker, transport, group, {0: 1})
    await transport.publish(events[0])
    await got.wait_count(1, TIMEOUT)
    for env in events[1:]:
        await transport.publish(env)
    await eventually(lambda: sub.stats().acked == 6, TIMEOUT)


@pytest.mark.parametrize("outcome", ["acked", "failed", "dead_lettered"])
async def test_a_partition_assigned_back_after_revoke_timeout_commits_past_its_held_record(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport], outcome: str
) -> None:
    """A handler holds "slow" past ``revoke_timeout`` while six records behind it finish; a
    new topic matching the pattern makes the group rebalance, and the partition comes back
    to the same (only) member, which reads it again from "slow". Once the held handler
    returns ("acked"), raises into a retry ("failed") or into a dead letter
    ("dead_lettered"), the partition is committed to its end: "slow" handled twice (as a
    new owner would handle it again), every other event once."""
    transport = kafka_factory(partitions=1, revoke_timeout=0.5, commit_interval=0.1)
    async with transport:
        clock, slow, fast = await _slow_and_six(transport)
        gate = asyncio.Event()
        got = Collector()

        async def handler(message: Message) -> None:
            await got(message)
            if message.envelope.id == slow.id and got.ids.count(slow.id) == 1:
                await gate.wait()
                if outcome != "acked":
                    raise RuntimeError("the held copy fails")

        policy = DeliveryPolicy(
            workers=8, prefetch=16, backoff=0.05, max_deliver=1 if outcome == "dead_lettered" else 5
        )
        sub = await transport.subscribe("conformance.>", handler, group="back", policy=policy)
        await _held_then_six(kafka_broker, transport, sub, got, [slow, *fast], "back")
        # The group rebalances for the new topic: "slow" outlives revoke_timeout.
        other = make_envelope(clock, "other", topic="conformance.other")
        await transport.publish(other)
        # Taken in (or dropped as copies) while "slow" is still held: "other", and "slow"'s
        # partition read again ("other" may wait behind "slow" in its worker).
        await eventually(lambda: sub.stats().delivered + sub.stats().duplicates > 8, TIMEOUT)
        gate.set()
        after = make_envelope(clock, "after")
        await transport.publish(after)
        await _until_committed(kafka_broker, transport, "back", {0: 9})
        await eventually(lambda: sub.stats().in_memory == 0, TIMEOUT)
        assert sorted(got.ids) == sorted(e.id for e in [slow, slow, *fast, other, after])
        assert sub.stats().dead_lettered == (1 if outcome == "dead_lettered" else 0)
        assert sub.stats().duplicates == 0


async def test_a_partition_handed_to_another_member_and_back_skips_nothing_and_commits(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    """One member holds "slow" past ``revoke_timeout`` when a second joins and takes the
    partition (range assignment: the member whose id sorts first, by client name), handles
    "slow" and what follows, then leaves: the partition comes back to the first member,
    which reads on from the second's commit. The held copy finishing later changes nothing
    there; a record published then is handled once and committed."""
    one = kafka_factory(partitions=1, revoke_timeout=0.5, commit_interval=0.1, name="z-one")
    two = kafka_factory(partitions=1, revoke_timeout=0.5, commit_interval=0.1, name="a-two")
    async with one:
        clock, slow, fast = await _slow_and_six(one)
        gate = asyncio.Event()
        a, b = Collector(), Collector()

        async def held(message: Message) -> None:
            await a(message)
            if message.envelope.id == slow.id:
                await gate.wait()

        policy = DeliveryPolicy(workers=8, prefetch=16)
        first = await one.subscribe("conformance.>", held, group="away", policy=policy)
        await _held_then_six(kafka_broker, one, first, a, [slow, *fast], "away")
        async with two:
            await two.subscribe("conformance.>", b, group="away", policy=policy)
            await b.wait_count(7, TIMEOUT)  # "slow" and the six, from the commit on revoke
            await _until_committed(kafka_broker, one, "away", {0: 8})
            # "one" remembers the revoked assignment (its finishes past the commit) only
            # until the group committed past it (kept for the subscription's life before).
            (kept,) = one._kafka_subs
            await eventually(lambda: not kept.revoked, TIMEOUT)
        gate.set()  # "two" left: the partition is back with "one"
        after = make_envelope(clock, "after")
        await one.publish(after)
        await _until_committed(kafka_broker, one, "away", {0: 9})
        await eventually(lambda: first.stats().in_memory == 0, TIMEOUT)
        assert sorted(a.ids) == sorted(e.id for e in [slow, *fast, after])
        assert sorted(b.ids) == sorted(e.id for e in [slow, *fast])
        assert first.stats().duplicates == 0


async def test_start_new_positions_a_partition_whose_assignment_changed_meanwhile(
    kafka_factory: Callable[..., KafkaTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A topic matching the pattern appears while the first assignment is being positioned
    (that assignment is gone before it could be): the partition is positioned at the next
    assignment, at its end, so what it held before is not delivered and what follows is."""
    transport = kafka_factory(partitions=1)
    async with transport:
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "before"))
        other = transport.destination("conformance.other")
        looked_up = AIOKafkaConsumer.committed
        changed: list[bool] = []
        new = make_envelope(clock, "new", topic="conformance.other")

        async def committed_after_a_new_topic(consumer: AIOKafkaConsumer, tp: Any) -> Any:
            if not changed:  # the first lookup: a new topic joins the subscription first
                changed.append(True)
                await transport.publish(new)
                deadline = time.monotonic() + TIMEOUT
                while other not in consumer.subscription():
                    assert time.monotonic() < deadline, "the new topic was never subscribed"
                    await asyncio.sleep(0.05)  # the consumer's metadata refresh, in its own time
            return await looked_up(consumer, tp)

        monkeypatch.setattr(AIOKafkaConsumer, "committed", committed_after_a_new_topic)
        got = Collector()
        await transport.subscribe("conformance.>", got, policy=DeliveryPolicy(start="new"))
        after = make_envelope(clock, "after")
        await transport.publish(after)
        await got.wait_count(2, TIMEOUT)
        assert changed
        assert sorted(got.ids) == sorted([after.id, new.id])


async def test_start_new_that_cannot_position_its_partitions_fails_subscribe_typed(
    kafka_factory: Callable[..., KafkaTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ends of the partitions cannot be looked up: ``subscribe`` raises
    TransportUnavailableError after ``join_timeout`` instead of reading from a guess."""
    transport = kafka_factory(partitions=1, join_timeout=3.0)
    async with transport:
        await transport.publish(make_envelope(HybridClock(), "before"))

        async def no_end_offsets(consumer: AIOKafkaConsumer, partitions: Any) -> Any:
            raise KafkaConnectionError("the ends are out of reach")

        monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", no_end_offsets)
        got = Collector()
        with pytest.raises(TransportUnavailableError, match="did not get its partitions") as info:
            await transport.subscribe("conformance.order", got, policy=DeliveryPolicy(start="new"))
        assert info.value.timeout == 3.0
        assert got.messages == []


@pytest.mark.parametrize("published_before", [False, True])
async def test_start_new_beside_a_start_all_member_gets_everything_published_after(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport], published_before: bool
) -> None:
    """A member with ``start="all"`` commits the beginning of each partition the group has
    no offset for (an empty one too): a ``start="new"`` member joining its group returns
    from ``subscribe``, and every event published after both returned is handled (at
    least once), from the group's committed offsets: the event published before (if any)
    too, nothing else. Before, the ``start="new"`` member waited for a start that never
    came, then failed."""
    one = kafka_factory(partitions=2)
    two = kafka_factory(partitions=2, join_timeout=10.0)
    async with one, two:
        clock = HybridClock()
        before = make_envelope(clock, "before", key="k0")
        if published_before:
            await one.publish(before)  # one partition holds a record, the other none
        a, b = Collector(), Collector()
        await one.subscribe(
            "conformance.order", a, group="mixed", policy=DeliveryPolicy(start="all")
        )
        await two.subscribe(
            "conformance.order", b, group="mixed", policy=DeliveryPolicy(start="new")
        )
        committed = await _committed(kafka_broker, one, "mixed", pattern="conformance.order")
        assert sorted(committed) == [0, 1]  # the group has a start for each partition
        sent = [make_envelope(clock, f"m-{i}", key=f"k{i}") for i in range(40)]
        for env in sent:
            await two.send(env)
        assert await two.flush(TIMEOUT) == 0
        wanted = {env.id for env in sent} | ({before.id} if published_before else set())
        await eventually(lambda: wanted <= set(a.ids + b.ids), TIMEOUT)
        assert set(a.ids + b.ids) == wanted


async def test_a_start_all_member_whose_start_lookups_hang_hands_partitions_over_cleanly(
    kafka_factory: Callable[..., KafkaTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``start="all"`` member's lookups of the group's offsets hang (a slow broker) when a
    second member joins: every event is still handled once. Before, the lookups ran in the
    assignment callback, where aiokafka sends no heartbeats: the group went on without the
    member, which went on reading both partitions (8 of 9 events handled twice). (The
    revoke waits for the lookups for ``revoke_timeout``, then gives up on them.)"""
    one = kafka_factory(partitions=2, revoke_timeout=2.0)
    two = kafka_factory(partitions=2)
    async with one, two:
        clock = HybridClock()
        sent = [make_envelope(clock, "before")]
        await one.publish(sent[0])
        release = asyncio.Event()
        admin = one._admin
        assert admin is not None
        lookup = admin.list_consumer_group_offsets

        async def slow(*args: Any, **kwargs: Any) -> Any:
            await release.wait()
            return await lookup(*args, **kwargs)

        monkeypatch.setattr(admin, "list_consumer_group_offsets", slow)
        a, b = Collector(), Collector()
        policy = DeliveryPolicy(start="all")
        first = await one.subscribe("conformance.order", a, group="slow", policy=policy)
        await a.wait_count(1, TIMEOUT)
        second = await two.subscribe("conformance.order", b, group="slow", policy=policy)
        sent += [make_envelope(clock, f"e-{i}", key=f"k{i}") for i in range(8)]
        for env in sent[1:]:
            await one.publish(env)
        await eventually(
            lambda: bool(b.messages) and set(a.ids + b.ids) == {e.id for e in sent}, TIMEOUT
        )
        release.set()
        await eventually(
            lambda: first.stats().in_memory == 0 and second.stats().in_memory == 0, TIMEOUT
        )
        assert sorted(a.ids + b.ids) == sorted(e.id for e in sent)


async def test_a_rebalance_during_a_start_all_member_s_start_lookups_skips_nothing(
    kafka_factory: Callable[..., KafkaTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``start="all"`` member still looking up where its partitions start (a slow broker)
    when a ``start="new"`` member joins: the revoke lets the lookups finish and their start
    be committed, so the partition the new member gets is read from its beginning, and an
    event published to it before the new member positioned it is handled. Before, the
    revoke cancelled the lookups: the group had no start for the partition, which the new
    member then read from its end, skipping the event."""
    one = kafka_factory(partitions=2)
    two = kafka_factory(partitions=2)
    async with one, two:
        clock = HybridClock()
        revoking = asyncio.Event()
        admin = one._admin
        assert admin is not None
        lookup = admin.list_consumer_group_offsets

        async def slow(*args: Any, **kwargs: Any) -> Any:
            await revoking.wait()  # held until a rebalance takes the partitions back
            return await lookup(*args, **kwargs)

        monkeypatch.setattr(admin, "list_consumer_group_offsets", slow)
        a, b = Collector(), Collector()
        await one.subscribe("conformance.order", a, group="gap", policy=DeliveryPolicy(start="all"))
        (kept,) = one._kafka_subs
        await eventually(lambda: len(kept.ledgers) == 2 and kept.anchoring is not None, TIMEOUT)
        revoke = kept.on_partitions_revoked

        async def on_partitions_revoked(revoked: Any) -> None:
            if revoked:
                revoking.set()
            await revoke(revoked)

        monkeypatch.setattr(kept, "on_partitions_revoked", on_partitions_revoked)
        keys = {DefaultPartitioner()(f"k{i}".encode(), [0, 1], [0, 1]): f"k{i}" for i in range(8)}
        assert sorted(keys) == [0, 1]
        gap: list[Envelope[Any]] = []
        gap_key: list[str] = []
        looked_up = AIOKafkaConsumer.committed

        async def committed_after_a_publish(consumer: AIOKafkaConsumer, tp: Any) -> Any:
            if not gap:  # the new member's first lookup: an event reaches its partition first
                gap.append(make_envelope(clock, "gap", key=keys[tp.partition]))
                gap_key.append(keys[tp.partition])
                await one.publish(gap[0])
            return await looked_up(consumer, tp)

        monkeypatch.setattr(AIOKafkaConsumer, "committed", committed_after_a_publish)
        await two.subscribe("conformance.order", b, group="gap", policy=DeliveryPolicy(start="new"))
        assert len(gap) == 1
        after = make_envelope(clock, "after", key=gap_key[0])
        await one.publish(after)
        await eventually(lambda: after.id in a.ids + b.ids, TIMEOUT)
        assert sorted(a.ids + b.ids) == sorted([gap[0].id, after.id])


async def test_a_start_all_member_leaving_during_its_start_lookups_commits_the_starts(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``start="all"`` member unsubscribes while it looks up where its (empty) partitions
    start: the stop lets the lookups finish, and the group has their beginnings committed
    (the next holder, whatever its ``start``, reads them from there). Before, the stop
    cancelled the lookups: nothing was committed."""
    transport = kafka_factory(partitions=2)
    async with transport:
        stopping = asyncio.Event()
        admin = transport._admin
        assert admin is not None
        lookup = admin.list_consumer_group_offsets

        async def slow(*args: Any, **kwargs: Any) -> Any:
            await stopping.wait()  # held until the subscription stops
            return await lookup(*args, **kwargs)

        monkeypatch.setattr(admin, "list_consumer_group_offsets", slow)
        sub = await transport.subscribe(
            "conformance.order", Collector(), group="leaving", policy=DeliveryPolicy(start="all")
        )
        (kept,) = transport._kafka_subs
        await eventually(lambda: len(kept.ledgers) == 2 and kept.anchoring is not None, TIMEOUT)
        stop = kept.stop

        async def stop_noted() -> None:
            stopping.set()
            await stop()

        monkeypatch.setattr(kept, "stop", stop_noted)
        await asyncio.wait_for(sub.cancel(), TIMEOUT)
        assert stopping.is_set()
        committed = await _committed(
            kafka_broker, transport, "leaving", pattern="conformance.order"
        )
        assert committed == {0: 0, 1: 0}


async def test_start_new_beside_a_member_that_commits_nothing_fails_naming_why(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport]
) -> None:
    """A member of the group that is not a tidings subscription (a client of its own)
    holds a partition and never commits a start for it: a ``start="new"`` member's
    ``subscribe`` cannot return (the group has no start for that partition); it raises
    TransportUnavailableError after ``join_timeout``, naming the partition without a start
    and the likely causes."""
    transport = kafka_factory(partitions=2, join_timeout=4.0)
    async with transport:
        await transport.publish(make_envelope(HybridClock(), "creates-the-topic"))
        foreign = AIOKafkaConsumer(
            transport.destination("conformance.order"),
            bootstrap_servers=kafka_broker.bootstrap,
            group_id=transport.group_id("conformance.order", "foreign"),
            enable_auto_commit=False,
        )
        await foreign.start()
        try:
            with pytest.raises(TransportUnavailableError, match="no start committed for") as info:
                await transport.subscribe(
                    "conformance.order",
                    Collector(),
                    group="foreign",
                    policy=DeliveryPolicy(start="new"),
                )
        finally:
            await foreign.stop()
        assert info.value.timeout == 4.0
        assert "not a tidings subscription" in str(info.value)


async def test_commits_failing_while_a_subscribe_waits_log_one_warning_per_cause(
    kafka_factory: Callable[..., KafkaTransport],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every commit fails while a ``start="new"`` ``subscribe`` waits for the group's
    starts (it commits every 0.1 s, up to ``join_timeout``): one warning for the cause, not
    one per commit (before, about twenty here); ``subscribe`` then fails, typed."""
    transport = kafka_factory(partitions=2, join_timeout=2.0)

    async def refused(self: AIOKafkaConsumer, offsets: Any = None) -> None:
        raise KafkaConnectionError("the coordinator is out of reach")

    monkeypatch.setattr(AIOKafkaConsumer, "commit", refused)
    async with transport:
        await transport.publish(make_envelope(HybridClock(), "creates-the-topic"))
        with (
            caplog.at_level(logging.WARNING, logger="tidings.transports.kafka"),
            pytest.raises(TransportUnavailableError, match="no start committed for"),
        ):
            await transport.subscribe(
                "conformance.order", Collector(), policy=DeliveryPolicy(start="new")
            )
    failed = [r for r in caplog.records if "could not commit offsets" in r.getMessage()]
    assert len(failed) == 1
    assert "the coordinator is out of reach" in failed[0].getMessage()


async def test_a_partition_whose_start_cannot_be_looked_up_later_is_read_from_its_beginning(
    kafka_factory: Callable[..., KafkaTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``subscribe`` returned, a rebalance hands over partitions whose committed
    offsets cannot be looked up: they are read from their beginning (again, rather than
    not at all)."""
    one = kafka_factory(partitions=2, connect_timeout=4.0)
    two = kafka_factory(partitions=2, connect_timeout=4.0)
    async with one, two:
        clock = HybridClock()
        before = make_envelope(clock, "before")
        await one.publish(before)
        a, b = Collector(), Collector()
        await one.subscribe("conformance.order", a, group="fallback")
        leaving = await two.subscribe("conformance.order", b, group="fallback")

        async def unreachable(consumer: AIOKafkaConsumer, tp: Any) -> Any:
            raise KafkaConnectionError("the group's offsets are out of reach")

        monkeypatch.setattr(AIOKafkaConsumer, "committed", unreachable)
        await leaving.cancel()  # the first member is given both partitions again
        await a.wait_count(1, TIMEOUT)
        after = make_envelope(clock, "after")
        await one.publish(after)
        await a.wait_count(2, TIMEOUT)
        assert a.ids == [before.id, after.id]
        assert b.messages == []


JOIN_ROUNDS = 3


@pytest.mark.parametrize("same_transport", [False, True])
async def test_start_new_members_joining_together_skip_nothing_published_after_both_returned(
    kafka_broker: Any,
    kafka_factory: Callable[..., KafkaTransport],
    monkeypatch: pytest.MonkeyPatch,
    same_transport: bool,
) -> None:
    """Two members of a new group subscribe with ``start="new"`` together (one generation).
    The first to position its partitions (at their ends: the group has no offsets yet) is
    slow to look them up: its assignment callback holds its heartbeats, so the broker drops
    it from the group (seen on the broker) before it could commit where it starts, and the
    next generation hands its partitions out again. Once both ``subscribe`` calls returned,
    every event published is handled, and nothing published before.

    Each round is a new group on a topic of its own; it ends once every event is handled,
    or after TIMEOUT."""
    looked_up = AIOKafkaConsumer.end_offsets
    held: list[str] = []  # the round's group id, until its first lookup is held

    async def end_offsets_once_the_member_is_dropped(
        consumer: AIOKafkaConsumer, partitions: Any
    ) -> Any:
        if held:
            group_id = held.pop()
            deadline = time.monotonic() + TIMEOUT
            while await _group_state(kafka_broker, group_id) == "Stable":
                assert time.monotonic() < deadline, "the silent member was never dropped"
                await asyncio.sleep(0.05)  # the broker's group state has no event to await
        return await looked_up(consumer, partitions)

    monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", end_offsets_once_the_member_is_dropped)
    policy = DeliveryPolicy(start="new")
    for round_ in range(JOIN_ROUNDS):
        one = kafka_factory(partitions=3)
        two = one if same_transport else kafka_factory(partitions=3)
        async with contextlib.AsyncExitStack() as stack:
            for transport in {one, two}:
                await stack.enter_async_context(transport)
            clock = HybridClock()
            # A topic of the round's own, holding one record: Tansu gives the end of a
            # partition as its last batch's first offset + 1, so a topic whose last batch
            # holds several records would be read from within that batch.
            topic = f"conformance.together{round_}"
            await one.publish(make_envelope(clock, "before", key="k0", topic=topic))
            a, b = Collector(), Collector()
            group = f"together-{round_}"
            held[:] = [one.group_id(topic, group)]
            await asyncio.wait_for(
                asyncio.gather(
                    one.subscribe(topic, a, group=group, policy=policy),
                    two.subscribe(topic, b, group=group, policy=policy),
                ),
                TIMEOUT,
            )
            assert not held, "no member looked the ends up"
            sent = [make_envelope(clock, f"{i}", key=f"k{i}", topic=topic) for i in range(30)]
            for env in sent:
                await one.send(env)
            assert await one.flush(TIMEOUT) == 0
            wanted = {env.id for env in sent}
            handled = await _handled_by_either(a, b, wanted)
            skipped, older = wanted - set(handled), set(handled) - wanted
            assert (len(skipped), len(older)) == (0, 0), f"round {round_}"
            assert len(handled) <= 2 * len(sent)  # copies only of what a rebalance handed over


async def _handled_by_either(a: Collector, b: Collector, wanted: set[str]) -> list[str]:
    """The ids ``a`` and ``b`` handled, once both together handled ``wanted`` or after
    TIMEOUT."""
    with contextlib.suppress(TimeoutError):
        await eventually(lambda: wanted <= set(a.ids + b.ids), TIMEOUT)
    return a.ids + b.ids


# ---------------------------------------------------------------------- publishing


async def test_the_producer_is_idempotent(kafka_factory: Callable[..., KafkaTransport]) -> None:
    transport = kafka_factory()
    async with transport:
        assert transport.producer_id is not None
        assert transport.producer_id >= 0
    plain = kafka_factory(idempotent=False)
    async with plain:
        assert plain.producer_id is None


@pytest.mark.parametrize("linger", [0.0, 0.05])
async def test_pipelined_publishes_are_acked_each_with_its_own_offset_in_key_order(
    kafka_broker: Any, kafka_factory: Callable[..., KafkaTransport], linger: float
) -> None:
    # Records of ~1 kB, so that each partition's records span several batches of the
    # producer; publish and send mixed, a window smaller than a batch.
    clock = HybridClock()
    sent = [make_envelope(clock, f"{i:04d}-" + "x" * 1_000, key=f"k{i % 16}") for i in range(600)]
    async with kafka_factory(partitions=4, window=40, linger=linger) as transport:
        acks: dict[str, Any] = {}
        futures = []
        for i, env in enumerate(sent):
            if i % 100 == 99:
                acks[env.id] = await transport.publish(env)
            else:
                futures.append((env.id, await transport.send(env)))
        assert await transport.flush(TIMEOUT) == 0
        for event_id, future in futures:
            acks[event_id] = future.result()
        topic = transport.destination("conformance.order")
        records = await _raw_records(kafka_broker, topic, len(sent))
    assert len(records) == len(sent)
    stored = {dict(r.headers)["ce_id"].decode(): r for r in records}
    assert len(stored) == len(acks) == len(sent)  # once each
    for event_id, ack in acks.items():
        record = stored[event_id]
        assert (ack.stream, ack.sequence) == (f"{topic}:{record.partition}", record.offset + 1)
    by_key: dict[bytes, list[int]] = {}
    for env in sent:  # publish order per key is offset order in the key's partition
        by_key.setdefault(env.key.encode() if env.key else b"", []).append(stored[env.id].offset)
    for offsets in by_key.values():
        assert offsets == sorted(offsets)


async def test_a_too_large_event_raises_a_publish_error_naming_it(
    kafka_factory: Callable[..., KafkaTransport],
) -> None:
    async with kafka_factory(max_request_size=2_000) as transport:
        big = make_envelope(HybridClock(), "x" * 5_000)
        with pytest.raises(PublishError, match=f"event {big.id} on 'conformance.order'"):
            transport.check_envelope(big)
        with pytest.raises(PublishError, match=big.id):
            await transport.publish(big)
        future = await transport.send(big)
        with pytest.raises(PublishError, match=big.id):
            await future
        assert await transport.flush(TIMEOUT) == 2  # publish's and send's


async def test_a_broker_gone_mid_run_fails_publishes_with_typed_errors() -> None:
    with TansuBroker() as broker:
        transport = KafkaTransport(broker.url, prefix="gone", publish_timeout=3.0)
        await transport.start()
        await transport.publish(make_envelope(HybridClock(), "before"))
        broker.stop()
        lost = make_envelope(HybridClock(), "after")
        started = time.monotonic()
        with pytest.raises((PublishError, PublishOutcomeUnknownError), match=lost.id):
            await transport.publish(lost)
        assert time.monotonic() - started < 3.0 + 2.0  # publish_timeout, swept every 0.5 s
        await transport.aclose(timeout=1.0)


async def test_a_close_with_the_broker_gone_leaves_nothing_connecting_to_it() -> None:
    # Regression: aclose() cancelled aiokafka's stop() waiting for the unanswered batch
    # (an idempotent producer's never expire), which left its sender and metadata tasks
    # retrying the broker's address after the close: a connection they opened outlived the
    # event loop (an unclosed-connection ResourceWarning in a later test).
    with TansuBroker() as broker:
        transport = KafkaTransport(broker.url, prefix="gone3", publish_timeout=1.0)
        await transport.start()
        await transport.publish(make_envelope(HybridClock(), "before"))
        broker.stop()
        with pytest.raises((PublishError, PublishOutcomeUnknownError)):
            await transport.publish(make_envelope(HybridClock(), "after"))
        await transport.aclose(timeout=0.5)
        await _nothing_connects(broker.port)


async def _nothing_connects(port: int) -> None:
    """Nothing connects to ``port`` (the gone broker's) within ten HELD_WINDOWs: an
    explicit window, as nothing signals that no connection comes (aiokafka's clients retry
    every 0.1 s)."""
    called = asyncio.Event()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        called.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", port)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(called.wait(), 10 * HELD_WINDOW)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), TIMEOUT)


async def test_pipelined_publishes_to_a_gone_broker_each_fail_naming_their_event() -> None:
    with TansuBroker() as broker:
        transport = KafkaTransport(broker.url, prefix="gone2", publish_timeout=3.0)
        await transport.start()
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "before", key="k0"))
        broker.stop()
        lost = [make_envelope(clock, f"after-{i}", key=f"k{i % 4}") for i in range(50)]
        futures = [await transport.send(env) for env in lost]
        assert await transport.flush(3.0 + 2.0) == len(lost)
        for env, future in zip(lost, futures, strict=True):
            with pytest.raises((PublishError, PublishOutcomeUnknownError), match=env.id):
                future.result()
        await transport.aclose(timeout=1.0)


async def _send_until_held(
    transport: KafkaTransport, envelopes: list[Any]
) -> tuple[list[tuple[str, asyncio.Future[Any]]], int]:
    """Send ``envelopes`` (to a paused broker) until one send is held (its partition has
    a full batch behind one the producer has not taken): the futures of those sent, and
    the index of the held one, whose wait is cancelled. A send is held when it has not
    returned within HELD_WINDOW (an explicit window: nothing signals the wait)."""
    futures = []
    for i, env in enumerate(envelopes):
        try:
            futures.append((env.id, await asyncio.wait_for(transport.send(env), HELD_WINDOW)))
        except TimeoutError:
            return futures, i
    raise AssertionError(f"no send was held in {len(envelopes)} events")


async def test_a_publisher_ahead_of_the_producer_waits_and_a_cancelled_wait_adds_nothing() -> None:
    # The broker frozen, a publisher fills batches the producer cannot hand on; once a
    # full batch waits behind the one being handed over, the next send waits (the loop
    # stays free for the producer's I/O). That wait cancelled, its event was never added;
    # the broker back, everything sent before is acknowledged, once each, in order.
    with TansuBroker() as broker:
        transport = KafkaTransport(broker.url, prefix="held", partitions=1)
        async with transport:
            clock = HybridClock()
            await transport.publish(make_envelope(clock, "first", key="k"))
            envelopes = [
                make_envelope(clock, f"{i:04d}-" + "x" * 1_000, key="k") for i in range(300)
            ]
            broker.pause()
            try:
                futures, held = await _send_until_held(transport, envelopes)
            finally:
                broker.resume()
            assert await transport.flush(TIMEOUT) == 0
            offsets = [(await future).sequence for _, future in futures]
            assert offsets == sorted(offsets)
            records = await _raw_records(
                broker, transport.destination("conformance.order"), held + 1
            )
    stored = [dict(r.headers)["ce_id"].decode() for r in records]
    assert stored[1:] == [event_id for event_id, _ in futures]  # once each, in order
    assert envelopes[held].id not in stored


async def test_a_send_cancelled_while_its_topic_is_created_leaves_nothing_pending() -> None:
    # Regression: a send cancelled while it waited for its new Kafka topic to be created
    # stayed counted as unacknowledged, so flush() never found the transport idle.
    with TansuBroker() as broker:
        transport = KafkaTransport(broker.url, prefix="cancelled", partitions=1)
        async with transport:
            clock = HybridClock()
            await transport.publish(make_envelope(clock, "first"))
            broker.pause()
            try:
                fresh = make_envelope(clock, "fresh", topic="conformance.fresh")
                send = asyncio.ensure_future(transport.send(fresh))
                # Held (an explicit window: nothing signals the wait): the frozen broker
                # cannot create the topic.
                done, _ = await asyncio.wait({send}, timeout=HELD_WINDOW)
                assert not done
                send.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await send
            finally:
                broker.resume()
            assert await transport.flush(5.0) == 0


async def test_a_held_publisher_to_a_silent_broker_gets_typed_errors_naming_each_event() -> None:
    # The broker frozen for good: the held publisher is let go as the producer gives up
    # on each batch (within publish_timeout), and every publish fails naming its event.
    with TansuBroker() as broker:
        transport = KafkaTransport(broker.url, prefix="silent", partitions=1, publish_timeout=2.0)
        await transport.start()
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "first", key="k"))
        envelopes = [make_envelope(clock, f"{i:04d}-" + "x" * 4_000, key="k") for i in range(24)]
        broker.pause()
        try:
            started = time.monotonic()
            futures = [await transport.send(env) for env in envelopes]
            assert await transport.flush(TIMEOUT) == len(envelopes)
            assert time.monotonic() - started < TIMEOUT
            for env, future in zip(envelopes, futures, strict=True):
                with pytest.raises((PublishError, PublishOutcomeUnknownError), match=env.id):
                    future.result()
        finally:
            broker.resume()
            await transport.aclose(timeout=1.0)


async def test_an_unreachable_broker_fails_start_within_the_connect_timeout() -> None:
    transport = KafkaTransport(f"kafka://127.0.0.1:{free_port()}", connect_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(TransportUnavailableError, match="cannot reach Kafka") as caught:
        await transport.start()
    assert time.monotonic() - started < 2.0 + 1.5
    assert caught.value.timeout == 2.0


def test_kafka_urls() -> None:
    assert kafka_servers("kafka://a:1,b:2") == ("a:1", "b:2")
    assert kafka_servers(["kafka://a", "b:3"]) == ("a:9092", "b:3")
    for bad in ("nats://a:1", "kafka://", "kafka://a:x", "kafka://a/b"):
        with pytest.raises(InvalidTransportURLError):
            kafka_servers(bad)


class _Offsets:
    """A stand-in for the consumer a subscription's ledgers talk to (commits succeed)."""

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def _fetched(tp: TopicPartition, offsets: range) -> dict[TopicPartition, list[Any]]:
    return {
        tp: [
            ConsumerRecord(
                topic=tp.topic,
                partition=tp.partition,
                offset=offset,
                timestamp=0,
                timestamp_type=0,
                key=None,
                value=b"x",
                checksum=None,
                serialized_key_size=-1,
                serialized_value_size=1,
                headers=(),
            )
            for offset in offsets
        ]
    }


@pytest.mark.parametrize("between", ["nothing", "part"])
async def test_records_finished_two_assignments_back_are_not_handled_again(between: str) -> None:
    """A partition revoked here while one record (0) was still held, the four behind it
    finished, comes back, is revoked again before its records read again reached past those
    four (``between``: none read, or only 0 and 1), then comes back once more: the four are
    still finished, only 0 is delivered again. Before, only the last assignment's finishes
    were looked at, so the four were handled again."""
    from tidings.transports.kafka import _Subscription

    tp = TopicPartition("tidings.t", 0)
    consumer = _Offsets(tp)
    transport = KafkaTransport(revoke_timeout=0.01)
    sub = _Subscription(transport, consumer, start="all", name="t", group_id="g")
    sub.ledger(tp)
    held, *behind = sub._records(_fetched(tp, range(5)))
    for record in behind:
        record.finish()
    await sub.on_partitions_revoked([tp])  # 0 still held past revoke_timeout
    sub.ledger(tp)
    if between == "part":
        (again,) = sub._records(_fetched(tp, range(2)))
        assert again.offset == 0
        again.finish()  # this copy commits past 0 and 1; the held one is left running
        await sub.on_partitions_revoked([tp])
        sub.ledger(tp)
        delivered = sub._records(_fetched(tp, range(2, 6)))
        assert [r.offset for r in delivered] == [5]
    else:
        await sub.on_partitions_revoked([tp])
        sub.ledger(tp)
        delivered = sub._records(_fetched(tp, range(6)))
        assert [r.offset for r in delivered] == [0, 5]
    held.finish()


async def test_an_idempotent_subscription_records_what_it_handled_in_a_sqlite_store(
    kafka_factory: Callable[..., KafkaTransport], tmp_path: Path
) -> None:
    # The bus commits a handled message's sequence as the consumer's position where it fits
    # the store's 64-bit column: a Kafka sequence (the partition's index << 64, with the
    # offset) does not ("Python int too large to convert to SQLite INTEGER").
    seen: list[str] = []
    transport = kafka_factory(partitions=1, policy=DeliveryPolicy(start="all"))
    store = SQLiteStore(tmp_path / "handled.db")
    async with tidings.Bus(transport=transport, store=store) as bus:
        bus.subscribe(
            ConformanceOrder, lambda o: seen.append(o.order_id), group="billing", idempotent=True
        )
        await bus.start()
        sent = await bus.emit(ConformanceOrder("o1", 1.0))
        async with asyncio.timeout(TIMEOUT):
            while not await store.was_handled("billing", sent.envelope.id):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # recorded right after the handler returned
        assert await store.load_checkpoint("billing") == 0
    assert seen == ["o1"]


def test_sequences_of_two_partitions_stay_distinct_at_any_offset() -> None:
    """Regression: a sequence was ``(index << 40) | (offset + 1)``, so a partition past
    offset 2**40 (127 days at 100k records/s) gave sequences of another partition's, and
    its records could be dropped as copies of that partition's (held or settled ones)."""
    from tidings.transports.kafka import _Subscription

    first, second = TopicPartition("tidings.t", 0), TopicPartition("tidings.t", 1)
    sub = _Subscription(KafkaTransport(), _Offsets(first), start="all", name="t", group_id="g")
    offsets = (0, 1, 2**40 - 2, 2**40 - 1, 2**40, 2**41 + 1, 2**62, 2**63 - 1)
    sequences = {
        (tp.partition, offset): sub.sequence_base(tp) + 1 + offset
        for tp in (first, second)
        for offset in offsets
    }
    assert len(set(sequences.values())) == 2 * len(offsets)


async def test_consecutive_and_gapped_batches_leave_the_same_ledger() -> None:
    """A batch of consecutive offsets (taken into the ledger in one step) and one with gaps
    (compaction, transaction markers: taken one by one) are recorded alike: each record
    open until it finishes, commits at the first unfinished one, then past the last; a
    batch reaching back before what was taken in delivers only the records past it."""
    from tidings.transports.kafka import _Subscription

    tp = TopicPartition("tidings.t", 0)
    sub = _Subscription(KafkaTransport(), _Offsets(tp), start="all", name="t", group_id="g")
    ledger = sub.ledger(tp)
    consecutive = sub._records(_fetched(tp, range(4)))
    gapped = sub._records(_fetched(tp, range(6, 12, 2)))
    again = sub._records(_fetched(tp, range(9, 13)))
    records = consecutive + gapped + again
    assert [r.offset for r in records] == [0, 1, 2, 3, 6, 8, 10, 11, 12]
    assert [r.sequence - records[0].sequence for r in records] == [0, 1, 2, 3, 6, 8, 10, 11, 12]
    assert list(ledger.open) == [0, 1, 2, 3, 6, 8, 10, 11, 12]
    assert (ledger.first, ledger.next, ledger.busy) == (0, 13, 9)
    for record in reversed(records[1:]):
        record.finish()
    assert ledger.position() == 0
    records[0].finish()
    assert (ledger.position(), ledger.busy) == (13, 0)


CLOSE_BOUND = 10.0
"""The most a close with ``timeout=1.0`` may take with its broker gone: a bound on a hang
(it waited for ever for the group coordinator), not a speed expectation."""


SUBSCRIPTIONS_OVERRUN = 3.0
"""The most a close with the broker gone or frozen may overrun its timeout by, however many
subscriptions it closes (each may overrun it by up to 2.6 s, together): a bound on the
overruns adding up, not a speed expectation."""


async def _subscribed(transport: KafkaTransport, count: int, subscriptions: int = 1) -> None:
    """Subscribe ``subscriptions`` times to ``conformance.>`` (each a group of its own) and
    publish ``count`` events, which each handles."""
    handled = [Collector() for _ in range(subscriptions)]
    await asyncio.gather(*(transport.subscribe("conformance.>", c) for c in handled))
    clock = HybridClock()
    for i in range(count):
        await transport.publish(make_envelope(clock, f"before-{i}"))
    for collector in handled:
        await collector.wait_count(count, TIMEOUT)
        assert len(collector.messages) == count


async def _close_within_bound(transport: KafkaTransport, bound: float = CLOSE_BOUND) -> None:
    """``aclose(timeout=1.0)`` returns within ``bound`` seconds, leaving no unclosed client."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.monotonic()
        await asyncio.wait_for(transport.aclose(timeout=1.0), 3 * CLOSE_BOUND)
        elapsed = time.monotonic() - started
        gc.collect()
        warnings_ = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert elapsed < bound
    assert warnings_ == []


async def test_a_close_with_subscriptions_and_the_broker_gone_keeps_its_deadline() -> None:
    # Regression: the subscription's last commit waited for the group coordinator with no
    # time limit (the close did not return in 90 s), then the consumer's stop was cancelled
    # halfway, leaving unclosed clients and tasks retrying the broker.
    with TansuBroker() as broker:
        before = asyncio.all_tasks()
        transport = KafkaTransport(broker.url, prefix="gonesub", publish_timeout=3.0)
        await transport.start()
        await _subscribed(transport, 3, subscriptions=3)
        broker.stop()
        await _close_within_bound(transport, 1.0 + SUBSCRIPTIONS_OVERRUN)
        assert asyncio.all_tasks() - before == set()
        await _nothing_connects(broker.port)


async def test_subscriptions_close_together_within_the_deadline_with_the_broker_frozen() -> None:
    # Regression: the subscriptions were closed one after another, each overrunning the
    # close's deadline (by 0.6 s here: the last commit's 0.1 s and the consumer's 0.5 s to
    # stop; up to 2.6 s), so the overruns added up with the number of subscriptions.
    with TansuBroker() as broker:
        before = asyncio.all_tasks()
        transport = KafkaTransport(
            broker.url, prefix="frozensubs", publish_timeout=3.0, session_timeout=2.5
        )
        await transport.start()
        await _subscribed(transport, 3, subscriptions=8)
        broker.pause()
        try:
            await _close_within_bound(transport, 1.0 + SUBSCRIPTIONS_OVERRUN)
        finally:
            broker.resume()
        assert asyncio.all_tasks() - before == set()


async def test_a_close_with_a_subscription_and_the_broker_frozen_keeps_its_deadline() -> None:
    with TansuBroker() as broker:
        transport = KafkaTransport(broker.url, prefix="frozensub", publish_timeout=3.0)
        await transport.start()
        await _subscribed(transport, 3)
        broker.pause()
        try:
            await _close_within_bound(transport)
        finally:
            broker.resume()

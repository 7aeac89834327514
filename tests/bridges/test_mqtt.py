"""The MQTT bridge against a real Mosquitto (one of the test's own): topic mapping, the
CloudEvents MQTT binding (events made and read by the cloudevents SDK), QoS 1 acknowledged
only after acceptance, dead letters for bad input, the broker gone mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import tidings
from tidings.bridges import DEAD_LETTER_TOPIC
from tidings.bridges.mqtt import (
    MqttBridge,
    from_mqtt_filter,
    from_mqtt_topic,
    to_mqtt_filter,
    to_mqtt_topic,
)
from tidings.chaos.proxy import FaultProxy
from tidings.event import Envelope
from tidings.exceptions import InvalidTopicError, TransportUnavailableError
from tidings.testing.brokers import Mosquitto, wait_until

from .counting import CountingStore
from .flaky_sink import FlakySink
from .sdk_events import SAMPLE, assert_bad_input_reasons
from .stored import until_stored

WAIT = 30.0


sdk_event = SAMPLE.event


def sdk_binary_v5(event: CloudEvent) -> tuple[bytes, Any]:
    """The SDK's event in MQTT 5 binary mode: attributes as user properties (the SDK has
    no MQTT binding; the mapping is the spec's: attribute names as is, time in RFC 3339,
    datacontenttype as Content Type)."""
    properties: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    user = []
    for name, value in event.get_attributes().items():
        if name == "datacontenttype":
            properties.ContentType = value
        elif isinstance(value, dt.datetime):
            user.append((name, value.isoformat().replace("+00:00", "Z")))
        else:
            user.append((name, str(value)))
    properties.UserProperty = user
    return JSONFormat().write_data(event.get_data(), "application/json"), properties


def v5_properties(content_type: str, user: list[tuple[str, str]]) -> Any:
    """Fresh PUBLISH properties (paho appends to UserProperty on assignment)."""
    properties: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ContentType = content_type
    properties.UserProperty = user
    return properties


def sdk_from_v5(payload: bytes, properties: Any) -> CloudEvent:
    """Read an MQTT 5 binary-mode message with the SDK's event class."""
    attributes: dict[str, Any] = dict(properties.UserProperty)
    attributes["datacontenttype"] = properties.ContentType
    attributes["time"] = dt.datetime.fromisoformat(attributes["time"].replace("Z", "+00:00"))
    return CloudEvent(attributes=attributes, data=JSONFormat().read_data(payload, None))


class Received:
    """An MQTT subscriber of the test's own (QoS 1, persistent session)."""

    def __init__(self, mosquitto: Mosquitto, topic_filter: str, *, v5: bool = True) -> None:
        self.mosquitto = mosquitto
        self.filter = topic_filter
        self.v5 = v5
        self.messages: list[aiomqtt.Message] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Received:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(WAIT):
            await self._ready.wait()
        return self

    async def _run(self) -> None:
        while True:
            client = aiomqtt.Client(
                "127.0.0.1",
                self.mosquitto.port,
                identifier=f"receiver-{id(self)}",
                protocol=aiomqtt.ProtocolVersion.V5 if self.v5 else aiomqtt.ProtocolVersion.V311,
                clean_session=None if self.v5 else False,
                clean_start=False if self.v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                properties=_session(self.v5),
            )
            # Acknowledged once collected (as the bridge does): a message received but not
            # yet collected when the connection drops comes again, so the test loses none.
            inner = client._client
            inner.manual_ack_set(True)
            try:
                async with client:
                    await client.subscribe(self.filter, qos=1)
                    self._ready.set()
                    async for message in client.messages:
                        self.messages.append(message)
                        inner.ack(message.mid, message.qos)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def _session(v5: bool) -> Properties | None:
    if not v5:
        return None
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    return properties


@contextlib.asynccontextmanager
async def publisher_client(port: int, **options: Any) -> AsyncIterator[aiomqtt.Client]:
    """A connected aiomqtt client for publishing, whose lost connection is read where
    aiomqtt reports it, its message iterator (in a task of its own, until the exit): a
    publish that times out after the connection went, then ``__aexit__``, would leave the
    reason in aiomqtt's disconnect future, unread (aiomqtt 2.5 returns early there; aiomqtt
    #344 and #375), for asyncio to report as "Future exception was never retrieved"."""

    async def until_lost() -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for _ in client.messages:
                pass  # a publisher subscribes to nothing

    async with aiomqtt.Client("127.0.0.1", port, **options) as client:
        watcher = asyncio.create_task(until_lost())
        try:
            yield client
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def publish_raw(
    mosquitto: Mosquitto,
    messages: Sequence[tuple[str, bytes, Properties | None]],
    *,
    v5: bool = True,
) -> None:
    version = aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311
    async with publisher_client(mosquitto.port, protocol=version) as client:
        for topic, payload, properties in messages:
            await client.publish(topic, payload, qos=1, properties=properties)


async def preload_session(
    mosquitto: Mosquitto,
    topic_filter: str,
    client_id: str,
    messages: Sequence[tuple[str, bytes, Properties | None]],
) -> None:
    """Make the persistent session ``client_id`` (of a bridge subscribed to
    ``topic_filter``) hold ``messages``, published while no bridge is connected."""
    async with MqttBridge(
        sink=_ignore, url=mosquitto.url, subscribe=[topic_filter], client_id=client_id
    ):
        pass  # the session now holds what is published for it
    await publish_raw(mosquitto, messages)


async def _ignore(envelopes: Sequence[Envelope[Any]]) -> None:
    return None


# -- topics -----------------------------------------------------------------------------------


def test_topic_mapping_goes_both_ways() -> None:
    assert to_mqtt_topic("a.b.c") == "a/b/c"
    assert from_mqtt_topic("a/b/c") == "a.b.c"
    assert to_mqtt_filter("a.*.>") == "a/+/#"
    assert from_mqtt_filter("a/+/#") == "a.*.>"
    assert from_mqtt_filter("#") == ">"
    for bad in ("a//b", "/a", "a/", "v1.2/x", "a b/c", "a/+"):
        with pytest.raises(InvalidTopicError):
            from_mqtt_topic(bad)
    for bad in ("a/#/b", "a//+", "a.b/#"):
        with pytest.raises(InvalidTopicError):
            from_mqtt_filter(bad)


# -- in ---------------------------------------------------------------------------------------


async def test_plain_payloads_are_wrapped_with_the_topic_as_subject(mosquitto: Mosquitto) -> None:
    async with tidings.Bus() as bus:
        got: list[Envelope[Any]] = []
        bus.subscribe("sensors.>", got.append, envelope=True)
        async with MqttBridge(
            bus, mosquitto.url, subscribe=["sensors/#"], wrap_type="com.example.raw"
        ) as bridge:
            await publish_raw(
                mosquitto,
                [("sensors/a/temp", b'{"c": 21.5}', None), ("sensors/b/raw", b"\x00\xff", None)],
            )
            await wait_until(lambda: bridge.counts.acknowledged == 2)
        first, second = got
        assert (first.topic, first.payload) == ("sensors.a.temp", {"c": 21.5})
        assert first.attributes == {"type": "com.example.raw", "subject": "sensors/a/temp"}
        assert first.source == mosquitto.url
        assert (second.topic, second.payload) == ("sensors.b.raw", b"\x00\xff")
        assert second.attributes["datacontenttype"] == "application/octet-stream"
        assert bridge.counts.accepted == 2
        assert bridge.counts.dead_lettered == 0


async def test_cloudevents_in_binary_and_structured_mode_keep_every_attribute(
    mosquitto: Mosquitto,
) -> None:
    binary = sdk_event(id="bin-1")
    structured = sdk_event(id="str-1")
    old = sdk_event(id="v311-1")
    async with tidings.Bus() as bus:
        got: list[Envelope[Any]] = []
        bus.subscribe("devices.>", got.append, envelope=True)
        async with (
            MqttBridge(bus, mosquitto.url, subscribe=["devices/+/v5"]) as v5,
            MqttBridge(bus, mosquitto.url, subscribe=["devices/+/v311"], protocol="3.1.1") as v311,
        ):
            payload, properties = sdk_binary_v5(binary)
            structured_properties: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            structured_properties.ContentType = "application/cloudevents+json"
            await publish_raw(
                mosquitto,
                [
                    ("devices/t7/v5", payload, properties),
                    ("devices/t7/v5", JSONFormat().write(structured), structured_properties),
                ],
            )
            await publish_raw(
                mosquitto, [("devices/t7/v311", JSONFormat().write(old), None)], v5=False
            )
            await wait_until(lambda: v5.counts.acknowledged == 2 and v311.counts.acknowledged == 1)
    by_id = {env.id: env for env in got}
    assert set(by_id) == {"bin-1", "str-1", "v311-1"}
    for env in by_id.values():
        SAMPLE.assert_taken_in(env, time="2026-01-02T12:30:45.123456Z")


@dataclass(frozen=True)
class Reading:
    celsius: float


async def test_bad_input_is_dead_lettered_with_the_reason_and_blocks_nothing(
    mosquitto: Mosquitto,
) -> None:
    topic = "typed.reading"
    tidings.event(topic)(Reading)
    bad_time, properties = sdk_binary_v5(sdk_event(id="bad-time"))
    bad_time_properties = v5_properties(
        properties.ContentType,
        [(n, "yesterday" if n == "time" else v) for n, v in properties.UserProperty],
    )
    no_id = v5_properties(
        properties.ContentType, [(n, v) for n, v in properties.UserProperty if n != "id"]
    )
    unknown_payload, unknown = sdk_binary_v5(sdk_event(id="unknown", type="com.example.other"))
    structured: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    structured.ContentType = "application/cloudevents+json"
    messages = [
        ("in/bad", bad_time, bad_time_properties),  # a CloudEvent with a malformed time
        ("in/bad", b'{"celsius": 1}', no_id),  # a CloudEvent without its id
        ("in/bad", unknown_payload, unknown),  # a type the bridge does not take
        ("in/bad", b"{not json", structured),  # a structured event that is not JSON
        ("typed/reading", b'{"kelvin": "hot"}', None),  # not a Reading
        ("in/a.b", b"1", None),  # an MQTT topic that names no tidings topic
        ("in/good", b"2", None),  # and behind them all, a good one
        ("typed/reading", b'{"celsius": 3.5}', None),
    ]
    async with tidings.Bus() as bus:
        letters: list[dict[str, Any]] = []
        good: list[Any] = []
        bus.subscribe(DEAD_LETTER_TOPIC, letters.append)
        bus.subscribe("in.good", good.append)
        bus.subscribe(Reading, good.append)
        async with MqttBridge(
            bus, mosquitto.url, subscribe=["in/#", "typed/#"], types=["com.example.reading"]
        ) as bridge:
            await publish_raw(mosquitto, messages)
            await wait_until(lambda: bridge.counts.acknowledged == len(messages))
        assert good == [2, Reading(3.5)]
        assert bridge.counts.received == 8
        assert bridge.counts.accepted == 2
        assert bridge.counts.dead_lettered == 6
        reasons = [letter["reason"] for letter in letters]
        assert "'time'" in reasons[0]
        assert_bad_input_reasons(reasons, wrong_type="Reading", bad_name="a.b")
        assert [letter["origin"]["mqtt_topic"] for letter in letters] == [
            "in/bad",
            "in/bad",
            "in/bad",
            "in/bad",
            "typed/reading",
            "in/a.b",
        ]
        assert letters[4]["body"] == '{"kelvin": "hot"}'
        assert letters[0]["bridge"] == "mqtt"


async def test_a_message_is_acknowledged_only_after_it_was_accepted(
    mosquitto: Mosquitto,
) -> None:
    """A bridge whose intake never accepts holds the message unacknowledged; when it goes,
    the broker delivers the message again to the next bridge of the same session."""
    stuck = asyncio.Event()
    accepted: list[Envelope[Any]] = []

    async def never(envelopes: Sequence[Envelope[Any]]) -> None:
        stuck.set()
        await asyncio.Event().wait()

    async def works(envelopes: Sequence[Envelope[Any]]) -> None:
        accepted.extend(envelopes)

    first = MqttBridge(sink=never, url=mosquitto.url, subscribe=["acks/#"], client_id="acks")
    await first.start()
    await publish_raw(mosquitto, [("acks/x", JSONFormat().write(sdk_event(id="held")), None)])
    async with asyncio.timeout(WAIT):
        await stuck.wait()
    assert first.counts.acknowledged == 0
    await first.aclose()
    async with MqttBridge(
        sink=works, url=mosquitto.url, subscribe=["acks/#"], client_id="acks"
    ) as second:
        await wait_until(lambda: second.counts.acknowledged == 1)
    assert [env.id for env in accepted] == ["held"]


async def test_acks_whose_connection_went_first_are_counted_failed_not_acknowledged(
    mosquitto: Mosquitto,
) -> None:
    """The bridge's connection is reset (the chaos toolkit's fault proxy) while it accepts a
    message, and the sink returns once the bridge saw it go: the PUBACK cannot be sent, so
    it counts in ``ack_failed``, not in ``acknowledged``. The bridge reconnects, the broker
    delivers the message again (the session is persistent), and that PUBACK is sent and
    counted."""
    accepted: list[str] = []
    proxy = await FaultProxy(("127.0.0.1", mosquitto.port)).start()

    async def cut_first(envelopes: Sequence[Envelope[Any]]) -> None:
        accepted.extend(env.id for env in envelopes)
        if len(accepted) == 1:
            proxy.reset()
            await wait_until(lambda: not bridge.connected)

    bridge = MqttBridge(
        sink=cut_first,
        url=f"mqtt://127.0.0.1:{proxy.port}",
        subscribe=["cut/#"],
        client_id="cut",
        backoff_limit=0.2,
    )
    async with bridge:
        await publish_raw(mosquitto, [("cut/x", JSONFormat().write(sdk_event(id="cut-1")), None)])
        await wait_until(lambda: bridge.counts.ack_failed + bridge.counts.acknowledged == 2)
    await proxy.aclose()
    assert accepted == ["cut-1", "cut-1"]  # delivered again: at least once
    counts = bridge.counts
    assert (counts.received, counts.acknowledged, counts.ack_failed) == (2, 1, 1)
    assert counts.reconnects == 1


async def test_a_burst_is_appended_together_in_order_then_acknowledged(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """300 CloudEvents wait in the bridge's session (every 50th on an MQTT topic that names
    no tidings topic): the bridge appends them in far fewer transactions than messages,
    in publish order, dead-letters the 6 bad ones with their reason and acknowledges all
    300, each after its event was stored."""
    total = 300
    messages = [
        (
            "burst/bad name" if i % 50 == 49 else "burst/x",
            JSONFormat().write(sdk_event(id=f"e-{i:03d}", data={"i": i})),
            None,
        )
        for i in range(total)
    ]
    await preload_session(mosquitto, "burst/#", "b", messages)
    store = CountingStore(tmp_path / "log.db")
    async with (
        tidings.Bus(store=store) as bus,
        MqttBridge(bus, mosquitto.url, subscribe=["burst/#"], client_id="b") as bridge,
    ):
        await wait_until(lambda: bridge.counts.acknowledged == total)
        records = await store.read()
    good = [f"e-{i:03d}" for i in range(total) if i % 50 != 49]
    assert [r.envelope.id for r in records if r.envelope.topic == "burst.x"] == good
    letters = [r.envelope.payload for r in records if r.envelope.topic == DEAD_LETTER_TOPIC]
    assert len(letters) == 6
    assert all("burst/bad name" in letter["reason"] for letter in letters)
    counts = bridge.counts
    assert (counts.received, counts.accepted, counts.dead_lettered) == (total, 294, 6)
    assert max(store.batches) > 1
    assert len(store.batches) < total // 4  # together, not one transaction each


async def test_an_event_of_a_burst_the_bus_refuses_as_too_far_ahead_is_dead_lettered(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Of a burst of three CloudEvents, the bus refuses the one whose time leads its clock
    by decades (ClockSkewError): it is dead-lettered with that reason, never retried, the
    other two are appended in order, all three acknowledged."""
    ahead = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    messages = [
        (
            "skew/x",
            JSONFormat().write(sdk_event(id=f"e-{i}", **({"time": ahead} if i == 1 else {}))),
            None,
        )
        for i in range(3)
    ]
    await preload_session(mosquitto, "skew/#", "s", messages)
    async with (
        tidings.Bus(store=f"sqlite:///{tmp_path}/log.db") as bus,
        MqttBridge(bus, mosquitto.url, subscribe=["skew/#"], client_id="s") as bridge,
    ):
        await wait_until(lambda: bridge.counts.acknowledged == 3)
        store = bus.store
        assert store is not None
        records = await store.read()
    assert [r.envelope.id for r in records if r.envelope.topic == "skew.x"] == ["e-0", "e-2"]
    letters = [r.envelope.payload for r in records if r.envelope.topic == DEAD_LETTER_TOPIC]
    assert len(letters) == 1
    assert letters[0]["reason"].startswith("ClockSkewError")
    counts = bridge.counts
    assert (counts.received, counts.accepted, counts.dead_lettered) == (3, 2, 1)
    assert counts.retried == 0


async def test_a_burst_whose_append_fails_is_acknowledged_not_at_all_and_comes_again(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """120 CloudEvents wait in the bridge's session; the log refuses every append (a refusal
    that may pass), so the burst the bridge took is retried and none of it acknowledged.
    The bridge stops; another on the same session gets all 120 again and the log holds
    each once, in publish order."""
    total = 120
    messages = [
        ("held/x", JSONFormat().write(sdk_event(id=f"e-{i:03d}", data={"i": i})), None)
        for i in range(total)
    ]
    await preload_session(mosquitto, "held/#", "h", messages)
    store = CountingStore(tmp_path / "log.db")
    store.refusing = True
    async with tidings.Bus(store=store) as bus:
        bridge = MqttBridge(bus, mosquitto.url, subscribe=["held/#"], client_id="h")
        async with bridge:
            await wait_until(lambda: bridge.counts.retried >= 2)
            taken = bridge.counts.received
            assert taken > 1  # a burst, appended together first
            assert max(store.refused) == taken
        counts = bridge.counts
        assert (counts.received, counts.accepted, counts.acknowledged) == (taken, 0, 0)
        assert counts.dead_lettered == 0
        assert store.batches == []
        store.refusing = False
        async with MqttBridge(bus, mosquitto.url, subscribe=["held/#"], client_id="h") as again:
            await wait_until(lambda: again.counts.acknowledged == total)
        records = await store.read()
    assert [r.envelope.id for r in records] == [f"e-{i:03d}" for i in range(total)]
    counts = again.counts
    assert (counts.received, counts.accepted, counts.dead_lettered) == (total, total, 0)


async def test_refusals_that_may_pass_are_retried_while_the_message_waits(
    mosquitto: Mosquitto,
) -> None:
    flaky = FlakySink(refusals=3)
    async with MqttBridge(sink=flaky, url=mosquitto.url, subscribe=["flaky/#"]) as bridge:
        await publish_raw(mosquitto, [("flaky/x", JSONFormat().write(sdk_event(id="f1")), None)])
        await wait_until(lambda: bridge.counts.acknowledged == 1)
    assert flaky.accepted == ["f1"]
    assert bridge.counts.retried == 3
    assert bridge.counts.accepted == 1


# -- out --------------------------------------------------------------------------------------


async def test_bus_topics_go_out_as_cloudevents_the_sdk_reads(mosquitto: Mosquitto) -> None:
    async with (
        tidings.Bus(source="shop") as bus,
        Received(mosquitto, "out/#") as v5_receiver,
        Received(mosquitto, "out/#", v5=False) as v311_receiver,
        MqttBridge(bus, mosquitto.url, publish=["out.binary"]) as binary,
        MqttBridge(bus, mosquitto.url, publish=["out.structured"], structured=True) as structured,
        MqttBridge(bus, mosquitto.url, publish=["out.old"], protocol="3.1.1") as old,
    ):
        sent = [
            await bus.emit({"n": 1}, topic="out.binary", key="k1", headers={"site": "b"}),
            await bus.emit({"n": 2}, topic="out.structured", key="k2"),
            await bus.emit({"n": 3}, topic="out.old"),
        ]
        await wait_until(
            lambda: (
                binary.counts.published + structured.counts.published + old.counts.published == 3
            )
        )
        await wait_until(
            lambda: len(v5_receiver.messages) == 3 and len(v311_receiver.messages) == 3
        )
    messages = {m.topic.value: m for m in v5_receiver.messages}
    assert set(messages) == {"out/binary", "out/structured", "out/old"}
    first = messages["out/binary"]
    assert isinstance(first.payload, bytes)
    event = sdk_from_v5(first.payload, first.properties)
    assert event.get_id() == sent[0].envelope.id
    assert event.get_type() == "out.binary"
    assert event.get_source() == "shop"
    assert event.get_data() == {"n": 1}
    assert event.get_extension("partitionkey") == "k1"
    assert event.get_extension("site") == "b"
    second: Any = messages["out/structured"]
    assert second.properties.ContentType == "application/cloudevents+json"
    assert isinstance(second.payload, bytes)
    parsed = JSONFormat().read(None, second.payload)
    assert (parsed.get_id(), parsed.get_data()) == (sent[1].envelope.id, {"n": 2})
    for message in v311_receiver.messages:  # the same events, read by an MQTT 3.1.1 client
        if message.topic.value == "out/old":
            assert isinstance(message.payload, bytes)
            parsed = JSONFormat().read(None, message.payload)
            assert (parsed.get_id(), parsed.get_data()) == (sent[2].envelope.id, {"n": 3})


# -- faults -----------------------------------------------------------------------------------


async def test_unreachable_broker_at_start_is_a_typed_error_within_the_timeout() -> None:
    from tidings.testing.nats_server import free_port

    bridge = MqttBridge(
        tidings.Bus(), f"mqtt://127.0.0.1:{free_port()}", subscribe=["x/#"], connect_timeout=2
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransportUnavailableError, match="did not accept a connection"):
        await bridge.start()
    assert loop.time() - started < 5


async def test_broker_gone_mid_run_loses_no_accepted_message(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A publisher sends 400 CloudEvents at QoS 1 while the broker is stopped and started
    again mid-stream; it retries what got no PUBACK. Every event the broker acknowledged
    to it is in the bus's log once (the store keeps a redelivered id once)."""
    total = 400
    acked: set[str] = set()
    sent_all = asyncio.Event()

    async def publisher() -> None:
        pending = [f"e-{i:04d}" for i in range(total)]
        deadline = asyncio.get_running_loop().time() + 60
        while pending and asyncio.get_running_loop().time() < deadline:
            try:
                async with publisher_client(mosquitto.port, timeout=5) as client:
                    while pending:
                        event_id = pending[0]
                        body = JSONFormat().write(sdk_event(id=event_id, data={"n": event_id}))
                        await client.publish("gone/x", body, qos=1, timeout=5)
                        acked.add(event_id)
                        pending.pop(0)
                        await asyncio.sleep(0.002)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)
        sent_all.set()

    async with tidings.Bus(store=f"sqlite:///{tmp_path}/log.db") as bus:
        async with MqttBridge(
            bus, mosquitto.url, subscribe=["gone/#"], client_id="gone", backoff_limit=0.5
        ) as bridge:
            sender = asyncio.create_task(publisher())
            await wait_until(lambda: bridge.counts.accepted >= 100)
            mosquitto.stop()
            await wait_until(lambda: bridge.connected is False)  # the bridge saw it go
            mosquitto.start()
            async with asyncio.timeout(90):
                await sent_all.wait()
            await sender
            assert len(acked) == total
            store = bus.store
            assert store is not None
            ids = {r.envelope.id for r in await until_stored(store, "gone.x", total, WAIT)}
            # a batch is counted accepted once its append returns, just after the log shows it
            await wait_until(lambda: bridge.counts.accepted >= total, timeout=10)
        records = await store.read(topic="gone.x")
    assert ids == acked  # nothing the broker acknowledged was lost
    assert len(records) == total  # each stored once
    assert bridge.counts.reconnects >= 1
    assert bridge.counts.dead_lettered == 0
    duplicates = bridge.counts.accepted - total  # redelivered after the restart
    assert 0 <= duplicates <= bridge.counts.received


@contextlib.asynccontextmanager
async def unhandled_failures() -> AsyncIterator[list[dict[str, Any]]]:
    """The contexts the running loop's exception handler gets while this is open (a future
    whose exception nobody read reports itself so when collected: collected here at the
    end, once the callbacks already scheduled, which may hold a client, have run)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)


UNREAD = ("Future exception was never retrieved", "Task exception was never retrieved")


@pytest.fixture(autouse=True)
async def no_unread_failures() -> AsyncIterator[None]:
    """No test of this module leaves a failure that nobody read (a client of the bridge's or
    of the test's own), checked once its scenario is over."""
    async with unhandled_failures() as failures:
        yield
    assert [c for c in failures if c["message"] in UNREAD] == []


async def test_a_connection_lost_while_accepting_then_closed_is_reported_once_not_leaked(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker goes while the bridge accepts a message, and the bridge is closed before
    it takes another: the loss is logged once by the bridge, not left in aiomqtt's
    disconnect future for asyncio to report as "Future exception was never retrieved"; the
    message was not acknowledged (it stays with the broker)."""
    accepting = asyncio.Event()

    async def stuck(envelopes: Sequence[Envelope[Any]]) -> None:
        accepting.set()
        await asyncio.Event().wait()  # until the bridge is closed

    caplog.set_level(logging.INFO, "tidings.bridges")
    async with unhandled_failures() as failures:
        bridge = MqttBridge(sink=stuck, url=mosquitto.url, subscribe=["lost/#"], client_id="lost")
        async with bridge:
            await publish_raw(mosquitto, [("lost/x", JSONFormat().write(sdk_event(id="l")), None)])
            async with asyncio.timeout(WAIT):
                await accepting.wait()
            mosquitto.stop()
            await wait_until(lambda: not bridge.connected)
        counts = bridge.counts
    assert [c["message"] for c in failures] == []
    lost = [r.getMessage() for r in caplog.records if "had lost" in r.getMessage()]
    assert len(lost) == 1, lost  # the loss, with its reason, reported once
    assert "when it closed" in lost[0]
    assert (counts.received, counts.acknowledged, counts.ack_failed) == (1, 0, 0)


async def test_a_connect_given_up_in_a_partition_leaves_no_connection_behind(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """A partition holds the broker's CONNACK, so connecting times out: at start, then while
    reconnecting. Each attempt given up is closed, not left running: its connection has the
    bridge's client id and, answered once the partition heals, would take over the bridge's
    session (and aiomqtt logged "Exception in callback ... CancelledError" for it). After
    the heal the bridge holds the one connection and takes each message once."""
    taken: list[str] = []

    async def sink(envelopes: Sequence[Envelope[Any]]) -> None:
        taken.extend(env.id for env in envelopes)

    def bridge(url: str) -> MqttBridge:
        return MqttBridge(
            sink=sink,
            url=url,
            subscribe=["heal/#"],
            client_id="heal",
            connect_timeout=1,
            backoff_limit=0.2,
        )

    def aiomqtt_tasks() -> list[asyncio.Task[Any]]:  # the socket's housekeeping
        return [t for t in asyncio.all_tasks() if "Client._misc_loop" in repr(t.get_coro())]

    def attempts_given_up() -> int:
        return sum("reconnecting to" in r.getMessage() for r in caplog.records)

    caplog.set_level(logging.INFO, "tidings.bridges")
    proxy = await FaultProxy(("127.0.0.1", mosquitto.port)).start()
    url = f"mqtt://127.0.0.1:{proxy.port}"
    try:
        async with unhandled_failures() as failures:
            proxy.partition("both")
            with pytest.raises(TransportUnavailableError):
                await bridge(url).start()
            await wait_until(lambda: not proxy.connections and not aiomqtt_tasks(), 10)
            proxy.heal()
            async with bridge(url) as live:
                proxy.partition("both")
                proxy.reset()
                await wait_until(lambda: attempts_given_up() >= 1, WAIT)
                proxy.heal()
                await wait_until(lambda: live.connected, WAIT)
                ids = [f"h-{n}" for n in range(5)]
                body = JSONFormat().write
                await publish_raw(
                    mosquitto, [(f"heal/{i}", body(sdk_event(id=i)), None) for i in ids]
                )
                await wait_until(lambda: live.counts.acknowledged == len(ids), WAIT)
                assert len(proxy.connections) == 1  # the bridge's: no attempt of its lives on
                assert live.connected
                counts = live.counts
        assert [c["message"] for c in failures] == []
        assert taken == ids  # once each
        assert (counts.received, counts.ack_failed, counts.reconnects) == (5, 0, 1)
    finally:
        await proxy.aclose()


async def test_a_slow_tcp_connect_and_no_connack_share_one_connect_timeout() -> None:
    """The TCP connection comes late (the listener's backlog is full, so the SYN is
    answered only when a slot frees, ~2 s on), then no CONNACK ever comes: :meth:`start`
    raises within ``connect_timeout`` in all (docs/bridges.md), not the TCP wait plus a
    full CONNACK wait, and closes the connection it opened (CONNECT, DISCONNECT, EOF)."""
    loop = asyncio.get_running_loop()
    timeout = 3.0
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # one connection waiting, no more
        port = listener.getsockname()[1]
        stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
        listener.setblocking(False)
        freed: list[socket.socket] = []

        def free_a_slot() -> None:
            freed.append(stack.enter_context(listener.accept()[0]))

        loop.call_later(1.5, free_a_slot)
        bridge = MqttBridge(
            sink=lambda envelopes: asyncio.sleep(0),
            url=f"mqtt://127.0.0.1:{port}",
            subscribe=["slow/#"],
            connect_timeout=timeout,
        )
        began = loop.time()
        with pytest.raises(TransportUnavailableError):
            await bridge.start()
        took = loop.time() - began
        assert len(freed) == 1
        attempt, _ = listener.accept()  # the bridge's connection reached the listener
        stack.enter_context(attempt)
        attempt.setblocking(False)
        sent = b""
        async with asyncio.timeout(WAIT):
            while chunk := await loop.sock_recv(attempt, 4096):
                sent += chunk
    assert took < timeout + 1.0, took  # a bound documented, not a speed: 2 + 3 s before
    assert sent[0] == 0x10, sent  # CONNECT
    assert sent[-2:] == b"\xe0\x00", sent  # ... DISCONNECT, then closed


async def test_cancelling_aclose_while_the_bridge_reconnects_is_not_swallowed(
    mosquitto: Mosquitto,
) -> None:
    """``aclose()`` cancelled (its caller's timeout) while it waits for a reconnection
    attempt to end, which a stalled broker makes take ``connect_timeout``: the cancellation
    goes on up at once, not swallowed until the attempt ends; a second ``aclose()``
    finishes the job."""

    async def sink(envelopes: Sequence[Envelope[Any]]) -> None:
        pass

    proxy = await FaultProxy(("127.0.0.1", mosquitto.port)).start()
    try:
        bridge = MqttBridge(
            sink=sink,
            url=f"mqtt://127.0.0.1:{proxy.port}",
            subscribe=["stall/#"],
            connect_timeout=WAIT,
            backoff_limit=0.2,
        )
        await bridge.start()
        proxy.stall()
        proxy.reset()
        await wait_until(lambda: not bridge.connected and len(proxy.connections) == 1, WAIT)
        closing = asyncio.create_task(bridge.aclose())
        await asyncio.sleep(0)  # closing waits for the attempt, which waits for a CONNACK
        assert not closing.done()
        closing.cancel()
        await asyncio.wait({closing}, timeout=WAIT / 2)
        assert closing.cancelled()
        proxy.reset()  # the attempt fails now: the second aclose need not wait it out
        async with asyncio.timeout(WAIT):
            await bridge.aclose()
        assert not bridge.connected
    finally:
        await proxy.aclose()


async def test_events_out_survive_the_broker_going_away(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """300 events published on a bus with a store while the bridge's connection to the
    broker is cut (the chaos toolkit's fault proxy partitions and resets it) and healed:
    the durable consumer retries until each got
    its PUBACK; the receiver (straight on the broker) sees every one.

    A proxy, not a broker restart: Mosquitto 2.0 loses QoS 1 messages it had acknowledged
    to their publisher but not yet delivered when it is stopped (reproduced with a plain
    aiomqtt publisher, without tidings), which no publisher can make up for."""
    total = 300
    proxy = await FaultProxy(("127.0.0.1", mosquitto.port)).start()
    async with (
        Received(mosquitto, "away/#") as receiver,
        tidings.Bus(store=f"sqlite:///{tmp_path}/log.db") as bus,
        MqttBridge(
            bus, f"mqtt://127.0.0.1:{proxy.port}", publish=["away.>"], backoff_limit=0.5
        ) as bridge,
    ):
        for i in range(total // 2):
            await bus.emit({"i": i}, topic="away.x")
        await wait_until(lambda: bridge.counts.published >= 50)
        proxy.partition("both")  # reconnections are held until the heal
        proxy.reset()
        for i in range(total // 2, total):
            await bus.emit({"i": i}, topic="away.x")
        await wait_until(lambda: not bridge.connected)
        proxy.heal()
        await wait_until(lambda: bridge.counts.published >= total, timeout=60)

        def seen() -> set[int]:
            out = set()
            for message in receiver.messages:
                assert isinstance(message.payload, bytes)
                data: Any = JSONFormat().read_data(message.payload, None)
                out.add(data["i"])
            return out

        try:
            await wait_until(lambda: len(seen()) == total, timeout=60)
        except TimeoutError:
            missing = sorted(set(range(total)) - seen())
            raise AssertionError(f"missing {missing}, counts {bridge.counts}") from None
    await proxy.aclose()
    assert seen() == set(range(total))
    assert bridge.counts.publish_failed >= 1
    assert bridge.counts.reconnects >= 1

"""NatsTransport specifics: start-up errors, the stream check, the exact wire format, bad
input from plain NATS clients, publish failures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from tidings.chaos import FaultProxy
from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import (
    HeaderError,
    PublishError,
    PublishOutcomeUnknownError,
    StreamConfigError,
    TransportClosedError,
    TransportUnavailableError,
)
from tidings.testing.nats_server import NatsServer, free_port
from tidings.testing.transport_conformance import (
    Collector,
    ConformanceOrder,
    DeadLetters,
    eventually,
    make_envelope,
)
from tidings.transports import DeliveryPolicy, Message, Transport
from tidings.transports.nats import NatsTransport, StreamSettings

from .checked_drop import assert_unpublished_checks_are_dropped, checked_orphan

Factory = Callable[..., NatsTransport]


async def test_unreachable_server_fails_within_the_connect_timeout() -> None:
    transport = NatsTransport(f"nats://127.0.0.1:{free_port()}", connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TransportUnavailableError) as caught:
        await transport.start()
    elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert "cannot reach NATS" in str(caught.value)
    assert caught.value.timeout == 1.0
    with pytest.raises(TransportClosedError):
        await transport.publish(make_envelope(HybridClock(), "x"))


async def test_not_started_transport_refuses_work(nats_factory: Factory) -> None:
    transport = nats_factory()
    with pytest.raises(TransportClosedError, match="not started"):
        await transport.publish(make_envelope(HybridClock(), "x"))
    await transport.aclose()


async def test_existing_stream_with_other_settings_is_reported(nats_factory: Factory) -> None:
    first = nats_factory(stream=StreamSettings(name="CHECKED", duplicate_window=60.0))
    async with first:
        pass
    other = nats_factory(stream=StreamSettings(name="CHECKED", duplicate_window=30.0, replicas=1))
    with pytest.raises(StreamConfigError) as caught:
        await other.start()
    assert caught.value.stream == "CHECKED"
    assert any("duplicate_window" in d for d in caught.value.differences)
    missing = nats_factory(stream=StreamSettings(name="ABSENT", create=False))
    with pytest.raises(StreamConfigError, match="does not exist"):
        await missing.start()


async def _published(
    server: NatsServer, transport: Transport, env: Envelope[Any], subject: str, stream: str
) -> Msg:
    """What ``transport`` publishes for ``env``, as a plain JetStream subscriber to
    ``subject`` on ``stream`` receives it."""
    nc = await nats.connect(server.url)
    try:
        sub = await nc.jetstream().subscribe(subject, stream=stream)
        await transport.publish(env)
        return await sub.next_msg(timeout=5)
    finally:
        await nc.close()


async def test_wire_format_is_cloudevents_binary_mode(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    async with nats_factory(prefix="wire", stream=StreamSettings(name="WIRE")) as transport:
        clock = HybridClock()
        env = make_envelope(clock, "o-9", key="cust-1", headers={"traceparent": "00-aa-bb-01"})
        msg = await _published(nats_server, transport, env, "wire.conformance.order", "WIRE")
    assert msg.headers == {
        "ce-specversion": "1.0",
        "ce-id": env.id,
        "ce-type": "conformance.order",
        "ce-source": "conformance",
        "ce-dataschema": "tidings:schemas/conformance.order/versions/1",
        "ce-time": f"{env.datetime:%Y-%m-%dT%H:%M:%S}.{env.time // 1000 % 1_000_000:06d}Z",
        "ce-hlc": str(env.time),
        "ce-partitionkey": "cust-1",
        "ce-traceparent": "00-aa-bb-01",
        "content-type": "application/json",
        "Nats-Msg-Id": env.id,
    }
    assert json.loads(msg.data) == {"order_id": "o-9", "amount": 3.0}


async def test_structured_mode_body_is_a_json_cloudevent(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    options: dict[str, Any] = {"prefix": "wires", "stream": StreamSettings(name="WIRES")}
    async with nats_factory(structured=True, **options) as transport:
        env = make_envelope(HybridClock(), "o-1")
        msg = await _published(nats_server, transport, env, "wires.conformance.order", "WIRES")
    assert msg.headers == {"content-type": "application/cloudevents+json", "Nats-Msg-Id": env.id}
    body = json.loads(msg.data)
    assert body["specversion"] == "1.0"
    assert body["id"] == env.id
    assert body["type"] == "conformance.order"
    assert body["data"] == {"order_id": "o-1", "amount": 3.0}


async def test_a_checked_encoding_goes_only_with_its_own_envelope_not_one_of_the_same_id(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    # Regression: the encoding check_envelope made was kept under the event's id text, so
    # another envelope with the same id (a copy with other data) was sent with it.
    clock = HybridClock()
    checked = make_envelope(clock, "checked")
    other = msgspec.structs.replace(checked, payload=ConformanceOrder("other", 5.0))
    assert other.id == checked.id
    async with nats_factory(prefix="twin", stream=StreamSettings(name="TWIN")) as transport:
        transport.check_envelope(checked)
        stored = await (await transport.send(other))
        dropped = await (await transport.send(checked))  # its own encoding, taken now
    # The same Nats-Msg-Id within the duplicate window: the server keeps only the first.
    assert (stored.duplicate, dropped.duplicate) == (False, True)
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        assert (await js.stream_info("TWIN")).state.messages == 1
        msg = await js.get_msg("TWIN", stored.sequence)
    finally:
        await nc.close()
    assert msg.headers is not None
    assert msg.headers["Nats-Msg-Id"] == other.id
    assert msg.data is not None
    assert json.loads(msg.data) == {"order_id": "other", "amount": 5.0}


async def test_a_checked_encoding_that_no_publish_takes_is_not_kept(
    nats_factory: Factory,
) -> None:
    # Regression: check_envelope kept each encoding until a publish took it, or until the
    # close: one whose publish never came (the bus's store append failed after the check)
    # was kept, with its envelope, for the transport's life.
    transport = nats_factory(window=8)
    async with transport:
        await assert_unpublished_checks_are_dropped(transport, 8)
    # A closed transport keeps nothing it checks (nothing would drop it).
    assert checked_orphan(transport, HybridClock(), "after the close")() is None


async def test_plain_nats_client_garbage_goes_to_dead_letters(
    nats_factory: Factory, nats_server: NatsServer
) -> None:
    async with nats_factory(prefix="plain", stream=StreamSettings(name="PLAIN")) as transport:
        got = Collector()
        await transport.subscribe("conformance.>", got)
        dead = DeadLetters()
        await transport.subscribe_dead_letters(dead)
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().publish("plain.conformance.order", b"<xml>not json</xml>")
            await nc.publish("plain.conformance.order", b"\x00\x01")  # core NATS, no ack
            await nc.flush()
        finally:
            await nc.close()
        await transport.publish(make_envelope(HybridClock(), "after"))
        await got.wait_count(1)
        await dead.wait_count(2, timeout=15)
    assert [m.envelope.payload for m in got.messages] == [ConformanceOrder("after", 5.0)]
    assert {r.body for r in dead.records} == {b"<xml>not json</xml>", b"\x00\x01"}
    for record in dead.records:
        assert record.handler == "tidings.decode"
        assert record.reason.startswith("DecodeError: cannot decode the body")
        assert record.subject == "plain.conformance.order"
        assert record.headers["tidings-dead-attempts"] == "1"


async def test_failed_sends_are_reported_never_dropped(nats_factory: Factory) -> None:
    failures: list[tuple[Envelope[Any], BaseException]] = []
    transport = nats_factory(
        prefix="gone",
        stream=StreamSettings(name="GONE"),
        # Each copy is answered "no responders" (not stored); an ack_timeout well above
        # that answer's time keeps a loaded machine from making it "unknown".
        ack_timeout=0.5,
        publish_timeout=1.0,
        on_publish_error=lambda env, exc: failures.append((env, exc)),
    )
    async with transport:
        clock = HybridClock()
        assert (await transport.publish(make_envelope(clock, "kept"))).sequence == 1
        await transport._js.delete_stream("GONE")
        futures = [await transport.send(make_envelope(clock, f"lost-{i}")) for i in range(3)]
        assert await transport.flush(10) == 3
        with pytest.raises(PublishError, match="not stored"):
            await transport.publish(make_envelope(clock, "raised"))
    assert [env.payload.order_id for env, _ in failures] == ["lost-0", "lost-1", "lost-2"]
    for future in futures:
        assert isinstance(future.exception(), PublishError)


def _through(proxy: FaultProxy, stream: str, **options: Any) -> NatsTransport:
    """A transport to the session's server through ``proxy``, on a stream of its own."""
    return NatsTransport(
        f"nats://{proxy.address}",
        prefix=stream.lower(),
        stream=StreamSettings(name=stream),
        connect_timeout=10.0,
        **options,
    )


async def test_publishes_past_the_publish_timeout_fail_in_publish_order(
    nats_server: NatsServer,
) -> None:
    """A stalled link: the oldest publish is resent alone (the probe) when its ack is late,
    and every publish reaches ``publish_timeout`` while that probe waits for an answer.
    Failures are reported in publish order all the same: a newer publish is not failed
    before an older one."""
    failures: list[tuple[Envelope[Any], BaseException]] = []
    async with FaultProxy(("127.0.0.1", nats_server.port)) as proxy:
        transport = _through(
            proxy,
            "STALL",
            # The probe goes out about ack_timeout after the sends and waits ack_timeout
            # for an answer: the publish timeout falls in that wait.
            ack_timeout=1.0,
            publish_timeout=1.5,
            on_publish_error=lambda env, exc: failures.append((env, exc)),
        )
        async with transport:
            clock = HybridClock()
            proxy.stall()
            futures = [await transport.send(make_envelope(clock, f"late-{i}")) for i in range(3)]
            await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 30)
            proxy.heal()
    assert [env.payload.order_id for env, _ in failures] == ["late-0", "late-1", "late-2"]
    for _, error in failures:
        assert isinstance(error, PublishOutcomeUnknownError)  # each copy went unanswered
        assert "publish_timeout=1.5s" in str(error)


async def test_a_resync_cancelled_as_its_probe_is_answered_ends(nats_server: NatsServer) -> None:
    """A cancel that comes when the probe's answer has arrived but not yet been seen (a
    busy loop) must end the resync: ``aclose`` waits for it. (Python 3.11's
    ``asyncio.wait_for`` returns the result then, swallowing the cancel.)"""
    async with FaultProxy(("127.0.0.1", nats_server.port)) as proxy:
        transport = _through(proxy, "ANSWERED", ack_timeout=1.0, publish_timeout=60.0)
        async with transport:
            proxy.stall()
            future = await transport.send(make_envelope(HybridClock(), "probed"))
            await eventually(lambda: transport._probe is not None)  # resent alone, unanswered
            resync = transport._resyncer
            assert resync is not None
            transport._probe_answered.set()  # the answer and the cancel in one loop step
            resync.cancel()
            await asyncio.wait_for(asyncio.gather(resync, return_exceptions=True), 10)
            assert resync.cancelled()
            proxy.heal()
            assert (await asyncio.wait_for(future, 30)).sequence == 1


async def test_delivery_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_deliver"):
        DeliveryPolicy(max_deliver=0)
    with pytest.raises(ValueError, match="prefetch"):
        DeliveryPolicy(prefetch=0)
    with pytest.raises(ValueError, match="takeover must be at least 1 second"):
        DeliveryPolicy(exclusive=True, takeover=0.5)
    with pytest.raises(TypeError, match="exclusive must be a bool"):
        DeliveryPolicy(exclusive="yes")  # type: ignore[arg-type]
    policy = DeliveryPolicy(backoff=0.5, backoff_factor=2.0, backoff_max=3.0)
    assert [policy.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_group_names_are_checked(nats_factory: Factory) -> None:
    async with nats_factory() as transport:
        with pytest.raises(ValueError, match="group"):
            await transport.subscribe("conformance.>", Collector(), group="no.dots")


async def test_header_values_keep_newlines_and_bad_names_are_refused(
    nats_factory: Factory,
) -> None:
    async with nats_factory() as transport:
        got = Collector()
        await transport.subscribe("conformance.>", got)
        clock = HybridClock()
        await transport.publish(make_envelope(clock, "nl", headers={"note": "two\r\nlines"}))
        await got.wait_count(1)
        assert got.messages[0].envelope.headers["note"] == "two\r\nlines"  # percent-encoded
        with pytest.raises(HeaderError, match="cannot travel"):
            await transport.publish(make_envelope(clock, "bad", headers={"bad name": "x"}))
        assert await transport.flush(5) == 0  # the refused publish took no window slot


async def test_a_publish_the_client_refuses_fails_once_and_frees_its_slot(
    nats_factory: Factory,
) -> None:
    failures: list[tuple[Envelope[Any], BaseException]] = []
    transport = nats_factory(window=1, on_publish_error=lambda e, x: failures.append((e, x)))
    big = ConformanceOrder("x" * 2_000_000, 1.0)  # above the server's 1 MB max_payload
    async with transport:
        clock = HybridClock()
        refused = Envelope("conformance.order", big, clock.now(), None, "test")
        with pytest.raises(PublishError, match="maximum payload") as caught:
            await transport.publish(refused)
        assert (caught.value.event_id, caught.value.topic) == (refused.id, "conformance.order")
        assert isinstance(caught.value.__cause__, nats.errors.MaxPayloadError)
        sent = Envelope("conformance.order", big, clock.now(), None, "test")
        future = await transport.send(sent)
        assert isinstance(future.exception(), PublishError)
        assert [(env.id, type(exc)) for env, exc in failures] == [(sent.id, PublishError)]
        # The window slot came back at once: a small publish goes through with window=1.
        ack = await asyncio.wait_for(transport.publish(make_envelope(clock, "small")), 5)
        assert ack.sequence == 1
        assert await transport.flush(5) == 2


async def test_a_pull_request_that_outlives_a_reconnect_does_not_overrun_prefetch(
    nats_factory: Factory,
) -> None:
    release = asyncio.Event()
    got = Collector()

    async def blocked(message: Message) -> None:
        await got(message)
        await release.wait()

    transport = nats_factory()
    async with transport:
        policy = DeliveryPolicy(prefetch=4, workers=4, ack_wait=30.0)
        sub = await transport.subscribe("conformance.>", blocked, group="burst", policy=policy)
        [puller] = transport._pullers
        await eventually(lambda: puller._current is not None)  # a request for 4 waits
        # The client reconnected to the same server: its request is still live there.
        await transport._on_reconnected()
        await eventually(lambda: puller._current is not None)  # and the next one went out
        clock = HybridClock()
        sent = [make_envelope(clock, f"r-{i}") for i in range(20)]
        for env in sent:
            await transport.send(env)
        assert await transport.flush(5) == 0
        await eventually(lambda: sub.stats().in_memory == 4)
        assert transport._nc is not None
        await transport._nc.flush()
        assert puller.held() == []  # what the old request brought was given back
        release.set()
        await got.wait_count(20)
        assert sorted(got.ids) == sorted(env.id for env in sent)
        assert sub.stats().max_in_memory <= 4


async def test_an_idle_exclusive_member_keeps_its_pull_request_and_key_order(
    nats_factory: Factory,
) -> None:
    """An idle spell (10 empty fetches: the transport then checks its consumer) must not
    strand a pull request, or what it brings is nak'd and comes back after later events."""
    async with nats_factory() as transport:
        got = Collector()
        policy = DeliveryPolicy(prefetch=64, exclusive=True, takeover=5.0)
        sub: Any = await transport.subscribe("conformance.>", got, group="idle", policy=policy)
        idle = asyncio.Event()
        empty = [0]
        fetch = sub._fetch

        async def counted(batch: int, timeout: float) -> list[Any]:
            msgs: list[Any] = await fetch(batch, timeout)
            empty[0] += not msgs
            if empty[0] >= 10:
                idle.set()
            return msgs

        sub._fetch = counted
        await asyncio.wait_for(idle.wait(), 60)
        clock = HybridClock()
        for i in range(200):
            await transport.send(make_envelope(clock, f"k{i % 5}-n-{i}", key=f"k{i % 5}"))
        assert await transport.flush(15) == 0
        await got.wait_count(200)
        assert [m.attempt for m in got.messages] == [1] * 200
        numbers = [int(m.envelope.payload.order_id.split("-")[2]) for m in got.messages]
        assert numbers == sorted(numbers)


async def test_a_member_closing_with_a_lost_pin_leaves_the_holder_pinned(
    nats_factory: Factory,
) -> None:
    transports = [nats_factory() for _ in range(3)]
    for transport in transports:
        await transport.start()
    try:
        got = [Collector() for _ in transports]
        policy = DeliveryPolicy(exclusive=True, takeover=3.0)
        subs = [
            await t.subscribe("conformance.>", c, group="pins", policy=policy)
            for t, c in zip(transports, got, strict=True)
        ]
        await transports[0].send(make_envelope(HybridClock(), "pin"))
        await eventually(lambda: any(c.messages for c in got))
        holder = next(i for i, c in enumerate(got) if c.messages)
        leaver = (holder + 1) % 3
        stream = transports[0].stream.name
        (consumer,) = [c.name for c in await transports[0]._js.consumers_info(stream)]

        async def server_pin() -> str | None:
            info = await transports[holder]._consumer_info(stream, consumer)
            assert info is not None
            groups = info.get("priority_groups") or [{}]
            pin: str | None = groups[0].get("pinned_client_id")
            return pin

        pinned = await server_pin()
        assert pinned is not None
        # A member that lost its pin still remembers the old one until its next pull.
        (puller,) = transports[leaver]._pullers
        puller.pin = "a-pin-the-server-moved-on-from"
        await subs[leaver].cancel()
        assert await server_pin() == pinned
    finally:
        for transport in transports:
            await transport.aclose()


class _BatchLimitedServer(NatsServer):
    """A nats-server whose JetStream refuses pull requests for more than 100 messages."""

    def _write_config(self) -> None:
        super()._write_config()
        text = self.config_path.read_text()
        limited = text.replace("jetstream {", "jetstream { limits { max_request_batch: 100 },")
        self.config_path.write_text(limited)


async def test_a_server_batch_limit_below_prefetch_is_obeyed() -> None:
    with _BatchLimitedServer(name="batch-limit") as server:
        transport = NatsTransport(
            server.url, prefix="bl", stream=StreamSettings(name="BL"), connect_timeout=10.0
        )
        async with transport:
            got = Collector()
            await transport.subscribe("conformance.>", got, group="g")  # prefetch 256
            clock = HybridClock()
            for i in range(300):
                await transport.send(make_envelope(clock, f"b-{i}"))
            assert await transport.flush(15) == 0
            await got.wait_count(300)

"""Gateway sources and targets of kind ``mqtt`` and ``amqp``: the config schema and its
problems, and a real ``tidings serve`` process taking events in from Mosquitto and RabbitMQ
and routing them out to both (brokers of the test: its own Mosquitto, the shared RabbitMQ
with names of its own)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiomqtt
import pytest
from aio_pika.abc import AbstractIncomingMessage
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import tidings
from tidings.gateway import ConfigError, Gateway, parse_config
from tidings.gateway.config import SourceConfig, TargetConfig
from tidings.testing.brokers import Mosquitto, wait_until

WAIT = 30.0


# -- config -----------------------------------------------------------------------------------

GOOD = """\
sources:
  - mqtt: mqtt://127.0.0.1:1883
    subscribe: [sensors/+/temp, "alarms/#"]
    wrap_type: sensors.raw
    protocol: "3.1.1"
    client_id: gw-sensors
  - amqp: amqp://guest:guest@127.0.0.1:5672/
    queues: [legacy-in]
    exchange: legacy
    bind: ["legacy.>"]
    types: ["com.example.>"]
routes:
  - name: out
    from: sensors.>
    to:
      - {mqtt: alerts/high, url: "mqtt://127.0.0.1:1883", retry: {max_attempts: 2}}
      - {amqp: legacy, url: "amqp://guest:guest@127.0.0.1:5672/", routing_key: legacy.alert}
"""


def test_sources_and_broker_targets_parse() -> None:
    config = parse_config([("g.yaml", GOOD)])
    assert config.broker_sources == (
        SourceConfig(
            "mqtt",
            "mqtt://127.0.0.1:1883",
            subscribe=("sensors/+/temp", "alarms/#"),
            wrap_type="sensors.raw",
            protocol="3.1.1",
            client_id="gw-sensors",
        ),
        SourceConfig(
            "amqp",
            "amqp://guest:guest@127.0.0.1:5672/",
            queues=("legacy-in",),
            exchange="legacy",
            bind=("legacy.>",),
            types=("com.example.>",),
        ),
    )
    mqtt, amqp = config.routes[0].to
    assert mqtt == TargetConfig("mqtt", "alerts/high", max_attempts=2, url="mqtt://127.0.0.1:1883")
    assert (amqp.kind, amqp.address, amqp.routing_key) == ("amqp", "legacy", "legacy.alert")


BAD = """\
sources:
  - mqtt: http://x
    subscribe: [a//b]
  - amqp: amqp://h/
  - kafka: x
  - mqtt: mqtt://h
    protocol: "4"
    colour: red
routes:
  - name: r
    from: a
    to:
      - {mqtt: "alerts/#"}
      - {amqp: ex, url: "mqtt://h", routing_key: k}
"""


def test_every_broker_problem_is_listed_with_its_position() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config([("bad.yaml", BAD)])
    found = {(p.line, p.column): p.message for p in caught.value.problems}
    assert "must be a URL starting mqtt://" in found[(2, 11)]
    assert "level ''" in found[(3, 17)]
    assert "needs 'queues'" in found[(4, 5)]
    assert "unknown source kind 'kafka'" in found[(5, 5)]
    assert "{amqp: URL, queues: [NAMES]}" in found[(5, 5)]
    assert "needs 'subscribe'" in found[(6, 5)]
    assert 'protocol is "5" or "3.1.1"' in found[(7, 15)]
    assert "unknown key 'colour'" in found[(8, 5)]
    assert "level '#'" in found[(13, 16)]
    assert "needs 'url'" in found[(13, 9)]
    assert "must be a URL starting amqp://" in found[(14, 25)]
    assert len(caught.value.problems) == 10


async def test_a_source_whose_broker_is_unreachable_fails_the_start(tmp_path: Path) -> None:
    from tidings.exceptions import TransportUnavailableError
    from tidings.testing.nats_server import free_port

    config = parse_config(
        [("g.yaml", f"sources:\n  - {{mqtt: 'mqtt://127.0.0.1:{free_port()}', subscribe: [x]}}\n")]
    )
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        gateway = Gateway(bus, config)
        with pytest.raises(TransportUnavailableError):
            await gateway.start()
        assert not gateway.ready


# -- through a real gateway -------------------------------------------------------------------


@asynccontextmanager
async def serving(cwd: Path, config: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``tidings serve CONFIG --listen 127.0.0.1:0``, once it printed that it serves."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli",
        "serve",
        str(config),
        "--listen",
        "127.0.0.1:0",
        cwd=cwd,
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(WAIT):
            while not lines or not lines[-1].startswith("Ctrl-C"):
                line = await proc.stdout.readline()
                assert line, f"tidings serve exited early: {lines}"
                lines.append(line.decode())
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_served_gateway_takes_events_from_both_brokers_and_routes_to_both(
    tmp_path: Path, mosquitto: Mosquitto, amqp_url: str, unique: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(unique, aio_pika.ExchangeType.TOPIC, durable=True)
    out_queue = await channel.declare_queue(f"{unique}.out", auto_delete=True)
    await out_queue.bind(exchange, "legacy.alert")
    from_gateway: list[AbstractIncomingMessage] = []

    async def take(message: AbstractIncomingMessage) -> None:
        from_gateway.append(message)

    await out_queue.consume(take, no_ack=True)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""\
store: sqlite:///{tmp_path}/events.db
http: {{listen: 127.0.0.1:0}}
sources:
  - {{mqtt: "{mosquitto.url}", subscribe: ["sensors/#"], wrap_type: sensors.raw}}
  - amqp: "{amqp_url}"
    queues: ["{unique}.in"]
    exchange: "{unique}"
    bind: ["legacy.in.>"]
    dead_letter_exchange: "{unique}.dead"
routes:
  - name: hot
    from: sensors.>
    when: data.celsius > 30
    to:
      - {{mqtt: alerts/hot, url: "{mosquitto.url}"}}
      - {{amqp: "{unique}", url: "{amqp_url}", routing_key: legacy.alert}}
  - name: from-legacy
    from: legacy.in.>
    to: [{{mqtt: legacy/seen, url: "{mosquitto.url}"}}]
"""
    )
    received: list[aiomqtt.Message] = []
    try:
        v5 = aiomqtt.ProtocolVersion.V5
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, protocol=v5) as watcher:
            await watcher.subscribe("alerts/#", qos=1)
            await watcher.subscribe("legacy/#", qos=1)

            async def watch() -> None:
                async for message in watcher.messages:
                    received.append(message)

            watching = asyncio.create_task(watch())
            async with serving(tmp_path, config) as proc:
                async with aiomqtt.Client("127.0.0.1", mosquitto.port) as device:
                    await device.publish("sensors/t1", b'{"celsius": 35}', qos=1)
                    await device.publish("sensors/t2", b'{"celsius": 20}', qos=1)
                event = CloudEvent(
                    attributes={
                        "id": "legacy-1",
                        "source": "urn:mainframe",
                        "type": "com.example.legacy",
                        "specversion": "1.0",
                    },
                    data={"n": 1},
                )
                await exchange.publish(
                    aio_pika.Message(
                        JSONFormat().write(event), content_type="application/cloudevents+json"
                    ),
                    routing_key="legacy.in.x",
                )
                await wait_until(lambda: len(received) == 2 and len(from_gateway) == 1)
                proc.send_signal(signal.SIGINT)
                assert await asyncio.wait_for(proc.wait(), WAIT) == 0
            watching.cancel()
        by_topic = {m.topic.value: m for m in received}
        hot = by_topic["alerts/hot"]
        assert isinstance(hot.payload, bytes)
        assert JSONFormat().read_data(hot.payload, None) == {"celsius": 35}
        user: dict[str, Any] = dict(hot.properties.UserProperty)  # type: ignore[union-attr]
        assert user["type"] == "sensors.raw"
        assert user["subject"] == "sensors/t1"
        seen: dict[str, Any] = dict(by_topic["legacy/seen"].properties.UserProperty)  # type: ignore[union-attr]
        assert (seen["id"], seen["source"]) == ("legacy-1", "urn:mainframe")
        headers = from_gateway[0].headers or {}
        assert headers["cloudEvents:subject"] == "sensors/t1"
        async with tidings.Bus(store=f"sqlite:///{tmp_path}/events.db") as bus:
            store = bus.store
            assert store is not None
            stored = {r.envelope.topic for r in await store.read(unknown="raw")}
        assert {"sensors.t1", "sensors.t2", "legacy.in.x"} <= stored
    finally:
        cleanup = await connection.channel()
        await cleanup.queue_delete(f"{unique}.in")
        await cleanup.exchange_delete(unique)
        await cleanup.exchange_delete(f"{unique}.dead")
        await connection.close()


async def test_a_broker_target_that_fails_is_retried_then_dead_lettered(
    tmp_path: Path, amqp_url: str, unique: str
) -> None:
    config = parse_config(
        [
            (
                "g.yaml",
                f"""\
routes:
  - name: legacy
    from: orders.>
    dead_letter: audit.dead
    to:
      - amqp: "{unique}.missing"
        url: "{amqp_url}"
        retry: {{max_attempts: 2, backoff: 10ms}}
""",
            )
        ]
    )
    from tidings.event import Envelope

    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        letters: list[dict[str, Any]] = []
        bus.subscribe("audit.dead", letters.append)
        gateway = Gateway(bus, config)
        await gateway.start()
        await gateway.accept([Envelope("orders.placed", {"n": 1}, 1_000, source="t", _id="o1")])
        await wait_until(lambda: len(letters) == 1)
        await gateway.stop(5)
    [letter] = letters
    assert (letter["route"], letter["attempts"], letter["status"]) == ("legacy", 2, None)
    assert "must exist" in letter["error"]
    assert gateway.sender.outcomes[("amqp", "retried")] == 1
    assert gateway.sender.outcomes[("amqp", "dead_lettered")] == 1

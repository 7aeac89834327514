"""The MQTT and AMQP bridges against raw aiomqtt and raw aio-pika doing the same work.

Run: ``.venv/bin/python benchmarks/bench_bridges.py [--messages 5000] [--rounds 2]
[--only q1 q2 q3]``

Starts its own Mosquitto (``/usr/sbin/mosquitto``, a free loopback port, in-flight window
1,000) and uses the RabbitMQ at ``TIDINGS_TEST_AMQP_URL`` (default
``amqp://guest:guest@127.0.0.1:5672/``; its rows are left out when none answers). Each
figure is the best of ``--rounds`` runs, messages per second:

- **Q1 MQTT in** (target >= 5,000/s): N messages (JSON, QoS 1) wait in the persistent
  session of a client that is away (a publisher put them there before the clock starts, so
  it is not measured); the clock runs from the client's connecting to the last message
  handled. The broker keeps up to 1,000 unacknowledged messages in flight to it (its
  ``max_inflight_messages``; the client's MQTT 5 Receive Maximum is left at 65,535), the
  same for every row. *tidings*: the bridge takes the messages waiting at once onto a bus
  with a SQLite log (``emit_envelope`` each, appended in one transaction, handlers run)
  and acknowledges them only then; *tidings, no log*: the same onto a bus without a store.
  *raw aiomqtt* does the same work by hand: the messages waiting at once (up to 256)
  decoded, written to a SQLite table in one transaction (WAL, ``synchronous = NORMAL``,
  on a worker thread), then each acknowledged (paho's manual acks, as the bridge); *raw
  aiomqtt, auto-ack*: receive, decode, count, paho acknowledging on receipt (the floor).
- **Q2 AMQP out** (target >= 0.8x raw): N events to a topic exchange (bound to a queue) with
  publisher confirms, in two modes, each against raw aio-pika in the same mode. *tidings*:
  ``await bus.emit(...)`` per event on a bus without a store; the bridge's queued
  subscription publishes them; the clock stops at the last confirm. *raw aio-pika*: the
  same message (CloudEvents headers, persistent) through ``exchange.publish``.
  *confirm each*: the bridge with ``window=1`` (each event confirmed before the next is
  sent), raw awaiting each publish. *256 in flight*: the bridge with its default
  ``window=256`` (the events waiting at once, up to 256, published together, every
  confirm awaited before the next window), raw publishing 256 at a time with
  ``asyncio.gather``. The tidings rows carry the median of the per-round ratios (tidings
  over raw in the same round) besides the best figures.
- **Q3 AMQP in**: N messages waiting in a queue; consumed with manual acks (prefetch 256).
  *raw aio-pika*: decode the JSON, ack each. *tidings*: the bridge onto a bus with a SQLite
  log, ack after acceptance; *tidings, no log*: the same onto a bus without a store.

The machine's cores are shared with other work: figures are indicative; compare rows of
one run.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import tidings
from _harness import Row
from _samples import order_data
from tidings.bridges.amqp import AmqpBridge
from tidings.bridges.mqtt import MqttBridge
from tidings.testing.brokers import Mosquitto

Q2_EACH = "Q2 AMQP out, confirm each"
Q2_PIPED = "Q2 AMQP out, 256 in flight"
BASELINES = {
    "Q1 MQTT in": "raw aiomqtt",
    Q2_EACH: "raw aio-pika",
    Q2_PIPED: "raw aio-pika",
    "Q3 AMQP in": "raw aio-pika",
}
"""The row each scenario's *vs baseline* ratio divides by (for ``run.py``)."""

AMQP_URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TIMEOUT = 300.0


def _session() -> Any:
    properties: Any = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    return properties


async def _preload_mqtt(broker: Mosquitto, client_id: str, topic: str, n: int) -> None:
    """Make ``client_id``'s persistent session (subscribed to ``topic``) hold ``n`` messages."""
    async with _connect_session(broker, client_id) as client:
        await client.subscribe(topic, qos=1)
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5, max_inflight_messages=1000
    ) as publisher:
        publisher.pending_calls_threshold = n + 1  # no warning per 10 waiting PUBACKs
        body = msgspec.json.encode({"device": "d1", "celsius": 21.5})
        sends = [publisher.publish(topic, body, qos=1) for _ in range(n)]
        for start in range(0, n, 500):
            await asyncio.gather(*sends[start : start + 500])


Rates = tuple[float, float]
"""Messages per wall-clock second, and per second of this process's CPU time."""


class _Clock:
    """Wall-clock and process CPU time from creation to :meth:`rates`."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def rates(self, n: int) -> Rates:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return n / wall, n / cpu


def _connect_session(broker: Mosquitto, client_id: str) -> aiomqtt.Client:
    """A client resuming ``client_id``'s persistent session (Receive Maximum left at MQTT
    5's default, 65,535: the broker's window of 1,000 bounds what is in flight)."""
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=_session(),
    )


async def raw_mqtt_in_auto_ack(broker: Mosquitto, n: int) -> Rates:
    """Receive, decode, count; paho acknowledges each message on receipt (the floor)."""
    client_id = f"raw-{uuid.uuid4().hex[:8]}"
    await _preload_mqtt(broker, client_id, "bench/raw", n)
    count = 0
    clock = _Clock()
    async with _connect_session(broker, client_id) as client:
        async with asyncio.timeout(TIMEOUT):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                msgspec.json.decode(message.payload)
                count += 1
                if count == n:
                    break
    return clock.rates(n)


class _RawLog:
    """What a hand-written consumer would keep: one SQLite table (WAL, ``synchronous =
    NORMAL``, as the tidings log), rows written on one worker thread, one transaction per
    batch."""

    def __init__(self, path: Path) -> None:
        self.worker = concurrent.futures.ThreadPoolExecutor(1)
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute(
            "CREATE TABLE events (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
            "topic TEXT NOT NULL, time INTEGER NOT NULL, payload TEXT NOT NULL)"
        )

    def _write(self, rows: list[tuple[str, str, int, str]]) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT INTO events (id, topic, time, payload) VALUES (?, ?, ?, ?)", rows
            )

    async def write(self, rows: list[tuple[str, str, int, str]]) -> None:
        await asyncio.get_running_loop().run_in_executor(self.worker, self._write, rows)

    def close(self) -> None:
        self.worker.shutdown()
        self.conn.close()


async def raw_mqtt_in(broker: Mosquitto, n: int, path: Path) -> Rates:
    """The bridge's work by hand: receive the messages waiting at once (up to 256), decode
    each, write them to SQLite in one transaction, then acknowledge each (manual acks)."""
    client_id = f"raw-{uuid.uuid4().hex[:8]}"
    await _preload_mqtt(broker, client_id, "bench/raw", n)
    log = _RawLog(path)
    count = 0
    clock = _Clock()
    try:
        client = _connect_session(broker, client_id)
        inner = client._client  # paho's manual_ack, as the bridge (aiomqtt issue #345)
        inner.manual_ack_set(True)
        async with client:
            messages = client.messages
            async with asyncio.timeout(TIMEOUT):
                async for message in messages:
                    batch = [message]
                    while len(batch) < 256 and len(messages):
                        batch.append(await anext(messages))
                    rows = []
                    for taken in batch:
                        assert isinstance(taken.payload, bytes)
                        msgspec.json.decode(taken.payload)
                        payload = taken.payload.decode()
                        rows.append((uuid.uuid4().hex, taken.topic.value, time.time_ns(), payload))
                    await log.write(rows)
                    for taken in batch:
                        inner.ack(taken.mid, taken.qos)
                    count += len(batch)
                    if count >= n:
                        break
        return clock.rates(n)
    finally:
        log.close()


def _count_to(n: int) -> tuple[Callable[[object], None], asyncio.Event]:
    """A handler that counts what it is given, and the event it sets at the ``n``-th."""
    done = asyncio.Event()
    handled = 0

    def handle(payload: object) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            done.set()

    return handle, done


async def bridge_mqtt_in(broker: Mosquitto, n: int, store: str | None) -> Rates:
    client_id = f"bridge-{uuid.uuid4().hex[:8]}"
    await _preload_mqtt(broker, client_id, "bench/bridge", n)
    handle, done = _count_to(n)
    async with tidings.Bus(store=store) as bus:
        bus.subscribe("bench.bridge", handle)
        clock = _Clock()
        async with MqttBridge(bus, broker.url, subscribe=["bench/bridge"], client_id=client_id):
            async with asyncio.timeout(TIMEOUT):
                await done.wait()
            return clock.rates(n)


async def _amqp_names(connection: aio_pika.abc.AbstractConnection) -> tuple[str, str]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    channel = await connection.channel()
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"{name}.q", durable=True)
    await queue.bind(exchange, "bench.#")
    await channel.close()
    return name, f"{name}.q"


async def _amqp_drop(connection: aio_pika.abc.AbstractConnection, exchange: str) -> None:
    channel = await connection.channel()
    await channel.queue_delete(f"{exchange}.q")
    await channel.exchange_delete(exchange)
    with contextlib.suppress(Exception):
        await channel.exchange_delete(f"{exchange}.dead")
    await channel.close()


def _the_message() -> aio_pika.Message:
    """The message the bridge sends for one event (CloudEvents headers, persistent)."""
    sample = AmqpBridge(url=AMQP_URL)
    with tidings.Bus() as bus:
        envelope = bus.publish(order_data("o1"), topic="bench.order")
    return sample.encode(envelope)


async def raw_amqp_out(n: int, window: int) -> Rates:
    connection = await aio_pika.connect(AMQP_URL)
    name, _ = await _amqp_names(connection)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(name)
        sample = _the_message()

        def message() -> aio_pika.Message:
            return aio_pika.Message(
                sample.body,
                headers=sample.headers,
                content_type=sample.content_type,
                message_id=sample.message_id,
                timestamp=sample.timestamp,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )

        clock = _Clock()
        if window == 1:
            for _ in range(n):
                await exchange.publish(message(), routing_key="bench.order")
        else:
            for start in range(0, n, window):
                await asyncio.gather(
                    *(
                        exchange.publish(message(), routing_key="bench.order")
                        for _ in range(start, min(n, start + window))
                    )
                )
        return clock.rates(n)
    finally:
        await _amqp_drop(connection, name)
        await connection.close()


async def bridge_amqp_out(n: int, window: int) -> Rates:
    connection = await aio_pika.connect(AMQP_URL)
    name, _ = await _amqp_names(connection)
    try:
        async with (
            tidings.Bus() as bus,
            AmqpBridge(
                bus,
                AMQP_URL,
                exchange=name,
                publish=["bench.>"],
                declare=False,
                dead_letter_exchange=None,
                window=window,
            ) as bridge,
        ):
            order = order_data("o1")
            clock = _Clock()
            for _ in range(n):
                await bus.emit(order, topic="bench.order")
            await _until_published(bridge, n)
            return clock.rates(n)
    finally:
        await _amqp_drop(connection, name)
        await connection.close()


async def _until_published(bridge: AmqpBridge, n: int) -> None:
    """Return once ``bridge`` counted ``n`` events published (confirmed). It has no event to
    await, so this polls, at a pace that follows its rate: half the time the rest should
    take, at least 1 ms. So the figure is off by at most about 1 ms, and the polls cost
    the client a few dozen wake-ups, not one a millisecond (a 1 ms poll costs about as much
    CPU as a confirmed publish when the broker is slow)."""
    loop = asyncio.get_running_loop()
    start, done = loop.time(), bridge.counts.published
    async with asyncio.timeout(TIMEOUT):
        while (left := n - bridge.counts.published) > 0:
            rate = (bridge.counts.published - done) / max(loop.time() - start, 1e-3)
            await asyncio.sleep(min(0.1, max(0.001, left / rate / 2)) if rate else 0.001)


async def _preload_amqp(connection: aio_pika.abc.AbstractConnection, n: int) -> tuple[str, str]:
    name, queue = await _amqp_names(connection)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(name)
    body = msgspec.json.encode(order_data("o1"))
    for start in range(0, n, 500):
        await asyncio.gather(
            *(
                exchange.publish(aio_pika.Message(body), routing_key="bench.order")
                for _ in range(start, min(n, start + 500))
            )
        )
    await channel.close()
    return name, queue


async def raw_amqp_in(n: int) -> Rates:
    connection = await aio_pika.connect(AMQP_URL)
    name, queue_name = await _preload_amqp(connection, n)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=256)
        queue = await channel.get_queue(queue_name)
        done = asyncio.Event()
        count = 0

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count
            msgspec.json.decode(message.body)
            await message.ack()
            count += 1
            if count == n:
                done.set()

        clock = _Clock()
        await queue.consume(take, no_ack=False)
        async with asyncio.timeout(TIMEOUT):
            await done.wait()
        return clock.rates(n)
    finally:
        await _amqp_drop(connection, name)
        await connection.close()


async def bridge_amqp_in(n: int, store: str | None = None) -> Rates:
    connection = await aio_pika.connect(AMQP_URL)
    name, queue_name = await _preload_amqp(connection, n)
    try:
        handle, done = _count_to(n)
        async with tidings.Bus(store=store) as bus:
            bus.subscribe("bench.order", handle)
            clock = _Clock()
            async with AmqpBridge(
                bus,
                AMQP_URL,
                exchange=name,
                queues=[queue_name],
                declare=False,
                dead_letter_exchange=None,
            ) as bridge:
                async with asyncio.timeout(TIMEOUT):
                    await done.wait()
                rates = clock.rates(n)
                async with asyncio.timeout(TIMEOUT):
                    while bridge.counts.acknowledged < n:  # noqa: ASYNC110 - a counter
                        await asyncio.sleep(0.001)
        return rates
    finally:
        await _amqp_drop(connection, name)
        await connection.close()


async def interleaved(
    rounds: int, runs: dict[str, Callable[[], Awaitable[Rates]]]
) -> dict[str, Rates]:
    """Each run ``rounds`` times, interleaved (a, b, c, a, b, c...); the best wall-clock
    figure of each with the CPU figure of that same round."""
    return _best(await _rounds(rounds, runs))


async def _rounds(
    rounds: int, runs: dict[str, Callable[[], Awaitable[Rates]]]
) -> list[dict[str, Rates]]:
    """Each run ``rounds`` times, interleaved (a, b, c, a, b, c...); every round's figures."""
    return [{name: await run() for name, run in runs.items()} for _ in range(rounds)]


def _best(rounds: list[dict[str, Rates]]) -> dict[str, Rates]:
    """The best wall-clock figure of each run with the CPU figure of that same round."""
    found: dict[str, Rates] = {}
    for figures in rounds:
        for name, rates in figures.items():
            if name not in found or rates[0] > found[name][0]:
                found[name] = rates
    return found


def _median_ratios(rounds: list[dict[str, Rates]], ours: str, base: str) -> dict[str, float]:
    """The medians of the per-round ratios of ``ours`` over ``base``: wall and CPU."""
    wall = statistics.median(r[ours][0] / r[base][0] for r in rounds)
    cpu = statistics.median(r[ours][1] / r[base][1] for r in rounds)
    return {"median round ratio, wall": wall, "median round ratio, CPU": cpu}


def _row(
    scenario: str, library: str, rates: Rates, note: str, extra: dict[str, float] | None = None
) -> Row:
    return Row(
        scenario,
        library,
        "messages/s",
        rates[0],
        "/s",
        note,
        {"per CPU-second of the client": rates[1], **(extra or {})},
    )


async def _amqp_reachable() -> bool:
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception:
        return False
    await connection.close()
    return True


SCENARIOS = ("q1", "q2", "q3")


async def measure(
    messages: int, rounds: int, tmp: Path, only: Sequence[str] = SCENARIOS
) -> list[Row]:
    """The rows of the scenarios ``only`` names (``q1``, ``q2``, ``q3``)."""
    rows: list[Row] = []
    logs = iter(range(1_000_000))
    if "q1" in only:
        rows += await _mqtt_in(messages, rounds, tmp, logs)
    if {"q2", "q3"} & set(only) and not await _amqp_reachable():
        print(f"Q2/Q3 left out: no RabbitMQ at {AMQP_URL}", file=sys.stderr)
        return rows
    if "q2" in only:
        rows += await _amqp_out(messages, rounds)
    if "q3" in only:
        rows += await _amqp_in(messages, rounds, tmp, logs)
    return rows


async def _mqtt_in(messages: int, rounds: int, tmp: Path, logs: Iterator[int]) -> list[Row]:
    broker = Mosquitto()
    broker.start()
    try:
        found = await interleaved(
            rounds,
            {
                "raw": lambda: raw_mqtt_in(broker, messages, tmp / f"q1-raw-{next(logs)}.db"),
                "log": lambda: bridge_mqtt_in(
                    broker, messages, f"sqlite:///{tmp}/q1-{next(logs)}.db"
                ),
                "bare": lambda: bridge_mqtt_in(broker, messages, None),
                "auto": lambda: raw_mqtt_in_auto_ack(broker, messages),
            },
        )
    finally:
        broker.close()
    note = f"QoS 1, {messages:,} messages"
    return [
        _row("Q1 MQTT in", "tidings", found["log"], f"bridge -> bus -> SQLite log; {note}"),
        _row("Q1 MQTT in", "tidings, no log", found["bare"], f"bridge -> bus; {note}"),
        _row(
            "Q1 MQTT in",
            "raw aiomqtt",
            found["raw"],
            f"receive, decode, SQLite write per burst, manual ack after; {note}",
        ),
        _row(
            "Q1 MQTT in",
            "raw aiomqtt, auto-ack",
            found["auto"],
            f"receive, decode, acked on receipt, no log; {note}",
        ),
    ]


async def _amqp_out(messages: int, rounds: int) -> list[Row]:
    note = f"{messages:,} messages"
    q2 = await _rounds(
        rounds,
        {
            "tidings": lambda: bridge_amqp_out(messages, 1),
            "raw": lambda: raw_amqp_out(messages, 1),
            "tidings piped": lambda: bridge_amqp_out(messages, 256),
            "raw piped": lambda: raw_amqp_out(messages, 256),
        },
    )
    found = _best(q2)
    return [
        _row(
            Q2_EACH,
            "tidings",
            found["tidings"],
            f"emit -> bridge (window=1) -> confirm; {note}",
            _median_ratios(q2, "tidings", "raw"),
        ),
        _row(Q2_EACH, "raw aio-pika", found["raw"], f"same message, await each; {note}"),
        _row(
            Q2_PIPED,
            "tidings",
            found["tidings piped"],
            f"emit -> bridge (window=256, the default) -> confirms; {note}",
            _median_ratios(q2, "tidings piped", "raw piped"),
        ),
        _row(
            Q2_PIPED,
            "raw aio-pika",
            found["raw piped"],
            f"same message, gather 256 publishes at a time; {note}",
        ),
    ]


async def _amqp_in(messages: int, rounds: int, tmp: Path, logs: Iterator[int]) -> list[Row]:
    note = f"{messages:,} messages"
    found = await interleaved(
        rounds,
        {
            "log": lambda: bridge_amqp_in(messages, f"sqlite:///{tmp}/q3-{next(logs)}.db"),
            "tidings": lambda: bridge_amqp_in(messages),
            "raw": lambda: raw_amqp_in(messages),
        },
    )
    return [
        _row("Q3 AMQP in", "tidings", found["log"], f"bridge -> bus -> SQLite log; {note}"),
        _row(
            "Q3 AMQP in", "tidings, no log", found["tidings"], f"bridge -> bus, ack after; {note}"
        ),
        _row("Q3 AMQP in", "raw aio-pika", found["raw"], f"consume, decode, ack; {note}"),
    ]


def run(quick: bool = False) -> list[Row]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tidings-bench-bridges-") as tmp:
        return asyncio.run(measure(1_000 if quick else 5_000, 1 if quick else 2, Path(tmp)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, default=SCENARIOS, help="run these scenarios"
    )
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tidings-bench-bridges-") as tmp:
        rows = asyncio.run(measure(args.messages, args.rounds, Path(tmp), args.only))
    raw_of = {"Q1 MQTT in": "raw aiomqtt"}
    figures = {(row.scenario, row.library): row for row in rows}
    cpu_key = "per CPU-second of the client"
    for row in rows:
        base = figures.get((row.scenario, raw_of.get(row.scenario, "raw aio-pika")))
        cpu = row.extra[cpu_key]
        ratio = cpu_ratio = ""
        if base is not None:
            ratio = f"{row.value / base.value:.2f}x"
            cpu_ratio = f"{cpu / base.extra[cpu_key]:.2f}x"
        medians = " ".join(f"[{k}: {v:.2f}x]" for k, v in row.extra.items() if k != cpu_key)
        print(
            f"{row.scenario:26} {row.library:16} {row.value:7,.0f}/s {ratio:6} "
            f"{cpu:7,.0f}/CPU-s {cpu_ratio:6} {row.note} {medians}"
        )
    each = figures.get((Q2_EACH, "raw aio-pika"))
    piped = figures.get((Q2_PIPED, "tidings"))
    if each is not None and piped is not None:
        print(
            f"tidings (window=256) over raw aio-pika confirm each: "
            f"{piped.value / each.value:.2f}x wall, "
            f"{piped.extra[cpu_key] / each.extra[cpu_key]:.2f}x per CPU-second"
        )


if __name__ == "__main__":
    main()

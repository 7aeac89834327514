"""The processes of a scenario: ``python -m tidings.chaos.worker ROLE CONFIG_JSON``.

- ``publisher``: publishes ``ChaosEvent(key, seq)`` at a rate for a duration, through a bus
  with a NATS transport (and, with ``forward``, a SQLite log: store and forward), and
  records each publish with its outcome (see :mod:`tidings.chaos.history`);
- ``consumer``: a bus subscribed with a consumer group; records each delivery, and with
  ``ledger`` charges each event in a shared SQLite ledger, idempotently by event id (the
  check and the charge in one transaction); prints ``ready`` once its subscription is live
  and stops cleanly on SIGTERM;
- ``http-publisher``: posts CloudEvents to the gateway (``tidings serve``) instead;
- ``webhook``: a slow webhook target for the gateway: waits ``delay`` per request, then
  records the delivery and answers 200.

Each writes only its own history file, one flushed line per record.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from typing import Any

import tidings
from tidings.chaos.handler_faults import Drop, Duplicate, ErrorRate, Latency
from tidings.chaos.history import Delivered, HistoryWriter, Outcome, Published
from tidings.event import Envelope
from tidings.exceptions import PublishError, PublishOutcomeUnknownError
from tidings.forwarding import backlog
from tidings.middleware.base import Middleware

__all__ = ("ChaosEvent", "main")

TOPIC = "chaos.events"
STREAM = "CHAOS"
PREFIX = "chaos"


@tidings.event(TOPIC)
@dataclass(frozen=True)
class ChaosEvent:
    key: str
    seq: int
    amount: int = 1


def _transport(config: dict[str, Any]) -> Any:
    from tidings.transports import DeliveryPolicy
    from tidings.transports.nats import NatsTransport, StreamSettings

    return NatsTransport(
        config["servers"],
        prefix=PREFIX,
        stream=StreamSettings(name=STREAM, replicas=config.get("replicas", 1)),
        policy=DeliveryPolicy(
            exclusive=config.get("exclusive", True),
            ack_wait=2.0,
            takeover=1.0,
            backoff=0.1,
            backoff_max=1.0,
            max_deliver=1000,
            start="all",
        ),
        # One unacknowledged event per group: a redelivery comes before anything later, so
        # order per key holds across a group's processes through kills and stalls.
        max_ack_pending=1,
        publish_timeout=math.inf if config.get("forward") else 10.0,
        ack_timeout=0.5,
        connect_timeout=20.0,
        name=config["name"],
    )


def _ready() -> None:
    """Tell the runner this process is up (its subscriptions live)."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def _outcome_of(exc: BaseException) -> Outcome:
    return "unknown" if isinstance(exc, PublishOutcomeUnknownError) else "failed"


async def _pace(start: float, n: int, rate: float) -> None:
    delay = start + n / rate - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def publisher(config: dict[str, Any]) -> None:
    history = HistoryWriter(config["history"])
    name, keys, rate = config["name"], config["keys"], config["rate"]
    count = max(1, int(rate * config["duration"]))
    forward = config.get("forward", False)
    bus = tidings.Bus(
        source=name,
        transport=_transport(config),
        store=tidings.SQLiteStore(config["store"]) if forward else None,
        forward=tidings.StoreAndForward(checkpoint_interval=0.2) if forward else None,
    )
    seqs = [0] * keys
    async with bus:
        _ready()
        start = time.monotonic()
        for n in range(count):
            await _pace(start, n, rate)
            k = n % keys
            key = f"{name}-k{k}"
            seq = seqs[k]
            seqs[k] += 1
            event = ChaosEvent(key, seq)
            began = time.time()
            outcome: Outcome = "ok"
            try:
                if forward:
                    event_id = bus.publish(event, key=key).id
                else:
                    event_id = (await bus.emit(event, key=key)).envelope.id
            except (PublishError, PublishOutcomeUnknownError) as exc:
                event_id = exc.event_id or f"{name}-unknown-{n}"
                outcome = _outcome_of(exc)
            history.published(Published(event_id, key, seq, outcome, began, name))
        if forward:  # wait (bounded) until the log is forwarded
            store = bus.store
            assert store is not None
            deadline = time.monotonic() + config.get("settle", 30.0)
            while await backlog(store) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    history.close()


def _ledger(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS charges (event_id TEXT, key TEXT, amount INTEGER)")
    return db


def charge(db: sqlite3.Connection, env: Envelope[ChaosEvent]) -> bool:
    """Charge ``env`` unless it was charged before (check and charge in one transaction)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        seen = db.execute("SELECT 1 FROM charges WHERE event_id = ?", (env.id,)).fetchone()
        if seen is None:
            db.execute(
                "INSERT INTO charges VALUES (?, ?, ?)",
                (env.id, env.payload.key, env.payload.amount),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return seen is None


def _handler_faults(config: dict[str, Any]) -> list[Middleware]:
    made: list[Middleware] = []
    for kind, value in config.get("handler_faults", []):
        if kind == "latency":
            made.append(Latency(value, seed=1))
        elif kind == "error_rate":
            made.append(ErrorRate(value, seed=2))
        elif kind == "drop":
            made.append(Drop(value, seed=3))
        elif kind == "duplicate":
            made.append(Duplicate(value, seed=4))
    return made


async def consumer(config: dict[str, Any]) -> None:
    history = HistoryWriter(config["history"])
    group, name = config["group"], config["name"]
    ledger = _ledger(config["ledger"]) if config.get("ledger") else None
    bus = tidings.Bus(source=name, transport=_transport(config))

    async def handle(env: Envelope[ChaosEvent]) -> None:
        history.delivered(
            Delivered(env.id, env.payload.key, env.payload.seq, group, name, time.time())
        )
        if ledger is not None:
            charge(ledger, env)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with bus:
        bus.subscribe(ChaosEvent, handle, group=group, middleware=_handler_faults(config))
        await bus.start()
        _ready()
        await stop.wait()
    history.close()


async def http_publisher(config: dict[str, Any]) -> None:
    import httpx

    history = HistoryWriter(config["history"])
    name, keys, rate = config["name"], config["keys"], config["rate"]
    count = max(1, int(rate * config["duration"]))
    seqs = [0] * keys
    async with httpx.AsyncClient(base_url=config["gateway"], timeout=5.0) as client:
        _ready()
        start = time.monotonic()
        for n in range(count):
            await _pace(start, n, rate)
            k = n % keys
            key, seq = f"{name}-k{k}", seqs[k]
            seqs[k] += 1
            event_id = f"{name}-{n}"
            began = time.time()
            outcome: Outcome
            try:
                response = await client.post(
                    "/events",
                    json={"key": key, "seq": seq, "amount": 1},
                    headers={
                        "ce-specversion": "1.0",
                        "ce-id": event_id,
                        "ce-source": name,
                        "ce-type": TOPIC,
                        "ce-partitionkey": key,
                        "content-type": "application/json",
                    },
                )
                outcome = "ok" if response.status_code == 202 else "failed"
            except httpx.TimeoutException:
                outcome = "unknown"
            except httpx.HTTPError:
                outcome = "failed"
            history.published(Published(event_id, key, seq, outcome, began, name))
    history.close()


async def webhook(config: dict[str, Any]) -> None:
    history = HistoryWriter(config["history"])
    delay, name = config["delay"], config["name"]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                await asyncio.sleep(delay)
                data = json.loads(body) if body else {}
                if "data" in data and "specversion" in data:  # structured mode
                    headers["ce-id"] = data.get("id", "")
                    data = data["data"]
                history.delivered(
                    Delivered(
                        headers.get("ce-id", "?"),
                        str(data.get("key", "")),
                        int(data.get("seq", -1)),
                        "webhook",
                        name,
                        time.time(),
                    )
                )
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", config["port"])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        _ready()
        await stop.wait()
    history.close()


_ROLES = {
    "publisher": publisher,
    "consumer": consumer,
    "http-publisher": http_publisher,
    "webhook": webhook,
}


def main(argv: list[str] | None = None) -> None:
    """``ROLE CONFIG_JSON``: run one scenario process."""
    role, raw = (argv if argv is not None else sys.argv[1:])[:2]
    asyncio.run(_ROLES[role](json.loads(raw)))


if __name__ == "__main__":
    main()

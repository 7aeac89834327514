"""How long the MQTT bridge holds the event loop while it appends to a SQLite log inline.

Run: ``.venv/bin/python benchmarks/_mqtt_loop_hold.py [--messages 5000] [--rounds 3]``

N messages (QoS 1 CloudEvents of ~150 bytes) wait in a persistent session of a Mosquitto of
its own; a bridge onto a bus takes them (bursts of up to 256, each appended in one
transaction). Alternating rounds: *log* (a bus with a SQLite log, WAL, ``synchronous`` as
the store's default) and *no log* (the same bus without a store). Measured in each round:

- each ``store.append`` call (the part that runs inline on the loop): its size, wall time
  and this process's CPU time (``time.process_time``, which load on other cores does not
  inflate);
- the loop's lateness: a probe task sleeping 1 ms at a time records how late it wakes (what
  any other task on the loop waits at worst), in both modes.

Prints the median over rounds of each figure. Wall figures on a shared machine are
indicative; the CPU figures are the ones to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiomqtt
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import tidings
from tidings.bridges.mqtt import MqttBridge
from tidings.event import Envelope
from tidings.store import SQLiteStore
from tidings.testing.brokers import Mosquitto, wait_until

TOPIC = "hold/x"
PROBE = 0.001  # seconds the probe sleeps each time


class TimedStore(SQLiteStore):
    """A SQLite log recording, for each ``append`` call, its size, wall and CPU seconds."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[tuple[int, float, float]] = []

    async def append(self, envelopes: Iterable[Envelope[Any]], **options: Any) -> list[int]:
        batch = list(envelopes)
        wall, cpu = time.perf_counter(), time.process_time()
        positions = await super().append(batch, **options)
        self.calls.append((len(batch), time.perf_counter() - wall, time.process_time() - cpu))
        return positions


async def _preload(broker: Mosquitto, client_id: str, n: int) -> None:
    """Make ``client_id``'s persistent session hold ``n`` CloudEvents."""

    async def ignore(envelopes: object) -> None:
        return None

    async with MqttBridge(sink=ignore, url=broker.url, subscribe=[TOPIC], client_id=client_id):
        pass  # the session now holds what is published for it
    async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=1000) as client:
        client.pending_calls_threshold = n + 1
        attributes = {"source": "bench", "type": "bench.hold", "specversion": "1.0"}
        bodies = [
            JSONFormat().write(
                CloudEvent({**attributes, "id": f"e-{i}"}, {"i": i, "pad": "x" * 40})
            )
            for i in range(n)
        ]
        for start in range(0, n, 500):
            await asyncio.gather(
                *(client.publish(TOPIC, b, qos=1) for b in bodies[start : start + 500])
            )


async def _round(
    broker: Mosquitto, n: int, store: TimedStore | None, name: str
) -> dict[str, float]:
    await _preload(broker, name, n)
    lateness: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            await asyncio.sleep(PROBE)
            lateness.append(loop.time() - started - PROBE)

    cpu, wall = time.process_time(), time.perf_counter()
    async with tidings.Bus(store=store) as bus:
        prober = asyncio.create_task(probe())
        async with MqttBridge(bus, broker.url, subscribe=[TOPIC], client_id=name) as bridge:
            await wait_until(lambda: bridge.counts.acknowledged >= n, timeout=120)
        stop.set()
        await prober
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    lateness.sort()
    out = {
        "run wall ms": wall * 1e3,
        "cpu us/event (whole run)": cpu / n * 1e6,
        "probe wake-ups": len(lateness),
        "loop late p50 ms": lateness[len(lateness) // 2] * 1e3,
        "loop late p99 ms": lateness[int(len(lateness) * 0.99)] * 1e3,
        "loop late max ms": lateness[-1] * 1e3,
    }
    if store is not None:
        sizes = [c[0] for c in store.calls]
        walls = sorted(c[1] for c in store.calls)
        cpus = sorted(c[2] for c in store.calls)
        out |= {
            "appends": len(store.calls),
            "events/append median": statistics.median(sizes),
            "append wall total ms": sum(walls) * 1e3,
            "append wall median ms": statistics.median(walls) * 1e3,
            "append wall max ms": walls[-1] * 1e3,
            "append cpu median ms": statistics.median(cpus) * 1e3,
            "append cpu max ms": cpus[-1] * 1e3,
            "append cpu us/event": sum(cpus) / sum(sizes) * 1e6,
        }
    return out


async def measure(n: int, rounds: int, tmp: Path) -> dict[str, list[dict[str, float]]]:
    broker = Mosquitto()
    broker.start()
    results: dict[str, list[dict[str, float]]] = {"log": [], "no log": []}
    try:
        for r in range(rounds):
            for mode in ("log", "no log") if r % 2 == 0 else ("no log", "log"):
                store = TimedStore(tmp / f"log-{r}.db") if mode == "log" else None
                results[mode].append(await _round(broker, n, store, f"hold-{mode[:2]}-{r}"))
    finally:
        broker.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidings-mqtt-hold-") as tmp:
        results = asyncio.run(measure(args.messages, args.rounds, Path(tmp)))
    print(f"{args.messages:,} messages, median of {args.rounds} rounds (alternating)")
    for mode, rows in results.items():
        print(f"-- {mode}")
        for key in rows[0]:
            print(f"  {key:28} {statistics.median(row[key] for row in rows):10.3f}")


if __name__ == "__main__":
    main()

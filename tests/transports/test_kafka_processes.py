"""A Kafka consumer group of two OS processes, 5,000 keyed events, one SIGKILLed mid-stream."""

from __future__ import annotations

import collections
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.transports.kafka import KafkaTransport

from .group_processes import assert_in_key_order, lines, spawn, wait_until

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("kafka_group_worker.py")
EVENTS = 5_000
KEYS = 20


def _spawn(url: str, prefix: str, out: Path) -> subprocess.Popen[str]:
    return spawn(WORKER, [url, prefix, "g", str(out)], 60)


def _lines(path: Path) -> list[tuple[str, str, int]]:
    return [(event_id, key, int(n)) for event_id, key, n in lines(path)]


async def test_a_killed_member_of_a_two_process_group_loses_nothing(
    kafka_broker: Any, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    prefix = "procs"
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    publisher = KafkaTransport(kafka_broker.url, prefix=prefix, partitions=4)
    clock = HybridClock()
    sent: set[str] = set()
    async with publisher:
        # The topic exists before the workers start, so both join with its partitions.
        first = Envelope("bench.tick", {"n": 0}, clock.now(), "k0", "test", {}, None, clock.node)
        await publisher.publish(first)
        sent.add(first.id)
        workers.extend(_spawn(kafka_broker.url, prefix, path) for path in paths)
        for n in range(1, EVENTS):
            env = Envelope(
                "bench.tick", {"n": n}, clock.now(), f"k{n % KEYS}", "test", {}, None, clock.node
            )
            sent.add(env.id)
            await publisher.send(env)
            if n % 500 == 0:
                assert await publisher.flush(30) == 0
        assert await publisher.flush(30) == 0
        await wait_until(lambda: len(_lines(paths[0])) >= 600, 60, "600 events in worker a")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        killed_with = len(_lines(paths[0]))
        await wait_until(
            lambda: {line[0] for p in paths for line in _lines(p)} >= sent, 120, "every event"
        )
    dead, alive = _lines(paths[0]), _lines(paths[1])
    assert killed_with < EVENTS, "worker a was killed mid-stream"
    assert {line[0] for line in dead + alive} == sent  # every event handled
    # Per-key order: each process saw each key's events in publish order.
    for handled in (dead, alive):
        assert_in_key_order((key, n) for _, key, n in handled)
    # Redelivered: only the dead worker's uncommitted tail of each key (its partition's
    # records after the last commit), never an event it had committed.
    counts = collections.Counter(line[0] for line in dead + alive)
    again = [line for line in dead if counts[line[0]] > 1]
    assert all(count <= 2 for count in counts.values())
    for key in {line[1] for line in again}:
        repeated = min(n for _, k, n in again if k == key)
        assert all(counts[i] > 1 for i, k, n in dead if k == key and n >= repeated)
    assert len(again) <= 128 + 600, len(again)
    workers[1].send_signal(signal.SIGTERM)
    workers[1].wait(timeout=20)

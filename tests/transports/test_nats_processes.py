"""Competing consumers in separate OS processes: one group, 20,000 events, a SIGKILL."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
from pathlib import Path

import pytest

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.testing.nats_server import NatsServer
from tidings.transports.nats import NatsTransport, StreamSettings

from .group_processes import assert_in_key_order, lines, spawn, wait_until

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("group_worker.py")
EVENTS = 20_000


def _spawn(
    server: NatsServer, stream: str, out: Path, ack_wait: float, store: Path | str | None = None
) -> subprocess.Popen[str]:
    args = [server.url, stream.lower(), stream, "g", str(out), str(ack_wait)]
    return spawn(WORKER, [*args, *([] if store is None else [str(store)])], 30)


def _handled(paths: list[Path]) -> list[list[str]]:
    return [p.read_text().split() if p.exists() else [] for p in paths]


async def _publish(
    url: str,
    stream: str,
    count: int,
    progress: list[int],
    keys: int = 0,
    killed: asyncio.Event | None = None,
) -> set[str]:
    """Publish ``count`` events ``{"n": n}``, with ``keys`` keys round robin (0: no key).
    With ``killed``, the last quarter waits until it is set: the kill comes mid-stream
    however slowly the workers go."""
    clock = HybridClock()
    transport = NatsTransport(url, prefix=stream.lower(), stream=StreamSettings(name=stream))
    ids: set[str] = set()
    async with transport:
        for n in range(count):
            if killed is not None and n == count * 3 // 4:
                await asyncio.wait_for(killed.wait(), 90)
            key = f"k{n % keys}" if keys else None
            env = Envelope("bench.tick", {"n": n}, clock.now(), key, "test", {}, None, clock.node)
            ids.add(env.id)
            await transport.send(env)
            progress[0] = n + 1
            if n % 1000 == 0:
                await asyncio.sleep(0)
        assert await transport.flush(60) == 0
    return ids


async def _kill_the_first_to_handle(
    count: int, paths: list[Path], workers: list[subprocess.Popen[str]]
) -> None:
    """SIGKILL the first worker to handle ``count`` events (not a given one: a worker slowed
    by a loaded machine may see far fewer, the other takes what it does not ask for)."""
    await wait_until(
        lambda: any(len(h) >= count for h in _handled(paths)), 60, f"{count:,} in a worker"
    )
    victim = workers[0 if len(_handled(paths)[0]) >= count else 1]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)


async def test_two_processes_in_a_group_share_20000_events_exactly_once(
    nats_server: NatsServer, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    workers.extend(_spawn(nats_server, "PROCS", path, 30.0) for path in paths)
    sent = await _publish(nats_server.url, "PROCS", EVENTS, [0])
    await wait_until(lambda: sum(map(len, _handled(paths))) >= EVENTS, 90, "all events handled")
    for process in workers:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    a, b = _handled(paths)
    assert len(a) + len(b) == EVENTS  # nothing twice...
    assert set(a) | set(b) == sent  # ...and nothing lost
    assert a, "worker a took part"
    assert b, "worker b took part"


async def test_a_killed_group_member_loses_nothing(
    nats_server: NatsServer, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    workers.extend(_spawn(nats_server, "KILLED", path, 2.0) for path in paths)
    progress, killed = [0], asyncio.Event()
    publishing = asyncio.create_task(
        _publish(nats_server.url, "KILLED", EVENTS, progress, killed=killed)
    )
    await _kill_the_first_to_handle(3_000, paths, workers)
    killed_at = progress[0]
    killed.set()
    sent = await asyncio.wait_for(publishing, 120)
    await wait_until(lambda: set().union(*map(set, _handled(paths))) >= sent, 90, "every event")
    a, b = _handled(paths)
    assert killed_at < EVENTS, "the worker was killed mid-run"
    # At least once: every event handled; the duplicates are events worker a handled but
    # had not acked when it died (at most its prefetch plus acks in flight).
    duplicates = sum(c - 1 for c in collections.Counter(a + b).values() if c > 1)
    assert duplicates <= 512
    # Exactly once in effect: applying the handled events idempotently by event id.
    assert len(set(a) | set(b)) == EVENTS


async def test_idempotent_bus_consumers_keep_a_killed_member_from_causing_duplicates(
    nats_server: NatsServer, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    """The same SIGKILL as above, through Bus(transport=..., store=...) with idempotent=True:
    an event the killed worker handled and recorded but never acked is redelivered to the
    other worker, which finds it recorded in the shared store and skips it."""
    store = tmp_path / "shared.db"
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    workers.extend(_spawn(nats_server, "IDEM", path, 2.0, store) for path in paths)
    progress, killed = [0], asyncio.Event()
    publishing = asyncio.create_task(
        _publish(nats_server.url, "IDEM", EVENTS, progress, killed=killed)
    )
    await _kill_the_first_to_handle(3_000, paths, workers)
    killed.set()
    sent = await asyncio.wait_for(publishing, 120)
    await wait_until(lambda: set().union(*map(set, _handled(paths))) >= sent, 90, "every event")
    a, b = _handled(paths)
    duplicates = sum(c - 1 for c in collections.Counter(a + b).values() if c > 1)
    # Only an event caught between its handler and its record can run twice.
    assert duplicates <= 2, duplicates
    assert set(a) | set(b) == sent


async def test_an_exclusive_group_keeps_key_order_across_processes_through_a_kill(
    nats_server: NatsServer, tmp_path: Path, workers: list[subprocess.Popen[str]]
) -> None:
    """Two processes in an exclusive group: one handles everything, with 4 workers, each
    key in order; SIGKILL it and the other takes over within the takeover time, still in
    key order for every first delivery; only what the dead one held comes back again."""
    paths = [tmp_path / "a.txt", tmp_path / "b.txt"]
    workers.extend(_spawn(nats_server, "PINNED", path, 2.0, "exclusive") for path in paths)
    progress, killed = [0], asyncio.Event()
    publishing = asyncio.create_task(
        _publish(nats_server.url, "PINNED", EVENTS, progress, 10, killed)
    )
    await wait_until(lambda: any(len(lines(p)) >= 3_000 for p in paths), 60, "3,000 handled")
    active = 0 if len(lines(paths[0])) >= 3_000 else 1
    assert not lines(paths[1 - active]), "the standby handled nothing while the other was active"
    workers[active].send_signal(signal.SIGKILL)
    workers[active].wait(timeout=10)
    killed_at = progress[0]
    killed.set()
    sent = await asyncio.wait_for(publishing, 120)
    await wait_until(
        lambda: {line[0] for p in paths for line in lines(p)} >= sent, 90, "every event"
    )
    assert killed_at < EVENTS, "the active process was killed mid-run"
    dead, alive = lines(paths[active]), lines(paths[1 - active])
    assert all(attempt == "1" for *_, attempt in dead)
    for handled in (dead, [line for line in alive if line[3] == "1"]):
        assert_in_key_order((key, int(n)) for _, key, n, _ in handled)
    # Redelivered: only what the killed process held (its prefetch) or had not acked.
    redelivered = [line for line in alive if line[3] != "1"]
    assert len(redelivered) <= 128 + 64

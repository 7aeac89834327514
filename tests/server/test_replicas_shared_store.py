"""Two gateway processes sharing one PostgreSQL log (no transport): events posted to both are
routed exactly once in total (only the holder of the routing lease routes), and when the
holder stops the other takes the lease over and routes the rest, again exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tidings.store import open_store

from .replicas import post_load_event, replica_folders
from .test_serve import Process, gateway_process

EVENTS = 120  # per phase


@pytest.fixture
def shared_log(postgres_schema_url: str) -> str:
    """The store URL of the log both replicas share: a fresh PostgreSQL schema."""
    return postgres_schema_url


async def _routing(client: httpx.AsyncClient, replica: Process) -> bool:
    answer = await client.get(f"{replica.url}/readyz")
    return bool(answer.status_code == 200 and answer.json()["routing"])


async def _wait_routing(client: httpx.AsyncClient, replica: Process) -> None:
    async with asyncio.timeout(30):
        while not await _routing(client, replica):  # noqa: ASYNC110 - polled over HTTP
            await asyncio.sleep(0.05)


def _replica_folders(tmp_path: Path, shared_log: str) -> list[Path]:
    """Two replicas' folders, each with ``g.yaml``: the shared log, one topic route."""
    config = (
        f"store: {json.dumps(shared_log)}\n"
        "routes: [{name: r, from: load.>, to: [{topic: routed.load}]}]\n"
    )
    return replica_folders(tmp_path, config)


@contextlib.asynccontextmanager
async def _replicas(
    tmp_path: Path, shared_log: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Process, Process]]:
    """An HTTP client and two replicas on the shared log: the first routing, then the second
    started (a standby)."""
    folders = _replica_folders(tmp_path, shared_log)
    async with (
        httpx.AsyncClient(timeout=10) as client,
        gateway_process(folders[0], "g.yaml") as first,
    ):
        await _wait_routing(client, first)
        async with gateway_process(folders[1], "g.yaml") as second:
            yield client, first, second


async def test_two_gateways_sharing_a_postgres_log_route_each_event_once(
    tmp_path: Path, shared_log: str
) -> None:
    async with _replicas(tmp_path, shared_log) as (client, first, second):
        assert not await _routing(client, second)  # a standby while the first routes
        for n in range(EVENTS):
            await post_load_event(client, (first, second)[n % 2].url, n)
        assert await first.stop(signal.SIGINT) == 0  # drained: routed, checkpointed
        await _wait_routing(client, second)  # took the lease over
        for n in range(EVENTS, 2 * EVENTS):
            await post_load_event(client, second.url, n)
        assert await second.stop(signal.SIGINT) == 0
    async with open_store(shared_log) as store:
        records = await store.read(topic="routed.load")
        accepted = await store.read(topic="load.>")
    assert len(accepted) == 2 * EVENTS
    routed = Counter(r.envelope.payload["n"] for r in records)
    assert sorted(routed) == list(range(2 * EVENTS))  # none lost
    assert set(routed.values()) == {1}  # none doubled


async def test_a_standby_takes_over_when_the_routing_replica_is_killed(
    tmp_path: Path, shared_log: str
) -> None:
    async with _replicas(tmp_path, shared_log) as (client, first, second):
        for n in range(EVENTS // 2):  # accepted by the standby: in the log, not routed by it
            await post_load_event(client, second.url, n)
        first.proc.kill()  # its session ends, and with it the lease
        await first.proc.wait()
        await _wait_routing(client, second)
        for n in range(EVENTS // 2, EVENTS):
            await post_load_event(client, second.url, n)
        assert await second.stop(signal.SIGINT) == 0
    async with open_store(shared_log) as store:
        records = await store.read(topic="routed.load")
    routed = Counter(r.envelope.payload["n"] for r in records)
    # None lost; the killed replica may have routed some of the first half before dying
    # (at least once), but the standby routes each exactly once after it.
    assert sorted(routed) == list(range(EVENTS))
    assert all(count == 1 for n, count in routed.items() if n >= EVENTS // 2)

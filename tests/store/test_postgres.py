"""PostgresStore: gap-free positions under concurrent writers, and its own error paths."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

from tidings.exceptions import StoreError
from tidings.store import PostgresStore
from tidings.store._rows import plan_append
from tidings.testing.store_conformance import WAIT, envelope, placed

from .concurrent_appends import assert_one_interleaved_log, follow

CONNECTIONS = 8
PER_CONNECTION = 10_000


@pytest.fixture
def schema(postgres_schema: str) -> str:
    """A schema of the test's own, dropped afterwards."""
    return postgres_schema


async def _lock_waiters(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_positions_follow_commit_order_under_the_position_lock(
    postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writer A takes position 2 and stalls before committing; writer B, started later,
    must wait for A (a sequence would have let B commit 3 first, and a reader at 3 would
    then skip 2 forever). Readers meanwhile see only the committed prefix."""
    planned = threading.Event()
    release = threading.Event()

    def stalling_plan(*args: Any, **kwargs: Any) -> Any:
        result = plan_append(*args, **kwargs)
        if threading.current_thread().name == "writer-a":
            planned.set()
            assert release.wait(WAIT)
        return result

    monkeypatch.setattr("tidings.store.postgres.plan_append", stalling_plan)
    outcome: dict[str, list[int]] = {}

    def writer_a() -> None:
        async def run() -> list[int]:
            async with PostgresStore(postgres_url, schema=schema) as store_a:
                return await store_a.append(placed(1, start=10))

        outcome["a"] = asyncio.run(run())

    async with PostgresStore(postgres_url, schema=schema, pool_size=2) as store:
        assert await store.append(placed(1)) == [1]
        thread = threading.Thread(target=writer_a, name="writer-a")
        thread.start()
        try:
            assert await asyncio.to_thread(planned.wait, WAIT)
            writer_b = asyncio.create_task(store.append(placed(1, start=20)))
            for _ in range(1000):  # bounded: until B queues behind A's lock
                if await _lock_waiters(postgres_url):
                    break
            else:
                pytest.fail("writer B never waited for the position lock")
            assert not writer_b.done()
            assert [r.position for r in await store.read()] == [1]
        finally:
            release.set()
            await asyncio.to_thread(thread.join, WAIT)
        assert outcome["a"] == [2]
        assert await asyncio.wait_for(writer_b, WAIT) == [3]
        assert [r.position for r in await store.read()] == [1, 2, 3]
        assert await store.verify() is None


@pytest.mark.slow
async def test_eight_connections_append_while_a_follower_reads(
    postgres_url: str, schema: str
) -> None:
    """Eight stores of one connection each (as eight processes would have) append
    concurrently, in batches of 100, while a ninth store follows the log live."""
    total = CONNECTIONS * PER_CONNECTION
    writers = [PostgresStore(postgres_url, schema=schema, pool_size=1) for _ in range(CONNECTIONS)]
    async with (
        PostgresStore(postgres_url, schema=schema, pool_size=2) as store,
        PostgresStore(postgres_url, schema=schema, pool_size=2) as follower_store,
    ):

        async def write(worker: int) -> dict[str, int]:
            reports: dict[str, int] = {}
            for start in range(0, PER_CONNECTION, 100):
                batch = [
                    envelope(
                        {"w": worker, "i": i},
                        topic="test.tick",
                        source=f"w{worker}",
                        event_id=f"w{worker}-{i}",
                    )
                    for i in range(start, start + 100)
                ]
                positions = await writers[worker].append(batch)
                reports.update(zip((e.id for e in batch), positions, strict=True))
            return reports

        follower = asyncio.create_task(follow(follower_store, total))
        await asyncio.sleep(0)
        try:
            reports = await asyncio.wait_for(
                asyncio.gather(*(write(n) for n in range(CONNECTIONS))), 120
            )
        finally:
            for writer in writers:
                await writer.aclose()
        followed = await asyncio.wait_for(follower, 60)

        records = [r async for r in store.iter_read(unknown="raw")]
        ids = {f"w{n}-{i}" for n in range(CONNECTIONS) for i in range(PER_CONNECTION)}
        assert_one_interleaved_log(records, followed, reports, ids, CONNECTIONS)
        assert await store.verify() is None


async def test_an_unreachable_server_is_a_clear_store_error() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout=1)
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:1/nowhere"):
        await store.last_position()
    await store.aclose()


async def test_tables_take_the_prefix_and_logs_stay_apart(postgres_url: str, schema: str) -> None:
    async with (
        PostgresStore(postgres_url, schema=schema, table_prefix="a_") as first,
        PostgresStore(postgres_url, schema=schema, table_prefix="b_") as second,
    ):
        await first.append(placed(2))
        await second.append(placed(1))
        assert await first.last_position() == 2
        assert await second.last_position() == 1
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "ORDER BY table_name",
            (schema,),
        )
        names = [row[0] for row in await cursor.fetchall()]
    assert names == [
        "a_chain_breaks", "a_checkpoints", "a_events", "a_handled", "a_snapshots",
        "b_chain_breaks", "b_checkpoints", "b_events", "b_handled", "b_snapshots",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="pool_size"):
        PostgresStore(postgres_url, pool_size=0)


async def test_two_stores_taking_turns_never_trust_a_stale_tail(
    postgres_url: str, schema: str
) -> None:
    async with (
        PostgresStore(postgres_url, schema=schema) as first,
        PostgresStore(postgres_url, schema=schema) as second,
    ):
        got = []
        opening = placed(1)
        for turn in range(6):
            writer = first if turn % 2 == 0 else second
            got += await writer.append(opening if turn == 0 else placed(1, start=turn))
            got += await writer.append(placed(2, start=100 + 2 * turn))
        assert got == list(range(1, 19))
        assert await first.append(opening) == [1]  # a known id, after a stale tail
        assert [r.position for r in await second.read()] == list(range(1, 19))
        assert await second.verify() is None

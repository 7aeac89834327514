"""Property: whatever is appended, reads and replays return it once each, in position order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.store import EventStore, MemoryStore, SQLiteStore
from tidings.testing.store_conformance import envelope
from tidings.topics import matches

TOPICS = ("a.x", "a.y", "b.x", "a.x.deep")
PATTERNS = (">", "a.*", "a.>", "*.x", "b.x", "a.x.deep")
STREAMS = (None, "s1", "s2")


@dataclass(frozen=True)
class Op:
    """One append: new events (topic index, value) and re-sent earlier ones (index)."""

    items: list[tuple[str, int] | int]
    stream: str | None


ops = st.lists(
    st.builds(
        Op,
        st.lists(
            st.one_of(
                st.tuples(st.sampled_from(TOPICS), st.integers(-1000, 1000)),
                st.integers(0, 50),
            ),
            max_size=6,
        ),
        st.sampled_from(STREAMS),
    ),
    max_size=12,
)
pages = st.tuples(st.integers(0, 40), st.integers(1, 7))


async def _check(store: EventStore, batches: list[Op], after: int, limit: int) -> None:
    sent: list[Any] = []  # every envelope built, new or re-sent
    model: list[tuple[str, str, str | None, int]] = []  # id, topic, stream, value in order
    positions: dict[str, int] = {}
    for op in batches:
        batch = []
        for item in op.items:
            if isinstance(item, int):
                if item < len(sent):
                    batch.append(sent[item])
                continue
            topic, value = item
            batch.append(envelope({"v": value}, topic=topic))
        sent += batch
        expected = []
        for env in batch:
            if env.id not in positions:
                positions[env.id] = len(model) + 1
                model.append((env.id, env.topic, op.stream, env.payload["v"]))
            expected.append(positions[env.id])
        assert await store.append(batch, stream=op.stream) == expected

    records = await store.read()
    assert [r.position for r in records] == list(range(1, len(model) + 1))
    assert [(r.id, r.topic, r.stream, r.payload["v"]) for r in records] == model
    for pattern in PATTERNS:
        got = [r.id for r in await store.read(topic=pattern)]
        assert got == [m[0] for m in model if matches(pattern, m[1])]
    for stream in ("s1", "s2"):
        mine = await store.read(stream=stream)
        assert [r.id for r in mine] == [m[0] for m in model if m[2] == stream]
        assert [r.stream_version for r in mine] == list(range(1, len(mine) + 1))
        assert await store.stream_version(stream) == len(mine)
    page = await store.read(after=after, limit=limit)
    assert [r.id for r in page] == [m[0] for m in model[after : after + limit]]
    total = 0
    async for record in store.iter_read(page_size=3):
        total += record.payload["v"]
    assert total == sum(m[3] for m in model)
    assert await store.verify() is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=ops, page=pages)
def test_memory_store_reads_back_what_was_appended(
    batches: list[Op], page: tuple[int, int]
) -> None:
    async def run() -> None:
        async with MemoryStore() as store:
            await _check(store, batches, *page)

    asyncio.run(run())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=ops, page=pages)
def test_sqlite_store_reads_back_what_was_appended(
    batches: list[Op], page: tuple[int, int]
) -> None:
    async def run() -> None:
        async with SQLiteStore(":memory:") as store:
            await _check(store, batches, *page)

    asyncio.run(run())

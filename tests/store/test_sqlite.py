"""SQLiteStore: crash safety, several processes on one file, and its own error paths."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tidings.exceptions import StoreError
from tidings.store import SQLiteStore
from tidings.store import base as store_base
from tidings.store.base import Query
from tidings.testing.store_conformance import Shipped, envelope, placed

from .concurrent_appends import assert_one_interleaved_log, follow

StartWriter = Callable[[str, str, int, int, float], Awaitable[asyncio.subprocess.Process]]

WORKERS = 4
PER_WORKER = 10_000


async def read_reports(process: asyncio.subprocess.Process, timeout: float) -> dict[str, int]:
    """Every ``id -> position`` a writer reported, once it exited (within ``timeout``)."""
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, err.decode()
    reports: dict[str, int] = {}
    for line in out.decode().splitlines():
        position, event_id = line.split()
        reports[event_id] = int(position)
    return reports


@pytest.mark.slow
async def test_four_processes_append_while_a_follower_reads(
    tmp_path: Path, start_writer: StartWriter
) -> None:
    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    total = WORKERS * PER_WORKER
    async with SQLiteStore(path, poll_interval=0.02) as store:
        follower = asyncio.create_task(follow(store, total))
        writers = [await start_writer(url, f"w{n}", PER_WORKER, 50, 120) for n in range(WORKERS)]
        reports = await asyncio.gather(*(read_reports(w, 150) for w in writers))
        followed = await asyncio.wait_for(follower, 60)

        records = await store.read(unknown="raw")
        ids = {f"w{n}-{i}" for n in range(WORKERS) for i in range(PER_WORKER)}
        assert_one_interleaved_log(records, followed, reports, ids, WORKERS)
        assert len({r.id for r in records}) == total
        for n in range(WORKERS):
            mine = [r.payload["i"] for r in records if r.payload["w"] == f"w{n}"]
            assert mine == list(range(PER_WORKER))
        assert await store.verify() is None


def test_the_default_file_and_its_directory_are_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore()
    store._close_now()
    assert (tmp_path / ".tidings" / "events.db").is_file()
    with sqlite3.connect(tmp_path / ".tidings" / "events.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_directory_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open the SQLite log"):
        SQLiteStore(tmp_path / "plain-file" / "events.db")


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages you are looking for" * 100)
    with pytest.raises(StoreError, match="cannot be used as a tidings SQLite log"):
        SQLiteStore(path)


def test_a_log_from_a_newer_tidings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(path)


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(tmp_path / "a.db", synchronous="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poll_interval"):
        SQLiteStore(tmp_path / "a.db", poll_interval=0)


async def test_full_synchronous_mode_works(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "full.db", synchronous="full") as store:
        assert await store.append(placed(3)) == [1, 2, 3]
        assert await store.verify() is None


async def test_reads_of_what_it_appended_match_the_database(tmp_path: Path) -> None:
    """Rows the store appended last are read from memory: the very rows a new connection
    reads from the file, including with ``upto`` and ``limit``."""
    path = tmp_path / "tail.db"
    async with SQLiteStore(path) as store, SQLiteStore(path) as other:
        assert await store.append(placed(5)) == [1, 2, 3, 4, 5]
        assert await store.append(placed(3, start=5)) == [6, 7, 8]
        assert await store.read() == await other.read()
        assert await store.read(after=2, upto=6) == await other.read(after=2, upto=6)
        assert await store.read(after=3, limit=2) == await other.read(after=3, limit=2)
        assert await store.read(after=6, upto=5) == []
        assert await store.verify() is None


async def test_columns_alike_in_a_batch_are_stored_as_in_every_row(tmp_path: Path) -> None:
    """A batch whose rows share some columns (bound once) and differ in others is stored
    row for row as appended: read back through another connection, chain intact."""
    path = tmp_path / "alike.db"
    batches = [
        [envelope({"n": n}, topic="a.b", source="s") for n in range(5)],  # topic, source alike
        [
            envelope({"n": n}, topic="a.b" if n % 2 else "a.c", source="s", key=f"k{n % 3}")
            for n in range(7)
        ],
        [envelope({"n": 1}, topic="a.b", source="t", headers={"h": "1"})],
        [envelope({"n": n}, topic="a.b", source="s", headers={"h": "1"}) for n in range(3)],
    ]
    async with SQLiteStore(path) as store:
        for batch in batches:
            await store.append(batch)
        assert await store.verify() is None
    appended = [e for batch in batches for e in batch]
    async with SQLiteStore(path) as other:
        records = await other.read(unknown="raw")
    assert [(r.envelope.id, r.topic, r.envelope.source) for r in records] == [
        (e.id, e.topic, e.source) for e in appended
    ]
    assert [(r.envelope.key, dict(r.envelope.headers), r.payload) for r in records] == [
        (e.key, dict(e.headers), e.payload) for e in appended
    ]


async def test_a_change_by_another_connection_is_read_from_the_database(tmp_path: Path) -> None:
    path = tmp_path / "changed.db"
    async with SQLiteStore(path) as store:
        await store.append(placed(3))
        assert [r.position for r in await store.read(after=1)] == [2, 3]
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute(
                "UPDATE events SET payload = ? WHERE position = 2",
                ('{"order_id": "changed", "amount": 1.0}',),
            )
            conn.commit()
        records = await store.read(after=1)
        assert records[0].payload.order_id == "changed"
        assert await store.verify() == 2


async def test_appends_by_two_stores_on_one_file_are_read_in_order(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    async with SQLiteStore(path) as first, SQLiteStore(path) as second:
        for round_ in range(3):
            await first.append(placed(2, start=4 * round_))
            assert len(await first.read(after=4 * round_)) == 2
            await second.append(placed(2, start=4 * round_ + 2))
        for store in (first, second):
            records = await store.read()
            assert [r.position for r in records] == list(range(1, 13))
            assert [r.payload.order_id for r in records] == [f"o{i}" for i in range(12)]
            assert await store.verify() is None


async def test_reads_past_what_it_keeps_in_memory_come_from_the_database(tmp_path: Path) -> None:
    """More rows than the store keeps (by count, then by payload size): every read is still
    the whole log, in order."""
    async with SQLiteStore(tmp_path / "long.db") as store:
        for start in range(0, 10_000, 1_000):
            await store.append(placed(1_000, start=start))
        records = await store.read()
        assert [r.position for r in records] == list(range(1, 10_001))
        big = [envelope({"text": "x" * 1_000_000}, topic="big.text") for _ in range(12)]
        for item in big:
            await store.append([item])
        records = await store.read(after=9_990, unknown="raw")
        assert [r.position for r in records] == list(range(9_991, 10_013))
        assert [r.id for r in records[10:]] == [item.id for item in big]
        assert await store.verify() is None


def _query_with_second(name: str) -> type[tuple[Any, ...]]:
    """A stand-in for :class:`~tidings.store.base.Query`: the same fields and defaults
    (a field added to Query is in it too), ``after`` first and ``name`` second."""
    names = ("after", name, *(n for n in Query._fields if n not in ("after", name)))
    defaults = [Query._field_defaults[n] for n in names]
    # Made from Query's own fields (names mypy cannot see), so through a plain callable.
    make_class: Callable[..., type[tuple[Any, ...]]] = collections.namedtuple
    return make_class("ReorderedQuery", names, defaults=defaults)


@pytest.mark.parametrize("second", [name for name in Query._fields if name != "after"])
async def test_reads_of_the_tail_filter_by_field_name_whatever_the_field_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    """Reads of the rows a store just appended (served from memory) apply every filter,
    with the store's queries built with their fields in another order (each field in turn
    moved to the front): the tail tells a position-only read by field name, not by place.
    Each filtered read is what another connection (reading the file) returns, and fewer
    records than all."""
    monkeypatch.setattr(store_base, "Query", _query_with_second(second))
    path = tmp_path / "order.db"
    async with SQLiteStore(path) as store, SQLiteStore(path) as other:
        await store.append(placed(3), stream="a")
        middle = envelope(Shipped("o9"), topic="conformance.shipped.eu")
        await store.append([middle], stream="b")
        await store.append(placed(2, start=3), stream="a")
        everything = await other.read()
        assert len(everything) == 6
        for filters in (
            {"stream": "b"},
            {"topic": "conformance.shipped.eu"},
            {"topic": "conformance.shipped.>"},
            {"since": middle.time},
            {"until": middle.time},
            {"after": 1, "upto": 3},
        ):
            mine = await store.read(**filters)
            assert mine == await other.read(**filters), filters
            assert 0 < len(mine) < len(everything), filters

"""Harnesses for the three stores, and the PostgreSQL server the tests use.

PostgreSQL: the ``postgres_url`` fixture of ``tests/conftest.py``. Every test gets a schema
of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from tidings.store import EventStore, MemoryStore, PostgresStore, SQLiteStore
from tidings.testing.store_conformance import StoreHarness

WRITER = r"""
import asyncio, sys, time
from tidings.clock import HybridClock
from tidings.event import Envelope, NO_HEADERS
from tidings.store import open_store

url, worker, count, batch, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])

async def main():
    clock = HybridClock()
    deadline = time.monotonic() + seconds
    written = 0
    async with open_store(url) as store:
        while written < count and time.monotonic() < deadline:
            size = min(batch, count - written)
            envelopes = [
                Envelope("test.tick", {"w": worker, "i": written + k}, clock.now(), None, worker,
                         NO_HEADERS, f"{worker}-{written + k}")
                for k in range(size)
            ]
            positions = await store.append(envelopes)
            sys.stdout.write("".join(f"{p} {e.id}\n" for p, e in zip(positions, envelopes)))
            sys.stdout.flush()
            written += size

asyncio.run(main())
"""


StartWriter = Callable[[str, str, int, int, float], Awaitable[asyncio.subprocess.Process]]


async def _start_writer(
    url: str, worker: str, count: int, batch: int, seconds: float
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        url,
        worker,
        str(count),
        str(batch),
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.fixture
def start_writer() -> Iterator[StartWriter]:
    """Start writer processes (fresh interpreters, never forks of this one); kill leftovers.

    A writer appends ``count`` plain JSON events with ids ``{worker}-{n}`` to the store at
    ``url`` in batches of ``batch`` for at most ``seconds``, and prints ``position id`` for
    every append that returned.
    """
    started: list[asyncio.subprocess.Process] = []

    async def start(
        url: str, worker: str, count: int, batch: int, seconds: float
    ) -> asyncio.subprocess.Process:
        process = await _start_writer(url, worker, count, batch, seconds)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


class MemoryHarness(StoreHarness):
    def __init__(self) -> None:
        self.store: MemoryStore | None = None

    async def open(self) -> EventStore:
        self.store = MemoryStore()
        return self.store

    async def tamper(
        self, position: int, *, payload: str | None = None, type_name: str | None = None
    ) -> None:
        assert self.store is not None
        rows = self.store._rows
        row = list(rows[position - 1])
        if payload is not None:
            row[11] = payload
        if type_name is not None:
            row[4] = type_name
        rows[position - 1] = tuple(row)  # type: ignore[assignment]


class SQLiteHarness(StoreHarness):
    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self) -> EventStore:
        return SQLiteStore(self.path)

    async def tamper(
        self, position: int, *, payload: str | None = None, type_name: str | None = None
    ) -> None:
        with sqlite3.connect(self.path) as conn:
            if payload is not None:
                conn.execute(
                    "UPDATE events SET payload = ? WHERE position = ?", (payload, position)
                )
            if type_name is not None:
                conn.execute(
                    "UPDATE events SET type_name = ? WHERE position = ?", (type_name, position)
                )
        conn.close()


class PostgresHarness(StoreHarness):
    def __init__(self, url: str) -> None:
        self.url = url
        self.schema = f"tidings_test_{uuid.uuid4().hex[:12]}"

    async def open(self) -> EventStore:
        return PostgresStore(self.url, schema=self.schema, pool_size=4, poll_interval=1.0)

    async def tamper(
        self, position: int, *, payload: str | None = None, type_name: str | None = None
    ) -> None:
        table = sql.Identifier(self.schema, "tidings_events")
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            if payload is not None:
                await conn.execute(
                    sql.SQL("UPDATE {} SET payload = %s WHERE position = %s").format(table),
                    (payload, position),
                )
            if type_name is not None:
                await conn.execute(
                    sql.SQL("UPDATE {} SET type_name = %s WHERE position = %s").format(table),
                    (type_name, position),
                )

    async def cleanup(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty durable log: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/crash.db"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def memory_harness() -> MemoryHarness:
    return MemoryHarness()


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> SQLiteHarness:
    return SQLiteHarness(tmp_path / "log" / "events.db")


@pytest_asyncio.fixture
async def postgres_harness(postgres_url: str) -> AsyncIterator[PostgresHarness]:
    harness = PostgresHarness(postgres_url)
    try:
        yield harness
    finally:
        await harness.cleanup()

"""Store errors injected for real: a damaged file, a read-only log, a broken hash chain, a
read-only PostgreSQL session, an unreachable server. Each surfaces as a typed StoreError
with the driver's exception chained, and the CLI tells damage from tampering."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import sqlite3
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

import tidings
from tidings.cli import app
from tidings.exceptions import (
    ChainBrokenError,
    StoreCorruptedError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    StoreUnavailableError,
)
from tidings.store import PostgresStore, SQLiteStore, open_store
from tidings.testing.store_conformance import Placed, placed

from .conftest import PostgresHarness, SQLiteHarness

runner = CliRunner()
RECORDS = 1_000


def _log(path: Path, count: int = RECORDS) -> None:
    store = SQLiteStore(path)
    store.append_sync(placed(count))
    store.close_sync()  # checkpoints the WAL into the file


def _damage(path: Path, seed: int) -> None:
    """Overwrite four pages in the middle of the file with random bytes."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size // 2 // 4096 * 4096)
        file.write(random.Random(seed).randbytes(4 * 4096))


def _count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


async def test_random_bytes_in_the_file_raise_store_corrupted(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _log(path)
    _damage(path, seed=1)
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreCorruptedError, match="damaged") as read_error:
            await store.read()
        assert isinstance(read_error.value.__cause__, sqlite3.DatabaseError)
        with pytest.raises(StoreCorruptedError, match="restore it from a backup") as verify_error:
            await store.verify()
        assert isinstance(verify_error.value.__cause__, sqlite3.DatabaseError)
    finally:
        await store.aclose()


def test_verify_exits_3_on_a_damaged_file_and_1_on_a_tampered_one(tmp_path: Path) -> None:
    damaged, tampered = tmp_path / "damaged.db", tmp_path / "tampered.db"
    _log(damaged)
    _damage(damaged, seed=2)
    _log(tampered)
    with contextlib.closing(sqlite3.connect(tampered)) as conn:
        conn.execute("UPDATE events SET payload = '{}' WHERE position = 500")
        conn.commit()

    result = runner.invoke(app, ["log", "verify", "--store", f"sqlite:///{damaged}"])
    assert result.exit_code == 3, result.output
    assert "damaged" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

    result = runner.invoke(app, ["log", "verify", "--store", f"sqlite:///{tampered}"])
    assert result.exit_code == 1, result.output
    assert "position 500" in result.output

    result = runner.invoke(app, ["log", "verify", "--store", "no-scheme.db"])
    assert result.exit_code == 2, result.output


def _make_read_only(path: Path) -> None:
    """Make the log's file read-only for this process: by permissions where they bind (not
    root; checked as uid 65534), else by the file's write-version byte, which makes SQLite
    open it read-only. The directory stays writable, for SQLite's -wal and -shm files."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    with path.open("r+b") as header:
        header.seek(18)  # the file format write version: above 2, SQLite only reads the file
        header.write(bytes([3]))


async def test_a_read_only_log_refuses_appends_and_publishes_with_a_typed_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log" / "events.db"
    _log(path)
    _make_read_only(path)
    try:
        store = SQLiteStore(path)
        try:
            assert len(await store.read()) == RECORDS  # reading still works
            with pytest.raises(StoreReadOnlyError, match="read-only") as error:
                await store.append(placed(1, start=RECORDS))
            assert isinstance(error.value.__cause__, sqlite3.OperationalError)
            assert isinstance(error.value, PermissionError)
        finally:
            await store.aclose()
        async with tidings.Bus(store=SQLiteStore(path)) as bus:
            with pytest.raises(StoreReadOnlyError):
                bus.publish(Placed("o-late", 1.0))
        assert _count(path) == RECORDS
    finally:
        path.chmod(0o644)


async def test_a_broken_chain_refuses_appends_until_allowed(tmp_path: Path) -> None:
    harness = SQLiteHarness(tmp_path / "events.db")
    _log(harness.path, 10)
    await harness.tamper(10, payload='{"order_id": "forged", "amount": 0.0}')

    # The tail is checked on opening: the last record's hash does not follow.
    store = SQLiteStore(harness.path)
    try:
        assert store.chain_break == 10
        with pytest.raises(ChainBrokenError, match="allow_broken_chain") as error:
            await store.append(placed(1, start=10))
        assert error.value.position == 10
        with pytest.raises(ChainBrokenError):
            store.append_sync(placed(1, start=10))
    finally:
        await store.aclose()
    assert _count(harness.path) == 10

    # A break in the middle is found by verify(), which the store then remembers.
    _log(tmp_path / "middle.db", 10)
    middle = SQLiteHarness(tmp_path / "middle.db")
    await middle.tamper(4, payload='{"order_id": "forged", "amount": 0.0}')
    async with SQLiteStore(middle.path) as store:
        assert store.chain_break is None
        assert await store.append(placed(1, start=10)) == [11]
        assert await store.verify() == 4
        with pytest.raises(ChainBrokenError):
            await store.append(placed(1, start=11))
    # verify() recorded the break in the log: a store opened later (or `tidings log verify`
    # in another process) knows it without verifying again.
    async with SQLiteStore(middle.path) as store:
        assert store.chain_break == 4
        with pytest.raises(ChainBrokenError):
            await store.append(placed(1, start=11))
    assert _count(middle.path) == 11

    # Restored (here: the original payload put back), the chain verifies and the record goes.
    await middle.tamper(4, payload='{"order_id":"o3","amount":3.0}')
    async with SQLiteStore(middle.path) as store:
        assert await store.verify() is None
    async with SQLiteStore(middle.path) as store:
        assert store.chain_break is None
        assert await store.append(placed(1, start=11)) == [12]

    # Opened with the flag (or the URL parameter), the store appends; verify still sees it.
    async with open_store(f"sqlite:///{harness.path}?allow_broken_chain=1") as allowed:
        assert await allowed.append(placed(2, start=10)) == [11, 12]
        assert await allowed.verify() == 10
    assert _count(harness.path) == 12


async def test_postgres_broken_chain_refuses_appends(
    postgres_harness: PostgresHarness,
) -> None:
    async with await postgres_harness.open() as store:
        await store.append(placed(10))
    await postgres_harness.tamper(10, payload='{"order_id": "forged", "amount": 0.0}')
    async with await postgres_harness.open() as store:
        with pytest.raises(ChainBrokenError):
            await store.append(placed(1, start=10))
        assert await store.last_position() == 10
    await postgres_harness.tamper(10, payload='{"order_id":"o9","amount":9.0}')  # restored
    await postgres_harness.tamper(5, payload='{"order_id": "forged", "amount": 0.0}')
    async with await postgres_harness.open() as store:
        assert await store.append(placed(1, start=10)) == [11]  # the end of the log is whole
        assert await store.verify() == 5
    async with await postgres_harness.open() as store:  # verify() recorded it in the log
        assert store.chain_break == 5
        with pytest.raises(ChainBrokenError):
            await store.append(placed(1, start=11))
        assert await store.last_position() == 11


async def test_postgres_errors_surface_as_store_errors(
    postgres_harness: PostgresHarness,
) -> None:
    async with await postgres_harness.open() as store:
        await store.append(placed(3))
    # A read-only session (as on a standby): reads work, appends are refused, typed.
    read_only = PostgresStore(
        _with_options(postgres_harness.url, "-c default_transaction_read_only=on"),
        schema=postgres_harness.schema,
        pool_size=2,
    )
    async with read_only:
        assert len(await read_only.read()) == 3
        with pytest.raises(StoreReadOnlyError, match="read-write session") as error:
            await read_only.append(placed(1, start=3))
        assert isinstance(error.value.__cause__, psycopg.errors.ReadOnlySqlTransaction)
        with pytest.raises(StoreReadOnlyError):
            await read_only.commit("billing", 3)
    async with await postgres_harness.open() as store:
        assert await store.last_position() == 3

    # A server that is not there: a typed, retryable error naming where.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2)
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}") as unreachable:
        await gone.append(placed(1))
    assert isinstance(unreachable.value, StoreError | ConnectionError)
    assert unreachable.value.__cause__ is not None
    assert "connection refused" in str(unreachable.value).lower()  # the cause, not a timeout
    await gone.aclose()

    # A schema with no log, opened read-only: an error, and nothing created.
    typo = f"{postgres_harness.schema}_typo"
    with pytest.raises(StoreNotFoundError, match="no tidings log in schema"):
        await PostgresStore(postgres_harness.url, schema=typo, create=False).read()
    async with await psycopg.AsyncConnection.connect(postgres_harness.url) as conn:
        cursor = await conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (typo,))
        assert await cursor.fetchone() == (0,)


def _with_options(url: str, options: str) -> str:
    from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), ("options", options)], quote_via=quote)
    return urlunsplit(parts._replace(query=query))


@pytest.mark.parametrize("writable", [True, False])
def test_a_schema_1_log_gains_its_chain_record_or_opens_read_only(
    tmp_path: Path, writable: bool
) -> None:
    path = tmp_path / "log" / "events.db"
    _log(path, 3)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # as tidings before 2 left it
        conn.execute("DROP TABLE chain_breaks")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    if not writable:
        _make_read_only(path)
    try:
        store = SQLiteStore(path)
        try:
            assert store.chain_break is None
            if writable:
                assert store.append_sync(placed(1, start=3)) == [4]
        finally:
            store.close_sync()
        with contextlib.closing(sqlite3.connect(path)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        assert version == (2 if writable else 1)
    finally:
        path.chmod(0o644)

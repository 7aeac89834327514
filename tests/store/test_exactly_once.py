"""Exactly once in effect: a transactional durable consumer SIGKILLed mid-run, repeatedly.

The consumer runs in a child process and writes one effect row per event through the
transaction that commits its checkpoint (``transactional=True``). The parent kills it with
SIGKILL at random points and restarts it until it has consumed the whole log; the effects
table must then hold every event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

import tidings
from tidings import DeadLetter
from tidings.store import MemoryStore, SQLiteStore, open_store
from tidings.testing.store_conformance import envelope

EVENTS = 2_000
KILLS = 3
CONTRAST = 500  # events for the at-least-once contrast
RUN_TIMEOUT = 60.0  # seconds for one run of the consumer (it needs a few)

CONSUMER = r"""
import asyncio, sys
import tidings
from tidings.store import open_store

url, table, total = sys.argv[1], sys.argv[2], int(sys.argv[3])


async def main():
    store = open_store(url)
    async with tidings.Bus(store=store) as bus:
        if isinstance(store, tidings.SQLiteStore):
            def charge(event: dict, tx: tidings.Transaction) -> None:
                tx.connection.execute(f"INSERT INTO {table} (n) VALUES (?)", (event["n"],))
                print(event["n"], flush=True)
        else:
            async def charge(event: dict, tx: tidings.Transaction) -> None:
                await tx.connection.execute(f"INSERT INTO {table} (n) VALUES (%s)", (event["n"],))
                print(event["n"], flush=True)
        bus.subscribe("test.charge", charge, durable="billing", transactional=True)
        while await store.load_checkpoint("billing") < total:
            await asyncio.sleep(0.02)
    print("done", flush=True)

asyncio.run(main())
"""


# The contrast: an idempotent (not transactional) consumer writing its effect on its own
# connection. At each event in argv[4] it pauses once after writing, before its checkpoint
# commits, so the parent's SIGKILL lands in that window.
AT_LEAST_ONCE = r"""
import asyncio, sqlite3, sys, time
import tidings

path, table, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
pause_at = {int(n) for n in sys.argv[4].split(",")}
effects = sqlite3.connect(path, isolation_level=None)


async def main():
    store = tidings.SQLiteStore(path)
    async with tidings.Bus(store=store) as bus:
        def charge(event: dict) -> None:
            n = event["n"]
            effects.execute(f"INSERT INTO {table} (n) VALUES (?)", (n,))
            print(n, flush=True)
            if n in pause_at and effects.execute(
                f"SELECT count(*) FROM {table} WHERE n = ?", (n,)
            ).fetchone()[0] == 1:
                time.sleep(30)  # killed here: the effect is in, the checkpoint is not
        bus.subscribe("test.charge", charge, durable="billing", idempotent=True)
        while await store.load_checkpoint("billing") < total:
            await asyncio.sleep(0.02)
    print("done", flush=True)

asyncio.run(main())
"""


async def _start(
    url: str, table: str, *extra: str, script: str = CONSUMER, total: int = EVENTS
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        url,
        table,
        str(total),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _run(
    child: asyncio.subprocess.Process,
    *,
    kill_after_lines: int | None = None,
    kill_at_event: int | None = None,
) -> bool:
    """Read the consumer's lines (the ``n`` of each event it handles) until it prints
    ``done`` (True), or SIGKILL it after reading ``kill_after_lines`` lines or the line of
    event ``kill_at_event`` (False). Bounded by RUN_TIMEOUT; the child is never left running.
    """
    assert child.stdout is not None
    assert child.stderr is not None
    seen = 0
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            while (line := (await child.stdout.readline()).strip()) != b"done":
                if not line:
                    stderr = (await child.stderr.read()).decode()
                    raise AssertionError(f"the consumer exited early:\n{stderr}")
                seen += 1
                if seen == kill_after_lines or int(line) == kill_at_event:
                    child.send_signal(signal.SIGKILL)
                    await child.wait()
                    assert child.returncode == -signal.SIGKILL
                    return False
            await child.wait()
            return True
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


def _schema(url: str) -> str | None:
    return dict(parse_qsl(urlsplit(url).query)).get("schema")


def _server(url: str) -> str:
    """``url`` without its ``schema`` parameter (kept: ``host`` and the rest), for psycopg."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def _effects(url: str, table: str) -> list[int]:
    """The ``n`` of every effect row, as the consumer's table holds them."""
    schema = _schema(url)
    if schema is None:
        path = Path(urlsplit(url).path[1:])
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return [row[0] for row in conn.execute(f"SELECT n FROM {table}")]
    server = _server(url)
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT n FROM {}").format(sql.Identifier(*table.split(".")))
        )
        return [row[0] for row in await cursor.fetchall()]


async def _create_effects_table(url: str) -> str:
    """Create the consumer's effects table (no unique key: duplicates would stay); its name."""
    schema = _schema(url)
    if schema is None:
        path = Path(urlsplit(url).path[1:])
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE effects (n INTEGER NOT NULL)")
            conn.commit()
        return "effects"
    server = _server(url)
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("CREATE TABLE {} (n integer NOT NULL)").format(
                sql.Identifier(schema, "effects")
            )
        )
    return f"{schema}.effects"


async def test_transactional_effects_happen_once_through_repeated_sigkills(store_url: str) -> None:
    async with open_store(store_url) as store:
        await store.append(envelope({"n": n}, topic="test.charge") for n in range(EVENTS))
    table = await _create_effects_table(store_url)
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    kills = 0
    checkpoints: list[int] = []  # the consumer's checkpoint after each kill
    runs = 0
    finished = False
    while not finished:
        runs += 1
        assert runs <= KILLS + 2, f"the consumer did not finish (seed {seed})"
        kill_after = rng.randrange(50, 600) if kills < KILLS else None
        child = await _start(store_url, table)
        finished = await _run(child, kill_after_lines=kill_after)
        if not finished:
            kills += 1
            async with open_store(store_url) as store:
                checkpoints.append(await store.load_checkpoint("billing"))
    assert kills == KILLS

    effects = await _effects(store_url, table)
    duplicated = len(effects) - len(set(effects))
    missing = set(range(EVENTS)) - set(effects)
    assert (len(effects), duplicated, len(missing)) == (EVENTS, 0, 0), f"seed {seed}"
    async with open_store(store_url) as store:
        assert await store.load_checkpoint("billing") == EVENTS
    # Every kill landed mid-run (the consumer had work left), and each run made progress.
    assert len(checkpoints) == KILLS
    assert all(0 < a < b < EVENTS for a, b in itertools.pairwise(checkpoints))


async def test_contrast_an_idempotent_consumer_repeats_an_effect_per_kill(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with open_store(f"sqlite:///{path}") as store:
        await store.append(envelope({"n": n}, topic="test.charge") for n in range(CONTRAST))
    table = await _create_effects_table(f"sqlite:///{path}")
    pause_at = (rng := random.Random()).randrange(20, 240), rng.randrange(260, CONTRAST - 20)
    kills = 0
    for run in range(len(pause_at) + 1):
        marks = ",".join(map(str, pause_at))
        child = await _start(str(path), table, marks, script=AT_LEAST_ONCE, total=CONTRAST)
        if not await _run(child, kill_at_event=pause_at[run] if run < len(pause_at) else None):
            kills += 1
    effects = Counter(await _effects(f"sqlite:///{path}", table))
    duplicated = sorted(n for n, times in effects.items() if times > 1)
    assert kills == 2
    assert (effects.total(), len(effects)) == (CONTRAST + kills, CONTRAST)
    assert duplicated == sorted(pause_at)  # one repeated effect per kill, where it landed


@tidings.event("test.exactly.charged")
@dataclass(frozen=True)
class Charged:
    n: int


async def test_a_failing_attempt_rolls_back_its_effect_and_the_last_one_dead_letters(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with tidings.Bus(store=SQLiteStore(path)) as bus:
        assert isinstance(bus.store, SQLiteStore)
        dead: list[DeadLetter] = []
        bus.subscribe(DeadLetter, dead.append)
        attempts: dict[int, int] = {}
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE effects (n INTEGER NOT NULL)")
            conn.commit()

        def charge(event: Charged, tx: tidings.Transaction) -> None:
            assert (tx.consumer, tx.position) == ("billing", event.n + 1)
            tx.connection.execute("INSERT INTO effects (n) VALUES (?)", (event.n,))
            attempts[event.n] = attempts.get(event.n, 0) + 1
            if event.n == 1 or (event.n == 2 and attempts[2] < 2):
                raise RuntimeError(f"refused {event.n}")  # after writing: rolled back

        async def suspends(event: Charged, tx: tidings.Transaction) -> None:
            await asyncio.sleep(0.001)  # would hold SQLite's write lock across the loop

        for n in range(4):
            bus.publish(Charged(n))
        bus.subscribe(Charged, charge, durable="billing", transactional=True, max_attempts=3)
        bus.subscribe(Charged, suspends, durable="sleepy", transactional=True, max_attempts=1)
        async with asyncio.timeout(10):
            while (  # noqa: ASYNC110 - store rows
                await bus.store.load_checkpoint("billing") < 4
                or await bus.store.load_checkpoint("sleepy") < 4
            ):
                await asyncio.sleep(0.005)
    assert attempts == {0: 1, 1: 3, 2: 2, 3: 1}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert sorted(row[0] for row in conn.execute("SELECT n FROM effects")) == [0, 2, 3]
    by_handler = sorted((d.handler.rsplit(".", 1)[-1], d.envelope.payload.n) for d in dead)
    assert by_handler == [("charge", 1)] + [("suspends", n) for n in range(4)]
    assert all(
        isinstance(d.error, tidings.InvalidHandlerError)
        for d in dead
        if d.handler.endswith("suspends")
    )


async def test_transactional_needs_a_durable_consumer_on_a_store_with_transactions() -> None:
    def charge(event: Charged, tx: tidings.Transaction) -> None: ...

    async with tidings.Bus(store=MemoryStore()) as bus:
        with pytest.raises(tidings.InvalidHandlerError, match="SQLiteStore or PostgresStore"):
            bus.subscribe(Charged, charge, durable="billing", transactional=True)
        with pytest.raises(tidings.InvalidHandlerError, match="needs durable="):
            bus.subscribe(Charged, charge, transactional=True)  # type: ignore[call-overload]
        with pytest.raises(tidings.StoreError, match="no transaction"):
            await bus.store.commit_with("billing", 1, lambda tx: None)  # type: ignore[union-attr]
    async with tidings.Bus() as bus:
        with pytest.raises(tidings.InvalidHandlerError, match=r"Bus\(store=\.\.\.\)"):
            bus.subscribe(Charged, charge, durable="billing", transactional=True)


async def test_the_decorator_form_writes_through_the_transaction(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with tidings.Bus(store=SQLiteStore(path)) as bus:
        assert isinstance(bus.store, SQLiteStore)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE ledger (n INTEGER NOT NULL, position INTEGER NOT NULL)")
            conn.commit()

        @bus.on(Charged, durable="ledger", transactional=True)
        def ledger(event: Charged, tx: tidings.Transaction) -> None:
            tx.connection.execute("INSERT INTO ledger VALUES (?, ?)", (event.n, tx.position))

        for n in range(5):
            bus.publish(Charged(n))
        async with asyncio.timeout(10):
            while await bus.store.load_checkpoint("ledger") < 5:  # noqa: ASYNC110 - a store row
                await asyncio.sleep(0.005)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT n, position FROM ledger ORDER BY n").fetchall()
    assert rows == [(n, n + 1) for n in range(5)]

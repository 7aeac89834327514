"""Event store throughput: tidings against the eventsourcing library, in one run.

Both libraries do the same work on the same machine and database server, starting from
typed event objects and ending with typed event objects:

- single appends/s: one event per transaction, each into a new stream (aggregate) that
  must not exist yet (tidings ``expected_version=NO_STREAM``; eventsourcing's unique
  (originator_id, version) key);
- batched appends/s: 100 events per transaction, one stream per batch;
- raw read events/s: read the whole log in pages of 1,000 (tidings decodes every record
  into a typed ``StoredEvent``; eventsourcing's ``select_notifications`` returns records
  with their payload still serialised, so it does less work here);
- replay-with-fold events/s: read the whole log and fold the typed events into a total
  (eventsourcing: ``select_notifications`` then its ``Mapper.to_domain_event``).

Encoding is timed on both sides (tidings ``append`` encodes payloads; eventsourcing's
``Mapper.to_stored_event`` is timed too). The row "eventsourcing (recorder only)" also
shows its appends without the mapper, from events already encoded; the ratios are taken
against the full "eventsourcing" row, which does the same work as tidings. SQLite runs in WAL mode for
both; eventsourcing keeps SQLite's default ``synchronous=FULL``, so tidings is measured
with its default (``normal``: every returned append survives a process crash) and with
``synchronous="full"`` (also survives power loss) for a like-for-like figure.

PostgreSQL: ``TIDINGS_TEST_POSTGRES_URL``, else ``--postgres URL``, else a throwaway
server from the ``pgserver`` wheel. Each library writes into a fresh schema, dropped after.

Every figure is measured ``--repeat`` times (3), the libraries taking turns, and the best
run counts: the machines this runs on are shared, and the best run is the one least
disturbed by others.

Run: ``python benchmarks/bench_store.py`` (about a minute; ``--quick`` for a smoke run).
Exits non-zero if any count or total mismatches.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tidings
from _harness import Row
from tidings.clock import HybridClock
from tidings.event import NO_HEADERS, Envelope
from tidings.store import NO_STREAM, EventStore, PostgresStore, SQLiteStore

BATCH = 100
RAW = "eventsourcing (recorder only)"
FIGURES = ("single", "batched", "read", "fold")
TARGETS = {
    ("SQLite", "batched"): 150_000,
    ("SQLite", "read"): 300_000,
    ("SQLite", "fold"): 150_000,
    ("PostgreSQL", "batched"): 30_000,
}


@tidings.event("bench.order_placed")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: float


class CountMismatchError(Exception):
    """A count or total did not match: the benchmark's numbers would mean nothing."""


def check(what: str, got: object, want: object) -> None:
    if got != want:
        raise CountMismatchError(f"{what}: got {got!r}, expected {want!r}")


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


# -- tidings -------------------------------------------------------------------------------


def tidings_events(count: int, clock: HybridClock) -> list[Envelope[OrderPlaced]]:
    return [
        Envelope(
            "bench.order_placed",
            OrderPlaced(f"o{i}", float(i % 100)),
            clock.now(),
            None,
            "bench",
            NO_HEADERS,
            None,
            clock.node,
        )
        for i in range(count)
    ]


async def bench_tidings(store: EventStore, singles: int, count: int) -> dict[str, float]:
    clock = HybridClock()
    out: dict[str, float] = {}
    async with store:
        one = tidings_events(singles, clock)
        start = time.perf_counter()
        for index, env in enumerate(one):
            await store.append([env], stream=f"single-{index}", expected_version=NO_STREAM)
        out["single"] = rate(singles, time.perf_counter() - start)

        many = tidings_events(count, clock)
        batches = [many[i : i + BATCH] for i in range(0, count, BATCH)]
        start = time.perf_counter()
        for index, batch in enumerate(batches):
            await store.append(batch, stream=f"order-{index}", expected_version=NO_STREAM)
        out["batched"] = rate(count, time.perf_counter() - start)
        total = singles + count
        check("tidings last position", await store.last_position(), total)

        start = time.perf_counter()
        read = 0
        after = 0
        while True:
            page = await store.read(after=after, limit=1000)
            if not page:
                break
            read += len(page)
            after = page[-1].position
        out["read"] = rate(read, time.perf_counter() - start)
        check("tidings records read", read, total)

        start = time.perf_counter()
        folded = 0.0
        seen = 0
        async for record in store.iter_read():
            folded += record.payload.amount
            seen += 1
        out["fold"] = rate(seen, time.perf_counter() - start)
        check("tidings records folded", seen, total)
        want = sum(float(i % 100) for i in range(singles)) + sum(
            float(i % 100) for i in range(count)
        )
        check("tidings fold total", folded, want)
    return out


# -- eventsourcing -------------------------------------------------------------------------


def es_imports() -> Any:
    from eventsourcing.domain import DomainEvent
    from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex

    return DomainEvent, DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex


@functools.cache
def es_event_class() -> Any:
    domain_event = es_imports()[0]

    class EsOrderPlaced(domain_event):  # type: ignore[misc, valid-type]
        order_id: str
        amount: float

    EsOrderPlaced.__module__ = __name__
    EsOrderPlaced.__qualname__ = "EsOrderPlaced"
    globals()["EsOrderPlaced"] = EsOrderPlaced
    return EsOrderPlaced


def es_mapper() -> Any:
    _, datetime_as_iso, json_transcoder, mapper, uuid_as_hex = es_imports()
    transcoder = json_transcoder()
    transcoder.register(uuid_as_hex())
    transcoder.register(datetime_as_iso())
    return mapper(transcoder=transcoder)


def bench_eventsourcing(
    recorder: Any, singles: int, count: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Figures with the mapper's encoding timed (the same work as tidings), and without."""
    cls = es_event_class()
    mapper = es_mapper()
    now = datetime.now(UTC)
    out: dict[str, float] = {}
    raw: dict[str, float] = {}

    one = [
        cls(
            originator_id=uuid.uuid4(),
            originator_version=1,
            timestamp=now,
            order_id=f"o{i}",
            amount=float(i % 100),
        )
        for i in range(singles)
    ]
    start = time.perf_counter()
    stored = [mapper.to_stored_event(event) for event in one]
    encoding = time.perf_counter() - start
    start = time.perf_counter()
    for record in stored:
        recorder.insert_events([record])
    inserting = time.perf_counter() - start
    out["single"] = rate(singles, encoding + inserting)
    raw["single"] = rate(singles, inserting)

    batches = []
    for index in range(0, count, BATCH):
        aggregate = uuid.uuid4()
        batches.append(
            [
                cls(
                    originator_id=aggregate,
                    originator_version=version + 1,
                    timestamp=now,
                    order_id=f"o{index + version}",
                    amount=float((index + version) % 100),
                )
                for version in range(min(BATCH, count - index))
            ]
        )
    start = time.perf_counter()
    stored_batches = [[mapper.to_stored_event(event) for event in batch] for batch in batches]
    encoding = time.perf_counter() - start
    start = time.perf_counter()
    for stored_batch in stored_batches:
        recorder.insert_events(stored_batch)
    inserting = time.perf_counter() - start
    out["batched"] = rate(count, encoding + inserting)
    raw["batched"] = rate(count, inserting)
    total = singles + count
    check("eventsourcing max notification id", recorder.max_notification_id(), total)

    def pages() -> Iterator[list[Any]]:
        start = 1
        while True:
            page = recorder.select_notifications(start, 1000)
            if not page:
                return
            yield page
            start = page[-1].id + 1

    start = time.perf_counter()
    read = sum(len(page) for page in pages())
    out["read"] = rate(read, time.perf_counter() - start)
    check("eventsourcing records read", read, total)

    start = time.perf_counter()
    folded = 0.0
    seen = 0
    for page in pages():
        for notification in page:
            folded += mapper.to_domain_event(notification).amount
            seen += 1
    out["fold"] = rate(seen, time.perf_counter() - start)
    check("eventsourcing records folded", seen, total)
    want = sum(float(i % 100) for i in range(singles)) + sum(float(i % 100) for i in range(count))
    check("eventsourcing fold total", folded, want)
    raw["read"] = out["read"]
    raw["fold"] = out["fold"]
    return out, raw


def es_sqlite(path: Path) -> Any:
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    recorder = SQLiteApplicationRecorder(SQLiteDatastore(str(path)))
    recorder.create_table()
    return recorder


def es_postgres(url: str, schema: str) -> Any:
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    datastore = PostgresDatastore(
        dbname=str(info.get("dbname", "postgres")),
        host=str(info.get("host", "127.0.0.1")),
        port=str(info.get("port", 5432)),
        user=str(info.get("user", "postgres")),
        password=str(info.get("password", "")),
        schema=schema,
    )
    with datastore.transaction(commit=True) as curs:
        curs.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    recorder = PostgresApplicationRecorder(datastore, events_table_name="stored_events")
    recorder.create_table()
    return recorder


# -- PostgreSQL server ---------------------------------------------------------------------


@contextmanager
def postgres_server(given: str | None) -> Iterator[str]:
    url = os.environ.get("TIDINGS_TEST_POSTGRES_URL") or given
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        with tempfile.TemporaryDirectory() as data:
            server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
            try:
                yield server.get_uri()
            finally:
                server.cleanup()


def drop_schemas(url: str, *schemas: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- report --------------------------------------------------------------------------------


def report(results: dict[tuple[str, str], dict[str, float]]) -> None:
    header = f"{'backend':<11} {'library':<44}" + "".join(f"{f + '/s':>12}" for f in FIGURES)
    print(header)
    print("-" * len(header))
    for (backend, library), figures in results.items():
        cells = "".join(f"{figures[f]:>12,.0f}" for f in FIGURES)
        print(f"{backend:<11} {library:<44}{cells}")
    print()
    for backend in ("SQLite", "PostgreSQL"):
        es = results.get((backend, "eventsourcing"))
        if es is None:
            continue
        for (name, library), figures in results.items():
            if name != backend or library.startswith("eventsourcing"):
                continue
            ratios = "".join(f"{figures[f] / es[f]:>11.2f}x" for f in FIGURES)
            print(f"{backend:<11} {library + ' / eventsourcing':<44}{ratios}")
    print()
    for (backend, figure), target in TARGETS.items():
        got = results[(backend, "tidings")][figure]
        verdict = "met" if got >= target else f"{got / target:.0%} of it"
        print(f"target {backend} {figure} >= {target:,}/s: {got:,.0f}/s, {verdict}")


def best(into: dict[str, float] | None, figures: dict[str, float]) -> dict[str, float]:
    """Keep the best figure of each kind over the repetitions."""
    return figures if into is None else {f: max(into[f], figures[f]) for f in FIGURES}


def measure(
    quick: bool, repeat: int, postgres: str | None
) -> tuple[dict[tuple[str, str], dict[str, float]], str]:
    """Every figure for every (backend, library), best of ``repeat`` runs, and a summary line.

    Raises:
        CountMismatchError: if a library read back other events than it appended.
    """
    sqlite_singles, sqlite_count = (200, 5_000) if quick else (1_000, 50_000)
    pg_singles, pg_count = (100, 2_000) if quick else (300, 15_000)
    results: dict[tuple[str, str], dict[str, float]] = {}

    def record(key: tuple[str, str], figures: dict[str, float]) -> None:
        results[key] = best(results.get(key), figures)

    with postgres_server(postgres) as url:
        for run in range(repeat):
            with tempfile.TemporaryDirectory() as folder:
                base = Path(folder)
                record(
                    ("SQLite", "tidings"),
                    asyncio.run(
                        bench_tidings(SQLiteStore(base / "t.db"), sqlite_singles, sqlite_count)
                    ),
                )
                record(
                    ("SQLite", "tidings (synchronous=full)"),
                    asyncio.run(
                        bench_tidings(
                            SQLiteStore(base / "tf.db", synchronous="full"),
                            sqlite_singles,
                            sqlite_count,
                        )
                    ),
                )
                es, es_raw = bench_eventsourcing(
                    es_sqlite(base / "es.db"), sqlite_singles, sqlite_count
                )
                record(("SQLite", "eventsourcing"), es)
                record(("SQLite", RAW), es_raw)
            ours = f"bench_tidings_{uuid.uuid4().hex[:8]}"
            theirs = f"bench_es_{uuid.uuid4().hex[:8]}"
            try:
                record(
                    ("PostgreSQL", "tidings"),
                    asyncio.run(
                        bench_tidings(PostgresStore(url, schema=ours), pg_singles, pg_count)
                    ),
                )
                es, es_raw = bench_eventsourcing(es_postgres(url, theirs), pg_singles, pg_count)
                record(("PostgreSQL", "eventsourcing"), es)
                record(("PostgreSQL", RAW), es_raw)
            finally:
                drop_schemas(url, ours, theirs)
            print(f"store benchmark: run {run + 1} of {repeat} done", file=sys.stderr)
    summary = (
        f"best of {repeat} runs; SQLite: {sqlite_singles:,} single + {sqlite_count:,} "
        f"batched events, PostgreSQL: {pg_singles:,} + {pg_count:,}"
    )
    return results, summary


def run(quick: bool = False) -> list[Row]:
    """Rows for ``benchmarks/run.py``: one scenario per backend and figure, eventsourcing the
    baseline."""
    results, summary = measure(quick, 1 if quick else 2, None)
    return [
        Row(
            f"L {backend} {figure}",
            library,
            "events/s",
            figures[figure],
            "/s",
            summary if library == "tidings" else "",
        )
        for (backend, library), figures in results.items()
        for figure in FIGURES
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best counts")
    parser.add_argument("--postgres", help="PostgreSQL URL (default: see the module doc)")
    args = parser.parse_args()
    try:
        results, summary = measure(args.quick, args.repeat, args.postgres)
    except CountMismatchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(summary + "\n")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``tidings log``: read, follow, count and verify an event log from the command line.

Every command takes ``--store URL`` (default: ``$TIDINGS_STORE``, else the default SQLite
file ``sqlite:///.tidings/events.db``). Records are shown as stored (payloads as their JSON
text), so the log can be inspected without the program's event classes. Long reads and
verifies draw a progress bar on stderr.

Exit codes (every command): 0 done; 1 ``verify`` found the hash chain broken (a record
changed or missing: tampering); 2 a usage error (a bad option, a malformed store URL, or a
URL that names no existing log: the commands only read, so they never create a log); 3 the
log is damaged or cannot be used (unreadable pages, no permission, server unreachable...). A known failure prints one line saying what to do, never a traceback.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import msgspec

try:
    import typer
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"tidings log needs {exc.name}: install it with pip install 'tidings[cli]'"
    ) from exc

from tidings.clock import to_datetime
from tidings.exceptions import InvalidStoreURLError, StoreNotFoundError, TidingsError
from tidings.store._rows import Row
from tidings.store.base import EventStore, Query, build_query
from tidings.store.url import open_store

__all__ = ("log_app",)

T = TypeVar("T")

DEFAULT_URL = "sqlite:///.tidings/events.db"
PROGRESS_ABOVE = 10_000  # records: show a progress bar for reads and verifies longer than this
PAGE = 2_000
EXIT_CHAIN_BROKEN = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3

log_app = typer.Typer(
    name="log",
    help=(
        "Read, follow, count and verify a durable event log. Exit codes: 0 done; "
        "1 the hash chain is broken (verify: tampering); 2 usage error (a bad option or "
        "store URL, or no log at that URL: nothing is ever created); "
        "3 the log is damaged or cannot be used."
    ),
    no_args_is_help=True,
    add_completion=False,
)

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        envvar="TIDINGS_STORE",
        help="The log: sqlite:///path.db, postgresql://... or memory://",
        show_default=True,
    ),
]
AfterOption = Annotated[int, typer.Option(min=0, help="Only positions after this one.")]
TopicOption = Annotated[str | None, typer.Option(help="Only topics matching this pattern (*, >).")]
StreamOption = Annotated[str | None, typer.Option(help="Only this stream.")]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]

_out = Console(soft_wrap=True)
_err = Console(stderr=True)
_json = msgspec.json.Encoder()


def _run(url: str, work: Callable[[EventStore], Awaitable[T]]) -> T:
    """Open the store, run ``work`` on it, close it; report errors as a clean exit."""

    async def main() -> T:
        async with open_store(url, create=False) as store:
            return await work(store)

    try:
        return asyncio.run(main())
    except (InvalidStoreURLError, StoreNotFoundError, ValueError) as exc:
        _err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except TidingsError as exc:
        _err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_DAMAGED) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@contextmanager
def _progress(label: str, total: int, *, show: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (when ``show``); yields ``advance(count)``."""
    if not show:
        yield lambda count: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda count: progress.advance(task, count)


def _as_dict(row: Row) -> dict[str, Any]:
    return {
        "position": row[0],
        "id": row[1],
        "stream": row[2],
        "stream_version": row[3],
        "type": row[4],
        "type_version": row[5],
        "topic": row[6],
        "time": to_datetime(row[7]).isoformat().replace("+00:00", "Z"),
        "hlc": row[7],
        "key": row[8],
        "source": row[9],
        "headers": None if row[10] is None else msgspec.Raw(row[10].encode()),
        "payload": msgspec.Raw(row[11].encode()),
        "hash": row[12],
    }


async def _rows(
    store: EventStore,
    query: Query,
    match: Callable[[str], bool] | None,
    limit: int | None,
    advance: Callable[[int], None],
) -> list[Row]:
    out: list[Row] = []
    while limit is None or len(out) < limit:
        rows = await store._fetch(query, PAGE)
        advance(len(rows))
        out += rows if match is None else [row for row in rows if match(row[6])]
        if len(rows) < PAGE:
            break
        query = query._replace(after=rows[-1][0])
    return out if limit is None else out[:limit]


def _table(rows: list[Row]) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for name in ("pos", "time (UTC)", "topic", "stream", "id", "payload"):
        table.add_column(name, overflow="fold")
    for row in rows:
        stream = "" if row[2] is None else f"{row[2]}@{row[3]}"
        stamp = to_datetime(row[7]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        payload = row[11] if len(row[11]) <= 200 else row[11][:199] + "…"
        table.add_row(str(row[0]), stamp, row[6], stream, row[1], payload)
    return table


@log_app.command("read")
def read_command(
    store: StoreOption = DEFAULT_URL,
    after: AfterOption = 0,
    upto: Annotated[int | None, typer.Option(min=0, help="Only positions up to this one.")] = None,
    topic: TopicOption = None,
    stream: StreamOption = None,
    limit: Annotated[int | None, typer.Option(min=0, help="At most this many records.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the records of the log, oldest first."""

    async def work(log: EventStore) -> list[Row]:
        query, match = build_query(
            after=after, upto=upto, topic=topic, stream=stream, since=None, until=None
        )
        last = await log.last_position() if upto is None else min(upto, await log.last_position())
        span = max(0, last - after)
        with _progress("reading", span, show=span > PROGRESS_ABOVE) as advance:
            return await _rows(log, query, match, limit, advance)

    rows = _run(store, work)
    if as_json:
        for row in rows:
            _out.out(_json.encode(_as_dict(row)).decode(), highlight=False)
    elif rows:
        _out.print(_table(rows))
    else:
        _err.print("no records")


@log_app.command("tail")
def tail_command(
    store: StoreOption = DEFAULT_URL,
    after: Annotated[
        int | None,
        typer.Option(min=0, help="Start after this position (default: the end of the log)."),
    ] = None,
    topic: TopicOption = None,
    stream: StreamOption = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many.")] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Follow the log: print records as they are appended (Ctrl-C to stop)."""

    async def work(log: EventStore) -> int:
        start = await log.last_position() if after is None else after
        query, match = build_query(
            after=start, upto=None, topic=topic, stream=stream, since=None, until=None
        )
        shown = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = log._changes.count
        await log._start_watching()
        while count is None or shown < count:
            rows = await log._fetch(query, PAGE)
            if rows:
                query = query._replace(after=rows[-1][0])
            for row in rows if match is None else [r for r in rows if match(r[6])]:
                if count is not None and shown >= count:
                    break
                if as_json:
                    _out.out(_json.encode(_as_dict(row)).decode(), highlight=False)
                else:
                    stamp = to_datetime(row[7]).strftime("%H:%M:%S.%f")[:-3]
                    _out.out(f"{row[0]:>8} {stamp} {row[6]} {row[11]}", highlight=False)
                shown += 1
            if len(rows) == PAGE or (count is not None and shown >= count):
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                seen = await asyncio.wait_for(log._wait_for_change(seen), left)
            except TimeoutError:
                break
        return shown

    _run(store, work)


@log_app.command("stats")
def stats_command(store: StoreOption = DEFAULT_URL) -> None:
    """Count the records of the log by type, and show its extent."""

    async def work(log: EventStore) -> dict[str, Any]:
        last = await log.last_position()
        types: Counter[str] = Counter()
        streams: set[str] = set()
        first_time = last_time = None
        size = 0
        query = Query()
        with _progress("counting", last, show=last > PROGRESS_ABOVE) as advance:
            while True:
                rows = await log._fetch(query, PAGE)
                advance(len(rows))
                for row in rows:
                    types[row[4] or f"{row[6]} (plain JSON)"] += 1
                    if row[2] is not None:
                        streams.add(row[2])
                    size += len(row[11]) + (0 if row[10] is None else len(row[10]))
                if rows:
                    first_time = first_time or rows[0][7]
                    last_time = rows[-1][7]
                    query = query._replace(after=rows[-1][0])
                if len(rows) < PAGE:
                    break
        return {
            "last": last,
            "types": types,
            "streams": len(streams),
            "first": first_time,
            "final": last_time,
            "bytes": size,
        }

    stats = _run(store, work)
    table = Table(show_header=False, show_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("store", store)
    table.add_row("records", f"{sum(stats['types'].values()):,}")
    table.add_row("last position", f"{stats['last']:,}")
    table.add_row("streams", f"{stats['streams']:,}")
    table.add_row("payload bytes", f"{stats['bytes']:,}")
    if stats["first"] is not None:
        table.add_row("first event", to_datetime(stats["first"]).isoformat())
        table.add_row("last event", to_datetime(stats["final"]).isoformat())
    _out.print(table)
    if stats["types"]:
        by_type = Table(show_edge=False, header_style="bold")
        by_type.add_column("type")
        by_type.add_column("records", justify="right")
        for name, number in stats["types"].most_common():
            by_type.add_row(name, f"{number:,}")
        _out.print(by_type)


@log_app.command("verify")
def verify_command(store: StoreOption = DEFAULT_URL) -> None:
    """Recompute the hash chain; exit 1 and name the first broken position, if any.

    Exit codes: 0 the chain is intact; 1 it is broken (a record was changed or is missing:
    tampering); 2 usage error (including a URL that names no existing log); 3 the log is
    damaged or unreadable (restore a backup).
    """

    async def work(log: EventStore) -> tuple[int | None, int]:
        total = await log.last_position()
        with _progress("verifying", total, show=total > PROGRESS_ABOVE) as advance:
            done = 0

            def progress(checked: int, _total: int) -> None:
                nonlocal done
                advance(checked - done)
                done = checked

            return await log.verify(progress=progress), total

    broken, total = _run(store, work)
    if broken is None:
        _out.print(f"[green]ok[/green]: the hash chain of {total:,} records is intact")
        return
    _out.print(
        f"[red]broken[/red]: the record at position {broken} does not match the hash chain "
        "(changed, or missing); records before it are intact. Restore the log from a backup; "
        "stores refuse to append to it unless opened with ?allow_broken_chain=1"
    )
    raise typer.Exit(EXIT_CHAIN_BROKEN)

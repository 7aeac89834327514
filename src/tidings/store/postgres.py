"""An event store in PostgreSQL: :class:`PostgresStore` (needs ``tidings[postgres]``).

Errors: every ``psycopg`` (and pool) error is mapped to a
:class:`~tidings.exceptions.StoreError` by one function, ``_store_error``, which every
operation goes through (the ``_translated`` methods, and :func:`postgres_errors` around the
store's opening); the driver's exception is chained.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from tidings._tasks import cancel_and_wait
from tidings.exceptions import (
    ConcurrencyError,
    InvalidStoreURLError,
    MissingExtraError,
    StoreBusyError,
    StoreCorruptedError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    StoreUnavailableError,
)

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError(
        "PostgresStore needs psycopg 3 and psycopg-pool: pip install 'tidings[postgres]'"
    ) from exc

from tidings.store._rows import GENESIS, Draft, Row, plan_append
from tidings.store.base import (
    Effect,
    EffectFailed,
    EventStore,
    Query,
    chain_break_on_open,
    where_sql,
)
from tidings.store.records import Snapshot, StoreFeatures, StreamState, Transaction
from tidings.store.upcasting import Upcasters

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ("PostgresStore",)

_COLUMNS = (
    "position",
    "id",
    "stream",
    "stream_version",
    "type_name",
    "type_version",
    "topic",
    "time",
    "key",
    "source",
    "headers",
    "payload",
    "hash",
)
_COPY_TYPES = (
    "int8", "text", "text", "int8", "text", "int4", "text", "int8", "text", "text",
    "text", "text", "text",
)  # fmt: skip
_TABLES = ("events", "snapshots", "checkpoints", "handled", "chain_breaks")
_COPY_ABOVE = 4  # rows; smaller batches are inserted with a pipelined INSERT
_DDL_LOCK = int.from_bytes(hashlib.sha256(b"tidings:ddl").digest()[:8], "big", signed=True)
_RECONNECT_DELAY = 0.5


def _store_error(exc: Exception, where: str) -> StoreError:
    """The :class:`StoreError` that says what ``exc`` means for the log at ``where``."""
    errors = psycopg.errors
    if isinstance(exc, errors.DataCorrupted | errors.IndexCorrupted):
        return StoreCorruptedError(
            f"the PostgreSQL log at {where} is damaged ({exc}): restore the tables from a "
            "backup; the server's log names the damaged relation"
        )
    if isinstance(exc, errors.ReadOnlySqlTransaction | errors.InsufficientPrivilege):
        return StoreReadOnlyError(
            f"cannot write the PostgreSQL log at {where} ({exc}): connect to the primary "
            "server, in a read-write session, as a role allowed to write the log's tables "
            "(nothing was written)"
        )
    if isinstance(
        exc,
        errors.LockNotAvailable
        | errors.DeadlockDetected
        | errors.SerializationFailure
        | errors.QueryCanceled,
    ):
        return StoreBusyError(
            f"the PostgreSQL log at {where} was locked or the statement timed out ({exc}); "
            "nothing was written: retry"
        )
    if isinstance(exc, PoolTimeout | psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailableError(
            f"the PostgreSQL server at {where} is unreachable or the connection was lost "
            f"({exc}); check that it runs and accepts connections; an append that failed this "
            "way may have committed: retrying it is safe (appends are idempotent on the id)"
        )
    return StoreError(f"the PostgreSQL log at {where} failed: {exc}")


@contextlib.contextmanager
def postgres_errors(where: str) -> Iterator[None]:
    """Raise any ``psycopg`` or pool error inside as the :class:`StoreError` it means."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        raise _store_error(exc, where) from exc


def _translated(
    method: Callable[Concatenate[PostgresStore, P], Awaitable[R]],
) -> Callable[Concatenate[PostgresStore, P], Coroutine[Any, Any, R]]:
    """Run a store operation, raising a driver error as :func:`_store_error` says (as
    :func:`postgres_errors` does, with no context manager on the way of every call)."""

    @functools.wraps(method)
    async def translated(self: PostgresStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except (psycopg.Error, PoolTimeout) as exc:
            raise _store_error(exc, self._location) from exc

    return translated


def _check_conninfo(url: str) -> None:
    """Refuse a connection string libpq cannot parse, or whose port is not a number, at once
    (rather than as an unreachable server after the connect timeout)."""
    if not isinstance(url, str):
        raise InvalidStoreURLError(
            f"a PostgreSQL URL is a str, not {type(url).__name__}", url=repr(url)
        )
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise InvalidStoreURLError(
            f"malformed PostgreSQL URL {url!r}: {exc}; use postgresql://user@host:5432/dbname",
            url=url,
        ) from None
    for port in str(info.get("port") or "").split(","):
        if port and not port.isdigit():
            raise InvalidStoreURLError(
                f"malformed PostgreSQL URL {url!r}: the port {port!r} is not a number; use "
                "postgresql://user@host:5432/dbname",
                url=url,
            )


def _key(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class PostgresStore(EventStore):
    """An event store in PostgreSQL, shared by any number of processes and machines.

    Gap-free positions, never skipped by readers
        PostgreSQL sequences leave gaps (rolled-back transactions) and commit out of order
        (position 8 can become visible before 7), so a reader at 8 would skip 7 forever.
        tidings assigns positions itself, under a transaction-scoped advisory lock
        (``pg_advisory_xact_lock``) that every append to this log takes first. The next
        statement of the append, run under the lock and with a fresh snapshot (READ
        COMMITTED), reads the last committed position and hash; the append inserts after
        them and commits, and PostgreSQL releases the lock only after the commit is visible.
        So appends are serialised, positions are contiguous, and commit order is position
        order: once a reader sees position ``n``, every position below it is visible too.
        ``test_positions_follow_commit_order_under_the_position_lock`` stalls one writer
        inside its transaction to show a later writer waiting for it.

    Round trips
        A careful append pipelines begin, lock and the reads (one round trip), then writes
        the rows (a binary ``COPY`` for more than four, an ``INSERT`` otherwise) and
        pipelines notify and commit. A store that remembers the record it appended last
        (its *tail*) appends up to four events in one round trip instead: begin, lock,
        insert at the tail's next position, notify, commit. No read is needed, because the
        keys check the guess: the primary key refuses a taken position (someone appended
        since), the id index a known id, the stream index an existing stream
        (``NO_STREAM``). Any refusal rolls back and the append is redone carefully, so
        the result is always the careful one. Exact ``expected_version`` appends and
        ``ANY`` appends to a stream always take the careful path.

    Live subscriptions use ``LISTEN/NOTIFY``: every append notifies the log's channel on
    commit, and one listening connection per store wakes all its subscriptions. A
    subscription also re-reads every ``poll_interval`` seconds as a safety net.

    The store opens its connection pool and creates its tables on first use (or on
    ``async with``). Tables are ``{schema}.{table_prefix}events``, ``...snapshots``,
    ``...checkpoints`` and ``...handled``.

    Args:
        url: a libpq connection string or URL (``postgresql://user@host:5432/db``).
        schema: the schema holding the tables (created if missing).
        table_prefix: prefix of the table names, so several logs can share a schema.
        pool_size: the most connections the store opens (plus one for listening).
        connect_timeout: seconds to wait for a connection.
        poll_interval: seconds between safety re-reads of a waiting subscription.
        upcasters: the upcasters to run on read (a fresh registry by default).
        allow_broken_chain: append even when the hash chain is known to be broken (see
            "Tamper evidence" in :mod:`tidings.store.base`); by default such appends raise
            :class:`~tidings.exceptions.ChainBrokenError`.
        create: create the schema's tables if missing (the default); when false, a schema
            without them raises :class:`~tidings.exceptions.StoreNotFoundError` on opening
            and nothing is created (for read-only uses such as ``tidings log``).

    Transactional handlers (:meth:`~EventStore.commit_with`) get a pooled
    ``psycopg.AsyncConnection`` inside the transaction that commits the checkpoint.
    """

    features = StoreFeatures(
        durable=True,
        multi_process=True,
        notifications=True,
        sync_append=False,
        transactions=True,
    )

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        table_prefix: str = "tidings_",
        pool_size: int = 8,
        connect_timeout: float = 10.0,
        poll_interval: float = 5.0,
        upcasters: Upcasters | None = None,
        allow_broken_chain: bool = False,
        create: bool = True,
    ) -> None:
        super().__init__(upcasters=upcasters, allow_broken_chain=allow_broken_chain)
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size is an int >= 1, not {pool_size!r}")
        _check_conninfo(url)
        self.url = url
        self.schema = schema
        self.table_prefix = table_prefix
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._create = create
        self._poll_interval = poll_interval
        self._pool: AsyncConnectionPool | None = None
        self._open_lock: asyncio.Lock | None = None
        self._listener: asyncio.Task[None] | None = None
        self._tail: tuple[int, str] | None = None  # (position, hash) this store last wrote
        qualified = f"{schema}.{table_prefix}events"
        self._lock_key = _key(f"tidings:{qualified}")
        self._channel = f"tidings_{hashlib.sha256(qualified.encode()).hexdigest()[:20]}"
        self._location = self._where()
        self._sql = self._statements()
        self._columns = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))

    def __repr__(self) -> str:
        return f"PostgresStore({self._where()!r}, schema={self.schema!r})"

    def _where(self) -> str:
        try:
            info = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return "<malformed connection string>"
        return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.table_prefix}{name}")

    def _statements(self) -> dict[str, sql.Composed]:
        events = self._table("events")
        columns = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
        marks = sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS))
        return {
            "lock": sql.SQL("SELECT pg_advisory_xact_lock(%s)").format(),
            # One index probe per id, whatever the planner's statistics say.
            "known": sql.SQL(
                "SELECT k.id, (SELECT e.position FROM {} AS e WHERE e.id = k.id) "
                "FROM unnest(%s::text[]) AS k(id)"
            ).format(events),
            "stream_version": sql.SQL(
                "SELECT coalesce(max(stream_version), 0) FROM {} WHERE stream = %s"
            ).format(events),
            "last": sql.SQL("SELECT position, hash FROM {} ORDER BY position DESC LIMIT 1").format(
                events
            ),
            "insert": sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(events, columns, marks),
            "copy": sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(events, columns),
            "notify": sql.SQL("SELECT pg_notify(%s, %s)").format(),
            "last_position": sql.SQL("SELECT coalesce(max(position), 0) FROM {}").format(events),
            "save_snapshot": sql.SQL(
                "INSERT INTO {} (name, position, state) VALUES (%s, %s, %s) ON CONFLICT (name) "
                "DO UPDATE SET position = excluded.position, state = excluded.state"
            ).format(self._table("snapshots")),
            "load_snapshot": sql.SQL("SELECT position, state FROM {} WHERE name = %s").format(
                self._table("snapshots")
            ),
            "load_checkpoint": sql.SQL("SELECT position FROM {} WHERE name = %s").format(
                self._table("checkpoints")
            ),
            "commit": sql.SQL(
                "INSERT INTO {} (name, position) VALUES (%s, %s) ON CONFLICT (name) "
                "DO UPDATE SET position = excluded.position"
            ).format(self._table("checkpoints")),
            "handled": sql.SQL(
                "INSERT INTO {} (name, event_id) SELECT %s, unnest(%s::text[]) "
                "ON CONFLICT DO NOTHING"
            ).format(self._table("handled")),
            "was_handled": sql.SQL("SELECT 1 FROM {} WHERE name = %s AND event_id = %s").format(
                self._table("handled")
            ),
        }

    def _schema_sql(self) -> list[sql.Composed]:
        events = self._table("events")
        return [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                'position bigint PRIMARY KEY, id text COLLATE "C" NOT NULL UNIQUE, '
                'stream text COLLATE "C", stream_version bigint, type_name text COLLATE "C", '
                'type_version integer NOT NULL, topic text COLLATE "C" NOT NULL, '
                "time bigint NOT NULL, key text, source text NOT NULL, "
                "headers text, payload text NOT NULL, hash text NOT NULL)"
            ).format(events),
            sql.SQL(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (stream, stream_version) "
                "WHERE stream IS NOT NULL"
            ).format(sql.Identifier(f"{self.table_prefix}events_stream"), events),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "name text PRIMARY KEY, position bigint NOT NULL, state bytea NOT NULL)"
            ).format(self._table("snapshots")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, position bigint NOT NULL)"
            ).format(self._table("checkpoints")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "name text NOT NULL, event_id text NOT NULL, PRIMARY KEY (name, event_id))"
            ).format(self._table("handled")),
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (position bigint NOT NULL)").format(
                self._table("chain_breaks")
            ),
        ]

    # -- connection ------------------------------------------------------------------------

    async def _open(self) -> None:
        await self._ready()

    async def _ready(self) -> AsyncConnectionPool:
        pool = self._pool
        if pool is not None:
            return pool
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._pool is not None:
                return self._pool
            self._check_open()
            pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                open=False,
                kwargs={"autocommit": True},
                timeout=self._connect_timeout,
                name=f"tidings-{self.schema}",
            )
            try:
                with postgres_errors(f"{self._location} (schema {self.schema!r})"):
                    # Connect once first: a server that cannot be reached fails at once with
                    # its cause ("connection refused"), which the pool would only log while
                    # it retried until its timeout.
                    probe = await psycopg.AsyncConnection.connect(
                        self.url, connect_timeout=max(1, round(self._connect_timeout))
                    )
                    await probe.close()
                    await pool.open(wait=True, timeout=self._connect_timeout)
                    async with pool.connection() as conn:
                        # Create what is missing; a log that exists opens without DDL, so
                        # a read-only session (a standby) can read and verify it.
                        cursor = await conn.execute(
                            "SELECT count(*) FROM pg_tables "
                            "WHERE schemaname = %s AND tablename = ANY(%s)",
                            (self.schema, [f"{self.table_prefix}{name}" for name in _TABLES]),
                        )
                        found = await cursor.fetchone()
                        if not self._create and (found is None or found[0] == 0):
                            raise StoreNotFoundError(
                                f"there is no tidings log in schema {self.schema!r} at "
                                f"{self._location} (no {self.table_prefix}* tables); nothing "
                                "was created: check the URL and schema for a typo"
                            )
                        if found is None or found[0] < len(_TABLES):
                            async with conn.transaction():
                                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                                for statement in self._schema_sql():
                                    await conn.execute(statement)
                        cursor = await conn.execute(
                            sql.SQL("SELECT {} FROM {} ORDER BY position DESC LIMIT 2").format(
                                self._columns, self._table("events")
                            )
                        )
                        last_rows = await cursor.fetchall()
                        cursor = await conn.execute(
                            sql.SQL("SELECT min(position) FROM {}").format(
                                self._table("chain_breaks")
                            )
                        )
                        recorded = await cursor.fetchone()
            except BaseException:
                await pool.close()
                raise
            self._found_chain_break(
                chain_break_on_open(last_rows, None if recorded is None else recorded[0])
            )
            self._pool = pool
            return pool

    # -- writing ---------------------------------------------------------------------------

    @_translated
    async def _append(
        self, drafts: Sequence[Draft], stream: str | None, expected_version: int | StreamState
    ) -> tuple[list[int], bool]:
        await self._ready()
        self._check_chain()  # the first append opens the store, which checks the chain's end
        tail = self._tail
        if (
            tail is not None
            and len(drafts) <= _COPY_ABOVE
            and (stream is None or expected_version is StreamState.NO_STREAM)
        ):
            try:
                return await self._append_after(tail, drafts, stream, expected_version)
            except psycopg.errors.UniqueViolation:
                self._tail = None
        # Optimistically assume every id is new: the UNIQUE index on id catches a known one,
        # and only then is the transaction redone with a lookup of the ids. A version
        # mismatch is confirmed the same way, as known ids may explain it.
        try:
            return await self._append_once(drafts, stream, expected_version, lookup=False)
        except (psycopg.errors.UniqueViolation, ConcurrencyError):
            return await self._append_once(drafts, stream, expected_version, lookup=True)

    async def _append_after(
        self,
        tail: tuple[int, str],
        drafts: Sequence[Draft],
        stream: str | None,
        expected_version: int | StreamState,
    ) -> tuple[list[int], bool]:
        """Append in one round trip, assuming ``tail`` is still the log's last record.

        Safe without reading the log's end: the primary key refuses position ``tail + 1``
        if it is taken (the tail was stale), the unique indexes refuse a known id or an
        existing stream (``NO_STREAM``), and any refusal raises ``UniqueViolation`` before
        anything is committed; the caller then appends the careful way.
        """
        rows, positions = plan_append(
            drafts,
            {},
            stream=stream,
            stream_version=0,
            expected_version=expected_version,
            last_position=tail[0],
            last_hash=tail[1],
        )
        statements = self._sql
        async with self._writing() as conn, conn.pipeline():
            await conn.execute("BEGIN")
            await conn.execute(statements["lock"], (self._lock_key,))
            async with conn.cursor() as cursor:
                await cursor.executemany(statements["insert"], rows)
            await conn.execute(statements["notify"], (self._channel, str(rows[-1][0])))
            await conn.execute("COMMIT")
        self._tail = (rows[-1][0], rows[-1][12])
        return positions, True

    async def _append_once(
        self,
        drafts: Sequence[Draft],
        stream: str | None,
        expected_version: int | StreamState,
        *,
        lookup: bool,
    ) -> tuple[list[int], bool]:
        statements = self._sql
        async with self._writing() as conn:
            # Round trip 1: begin, take the position lock, then (fresh snapshot, under
            # the lock) read the ids already stored, the stream version, the log's end.
            async with conn.pipeline():
                await conn.execute("BEGIN")
                await conn.execute(statements["lock"], (self._lock_key,))
                known_cursor = (
                    await conn.execute(statements["known"], ([d[0] for d in drafts],))
                    if lookup
                    else None
                )
                version_cursor = (
                    await conn.execute(statements["stream_version"], (stream,))
                    if stream is not None
                    else None
                )
                last_cursor = await conn.execute(statements["last"])
            known: dict[str, int] = {}
            if known_cursor is not None:
                known = {r[0]: r[1] for r in await known_cursor.fetchall() if r[1]}
            version_row = None if version_cursor is None else await version_cursor.fetchone()
            last = await last_cursor.fetchone()
            rows, positions = plan_append(
                drafts,
                known,
                stream=stream,
                stream_version=0 if version_row is None else int(version_row[0]),
                expected_version=expected_version,
                last_position=0 if last is None else int(last[0]),
                last_hash=GENESIS if last is None else str(last[1]),
            )
            if len(rows) > _COPY_ABOVE:
                async with conn.cursor().copy(statements["copy"]) as copy:
                    copy.set_types(_COPY_TYPES)
                    for row in rows:
                        await copy.write_row(row)
            # Round trip 2 (3 after a COPY): insert, notify, commit.
            async with conn.pipeline():
                if rows and len(rows) <= _COPY_ABOVE:
                    async with conn.cursor() as cursor:
                        await cursor.executemany(statements["insert"], rows)
                if rows:
                    await conn.execute(statements["notify"], (self._channel, str(rows[-1][0])))
                await conn.execute("COMMIT")
        if rows:
            self._tail = (rows[-1][0], rows[-1][12])
        return positions, bool(rows)

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection for a transaction driven by hand, rolled back on any error."""
        pool = await self._ready()
        async with pool.connection() as conn:
            try:
                yield conn
            except BaseException:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    await conn.rollback()
                raise

    # -- reading ---------------------------------------------------------------------------

    @_translated
    async def _fetch(self, query: Query, limit: int) -> list[Row]:
        pool = await self._ready()
        where, params = where_sql(query, mark="%s", prefix_test="starts_with(topic, %s)")
        params.append(limit)
        statement = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY position LIMIT %s").format(
            self._columns, self._table("events"), sql.SQL(where)
        )
        async with pool.connection() as conn:
            cursor = conn.cursor(binary=True)
            await cursor.execute(statement, params)
            rows: list[Row] = await cursor.fetchall()
        return rows

    @_translated
    async def _scalar(self, statement: sql.Composed, params: Sequence[Any] = ()) -> Any:
        pool = await self._ready()
        async with pool.connection() as conn:
            cursor = await conn.execute(statement, params)
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _last_position(self) -> int:
        return int(await self._scalar(self._sql["last_position"]))

    async def _stream_version(self, stream: str) -> int:
        return int(await self._scalar(self._sql["stream_version"], (stream,)))

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        await self._scalar_exec(
            self._sql["save_snapshot"], (snapshot.name, snapshot.position, snapshot.state)
        )

    @_translated
    async def _scalar_exec(self, statement: sql.Composed, params: Sequence[Any]) -> None:
        pool = await self._ready()
        async with pool.connection() as conn:
            await conn.execute(statement, params)

    @_translated
    async def _load_snapshot(self, name: str) -> Snapshot | None:
        pool = await self._ready()
        async with pool.connection() as conn:
            cursor = await conn.execute(self._sql["load_snapshot"], (name,))
            row = await cursor.fetchone()
        return None if row is None else Snapshot(name, int(row[0]), bytes(row[1]))

    async def _load_checkpoint(self, name: str) -> int:
        return int(await self._scalar(self._sql["load_checkpoint"], (name,)) or 0)

    @_translated
    async def _commit(self, name: str, position: int, handled_ids: list[str]) -> None:
        pool = await self._ready()
        async with pool.connection() as conn, conn.pipeline(), conn.transaction():
            await self._write_checkpoint(conn, name, position, handled_ids)

    async def _write_checkpoint(
        self, conn: psycopg.AsyncConnection[Any], name: str, position: int, handled_ids: list[str]
    ) -> None:
        await conn.execute(self._sql["commit"], (name, position))
        if handled_ids:
            await conn.execute(self._sql["handled"], (name, handled_ids))

    @_translated
    async def _record_chain_break(self, position: int | None) -> None:
        pool = await self._ready()
        table = self._table("chain_breaks")
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(sql.SQL("DELETE FROM {}").format(table))
            if position is not None:
                await conn.execute(
                    sql.SQL("INSERT INTO {} (position) VALUES (%s)").format(table), (position,)
                )

    @_translated
    async def _commit_with(
        self, name: str, position: int, handled_ids: list[str], effect: Effect
    ) -> None:
        pool = await self._ready()
        async with pool.connection() as conn, conn.transaction():
            try:
                result = effect(Transaction(conn, name, position))
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                raise EffectFailed(exc) from exc
            async with conn.pipeline():
                await self._write_checkpoint(conn, name, position, handled_ids)

    async def _was_handled(self, name: str, event_id: str) -> bool:
        return await self._scalar(self._sql["was_handled"], (name, event_id)) is not None

    # -- live following --------------------------------------------------------------------

    async def _start_watching(self) -> None:
        await self._ready()
        listener = self._listener
        if listener is not None and not listener.done():
            return
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(ready), name="tidings-pg-listen")
        await ready

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=int(self._connect_timeout)
                )
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    if not ready.done():
                        ready.set_result(None)
                    self._changes.notify()  # anything missed while (re)connecting
                    async for _ in conn.notifies():
                        self._changes.notify()
            except psycopg.Error as exc:
                if not ready.done():
                    ready.set_exception(
                        StoreError(f"cannot listen for appends at {self._where()}: {exc}")
                    )
                    return
                await asyncio.sleep(_RECONNECT_DELAY)  # back off before reconnecting

    async def _poll_changes(self) -> bool:
        return True  # the safety net: re-read after every quiet poll_interval

    # -- lifecycle -------------------------------------------------------------------------

    async def _close(self) -> None:
        # Only one close runs (the store is marked closed first): the pool is closed even
        # when the caller is cancelled while the listener ends (the cancellation then goes
        # on up once the pool is closed).
        listener, self._listener = self._listener, None
        try:
            if listener is not None:
                await cancel_and_wait(listener)
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()

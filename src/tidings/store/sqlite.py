"""An event store in one SQLite file: :class:`SQLiteStore`.

Errors: every ``sqlite3`` error is mapped to a :class:`~tidings.exceptions.StoreError` by one
function, ``_store_error``, which every operation goes through (the ``_translated`` methods,
and :func:`sqlite_errors` around the store's opening and polling); the ``sqlite3`` exception
is chained as the cause.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import operator
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from tidings.exceptions import (
    ConcurrencyError,
    InvalidHandlerError,
    StoreBusyError,
    StoreCorruptedError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from tidings.store._changes import Changes
from tidings.store._rows import GENESIS, Draft, Row, plan_append
from tidings.store._sync import SyncStore
from tidings.store.base import Effect, EffectFailed, Query, chain_break_on_open, where_sql
from tidings.store.records import Snapshot, StoreFeatures, StreamState, Transaction
from tidings.store.upcasting import Upcasters

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ("DEFAULT_PATH", "SQLiteStore")

DEFAULT_PATH = ".tidings/events.db"
"""Where :class:`SQLiteStore` keeps its log unless told otherwise."""

SCHEMA_VERSION = 2
"""1: events, snapshots, checkpoints, handled; 2: chain_breaks (created on opening a 1)."""

COLUMNS = (
    "position, id, stream, stream_version, type_name, type_version, topic, time, key, source, "
    "headers, payload, hash"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    stream TEXT,
    stream_version INTEGER,
    type_name TEXT,
    type_version INTEGER NOT NULL,
    topic TEXT NOT NULL,
    time INTEGER NOT NULL,
    key TEXT,
    source TEXT NOT NULL,
    headers TEXT,
    payload TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream ON events (stream, stream_version)
    WHERE stream IS NOT NULL;
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    state BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS handled (
    name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (name, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chain_breaks (
    position INTEGER NOT NULL
);
"""

_LAST = "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
_STREAM_VERSION = "SELECT max(stream_version) FROM events WHERE stream = ?"
_ID_CHUNK = 500
_INSERT_CHUNK = 200  # rows per INSERT statement: 2,600 parameters, well under SQLite's limit
_NAMES = tuple(COLUMNS.split(", "))
_STATEMENTS_KEPT = 256  # INSERT statements kept by shape (cleared past it: shapes can vary)
_TAIL_KEPT = 4096  # rows this connection appended last, kept to serve reads of them
_TAIL_TEXT = 1 << 23  # at most this many characters of payload in those rows (~8 MB)
_payload_of = operator.itemgetter(11)
_OPTIONAL = (2, 3, 4, 8, 10)  # stream, stream_version, type_name, key, headers: often NULL
_optional_values = operator.itemgetter(*_OPTIONAL)
_OPTIONAL_COLUMN = tuple(operator.itemgetter(index) for index in _OPTIONAL)
_COLUMN = tuple(operator.itemgetter(index) for index in range(len(_NAMES)))
# stream, type_name, type_version, topic, key, source, headers: often alike in a batch
_SHAREABLE = frozenset((2, 4, 5, 6, 8, 9, 10))
_NONES = itertools.repeat(None)
# Which optional columns have a value in some row -> the columns to bind (at most 32 keys).
_columns_by_presence: dict[tuple[bool, ...], tuple[int, ...]] = {}


def _positions_only(query: Query) -> bool:
    """Whether ``query`` selects by position alone (``after``, ``upto``), as the tail of
    rows kept in memory can answer: every other field, read by name, is unset."""
    return (
        query.stream is None
        and query.topic is None
        and query.prefix is None
        and query.since is None
        and query.until is None
    )


def _store_error(exc: sqlite3.Error, path: str, busy_timeout: float) -> StoreError:
    """The :class:`StoreError` that says what ``exc`` means for the log at ``path``."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    if code == sqlite3.SQLITE_NOTADB:
        return StoreCorruptedError(
            f"{path!r} cannot be used as a tidings SQLite log ({exc}): it is not a SQLite "
            "database, or its header is damaged; check the path, or restore it from a backup"
        )
    if code == sqlite3.SQLITE_CORRUPT:
        return StoreCorruptedError(
            f"the SQLite log at {path!r} is damaged ({exc}): its file has unreadable pages "
            "(not tampered records); restore it from a backup"
        )
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
        return StoreReadOnlyError(
            f"cannot write the SQLite log at {path!r} ({exc}): the file, its directory or "
            "its -wal/-shm files are read-only for this process; give it write permission "
            "(nothing was written)"
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusyError(
            f"the SQLite log at {path!r} stayed locked by another connection for more than "
            f"busy_timeout={busy_timeout} s ({exc}); nothing was written: retry, or open the "
            "store with a longer busy_timeout"
        )
    if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN):
        return StoreError(
            f"I/O error on the SQLite log at {path!r} ({exc}): check the disk (space, "
            "health) and that the file and its directory still exist"
        )
    return StoreError(f"the SQLite log at {path!r} failed: {exc}")


@contextmanager
def sqlite_errors(path: str, busy_timeout: float) -> Iterator[None]:
    """Raise any ``sqlite3`` error inside as the :class:`StoreError` it means."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _store_error(exc, path, busy_timeout) from exc


def _translated(
    method: Callable[Concatenate[SQLiteStore, P], R],
) -> Callable[Concatenate[SQLiteStore, P], R]:
    """Run a store operation, raising a driver error as :func:`_store_error` says (as
    :func:`sqlite_errors` does, with no context manager on the way of every call)."""

    @functools.wraps(method)
    def translated(self: SQLiteStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:  # free when nothing is raised: appends pass here
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _store_error(exc, str(self.path), self.busy_timeout) from exc

    return translated


def _finish_without_suspending(result: object) -> None:
    """Run an effect's awaitable to its end at once; refuse one that suspends, as it
    would hold SQLite's write lock (and this thread's connection) while others run."""
    if not inspect.isawaitable(result):
        return
    steps = result.__await__()
    try:
        next(steps)
    except StopIteration:
        return
    close = getattr(steps, "close", None)
    if close is not None:
        close()
    raise InvalidHandlerError(
        "a transactional handler on SQLiteStore awaited something that suspends while it "
        "held the log's write lock; write the effect with transaction.connection "
        "(synchronous sqlite3 calls) and do not await inside the handler"
    )


def _insert_sql(
    columns: tuple[int, ...], shared: tuple[int, ...], count: int
) -> tuple[str, tuple[int, ...]]:
    """An INSERT of ``count`` rows of ``columns``, where the ``shared`` columns (the same
    value in every row) are bound once, as parameters ``?1`` to ``?k``; and the columns
    bound per row, in order (their values follow the shared ones)."""
    names = ", ".join(_NAMES[index] for index in columns)
    own = tuple(index for index in columns if index not in shared)
    if not shared:
        marks = "(" + ", ".join("?" * len(columns)) + ")"
        return f"INSERT INTO events ({names}) VALUES " + ", ".join([marks] * count), own
    number = {index: n for n, index in enumerate(shared, 1)}
    counter = itertools.count(len(shared) + 1)
    rows = [
        "(" + ", ".join(f"?{number.get(index) or next(counter)}" for index in columns) + ")"
        for _ in range(count)
    ]
    return f"INSERT INTO events ({names}) VALUES " + ", ".join(rows), own


def _shared_of(columns: tuple[int, ...], rows: Sequence[Row]) -> tuple[int, ...]:
    """The columns among ``columns`` that hold the same value in every row of ``rows``
    (several rows): bound once rather than per row, as each bound value costs sqlite3 a
    call and a lock of the connection's mutex. (Sets built by C-level iteration.)"""
    if len(rows) == 1:
        return ()
    return tuple(
        index
        for index in columns
        if index in _SHAREABLE and len(set(map(_COLUMN[index], rows))) == 1
    )


def _columns_of(rows: Sequence[Row]) -> tuple[int, ...]:
    """The columns to bind: all but the optional ones that are NULL in every row.

    Leaving NULL columns to their default skips CPython's per-value adapter lookup, which
    sqlite3 does for every ``None`` it binds. (Looked up by which optional columns have a
    value, found with C-level iteration: this runs for every append.)
    """
    if len(rows) == 1:
        present = tuple(map(operator.is_not, _optional_values(rows[0]), _NONES))
    else:
        present = tuple(
            [any(map(operator.is_not, map(column, rows), _NONES)) for column in _OPTIONAL_COLUMN]
        )
    columns = _columns_by_presence.get(present)
    if columns is None:
        wanted = {index for index, has in zip(_OPTIONAL, present, strict=True) if has}
        columns = _columns_by_presence[present] = tuple(
            index for index in range(len(_NAMES)) if index not in _OPTIONAL or index in wanted
        )
    return columns


def _write_checkpoint(
    conn: sqlite3.Connection, name: str, position: int, handled_ids: list[str]
) -> None:
    conn.execute(
        "INSERT INTO checkpoints (name, position) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        (name, position),
    )
    if handled_ids:
        conn.executemany(
            "INSERT OR IGNORE INTO handled (name, event_id) VALUES (?, ?)",
            [(name, event_id) for event_id in handled_ids],
        )


# One change counter per database file, so every store on a file in this process wakes
# the others' subscriptions at once; other processes are noticed by polling data_version.
_changes_by_file: weakref.WeakValueDictionary[str, Changes] = weakref.WeakValueDictionary()
_changes_lock = threading.Lock()


def _changes_for(path: str) -> Changes:
    with _changes_lock:
        changes = _changes_by_file.get(path)
        if changes is None:
            changes = _changes_by_file[path] = Changes()
        return changes


class _WriteTransaction:
    """``with``: a write transaction on a store's connection, under the store's lock
    (``BEGIN IMMEDIATE``; ``COMMIT`` on leaving, ``ROLLBACK`` on an exception). Holds no
    state of its own (the lock is reentrant), so one per store serves every transaction
    (a class rather than a generator context manager: no objects made per transaction)."""

    __slots__ = ("_check_open", "_store")

    def __init__(self, store: SQLiteStore, check_open: Callable[[], None]) -> None:
        self._store = store
        self._check_open = check_open

    def __enter__(self) -> sqlite3.Connection:
        store = self._store
        store._lock.acquire()
        try:
            self._check_open()
            conn = store._conn
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            store._lock.release()
            raise
        return conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        store = self._store
        try:
            conn = store._conn
            if kind is None:
                conn.execute("COMMIT")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            store._lock.release()


class SQLiteStore(SyncStore):
    """An event store in one SQLite file, safe for several processes on one machine.

    The database runs in WAL mode: readers never block the writer nor each other. Each
    append is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's single write lock
    before reading the log's end, so appends from every connection and process are
    serialised: positions are assigned in commit order, gap-free, and a reader can never
    see position ``n + 1`` without ``n``. A writer that finds the lock taken waits up to
    ``busy_timeout`` seconds.

    Calls run inline in the event loop, not in a worker thread: an append of a batch or a
    page of reads takes microseconds to a few milliseconds of local I/O, less than a thread
    hop costs, and inline calls keep single appends fast and ordering trivial. The price is
    that the loop is blocked for that long (and, when another process holds the write lock,
    for up to that process's transaction); use :meth:`~EventStore.iter_read` for long reads,
    which yields to the loop between pages. :meth:`append_sync` is safe from any thread;
    one lock serialises the store's use of its connection.

    Reads of the rows this store appended last (at most 8,192 rows and about 8 million
    characters of payload: what a log follower of the same process, such as a gateway
    routing its intake, reads next) are served from memory, as long as no other connection
    has committed since (``PRAGMA data_version`` is unchanged: another connection's append
    or change sends the read to the database); the rows kept are the very rows committed.

    Live subscriptions are woken at once by appends made through any store on the same
    file in this process, and notice appends by other processes by polling
    ``PRAGMA data_version`` (a cheap read of a counter) every ``poll_interval`` seconds.

    Args:
        path: the database file; it and its directory are created if missing (unless
            ``create`` is false).
        synchronous: ``"normal"`` (default) makes every committed append survive a crash
            of the process (the WAL is written before the append returns); a power loss or
            OS crash may lose the last appends, never consistency. ``"full"`` also fsyncs
            the WAL on every commit, surviving power loss, at a cost per commit.
        busy_timeout: seconds a write waits for another connection's write lock.
        poll_interval: seconds between checks for other processes' appends while a
            subscription waits.
        upcasters: the upcasters to run on read (a fresh registry by default).
        allow_broken_chain: append even when the hash chain is known to be broken (see
            "Tamper evidence" in :mod:`tidings.store.base`); by default such appends raise
            :class:`~tidings.exceptions.ChainBrokenError`.
        create: create the file (and its directory) if missing (the default); when false,
            a missing file raises :class:`~tidings.exceptions.StoreNotFoundError` and
            nothing is created (for read-only uses such as ``tidings log``).

    Transactional handlers (:meth:`~EventStore.commit_with`) get the store's
    :class:`sqlite3.Connection` inside a ``BEGIN IMMEDIATE`` transaction; they run
    synchronously, holding the write lock, and must not suspend.

    Raises:
        StoreError: if the file is not a tidings log of a version this code understands,
            or cannot be opened (:class:`~tidings.exceptions.StoreCorruptedError` for a
            damaged file).
    """

    features = StoreFeatures(
        durable=True,
        multi_process=True,
        notifications=False,
        sync_append=True,
        transactions=True,
    )

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        synchronous: Literal["normal", "full"] = "normal",
        busy_timeout: float = 10.0,
        poll_interval: float = 0.05,
        upcasters: Upcasters | None = None,
        allow_broken_chain: bool = False,
        create: bool = True,
    ) -> None:
        super().__init__(upcasters=upcasters, allow_broken_chain=allow_broken_chain)
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous is 'normal' or 'full', not {synchronous!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval is a positive number, not {poll_interval!r}")
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._poll_interval = poll_interval
        self._lock = threading.RLock()
        self._write_transaction = _WriteTransaction(self, self._check_open)
        self._insert_sql: dict[
            tuple[tuple[int, ...], tuple[int, ...], int], tuple[str, tuple[int, ...]]
        ] = {}
        # the rows this connection committed last, at consecutive positions, and the
        # data_version since which no other connection committed (see _fetch_now)
        self._tail: list[Row] = []
        self._tail_text = 0  # characters of payload in the tail
        self._tail_version = -1
        if not create and (str(path) == ":memory:" or not self.path.is_file()):
            raise StoreNotFoundError(
                f"there is no SQLite log at {str(path)!r} (no such file); nothing was created: "
                "check the path for a typo"
            )
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                str(path),
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=512,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the SQLite log at {str(path)!r}: {exc}") from exc
        self._changes = _changes_for(os.path.realpath(path))
        try:
            with sqlite_errors(str(path), busy_timeout):
                self._setup(synchronous)
                self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
                self._tail_version = self._data_version
                last_rows = self._conn.execute(
                    f"SELECT {COLUMNS} FROM events ORDER BY position DESC LIMIT 2"
                ).fetchall()
                recorded = self._recorded_chain_break()
        except BaseException:
            self._conn.close()
            raise
        self._found_chain_break(chain_break_on_open(last_rows, recorded))

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _recorded_chain_break(self) -> int | None:
        conn = self._conn
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chain_breaks'").fetchone():
            position: int | None = conn.execute(
                "SELECT min(position) FROM chain_breaks"
            ).fetchone()[0]
            return position
        return None  # an older log opened read-only

    @_translated
    def _record_chain_break_now(self, position: int | None) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM chain_breaks")
            if position is not None:
                conn.execute("INSERT INTO chain_breaks (position) VALUES (?)", (position,))

    def _setup(self, synchronous: str) -> None:
        conn = self._conn
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute("PRAGMA cache_size = -32000")
        conn.execute("PRAGMA temp_store = MEMORY")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{str(self.path)!r} holds a tidings log of schema version {version}, "
                f"newer than this tidings understands ({SCHEMA_VERSION}); upgrade tidings"
            )
        if version < SCHEMA_VERSION:
            try:
                with self._transaction():
                    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except sqlite3.OperationalError as exc:
                # An older log this process cannot write still opens, to be read.
                readonly = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY
                if version == 0 or not readonly:
                    raise
        if mode.lower() != "wal" and str(self.path) != ":memory:":
            raise StoreError(f"{str(self.path)!r} could not be switched to WAL mode ({mode})")

    def _transaction(self) -> _WriteTransaction:
        """A write transaction holding SQLite's write lock (``BEGIN IMMEDIATE``)."""
        return self._write_transaction

    @_translated
    def _append_now(
        self, drafts: Sequence[Draft], stream: str | None, expected_version: int | StreamState
    ) -> tuple[list[int], bool]:
        # Optimistically assume every id is new: the UNIQUE index on id catches a known one,
        # and only then is the transaction rolled back and redone with a lookup of the ids.
        # A version mismatch is confirmed the same way, as known ids may explain it.
        try:
            return self._append_once(drafts, stream, expected_version, lookup=False)
        except (sqlite3.IntegrityError, ConcurrencyError):
            return self._append_once(drafts, stream, expected_version, lookup=True)

    def _append_once(
        self,
        drafts: Sequence[Draft],
        stream: str | None,
        expected_version: int | StreamState,
        *,
        lookup: bool,
    ) -> tuple[list[int], bool]:
        with self._transaction() as conn:
            known: dict[str, int] = {}
            if lookup:
                ids = [item[0] for item in drafts]
                for start in range(0, len(ids), _ID_CHUNK):
                    chunk = ids[start : start + _ID_CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    known.update(
                        conn.execute(
                            f"SELECT id, position FROM events WHERE id IN ({marks})", chunk
                        )
                    )
            version = 0
            if stream is not None:
                version = conn.execute(_STREAM_VERSION, (stream,)).fetchone()[0] or 0
            last = conn.execute(_LAST).fetchone()
            rows, positions = plan_append(
                drafts,
                known,
                stream=stream,
                stream_version=version,
                expected_version=expected_version,
                last_position=0 if last is None else last[0],
                last_hash=GENESIS if last is None else last[1],
            )
            # One multi-row INSERT binds parameters faster than executemany's row-by-row.
            for start in range(0, len(rows), _INSERT_CHUNK):
                part = rows[start : start + _INSERT_CHUNK]
                columns = _columns_of(part)
                shared = _shared_of(columns, part)
                key = (columns, shared, len(part))
                statement = self._insert_sql.get(key)
                if statement is None:
                    if len(self._insert_sql) >= _STATEMENTS_KEPT:
                        self._insert_sql.clear()
                    statement = self._insert_sql[key] = _insert_sql(columns, shared, len(part))
                sql, own = statement
                if len(own) == len(_NAMES):
                    values = [value for row in part for value in row]
                else:
                    first = part[0]
                    values = [first[index] for index in shared]
                    values += [row[index] for row in part for index in own]
                conn.execute(sql, values)
        if rows:
            self._keep_tail(rows)
        return positions, bool(rows)

    def _keep_tail(self, rows: list[Row]) -> None:
        """Keep ``rows``, just committed, as the last of the tail (restarted when they do not
        follow it: another connection appended between)."""
        with self._lock:
            tail = self._tail
            if tail and tail[-1][0] + 1 != rows[0][0]:
                tail.clear()
                self._tail_text = 0
            tail.extend(rows)
            self._tail_text += sum(map(len, map(_payload_of, rows)))
            if len(tail) > 2 * _TAIL_KEPT or self._tail_text > _TAIL_TEXT:
                del tail[: len(tail) // 2]  # the older half: O(1) a row, amortised
                self._tail_text = sum(map(len, map(_payload_of, tail)))

    def _tail_rows(self, query: Query, limit: int) -> list[Row] | None:
        """The rows ``query`` reads, from the tail, when it holds them all and no other
        connection committed since it was kept; ``None``: read the database. Under the lock."""
        tail = self._tail
        if not tail or not _positions_only(query):
            return None
        first = tail[0][0]
        after = query.after
        if not first - 1 <= after < tail[-1][0]:
            return None
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._tail_version:  # another connection wrote: the tail may be stale
            tail.clear()
            self._tail_text = 0
            self._tail_version = version
            return None
        start = after + 1 - first
        end = start + limit
        if query.upto is not None:
            end = min(end, query.upto + 1 - first)
        return tail[start:end] if end > start else []

    @_translated
    def _fetch_now(self, query: Query, limit: int) -> list[Row]:
        with self._lock:
            self._check_open()
            kept = self._tail_rows(query, limit)
            if kept is not None:
                return kept
            # Topics are letters, digits, "_", "-" and ".", none special to GLOB.
            where, params = where_sql(query, mark="?", prefix_test="topic GLOB ? || '*'")
            params.append(limit)
            sql = f"SELECT {COLUMNS} FROM events WHERE {where} ORDER BY position LIMIT ?"
            rows: list[Row] = self._conn.execute(sql, params).fetchall()
        return rows

    @_translated
    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            self._check_open()
            row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def _last_position_now(self) -> int:
        return int(self._scalar("SELECT max(position) FROM events") or 0)

    def _stream_version_now(self, stream: str) -> int:
        return int(self._scalar(_STREAM_VERSION, (stream,)) or 0)

    @_translated
    def _save_snapshot_now(self, snapshot: Snapshot) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO snapshots (name, position, state) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
                "state = excluded.state",
                (snapshot.name, snapshot.position, snapshot.state),
            )

    @_translated
    def _load_snapshot_now(self, name: str) -> Snapshot | None:
        with self._lock:
            self._check_open()
            row = self._conn.execute(
                "SELECT position, state FROM snapshots WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else Snapshot(name, row[0], row[1])

    def _load_checkpoint_now(self, name: str) -> int:
        return int(self._scalar("SELECT position FROM checkpoints WHERE name = ?", (name,)) or 0)

    @_translated
    def _commit_now(self, name: str, position: int, handled_ids: list[str]) -> None:
        with self._transaction() as conn:
            _write_checkpoint(conn, name, position, handled_ids)

    @_translated
    def _commit_with_now(
        self, name: str, position: int, handled_ids: list[str], effect: Effect
    ) -> None:
        with self._transaction() as conn:
            try:
                _finish_without_suspending(effect(Transaction(conn, name, position)))
            except Exception as exc:
                raise EffectFailed(exc) from exc
            _write_checkpoint(conn, name, position, handled_ids)

    def _was_handled_now(self, name: str, event_id: str) -> bool:
        found = self._scalar(
            "SELECT 1 FROM handled WHERE name = ? AND event_id = ?", (name, event_id)
        )
        return found is not None

    async def _poll_changes(self) -> bool:
        with self._lock, sqlite_errors(str(self.path), self.busy_timeout):
            if self._closed:
                return True
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            changed: bool = version != self._data_version
            self._data_version = version
        if changed:
            self._changes.notify()
        return changed

    def _close_now(self) -> None:
        with self._lock:
            self._conn.close()

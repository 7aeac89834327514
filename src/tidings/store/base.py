"""The event store contract shared by every store: :class:`EventStore`.

An event store is an append-only log of :class:`~tidings.event.Envelope` objects.

Positions
    Every record gets a global *position*: 1 for the first, then each next integer, with
    no gap, in commit order. A reader that has seen position ``n`` has seen every position
    below it, so ``read(after=n)`` never skips an event, whatever the writers do.

Streams and optimistic concurrency
    An append may name a *stream* (an aggregate, an entity...). The stream's *version* is
    the number of events in it; each event gets the next version. ``expected_version``
    guards an append: :data:`~tidings.store.ANY` (no check), :data:`~tidings.store.NO_STREAM`
    (the stream must be empty) or an exact version. A mismatch raises
    :class:`~tidings.exceptions.ConcurrencyError` and writes nothing.

Idempotency
    Appends are idempotent on the envelope id, permanently: re-appending an id writes
    nothing and returns the position it was first stored at. In a batch mixing new and known
    ids, the known ones are skipped (their original positions are returned) and the new ones
    are appended in order; an id repeated within one batch is stored once. The
    ``expected_version`` check applies only when something new is written, so retrying a
    committed append (say, after a lost reply) returns the same positions instead of failing.

Reading and subscribing
    :meth:`~EventStore.read` returns records in position order, filtered by position range,
    topic pattern (``*`` one token, ``>`` the rest), stream and HLC time range;
    :meth:`~EventStore.iter_read` pages through long reads; :meth:`~EventStore.subscribe`
    catches up from a position then follows live appends, with no gap and no duplicate at
    the seam (it always continues from the last position it delivered).

Schema evolution
    Records keep their type name and version. On read, payloads older than their class are
    run through the store's :attr:`~EventStore.upcasters` (see :mod:`tidings.store.upcasting`).
    A type no class is known for raises :class:`~tidings.exceptions.UnknownEventTypeError`
    unless the caller passes ``unknown="skip"`` (leave it out) or ``unknown="raw"`` (payload
    as plain JSON values). A payload that does not decode raises
    :class:`~tidings.exceptions.DecodeError` naming its position and type.

Tamper evidence
    Each record holds ``sha256(previous hash || record content)``; :meth:`~EventStore.verify`
    recomputes the chain and returns the first position where it breaks (a changed or a
    missing record). A chain cannot tell that records were cut off its end: compare the last
    hash with one kept elsewhere for that.

    A store does not extend a chain it knows is broken. :meth:`~EventStore.verify` records
    the break it finds in the log itself (SQLite, PostgreSQL), and clears it when the chain
    verifies again (say, after restoring a backup); a store reads that record when it opens,
    and also checks the last record's hash against its predecessor's (two rows, whatever the
    log's length). While it knows of a break, appends raise
    :class:`~tidings.exceptions.ChainBrokenError` and write nothing, unless the store was
    opened with ``allow_broken_chain=True`` (URL ``?allow_broken_chain=1``): its appends
    chain onto the last stored hash, and the break stays where ``verify`` reports it. A store
    already open in another process learns of a recorded break when it is opened again (or
    runs ``verify`` itself); ``tidings log verify`` records what it finds the same way.

Errors
    Every failure of the database is raised as a :class:`~tidings.exceptions.StoreError`
    with the driver's exception chained: :class:`~tidings.exceptions.StoreCorruptedError`
    (the file or tables are damaged: restore a backup), :class:`~tidings.exceptions.
    StoreReadOnlyError` (no write access), :class:`~tidings.exceptions.StoreBusyError`
    (locked too long: retry), :class:`~tidings.exceptions.StoreUnavailableError` (the server
    is unreachable) or a plain :class:`~tidings.exceptions.StoreError`. Each store maps its
    driver's errors in one place.

Snapshots and checkpoints
    Named snapshots hold a serialised state valid as of a position; named checkpoints hold a
    consumer's position and, for idempotent consumers, the ids of the events it handled,
    both written in one transaction by :meth:`~EventStore.commit`. Stores with
    ``features.transactions`` also offer :meth:`~EventStore.commit_with`, which runs a
    handler's effect inside that same transaction (exactly once in effect).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

from tidings.event import Envelope, topic_of
from tidings.exceptions import (
    ChainBrokenError,
    DecodeError,
    StoreClosedError,
    StoreError,
    StoreReadOnlyError,
    UnknownEventTypeError,
)
from tidings.store._changes import Changes
from tidings.store._rows import (
    GENESIS,
    Draft,
    Row,
    RowDecoder,
    Unknown,
    check_expected,
    draft,
    record_hash,
)
from tidings.store.records import (
    ANY,
    Snapshot,
    StoredEvent,
    StoreFeatures,
    StreamState,
    Transaction,
)
from tidings.store.upcasting import Upcasters
from tidings.topics import compile_pattern, is_pattern, validate_pattern

__all__ = (
    "Effect",
    "EffectFailed",
    "EventStore",
    "LogSubscription",
    "Query",
    "SupportsSyncAppend",
    "build_query",
    "chain_break_on_open",
    "where_sql",
)

logger = logging.getLogger("tidings")

Progress = Callable[[int, int], None]
"""A progress callback: ``(records done, records in all)``."""

READ_PAGE = 2000
"""Records fetched per round trip by reads and subscriptions."""

Effect = Callable[[Transaction], Awaitable[object] | object]
"""A handler's effect for :meth:`EventStore.commit_with`: called with the open transaction."""


class EffectFailed(Exception):  # noqa: N818 - a carrier, never seen outside the stores
    """Carries an exception raised by a ``commit_with`` effect through a store's error
    mapping, so that it reaches the caller unchanged (not as a store failure)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def chain_break_on_open(last_rows: Sequence[Row], recorded: int | None) -> int | None:
    """Where a store opening a log knows its chain breaks: the break a ``verify`` recorded
    in the log, or one at the log's end seen in its last two rows (newest first)."""
    found = [p for p in (recorded, _tail_break(last_rows)) if p is not None]
    return min(found) if found else None


def _tail_break(last_rows: Sequence[Row]) -> int | None:
    """The position where the chain breaks at the log's end, from its last two rows (newest
    first), or ``None`` when the last record's hash follows from its predecessor's."""
    if not last_rows:
        return None
    last = last_rows[0]
    if len(last_rows) > 1:
        before = last_rows[1]
        if before[0] != last[0] - 1:
            return before[0] + 1
        prev = before[12]
    elif last[0] == 1:
        prev = GENESIS
    else:
        return 1  # the only record is not the first: the ones before it are missing
    return None if record_hash(bytes.fromhex(prev), last).hex() == last[12] else last[0]


class Query(NamedTuple):
    """The filters a store applies when fetching rows (private to store implementations).

    ``topic`` is an exact topic; ``prefix`` a literal topic prefix (ending with ``.``) that
    narrows a wildcard pattern, which the caller then matches exactly.
    """

    after: int = 0
    upto: int | None = None
    stream: str | None = None
    topic: str | None = None
    prefix: str | None = None
    since: int | None = None
    until: int | None = None


def _non_negative(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} is an int >= 0, not {value!r}")
    return value


def _positive(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} is an int >= 1, not {value!r}")
    return value


def _name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a {what} is a non-empty str, not {value!r}")
    return value


def build_query(
    *,
    after: int,
    upto: int | None,
    topic: str | None,
    stream: str | None,
    since: int | None,
    until: int | None,
) -> tuple[Query, Callable[[str], bool] | None]:
    """Validate read arguments into a :class:`Query` and an exact topic matcher (or None).

    Raises:
        ValueError: for a negative or non-int position or time.
        InvalidTopicError: for a malformed topic pattern.
    """
    _non_negative("after", after)
    for name, value in (("upto", upto), ("since", since), ("until", until)):
        if value is not None:
            _non_negative(name, value)
    if stream is not None and not isinstance(stream, str):
        raise TypeError(f"stream is a str, not {type(stream).__name__}")
    if topic is None:
        return Query(after=after, upto=upto, stream=stream, since=since, until=until), None
    validate_pattern(topic)
    if not is_pattern(topic):
        query = Query(after=after, upto=upto, stream=stream, topic=topic, since=since, until=until)
        return query, None
    literal: list[str] = []
    for token in topic.split("."):
        if token in ("*", ">"):
            break
        literal.append(token)
    prefix = ".".join(literal) + "." if literal else None
    query = Query(after=after, upto=upto, stream=stream, prefix=prefix, since=since, until=until)
    return query, compile_pattern(topic)


def where_sql(query: Query, *, mark: str, prefix_test: str) -> tuple[str, list[Any]]:
    """The SQL condition selecting ``query``'s rows, and its parameters, for SQL stores.

    ``mark`` is the driver's placeholder (``?`` or ``%s``); ``prefix_test`` the condition
    testing that ``topic`` starts with the prefix (one placeholder).
    """
    where = [f"position > {mark}"]
    params: list[Any] = [query.after]
    for value, test in (
        (query.upto, f"position <= {mark}"),
        (query.stream, f"stream = {mark}"),
        (query.topic, f"topic = {mark}"),
        (query.prefix, prefix_test),
        (query.since, f"time >= {mark}"),
        (query.until, f"time < {mark}"),
    ):
        if value is not None:
            where.append(test)
            params.append(value)
    return " AND ".join(where), params


@runtime_checkable
class SupportsSyncAppend(Protocol):
    """A store that can append from synchronous code (``features.sync_append``)."""

    def append_sync(
        self,
        envelopes: Iterable[Envelope[Any]],
        *,
        stream: str | None = None,
        expected_version: int | StreamState = ANY,
    ) -> list[int]:
        """Append like :meth:`EventStore.append`, blocking the calling thread."""
        ...


class EventStore(ABC):
    """The asynchronous API every event store offers (see the module docstring).

    Use a store as an async context manager, or call :meth:`aclose` when done. Methods of
    a closed store raise :class:`~tidings.exceptions.StoreClosedError`.

    Attributes:
        upcasters: the upcasters run on read (see :mod:`tidings.store.upcasting`).
        features: what this kind of store can do.
    """

    features: ClassVar[StoreFeatures]
    _poll_interval: float | None = None

    def __init__(
        self, *, upcasters: Upcasters | None = None, allow_broken_chain: bool = False
    ) -> None:
        self.upcasters = upcasters if upcasters is not None else Upcasters()
        self.allow_broken_chain = allow_broken_chain
        self._decoder = RowDecoder({}, self.upcasters)
        self._changes = Changes()
        self._closed = False
        self._chain_break: int | None = None

    @property
    def chain_break(self) -> int | None:
        """The first position where this store found the hash chain broken (on opening,
        at the log's end, or by :meth:`verify`), or ``None``."""
        return self._chain_break

    def _found_chain_break(self, position: int | None) -> None:
        """Remember the result of a chain check (``None``: the chain is whole)."""
        self._chain_break = position

    async def _remember_chain(self, position: int | None) -> None:
        """Remember what ``verify`` found, here and in the log for stores opened later
        (in this or any process); a log this store cannot write keeps it here only."""
        self._chain_break = position
        try:
            await self._record_chain_break(position)
        except StoreReadOnlyError as exc:
            logger.warning("the result of verify() stays with this store only: %s", exc)

    async def _record_chain_break(self, position: int | None) -> None:  # noqa: B027
        """Record in the log where its chain breaks (``None``: nowhere); stores that can
        hold it override this."""

    def _check_chain(self) -> None:
        """Refuse to extend a chain known to be broken (see the module docstring)."""
        position = self._chain_break
        if position is not None and not self.allow_broken_chain:
            raise ChainBrokenError(
                f"{self!r}: the hash chain breaks at position {position}, so appends are "
                "refused rather than extend it; run 'tidings log verify' and restore the log "
                "from a backup, or open the store with allow_broken_chain=True "
                "(URL: ?allow_broken_chain=1) to append anyway",
                position=position,
            )

    # -- types -----------------------------------------------------------------------------

    def register_type(self, cls: type, name: str | None = None) -> None:
        """Decode records of type ``name`` (default: ``topic_of(cls)``) into ``cls``.

        Classes declared with ``@tidings.event`` and classes this store appended are known
        without registration; register others, or a class under an old type name.
        """
        self._decoder.learn(topic_of(cls) if name is None else name, cls)

    # -- writing ---------------------------------------------------------------------------

    def _drafts(
        self,
        envelopes: Iterable[Envelope[Any]],
        stream: str | None,
        expected_version: int | StreamState,
    ) -> list[Draft]:
        self._check_open()
        if self._chain_break is not None:
            self._check_chain()
        check_expected(stream, expected_version)
        if stream is not None:
            _name("stream name", stream)
        decoder = self._decoder
        return [draft(envelope, decoder) for envelope in envelopes]

    async def append(
        self,
        envelopes: Iterable[Envelope[Any]],
        *,
        stream: str | None = None,
        expected_version: int | StreamState = ANY,
    ) -> list[int]:
        """Append ``envelopes`` atomically, in order; return their global positions.

        All of the batch is written in one transaction, or none of it.

        Args:
            envelopes: the events to append (an empty batch returns ``[]``).
            stream: the stream to append to, or ``None`` for none.
            expected_version: :data:`~tidings.store.ANY`, :data:`~tidings.store.NO_STREAM`
                or the exact version (event count) the stream must have; needs ``stream``.

        Returns:
            One position per envelope; a known id gets its original position.

        Raises:
            ConcurrencyError: if the stream is not at ``expected_version`` (nothing written).
            EncodeError: if a payload cannot be encoded (nothing written).
            ValueError: if ``expected_version`` is given without a stream, or is malformed.
            StoreClosedError: if the store is closed.
        """
        drafts = self._drafts(envelopes, stream, expected_version)
        if not drafts:
            return []
        positions, wrote = await self._append(drafts, stream, expected_version)
        if wrote:
            self._changes.notify()
        return positions

    @abstractmethod
    async def _append(
        self, drafts: Sequence[Draft], stream: str | None, expected_version: int | StreamState
    ) -> tuple[list[int], bool]:
        """Append in one transaction (see ``_rows.plan_append``); return positions and
        whether anything was written."""

    # -- reading ---------------------------------------------------------------------------

    @abstractmethod
    async def _fetch(self, query: Query, limit: int) -> list[Row]:
        """Up to ``limit`` rows after ``query.after`` matching ``query``, in position order."""

    async def read(
        self,
        *,
        after: int = 0,
        upto: int | None = None,
        topic: str | None = None,
        stream: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
        unknown: Unknown = "error",
    ) -> list[StoredEvent]:
        """The records matching every filter given, in position order.

        Args:
            after: only positions greater than this (0: from the start).
            upto: only positions up to and including this.
            topic: a topic or pattern (``orders.*``, ``orders.>``) the topic must match.
            stream: only this stream's records.
            since: only records whose envelope HLC time is at least this.
            until: only records whose envelope HLC time is less than this. HLC times follow
                causality, not positions: records of different writers may interleave.
            limit: at most this many records (counting only those returned).
            unknown: what to do with a record of a type no class is known for: ``"error"``
                raises, ``"skip"`` leaves it out, ``"raw"`` returns its payload as JSON values.

        Raises:
            UnknownEventTypeError: for an unknown type, with ``unknown="error"``.
            DecodeError: for a payload that does not decode, naming its position and type.
            ValueError, InvalidTopicError: for malformed arguments.
        """
        self._check_open()
        query, match = build_query(
            after=after, upto=upto, topic=topic, stream=stream, since=since, until=until
        )
        if limit is not None:
            _non_negative("limit", limit)
            if limit == 0:
                return []
        page = READ_PAGE if limit is None else min(limit, READ_PAGE)
        out: list[StoredEvent] = []
        decode = self._decoder.decode
        while True:
            rows = await self._fetch(query, page)
            if rows:
                out.extend(decode(rows, unknown, match))
            if limit is not None and len(out) >= limit:
                del out[limit:]
                return out
            if len(rows) < page:
                return out
            query = query._replace(after=rows[-1][0])

    async def iter_read(
        self,
        *,
        after: int = 0,
        upto: int | None = None,
        topic: str | None = None,
        stream: str | None = None,
        since: int | None = None,
        until: int | None = None,
        unknown: Unknown = "error",
        page_size: int = READ_PAGE,
    ) -> AsyncIterator[StoredEvent]:
        """Like :meth:`read` without ``limit``, fetching ``page_size`` records at a time.

        Memory stays bounded by a page, and the event loop runs other tasks between pages.
        Records appended while iterating are included if they match. The iterator holds no
        database resources between pages, so it can be abandoned at any point.
        """
        self._check_open()
        _positive("page_size", page_size)
        query, match = build_query(
            after=after, upto=upto, topic=topic, stream=stream, since=since, until=until
        )
        decode = self._decoder.decode
        while True:
            rows = await self._fetch(query, page_size)
            for record in decode(rows, unknown, match):
                yield record
            if len(rows) < page_size:
                return
            query = query._replace(after=rows[-1][0])
            await asyncio.sleep(0)

    def subscribe(
        self,
        *,
        after: int = 0,
        topic: str | None = None,
        stream: str | None = None,
        unknown: Unknown = "error",
    ) -> LogSubscription:
        """Every matching record after position ``after``: first the stored ones, then live.

        Returns a :class:`LogSubscription`, an async iterator that never ends by itself; stop
        it with ``aclose()`` or use it as ``async with store.subscribe(...) as events``. It
        ends when the store is closed. Delivery continues from the last delivered position,
        so there is no gap and no duplicate between history and live records.

        Raises:
            ValueError, InvalidTopicError: for malformed arguments.
        """
        self._check_open()
        query, match = build_query(
            after=after, upto=None, topic=topic, stream=stream, since=None, until=None
        )
        return LogSubscription(self, query, match, unknown)

    async def last_position(self) -> int:
        """The position of the last record (0 for an empty log)."""
        self._check_open()
        return await self._last_position()

    async def stream_version(self, stream: str) -> int:
        """The number of events in ``stream`` (0 when it has none)."""
        self._check_open()
        return await self._stream_version(_name("stream", stream))

    # -- snapshots -------------------------------------------------------------------------

    async def save_snapshot(self, name: str, position: int, state: bytes) -> None:
        """Save ``state`` under ``name`` as valid at ``position``, replacing an older one.

        Raises:
            ValueError: for an empty name or a negative position.
            TypeError: if ``state`` is not bytes.
        """
        self._check_open()
        _non_negative("position", position)
        if not isinstance(state, bytes | bytearray | memoryview):
            raise TypeError(f"a snapshot state is bytes, not {type(state).__name__}")
        await self._save_snapshot(Snapshot(_name("snapshot name", name), position, bytes(state)))

    async def load_snapshot(self, name: str) -> Snapshot | None:
        """The snapshot saved under ``name``, or ``None``."""
        self._check_open()
        return await self._load_snapshot(_name("snapshot name", name))

    # -- durable consumers -----------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> int:
        """The position consumer ``name`` last committed (0 if it never committed)."""
        self._check_open()
        return await self._load_checkpoint(_name("consumer name", name))

    async def commit(self, name: str, position: int, *, handled_ids: Iterable[str] = ()) -> None:
        """Set consumer ``name``'s checkpoint to ``position`` and record ``handled_ids``.

        Both are written in one transaction, so an idempotent consumer never records an
        event as handled without its checkpoint, nor the reverse. Committing a smaller
        position rewinds the consumer (handled ids stay recorded).

        Raises:
            ValueError: for an empty name or a negative position.
        """
        self._check_open()
        _non_negative("position", position)
        ids = list(dict.fromkeys(handled_ids))
        await self._commit(_name("consumer name", name), position, ids)

    async def commit_with(
        self,
        name: str,
        position: int,
        effect: Effect,
        *,
        handled_ids: Iterable[str] = (),
    ) -> None:
        """Run ``effect(transaction)``, then commit it with consumer ``name``'s checkpoint.

        The effect's writes through ``transaction.connection``, the checkpoint at
        ``position`` and ``handled_ids`` commit in one database transaction, or none of them
        do: a handler that writes its effect this way has it exactly once, whatever crashes.
        An exception from the effect rolls everything back and is raised unchanged.

        Raises:
            StoreError: the store has no such transactions (``features.transactions``).
            InvalidHandlerError: on SQLite, the effect suspended inside the transaction.
            ValueError: for an empty name or a negative position.
        """
        self._check_open()
        if not self.features.transactions:
            raise StoreError(
                f"{type(self).__name__} has no transaction a handler's effect can join; "
                "use SQLiteStore or PostgresStore for transactional handlers"
            )
        _non_negative("position", position)
        ids = list(dict.fromkeys(handled_ids))
        try:
            await self._commit_with(_name("consumer name", name), position, ids, effect)
        except EffectFailed as failed:
            raise failed.error from None

    async def _commit_with(
        self, name: str, position: int, handled_ids: list[str], effect: Effect
    ) -> None:
        """``commit`` with ``effect`` run first in its transaction; an exception from the
        effect is raised as :class:`EffectFailed` (stores with ``features.transactions``)."""
        raise NotImplementedError

    async def was_handled(self, name: str, event_id: str) -> bool:
        """Whether ``commit`` recorded ``event_id`` as handled by consumer ``name``."""
        self._check_open()
        return await self._was_handled(_name("consumer name", name), event_id)

    @abstractmethod
    async def _last_position(self) -> int: ...
    @abstractmethod
    async def _stream_version(self, stream: str) -> int: ...
    @abstractmethod
    async def _save_snapshot(self, snapshot: Snapshot) -> None: ...
    @abstractmethod
    async def _load_snapshot(self, name: str) -> Snapshot | None: ...
    @abstractmethod
    async def _load_checkpoint(self, name: str) -> int: ...
    @abstractmethod
    async def _commit(self, name: str, position: int, handled_ids: list[str]) -> None: ...
    @abstractmethod
    async def _was_handled(self, name: str, event_id: str) -> bool: ...

    # -- integrity -------------------------------------------------------------------------

    async def verify(
        self, *, progress: Progress | None = None, page_size: int = 5000
    ) -> int | None:
        """Recompute the hash chain; return the first position where it breaks, else ``None``.

        The store remembers the result: after a break, its appends raise
        :class:`~tidings.exceptions.ChainBrokenError` (see the module docstring).
        A position is reported when its record's stored hash differs from the recomputed
        one (its content, or a record before it, changed) or when the record is missing.
        ``progress(done, total)`` is called after each page of ``page_size`` records.
        """
        self._check_open()
        _positive("page_size", page_size)
        total = await self._last_position()
        query = Query()
        prev = bytes.fromhex(GENESIS)
        expected = 1
        while True:
            rows = await self._fetch(query, page_size)
            for row in rows:
                digest = record_hash(prev, row)
                if row[0] != expected or digest.hex() != row[12]:
                    await self._remember_chain(expected)
                    return expected
                prev = digest
                expected += 1
            if progress is not None:
                progress(expected - 1, max(total, expected - 1))
            if len(rows) < page_size:
                await self._remember_chain(None)
                return None
            query = query._replace(after=rows[-1][0])
            await asyncio.sleep(0)

    # -- lifecycle -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{type(self).__name__} is closed; open a new store")

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` (or a sync store's ``close_sync``) was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the store and end its subscriptions. Idempotent."""
        if self._begin_close():
            await self._close()

    def _begin_close(self) -> bool:
        """Mark the store closed and end its subscriptions; whether it was open."""
        if self._closed:
            return False
        self._closed = True
        self._changes.notify()
        return True

    @abstractmethod
    async def _close(self) -> None:
        """Release the store's resources."""

    async def __aenter__(self) -> Self:
        self._check_open()
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the store before first use (optional; stores also prepare lazily)."""

    # -- live following --------------------------------------------------------------------

    async def _start_watching(self) -> None:  # noqa: B027 - optional hook
        """Make sure changes will be noticed from now on (called before a catch-up read)."""

    async def _poll_changes(self) -> bool:
        """Look for changes made elsewhere; called every ``_poll_interval`` while waiting."""
        return False

    async def _wait_for_change(self, seen: int) -> int:
        """Wait until something may have been appended since change count ``seen``."""
        changes = self._changes
        while True:
            count = await changes.wait(seen, self._poll_interval)
            if count != seen or self._closed:
                return count
            if await self._poll_changes():
                return changes.count


class LogSubscription:
    """An async iterator over a store's records: history after a position, then live ones.

    Returned by :meth:`EventStore.subscribe`. :attr:`position` is the last delivered position
    (the ``after`` to resume from). Iteration ends when the subscription or its store is
    closed. A record that fails to decode raises from ``__anext__`` without being consumed,
    so iterating again retries it (say, after registering its class).
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_drained",
        "_match",
        "_query",
        "_seen",
        "_store",
        "_unknown",
        "position",
    )

    def __init__(
        self,
        store: EventStore,
        query: Query,
        match: Callable[[str], bool] | None,
        unknown: Unknown,
    ) -> None:
        self._store = store
        self._query = query
        self._match = match
        self._unknown = unknown
        self._buffer: deque[StoredEvent] = deque()
        self._seen: int | None = None
        self._drained = False
        self._closed = False
        self.position = query.after

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StoredEvent:
        store = self._store
        while True:
            if self._buffer:
                record = self._buffer.popleft()
                self.position = record.position
                return record
            if self._closed or store.closed:
                raise StopAsyncIteration
            if self._seen is None:
                await store._start_watching()
                self._seen = store._changes.count
            elif self._drained:
                self._seen = await store._wait_for_change(self._seen)
                if self._closed or store.closed:
                    raise StopAsyncIteration
            rows = await store._fetch(self._query, READ_PAGE)
            self._drained = len(rows) < READ_PAGE
            if rows:
                self._take(rows)

    def _take(self, rows: list[Row]) -> None:
        """Buffer ``rows``, decoded. A record that does not decode stays unconsumed: the
        records before it are buffered, and the error is raised when it comes next.

        Raises:
            UnknownEventTypeError, DecodeError: the first row does not decode.
        """
        decoder = self._store._decoder
        try:
            self._buffer.extend(decoder.decode(rows, self._unknown, self._match))
        except (UnknownEventTypeError, DecodeError):
            for index, row in enumerate(rows):
                try:
                    self._buffer.extend(decoder.decode((row,), self._unknown, self._match))
                except (UnknownEventTypeError, DecodeError):
                    self._drained = False  # fetch it again at once next time
                    if index == 0:
                        raise
                    self._query = self._query._replace(after=rows[index - 1][0])
                    return
        self._query = self._query._replace(after=rows[-1][0])

    def close(self) -> None:
        """Stop the subscription from any thread; a pending ``__anext__`` ends iteration."""
        self._closed = True
        self._buffer.clear()
        self._store._changes.notify()

    async def aclose(self) -> None:
        """Stop the subscription; a pending ``__anext__`` returns (ends iteration)."""
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

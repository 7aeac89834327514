"""The records an event store hands out, and the values its API takes.

:class:`StoredEvent` is one event as the log holds it; :class:`Snapshot` is a saved state;
:class:`StoreFeatures` says what a store can do; :class:`Transaction` is the store
transaction a transactional handler writes its effect in; :data:`ANY` and :data:`NO_STREAM` are the
two symbolic ``expected_version`` values of an append.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import msgspec

from tidings.event import Envelope

__all__ = (
    "ANY",
    "NO_STREAM",
    "Snapshot",
    "StoreFeatures",
    "StoredEvent",
    "StreamState",
    "Transaction",
)


class StreamState(enum.Enum):
    """Symbolic expected versions of a stream, for ``append(..., expected_version=...)``."""

    ANY = "any"
    """Append whatever the stream's version (no optimistic concurrency check)."""
    NO_STREAM = "no stream"
    """Append only if the stream has no events yet (the same as expecting version 0)."""

    def __repr__(self) -> str:
        return self.name


ANY: Final = StreamState.ANY
"""``expected_version=ANY``: no concurrency check (the default)."""
NO_STREAM: Final = StreamState.NO_STREAM
"""``expected_version=NO_STREAM``: the stream must not exist yet (have no events)."""


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """One event as the log holds it. Immutable.

    Attributes:
        position: the global position in the log: 1-based, gap-free, in commit order.
        stream: the stream the event was appended to, or ``None``.
        stream_version: the event's version within its stream (1-based), or ``None``
            when it has no stream.
        type_name: the event's type name (its class's topic, see :func:`tidings.topic_of`),
            or ``None`` for a plain JSON payload (a dict, list, str...).
        type_version: the schema version the payload was written at (see
            ``@tidings.event(version=...)``; 0 for plain JSON). After upcasting the payload
            has the current version of its class, but this field still tells the stored one.
        envelope: the event with its metadata, exactly as appended (same id, time, key,
            source, headers), its payload decoded (and upcast) into its class.
        hash: sha256 of the previous record's hash and this record's content, as 64 hex
            digits: the link of the tamper-evident chain that ``verify()`` recomputes.
    """

    position: int
    stream: str | None
    stream_version: int | None
    type_name: str | None
    type_version: int
    envelope: Envelope[Any]
    hash: str

    @property
    def payload(self) -> Any:
        """The event itself (``envelope.payload``)."""
        return self.envelope.payload

    @property
    def id(self) -> str:
        """The event id (``envelope.id``)."""
        return self.envelope.id

    @property
    def topic(self) -> str:
        """The topic the event was published on (``envelope.topic``)."""
        return self.envelope.topic

    @property
    def time(self) -> int:
        """The packed HLC time the event was published at (``envelope.time``)."""
        return self.envelope.time

    def __repr__(self) -> str:
        stream = "" if self.stream is None else f", stream={self.stream!r}@{self.stream_version}"
        return f"StoredEvent(position={self.position}{stream}, envelope={self.envelope!r})"


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    """A saved state (for example a projection's), valid as of a log position.

    Attributes:
        name: the snapshot's name; saving again under a name replaces the older snapshot.
        position: the log position the state includes every event up to.
        state: the state, serialised by the caller.
    """

    name: str
    position: int
    state: bytes


class StoreFeatures(msgspec.Struct, frozen=True):
    """What a store can do; the conformance suite skips the tests a store cannot pass.

    Attributes:
        durable: the log survives closing the store and opening it again.
        multi_process: several processes may append to and read one log at the same time.
        notifications: every append, from any process the store serves, wakes live
            subscriptions at once, without polling (memory: one process; PostgreSQL:
            ``LISTEN/NOTIFY``). Stores without it poll for other processes' appends.
        sync_append: the store offers ``append_sync``, a blocking append usable from
            synchronous code (the bus's ``publish`` uses it for write-ahead).
        transactions: ``commit_with`` runs a handler's effect in the transaction that
            commits a consumer's checkpoint (SQLite, PostgreSQL), so durable subscriptions
            can be ``transactional=True`` (exactly once in effect).
    """

    durable: bool
    multi_process: bool
    notifications: bool
    sync_append: bool
    transactions: bool = False


class Transaction(msgspec.Struct, frozen=True):
    """The open store transaction a transactional handler writes its effect in.

    The effect commits together with the consumer's checkpoint (and handled-event record),
    or not at all: a crash or an exception before the commit rolls both back, and the
    event is handled again after a restart, so the effect happens exactly once.

    Attributes:
        connection: the database connection, inside the transaction: a
            :class:`sqlite3.Connection` for :class:`~tidings.store.SQLiteStore` (use it
            synchronously; a handler must not suspend while it holds SQLite's write lock)
            and a ``psycopg.AsyncConnection`` for :class:`~tidings.store.PostgresStore`
            (await its calls). Do not commit, roll back or close it: the store does.
        consumer: the durable consumer's name.
        position: the log position of the event being handled.
    """

    connection: Any
    consumer: str
    position: int

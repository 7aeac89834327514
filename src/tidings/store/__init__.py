"""The durable event log: an append-only, tamper-evident store of envelopes.

:class:`EventStore` is the contract (see :mod:`tidings.store.base` for its semantics);
:class:`MemoryStore`, :class:`SQLiteStore` and :class:`PostgresStore` serve it in memory,
in one SQLite file, and in PostgreSQL; :func:`open_store` picks one from a URL.
``PostgresStore`` is imported on first access and needs the ``tidings[postgres]`` extra.

Every store passes :mod:`tidings.testing.store_conformance`, which a new store's tests can
reuse; ``tidings log read|tail|stats|verify --store URL`` inspects a log from the shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidings._lazy import lazy_attributes as _lazy_attributes
from tidings.store.base import EventStore, LogSubscription, SupportsSyncAppend
from tidings.store.memory import MemoryStore
from tidings.store.records import (
    ANY,
    NO_STREAM,
    Snapshot,
    StoredEvent,
    StoreFeatures,
    StreamState,
    Transaction,
)
from tidings.store.sqlite import DEFAULT_PATH, SQLiteStore
from tidings.store.upcasting import Upcaster, Upcasters
from tidings.store.url import open_store

if TYPE_CHECKING:
    from tidings.store.postgres import PostgresStore

__all__ = (
    "ANY",
    "DEFAULT_PATH",
    "NO_STREAM",
    "EventStore",
    "LogSubscription",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "Snapshot",
    "StoreFeatures",
    "StoredEvent",
    "StreamState",
    "SupportsSyncAppend",
    "Transaction",
    "Upcaster",
    "Upcasters",
    "open_store",
)


__getattr__ = _lazy_attributes(__name__, {"PostgresStore": "tidings.store.postgres"})

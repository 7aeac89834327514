"""The routing lease: one gateway at a time routes a shared log.

Gateway replicas may share one store (a PostgreSQL log, or one SQLite file). Each replica
accepts events into that log, but only the holder of the store's *routing lease* follows
the log and routes it, so every accepted event is routed once by the group, whichever
replica accepted it. The others stand by; when the holder stops or dies, its lease is
released and a standby takes it over, resuming from the shared checkpoint (what the holder
routed but had not yet checkpointed is routed again: at least once, as after a crash).

The lease is held through the store itself, named by the store's location and the
gateway's consumer name (replicas of different logs, or with different consumer names,
never exclude each other):

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of
  its own, kept for as long as the lease is held and checked every
  :data:`CHECK_INTERVAL` seconds; when that connection is lost (the server restarted, the
  network failed) the lease counts as lost (the server released the lock with the
  session), and :attr:`RoutingLease.lost` is set;
- SQLite: an exclusive ``flock`` on a file beside the database (``DB.CONSUMER.lease``),
  released by the operating system when the process dies;
- a store serving one process (memory): the lease is always held.

Guarantees: :meth:`RoutingLease.acquire` returns only once the lease is held (trying again
every :data:`RETRY_INTERVAL` seconds); a lease is never held twice at once, except for at
most :data:`CHECK_INTERVAL` seconds after a PostgreSQL holder's connection was cut, before
it notices (a standby taking over meanwhile re-routes from the checkpoint: duplicates, never
losses).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from tidings._tasks import cancel_and_wait

if TYPE_CHECKING:
    from tidings.store.base import EventStore

__all__ = ("CHECK_INTERVAL", "RETRY_INTERVAL", "RoutingLease", "routing_lease")

logger = logging.getLogger("tidings.gateway")

RETRY_INTERVAL = 0.25
"""Seconds between attempts to take a lease another replica holds."""
CHECK_INTERVAL = 1.0
"""Seconds between checks that a held PostgreSQL lease's connection is alive."""


class RoutingLease:
    """The right to route one log; always held (the base class, for one-process stores).

    Attributes:
        lost: set when a held lease was lost (its holder must stop routing, then
            :meth:`release` and :meth:`acquire` again).
    """

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.held = False

    async def acquire(self) -> None:
        """Wait until the lease is held."""
        self.lost.clear()
        while not await self._try():  # noqa: ASYNC110 - held elsewhere: nothing to await
            await asyncio.sleep(RETRY_INTERVAL)
        self.held = True

    async def release(self) -> None:
        """Release the lease (idempotent)."""
        self.held = False
        await self._release()

    async def _try(self) -> bool:
        return True

    async def _release(self) -> None:
        return None


class _FileLease(RoutingLease):
    """An exclusive ``flock`` on ``path`` (SQLite: one file shared by processes)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None

    async def _try(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock


class _AdvisoryLease(RoutingLease):
    """A PostgreSQL session advisory lock on ``key``, on a connection of its own."""

    def __init__(self, url: str, key: int) -> None:
        super().__init__()
        self.url = url
        self.key = key
        self._conn: Any = None
        self._watch: asyncio.Task[None] | None = None

    async def _try(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=10
                )
            cursor = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            row = await cursor.fetchone()
        except psycopg.Error as exc:
            logger.warning("gateway: cannot try the routing lease yet: %s", exc)
            await self._close()
            return False
        if not (row and row[0]):
            return False
        self._watch = asyncio.create_task(self._check(), name="tidings-gateway-lease")
        return True

    async def _check(self) -> None:
        import psycopg

        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            try:
                await self._conn.execute("SELECT 1")
            except psycopg.Error as exc:
                logger.error("gateway: the routing lease's connection was lost: %s", exc)
                self.lost.set()
                return

    async def _release(self) -> None:
        watch = self._watch
        if watch is not None:
            await cancel_and_wait(watch)  # cancelled meanwhile: a second release finishes
            self._watch = None
        await self._close()  # ending the session releases the advisory lock

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


def _key(name: str) -> int:
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def routing_lease(store: EventStore, consumer: str) -> RoutingLease:
    """The routing lease of ``store`` for the gateway consumer ``consumer``."""
    from tidings.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        if str(store.path) == ":memory:" or sys.platform == "win32":
            return RoutingLease()
        return _FileLease(f"{os.path.realpath(store.path)}.{consumer}.lease")
    try:
        from tidings.store.postgres import PostgresStore
    except ImportError:  # psycopg not installed: no PostgreSQL store either
        return RoutingLease()
    if isinstance(store, PostgresStore):
        name = f"tidings-gateway-lease:{store.schema}.{store.table_prefix}events:{consumer}"
        return _AdvisoryLease(store.url, _key(name))
    return RoutingLease()

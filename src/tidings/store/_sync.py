"""A base for stores whose operations are short blocking calls: memory and SQLite.

Such a store implements each operation once, synchronously (``_*_now`` methods), and gets
the async API by running those calls inline in the event loop (they take microseconds to a
few milliseconds; a thread hop would cost more than most of them), plus :meth:`append_sync`
for synchronous callers such as the bus's ``publish``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from tidings.event import Envelope
from tidings.store._rows import Draft, Row
from tidings.store.base import Effect, EventStore, Query
from tidings.store.records import ANY, Snapshot, StreamState

__all__ = ("SyncStore",)


class SyncStore(EventStore):
    """An :class:`EventStore` built from blocking primitives; offers :meth:`append_sync`."""

    def append_sync(
        self,
        envelopes: Iterable[Envelope[Any]],
        *,
        stream: str | None = None,
        expected_version: int | StreamState = ANY,
    ) -> list[int]:
        """Append like :meth:`~EventStore.append`, blocking the calling thread.

        Safe to call from any thread, also while the store is used from an event loop.
        Live subscriptions on any loop are woken.
        """
        drafts = self._drafts(envelopes, stream, expected_version)
        if not drafts:
            return []
        positions, wrote = self._append_now(drafts, stream, expected_version)
        if wrote:
            self._changes.notify()
        return positions

    def close_sync(self) -> None:
        """Close the store like :meth:`~EventStore.aclose`, from synchronous code. Idempotent."""
        if self._begin_close():
            self._close_now()

    async def _append(
        self, drafts: Sequence[Draft], stream: str | None, expected_version: int | StreamState
    ) -> tuple[list[int], bool]:
        return self._append_now(drafts, stream, expected_version)

    async def _fetch(self, query: Query, limit: int) -> list[Row]:
        self._check_open()
        return self._fetch_now(query, limit)

    async def _last_position(self) -> int:
        return self._last_position_now()

    async def _stream_version(self, stream: str) -> int:
        return self._stream_version_now(stream)

    async def _save_snapshot(self, snapshot: Snapshot) -> None:
        self._save_snapshot_now(snapshot)

    async def _load_snapshot(self, name: str) -> Snapshot | None:
        return self._load_snapshot_now(name)

    async def _load_checkpoint(self, name: str) -> int:
        return self._load_checkpoint_now(name)

    async def _commit(self, name: str, position: int, handled_ids: list[str]) -> None:
        self._commit_now(name, position, handled_ids)

    async def _commit_with(
        self, name: str, position: int, handled_ids: list[str], effect: Effect
    ) -> None:
        self._commit_with_now(name, position, handled_ids, effect)

    async def _was_handled(self, name: str, event_id: str) -> bool:
        return self._was_handled_now(name, event_id)

    async def _record_chain_break(self, position: int | None) -> None:
        self._record_chain_break_now(position)

    async def _close(self) -> None:
        self._close_now()

    @abstractmethod
    def _append_now(
        self, drafts: Sequence[Draft], stream: str | None, expected_version: int | StreamState
    ) -> tuple[list[int], bool]: ...
    @abstractmethod
    def _fetch_now(self, query: Query, limit: int) -> list[Row]: ...
    @abstractmethod
    def _last_position_now(self) -> int: ...
    @abstractmethod
    def _stream_version_now(self, stream: str) -> int: ...
    @abstractmethod
    def _save_snapshot_now(self, snapshot: Snapshot) -> None: ...
    @abstractmethod
    def _load_snapshot_now(self, name: str) -> Snapshot | None: ...
    @abstractmethod
    def _load_checkpoint_now(self, name: str) -> int: ...
    @abstractmethod
    def _commit_now(self, name: str, position: int, handled_ids: list[str]) -> None: ...
    def _commit_with_now(
        self, name: str, position: int, handled_ids: list[str], effect: Effect
    ) -> None:
        raise NotImplementedError  # stores with features.transactions implement it

    def _record_chain_break_now(self, position: int | None) -> None:
        """Record where the chain breaks in the log (stores that can hold it override)."""

    @abstractmethod
    def _was_handled_now(self, name: str, event_id: str) -> bool: ...
    @abstractmethod
    def _close_now(self) -> None: ...

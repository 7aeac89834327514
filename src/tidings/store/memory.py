"""An event store in process memory: :class:`MemoryStore`."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tidings.store._rows import GENESIS, Draft, Row, plan_append
from tidings.store._sync import SyncStore
from tidings.store.base import Query
from tidings.store.records import Snapshot, StoreFeatures, StreamState
from tidings.store.upcasting import Upcasters

__all__ = ("MemoryStore",)


class MemoryStore(SyncStore):
    """An event store held in this process's memory, lost when the process ends.

    It keeps records in their stored form (JSON bytes, hash chain) and decodes them on
    read, exactly as the durable stores do, so code tested against it behaves the same on
    SQLite or PostgreSQL. Thread-safe: one lock guards its state; every operation is
    inline and short.

    Args:
        upcasters: the upcasters to run on read (a fresh registry by default).
    """

    features = StoreFeatures(
        durable=False, multi_process=False, notifications=True, sync_append=True
    )

    def __init__(self, *, upcasters: Upcasters | None = None) -> None:
        super().__init__(upcasters=upcasters)
        self._lock = threading.Lock()
        self._rows: list[Row] = []
        self._ids: dict[str, int] = {}
        self._streams: dict[str, int] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._checkpoints: dict[str, int] = {}
        self._handled: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"MemoryStore(events={len(self._rows)})"

    def _append_now(
        self, drafts: Sequence[Draft], stream: str | None, expected_version: int | StreamState
    ) -> tuple[list[int], bool]:
        with self._lock:
            self._check_open()
            ids = self._ids
            known = {d[0]: ids[d[0]] for d in drafts if d[0] in ids}
            rows = self._rows
            new_rows, positions = plan_append(
                drafts,
                known,
                stream=stream,
                stream_version=0 if stream is None else self._streams.get(stream, 0),
                expected_version=expected_version,
                last_position=len(rows),
                last_hash=rows[-1][12] if rows else GENESIS,
            )
            if not new_rows:
                return positions, False
            rows.extend(new_rows)
            for row in new_rows:
                ids[row[1]] = row[0]
            if stream is not None:
                self._streams[stream] = new_rows[-1][3] or 0
            return positions, True

    def _fetch_now(self, query: Query, limit: int) -> list[Row]:
        rows = self._rows
        after, upto, stream, topic = query.after, query.upto, query.stream, query.topic
        prefix, since, until = query.prefix, query.since, query.until
        end = len(rows) if upto is None else min(upto, len(rows))
        if stream is None and topic is None and prefix is None and since is None and until is None:
            return rows[after : min(after + limit, end)]
        out: list[Row] = []
        for index in range(after, end):
            row = rows[index]
            if (
                (stream is not None and row[2] != stream)
                or (topic is not None and row[6] != topic)
                or (prefix is not None and not row[6].startswith(prefix))
                or (since is not None and row[7] < since)
                or (until is not None and row[7] >= until)
            ):
                continue
            out.append(row)
            if len(out) >= limit:
                break
        return out

    def _last_position_now(self) -> int:
        return len(self._rows)

    def _stream_version_now(self, stream: str) -> int:
        return self._streams.get(stream, 0)

    def _save_snapshot_now(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshots[snapshot.name] = snapshot

    def _load_snapshot_now(self, name: str) -> Snapshot | None:
        return self._snapshots.get(name)

    def _load_checkpoint_now(self, name: str) -> int:
        return self._checkpoints.get(name, 0)

    def _commit_now(self, name: str, position: int, handled_ids: list[str]) -> None:
        with self._lock:
            self._checkpoints[name] = position
            self._handled.update((name, event_id) for event_id in handled_ids)

    def _was_handled_now(self, name: str, event_id: str) -> bool:
        return (name, event_id) in self._handled

    def _close_now(self) -> None:
        pass

"""Projections: state folded from the durable log, resumed from snapshots.

A :class:`Projection` folds matching events, in log order, into a state. It saves a snapshot
of the state every ``every`` events, and :meth:`Projection.catch_up` starts from the latest
snapshot instead of the beginning, so rebuilding a projection after a restart costs only the
events appended since.

The state is stored as JSON through :mod:`tidings.codec`: a dataclass, msgspec Struct,
pydantic model or plain JSON value; pass ``state_type`` to decode snapshots back into it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tidings import codec
from tidings.clock import PHYSICAL_MASK

if TYPE_CHECKING:
    from tidings.store.base import EventStore
    from tidings.store.records import StoredEvent

__all__ = ("Projection", "hlc_bound")

S = TypeVar("S")


def hlc_bound(value: int | _dt.datetime | None) -> int | None:
    """An HLC time from an ``int`` (already a packed HLC time) or an aware ``datetime``."""
    if value is None or isinstance(value, int):
        return value
    if value.tzinfo is None:
        raise ValueError(f"a datetime bound must be timezone-aware, not {value!r}")
    return int(value.timestamp() * 1_000_000) * 1000 & PHYSICAL_MASK


class Projection(Generic[S]):
    """A state folded from the log, snapshotted every ``every`` events.

    Args:
        name: the snapshot name (unique per projection in a store).
        fold: ``fold(state, event) -> state``, called with each matching payload.
        initial: the state before any event.
        topic: a topic or pattern the folded events must match (all events if ``None``).
        every: save a snapshot every this many folded events (and after a catch-up that
            folded any).
        state_type: the state's class, to decode snapshots (``None``: plain JSON values).

    Attributes:
        state: the current state.
        position: the log position the state includes (0: none).

    Raises:
        ValueError: if ``every`` is not positive.
    """

    def __init__(
        self,
        name: str,
        fold: Callable[[S, Any], S],
        initial: S,
        *,
        topic: str | None = None,
        every: int = 1000,
        state_type: type[S] | None = None,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, not {every!r}")
        self.name = name
        self.fold = fold
        self.topic = topic
        self.every = every
        self.state_type = state_type
        self.state = initial
        self.position = 0
        self._since_snapshot = 0

    async def catch_up(self, store: EventStore) -> S:
        """Bring the state up to the end of the log: resume from the latest snapshot (if it
        is ahead of the state), then fold the rest. Returns the state.

        Raises:
            DecodeError: if the snapshot does not decode into ``state_type``.
            UnknownEventTypeError, DecodeError: for unreadable records (see the store).
        """
        snapshot = await store.load_snapshot(self.name)
        if snapshot is not None and snapshot.position > self.position:
            self.state = codec.decode(snapshot.state, self.state_type)
            self.position = snapshot.position
            self._since_snapshot = 0
        async for record in store.iter_read(after=self.position, topic=self.topic):
            await self.apply(record, store)
        if self._since_snapshot:
            await self.snapshot(store)
        return self.state

    async def apply(self, record: StoredEvent, store: EventStore) -> S:
        """Fold one record (if it is past the state's position); snapshot every ``every``."""
        if record.position <= self.position:
            return self.state
        self.state = self.fold(self.state, record.envelope.payload)
        self.position = record.position
        self._since_snapshot += 1
        if self._since_snapshot >= self.every:
            await self.snapshot(store)
        return self.state

    async def snapshot(self, store: EventStore) -> None:
        """Save the current state as the projection's snapshot."""
        await store.save_snapshot(self.name, self.position, codec.encode(self.state))
        self._since_snapshot = 0

    def __repr__(self) -> str:
        return f"<Projection {self.name!r} at position {self.position}>"

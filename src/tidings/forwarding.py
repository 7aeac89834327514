"""Store and forward: ``Bus(store=..., transport=..., forward=StoreAndForward(...))``.

With a store and a transport, a bus that forwards keeps accepting publishes while the broker
is unreachable: each event is appended to the local log (that append is the publisher's
acknowledgement: ``publish`` and ``emit`` return once it is done) and forwarded to the
broker in log order as soon as it can be, once and only once as far as the broker is
concerned:

- **bounded**: at most ``max_pending`` events wait for the broker's acknowledgement; then
  ``overflow`` decides: ``"error"`` (default) raises :class:`~tidings.PublishError` from
  ``publish`` (the event was not stored, anywhere, and never will be), ``"drop_newest"``
  refuses it the same way but silently: counted (``dropped``), logged and
  dead-lettered with handler ``"tidings.publish"``;
- **in order**: events reach the broker in the order they were appended; the transport
  re-sends in order through reconnects (it must keep trying while the broker is away: for
  NATS, ``NatsTransport(publish_timeout=math.inf)``, checked when the bus is made);
- **idempotent**: the broker's dedup id is the event id (``Nats-Msg-Id``), so re-sending is
  safe within the stream's ``duplicate_window``;
- **crash-safe**: the log position up to which the broker acknowledged everything is
  committed to the store (checkpoint ``checkpoint``, every ``checkpoint_interval`` seconds
  and on close); a bus started on the same store re-sends every event after it first, so
  an event acknowledged to its publisher is not lost when the process dies, and one the
  broker had already stored is dropped there as a duplicate, not stored twice (if the
  restart comes within the duplicate window);
- **closing**: events still unacknowledged when the bus closes stay in the log and are
  forwarded when a bus starts on it again; they are logged, not dead-lettered (their
  publishers were told they were stored, and they are).

The store of a forwarding bus is its outbox, and the bus its relay: **every record of the
store is forwarded, whoever appended it**. A record the bus did not publish itself (appended
by another process into the same store, by ``store.append`` in your own code, by ``tidings
log import``) is met by the checkpoint task within ``checkpoint_interval`` and forwarded then,
in log order among such records, after the bus's own events published meanwhile; it counts
towards ``max_pending`` (while that is reached, records found wait in the log). So the
checkpoint always advances, and memory stays bounded by ``max_pending``. Several forwarding
processes on one store each forward every record (harmless within the duplicate window, but
wasted): give each its own store (a SQLite file, or its own PostgreSQL schema) if that
matters.

With an async-only store (PostgreSQL), a ``publish`` on the bus's own loop thread returns
before its append (see :mod:`tidings._log`): if that append then fails, the event is not
stored and will not be; it is released from ``max_pending``, counted (``failed``) and
dead-lettered with handler ``"tidings.publish"``. ``await bus.emit(...)`` raises instead.

The counters: ``bus.statistics().forwarding``, a :class:`ForwardingStatistics`
(``None`` on a bus that does not forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tidings.store.base import EventStore

__all__ = ("ForwardOverflow", "ForwardingStatistics", "StoreAndForward", "backlog")

ForwardOverflow = Literal["error", "drop_newest"]


@dataclass(frozen=True, slots=True)
class StoreAndForward:
    """How a bus with a store and a transport rides out an unreachable broker.

    Raises:
        ValueError: a number out of range or an unknown overflow policy.
    """

    max_pending: int = 100_000
    overflow: ForwardOverflow = "error"
    checkpoint: str = "tidings.forward"
    checkpoint_interval: float = 0.5

    def __post_init__(self) -> None:
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, not {self.max_pending!r}")
        if self.overflow not in ("error", "drop_newest"):
            raise ValueError(f"overflow must be 'error' or 'drop_newest', not {self.overflow!r}")
        if not self.checkpoint_interval > 0:
            raise ValueError(
                f"checkpoint_interval must be a positive number of seconds, not "
                f"{self.checkpoint_interval!r}"
            )


@dataclass(frozen=True, slots=True)
class ForwardingStatistics:
    """A snapshot of a forwarding bus's counters (``bus.statistics().forwarding``).

    Attributes:
        pending: events in the log not yet settled by the broker (at most
            ``max_pending``): published and not acknowledged, or found and not yet
            acknowledged.
        forwarded: events the broker acknowledged (stored, or dropped as a duplicate).
        refused: events the broker refused for good (dead-lettered by the transport).
        found: records this bus did not publish, met in its store and forwarded.
        dropped: publishes refused by ``overflow="drop_newest"`` (not stored).
        failed: publishes whose deferred append failed after ``publish`` returned (not
            stored; dead-lettered).
        checkpoint: the log position committed: every record up to it was settled.
    """

    pending: int
    forwarded: int
    refused: int
    found: int
    dropped: int
    failed: int
    checkpoint: int


async def backlog(store: EventStore, policy: StoreAndForward | None = None) -> int:
    """How many records of ``store`` wait to be forwarded: those after the forwarding
    checkpoint (committed every ``checkpoint_interval``, so it may lag by that much)."""
    name = (policy or StoreAndForward()).checkpoint
    checkpoint = await store.load_checkpoint(name)
    return len(await store.read(after=checkpoint, unknown="raw"))

"""Store and forward: ``Bus(store=..., transport=..., forward=StoreAndForward(...))``.

With a store and a transport, a bus that forwards keeps accepting publishes while the broker
is unreachable: each event is appended to the local log (that append is the publisher's
acknowledgement: ``publish`` and ``emit`` return once it is done) and forwarded to the
broker in log order as soon as it can be, once and only once as far as the broker is
concerned:

- **bounded**: at most ``max_pending`` events wait for the broker's acknowledgement; then
  ``overflow`` decides: ``"error"`` (default) raises :class:`~tidings.PublishError` from
  ``publish`` (the event was not stored, anywhere, and never will be), ``"drop_newest"``
  refuses it the same way but silently: counted (``forward_dropped``), logged and
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

The store of a forwarding bus is its outbox: give each forwarding process its own (a
SQLite file, or its own PostgreSQL schema), or every record after the checkpoint is
forwarded by each of them (harmless within the duplicate window, but wasted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tidings.store.base import EventStore

__all__ = ("ForwardOverflow", "StoreAndForward", "backlog")

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


async def backlog(store: EventStore, policy: StoreAndForward | None = None) -> int:
    """How many records of ``store`` wait to be forwarded: those after the forwarding
    checkpoint (committed every ``checkpoint_interval``, so it may lag by that much)."""
    name = (policy or StoreAndForward()).checkpoint
    checkpoint = await store.load_checkpoint(name)
    return len(await store.read(after=checkpoint))

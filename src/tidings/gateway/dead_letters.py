"""The gateway's dead letters: listing them, redriving them, discarding them.

A dead letter is an event on a route's ``dead_letter`` topic (see
:mod:`tidings.gateway.targets`) whose data names the route, the target, the attempts, the
last status and error, and the event as a structured CloudEvent.

Guarantees:

- **Recorded, never deleted.** A redrive appends a :data:`REDRIVE_TOPIC` event and a discard a
  :data:`DISCARD_TOPIC` event to the log, each naming the dead letter (its position and id),
  the original event's id and who asked. The dead letter itself stays in the log; its state
  (``open``, ``redriven``, ``discarded``) is read from those records, through the
  :class:`~tidings.gateway.dead_letter_index.DeadLetterIndex` that follows the log (caught
  up to the log's end before each listing and each settlement).
- **One routing path.** A redrive is carried out by the gateway's follower when it reads the
  redrive record from the log (:func:`redrive_dispatch`), like every other routing: after a
  crash it is carried out again (at least once). The event goes, as it was dead-lettered
  (already redacted and split), to the failed target if its route still lists it, else to
  the route's current targets of the same kind (the operator replaced it).
- **Nothing lost.** A redrive whose route is gone is refused with a message saying so
  (:class:`RedriveError`), and the dead letter stays open; if the route disappears between
  the request and the follower reading the record, the event is dead-lettered again with
  that reason.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from tidings.cloudevents import from_cloudevent
from tidings.exceptions import TidingsError
from tidings.gateway.config import DEFAULT_DEAD_LETTER, TargetConfig
from tidings.gateway.dead_letter_index import (
    DISCARD_TOPIC,
    REDRIVE_TOPIC,
    DeadLetterIndex,
    is_dead_letter,
)
from tidings.gateway.table import Dispatch, RouteTable

if TYPE_CHECKING:
    from tidings.bus import Bus
    from tidings.event import Envelope
    from tidings.store.base import EventStore
    from tidings.store.records import StoredEvent

__all__ = (
    "DISCARD_TOPIC",
    "REDRIVE_TOPIC",
    "RedriveError",
    "dead_letter_topics",
    "discard",
    "list_dead_letters",
    "redrive",
    "redrive_dispatch",
)

_CATCH_UP = 10.0  # seconds a listing or a settlement waits for the index to read the log


class RedriveError(TidingsError, ValueError):
    """A dead letter cannot be redriven or discarded; the message says why and what to do.
    ``status`` is the HTTP status that fits (404 unknown, 409 conflicting state)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def dead_letter_topics(table: RouteTable) -> list[str]:
    """The dead-letter topics of ``table``'s routes and the default one, sorted."""
    return sorted({DEFAULT_DEAD_LETTER, *(r.dead_letter for r in table.config.routes)})


def _describe(record: StoredEvent, index: DeadLetterIndex) -> dict[str, Any]:
    data = record.envelope.payload
    event = data["event"] if isinstance(data["event"], Mapping) else {}
    settlement = index.settlement(record.position)
    return {
        "position": record.position,
        "id": record.envelope.id,
        "topic": record.envelope.topic,
        "time": record.envelope.datetime.isoformat(),
        "route": data["route"],
        "target": data["target"],
        "attempts": data.get("attempts"),
        "status": data.get("status"),
        "error": data.get("error", ""),
        "event": dict(event),
        "state": "open" if settlement is None else settlement["state"],
        "settled": settlement,
    }


async def _caught_up(index: DeadLetterIndex) -> None:
    if not await index.catch_up(_CATCH_UP):
        raise RedriveError(
            f"the dead-letter index is still reading the log (at position {index.position}); "
            "try again in a moment",
            status=503,
        )


async def list_dead_letters(
    index: DeadLetterIndex,
    topics: Collection[str],
    *,
    before: int | None = None,
    limit: int = 200,
    states: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters on ``topics`` below log position ``before`` (from
    the newest when ``None``) whose state is in ``states`` (any when ``None``), newest
    first, each with its state. Reads at most ``limit`` records back from the log, one
    ranged read per topic on the page.

    Raises:
        RedriveError: (503) the index did not catch up with the log in time.
    """
    await _caught_up(index)
    page = index.page(topics, before=before, limit=limit, states=states)
    by_topic: dict[str, list[int]] = {}
    for position, topic in page:
        by_topic.setdefault(topic, []).append(position)
    found: dict[int, StoredEvent] = {}
    for topic, positions in by_topic.items():
        wanted = set(positions)
        records = await index.store.read(
            after=min(positions) - 1, upto=max(positions), topic=topic, unknown="raw"
        )
        found.update((r.position, r) for r in records if r.position in wanted)
    return [_describe(found[p], index) for p, _ in page if p in found]


async def _open_letter(index: DeadLetterIndex, position: int) -> StoredEvent:
    store = index.store
    found = await store.read(after=position - 1, upto=position, unknown="raw")
    if not found or not is_dead_letter(found[0].envelope.payload):
        raise RedriveError(f"there is no dead letter at log position {position}", status=404)
    await _caught_up(index)
    settlement = index.settlement(position)
    if settlement is not None:
        raise RedriveError(
            f"the dead letter at position {position} was already {settlement['state']} "
            f"(record at position {settlement['record']}); a redrive that failed again "
            "shows up as a new dead letter"
        )
    return found[0]


def _record(letter: StoredEvent, by: str, **more: Any) -> dict[str, Any]:
    data = letter.envelope.payload
    event = data["event"] if isinstance(data["event"], Mapping) else {}
    return {
        "dead_letter": letter.position,
        "dead_letter_id": letter.envelope.id,
        "original_id": event.get("id"),
        "route": data["route"],
        "target": data["target"],
        "by": by,
        **more,
    }


async def redrive(
    bus: Bus, table: RouteTable, index: DeadLetterIndex, position: int, by: str
) -> dict[str, Any]:
    """Ask for the dead letter at ``position`` to be sent again through its route; return
    the redrive record's data.

    Raises:
        RedriveError: no dead letter there, already settled, or its route is gone from
            ``table`` (the table in force): the dead letter stays open; or (503) ``index``
            did not catch up with the log in time.
    """
    letter = await _open_letter(index, position)
    route = letter.envelope.payload["route"]
    if table.find(route) is None:
        raise RedriveError(
            f"route {route!r} of the dead letter at position {position} is not in the "
            f"config in force (generation {table.generation}): a reload removed it. Nothing "
            "was sent and the dead letter stays in the log; add the route back and redrive, "
            "or discard it"
        )
    data = _record(letter, by)
    await bus.emit(data, topic=REDRIVE_TOPIC)
    return data


async def discard(
    bus: Bus, index: DeadLetterIndex, position: int, by: str, reason: str = ""
) -> dict[str, Any]:
    """Mark the dead letter at ``position`` discarded (recorded in the log; the dead letter
    stays); return the discard record's data.

    Raises:
        RedriveError: no dead letter there, or already settled.
    """
    letter = await _open_letter(index, position)
    data = _record(letter, by, reason=reason)
    await bus.emit(data, topic=DISCARD_TOPIC)
    return data


async def _letter_event(store: EventStore, position: int) -> Envelope[Any] | None:
    found = await store.read(after=position - 1, upto=position, unknown="raw")
    if not found or not is_dead_letter(found[0].envelope.payload):
        return None
    event = found[0].envelope.payload["event"]
    return from_cloudevent(event) if isinstance(event, Mapping) else None


async def redrive_dispatch(
    store: EventStore, record: Envelope[Any], table: RouteTable
) -> tuple[Dispatch | None, str]:
    """What a :data:`REDRIVE_TOPIC` record asks for under ``table``: ``(dispatch, "")``, or
    ``(dispatch to dead-letter again, reason)`` when its route or target is gone, or
    ``(None, reason)`` when the record names no readable dead letter."""
    data = record.payload
    if not isinstance(data, Mapping) or not isinstance(data.get("dead_letter"), int):
        return None, "the redrive record names no dead letter position"
    event = await _letter_event(store, data["dead_letter"])
    if event is None:
        return None, f"no dead letter at position {data['dead_letter']}"
    name = str(data.get("route", ""))
    address = str(data.get("target", ""))
    route = table.find(name)
    if route is None:
        failed = TargetConfig("webhook", address)
        reason = f"redrive: route {name!r} was removed (generation {table.generation})"
        return Dispatch(name, (failed,), event, DEFAULT_DEAD_LETTER), reason
    same = tuple(t for t in route.to if t.address == address)
    if not same:
        kind = "webhook" if address.startswith(("http://", "https://")) else "topic"
        same = tuple(t for t in route.to if t.kind == kind)
    if not same:
        failed = TargetConfig("webhook", address)
        reason = f"redrive: route {name!r} no longer has a target like {address!r}"
        return Dispatch(name, (failed,), event, route.dead_letter), reason
    return Dispatch(name, same, event, route.dead_letter), ""

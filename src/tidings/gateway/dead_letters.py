"""The gateway's dead letters: listing them, redriving them, discarding them.

A dead letter is an event on a route's ``dead_letter`` topic (see
:mod:`tidings.gateway.targets`) whose data names the route, the target, the attempts, the
last status and error, and the event as a structured CloudEvent.

Guarantees:

- **Recorded, never deleted.** A redrive appends a :data:`REDRIVE_TOPIC` event and a discard a
  :data:`DISCARD_TOPIC` event to the log, each naming the dead letter (its position and id),
  the original event's id and who asked. The dead letter itself stays in the log; its state
  (``open``, ``redriven``, ``discarded``) is read from those records.
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

import collections
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tidings.cloudevents import from_cloudevent
from tidings.exceptions import TidingsError
from tidings.gateway.config import DEFAULT_DEAD_LETTER, TargetConfig
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

REDRIVE_TOPIC = "tidings.gateway.redrive"
"""The topic of the record a redrive appends (the follower carries it out)."""

DISCARD_TOPIC = "tidings.gateway.discard"
"""The topic of the record a discard appends."""


class RedriveError(TidingsError, ValueError):
    """A dead letter cannot be redriven or discarded; the message says why and what to do.
    ``status`` is the HTTP status that fits (404 unknown, 409 conflicting state)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def dead_letter_topics(table: RouteTable) -> list[str]:
    """The dead-letter topics of ``table``'s routes and the default one, sorted."""
    return sorted({DEFAULT_DEAD_LETTER, *(r.dead_letter for r in table.config.routes)})


def _is_letter(payload: Any) -> bool:
    return isinstance(payload, Mapping) and {"route", "target", "event"} <= payload.keys()


async def _settlements(store: EventStore) -> dict[int, dict[str, Any]]:
    settled: dict[int, dict[str, Any]] = {}
    for topic, state in ((REDRIVE_TOPIC, "redriven"), (DISCARD_TOPIC, "discarded")):
        async for record in store.iter_read(topic=topic, unknown="raw"):
            data = record.envelope.payload
            if isinstance(data, Mapping) and isinstance(data.get("dead_letter"), int):
                settled.setdefault(
                    data["dead_letter"],
                    {
                        "state": state,
                        "by": data.get("by"),
                        "at": record.envelope.datetime.isoformat(),
                        "record": record.position,
                    },
                )
    return settled


def _describe(record: StoredEvent, settled: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    data = record.envelope.payload
    event = data["event"] if isinstance(data["event"], Mapping) else {}
    settlement = settled.get(record.position)
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


async def list_dead_letters(
    store: EventStore, topics: Iterable[str], limit: int = 200
) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters on ``topics`` (newest first), each with its state."""
    settled = await _settlements(store)
    newest: collections.deque[StoredEvent] = collections.deque(maxlen=limit)
    for topic in topics:
        async for record in store.iter_read(topic=topic, unknown="raw"):
            if _is_letter(record.envelope.payload):
                newest.append(record)
    records = sorted(newest, key=lambda r: r.position, reverse=True)[:limit]
    return [_describe(r, settled) for r in records]


async def _open_letter(store: EventStore, position: int) -> StoredEvent:
    found = await store.read(after=position - 1, upto=position, unknown="raw")
    if not found or not _is_letter(found[0].envelope.payload):
        raise RedriveError(f"there is no dead letter at log position {position}", status=404)
    settlement = (await _settlements(store)).get(position)
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


async def redrive(bus: Bus, table: RouteTable, position: int, by: str) -> dict[str, Any]:
    """Ask for the dead letter at ``position`` to be sent again through its route; return
    the redrive record's data.

    Raises:
        RedriveError: no dead letter there, already settled, or its route is gone from
            ``table`` (the table in force): the dead letter stays open.
    """
    store = bus.store
    assert store is not None
    letter = await _open_letter(store, position)
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


async def discard(bus: Bus, position: int, by: str, reason: str = "") -> dict[str, Any]:
    """Mark the dead letter at ``position`` discarded (recorded in the log; the dead letter
    stays); return the discard record's data.

    Raises:
        RedriveError: no dead letter there, or already settled.
    """
    store = bus.store
    assert store is not None
    letter = await _open_letter(store, position)
    data = _record(letter, by, reason=reason)
    await bus.emit(data, topic=DISCARD_TOPIC)
    return data


async def _letter_event(store: EventStore, position: int) -> Envelope[Any] | None:
    found = await store.read(after=position - 1, upto=position, unknown="raw")
    if not found or not _is_letter(found[0].envelope.payload):
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

"""An index of the dead letters in the log, kept up to date by following it.

The console lists dead letters a page at a time; scanning every dead-letter topic in full
on each refresh costs time in proportion to the whole history. :class:`DeadLetterIndex`
reads the log once, in position order (:meth:`EventStore.subscribe`), and keeps in memory
only what a listing needs: the position and topic of every dead letter, and the first
redrive or discard record of each. A page is then a walk back from a position over that
list, and one ranged read per dead-letter topic on the page.

Invariants:

- **Every dead-letter topic in the log.** A record is a dead letter by its data (a mapping
  naming ``route``, ``target`` and the ``event`` as a CloudEvent mapping, as
  :mod:`tidings.gateway.targets` writes it), whatever its topic: the dead letters of a
  route removed before a restart are found although no route uses their topic any more.
- **Exact states.** A dead letter's state is ``open`` until the first
  :data:`~tidings.gateway.dead_letters.REDRIVE_TOPIC` or
  :data:`~tidings.gateway.dead_letters.DISCARD_TOPIC` record naming its position; later
  ones do not change it. A settlement record always follows its dead letter in the log, so
  it is read after it. :meth:`catch_up` waits until the index has read up to the log's end,
  so a listing after a settlement shows it.
- **Nothing read until asked.** The index starts reading the log the first time it is
  asked for (:meth:`DeadLetterIndex.catch_up`); from then on it follows every record.
- **Bounded work per listing.** After the first pass, a listing costs the records appended
  since the last one plus at most ``limit`` records read back by position; memory is a few
  dozen bytes per dead letter.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidings.store.base import EventStore
    from tidings.store.records import StoredEvent

__all__ = ("DISCARD_TOPIC", "REDRIVE_TOPIC", "DeadLetterIndex", "is_dead_letter")

logger = logging.getLogger(__name__)

REDRIVE_TOPIC = "tidings.gateway.redrive"
"""The topic of the record a redrive appends (the follower carries it out)."""

DISCARD_TOPIC = "tidings.gateway.discard"
"""The topic of the record a discard appends."""

_SETTLING = {REDRIVE_TOPIC: "redriven", DISCARD_TOPIC: "discarded"}
_RETRY_FIRST = 0.1
_RETRY_MAX = 5.0


def is_dead_letter(payload: Any) -> bool:
    """Whether ``payload`` is a gateway dead letter's data (see the module docstring)."""
    return (
        isinstance(payload, Mapping)
        and isinstance(payload.get("route"), str)
        and isinstance(payload.get("target"), str)
        and isinstance(payload.get("event"), Mapping)
    )


class DeadLetterIndex:
    """The dead letters of ``store``'s log and their states (see the module docstring).

    :meth:`start` begins following the log from its start (the first :meth:`catch_up`
    does, if nobody did: a gateway whose dead letters nobody asks for reads nothing more of
    its log); :meth:`stop` ends it for good.
    """

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.position = 0
        """The last log position read."""
        self.scanned = 0
        """Records read so far (the cost of keeping the index)."""
        self._positions: list[int] = []  # every dead letter's position, ascending
        self._topics: list[str] = []  # its topic (interned), parallel to _positions
        self._settled: dict[int, dict[str, Any]] = {}
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        """Dead letters by ``(topic, state)``."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def topics(self) -> set[str]:
        """Every topic a dead letter was found on."""
        return {topic for topic, _ in self.counts}

    def start(self) -> None:
        """Start following the log (a task of the running loop)."""
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(self._follow(), name="tidings-dead-letter-index")

    async def stop(self) -> None:
        """Stop following the log."""
        self._stopped = True
        task, self._task = self._task, None
        # a cancel that races with a wake-up inside the store's wait may be swallowed
        # (asyncio.wait_for before Python 3.12): cancel again until the task is done
        for _ in range(100):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        if task is not None and task.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()

    async def _follow(self) -> None:
        delay = _RETRY_FIRST
        while not self.store.closed:
            try:
                async with self.store.subscribe(after=self.position, unknown="raw") as records:
                    async for record in records:
                        self._take(record)
                        delay = _RETRY_FIRST
            except Exception:
                logger.exception(
                    "dead-letter index: reading the log after %d failed; resuming in %.2f s",
                    self.position,
                    delay,
                )
                await asyncio.sleep(delay)  # the loop ends here if the store was closed
                delay = min(delay * 2, _RETRY_MAX)

    def _take(self, record: StoredEvent) -> None:
        env = record.envelope
        self.scanned += 1
        data = env.payload
        settling = _SETTLING.get(env.topic)
        if settling is not None:
            if isinstance(data, Mapping) and isinstance(data.get("dead_letter"), int):
                self._settle(data["dead_letter"], settling, data.get("by"), record)
        elif is_dead_letter(data):
            topic = env.topic
            self._positions.append(record.position)
            self._topics.append(topic)
            self.counts[(topic, "open")] += 1
        self.position = record.position
        if self._waiters:
            self._wake()

    def _settle(self, letter: int, state: str, by: Any, record: StoredEvent) -> None:
        at = bisect.bisect_left(self._positions, letter)
        if at == len(self._positions) or self._positions[at] != letter:
            return  # names no dead letter
        if letter in self._settled:
            return  # the first settlement counts
        self._settled[letter] = {
            "state": state,
            "by": by,
            "at": record.envelope.datetime.isoformat(),
            "record": record.position,
        }
        topic = self._topics[at]
        self.counts[(topic, "open")] -= 1
        self.counts[(topic, state)] += 1

    def _wake(self) -> None:
        kept = []
        for target, waiter in self._waiters:
            if self.position >= target:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                kept.append((target, waiter))
        self._waiters = kept

    async def catch_up(self, timeout: float) -> bool:
        """Wait until the index has read the log up to its last position now; return
        whether it did within ``timeout`` seconds (started if need be)."""
        self.start()
        target = await self.store.last_position()
        if self.position >= target:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False
        finally:
            self._waiters = [(t, w) for t, w in self._waiters if w is not waiter]
        return True

    def settlement(self, position: int) -> dict[str, Any] | None:
        """How the dead letter at ``position`` was settled (``None``: open or unknown)."""
        return self._settled.get(position)

    def holds(self, position: int) -> bool:
        """Whether the index has a dead letter at ``position``."""
        at = bisect.bisect_left(self._positions, position)
        return at < len(self._positions) and self._positions[at] == position

    def page(
        self,
        topics: Collection[str],
        *,
        before: int | None = None,
        limit: int = 200,
        states: Collection[str] | None = None,
    ) -> list[tuple[int, str]]:
        """The newest ``limit`` dead letters on ``topics`` below position ``before`` (all
        when ``None``), whose state is in ``states`` (any when ``None``), newest first, as
        ``(position, topic)``."""
        wanted = set(topics)
        found: list[tuple[int, str]] = []
        end = (
            len(self._positions) if before is None else bisect.bisect_left(self._positions, before)
        )
        positions, names, settled = self._positions, self._topics, self._settled
        for at in range(end - 1, -1, -1):
            if names[at] not in wanted:
                continue
            position = positions[at]
            if states is not None:
                done = settled.get(position)
                if ("open" if done is None else done["state"]) not in states:
                    continue
            found.append((position, names[at]))
            if len(found) >= limit:
                break
        return found

"""Records published to Kafka in batches of the transport's own, each record's
acknowledgement tracked exactly.

aiokafka's ``producer.send`` costs, per record, a metadata check, a partitioner call, an
accumulator look-up and a future resolved by the sender. Here the records of each partition
go into a batch (``producer.create_batch``) and each batch is handed to the producer whole
(``producer.send_batch``) once the partition's previous batch was answered (aiokafka's sender
has one batch of a partition out at a time anyway): meanwhile the records that come in fill
the next batch, which then goes out with all of them, so batches grow while the broker is
busy, as aiokafka's own accumulator makes them grow; a batch that is full is handed over at
once, to wait in the producer for its turn. The broker's answer for a batch (the
offset it stored the batch's first record at, ``base``) settles each record of it: the
``i``-th record added to a batch stored at ``base`` has the offset ``base + i``.

Invariants:

- the records of one partition are handed to the producer in the order they were added
  (one :class:`Lane` per partition, its batches in a FIFO, one pump task handing them over
  in turn), and the idempotent producer keeps that order on the broker;
- every record added is settled exactly once, through ``settled``: with its batch's base
  offset only after the broker acknowledged the batch; or failed, as not sent out when the
  producer refused the batch before taking it, as sent out when the producer failed it after
  taking it or when it outlived its deadline;
- a partition's next batch is handed over once its previous one was settled, or at once
  if it is full;
- a batch that outlived its deadline before it was handed over is never handed over;
- a batch takes no record once it was handed over, settled, or refused one for size;
- a publisher about to add to a lane that holds a full batch behind the one being handed
  over (:attr:`Lane.backed_up`) first waits (:meth:`Batcher.room`) until the pump takes one
  off, as aiokafka's ``send`` waits for a full batch to be taken by its sender, so the
  publisher does not run ahead of the producer's I/O on the one event loop they share;
- with ``linger``, a batch not yet full is handed over no sooner than ``linger`` seconds
  after its first record.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from typing import Any

import aiokafka.errors
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

__all__ = ("Batch", "Batcher", "Lane", "Partitions")


class Batch:
    """Records of one partition, handed to the producer together."""

    __slots__ = ("base", "builder", "closed", "deadline", "futures", "lane", "origins", "settled")

    def __init__(self, lane: Lane, builder: Any, deadline: float) -> None:
        self.lane = lane
        self.builder = builder
        self.deadline = deadline
        self.futures: list[asyncio.Future[Any]] = []
        """Each record's future, in the order the records were added."""
        self.origins: list[Any] = []
        """What the transport needs to report each record's failure (opaque here)."""
        self.base = -1
        """The offset of the batch's first record, once acknowledged."""
        self.closed = False
        self.settled = False


class Lane:
    """One partition of a Kafka topic: its batches not yet handed to the producer."""

    __slots__ = ("batches", "partition", "pump", "stream", "topic", "waiting", "wake")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.stream = f"{topic}:{partition}"
        """The stream name acknowledgements of this partition carry."""
        self.batches: deque[Batch] = deque()
        self.pump: asyncio.Task[None] | None = None
        self.wake: asyncio.Future[None] | None = None
        """Set when a batch of the lane is settled or fills up (the pump waits for it)."""
        self.waiting: list[asyncio.Future[None]] = []
        """Publishers waiting for the pump to take a batch off the lane (one future each)."""

    @property
    def backed_up(self) -> bool:
        """Whether a full batch waits behind the one being handed over (publishers wait)."""
        return len(self.batches) > 2

    def popleft(self) -> Batch:
        """Take the first batch off the lane; wake the publishers waiting for room."""
        if self.waiting:
            self.release()
        return self.batches.popleft()

    def release(self) -> None:
        """Wake every publisher waiting for room in the lane."""
        waiting, self.waiting = self.waiting, []
        for waiter in waiting:
            if not waiter.done():  # else cancelled by its publisher
                waiter.set_result(None)


class Partitions:
    """The lanes of one Kafka topic, and the partition each key seen so far goes to."""

    __slots__ = ("by_key", "keyless", "lanes", "name")

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.lanes = [Lane(name, partition) for partition in range(count)]
        self.by_key: dict[bytes, Lane] = {}
        # Kafka's default partitioner (murmur2 of the key over all partitions), as Java
        # clients choose; a keyless record by its topic's name, so keyless events keep their
        # order.
        self.keyless: Lane = self.lanes[(murmur2(name.encode()) & 0x7FFFFFFF) % count]

    def lane(self, key: bytes | None) -> Lane:
        """The lane of records with ``key``."""
        if key is None:
            return self.keyless
        lane = self.by_key.get(key)
        if lane is None:
            lane = self.lanes[(murmur2(key) & 0x7FFFFFFF) % len(self.lanes)]
            if len(self.by_key) >= 65536:
                self.by_key.clear()
            self.by_key[key] = lane
        return lane


Settled = Callable[[Batch, BaseException | None, bool], None]
"""Told each batch's outcome once: ``(batch, error or None, sent out)``."""


class Batcher:
    """The batches of one producer; ``settled`` is told the outcome of each."""

    def __init__(
        self, producer: AIOKafkaProducer, settled: Settled, timeout: float, linger: float = 0.0
    ) -> None:
        self.producer = producer
        self.settled = settled
        self.timeout = timeout
        """Seconds from a batch's first record until it fails unanswered."""
        self.linger = linger
        """Seconds a batch waits for more records before it is handed over (0: at once);
        the producer itself must not linger too."""
        self.topics: dict[str, Partitions] = {}
        self.pending: deque[Batch] = deque()
        """Every batch not yet settled (and some settled), in the order they were opened."""
        self.loop = asyncio.get_running_loop()
        self._pumps: set[asyncio.Task[None]] = set()

    def partitions(self, name: str, count: int) -> Partitions:
        """The lanes of the Kafka topic ``name`` (of ``count`` partitions)."""
        known = self.topics.get(name)
        if known is None:
            known = self.topics[name] = Partitions(name, count)
        return known

    async def room(self, lane: Lane) -> None:
        """Wait until ``lane`` is not :attr:`~Lane.backed_up` (the pump takes batches off
        it: handed over, refused or expired, each within the batch's deadline)."""
        while lane.backed_up:
            waiter = self.loop.create_future()
            lane.waiting.append(waiter)
            await waiter

    def add(
        self,
        lane: Lane,
        key: bytes | None,
        value: bytes,
        headers: Any,
        future: asyncio.Future[Any],
        origin: Any,
    ) -> None:
        """Add a record to ``lane``'s open batch (a new one if there is none or it is full);
        ``future`` and ``origin`` go to ``settled`` with it."""
        batches = lane.batches
        batch = batches[-1] if batches else None
        if (
            batch is None
            or batch.closed
            or batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None
        ):
            if batch is not None and not batch.closed:
                batch.closed = True  # full: nothing to wait for before it goes
                wake = lane.wake
                if wake is not None and not wake.done():
                    wake.set_result(None)
            batch = Batch(lane, self.producer.create_batch(), self.loop.time() + self.timeout)
            # The first record of a batch always fits (a record larger than the batch size
            # gets a batch of its own; the transport refuses records above the request size).
            batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
            batches.append(batch)
            self.pending.append(batch)
        batch.futures.append(future)
        batch.origins.append(origin)
        if lane.pump is None:
            # Started at the loop's next turn: the records added until then join the batch.
            lane.pump = pump = self.loop.create_task(self._pump(lane))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, lane: Lane) -> None:
        """Hand ``lane``'s batches to the producer in order (each when, see the module
        docstring)."""
        producer, batches = self.producer, lane.batches
        try:
            while batches:
                batch = batches[0]
                if batch.settled:  # outlived its deadline before it could be handed over
                    batch.closed = True
                    lane.popleft()
                    continue
                if self.linger and not batch.closed:
                    wait = batch.deadline - self.timeout + self.linger - self.loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                        continue
                try:
                    # Waits only while the partition's previous batch is not taken yet; the
                    # records added meanwhile join this batch (it is still open).
                    answer = await producer.send_batch(
                        batch.builder, lane.topic, partition=lane.partition
                    )
                except Exception as exc:
                    batch.closed = True
                    lane.popleft()
                    self._settle(batch, exc, sent_out=False)
                    continue
                # The producer holds the batch: no record may join it from here on.
                batch.closed = True
                batch.builder.close()
                lane.popleft()
                answer.add_done_callback(functools.partial(self._answered, batch))
                if not batch.settled and not (batches and batches[0].closed):
                    # aiokafka sends one batch of a partition at a time: until this one is
                    # answered, the next one fills, then goes out with all that came meanwhile
                    # (a full one goes at once: it waits in the producer for its turn).
                    lane.wake = wake = self.loop.create_future()
                    await wake
        except asyncio.CancelledError:
            closed = aiokafka.errors.ProducerClosed()
            while batches:
                batch = lane.popleft()
                batch.closed = True
                self._settle(batch, closed, sent_out=False)
            raise
        finally:
            lane.pump = None
            lane.wake = None
            lane.release()

    def _answered(self, batch: Batch, answer: asyncio.Future[Any]) -> None:
        if answer.cancelled():
            error: BaseException | None = TimeoutError("cancelled")
        else:
            error = answer.exception()
            if error is None:
                batch.base = answer.result().offset
        self._settle(batch, error, sent_out=True)

    def _settle(self, batch: Batch, error: BaseException | None, *, sent_out: bool) -> None:
        if batch.settled:
            return
        batch.settled = True
        self.settled(batch, error, sent_out)
        wake = batch.lane.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def expire(self, *, everything: bool = False) -> None:
        """Fail the batches unanswered past their deadline (with ``everything``: all that are
        unanswered) as sent out: they may have been stored."""
        pending, now = self.pending, self.loop.time()
        while pending and (everything or pending[0].settled or pending[0].deadline <= now):
            batch = pending.popleft()
            if not batch.settled:
                batch.closed = True
                self._settle(
                    batch, aiokafka.errors.KafkaTimeoutError("no acknowledgement"), sent_out=True
                )

    async def cancel(self) -> None:
        """Stop handing batches over: those not handed over yet fail as not sent."""
        pumps = list(self._pumps)
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

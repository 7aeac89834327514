"""The Apache Kafka transport (``pip install 'tidings[kafka]'``, on aiokafka).

**Topics.** Each tidings topic is a Kafka topic under a prefix (``orders.placed`` travels on
``tidings.orders.placed``), created on first use with ``partitions`` partitions; dead
letters go to ``<prefix>-dead.<topic>``. Patterns (``orders.*``, ``orders.>``) subscribe by
regular expression, so topics created later join the subscription at the next metadata
refresh (``metadata_refresh`` seconds). The wire format is the CloudEvents Kafka binding
(:mod:`tidings.transports._kafka_wire`): ``ce_`` headers, the partition key as the record
key, structured mode read on input.

**Publishing.** The producer is idempotent (``enable_idempotence``, ``acks=all``): the
broker drops the copies its own retries would make, and keeps one producer's records of a
partition in send order. :meth:`~KafkaTransport.publish` returns only once the broker
acknowledged the record; :meth:`~KafkaTransport.send` pipelines with at most ``window``
unacknowledged. Records go out in batches of the transport's own, one filling per partition
while the broker is busy, each record acknowledged with its own offset
(:mod:`tidings.transports._kafka_batches`); a publisher waits while its partition holds a
full batch behind the one being handed to the producer (as aiokafka's ``send`` waits for a
full batch to be taken), so it does not crowd the producer's I/O off the loop. A keyed event goes to the partition of its key
(Kafka's murmur2 partitioner, as Java clients choose it), so each key's events stay in
order; an event without a key goes to the partition its topic's name hashes to, so one
publisher's keyless events keep publish order too (give events keys to spread them).
Failures are typed and name the event: :class:`~tidings.PublishError` when the record
cannot have been stored (too large, refused by the broker, never sent),
:class:`~tidings.PublishOutcomeUnknownError` when it was sent and no answer came in time
(Kafka has no duplicate window across producers: a second publish may store a second copy,
which consumers see with the same event id).

**Consuming.** A subscription is an aiokafka consumer. With ``group="name"`` the
subscriptions of every process share a Kafka consumer group (``<prefix>.<name>.<digest of
the pattern>``): each partition is read by one member. Without a group, a subscription is
a group of its own (so it reads every partition); it commits too, so that a rebalance
(a new topic matching its pattern) resumes where it was instead of reading again. Offsets are
committed only up to the first record of each partition whose handling has not finished
(acked, or dead-lettered): a crash redelivers from there, never skipping a failure, and
redelivers at most what the process held uncommitted. On a rebalance the revoked
partitions' running and queued handlers finish first (up to ``revoke_timeout``), then
their offsets are committed, and only then does the group move on (commit on revoke).
Records still being handled after ``revoke_timeout`` are handled again by the partition's
next owner, even when that is the same subscription (the copy read again is not taken for a
duplicate of the one still held); what it finished already is not.
With ``start="new"``, :meth:`~KafkaTransport.subscribe` returns once the consumer holds its
partitions, each positioned (at the group's committed offset, else at the end of a topic
that existed when it subscribed, else at the beginning; that start is committed for the
group), and the group has committed a start for every partition of the topics that existed,
whichever member holds it (a rebalance that beat a member's commit would otherwise let the
next holder position at the end again), so every event published after it returned is
read; it waits at most ``join_timeout`` seconds. With ``start="all"``, a partition the
group has no committed offset for is read from its beginning, which is committed at once
(an empty partition's too): members of one group may say different ``start``s, the
group's committed offsets decide (``start`` only where it has none).

**Retries** are non-blocking and in-process: a handler that raises gets the record again
after the policy's backoff while the partition's later records go on being handled; the
partition's committed offset stays at the retrying record until it is settled, so a crash
meanwhile redelivers it (and what followed it) rather than losing it. After
``max_deliver`` attempts the record goes to the dead-letter topic with ``tidings-dead-*``
headers: reason, handler, attempts, original topic (``tidings-dead-subject``), partition
(``tidings-dead-partition``) and offset (``tidings-dead-sequence``). Why not retry topics:
see ``docs/kafka.md``.

**What Kafka does not offer** (:attr:`KafkaTransport.features`): no redelivery of a single
unsettled record after ``ack_wait`` (Kafka redelivers a partition from its committed
offset when its owner leaves the group), no duplicate window (``dedup``), no exclusive
groups (a partition already has exactly one reader; each key's events are in order
across the group without it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import logging
import re
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

try:
    import aiokafka
    import aiokafka.errors
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.structs import TopicPartition
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tidings.transports.kafka needs aiokafka: install it with pip install 'tidings[kafka]'"
    ) from exc

from tidings.clock import HybridClock
from tidings.event import Envelope, event_type_for
from tidings.exceptions import (
    InvalidTransportURLError,
    PublishError,
    PublishOutcomeUnknownError,
    TransportClosedError,
    TransportError,
    TransportUnavailableError,
)
from tidings.observability.logs import log_fields
from tidings.topics import validate_topic
from tidings.transports import _kafka_protocol
from tidings.transports._checked import CheckedEncodings
from tidings.transports._common import (
    ClientTransport,
    Subjects,
    check_group_name,
    quietly,
    report_publish_error,
)
from tidings.transports._consumer import Consumer
from tidings.transports._kafka_batches import Batch, Batcher, Lane, Partitions
from tidings.transports._kafka_wire import (
    KafkaHeaders,
    Templates,
    fast_envelope,
    publish_record,
    received_headers,
)
from tidings.transports.base import (
    DeliveryPolicy,
    MessageHandler,
    PublishAck,
    PublishErrorHook,
    TransportFeatures,
)
from tidings.transports.wire import (
    DEAD_ATTEMPTS,
    DEAD_HANDLER,
    DEAD_REASON,
    DEAD_SEQUENCE,
    DEAD_SUBJECT,
)

__all__ = ("DEAD_PARTITION", "KafkaTransport", "kafka_servers")

logger = logging.getLogger("tidings.transports.kafka")

_kafka_protocol.install()

DEAD_PARTITION = "tidings-dead-partition"
"""The header of a dead letter naming the partition of the original record."""

_record_size = DefaultRecordBatchBuilder.estimate_size_in_bytes
"""The bytes a record takes in a batch (aiokafka checks it against max_request_size)."""

_Origin = tuple[str | None, str, Envelope[Any] | None, bool]
"""What a failed publish reports: (event id, None: the envelope's; topic; envelope; report)."""


_COMMIT_WARNING_EVERY = 10.0
"""Seconds between warnings of commits failing for one cause."""

_LAST_COMMIT_MIN = 0.1
"""Seconds a closing subscription's last commit gets at least."""

_STOP_MIN = 0.5
"""Seconds a closing subscription's consumer gets at least to stop (leave its group) before
it is ended: enough for a broker that answers, past the close's deadline."""

_FORCED_STOP = 2.0
"""Seconds a consumer still stopping at the close's deadline gets to close its connections
(after its tasks are ended): the most a close overruns its timeout by (its subscriptions
close together, so their overruns do not add up)."""

_OFFSET_BITS = 64
"""A record's sequence here is ``(partition index << 64) | (offset + 1)``: a Kafka offset is
a signed 64-bit number, so ``offset + 1`` (at most 2**63) never reaches the index's bits and
no two partitions' records share a sequence (with 40 bits, a partition past offset 2**40
took another's: its records could be dropped as copies of that one's). Sequences are so
wider than 64 bits (Python integers): the consumer's duplicate detection only compares
them."""


def kafka_servers(servers: str | Sequence[str]) -> tuple[str, ...]:
    """``host:port`` bootstrap servers from ``kafka://host:port`` URLs (several separated by
    commas, or a list); a bare ``host:port`` is accepted; the port defaults to 9092.

    Raises:
        InvalidTransportURLError: naming a URL that is not ``kafka://host[:port]``.
    """
    given = [servers] if isinstance(servers, str) else list(servers)
    out: list[str] = []
    for item in given:
        for url in (part.strip() for part in item.split(",")):
            text = url if "://" in url else f"kafka://{url}"
            try:
                parts = urlsplit(text)
                port = parts.port or 9092
            except ValueError as exc:
                raise InvalidTransportURLError(
                    f"{url!r} is not a Kafka URL ({exc}): use kafka://host:9092", url=url
                ) from None
            if parts.scheme != "kafka" or not parts.hostname or parts.path not in ("", "/"):
                raise InvalidTransportURLError(
                    f"{url!r} is not a Kafka URL: use kafka://host:9092 (several: "
                    "kafka://a:9092,b:9092)",
                    url=url,
                )
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            out.append(f"{host}:{port}")
    if not out:
        raise InvalidTransportURLError("no Kafka server given: use kafka://host:9092", url="")
    return tuple(out)


def _pattern_regex(subject_filter: str) -> str:
    """The regular expression of Kafka topic names matching a subject filter."""
    parts = []
    for token in subject_filter.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r".+")
        else:
            parts.append(re.escape(token))
    return "^" + r"\.".join(parts) + "$"


class _Ledger:
    """The records of one partition taken in by one subscription and not yet committable.

    Invariant: ``position()`` is the offset of the first record taken in whose handling has
    not finished (else the offset after the last one taken in): everything before it is
    finished, so committing it loses nothing. ``open`` holds the unfinished offsets in
    order, ``done`` the finished ones behind the first unfinished (records mostly finish in
    order: then ``done`` stays empty and a finish is one ``popleft``).

    A revoked ledger goes on recording finishes (nothing commits it any more): when the
    partition is assigned to the same subscription again, its successor (see
    :meth:`_Subscription.refetched`) leaves out what it tells finished and delivers the rest
    again. It is kept for that only while it can tell something (see
    :attr:`_Subscription.revoked`).
    """

    __slots__ = (
        "busy",
        "changed",
        "committed",
        "done",
        "first",
        "next",
        "open",
        "owned",
        "previous",
        "subscription",
    )

    def __init__(self, subscription: _Subscription) -> None:
        self.subscription = weakref.ref(subscription)
        """The subscription reading the partition (weak: see :class:`_Record`)."""
        self.open: deque[int] = deque()
        self.done: set[int] = set()
        self.next = -1
        self.first = -1
        """The offset of the first record taken in (-1 before any)."""
        self.committed = -1
        self.busy = 0
        """Records taken in and neither finished nor waiting for a retry."""
        self.changed: asyncio.Event | None = None
        """Set when ``busy`` drops, while a rebalance waits for it (else ``None``)."""
        self.owned = True
        """Whether the partition is still assigned here (``False`` once revoked)."""
        self.previous: _Ledger | None = None
        """The partition's ledger under its previous assignment to this subscription (that
        took records in), until the records read again reach past what it, and the ones
        before it that it still holds, took in."""

    def take(self, records: Sequence[Any]) -> None:
        """Take in a fetched batch of this partition's records (in offset order)."""
        if not records:
            return
        first, last = records[0].offset, records[-1].offset
        if self.first < 0:
            self.first = first
        if first >= self.next and last - first == len(records) - 1:
            # The usual batch: consecutive offsets (a partition's records come in offset
            # order, each offset once), all past what was taken in: one extend.
            self.open.extend(range(first, last + 1))
            self.next = last + 1
        else:  # gaps (compaction, transaction markers) or records taken in already
            open_, next_ = self.open, self.next
            for record in records:
                offset = record.offset
                if offset >= next_:
                    open_.append(offset)
                    next_ = offset + 1
            self.next = next_
        self.busy += len(records)

    def position(self) -> int:
        return self.open[0] if self.open else self.next

    def finished(self, offsets: Sequence[int]) -> set[int]:
        """Which of ``offsets`` are of records whose handling finished here: taken in (or
        left out as finished) under this assignment, else, outside what it took in, under
        the assignments before it that it still holds (:attr:`previous`)."""
        first, end = self.first, self.next
        if first < 0:  # none taken in (only positioned)
            first = end = 0
        unfinished = set(self.open).difference(self.done)
        found = {o for o in offsets if first <= o < end and o not in unfinished}
        if self.previous is not None:  # what this one did not read again yet
            rest = [o for o in offsets if not first <= o < end]
            if rest:
                found |= self.previous.finished(rest)
        return found

    def reach(self) -> int:
        """The end of what this assignment and the ones before it that it still holds
        took in."""
        end = self.next
        if self.previous is not None:
            end = max(end, self.previous.reach())
        return end


class _Record(msgspec.Struct, gc=False):
    """One delivery of a Kafka record to a :class:`Consumer` (its raw message).

    Untracked by the garbage collector (``gc=False``): a subscription holds up to its
    prefetch of these at once, and tracked ones made the collector walk (and promote) every
    held record again and again. That is safe because a record can never be part of a
    reference cycle: it refers only to its ledger (which refers to no record and reaches
    its subscription through a weak reference) and to values (bytes, text, numbers, the
    header tuples); what refers to records (the consumer's queues, messages, the retry
    heap) is never reachable from one.
    """

    subject: str
    partition: int
    offset: int
    key: bytes | None
    data: bytes
    kafka_headers: Sequence[tuple[str, bytes]]
    sequence: int
    attempt: int
    ledger: _Ledger
    tp: TopicPartition
    lenient: bool
    """Read headers that are not UTF-8 escaped (dead letters keep them as they came)."""
    _headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The headers as the wire decoder reads them (raises DecodeError if not UTF-8)."""
        if self._headers is None:
            self._headers = received_headers(
                self.kafka_headers, self.key, self.subject, lenient=self.lenient
            )
        return self._headers

    def finish(self) -> None:
        """Finished (acked or dead-lettered): committable once every earlier record of the
        partition is (see :class:`_Ledger`). No suspension point: the :class:`Consumer` acks
        with it directly, once per event, so the ledger's side is written out here."""
        ledger = self.ledger  # revoked meanwhile or not: see _Ledger
        ledger.busy -= 1
        open_, offset = ledger.open, self.offset
        if open_ and open_[0] == offset:
            open_.popleft()
            done = ledger.done
            while done and open_ and open_[0] in done:
                done.discard(open_.popleft())
        else:
            ledger.done.add(offset)
        if ledger.changed is not None:
            ledger.changed.set()

    async def ack(self) -> None:
        """Finished (see :meth:`finish`)."""
        self.finish()

    term = ack

    async def nak(self, delay: float | None = None) -> None:
        subscription = self.ledger.subscription()
        if subscription is not None:
            subscription.retry(self, delay or 0.0)

    async def in_progress(self) -> None:
        return  # Kafka has no per-record lease: the group's heartbeats keep the partition


class _Subscription(ConsumerRebalanceListener):  # type: ignore[misc]
    """The Kafka side of one subscription: the consumer, the ledgers, retries and commits."""

    def __init__(
        self,
        transport: KafkaTransport,
        consumer: AIOKafkaConsumer,
        *,
        start: Literal["new", "all"],
        name: str,
        group_id: str,
    ) -> None:
        self.transport = transport
        self.consumer = consumer
        self.group_id = group_id
        self.start = start
        self.name = name
        self.existing: set[str] = set()
        """The Kafka topics that existed when the subscription started."""
        self.pending: set[TopicPartition] = set()
        """``start="new"``: assigned partitions not yet positioned (no ledger yet: their
        records are not taken in until they are)."""
        self.ready = asyncio.Event()
        """Set once every partition of an assignment is positioned (``subscribe`` waits for
        it, then for :meth:`positioned_in_group`)."""
        self.starts: dict[TopicPartition, int] = {}
        """``start="new"``: where each partition started when it was first positioned here
        without a committed offset (where it starts again if that commit was lost)."""
        self.unstarted: list[TopicPartition] = []
        """What :meth:`positioned_in_group` last found the group had no start for (named by
        ``subscribe``'s error when it gives up)."""
        self.ledgers: dict[TopicPartition, _Ledger] = {}
        self.revoked: dict[TopicPartition, _Ledger] = {}
        """The ledger of each partition revoked here that can still tell what finished when
        its records are read again here (see :meth:`refetched`): until the group's committed
        offset reaches the end of what it took in (see :meth:`_forget_revoked`)."""
        self.forgetting: asyncio.Task[None] | None = None
        """Looks the group's committed offsets of :attr:`revoked` up now and then (while it
        is not empty)."""
        self.anchoring: asyncio.Task[None] | None = None
        """``start="all"``: commits the start of the partitions last assigned (see
        :meth:`_anchor`); the next revoke, or the stop, waits for it."""
        self.indexes: dict[TopicPartition, int] = {}
        self.index_counter = itertools.count(1)
        self.retries: list[tuple[float, int, _Record]] = []
        self.counter = itertools.count()
        self.wake: asyncio.Future[None] | None = None
        self.poll: asyncio.Task[Any] | None = None
        self.committer: asyncio.Task[None] | None = None
        self.stopping = False
        self.failing: tuple[str, float] | None = None
        """The cause of the failed commit last logged, and when (``None`` after a commit
        succeeded)."""
        self.lenient = False
        """Read headers that are not UTF-8 escaped (dead letters keep them as they came)."""

    # ------------------------------------------------------------------ records

    def sequence_base(self, tp: TopicPartition) -> int:
        """The high bits of the sequences of ``tp``'s records (``| offset + 1`` completes one)."""
        index = self.indexes.get(tp)
        if index is None:
            index = self.indexes[tp] = next(self.index_counter)
        return index << _OFFSET_BITS

    def retry(self, record: _Record, delay: float) -> None:
        if self.stopping:
            return  # left uncommitted: read again from the committed offset
        ledger = record.ledger
        if not ledger.owned:
            return
        ledger.busy -= 1
        if ledger.changed is not None:
            ledger.changed.set()
        again = msgspec.structs.replace(record, attempt=record.attempt + 1)
        due = time.monotonic() + delay
        heapq.heappush(self.retries, (due, next(self.counter), again))
        self._woken()

    def _due(self, batch: int) -> list[_Record]:
        out: list[_Record] = []
        now = time.monotonic()
        retries = self.retries
        while retries and retries[0][0] <= now and len(out) < batch:
            record = heapq.heappop(retries)[2]
            if record.ledger.owned:
                record.ledger.busy += 1
                out.append(record)
        return out

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        if self.retries:
            due = self._due(batch)
            if due:
                return due
        poll = self.poll
        if poll is None:
            # What the consumer has buffered already, without a task of its own and a
            # wait (the usual case while records stream in): only an empty buffer waits.
            # One pass of the event loop first, as the wait gave: the workers start on
            # what was queued, and the responses that arrived meanwhile are read.
            await asyncio.sleep(0)
            ready = self._records(await self.consumer.getmany(timeout_ms=0, max_records=batch))
            if ready:
                return ready
            poll = self.poll = asyncio.ensure_future(
                self.consumer.getmany(timeout_ms=int(timeout * 1000), max_records=batch)
            )
        # Woken by the poll's end, a retry scheduled meanwhile (see :meth:`retry`) or the
        # first retry falling due: one future, lighter than asyncio.wait.
        loop = asyncio.get_running_loop()
        self.wake = wake = loop.create_future()
        poll.add_done_callback(self._woken)
        timer = None
        if self.retries:
            timer = loop.call_later(max(self.retries[0][0] - time.monotonic(), 0.0), self._woken)
        try:
            await wake
        finally:
            self.wake = None
            wake.cancel()
            poll.remove_done_callback(self._woken)
            if timer is not None:
                timer.cancel()
        if not poll.done():
            return self._due(batch)
        self.poll = None
        return self._records(poll.result()) or (self._due(batch) if self.retries else [])

    def _woken(self, _: object = None) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _records(self, fetched: Mapping[TopicPartition, Sequence[Any]]) -> list[_Record]:
        """The records of a ``getmany`` result, taken into their partitions' ledgers (none
        of a partition revoked meanwhile)."""
        out: list[_Record] = []
        for tp, records in fetched.items():
            ledger = self.ledgers.get(tp)
            if ledger is None:
                if tp not in self.consumer.assignment() or tp in self.pending:
                    # Revoked meanwhile (the new owner reads it from the commit), or not
                    # positioned yet (it is read from its start once it is).
                    continue
                # Assigned, and fetched before the listener heard of it.
                ledger = self.ledger(tp)
            if records[0].offset < ledger.next:  # fetched before it was positioned
                records = [record for record in records if record.offset >= ledger.next]
            base = self.sequence_base(tp) + 1  # + offset: the record's sequence
            if ledger.previous is None or not records:
                ledger.take(records)
            else:
                records = self.refetched(ledger, records)
            topic, partition, lenient = tp.topic, tp.partition, self.lenient
            out += [
                _Record(
                    topic,
                    partition,
                    offset,
                    record.key,
                    record.value or b"",  # None: a tombstone
                    record.headers,
                    base + offset,
                    1,
                    ledger,
                    tp,
                    lenient,
                )
                for record in records
                for offset in (record.offset,)
            ]
        return out

    def ledger(self, tp: TopicPartition) -> _Ledger:
        """A new ledger for ``tp``, just assigned; the one it had when it was last revoked
        here becomes its :attr:`~_Ledger.previous`."""
        ledger = self.ledgers[tp] = _Ledger(self)
        previous = self.revoked.pop(tp, None)
        if previous is not None and previous.first < 0:
            # It took nothing in (revoked before anything was read again): the assignment
            # before it still tells what finished.
            previous = previous.previous
        # A previous one that had not read past its own previous keeps it (its finishes
        # count too), until the records read again here reach past them all.
        ledger.previous = previous
        return ledger

    def refetched(self, ledger: _Ledger, records: Sequence[Any]) -> list[Any]:
        """Take in ``records`` of a partition assigned here again after a revoke: the ones
        whose handling finished here under the previous assignment count as finished at
        once and are not delivered again; the others are (those still being handled when
        the partition was revoked too: their old copies settle nothing any more, and carry
        other sequences, see :meth:`on_partitions_revoked`)."""
        previous = ledger.previous
        assert previous is not None
        if records[0].offset >= previous.reach():
            ledger.previous = None  # read past everything the previous assignments took in
            ledger.take(records)
            return list(records)
        finished = previous.finished([record.offset for record in records])
        kept = [record for record in records if record.offset not in finished]
        if ledger.first < 0:
            ledger.first = records[0].offset  # the ones left out count as taken in, finished
        ledger.take(kept)
        ledger.next = max(ledger.next, records[-1].offset + 1)
        return kept

    # ------------------------------------------------------------------ commits

    async def commit_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.commit()  # nothing is sent unless a position moved

    async def commit(self, only: Any = None) -> None:
        """Commit each owned partition's position (of ``only``'s partitions, if given)."""
        offsets: dict[TopicPartition, int] = {}
        for tp, ledger in self.ledgers.items():
            if only is not None and tp not in only:
                continue
            position = ledger.position()
            if position > ledger.committed and position >= 0:
                offsets[tp] = position
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:
            # tried again at the next round (the positions stay ahead of ``committed``)
            self._commit_failed(exc)
            return
        self.failing = None
        for tp, position in offsets.items():
            owned = self.ledgers.get(tp)
            if owned is not None:
                owned.committed = max(owned.committed, position)

    def _commit_failed(self, error: Exception) -> None:
        """Log a failed commit: once while commits keep failing for the same cause (the
        join waits commit every 0.1 s), again after :data:`_COMMIT_WARNING_EVERY` seconds
        of it, at once for another cause or after a commit succeeded."""
        cause = repr(error)
        now = time.monotonic()
        last = self.failing
        if last is not None and last[0] == cause and now - last[1] < _COMMIT_WARNING_EVERY:
            return
        self.failing = (cause, now)
        logger.warning(
            "subscription %s could not commit offsets (%s); the records after the last "
            "commit may be delivered again (not logged again for this cause within %gs)",
            self.name,
            cause,
            _COMMIT_WARNING_EVERY,
            extra=log_fields(None, self.name),
        )

    # ------------------------------------------------------------------ rebalances

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Let the handlers of the revoked partitions finish, then commit them (within
        ``revoke_timeout``); what is still unfinished then is read again by the new owner."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.transport.revoke_timeout
        anchoring = self.anchoring
        if anchoring is not None:
            # Let it commit the starts first (aiokafka heartbeats while this callback runs):
            # cancelled, it left a partition with no start in the group, which a start="new"
            # member given it read from its end, skipping what was there. Past the deadline
            # it is cancelled: its commit must not land after the one of where they got to.
            await asyncio.wait((anchoring,), timeout=max(deadline - loop.time(), 0.0))
            anchoring.cancel()
            await asyncio.gather(anchoring, return_exceptions=True)
            self.anchoring = None
        ledgers = [self.ledgers[tp] for tp in revoked if tp in self.ledgers]
        for ledger in ledgers:
            while ledger.busy > 0 and loop.time() < deadline:
                ledger.changed = changed = asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), deadline - loop.time())
                ledger.changed = None
        await self.commit(set(revoked))
        unfinished = sum(ledger.busy for ledger in ledgers)
        if unfinished:
            logger.warning(
                "subscription %s gave up %d partition(s) with %d record(s) still being "
                "handled after revoke_timeout=%gs; the new owner will handle them again",
                self.name,
                len(ledgers),
                unfinished,
                self.transport.revoke_timeout,
                extra=log_fields(None, self.name),
            )
        self.pending.difference_update(revoked)
        for tp in revoked:
            gone = self.ledgers.pop(tp, None)
            if gone is not None:
                gone.owned = False
                if gone.committed < gone.reach():
                    # Read again from the commit, its finishes past it still count.
                    self.revoked[tp] = gone
            # The partition's records get other sequences if it is assigned here again: a
            # copy read again is then never dropped as a duplicate of its old copy, which
            # settles only the revoked ledger (an old copy that finished leaves its offset
            # out of the new assignment instead, see :meth:`refetched`).
            self.indexes.pop(tp, None)
        if self.revoked and self.forgetting is None and not self.stopping:
            self.forgetting = asyncio.create_task(
                self._forget_revoked(), name=f"tidings:kafka:revoked:{self.name}"
            )

    async def _forget_revoked(self) -> None:
        """Drop each ledger of :attr:`revoked` once the group's committed offset of its
        partition reached the end of what it, and the ones before it that it holds, took
        in (another member handled the records it left unfinished, and committed past
        them): read again from there, the partition has nothing it could tell finished.
        The offsets are looked up every ``metadata_refresh`` seconds while there is one (a
        failed lookup waits for the next round)."""
        try:
            while self.revoked:
                await asyncio.sleep(self.transport.metadata_refresh)
                admin = self.transport._admin
                if admin is None:
                    return  # never started: nothing to look up
                try:
                    committed = await admin.list_consumer_group_offsets(
                        self.group_id, partitions=list(self.revoked)
                    )
                except aiokafka.errors.KafkaError:
                    continue
                for tp, found in committed.items():
                    ledger = self.revoked.get(tp)
                    if ledger is not None and found.offset >= ledger.reach():
                        del self.revoked[tp]
        finally:
            self.forgetting = None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Take the newly assigned partitions in. ``start="new"``: they are positioned first
        (:meth:`_position`); once every partition held is, :attr:`ready` is set."""
        pending = self.pending
        pending.intersection_update(assigned)
        taken: list[TopicPartition] = []
        for tp in assigned:
            if tp in self.ledgers or tp in pending:
                continue
            if self.start == "new":
                pending.add(tp)
            else:
                self.ledger(tp)
                taken.append(tp)
        if taken and not self.stopping:
            # In a task of its own: aiokafka sends no heartbeats while this callback runs, and
            # a member held in it past session_timeout (lookups on a slow broker) is dropped
            # from the group while it goes on reading the partitions: read twice then.
            self.anchoring = asyncio.create_task(
                self._anchor({tp: self.ledgers[tp] for tp in taken}),
                name=f"tidings:kafka:anchor:{self.name}",
            )
        if pending:
            await self._position()
        if not pending:
            self.ready.set()

    async def _anchor(self, ledgers: dict[TopicPartition, _Ledger]) -> None:
        """``start="all"``: commit the beginning of each partition of ``ledgers`` (just
        assigned, with their new ledgers; read from the group's committed offset, else from
        their beginning) that the group has no committed offset for and nothing was taken
        in from yet, as a ``start="new"`` member commits where it positions one. Else an
        empty partition would have no start in the group until a record of it is read, and
        a ``start="new"`` member joining the group would wait for one
        (:meth:`positioned_in_group`), then fail. Failed lookups are tried again for up to
        ``connect_timeout``; then the partition is committed once a record of it is read.
        Runs as :attr:`anchoring`, which the next revoke (or the stop) waits for (within
        ``revoke_timeout``, or the close's timeout; then cancels) before it commits."""
        admin = self.transport._admin
        assert admin is not None
        partitions = list(ledgers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.transport.connect_timeout
        while True:
            try:
                committed = await admin.list_consumer_group_offsets(
                    self.group_id, partitions=partitions
                )
                fresh = [tp for tp in partitions if tp not in committed or committed[tp].offset < 0]
                found = await self.consumer.beginning_offsets(fresh) if fresh else {}
                break
            except aiokafka.errors.KafkaError as exc:
                if loop.time() >= deadline:
                    logger.debug("subscription %s: no start looked up (%r)", self.name, exc)
                    return
                await asyncio.sleep(0.1)  # a back-off before looking them up again
        anchored: set[TopicPartition] = set()
        for tp, offset in found.items():
            ledger = ledgers[tp]
            if self.ledgers.get(tp) is ledger and ledger.next < 0:  # held, none taken in
                ledger.next = offset
                anchored.add(tp)
        if anchored:
            await self.commit(anchored)

    async def _position(self) -> None:
        """Position the pending partitions still assigned: at the group's committed offset,
        else at their end, or at their beginning for a topic created since the subscription
        started (all of it was published after); that start is recorded as the partition's
        position, so it is committed: whichever member holds the partition later resumes
        there, instead of starting at the end it then has.

        The offsets are looked up first; then, with no suspension point in between, each
        partition still assigned is positioned (so a change of assignment meanwhile cannot
        make a seek fail). Partitions no longer assigned stay pending: the next assignment,
        which a change always brings, positions them. Failed lookups are tried again for up
        to ``connect_timeout`` (then see :meth:`_give_up_positioning`).
        """
        consumer, pending = self.consumer, self.pending
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.transport.connect_timeout
        while pending:
            partitions = sorted(pending & consumer.assignment())
            if not partitions:
                return
            try:
                committed = await asyncio.gather(*(consumer.committed(tp) for tp in partitions))
                fresh = [
                    tp for tp, offset in zip(partitions, committed, strict=True) if offset is None
                ]
                at_end = [tp for tp in fresh if tp.topic in self.existing]
                at_beginning = [tp for tp in fresh if tp.topic not in self.existing]
                found = await consumer.end_offsets(at_end) if at_end else {}
                if at_beginning:
                    found.update(await consumer.beginning_offsets(at_beginning))
            except aiokafka.errors.KafkaError as exc:
                if loop.time() >= deadline:
                    await self._give_up_positioning(partitions, exc)
                    return
                await asyncio.sleep(0.1)  # a back-off before looking them up again
                continue
            assignment = consumer.assignment()
            positioned: set[TopicPartition] = set()
            for tp, offset in zip(partitions, committed, strict=True):
                if tp not in assignment or tp not in pending:
                    continue  # reassigned meanwhile: positioned at the next assignment
                ledger = self.ledger(tp)
                if offset is None:
                    # The start as of the first positioning here: a commit of it lost to a
                    # rebalance (the group moved on first) is made again, not moved on.
                    offset = ledger.next = self.starts.setdefault(tp, found[tp])
                    positioned.add(tp)
                consumer.seek(tp, offset)
                pending.discard(tp)
            if positioned:
                await self.commit(positioned)

    async def positioned_in_group(self) -> bool:
        """Whether the group has committed an offset for every partition of the subscribed
        topics that existed when the subscription started (each member commits where it
        positions a partition): whichever member holds a partition then, now or after a
        rebalance, starts there, so nothing published from now on is skipped. A lookup
        that fails counts as not yet."""
        consumer, admin = self.consumer, self.transport._admin
        assert admin is not None
        partitions: list[TopicPartition] = []
        for topic in sorted(consumer.subscription() & self.existing):
            numbers = consumer.partitions_for_topic(topic)
            if not numbers:
                self.unstarted = [TopicPartition(topic, -1)]
                return False  # not in the consumer's metadata yet (or deleted)
            partitions += [TopicPartition(topic, number) for number in sorted(numbers)]
        if not partitions:
            return True
        try:  # one request for them all (a consumer asks per partition)
            committed = await admin.list_consumer_group_offsets(
                self.group_id, partitions=partitions
            )
        except aiokafka.errors.KafkaError:
            return False
        self.unstarted = [
            tp for tp in partitions if tp not in committed or committed[tp].offset < 0
        ]
        return not self.unstarted

    async def _give_up_positioning(
        self, partitions: list[TopicPartition], error: BaseException
    ) -> None:
        """The start of ``partitions`` could not be looked up within ``connect_timeout``.
        Before :attr:`ready` they stay pending (``subscribe`` then fails, typed); after it,
        they are read from their beginning: what the group already handled again rather
        than nothing."""
        if not self.ready.is_set():
            return
        assignment = self.consumer.assignment()
        still = [tp for tp in partitions if tp in assignment and tp in self.pending]
        logger.warning(
            "subscription %s could not look up where to start reading %s (%r); it reads them "
            "from their beginning",
            self.name,
            still,
            error,
            extra=log_fields(None, self.name),
        )
        for tp in still:
            self.ledger(tp)
            self.pending.discard(tp)
        if still:
            # The reset is asked for at once (still assigned: no suspension point since).
            with contextlib.suppress(aiokafka.errors.KafkaError):
                await self.consumer.seek_to_beginning(*still)

    async def stop(self) -> None:
        self.stopping = True
        for task in (self.poll, self.committer, self.forgetting):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        loop = asyncio.get_running_loop()
        close_by = self.transport._close_by
        end = close_by if close_by is not None else loop.time() + self.transport.revoke_timeout
        anchoring = self.anchoring
        if anchoring is not None:
            # Its starts are committed before the partitions go (see on_partitions_revoked),
            # within the time the last commit has.
            await asyncio.wait((anchoring,), timeout=max(end - loop.time(), 0.0))
            anchoring.cancel()
            await asyncio.gather(anchoring, return_exceptions=True)
        # aiokafka's commit waits for the group coordinator without a time limit (for ever
        # to a broker gone): the last commit gets what is left of the close's timeout.
        with contextlib.suppress(Exception, TimeoutError):
            await asyncio.wait_for(self.commit(), max(end - loop.time(), _LAST_COMMIT_MIN))
        uncommitted = [
            tp for tp, ledger in self.ledgers.items() if ledger.position() > ledger.committed
        ]
        if uncommitted:
            logger.warning(
                "subscription %s closed without committing the offsets of %d partition(s) "
                "(the broker did not answer in time); their records since the last commit "
                "are delivered again to the partitions' next owner",
                self.name,
                len(uncommitted),
                extra=log_fields(None, self.name),
            )
        self.retries.clear()
        await self._stop_consumer(max(end - loop.time(), _STOP_MIN))

    async def _stop_consumer(self, timeout: float) -> None:
        """Stop the consumer, ending it for real after ``timeout`` seconds.

        aiokafka's ``stop()`` lets its coordination task finish, then leaves the group: to
        a broker gone or frozen, each waits up to the request timeout (30 s or more), and
        cancelled there it left its heartbeat, fetch and metadata tasks retrying the
        broker and their connections open past the close. So past ``timeout`` its tasks are
        ended (no public way) and its connections closed, within :data:`_FORCED_STOP`."""
        consumer = self.consumer
        stopping = asyncio.ensure_future(consumer.stop())
        await asyncio.wait((stopping,), timeout=timeout)
        if stopping.done() and not stopping.cancelled() and stopping.exception() is None:
            return
        # Overrun, or ended halfway (its coordination task cancelled under it, or failed).
        logger.debug("ending consumer %s: %r", self.name, stopping, extra=log_fields())
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        # Private aiokafka (0.12-0.14) names, read with getattr: a release that renames one
        # leaves that part to stop() alone instead of failing the close.
        coordinator = getattr(consumer, "_coordinator", None)
        found = (
            getattr(coordinator, "_coordination_task", None),
            getattr(coordinator, "_heartbeat_task", None),
            getattr(coordinator, "_commit_refresh_task", None),
        )
        tasks = [task for task in found if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        parts = (getattr(consumer, "_fetcher", None), getattr(consumer, "_client", None))
        for part in parts:
            if part is None:
                continue
            # Each may end cancelled (a task it awaits was): the next is done regardless.
            closing = asyncio.ensure_future(part.close())
            await asyncio.wait((closing,), timeout=_FORCED_STOP / 2)
            closing.cancel()
            await asyncio.gather(closing, return_exceptions=True)


class KafkaTransport(ClientTransport):
    """Events over Apache Kafka. See the module docstring for the guarantees.

    Args:
        servers: ``"kafka://host:9092"``, several separated by commas, or a list (a bare
            ``host:port`` too); a malformed one raises
            :class:`~tidings.exceptions.InvalidTransportURLError` here.
        prefix: Kafka topics are ``<prefix>.<topic>``.
        dead_letter_prefix: dead letters go to ``<dead_letter_prefix>.<topic>`` (default
            ``<prefix>-dead``).
        partitions: the partitions of each topic tidings creates.
        replication: the replication factor of each topic tidings creates.
        policy: the default delivery policy of subscriptions.
        clock: merges the times of received events; a new one by default.
        structured: publish JSON CloudEvents values instead of binary mode.
        window: the most pipelined publishes awaiting their acknowledgement.
        connect_timeout: seconds :meth:`start` may take to reach a broker before it raises
            :class:`~tidings.TransportUnavailableError`.
        publish_timeout: seconds a publish may take, retries included, before it fails.
        linger: seconds the producer waits to fill a batch (0: send at once).
        max_request_size: the largest record, in bytes, the producer sends (larger
            events raise :class:`~tidings.PublishError` before anything is sent).
        idempotent: the idempotent producer (on by default).
        metadata_refresh: seconds between metadata refreshes, so pattern subscriptions
            find topics created after they started.
        session_timeout: seconds without heartbeats after which the group gives a dead
            member's partitions to the others.
        revoke_timeout: seconds a rebalance waits for the revoked partitions' handlers.
        join_timeout: seconds a ``start="new"`` :meth:`subscribe` waits for its partitions
            to be assigned and positioned, and for the group to have committed a start for
            every partition of the topics that existed, before it raises
            :class:`~tidings.TransportUnavailableError` (default: ``connect_timeout +
            session_timeout + revoke_timeout + 5``, as a join waits up to
            ``revoke_timeout + 5`` for the other members to give partitions up).
        commit_interval: seconds between offset commits.
        on_publish_error: told of every failed :meth:`send`; failures are logged if unset.
        name: the client id the brokers see.

    Raises:
        ValueError: if a prefix or number is invalid.
    """

    system = "kafka"
    features = TransportFeatures(
        persistent=True, redelivery=False, dedup=False, exclusive_groups=False
    )

    def __init__(
        self,
        servers: str | Sequence[str] = "kafka://127.0.0.1:9092",
        *,
        prefix: str = "tidings",
        dead_letter_prefix: str | None = None,
        partitions: int = 3,
        replication: int = 1,
        policy: DeliveryPolicy | None = None,
        clock: HybridClock | None = None,
        structured: bool = False,
        window: int = 4096,
        connect_timeout: float = 10.0,
        publish_timeout: float = 30.0,
        linger: float = 0.0,
        max_request_size: int = 1_048_576,
        idempotent: bool = True,
        metadata_refresh: float = 5.0,
        session_timeout: float = 10.0,
        revoke_timeout: float = 30.0,
        join_timeout: float | None = None,
        commit_interval: float = 0.1,
        on_publish_error: PublishErrorHook | None = None,
        name: str | None = None,
    ) -> None:
        if window < 1 or partitions < 1 or replication < 1:
            raise ValueError("window, partitions and replication must be at least 1")
        for label, value in (
            ("connect_timeout", connect_timeout),
            ("publish_timeout", publish_timeout),
            ("metadata_refresh", metadata_refresh),
            ("session_timeout", session_timeout),
            ("revoke_timeout", revoke_timeout),
            ("join_timeout", join_timeout if join_timeout is not None else 1.0),
            ("commit_interval", commit_interval),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be a positive number of seconds, not {value!r}")
        if linger < 0:
            raise ValueError(f"linger must be >= 0 seconds, not {linger!r}")
        self.servers = kafka_servers(servers)
        self.subjects = Subjects(prefix, dead_letter_prefix)
        self.stream_name = prefix
        self.partitions = partitions
        self.replication = replication
        self.policy = policy if policy is not None else DeliveryPolicy()
        self.clock = clock if clock is not None else HybridClock()
        self.structured = structured
        self.window = window
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.linger = linger
        self.max_request_size = max_request_size
        self.idempotent = idempotent
        self.metadata_refresh = metadata_refresh
        self.session_timeout = session_timeout
        self.revoke_timeout = revoke_timeout
        self.join_timeout = (
            join_timeout
            if join_timeout is not None
            else connect_timeout + session_timeout + revoke_timeout + 5.0
        )
        self.commit_interval = commit_interval
        self.on_publish_error = on_publish_error
        self.name = name
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._state: Literal["new", "started", "closing", "closed"] = "new"
        self._topics: dict[str, asyncio.Future[int]] = {}
        self._room = asyncio.Event()
        """Set while fewer than ``window`` publishes await their acknowledgement."""
        self._room.set()
        self._batcher: Batcher | None = None
        """The producer's batches (while started): each publish goes into one."""
        self._unacked = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._failed = 0
        self._subs: list[Consumer] = []
        self._close_by: float | None = None
        """The event loop time by which :meth:`aclose` should be done (while closing)."""
        self._encoded: CheckedEncodings[tuple[KafkaHeaders, bytes, bytes | None, int]] = (
            CheckedEncodings(window)
        )
        """Records :meth:`check_envelope` encoded and found to fit (their sizes say so, as
        :meth:`_send` takes them), for the publish that follows (one encoding per event):
        :meth:`send` and :meth:`publish` take them; the ones no publish takes are dropped
        after a while (see CheckedEncodings); emptied on close."""
        self._partitions: dict[str, Partitions] = {}
        """The lanes of each tidings topic published to (its Kafka topic's, of the
        batcher)."""
        self._kafka_subs: set[_Subscription] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def _decoder(self, payload_type: type | None) -> Callable[[Any], Envelope[Any]]:
        """The general decoder behind :func:`fast_envelope`, which reads the records laid
        out as this transport writes them (the usual ones) without building header maps."""
        general = super()._decoder(payload_type)
        topic_of = self.subjects.topic
        topics: dict[str, Templates] = {}

        def decode(raw: _Record) -> Envelope[Any]:
            templates = topics.get(raw.subject)
            if templates is None:
                topic = topic_of(raw.subject)
                target = payload_type if payload_type is not None else event_type_for(topic)
                templates = topics[raw.subject] = Templates(topic, target)
            envelope = fast_envelope(raw.kafka_headers, raw.key, raw.data, templates)
            return envelope if envelope is not None else general(raw)

        return decode

    def _meta(self, raw: Any) -> tuple[int, int]:
        return raw.attempt, raw.sequence

    def _message_id(self, raw: Any) -> str:
        """``<kafka topic>-<partition>-<offset>``: the same in every process."""
        return f"{raw.subject}-{raw.partition}-{raw.offset}"

    # ------------------------------------------------------------------ lifecycle

    def _bootstrap(self) -> str:
        return ",".join(self.servers)

    async def start(self) -> None:
        if not self._needs_start():
            return
        timeout_ms = int(self.connect_timeout * 1000)
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap(),
            client_id=self.name or "tidings",
            acks="all",
            enable_idempotence=self.idempotent,
            linger_ms=0,  # the transport's batches linger (see _kafka_batches)
            max_request_size=self.max_request_size,
            request_timeout_ms=int(self.publish_timeout * 1000),
            metadata_max_age_ms=int(self.metadata_refresh * 1000),
        )
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap(),
            client_id=self.name or "tidings",
            request_timeout_ms=timeout_ms,
        )
        try:
            await asyncio.wait_for(self._connect(producer, admin), self.connect_timeout)
        except (TimeoutError, OSError, aiokafka.errors.KafkaError) as exc:
            await quietly(producer.stop())
            await quietly(admin.close())
            raise TransportUnavailableError(
                f"cannot reach Kafka at {', '.join(self.servers)} within "
                f"{self.connect_timeout:g}s ({type(exc).__name__}: {exc}); check that the "
                "broker runs and the URL, or raise connect_timeout",
                servers=self.servers,
                timeout=self.connect_timeout,
            ) from exc
        self._producer = producer
        self._admin = admin
        self._batcher = Batcher(producer, self._settled, self.publish_timeout, self.linger)
        self._state = "started"

    @staticmethod
    async def _connect(producer: AIOKafkaProducer, admin: AIOKafkaAdminClient) -> None:
        await admin.start()
        await producer.start()

    async def aclose(self, timeout: float = 10.0) -> None:
        if self._state == "started":
            self._close_by = asyncio.get_running_loop().time() + timeout
        deadline = await self._begin_close(timeout)
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._batcher is not None:
            await self._batcher.cancel()  # what was not handed to the producer fails
        # A broker gone for good must not hold the close: what is unsent fails.
        if self._producer is not None:
            await self._stop_producer(self._producer, max(deadline - loop.time(), 1))
        if self._admin is not None:
            await quietly(asyncio.wait_for(self._admin.close(), 5.0))
        if self._batcher is not None:
            self._batcher.expire(everything=True)  # no answer will come now
        self._encoded.clear()
        self._state = "closed"

    async def _stop_producer(self, producer: AIOKafkaProducer, timeout: float) -> None:
        """Stop ``producer``, giving its unanswered batches ``timeout`` seconds.

        aiokafka's ``stop()`` first waits until every batch is answered, and an idempotent
        producer's batches never expire: to a broker gone it would wait for ever. Cancelled
        there, it left its sender and metadata tasks retrying and their connections open
        past the close (and past the event loop). So past ``timeout`` its sender is ended
        (what it has in flight is let finish, within the request timeout) and ``stop()``
        goes on to close the connections."""
        stopping = asyncio.ensure_future(producer.stop())
        await asyncio.wait((stopping,), timeout=timeout)
        if not stopping.done():
            sender = producer._sender.sender_task
            if sender is not None:
                sender.cancel()
        await quietly(asyncio.wait_for(stopping, 2 * self.publish_timeout + 1.0))

    @property
    def server(self) -> tuple[str, int] | None:
        """The first bootstrap server's host and port, while started."""
        if self._state != "started":
            return None
        host, _, port = self.servers[0].rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def client_id(self) -> str | None:
        """The producer's client id, while started."""
        return (self.name or "tidings") if self._state == "started" else None

    @property
    def producer_id(self) -> int | None:
        """The producer id the broker gave the idempotent producer (``None``: none)."""
        producer = self._producer
        manager = None if producer is None else getattr(producer, "_txn_manager", None)
        if manager is None or manager.producer_id < 0:
            return None
        return int(manager.producer_id)

    def _client(self) -> AIOKafkaProducer:
        if self._state not in ("started", "closing") or self._producer is None:
            raise self._closed_error()
        return self._producer

    # ------------------------------------------------------------------ topics

    async def _topic(self, topic: str) -> int:
        """Create the Kafka topic ``topic`` unless it exists; its number of partitions."""
        known = self._topics.get(topic)
        if known is None:
            known = self._topics[topic] = asyncio.ensure_future(self._create(topic))
            known.add_done_callback(self._forget_failure(topic))
        return await asyncio.shield(known)

    def _forget_failure(self, topic: str) -> Callable[[asyncio.Future[int]], None]:
        def forget(future: asyncio.Future[int]) -> None:
            if future.cancelled() or future.exception() is not None:
                self._topics.pop(topic, None)

        return forget

    async def _create(self, topic: str) -> int:
        admin = self._admin
        assert admin is not None
        response = await admin.create_topics(
            [NewTopic(topic, self.partitions, self.replication)],
            timeout_ms=int(self.connect_timeout * 1000),
        )
        for _, code, *message in response.topic_errors:
            if code not in (0, aiokafka.errors.TopicAlreadyExistsError.errno):
                error = aiokafka.errors.for_code(code)
                raise TransportError(
                    f"cannot create the Kafka topic {topic!r}: {error.__name__} "
                    f"{message[0] if message else ''}; create it by hand or check the "
                    "broker's permissions",
                )
        partitions = await self._client().partitions_for(topic)
        return len(partitions)

    # ------------------------------------------------------------------ publishing

    def check_envelope(self, envelope: Envelope[Any]) -> None:
        record = publish_record(envelope, structured=self.structured)
        size = record[3]
        if size < 0 or size > self.max_request_size:  # else it fits, as its size says
            headers, body, key, _ = record
            self._check_size(envelope.id, envelope.topic, headers, body, key)
            record = headers, body, key, 0  # 0: it fits
        if self._batcher is not None and self._state != "closed":  # else none would take it
            self._encoded.keep(envelope, record)

    def _check_size(
        self, event_id: str, topic: str, headers: KafkaHeaders, body: bytes, key: bytes | None
    ) -> None:
        """Refuse a record above ``max_request_size`` (as aiokafka would: it never sends it)."""
        size = _record_size(key, body, headers)
        if size > self.max_request_size:
            raise PublishError(
                f"event {event_id} on {topic!r} was not published: it is {size:,} bytes, "
                f"above max_request_size={self.max_request_size:,}; send less (store large "
                "data elsewhere and publish a reference to it) or raise max_request_size "
                "(and the broker's message.max.bytes)",
                event_id=event_id,
                topic=topic,
            )

    def _record(self, envelope: Envelope[Any]) -> tuple[KafkaHeaders, bytes, bytes | None, int]:
        """``envelope``'s record as :meth:`check_envelope` encoded it (the bus checks every
        event first; size 0: it fits), else encoded now."""
        checked = self._encoded.take(envelope)
        return publish_record(envelope, structured=self.structured) if checked is None else checked

    def _refused(self, envelope: Envelope[Any]) -> TransportClosedError:
        """The error of a publish of ``envelope`` while not started or closed; the record
        :meth:`check_envelope` encoded for it (if any) is dropped: no publish takes it now."""
        self._encoded.take(envelope)
        return self._closed_error()

    async def publish(self, envelope: Envelope[Any]) -> PublishAck:
        if self._batcher is None or self._state == "closed":
            raise self._refused(envelope)
        record = self._record(envelope)
        future = await self._send(envelope.topic, *record, None, envelope, report=False)
        return await future

    async def send(self, envelope: Envelope[Any]) -> asyncio.Future[PublishAck]:
        batcher = self._batcher
        if batcher is None or self._state == "closed":
            raise self._refused(envelope)
        # As check_envelope encoded it (the bus checks every event first), else now (as
        # _record, written out: once per event).
        record = self._encoded.take(envelope)
        if record is None:
            record = publish_record(envelope, structured=self.structured)
        topic = envelope.topic
        partitions = self._partitions.get(topic)
        if partitions is not None and self._unacked < self.window:
            # The usual case, without a coroutine of its own: nothing to wait for.
            headers, body, key, size = record
            lane = partitions.lane(key)
            if not lane.backed_up:
                origin: _Origin = (None, topic, envelope, True)
                return self._add(batcher, lane, headers, body, key, size, origin)
        return await self._send(topic, *record, None, envelope, report=True)

    async def publish_raw(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> PublishAck:
        validate_topic(topic)
        kafka_headers = [(name, value.encode()) for name, value in (headers or {}).items()]
        event_id = (headers or {}).get("ce-id") or (headers or {}).get("ce_id") or "?"
        future = await self._send(
            topic, kafka_headers, body, None, -1, event_id, None, report=False
        )
        return await future

    async def _send(
        self,
        topic: str,
        headers: KafkaHeaders,
        body: bytes,
        key: bytes | None,
        size: int,
        event_id: str | None,
        envelope: Envelope[Any] | None,
        *,
        report: bool,
        kafka_topic: str | None = None,
    ) -> asyncio.Future[PublishAck]:
        """Add one record to its partition's batch (see :mod:`._kafka_batches`); its future
        resolves with its acknowledgement or its typed error (``event_id``: ``None`` for
        ``envelope.id``; ``size``: a bound of the record's size, ``-1`` if not known, ``0``
        if known to fit).

        Raises:
            TransportClosedError: the transport is not started, or closed.
        """
        batcher = self._batcher
        if batcher is None or self._state == "closed":
            raise self._closed_error()
        if kafka_topic is None:
            partitions = self._partitions.get(topic)
            name = "" if partitions is not None else self.subjects.subject(topic)
        else:
            name = kafka_topic
            partitions = batcher.topics.get(name)
        lane = None if partitions is None else partitions.lane(key)
        if lane is not None and lane.backed_up:
            # Before the record counts, so that a cancelled wait adds nothing.
            await batcher.room(lane)
        while self._unacked >= self.window:
            self._room.clear()
            await self._room.wait()
        origin: _Origin = (event_id, topic, envelope, report)
        if lane is not None:
            return self._add(batcher, lane, headers, body, key, size, origin)
        self._unacked += 1  # while its topic is created: flush() waits for it too
        if self._unacked == 1:
            self._idle.clear()
        try:
            partitions = batcher.partitions(name, await self._topic(name))
        except BaseException as exc:
            # Nothing was added: the record no longer counts (a send cancelled while its
            # topic is created included, or flush() would wait for it for ever).
            self._unacked -= 1
            self._freed()
            if not isinstance(exc, Exception):
                raise
            future: asyncio.Future[PublishAck] = batcher.loop.create_future()
            self._fail(future, exc, origin, sent_out=False)
            return future
        if kafka_topic is None:
            self._partitions[topic] = partitions
        self._unacked -= 1  # _add counts it again (nothing suspends in between)
        return self._add(batcher, partitions.lane(key), headers, body, key, size, origin)

    def _add(
        self,
        batcher: Batcher,
        lane: Lane,
        headers: KafkaHeaders,
        body: bytes,
        key: bytes | None,
        size: int,
        origin: _Origin,
    ) -> asyncio.Future[PublishAck]:
        """Count one record and add it to ``lane``'s batch (refused: its future fails,
        typed, and it no longer counts); the caller waited for room first."""
        self._unacked += 1
        if self._unacked == 1:
            self._idle.clear()
        future: asyncio.Future[PublishAck] = batcher.loop.create_future()
        try:
            if size < 0 or size > self.max_request_size:  # else it fits
                self._check_size(_event_id(origin), origin[1], headers, body, key)
            batcher.add(lane, key, body, headers, future, origin)
        except BaseException as exc:
            # Nothing was added: the record no longer counts, or flush() would wait for
            # it for ever.
            self._unacked -= 1
            self._freed()
            if not isinstance(exc, Exception):
                raise
            self._fail(future, exc, origin, sent_out=False)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="tidings:kafka:publish-timeout")
        return future

    async def _sweep(self) -> None:
        """Fail publishes still unanswered after ``publish_timeout`` (in send order)."""
        batcher = self._batcher
        assert batcher is not None
        while True:
            await asyncio.sleep(min(self.publish_timeout / 4, 0.5))
            batcher.expire()

    def _freed(self) -> None:
        if self._unacked == 0:
            self._idle.set()
        self._room.set()

    def _settled(self, batch: Batch, error: BaseException | None, sent_out: bool) -> None:
        """Resolve the futures of ``batch``'s records with their acks or typed errors; free
        their window slots."""
        futures = batch.futures
        self._unacked -= len(futures)
        self._freed()
        if error is None:
            stream, sequence = batch.lane.stream, batch.base + 1
            for future in futures:
                if not future.done():  # cancelled by its caller
                    future.set_result(PublishAck(stream, sequence))
                sequence += 1
            return
        for future, origin in zip(futures, batch.origins, strict=True):
            if not future.done():
                self._fail(future, error, origin, sent_out=sent_out)

    def _fail(
        self,
        future: asyncio.Future[PublishAck],
        error: BaseException,
        origin: _Origin,
        *,
        sent_out: bool,
    ) -> None:
        """Fail one publish's future with its typed error (reported, for a :meth:`send`)."""
        _, topic, envelope, report = origin
        event_id = _event_id(origin)
        typed = self._typed(error, event_id, topic, envelope, sent_out=sent_out)
        self._failed += 1
        if report:
            report_publish_error(
                self.on_publish_error,
                envelope,
                typed,
                future,
                event_id=event_id,
                topic=topic,
                log=logger,
            )
        future.set_exception(typed)

    def _typed(
        self,
        error: BaseException,
        event_id: str,
        topic: str,
        envelope: Envelope[Any] | None,
        *,
        sent_out: bool,
    ) -> BaseException:
        if isinstance(error, PublishError | TransportClosedError | TypeError | ValueError):
            return error
        detail = f"{type(error).__name__}: {error}"
        if isinstance(error, aiokafka.errors.MessageSizeTooLargeError):
            detail = (
                f"it is larger than max_request_size={self.max_request_size:,} bytes; send "
                "less (store large data elsewhere and publish a reference to it) or raise "
                "max_request_size (and the broker's message.max.bytes)"
            )
        unknown = sent_out and (
            isinstance(error, aiokafka.errors.KafkaTimeoutError | TimeoutError)
            or getattr(error, "retriable", False)
        )
        typed: TransportError
        if unknown:
            typed = PublishOutcomeUnknownError(
                f"event {event_id} on {topic!r} may or may not be stored: no acknowledgement "
                f"within publish_timeout={self.publish_timeout:g}s ({detail}). Publishing it "
                "again may store a second copy with the same event id (Kafka keeps no "
                "duplicate window across producers): handle events idempotently",
                event_id=event_id,
                topic=topic,
                envelope=envelope,
            )
        else:
            typed = PublishError(
                f"event {event_id} on {topic!r} was not stored and will not be: {detail}",
                event_id=event_id,
                topic=topic,
            )
        typed.__cause__ = error
        return typed

    # ------------------------------------------------------------------ consuming

    async def _consume(
        self,
        pattern: str,
        subject_filter: str,
        handler: MessageHandler,
        group: str | None,
        policy: DeliveryPolicy,
        decode: Callable[[Any], Envelope[Any]],
        name: str,
        *,
        dead: bool,
    ) -> Consumer:
        check_group_name(group)
        if group is not None and policy.exclusive:
            raise TransportError(
                "DeliveryPolicy(exclusive=True) is not available on Kafka: each partition "
                "already has one reader in a group, and each key's events are in order across "
                "the group without it; drop exclusive="
            )
        if group is not None:
            group_id = self.group_id(pattern, group, dead=dead)
        else:
            digest = hashlib.blake2b(subject_filter.encode(), digest_size=5).hexdigest()
            group_id = f"{self.subjects.prefix}.tidings-{digest}-{_unique()}"
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap(),
            client_id=self.name or "tidings",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=int(self.metadata_refresh * 1000),
            session_timeout_ms=int(self.session_timeout * 1000),
            heartbeat_interval_ms=max(int(self.session_timeout * 1000 / 3), 100),
            max_poll_interval_ms=max(int(self.revoke_timeout * 1000), 300_000),
            fetch_max_wait_ms=100,
            rebalance_timeout_ms=int(self.revoke_timeout * 1000) + 5_000,
            request_timeout_ms=max(int(self.session_timeout * 1000) + 5_000, 30_000),
        )
        kafka = _Subscription(self, consumer, start=policy.start, name=name, group_id=group_id)
        if policy.start == "new":
            assert self._admin is not None
            kafka.existing = set(await self._admin.list_topics())
        if any(token in ("*", ">") for token in subject_filter.split(".")):
            consumer.subscribe(pattern=_pattern_regex(subject_filter), listener=kafka)
        else:
            await self._topic(subject_filter)
            consumer.subscribe(topics=[subject_filter], listener=kafka)
        try:
            await asyncio.wait_for(consumer.start(), self.connect_timeout)
        except (TimeoutError, OSError, aiokafka.errors.KafkaError) as exc:
            await quietly(consumer.stop())
            raise TransportUnavailableError(
                f"cannot start a Kafka consumer for {pattern!r} at {', '.join(self.servers)} "
                f"within {self.connect_timeout:g}s ({type(exc).__name__}: {exc})",
                servers=self.servers,
                timeout=self.connect_timeout,
            ) from exc
        if policy.start == "new":
            await self._joined(kafka, pattern)
        kafka.committer = asyncio.create_task(
            kafka.commit_loop(self.commit_interval), name=f"tidings:kafka:commit:{name}"
        )
        kafka.lenient = dead
        self._kafka_subs.add(kafka)

        async def dead_letter(raw: Any, reason: str, handler: str, attempts: int) -> None:
            headers = [(n, v) for n, v in raw.kafka_headers if not n.startswith("tidings-dead-")]
            headers += [
                (DEAD_REASON, reason.encode()),
                (DEAD_HANDLER, handler.encode()),
                (DEAD_ATTEMPTS, str(attempts).encode()),
                (DEAD_SUBJECT, raw.subject.encode()),
                (DEAD_PARTITION, str(raw.partition).encode()),
                (DEAD_SEQUENCE, str(raw.offset).encode()),
            ]
            topic = self.subjects.topic(raw.subject)
            future = await self._send(
                topic,
                headers,
                raw.data,
                raw.key,
                -1,
                f"{raw.subject}-{raw.partition}-{raw.offset}",
                None,
                report=False,
                kafka_topic=self.subjects.dead_subject(raw.subject),
            )
            await future

        async def release() -> None:
            self._kafka_subs.discard(kafka)
            await kafka.stop()

        return self._start_consumer(
            pattern,
            group,
            name,
            policy,
            handler,
            kafka.fetch,
            decode,
            None if dead else dead_letter,
            release,
            ack_now=_Record.finish,
            leases=False,  # in_progress does nothing: the group's heartbeats keep partitions
        )

    async def _joined(self, kafka: _Subscription, pattern: str) -> None:
        """Wait until ``kafka``'s consumer holds its partitions, each positioned, and the
        group has committed where every partition starts (:meth:`_Subscription.positioned_in_group`:
        a partition positioned by a member whose commit a rebalance beat would otherwise be
        positioned at its end again by its next holder, after ``subscribe`` returned), so
        every event published once ``subscribe`` returns is read; the wait is bounded by
        ``join_timeout``.

        Raises:
            TransportUnavailableError: when it is not within that time (the consumer is
                stopped).
        """
        timeout = self.join_timeout

        async def positioned() -> None:
            await kafka.ready.wait()
            # Its own starts are committed again here (a commit refused meanwhile: the
            # periodic commits begin only once subscribe returns); the other members commit
            # theirs in their own time, and the broker tells nothing when they do.
            while True:
                await kafka.commit()
                if await kafka.positioned_in_group():
                    return
                await asyncio.sleep(0.1)

        try:
            await asyncio.wait_for(positioned(), timeout)
        except TimeoutError:
            await quietly(kafka.stop())
            unstarted = ", ".join(
                tp.topic if tp.partition < 0 else f"{tp.topic}[{tp.partition}]"
                for tp in kafka.unstarted
            )
            why = (
                f"; the group {kafka.group_id!r} has no start committed for {unstarted} (held "
                "by a member that commits none, not a tidings subscription: a client of "
                "its own in the group; or by one that stopped before committing; or a topic "
                "deleted meanwhile)"
                if unstarted
                else ""
            )
            raise TransportUnavailableError(
                f"the Kafka consumer for {pattern!r} did not get its partitions from its "
                f"group at {', '.join(self.servers)}, each positioned and its start committed, "
                f"within join_timeout={timeout:g}s{why}; check "
                "the broker, or raise join_timeout if the group's members take long to give "
                "partitions up (up to revoke_timeout)",
                servers=self.servers,
                timeout=timeout,
            ) from None

    def group_id(self, pattern: str, group: str, *, dead: bool = False) -> str:
        """The Kafka consumer group of ``group``'s subscriptions to ``pattern`` (of its
        dead letters with ``dead``): ``<prefix>.<group>.<digest of the pattern>``."""
        subjects = self.subjects
        subject_filter = subjects.dead_filter(pattern) if dead else subjects.filter(pattern)
        digest = hashlib.blake2b(subject_filter.encode(), digest_size=5).hexdigest()
        return f"{subjects.prefix}.{group}.{digest}"

    def __repr__(self) -> str:
        return f"<KafkaTransport {self._state} {', '.join(self.servers)} prefix={self.stream_name}>"


def _event_id(origin: _Origin) -> str:
    event_id, _, envelope, _ = origin
    if event_id is None:
        assert envelope is not None
        return envelope.id
    return event_id


_unique_ids = itertools.count(1)


def _unique() -> str:
    return f"{time.time_ns():x}{next(_unique_ids)}"

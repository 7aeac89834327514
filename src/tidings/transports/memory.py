"""An in-memory transport that behaves like JetStream, for fast tests.

:class:`MemoryBroker` plays the server: one stream of messages (subject, headers, body),
a duplicate window on ``Nats-Msg-Id``, and pull consumers with ack wait, delayed
redelivery on ``nak``, in-progress heartbeats and termination. Each
:class:`MemoryTransport` plays one process connected to it; several transports on one
broker make competing consumers with ``group=``, exactly as processes do on NATS.

Events are encoded on publish and decoded on delivery with the NATS wire format
(:mod:`tidings.transports.wire`), so a payload that would not cross the wire fails here too.
Everything runs on one event loop.

Example::

    broker = MemoryBroker()
    async with MemoryTransport(broker) as a, MemoryTransport(broker) as b:
        await a.subscribe("orders.>", handle, group="billing")
        await b.subscribe("orders.>", handle, group="billing")   # shares the events with a
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import TransportClosedError
from tidings.topics import compile_pattern, validate_topic
from tidings.transports._common import (
    Subjects,
    SubjectTransport,
    check_group_policy,
    dead_letter_message,
)
from tidings.transports._consumer import Consumer
from tidings.transports.base import (
    DeliveryPolicy,
    MessageHandler,
    PublishAck,
    PublishErrorHook,
    TransportFeatures,
)
from tidings.transports.wire import MSG_ID, encode_envelope

__all__ = ("MemoryBroker", "MemoryTransport")

_ids = itertools.count(1)


@dataclass(slots=True)
class _Stored:
    sequence: int
    subject: str
    headers: dict[str, str]
    data: bytes


@dataclass(slots=True)
class _Pending:
    deliveries: int
    deadline: float


@dataclass(eq=False, slots=True)
class _MemConsumer:
    name: str
    matches: Callable[[str], bool]
    ack_wait: float
    next_seq: int
    pending: dict[int, _Pending] = field(default_factory=dict)
    deliveries: dict[int, int] = field(default_factory=dict)
    delayed: list[tuple[float, int]] = field(default_factory=list)
    signal: asyncio.Event = field(default_factory=asyncio.Event)
    takeover: float | None = None  # exclusive: seconds a silent pinned member keeps the pin
    pinned: object | None = None
    pinned_at: float = 0.0  # when the pinned member last pulled
    fetching: set[object] = field(default_factory=set)


class _MemRaw:
    """A delivered message; settles against its consumer like a JetStream reply subject."""

    __slots__ = ("_broker", "_consumer", "attempt", "data", "headers", "sequence", "subject")

    def __init__(
        self, broker: MemoryBroker, consumer: _MemConsumer, stored: _Stored, attempt: int
    ) -> None:
        self._broker = broker
        self._consumer = consumer
        self.subject = stored.subject
        self.headers: Mapping[str, str] | None = stored.headers
        self.data = stored.data
        self.sequence = stored.sequence
        self.attempt = attempt

    async def ack(self) -> None:
        self._broker._settle(self._consumer, self.sequence, None)

    async def term(self) -> None:
        self._broker._settle(self._consumer, self.sequence, None)

    async def nak(self, delay: float | None = None) -> None:
        self._broker._settle(self._consumer, self.sequence, delay or 0.0)

    async def in_progress(self) -> None:
        pending = self._consumer.pending.get(self.sequence)
        if pending is not None:
            pending.deadline = time.monotonic() + self._consumer.ack_wait


def _meta(raw: _MemRaw) -> tuple[int, int]:
    return raw.attempt, raw.sequence


class MemoryBroker:
    """The in-memory server: one stream with a duplicate window, and its consumers.

    Args:
        duplicate_window: seconds during which a second publish with the same
            ``Nats-Msg-Id`` is acknowledged as a duplicate and not stored.
        stream: the stream name reported in acks.
    """

    def __init__(self, *, duplicate_window: float = 120.0, stream: str = "TIDINGS") -> None:
        self.duplicate_window = duplicate_window
        self.stream = stream
        self._log: list[_Stored] = []
        self._seen: dict[str, tuple[float, int]] = {}
        self._consumers: dict[str, _MemConsumer] = {}

    def __len__(self) -> int:
        return len(self._log)

    def store(self, subject: str, headers: Mapping[str, str], data: bytes) -> PublishAck:
        """Store one message (deduplicated on ``Nats-Msg-Id``) and wake the consumers."""
        now = time.monotonic()
        msg_id = headers.get(MSG_ID)
        if msg_id is not None:
            seen = self._seen.get(msg_id)
            if seen is not None and seen[0] > now:
                return PublishAck(self.stream, seen[1], duplicate=True)
            if len(self._seen) > 4096:
                self._seen = {k: v for k, v in self._seen.items() if v[0] > now}
        sequence = len(self._log) + 1
        self._log.append(_Stored(sequence, subject, dict(headers), data))
        if msg_id is not None:
            self._seen[msg_id] = (now + self.duplicate_window, sequence)
        for consumer in self._consumers.values():
            if consumer.matches(subject):
                consumer.signal.set()
        return PublishAck(self.stream, sequence)

    def consumer(
        self,
        name: str,
        filter_subject: str,
        ack_wait: float,
        start: Literal["new", "all"],
        takeover: float | None = None,
    ) -> _MemConsumer:
        """The consumer ``name``, created on first use (later settings are ignored; the
        transport checks ``takeover`` first, see :func:`check_group_policy`).

        With ``takeover``, the consumer is exclusive: it delivers only to its pinned member
        (see :meth:`fetch`), as JetStream's ``pinned_client`` priority policy does.
        """
        consumer = self._consumers.get(name)
        if consumer is None:
            next_seq = 1 if start == "all" else len(self._log) + 1
            consumer = _MemConsumer(name, compile_pattern(filter_subject), ack_wait, next_seq)
            consumer.takeover = takeover
            self._consumers[name] = consumer
        return consumer

    def find(self, name: str) -> _MemConsumer | None:
        """The consumer ``name`` if it exists."""
        return self._consumers.get(name)

    def unpin(self, consumer: _MemConsumer, member: object) -> None:
        """Release ``member``'s pin on ``consumer``, if it holds it: a standby takes over."""
        if consumer.pinned is member:
            consumer.pinned = None
            consumer.signal.set()

    def _pin(self, consumer: _MemConsumer, member: object | None, now: float) -> float | None:
        """Whether ``member`` may take messages now: ``None`` if so (pinning it when the pin
        is free or its holder silent past ``takeover``), else when to look again."""
        takeover = consumer.takeover
        if member is None or takeover is None:
            return None
        holder = consumer.pinned
        if holder is member or holder is None:
            consumer.pinned, consumer.pinned_at = member, now
            return None
        if holder in consumer.fetching:
            return now + takeover
        if now - consumer.pinned_at >= takeover:
            consumer.pinned, consumer.pinned_at = member, now
            return None
        return consumer.pinned_at + takeover

    def drop_consumer(self, name: str) -> None:
        """Forget an ephemeral consumer."""
        self._consumers.pop(name, None)

    def _settle(self, consumer: _MemConsumer, sequence: int, redeliver_in: float | None) -> None:
        if consumer.pending.pop(sequence, None) is None:
            return
        if redeliver_in is None:
            consumer.deliveries.pop(sequence, None)
        else:
            heapq.heappush(consumer.delayed, (time.monotonic() + redeliver_in, sequence))
            consumer.signal.set()

    async def fetch(
        self, consumer: _MemConsumer, batch: int, timeout: float, member: object | None = None
    ) -> list[_MemRaw]:
        """Up to ``batch`` messages for ``consumer``: due redeliveries first, then new ones.

        On an exclusive consumer, ``member`` (the fetching subscription) gets messages only
        while it holds the pin; a member waiting here counts as pulling.
        """
        deadline = time.monotonic() + timeout
        if member is None:
            return await self._fetch(consumer, batch, deadline, None)
        consumer.fetching.add(member)
        try:
            return await self._fetch(consumer, batch, deadline, member)
        finally:
            consumer.fetching.discard(member)
            if consumer.pinned is member:
                consumer.pinned_at = time.monotonic()

    async def _fetch(
        self, consumer: _MemConsumer, batch: int, deadline: float, member: object | None
    ) -> list[_MemRaw]:
        while True:
            now = time.monotonic()
            retry = self._pin(consumer, member, now)
            ready = self._take(consumer, batch, now) if retry is None else []
            if ready or now >= deadline:
                return ready
            wake = deadline if retry is None else min(deadline, retry)
            if consumer.delayed:
                wake = min(wake, consumer.delayed[0][0])
            for pending in consumer.pending.values():
                wake = min(wake, pending.deadline)
            consumer.signal.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.signal.wait(), max(wake - now, 0.0))

    def _take(self, consumer: _MemConsumer, batch: int, now: float) -> list[_MemRaw]:
        due: list[int] = []
        for sequence, pending in consumer.pending.items():
            if pending.deadline <= now and len(due) < batch:
                due.append(sequence)  # ack wait expired: redeliver
        for sequence in due:
            del consumer.pending[sequence]
        delayed = consumer.delayed
        while delayed and delayed[0][0] <= now and len(due) < batch:
            due.append(heapq.heappop(delayed)[1])
        log = self._log
        while len(due) < batch and consumer.next_seq <= len(log):
            stored = log[consumer.next_seq - 1]
            consumer.next_seq += 1
            if consumer.matches(stored.subject):
                due.append(stored.sequence)
        out = []
        for sequence in due:
            attempt = consumer.deliveries.get(sequence, 0) + 1
            consumer.deliveries[sequence] = attempt
            consumer.pending[sequence] = _Pending(attempt, now + consumer.ack_wait)
            out.append(_MemRaw(self, consumer, log[sequence - 1], attempt))
        return out


class MemoryTransport(SubjectTransport):
    """A transport on a :class:`MemoryBroker`: JetStream's behaviour without a server.

    Args:
        broker: the broker to connect to; a new one by default. Share one between
            transports to stand for several processes.
        prefix: subjects are ``<prefix>.<topic>``.
        dead_letter_prefix: dead letters go to ``<dead_letter_prefix>.<topic>``
            (default ``<prefix>-dead``).
        policy: the default delivery policy of subscriptions.
        clock: merges the times of received events; a new clock by default.
        structured: publish JSON CloudEvents bodies instead of binary mode.
        on_publish_error: told of every failed :meth:`send`; failures are logged if unset.
    """

    features = TransportFeatures(persistent=False)

    def _meta(self, raw: Any) -> tuple[int, int]:
        return _meta(raw)

    def __init__(
        self,
        broker: MemoryBroker | None = None,
        *,
        prefix: str = "tidings",
        dead_letter_prefix: str | None = None,
        policy: DeliveryPolicy | None = None,
        clock: HybridClock | None = None,
        structured: bool = False,
        on_publish_error: PublishErrorHook | None = None,
    ) -> None:
        self.broker = broker if broker is not None else MemoryBroker()
        self.subjects = Subjects(prefix, dead_letter_prefix)
        self.policy = policy if policy is not None else DeliveryPolicy()
        self.clock = clock if clock is not None else HybridClock()
        self.structured = structured
        self.on_publish_error = on_publish_error
        self._started = False
        self._closed = False
        self._subs: list[Consumer] = []
        self.stream_name = self.broker.stream

    async def start(self) -> None:
        if self._closed:
            raise TransportClosedError("the transport is closed; create a new one")
        self._started = True

    async def aclose(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            await sub.cancel(timeout)
        self._subs.clear()

    def _open(self) -> None:
        if not self._started or self._closed:
            state = "closed" if self._closed else "not started"
            raise TransportClosedError(f"the transport is {state}; use 'async with transport:'")

    async def publish(self, envelope: Envelope[Any]) -> PublishAck:
        self._open()
        headers, body = encode_envelope(envelope, structured=self.structured)
        return self.broker.store(self.subjects.subject(envelope.topic), headers, body)

    async def send(self, envelope: Envelope[Any]) -> asyncio.Future[PublishAck]:
        future: asyncio.Future[PublishAck] = asyncio.get_running_loop().create_future()
        future.set_result(await self.publish(envelope))
        return future

    async def flush(self, timeout: float | None = None) -> int:
        return 0

    async def publish_raw(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> PublishAck:
        self._open()
        return self.broker.store(self.subjects.subject(validate_topic(topic)), headers or {}, body)

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
        broker = self.broker
        consumer_name = (
            f"{group}|{subject_filter}" if group is not None else f"ephemeral-{next(_ids)}"
        )
        exclusive = group is not None and policy.exclusive
        existing = broker.find(consumer_name)
        if (
            group is not None
            and existing is not None
            and check_group_policy(
                existing.takeover,
                policy,
                running=bool(existing.fetching or existing.pending or existing.pinned is not None),
                group=group,
                consumer=consumer_name,
            )
        ):
            existing.takeover = policy.takeover if exclusive else None
        state = broker.consumer(
            consumer_name,
            subject_filter,
            policy.ack_wait,
            policy.start,
            policy.takeover if exclusive else None,
        )
        member = object() if exclusive else None

        async def fetch(batch: int, timeout: float) -> list[Any]:
            return list(await broker.fetch(state, batch, timeout, member))

        async def dead_letter(raw: Any, reason: str, handler: str, attempts: int) -> None:
            subject, headers, body = dead_letter_message(
                self.subjects, raw, raw.sequence, reason, handler, attempts, consumer_name
            )
            broker.store(subject, headers, body)

        async def release() -> None:
            if group is None:
                broker.drop_consumer(consumer_name)
            elif member is not None:
                broker.unpin(state, member)

        return self._start_consumer(
            pattern,
            group,
            name,
            policy,
            handler,
            fetch,
            decode,
            None if dead else dead_letter,
            release,
        )

"""The transport contract: what carries events between processes.

A transport is deliberately small. It is started and closed; it publishes one
:class:`~tidings.Envelope` and waits for the server's acknowledgement (:meth:`publish`), or
pipelines publishes with a bounded window of unacknowledged ones (:meth:`send`); and it
subscribes an async handler to a topic pattern, alone or in a *group* of competing
consumers. Each received :class:`Message` carries the decoded envelope, its delivery attempt
and the four ways to settle it: :meth:`~Message.ack`, :meth:`~Message.nak`,
:meth:`~Message.in_progress` and :meth:`~Message.term`.

Delivery policy (the same for every transport, see :class:`DeliveryPolicy`):

- a message the handler did not settle is acked when the handler returns;
- a handler that raises gets the message again after an exponential backoff, until
  ``max_deliver`` attempts; then the message goes to the dead letters with the reason, the
  handler and the attempt count, and the subscription goes on with the next messages (an
  exception whose class sets ``tidings_permanent = True``, such as a schema violation,
  goes to the dead letters at its first attempt: retrying cannot help);
  deliveries a transport gave back unseen in this process (no handler called) are not
  counted as attempts;
- a message that cannot be decoded goes to the dead letters at once with the decode error;
- while a message is held (running, or waiting for a worker), in-progress heartbeats keep
  the server from redelivering it; a redelivered copy of a message still held or already
  settled is not handled again;
- at most ``prefetch`` messages are held unacknowledged in memory per subscription;
- messages with the same key are handled one at a time in stream order by the workers of
  one subscription (they are partitioned by key);
- the hybrid-clock time of every received event is merged into the transport's clock
  (receive rule); a remote clock too far ahead is counted and logged, never fatal.

:class:`TransportFeatures` says what a transport offers, so one conformance suite
(:mod:`tidings.testing.transport_conformance`) covers them all.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from tidings.clock import HybridClock
from tidings.event import Envelope

if TYPE_CHECKING:
    from types import TracebackType

__all__ = (
    "DeadLetterRecord",
    "DeliveryPolicy",
    "Message",
    "MessageHandler",
    "PublishAck",
    "PublishErrorHook",
    "SubscriptionStats",
    "Transport",
    "TransportFeatures",
    "TransportHealth",
    "TransportSubscription",
)


@dataclass(frozen=True, slots=True)
class TransportFeatures:
    """What a transport offers; the conformance suite skips what it lacks.

    Attributes:
        persistent: events outlive the server process (stored on disk).
        groups: ``group=`` makes competing consumers that share the events.
        redelivery: unacknowledged events come back after ``ack_wait``; ``nak`` redelivers.
        dedup: a second publish of an event id within the duplicate window is dropped.
        ordered_per_key: one subscription's workers handle each key's events in order.
        exclusive_groups: ``DeliveryPolicy(exclusive=True)`` pins a group to one member.
        raw_publish: :meth:`Transport.publish_raw` can inject arbitrary bytes.
    """

    persistent: bool = False
    groups: bool = True
    redelivery: bool = True
    dedup: bool = True
    ordered_per_key: bool = True
    exclusive_groups: bool = True
    raw_publish: bool = True


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How a subscription receives, retries and gives up on messages.

    Attributes:
        max_deliver: attempts before a failing message goes to the dead letters (>= 1).
        ack_wait: seconds the server waits for a settlement before redelivering.
        backoff: delay before the first retry, in seconds; doubles (``backoff_factor``) on
            each further attempt, up to ``backoff_max``.
        backoff_factor: growth of the retry delay per attempt.
        backoff_max: the longest retry delay, in seconds.
        heartbeats: send in-progress heartbeats (every ``ack_wait / 3``) while a handler
            runs, so long handlers are not redelivered.
        prefetch: the most messages held unacknowledged in memory (>= 1).
        workers: concurrent handlers per subscription; messages are partitioned to
            workers by key, so each key's messages stay in order.
        start: where a new consumer starts: ``"new"`` events published from now on, or
            ``"all"`` events still in the stream. A group's consumer keeps its position
            once created: members of one group may say different ``start``s, where the
            group has a position it decides.
        exclusive: a group's events go to one process at a time: the server pins the
            group's consumer to the first process that pulls, and the others stand by.
            With the per-key workers, each key's events are then handled in publish order
            across the whole group, not only within a process. Ignored without a group.
        takeover: with ``exclusive``, seconds after the active process last pulled (it
            died, or one handler call kept every prefetch slot busy that long: it pulls
            whenever a slot frees) before a standby takes the group over; a process closing
            cleanly hands it over at once. Events the old process held unsettled come back
            after ``ack_wait`` (at least once), possibly after later events of the same key.
            Every process of a group must use the same ``exclusive`` and ``takeover``
            (``ConsumerConfigError`` while members run; the first to start after all
            stopped sets them).

    Raises:
        ValueError: if a number is out of range.
    """

    max_deliver: int = 5
    ack_wait: float = 30.0
    backoff: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    heartbeats: bool = True
    prefetch: int = 256
    workers: int = 1
    start: Literal["new", "all"] = "new"
    exclusive: bool = False
    takeover: float = 5.0

    def __post_init__(self) -> None:
        if self.max_deliver < 1:
            raise ValueError(f"max_deliver must be at least 1, not {self.max_deliver!r}")
        if not self.ack_wait > 0:
            raise ValueError(
                f"ack_wait must be a positive number of seconds, not {self.ack_wait!r}"
            )
        if self.backoff < 0 or self.backoff_max < 0 or self.backoff_factor < 1:
            raise ValueError("backoff and backoff_max must be >= 0 and backoff_factor >= 1")
        if self.prefetch < 1 or self.workers < 1:
            raise ValueError("prefetch and workers must be at least 1")
        if self.start not in ("new", "all"):
            raise ValueError(f"start must be 'new' or 'all', not {self.start!r}")
        if not isinstance(self.exclusive, bool):
            raise TypeError(f"exclusive must be a bool, not {self.exclusive!r}")
        if not self.takeover >= 1.0:
            raise ValueError(
                f"takeover must be at least 1 second (pull requests renew the pin every "
                f"takeover / 2), not {self.takeover!r}"
            )

    def retry_delay(self, attempt: int) -> float:
        """The delay before redelivering a message whose ``attempt``-th delivery failed."""
        return float(
            min(self.backoff * self.backoff_factor ** max(attempt - 1, 0), self.backoff_max)
        )


@dataclass(frozen=True, slots=True)
class PublishAck:
    """The server's acknowledgement of one publish.

    Attributes:
        stream: the stream that stored the event.
        sequence: its sequence number in the stream.
        duplicate: the event id was seen within the duplicate window, so it was not
            stored again.
    """

    stream: str
    sequence: int
    duplicate: bool = False


class Message(msgspec.Struct, eq=False):
    """One delivery of one event to a subscription: ``Message(envelope, attempt, subject,
    sequence, raw)``, ``raw`` the transport's own message.

    Attributes:
        envelope: the decoded event.
        attempt: the delivery attempt, 1 for the first delivery.
        subject: the subject (or topic) the message arrived on.
        sequence: the message's sequence number in its stream (Kafka: its partition's
            and its offset's together, wider than 64 bits).
        settled: how it was settled (``"ack"``, ``"nak"``, ``"term"``), ``None`` before.

    Settle it at most once with :meth:`ack`, :meth:`nak` or :meth:`term`; later calls do
    nothing. A message the handler leaves unsettled is acked when the handler returns (or
    retried when it raises). Messages compare by identity. (A struct: one is made per
    delivery, and its constructor runs no Python code.)
    """

    envelope: Envelope[Any]
    attempt: int
    subject: str
    sequence: int
    _raw: Any
    settled: str | None = None

    async def ack(self) -> None:
        """Acknowledge: the event is handled and will not be delivered to this consumer again."""
        if self.settled is None:
            self.settled = "ack"
            await self._raw.ack()

    async def nak(self, delay: float | None = None) -> None:
        """Ask for redelivery, after ``delay`` seconds (at once when ``None``)."""
        if self.settled is None:
            self.settled = "nak"
            await self._raw.nak(delay)

    async def in_progress(self) -> None:
        """Tell the server the handler is still working: restarts the ack-wait timer."""
        if self.settled is None:
            await self._raw.in_progress()

    async def term(self) -> None:
        """Give up on the event: it is never redelivered to this consumer."""
        if self.settled is None:
            self.settled = "term"
            await self._raw.term()

    @property
    def body_size(self) -> int:
        """The size of the message's body on the wire, in bytes (headers not included)."""
        return len(self._raw.data)

    def __repr__(self) -> str:
        return f"<Message {self.envelope.id} on {self.subject!r} attempt={self.attempt}>"


MessageHandler = Callable[[Message], Awaitable[object]]
"""``async def handler(message: Message) -> None``."""

PublishErrorHook = Callable[[Envelope[Any], BaseException], None]
"""``on_publish_error(envelope, error)``: called for each pipelined publish that failed."""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A message that went to the dead letters, as read back from them.

    Attributes:
        topic: the topic of the original message.
        reason: why it was dead-lettered, ``ExceptionType: message``.
        handler: the qualified name of the handler that gave up (``tidings.decode`` for
            an undecodable message).
        attempts: how many deliveries were made.
        subject: the original subject.
        sequence: the original stream sequence.
        body: the original body, unchanged.
        headers: the original headers plus the ``tidings-dead-*`` ones.
        envelope: the original event, or ``None`` if it could not be decoded.
    """

    topic: str
    reason: str
    handler: str
    attempts: int
    subject: str
    sequence: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    envelope: Envelope[Any] | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    """Counters of one transport subscription (a snapshot).

    Attributes:
        delivered: messages received, redeliveries included.
        acked: messages acknowledged.
        retried: messages nak'ed for a later retry.
        dead_lettered: messages sent to the dead letters.
        decode_errors: messages that could not be decoded (also dead-lettered).
        clock_skew: events whose hybrid-clock time was too far ahead to merge.
        duplicates: redelivered copies of messages held, acked or terminated here, dropped
            (or settled again) instead of handled a second time; not counted in ``delivered``.
        in_memory: messages held unacknowledged right now.
        max_in_memory: the most ever held at once (never above ``prefetch``).
    """

    delivered: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    decode_errors: int = 0
    clock_skew: int = 0
    duplicates: int = 0
    in_memory: int = 0
    max_in_memory: int = 0


@dataclass(frozen=True, slots=True)
class TransportHealth:
    """The state of a transport's connection (a snapshot, :meth:`Transport.health`).

    Attributes:
        state: ``connected``, ``reconnecting`` (connection lost, trying again),
            ``disconnected`` (not started, or closed), or ``unknown`` (the transport does
            not say).
        server: the URL of the server connected to (or last connected to), with no
            credentials in it.
        last_error: the last connection problem, ``Type: message`` (kept after recovery).
        last_error_at: when it happened (Unix seconds).
        pending: publishes sent and not yet acknowledged by the server (the outbox).
        disconnects: times the connection was lost since start.
    """

    state: Literal["connected", "reconnecting", "disconnected", "unknown"] = "unknown"
    server: str | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    pending: int = 0
    disconnects: int = 0


class TransportSubscription(abc.ABC):
    """A handler's subscription on a transport. ``await sub.cancel()`` ends it.

    Attributes:
        pattern: the topic pattern subscribed to.
        group: the group, or ``None`` when this process gets every event.
        name: the handler's name, as written in dead letters.
        policy: the delivery policy.
    """

    pattern: str
    group: str | None
    name: str
    policy: DeliveryPolicy

    @abc.abstractmethod
    async def cancel(self, timeout: float = 10.0) -> None:
        """Stop fetching, let running handlers finish (within ``timeout``) and settle
        their messages, give back the ones not started, and end the subscription.
        Idempotent. A group's durable consumer stays on the server for the group.
        """

    @abc.abstractmethod
    def stats(self) -> SubscriptionStats:
        """A snapshot of the subscription's counters."""


class Transport(abc.ABC):
    """Carries envelopes between processes. Use as ``async with transport:``.

    Attributes:
        features: what this transport offers.
        clock: the hybrid clock that received event times are merged into.
        policy: the default delivery policy of subscriptions.
        on_publish_error: told of every failed :meth:`send` (logged when ``None``).
        system: the messaging system, as traces name it (``messaging.system``).

    What traces read of a transport (:mod:`tidings.observability.tracing`), off the hot
    path: :meth:`destination`, :attr:`server` and :attr:`client_id`.
    """

    system: str = "tidings"
    features: TransportFeatures
    clock: HybridClock
    policy: DeliveryPolicy
    on_publish_error: PublishErrorHook | None

    def destination(self, topic: str) -> str:
        """The name of the broker's entity that events on ``topic`` (or a topic pattern)
        travel on: the topic itself by default; a subject for a subject-based transport."""
        return topic

    @property
    def server(self) -> tuple[str, int] | None:
        """The host and port of the server connected to right now, if there is one."""
        return None

    @property
    def client_id(self) -> str | None:
        """This client's id as the server knows it, if it has one (connected)."""
        return None

    def health(self) -> TransportHealth:
        """The connection's state now (cheap, no I/O); ``unknown`` unless the transport
        overrides it."""
        return TransportHealth()

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and prepare the server side (stream, subjects). Idempotent.

        Raises:
            TransportUnavailableError: if the server cannot be reached in time.
            StreamConfigError: if the server's stream conflicts with the configuration.
        """

    @abc.abstractmethod
    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop fetching, finish in-flight handlers and acks, wait for pipelined publishes
        (within ``timeout``), then disconnect. Idempotent.
        """

    @abc.abstractmethod
    async def publish(self, envelope: Envelope[Any]) -> PublishAck:
        """Publish ``envelope`` and wait for the server's acknowledgement.

        Retries (the event id makes retries safe) until the publish timeout.

        Raises:
            PublishError: the event is not stored and never will be: the server (or the
                client, e.g. a body above the server's maximum payload) refused it, or it
                could not be sent in time.
            PublishOutcomeUnknownError: it reached a server but no answer came in time: it
                may be stored; publishing the same envelope again is deduplicated within
                the stream's duplicate window.
            TransportClosedError: if the transport is not started or is closed.
            TypeError: if the payload cannot be encoded.
        """

    def check_envelope(self, envelope: Envelope[Any]) -> None:
        """Raise now for an envelope the server is already known to refuse (for NATS: one
        larger than the server's ``max_payload``), so that a caller who does not wait for
        the acknowledgement still hears of it. Does nothing by default.

        Raises:
            PublishError: the envelope would be refused; nothing was sent.
            TypeError: if the payload cannot be encoded.
        """
        return

    @abc.abstractmethod
    async def send(self, envelope: Envelope[Any]) -> asyncio.Future[PublishAck]:
        """Publish ``envelope`` without waiting for its acknowledgement.

        Waits only while ``window`` publishes are unacknowledged. The returned future
        resolves with the ack or fails as :meth:`publish` raises (also when the
        client refuses the message at once, e.g. too large: its window slot is freed); a failure is
        also passed to the transport's ``on_publish_error`` hook (logged by default), so
        it is never dropped silently even when nobody awaits the future.

        Raises:
            TransportClosedError: if the transport is not started or is closed.
            TypeError: if the payload cannot be encoded.
        """

    @abc.abstractmethod
    async def flush(self, timeout: float | None = None) -> int:
        """Wait until every :meth:`send` is acknowledged or failed; return how many failed
        since the last flush.

        Raises:
            TimeoutError: if ``timeout`` seconds pass first.
        """

    async def wait_acknowledged(self, timeout: float | None = None) -> None:
        """Wait as :meth:`flush` does, leaving the count of failures it returns to the next
        :meth:`flush`: a bus waits with this, so a caller of ``flush`` beside it misses none.
        A transport that counts failures overrides it; by default it is :meth:`flush` (so a
        ``flush`` written on top of this method must override it too, or each calls the
        other). The conformance suite checks that it waits for every send.

        Raises:
            TimeoutError: if ``timeout`` seconds pass first.
        """
        await self.flush(timeout)

    @abc.abstractmethod
    async def publish_raw(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> PublishAck:
        """Publish ``body`` and ``headers`` as they are, as a client without tidings would.

        Raises:
            PublishError, PublishOutcomeUnknownError, TransportClosedError: as
                :meth:`publish`.
        """

    @abc.abstractmethod
    async def subscribe(
        self,
        pattern: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        policy: DeliveryPolicy | None = None,
        payload_type: type | None = None,
        name: str | None = None,
    ) -> TransportSubscription:
        """Deliver the events on topics matching ``pattern`` to ``handler``.

        Args:
            pattern: a topic or a pattern with ``*`` and ``>`` wildcards.
            handler: ``async def handler(message)``; see the module docstring for the
                delivery policy.
            group: share the events with every subscription of the same group and
                pattern, in any process (competing consumers). Without a group this
                subscription gets every event.
            policy: the delivery policy; the transport's default when ``None``.
            payload_type: decode payloads as this class; by default as the class
                registered for the topic with :func:`tidings.event`, else plain JSON.
            name: the handler name written in dead letters (default: its qualified name).

        Raises:
            InvalidTopicError: if the pattern is malformed.
            TransportClosedError: if the transport is not started or is closed.
        """

    @abc.abstractmethod
    async def subscribe_dead_letters(
        self,
        handler: Callable[[DeadLetterRecord], Awaitable[object]],
        *,
        pattern: str = ">",
        group: str | None = None,
        start: Literal["new", "all"] = "all",
    ) -> TransportSubscription:
        """Deliver the dead letters of topics matching ``pattern`` to ``handler``.

        Each record is acked when the handler returns; a handler that raises gets it
        again with backoff, and after the policy's ``max_deliver`` attempts it is dropped
        and logged (dead letters are never dead-lettered again).
        """

    async def __aenter__(self) -> Transport:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

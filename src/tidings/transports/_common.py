"""What the subject-based transports share: subject names, decoding, dead-letter messages,
the check of a group's shared consumer against a new member's policy, and the lifecycle
and flush of the transports over a network client (:class:`ClientTransport`)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from tidings.clock import HybridClock
from tidings.dead_letter import DEAD_LETTER_TOPIC
from tidings.event import Envelope, event_type_for
from tidings.exceptions import (
    ConsumerConfigError,
    DecodeError,
    InvalidTopicError,
    TransportClosedError,
)
from tidings.observability.logs import log_fields
from tidings.subscription import handler_name
from tidings.topics import validate_pattern, validate_topic
from tidings.transports._consumer import Consumer, Held
from tidings.transports.base import (
    DeadLetterRecord,
    DeliveryPolicy,
    Message,
    MessageHandler,
    PublishErrorHook,
    Transport,
    TransportSubscription,
)
from tidings.transports.wire import (
    DEAD_ATTEMPTS,
    DEAD_HANDLER,
    DEAD_REASON,
    DEAD_SEQUENCE,
    DEAD_SUBJECT,
    MSG_ID,
    decode_envelope,
)

__all__ = (
    "ClientTransport",
    "SubjectTransport",
    "Subjects",
    "check_group_name",
    "check_group_policy",
    "consume_exception",
    "dead_letter_message",
    "make_dead_decoder",
    "make_decoder",
    "quietly",
    "report_publish_error",
)


logger = logging.getLogger("tidings.transports")

_GROUP = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_group_name(group: str | None) -> None:
    """Check a subscription's group name (``None``: no group), as the broker transports
    name their server-side consumers after it.

    Raises:
        ValueError: unless it is 1 to 64 ASCII letters, digits, ``_`` or ``-``.
    """
    if group is not None and _GROUP.fullmatch(group) is None:
        raise ValueError(f"group {group!r} must be 1 to 64 ASCII letters, digits, '_' or '-'")


def check_group_policy(
    found_takeover: float | None,
    policy: DeliveryPolicy,
    *,
    running: bool,
    group: str,
    consumer: str,
) -> bool:
    """Check a group's existing consumer (``found_takeover``: its takeover in seconds if it
    is exclusive, else ``None``) against a new member's ``policy``; whether the consumer
    must be updated to the policy.

    A difference in ``exclusive`` or ``takeover`` changes what the group means: refused
    while members run; with none running, the next to start sets the policy (the consumer,
    updated in place, keeps its position).

    Raises:
        ConsumerConfigError: if they differ and ``running``.
    """
    wanted = policy.takeover if policy.exclusive else None
    if found_takeover is not None and wanted is not None:
        if abs(found_takeover - wanted) <= 1e-6:
            return False
        difference = f"takeover: server has {found_takeover:g}s, configured {wanted:g}s"
    elif found_takeover is None and wanted is None:
        return False
    else:
        exclusive = found_takeover is not None
        difference = f"exclusive: server has {exclusive}, configured {policy.exclusive}"
    if running:
        raise ConsumerConfigError(
            f"group {group!r} (consumer {consumer!r}) is running with other settings: "
            f"{difference}. Every process of a group must use the same DeliveryPolicy: "
            "change this one, or stop every member first (the next to start sets the "
            "policy, keeping the group's position)",
            consumer=consumer,
            differences=(difference,),
        )
    logger.info(
        "group %r (consumer %r) had other settings (%s); no member is running: updating it",
        group,
        consumer,
        difference,
        extra=log_fields(),
    )
    return True


def report_publish_error(
    hook: PublishErrorHook | None,
    envelope: Envelope[Any] | None,
    error: BaseException,
    future: asyncio.Future[Any],
    *,
    event_id: str,
    topic: str,
    log: logging.Logger,
) -> None:
    """Tell ``hook`` of a failed pipelined publish (log it when there is no hook, or for a
    raw publish), and mark ``future``'s exception as retrieved: it was reported, so a caller
    that never awaits the future must not trigger asyncio's warning."""
    fields = log_fields(envelope)
    if envelope is None:
        fields.update(event_id=event_id, topic=topic)
    if hook is not None and envelope is not None:
        try:
            hook(envelope, error)
        except Exception:
            log.exception("on_publish_error hook failed for event %s", event_id, extra=fields)
    else:
        log.error("%s", error, extra=fields)
    future.add_done_callback(consume_exception)


def consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a done future's exception as retrieved."""
    if not future.cancelled():
        future.exception()


async def quietly(awaitable: Awaitable[Any]) -> None:
    """Await a clean-up step; its failure is logged at debug level and swallowed."""
    try:
        await awaitable
    except Exception as exc:
        logger.debug("ignored during cleanup: %r", exc, extra=log_fields())


class Subjects:
    """Maps topics to subjects under ``prefix`` and dead letters under ``dead_prefix``.

    Raises:
        ValueError: if a prefix is empty, malformed, or one contains the other.
    """

    __slots__ = ("_cut", "_dead_cut", "dead_prefix", "prefix")

    def __init__(self, prefix: str, dead_prefix: str | None = None) -> None:
        dead_prefix = f"{prefix}-dead" if dead_prefix is None else dead_prefix
        for name, value in (("prefix", prefix), ("dead_letter_prefix", dead_prefix)):
            try:
                validate_topic(value)
            except InvalidTopicError as exc:
                raise ValueError(f"{name} {value!r} is not a valid subject prefix: {exc}") from None
        if (
            prefix == dead_prefix
            or dead_prefix.startswith(prefix + ".")
            or prefix.startswith(dead_prefix + ".")
        ):
            raise ValueError(
                f"the dead-letter prefix {dead_prefix!r} must not overlap the prefix {prefix!r}"
            )
        self.prefix = prefix
        self.dead_prefix = dead_prefix
        self._cut = len(prefix) + 1
        self._dead_cut = len(dead_prefix) + 1

    def subject(self, topic: str) -> str:
        """The subject events on ``topic`` travel on."""
        return f"{self.prefix}.{topic}"

    def filter(self, pattern: str) -> str:
        """The subject filter of a topic pattern."""
        return f"{self.prefix}.{validate_pattern(pattern)}"

    def topic(self, subject: str) -> str:
        """The topic of an event subject."""
        return subject[self._cut :]

    def dead_subject(self, subject: str) -> str:
        """The dead-letter subject for a message that arrived on ``subject``."""
        return f"{self.dead_prefix}.{subject[self._cut :]}"

    def dead_filter(self, pattern: str) -> str:
        """The subject filter of the dead letters of a topic pattern."""
        return f"{self.dead_prefix}.{validate_pattern(pattern)}"

    def dead_topic(self, subject: str) -> str:
        """The original topic of a dead-letter subject."""
        return subject[self._dead_cut :]

    def stream_subjects(self) -> list[str]:
        """The subjects a stream must capture."""
        return [f"{self.prefix}.>", f"{self.dead_prefix}.>"]


def make_decoder(
    subjects: Subjects,
    payload_type: type | None,
    clock: HybridClock,
    message_id: Callable[[Any], str],
) -> Callable[[Any], Envelope[Any]]:
    """A function turning a raw message (``subject``, ``headers``, ``data``) into an envelope.

    The payload class is ``payload_type``, else the class registered for the topic;
    ``message_id(raw)`` is the id of a message that carries none (stable across redeliveries).
    """
    topic_of_subject = subjects.topic
    types: dict[str, type | None] = {}

    def decode(raw: Any) -> Envelope[Any]:
        subject: str = raw.subject
        topic = topic_of_subject(subject)
        target = payload_type
        if target is None:
            try:
                target = types[topic]
            except KeyError:
                target = types[topic] = event_type_for(topic)
        return decode_envelope(
            topic,
            raw.headers,
            raw.data,
            target,
            subject=subject,
            fallback_id=lambda: message_id(raw),
            fallback_time=clock.now,
        )

    return decode


def make_dead_decoder(
    subjects: Subjects, clock: HybridClock, stream: str, message_id: Callable[[Any], str]
) -> Callable[[Any], Envelope[DeadLetterRecord]]:
    """A function reading a dead-letter message into an envelope of :class:`DeadLetterRecord`
    (``message_id(raw)``: the dead letter's own stable id)."""

    def decode(raw: Any) -> Envelope[DeadLetterRecord]:
        headers: Mapping[str, str] = raw.headers or {}
        subject = headers.get(DEAD_SUBJECT) or subjects.subject(subjects.dead_topic(raw.subject))
        topic = subjects.topic(subject)
        try:
            original: Envelope[Any] | None = decode_envelope(
                topic,
                headers,
                raw.data,
                event_type_for(topic),
                subject=subject,
                fallback_id=f"{stream}-{headers.get(DEAD_SEQUENCE, '0')}",
                fallback_time=0,
            )
        except DecodeError:
            original = None
        try:
            attempts = int(headers.get(DEAD_ATTEMPTS, "0"))
            sequence = int(headers.get(DEAD_SEQUENCE, "0"))
        except ValueError:
            raise DecodeError(
                f"dead letter on {raw.subject} has malformed tidings-dead-* headers",
                subject=raw.subject,
            ) from None
        record = DeadLetterRecord(
            topic=topic,
            reason=headers.get(DEAD_REASON, ""),
            handler=headers.get(DEAD_HANDLER, ""),
            attempts=attempts,
            subject=subject,
            sequence=sequence,
            body=bytes(raw.data),
            headers=dict(headers),
            envelope=original,
        )
        return Envelope(
            DEAD_LETTER_TOPIC,
            record,
            clock.now(),
            None,
            "tidings",
            _id=f"dead-{message_id(raw)}",
        )

    return decode


def dead_letter_message(
    subjects: Subjects,
    raw: Any,
    sequence: int,
    reason: str,
    handler: str,
    attempts: int,
    consumer: str,
) -> tuple[str, dict[str, str], bytes]:
    """The subject, headers and body that dead-letter ``raw``.

    The original headers and body are kept; ``Nats-Msg-Id`` becomes
    ``dead-<consumer>-<sequence>`` so that retrying a dead-lettering stores it once.
    """
    headers = dict(raw.headers or {})
    headers[DEAD_REASON] = reason
    headers[DEAD_HANDLER] = handler
    headers[DEAD_ATTEMPTS] = str(attempts)
    headers[DEAD_SUBJECT] = raw.subject
    headers[DEAD_SEQUENCE] = str(sequence)
    headers[MSG_ID] = f"dead-{consumer}-{sequence}"
    return subjects.dead_subject(raw.subject), headers, bytes(raw.data)


class SubjectTransport(Transport):
    """The subscribing side of transports that map topics to subjects of one stream.

    Subclasses set ``subjects``, ``policy``, ``clock`` and ``stream_name`` and implement
    :meth:`_open` and :meth:`_consume`.
    """

    subjects: Subjects
    policy: DeliveryPolicy
    stream_name: str
    clock: HybridClock
    _subs: list[Consumer]

    def destination(self, topic: str) -> str:
        """The subject events on ``topic`` travel on (a pattern's subject filter)."""
        return self.subjects.subject(topic)

    @abc.abstractmethod
    def _meta(self, raw: Any) -> tuple[int, int]:
        """``(delivery attempt, stream sequence)`` of a raw message."""

    def _message_id(self, raw: Any) -> str:
        """The id of a raw message that carries none: ``<stream>-<stream sequence>``."""
        return f"{self.stream_name}-{self._meta(raw)[1]}"

    @abc.abstractmethod
    def _open(self) -> None:
        """Raise :class:`~tidings.TransportClosedError` unless started and not closing."""

    def _start_consumer(
        self,
        pattern: str,
        group: str | None,
        name: str,
        policy: DeliveryPolicy,
        handler: MessageHandler,
        fetch: Callable[[int, float], Awaitable[list[Any]]],
        decode: Callable[[Any], Envelope[Any]],
        dead_letter: Callable[[Any, str, str, int], Awaitable[None]] | None,
        release: Callable[[], Awaitable[None]],
        held: Held | None = None,
        *,
        ack_now: Callable[[Any], None] | None = None,
        leases: bool = True,
    ) -> Consumer:
        """Start a :class:`Consumer` on a server-side consumer made by :meth:`_consume`;
        ``release`` (which deletes the server-side consumer) runs when it is cancelled;
        ``held`` lists what the transport buffered, for heartbeats; ``ack_now`` and
        ``leases`` as on :class:`Consumer`."""

        async def on_cancel() -> None:
            if consumer in self._subs:
                self._subs.remove(consumer)
            await release()

        consumer = Consumer(
            pattern=pattern,
            group=group,
            name=name,
            policy=policy,
            handler=handler,
            fetch=fetch,
            decode=decode,
            meta=self._meta,
            dead_letter=dead_letter,
            clock=self.clock,
            on_cancel=on_cancel,
            held=held,
            ack_now=ack_now,
            leases=leases,
        )
        self._subs.append(consumer)
        consumer.start()
        return consumer

    @abc.abstractmethod
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
        """Create the server-side consumer and start a :class:`Consumer` on it."""

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
        self._open()
        policy = policy if policy is not None else self.policy
        subject_filter = self.subjects.filter(pattern)
        decode = self._decoder(payload_type)
        return await self._consume(
            pattern,
            subject_filter,
            handler,
            group,
            policy,
            decode,
            name or handler_name(handler),
            dead=False,
        )

    def _decoder(self, payload_type: type | None) -> Callable[[Any], Envelope[Any]]:
        """The decoder of a subscription's raw messages (see :func:`make_decoder`); a
        transport may put a fast path for its own wire layout in front of it."""
        return make_decoder(self.subjects, payload_type, self.clock, self._message_id)

    async def subscribe_dead_letters(
        self,
        handler: Callable[[DeadLetterRecord], Awaitable[object]],
        *,
        pattern: str = ">",
        group: str | None = None,
        start: Literal["new", "all"] = "all",
    ) -> TransportSubscription:
        self._open()

        async def deliver(message: Message) -> None:
            await handler(message.envelope.payload)

        policy = DeliveryPolicy(
            max_deliver=self.policy.max_deliver,
            ack_wait=self.policy.ack_wait,
            backoff=self.policy.backoff,
            start=start,
        )
        decode = make_dead_decoder(self.subjects, self.clock, self.stream_name, self._message_id)
        return await self._consume(
            DEAD_LETTER_TOPIC,
            self.subjects.dead_filter(pattern),
            deliver,
            group,
            policy,
            decode,
            handler_name(handler),
            dead=True,
        )


class ClientTransport(SubjectTransport):
    """A :class:`SubjectTransport` over a network client that pipelines its publishes
    (NATS, Kafka): the lifecycle's checks and first closing steps, and :meth:`flush`.

    Invariants, kept by subclasses, which set the three attributes in ``__init__``:
    ``_state`` only moves forward, ``new`` -> ``started`` -> ``closing`` -> ``closed`` (or
    ``new`` -> ``closed``); ``_idle`` is set exactly when no publish awaits its
    acknowledgement; ``_failed`` counts the pipelined publishes that failed since the last
    :meth:`flush`.
    """

    _state: Literal["new", "started", "closing", "closed"]
    _idle: asyncio.Event
    _failed: int

    def _closed_error(self) -> TransportClosedError:
        """The error of a call that needs the transport started (it is not, or no longer)."""
        state = "not started" if self._state == "new" else "closed"
        return TransportClosedError(f"the transport is {state}; use 'async with transport:'")

    def _open(self) -> None:
        if self._state != "started":
            raise self._closed_error()

    def _needs_start(self) -> bool:
        """Whether :meth:`start` has to connect: ``False`` once started.

        Raises:
            TransportClosedError: if the transport is closing or closed.
        """
        if self._state == "started":
            return False
        if self._state != "new":
            raise TransportClosedError("the transport is closed; create a new one")
        return True

    async def flush(self, timeout: float | None = None) -> int:
        await self.wait_acknowledged(timeout)
        failed, self._failed = self._failed, 0
        return failed

    async def wait_acknowledged(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def _begin_close(self, timeout: float) -> float | None:
        """The first steps of ``aclose(timeout)``: the transport is closing; the
        subscriptions are cancelled together (their running handlers finish), then the
        publishes awaiting their acknowledgement are waited for, each step given what is
        left of ``timeout`` (at least 0.1 s). Returns the event loop time by which closing
        should be done, or ``None`` when there is nothing to close (never started: now
        closed; or closing or closed already)."""
        if self._state in ("closing", "closed"):
            return None
        if self._state == "new":
            self._state = "closed"
            return None
        self._state = "closing"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Together, within the one timeout: a subscription's close may overrun it (a broker
        # gone: see the transport's), and one after another the overruns would add up.
        closed = await asyncio.gather(
            *(sub.cancel(max(deadline - loop.time(), 0.1)) for sub in list(self._subs)),
            return_exceptions=True,
        )
        for outcome in closed:
            if isinstance(outcome, BaseException):
                raise outcome  # each was let finish first
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(deadline - loop.time(), 0.1))
        return deadline

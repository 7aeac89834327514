"""What the MQTT and AMQP bridges share: the intake (how a received message becomes an
accepted event), the message-to-envelope rule, pattern translation, dead letters, backoff
and counters.

Invariants (each written once, here):

- **Accepted before acknowledged.** A bridge acknowledges a broker's message only after
  :meth:`Intake.accept` returned: the event is on the bus (appended to its log first when
  the bus has a store; sent and acknowledged when it has a transport), or in the gateway's
  log. An intake that fails for a reason that may pass (the store is down, the bus refused)
  is retried with :class:`Backoff` while the message stays unacknowledged, so a message the
  broker handed over is never dropped.
- **Taken in batches, in order.** A bridge takes the messages waiting at once (up to a
  burst) together: their events are accepted in one call (:meth:`Intake.accept_all`: on a
  bus with a log, appended in one transaction, in the order received), then the accepted
  ones are acknowledged, in that order. An event refused for a reason that may pass is
  retried alone after the others of its batch (its messages stay unacknowledged
  meanwhile), so only then can it land in the log after later ones.
- **MalformedMessageError is not retried.** A message that cannot become an event (not decodable, a
  broken CloudEvent, a type the bridge does not take, a topic tidings cannot name) is
  dead-lettered with the reason (:class:`MalformedMessageError`), then acknowledged: it never blocks
  the messages behind it and never crashes the consumer.
- **One decoding rule** (:func:`decode_message`): a structured CloudEvent (content type
  ``application/cloudevents+json``, or a JSON object carrying ``specversion`` where the
  protocol has no content type), a binary-mode CloudEvent (attributes carry
  ``specversion``), or a plain payload, wrapped as an event of the configured type with the
  broker's topic as ``subject``. The attribute mapping is :mod:`tidings.cloudevents`'s.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import random
import time as _time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, Self

import msgspec

from tidings.cloudevents import (
    CORE_ATTRIBUTES,
    STRUCTURED_CONTENT_TYPE,
    binary_data,
    envelope_from_attributes,
    is_extension_name,
    media_type,
    structured_attributes,
    structured_data,
)
from tidings.event import NO_HEADERS, Envelope
from tidings.exceptions import (
    ClockSkewError,
    CodecError,
    InvalidTopicError,
    MissingExtraError,
    TidingsError,
    TransportClosedError,
)
from tidings.topics import compile_pattern, validate_pattern, validate_topic

if TYPE_CHECKING:
    from types import TracebackType

    from tidings.bus import Bus
    from tidings.subscription import Subscription

__all__ = (
    "DEAD_LETTER_TOPIC",
    "Backoff",
    "Bridge",
    "BridgeCounts",
    "Intake",
    "MalformedMessageError",
    "Sink",
    "dead_letter_data",
    "decode_message",
    "missing_extra",
    "type_filter",
)

DEAD_LETTER_TOPIC: Final = "tidings.bridge.dead_letter"
"""The bus topic of the dead letters of messages a bridge could not turn into events."""

_WRAP_CONTENT_TYPE: Final = "application/octet-stream"


class Sink(Protocol):
    """Where accepted events go: ``await sink(envelopes)`` returns once they are accepted
    (a :class:`tidings.gateway.Gateway`'s ``accept`` is one)."""

    def __call__(self, envelopes: Sequence[Envelope[Any]], /) -> Awaitable[object]: ...


class MalformedMessageError(TidingsError, ValueError):
    """A received message cannot become an event; :attr:`reason` says why. Dead-lettered,
    never retried."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def missing_extra(extra: str, module: str) -> MissingExtraError:
    """The error for a bridge whose client library is not installed."""
    return MissingExtraError(
        f"the {extra.upper()} bridge needs {module}: pip install 'tidings[{extra}]'"
    )


@dataclass
class BridgeCounts:
    """What one bridge did, counted (exact; read them in tests and metrics).

    Attributes:
        received: messages taken from the broker (redeliveries included).
        accepted: of those, events accepted (on the bus or in the gateway's log).
        dead_lettered: of those, messages dead-lettered as malformed.
        acknowledged: messages acknowledged to the broker (the acknowledgement sent on an
            open connection).
        ack_failed: acknowledgements not sent, the connection gone first (the broker
            delivers those messages again).
        retried: intakes retried after a refusal that may pass.
        published: events published to the broker and confirmed by it.
        publish_failed: publishes the broker refused or did not confirm (retried by the
            bus's log follower when the bus has a store).
        reconnects: connections made after the first.
    """

    received: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    acknowledged: int = 0
    ack_failed: int = 0
    retried: int = 0
    published: int = 0
    publish_failed: int = 0
    reconnects: int = 0


class Backoff:
    """Exponential backoff with full jitter: ``first * 2**n`` up to ``limit`` seconds, each
    delay drawn uniformly from [0.5, 1.5) of that; :meth:`reset` after a success."""

    def __init__(self, first: float = 0.05, limit: float = 5.0) -> None:
        self.first = first
        self.limit = limit
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def delay(self) -> float:
        """The next delay (and double the one after)."""
        delay = self._next * (0.5 + random.random())
        self._next = min(self._next * 2, self.limit)
        return delay

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay())


def _json_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object carrying ``specversion`` (a structured CloudEvent sent
    without a content type), else ``None``."""
    if not body or body.lstrip()[:1] != b"{":
        return None
    try:
        event = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return event if isinstance(event, dict) and "specversion" in event else None


def decode_message(
    *,
    topic: str,
    subject: str,
    attributes: Mapping[str, str],
    content_type: str | None,
    body: bytes,
    wrap_type: str,
    source: str,
    types: Callable[[str], bool] | None,
    headers: Mapping[str, str] = NO_HEADERS,
    payload_type: type | None = None,
    sniff_structured: bool = False,
    now: Callable[[], int] = _time.time_ns,
) -> Envelope[Any]:
    """The envelope a received message stands for (see the module docstring).

    Args:
        topic: the bus topic (mapped from the broker's topic or routing key).
        subject: the broker's own name for where the message came from (the MQTT topic,
            ``exchange/routing-key``), the ``subject`` of a wrapped payload.
        attributes: CloudEvents attributes from the protocol's properties, names without
            their prefix, values decoded.
        content_type: the message's content type, if the protocol carries one.
        body: the message's payload.
        wrap_type: the CloudEvents ``type`` of a plain payload.
        source: the ``source`` of a plain payload.
        types: takes a CloudEvent's ``type`` or refuses it (``None``: any type).
        headers: the message's other headers, kept as envelope headers (binary mode and
            plain payloads) when their names are extension names.
        payload_type: decode the data as this class; else the class registered for the
            topic, else plain JSON values.
        sniff_structured: read a JSON object carrying ``specversion`` as a structured
            CloudEvent even without its content type (MQTT 3.1.1 has no content type).
        now: the time of an event that carries none.

    Raises:
        MalformedMessageError: naming what is wrong.
    """
    media = media_type(content_type)
    try:
        event: Any = None
        if media == STRUCTURED_CONTENT_TYPE:
            event = msgspec.json.decode(body)
        elif media is None and sniff_structured and "specversion" not in attributes:
            event = _json_object(body)
        if event is not None:
            found = structured_attributes(event)
            _check_type(found.get("type"), types)
            return envelope_from_attributes(
                found,
                structured_data(event),
                topic=topic,
                payload_type=payload_type,
                fallback_time=now,
            )
        if media is not None and media.startswith("application/cloudevents"):
            raise MalformedMessageError(
                f"content type {content_type!r} is no CloudEvents format a bridge reads "
                f"(binary mode, or structured {STRUCTURED_CONTENT_TYPE})"
            )
        if "specversion" in attributes:
            found = dict(attributes)
            if content_type is not None:
                found["datacontenttype"] = content_type
            _check_type(found.get("type"), types)
            return envelope_from_attributes(
                found,
                binary_data(body, content_type),
                topic=topic,
                payload_type=payload_type,
                protocol_headers=_kept(headers),
                fallback_time=now,
            )
        return _wrapped(
            topic, subject, content_type, body, wrap_type, source, payload_type, now, headers
        )
    except MalformedMessageError:
        raise
    except (CodecError, msgspec.DecodeError, InvalidTopicError, ValueError) as exc:
        raise MalformedMessageError(f"{type(exc).__name__}: {exc} (message on {subject})") from None


def _check_type(type_: object, types: Callable[[str], bool] | None) -> None:
    if types is not None and type_ is not None and not types(str(type_)):
        raise MalformedMessageError(
            f"unknown CloudEvents type {type_!r}: this bridge takes only the types it was "
            "configured with"
        )


def _wrapped(
    topic: str,
    subject: str,
    content_type: str | None,
    body: bytes,
    wrap_type: str,
    source: str,
    payload_type: type | None,
    now: Callable[[], int],
    headers: Mapping[str, str],
) -> Envelope[Any]:
    """A plain payload as an event of ``wrap_type``: JSON data when it is JSON (or says it
    is), else the bytes (``application/octet-stream`` unless the message says otherwise)."""
    data: Callable[[type | None], Any]
    if content_type is None:
        try:
            value = msgspec.json.decode(body)
        except msgspec.DecodeError:
            content_type = _WRAP_CONTENT_TYPE
            data = binary_data(body, content_type)
        else:
            del value
            data = binary_data(body, None)  # JSON, into the topic's class when it has one
    else:
        data = binary_data(body, content_type)
    attributes = {"type": wrap_type, "subject": subject, "source": source}
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    return envelope_from_attributes(
        attributes,
        data,
        topic=topic,
        payload_type=payload_type,
        protocol_headers=_kept(headers),
        fallback_id=uuid.uuid4().hex,
        fallback_source=source,
        fallback_type=wrap_type,
        fallback_time=now,
    )


def _kept(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers that can travel on with the event: extension names (``[a-z0-9]+``) that
    are no context attribute."""
    return {
        name: value
        for name, value in headers.items()
        if is_extension_name(name) and name not in CORE_ATTRIBUTES
    }


def dead_letter_data(
    bridge: str, reason: str, origin: Mapping[str, Any], body: bytes
) -> dict[str, Any]:
    """The data of a bridge's dead letter: the bridge, the reason, where the message came
    from and its body (text when it is UTF-8, else base64 under ``body_base64``)."""
    out: dict[str, Any] = {"bridge": bridge, "reason": reason, "origin": dict(origin)}
    try:
        out["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(body).decode("ascii")
    return out


class Intake:
    """Accepts received events onto a bus (:meth:`Bus.emit_envelope`) or into a
    :class:`Sink` (a gateway's ``accept``), and dead-letters malformed messages there.

    Args:
        bus: the bus to emit on, or ``None`` with ``sink``.
        sink: accept through this instead of a bus.
        dead_letter: the topic of dead letters (:data:`DEAD_LETTER_TOPIC`).
        source: the ``source`` of the dead letters.
    """

    def __init__(
        self,
        bus: Bus | None = None,
        *,
        sink: Sink | None = None,
        dead_letter: str = DEAD_LETTER_TOPIC,
        source: str = "tidings-bridge",
    ) -> None:
        if (bus is None) == (sink is None):
            raise TypeError("give an Intake either a bus or a sink")
        self.bus = bus
        self.sink = sink
        self.dead_letter = validate_topic(dead_letter)
        self.source = source
        self._clock: Callable[[], int] = _time.time_ns

    async def accept(self, envelope: Envelope[Any]) -> None:
        """Return once ``envelope`` is accepted.

        Raises:
            MalformedMessageError: the bus refused it for what it is (its time leads the clock too far).
            Exception: any other refusal (the store or transport failed): retry later.
        """
        if self.bus is not None:
            try:
                await self.bus.emit_envelope(envelope)
            except ClockSkewError as exc:
                raise _refusal(exc) from None
        else:
            assert self.sink is not None
            await self.sink([envelope])

    async def accept_all(self, envelopes: Sequence[Envelope[Any]]) -> list[Exception | None]:
        """Accept ``envelopes`` together; each one's refusal (as :meth:`accept` raises it),
        or ``None``, in order. Never raises for a refusal.

        On a bus with a log and no transport they are emitted at once, so the log appends
        them in one transaction (the group commit of concurrent emits, :mod:`tidings._log`),
        in this order; a sink gets them in one call (a refusal refuses all of them, but a
        :class:`MalformedMessageError` sends each alone again, to tell which); a bus
        with a transport, or none, takes them one after another.
        """
        if len(envelopes) == 1 or (self.bus is not None and self.bus.appending_together() is None):
            return [await self._outcome(envelope) for envelope in envelopes]
        if self.bus is None:
            assert self.sink is not None
            try:
                await self.sink(envelopes)
            except MalformedMessageError:  # one of them is: which, each alone tells
                return [await self._outcome(envelope) for envelope in envelopes]
            except Exception as exc:
                return [exc] * len(envelopes)
            return [None] * len(envelopes)
        emit = self.bus.emit_envelope
        outcomes = await asyncio.gather(*map(emit, envelopes), return_exceptions=True)
        errors: list[Exception | None] = []
        for outcome in outcomes:
            if not isinstance(outcome, BaseException):
                errors.append(None)
            elif not isinstance(outcome, Exception):
                raise outcome  # cancelled: the messages stay unacknowledged
            else:
                errors.append(_refusal(outcome))
        return errors

    async def _outcome(self, envelope: Envelope[Any]) -> Exception | None:
        try:
            await self.accept(envelope)
        except Exception as exc:
            return exc
        return None

    async def reject(self, data: Mapping[str, Any]) -> None:
        """Accept a dead letter with ``data`` (:func:`dead_letter_data`) on the dead-letter
        topic.

        Raises:
            Exception: the refusal (retry later).
        """
        envelope: Envelope[Any] = Envelope(
            self.dead_letter,
            dict(data),
            self._clock(),
            None,
            self.source,
            NO_HEADERS,
            uuid.uuid4().hex,
        )
        if self.bus is not None:
            await self.bus.emit_envelope(envelope)
        else:
            assert self.sink is not None
            await self.sink([envelope])


def _refusal(exc: Exception) -> Exception:
    """How a bridge takes the bus's refusal ``exc``: a :class:`ClockSkewError` (the event's
    time leads the clock too far) as :class:`MalformedMessageError`, which is not retried;
    any other as it is."""
    if isinstance(exc, ClockSkewError):
        return MalformedMessageError(f"ClockSkewError: {exc}")
    return exc


def type_filter(patterns: Sequence[str] | None) -> Callable[[str], bool] | None:
    """A test of CloudEvents types against tidings patterns (``None``: any type)."""
    if patterns is None:
        return None
    matchers = [compile_pattern(validate_pattern(p)) for p in patterns]
    return lambda type_: any(match(type_) for match in matchers)


class Bridge:
    """What every bridge does the same way: its counts, retrying a step of the intake,
    publishing out with retries, the subscriptions out, and use as an async context manager.
    A bridge class sets :attr:`protocol` and :attr:`send_errors` and implements
    :meth:`start`, :meth:`aclose` and :meth:`publish_once`.
    """

    protocol: ClassVar[str] = ""
    """The protocol's name, for messages (``MQTT``, ``AMQP``)."""
    send_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """What :meth:`publish_once` raises when the broker is away or refused: retried."""

    def __init__(self, bus: Bus | None, name: str, backoff_limit: float) -> None:
        self.bus = bus
        self.name = name
        self.counts = BridgeCounts()
        self.backoff_limit = backoff_limit
        self.closing = False
        self._subscriptions: list[Subscription[Any]] = []
        self._log = logging.getLogger(f"tidings.bridges.{self.protocol.lower()}")

    async def start(self) -> Self:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        """Whether the bridge holds a live connection to the broker now."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        """The broker's URL without credentials (for logs, status and metrics)."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """The bridge's name, protocol, broker, connection and :class:`BridgeCounts` (a
        gateway's ``GET /config`` lists its sources so)."""
        return {
            "name": self.name,
            "protocol": self.protocol.lower(),
            "url": self.address,
            "connected": self.connected,
            **dataclasses.asdict(self.counts),
        }

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def until_done(self, step: Callable[[], Awaitable[object]]) -> str | None:
        """Run ``step()`` until it succeeds, retrying refusals that may pass with backoff;
        return the reason when it refused the event as malformed.

        Raises:
            Exception: a refusal while the bridge is closing.
        """
        backoff = Backoff(limit=self.backoff_limit)
        while True:
            try:
                await step()
            except MalformedMessageError as exc:
                return exc.reason
            except Exception as exc:
                if self.closing:
                    raise
                self.counts.retried += 1
                self._log.warning(
                    "%s bridge %s: a step failed (%s: %s); retrying",
                    self.protocol,
                    self.name,
                    type(exc).__name__,
                    exc,
                )
                await backoff.sleep()
            else:
                return None

    async def accept_batch(
        self, intake: Intake, decoded: Sequence[Envelope[Any] | MalformedMessageError]
    ) -> list[str | None]:
        """Accept the events of messages received together (:meth:`Intake.accept_all`: one
        transaction on a bus with a log); for each message, in order, ``None`` once its
        event is accepted, else why it is to be dead-lettered (its decoding failed, given as
        the :class:`MalformedMessageError`, or the bus refused the event as malformed).
        A refusal that may pass is retried for that event alone (:meth:`until_done`), after
        the others of the batch. Counts :attr:`BridgeCounts.accepted`.

        Raises:
            Exception: a refusal while the bridge is closing.
        """
        reasons: list[str | None] = []
        taken: list[tuple[int, Envelope[Any]]] = []
        for index, item in enumerate(decoded):
            if isinstance(item, MalformedMessageError):
                reasons.append(item.reason)
            else:
                reasons.append(None)
                taken.append((index, item))
        if taken:
            errors = await intake.accept_all([envelope for _, envelope in taken])
            for (index, envelope), error in zip(taken, errors, strict=True):
                if error is None:
                    continue
                if isinstance(error, MalformedMessageError):
                    reasons[index] = error.reason
                    continue
                if self.closing:
                    raise error
                self.counts.retried += 1
                reasons[index] = await self._accept_alone(intake, envelope)
        self.counts.accepted += sum(reason is None for reason in reasons)
        return reasons

    async def _accept_alone(self, intake: Intake, envelope: Envelope[Any]) -> str | None:
        return await self.until_done(lambda: intake.accept(envelope))

    def subscribe_out(self, patterns: Sequence[str]) -> None:
        """Send the bus's events of ``patterns`` out (:meth:`send`): from the log through
        the durable consumer ``<name>-out`` when the bus has a store, else through a
        queued subscription (one worker, order kept)."""
        bus = self.bus
        if bus is None:
            return
        for pattern in patterns:
            if bus.store is not None:
                sub = bus.subscribe(pattern, self.send, envelope=True, durable=f"{self.name}-out")
            else:
                sub = bus.subscribe(pattern, self.send, envelope=True, mode="queued")
            self._subscriptions.append(sub)

    def unsubscribe_out(self) -> None:
        for sub in self._subscriptions:
            sub.cancel()
        self._subscriptions.clear()

    async def publish_once(self, envelope: Envelope[Any], encoded: Any) -> None:
        """Publish ``encoded`` (:meth:`encode` of ``envelope``) once and wait for the
        broker's acknowledgement; raise one of :attr:`send_errors` if it did not come."""
        raise NotImplementedError

    def encode(self, envelope: Envelope[Any]) -> Any:
        raise NotImplementedError

    async def send(self, envelope: Envelope[Any]) -> None:
        """Publish ``envelope`` and wait for the broker's acknowledgement, retrying while
        the broker is away or refuses, until the bridge closes (then raise, so a durable
        consumer resumes here after a restart)."""
        encoded = self.encode(envelope)
        backoff = Backoff(limit=self.backoff_limit)
        while True:
            if self.closing:
                raise TransportClosedError(
                    f"the {self.protocol} bridge {self.name} closed before event "
                    f"{envelope.id} was sent"
                )
            try:
                await self.publish_once(envelope, encoded)
            except self.send_errors as exc:
                self.counts.publish_failed += 1
                self._log.warning(
                    "%s bridge %s: publishing event %s failed (%s: %s); retrying",
                    self.protocol,
                    self.name,
                    envelope.id,
                    type(exc).__name__,
                    exc,
                )
                await backoff.sleep()
            else:
                self.counts.published += 1
                return

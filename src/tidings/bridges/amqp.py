"""The AMQP 0-9-1 bridge: bus topics out to a RabbitMQ exchange, queues onto the bus
(``tidings[amqp]``, on aio-pika).

**Names.** An event of topic ``orders.placed`` is published to ``exchange`` (a durable
topic exchange) with the routing key ``orders.placed``; a queue bound with ``bind``
patterns gets them by the same rule (``*`` and ``>`` become AMQP's ``*`` and ``#``). A
message taken from a queue goes onto the bus under its routing key, which must be a tidings
topic (else it is dead-lettered).

**CloudEvents AMQP binding.** Binary mode by default: each context attribute and extension
is a header ``cloudEvents:<name>`` (text), ``datacontenttype`` is the ``content_type``
property, the data is the body; ``structured=True`` sends the JSON event with
``content_type`` ``application/cloudevents+json``. Every message also carries
``message_id`` (the event id), ``timestamp`` and ``delivery_mode`` 2 (persistent). On
receipt both modes are read, and headers named ``cloudEvents_<name>`` (the binding's
JMS-friendly spelling) too; a ``time`` given as an AMQP timestamp or integer milliseconds
is read as such. A message that is no CloudEvent is wrapped as an event of type
``wrap_type`` whose ``subject`` is ``<exchange>/<routing key>``.

Guarantees:

- **Publisher confirms.** Out, an event counts as published only when the broker confirmed
  it (the channel is in confirm mode; a ``nack`` is retried). On a bus with a store the
  events come from the log through a durable consumer (``<name>-out``) that commits one
  only after its confirm, and retries while the broker is away; without a store a queued
  subscription (one worker) sends them while the process lives.
- **Pipelined confirms (a bus without a store).** The worker takes the events waiting at
  once, up to ``window`` (256), and publishes them all on the one channel, in order, before
  awaiting their confirms; the subscription's call (so the event's delivery) ends only
  when the broker confirmed every one. RabbitMQ keeps a channel's publish order, so the
  events of a routing key arrive in the order emitted. Those the broker refused (a
  ``nack``, a return with ``mandatory``) or did not confirm (the connection dropped, a
  timeout) are counted in ``publish_failed`` and published again, in their order, after
  the rest of their window, with backoff, until confirmed: none is lost, one whose confirm
  was lost may arrive twice, and one nacked alone can land after later events of its
  routing key (``window=1`` never reorders).
- **Manual acks after acceptance.** In, a message is acknowledged only once its event is
  accepted (:class:`~tidings.bridges.Intake`); a queue's messages are taken in delivery
  order (``prefetch`` messages are taken ahead), those waiting at once (up to 256) together:
  on a bus with a log their events are appended in one transaction, then the accepted ones
  are acknowledged with one ``multiple`` ack. Refusals that may pass are retried while the
  message waits; if the connection drops first, the broker delivers it again (at least
  once: a CloudEvent keeps its id, so a store keeps it once).
- **Dead letters through the broker's DLX.** A message that cannot become an event is
  published, body and headers unchanged plus ``tidings-dead-reason`` and
  ``tidings-dead-queue``, to ``dead_letter_exchange`` (the exchange the bridge declares as
  its queues' ``x-dead-letter-exchange``) with its routing key, confirmed, and then
  acknowledged. With ``dead_letter_exchange=None`` it is rejected without requeueing, so
  the queue's own dead-letter policy (if any) takes it.
- **Reconnects.** aio-pika's robust connection reconnects with its own backoff and restores
  channels, declarations and consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import inspect
import logging
import urllib.parse
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast

from tidings.bridges._common import (
    Backoff,
    Bridge,
    Intake,
    MalformedMessageError,
    Sink,
    decode_message,
    missing_extra,
    type_filter,
)
from tidings.bridges.names import to_binding_key
from tidings.cloudevents import (
    CORE_ATTRIBUTES,
    binary_attributes,
    encode_data,
    format_time,
    to_structured,
)
from tidings.dead_letter import DeadLetter
from tidings.delivery import Batch
from tidings.exceptions import (
    BusClosedError,
    EncodeError,
    HeaderError,
    InvalidTopicError,
    PublishError,
    PublishOutcomeUnknownError,
    TransportClosedError,
    TransportError,
    TransportUnavailableError,
)
from tidings.topics import validate_pattern, validate_topic

try:
    import aio_pika
    import aiormq
    from aio_pika.abc import (
        AbstractChannel,
        AbstractConnection,
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractQueue,
        AbstractRobustConnection,
    )
    from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
    from aiormq.abc import AbstractChannel as UnderlayChannel
    from pamqp.commands import Basic
    from pamqp.common import FieldTable
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise missing_extra("amqp", "aio-pika") from exc

if TYPE_CHECKING:
    from tidings.bus import Bus
    from tidings.event import Envelope

__all__ = ("ATTRIBUTE_PREFIX", "DEAD_QUEUE", "DEAD_REASON", "AmqpBridge", "to_binding_key")

logger = logging.getLogger("tidings.bridges.amqp")

ATTRIBUTE_PREFIX: Final = "cloudEvents:"
"""The prefix of a CloudEvents attribute's header (AMQP binding, binary mode)."""
_PREFIXES: Final = (ATTRIBUTE_PREFIX, "cloudEvents_")
_PREFIXED: Final = {name: f"{ATTRIBUTE_PREFIX}{name}" for name in CORE_ATTRIBUTES}
"""The header names of the context attributes, made once (not per message)."""
_PERSISTENT: Final = 2  # delivery_mode
DEAD_REASON: Final = "tidings-dead-reason"
"""The header a dead-lettered message carries: why it could not become an event."""
DEAD_QUEUE: Final = "tidings-dead-queue"
"""The header a dead-lettered message carries: the queue it was taken from."""
_BATCH: Final = 256  # messages taken (accepted, then acknowledged) together at most
_PUBLISH_ERRORS: Final = (AMQPError, ConnectionError, OSError, RuntimeError, TimeoutError)
Properties = Basic.Properties
_NO_DRAIN: Final[dict[str, bool]] = (
    {"wait": False} if "wait" in inspect.signature(aiormq.Channel.basic_publish).parameters else {}
)
"""Publish without waiting until the frame is written (aiormq's ``wait=False``, where it
has it): a window's publishes are queued in one pass, each then awaits only its confirm."""


class _Outgoing(NamedTuple):
    """One event's publish, encoded once: the event, its routing key, body, properties."""

    envelope: Envelope[Any]
    routing_key: str
    body: bytes
    properties: Properties


def _text(value: object) -> str:
    """A header table value as attribute text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=_dt.UTC)
        return format_time(int(aware.timestamp() * 1_000_000) * 1000)
    return str(value)


def _unique_runs(items: list[_Outgoing]) -> list[list[_Outgoing]]:
    """``items`` in order, cut before each event id that its run already holds."""
    runs: list[list[_Outgoing]] = [[]]
    seen: set[str] = set()
    for item in items:
        if item.envelope.id in seen:
            runs.append([])
            seen.clear()
        runs[-1].append(item)
        seen.add(item.envelope.id)
    return runs


class AmqpBridge(Bridge):
    """Bridges a RabbitMQ (AMQP 0-9-1) broker and a bus (or a gateway).

    Args:
        bus: the bus events go onto and come from.
        url: ``amqp://user:password@host:port/vhost``.
        exchange: the topic exchange events are published to (and queues bound to).
        publish: bus patterns whose events go out to ``exchange``.
        queues: queues whose messages go onto the bus.
        bind: with ``declare``, bind each of ``queues`` to ``exchange`` with these bus
            patterns.
        sink: accept received events through this instead of ``bus`` (a gateway's
            ``accept``); ``publish`` then needs a bus.
        declare: declare the exchange, the dead-letter exchange and the queues (durable;
            each queue with ``x-dead-letter-exchange``); off, they must exist.
        dead_letter_exchange: where malformed messages go (see the module docstring).
        structured: send structured-mode CloudEvents.
        wrap_type: the CloudEvents type of plain (non-CloudEvents) messages.
        types: take only CloudEvents whose ``type`` matches one of these patterns.
        prefetch: messages taken ahead per queue (unacknowledged at most).
        mandatory: publish with the ``mandatory`` flag: an event no queue is bound for is
            refused (and retried) instead of dropped by the broker.
        connect_timeout: how long :meth:`start` waits for the broker.
        publish_timeout: how long one publish waits for its confirm.
        window: on a bus without a store, how many events are published at once with
            their confirms outstanding (the publisher-confirm window; 1: one at a time).
        name: names the durable consumer of ``publish`` (``<name>-out``) and the logs.
    """

    protocol = "AMQP"
    send_errors = _PUBLISH_ERRORS

    def __init__(
        self,
        bus: Bus | None = None,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        exchange: str = "tidings",
        publish: Sequence[str] = (),
        queues: Sequence[str] = (),
        bind: Sequence[str] = (),
        sink: Sink | None = None,
        declare: bool = True,
        dead_letter_exchange: str | None = "tidings.dead_letter",
        structured: bool = False,
        wrap_type: str = "amqp.message",
        types: Sequence[str] | None = None,
        prefetch: int = 256,
        mandatory: bool = False,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        window: int = 256,
        backoff_limit: float = 5.0,
        name: str = "amqp",
    ) -> None:
        if not url.startswith(("amqp://", "amqps://")):
            raise ValueError(f"{url!r} is no AMQP URL; write it as amqp://user:pass@host:5672/")
        if publish and bus is None:
            raise TypeError("publishing bus topics to AMQP needs a bus")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(
                f"window is how many publishes may await a confirm, >= 1, not {window!r}"
            )
        super().__init__(bus, name, backoff_limit)
        self.url = url
        self.exchange_name = exchange
        self.patterns = tuple(validate_pattern(p) for p in publish)
        self.queue_names = tuple(queues)
        self.binding_keys = tuple(to_binding_key(p) for p in bind)
        self.intake: Intake | None = None
        if bus is not None or sink is not None:
            self.intake = Intake(bus, sink=sink, source=self._safe_url())
        elif self.queue_names:
            raise TypeError("taking AMQP messages in needs a bus or a sink")
        self.declare = declare
        self.dead_letter_exchange = dead_letter_exchange
        self.structured = structured
        self.wrap_type = wrap_type
        self._types = type_filter(types)
        self.prefetch = prefetch
        self.mandatory = mandatory
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.window = window
        self._connection: AbstractRobustConnection | None = None
        self._publishing: AbstractChannel | None = None
        self._dead_exchange: AbstractExchange | None = None
        self._workers: list[asyncio.Task[None]] = []

    @property
    def address(self) -> str:
        return self._safe_url()

    def _safe_url(self) -> str:
        """The URL without its password (the ``source`` of wrapped messages)."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path or '/'}"

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> AmqpBridge:
        """Connect, declare, start consuming the queues and publishing the patterns.

        Raises:
            TransportUnavailableError: the broker did not accept a connection within
                ``connect_timeout``.
            TransportError: the exchanges or queues could not be declared (or, with
                ``declare=False``, do not exist).
        """
        # Declarations (or, with declare=False, checks) first on a plain connection: a
        # failure there is an error now, not a robust connection retrying in the background.
        try:
            probe = await aio_pika.connect(self.url, timeout=self.connect_timeout)
        except (AMQPError, ConnectionError, OSError, TimeoutError) as exc:
            raise TransportUnavailableError(
                f"the AMQP broker at {self._safe_url()} did not accept a connection within "
                f"{self.connect_timeout:g}s ({type(exc).__name__}: {exc}); is it running?",
                servers=(self._safe_url(),),
                timeout=self.connect_timeout,
            ) from None
        try:
            await self._declare(probe, consume=False)
        except (AMQPError, ConnectionError, OSError, TimeoutError) as exc:
            raise TransportError(
                f"the AMQP bridge {self.name} could not declare or find its exchanges and "
                f"queues on {self._safe_url()} ({type(exc).__name__}: {exc}); an existing "
                "queue with other arguments needs declare=False (or a new name), and with "
                "declare=False the exchanges and queues must exist"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await probe.close()
        try:
            connection = await aio_pika.connect_robust(self.url, timeout=self.connect_timeout)
        except (AMQPError, ConnectionError, OSError, TimeoutError) as exc:
            raise TransportUnavailableError(
                f"the AMQP broker at {self._safe_url()} went away during the start "
                f"({type(exc).__name__}: {exc})",
                servers=(self._safe_url(),),
                timeout=self.connect_timeout,
            ) from None
        self._connection = connection
        connection.reconnect_callbacks.add(self._reconnected)
        try:
            await self._declare(connection, consume=True)
        except BaseException:
            self._connection = None
            await connection.close()
            raise
        self.subscribe_out(self.patterns)
        return self

    async def _declare(self, connection: AbstractConnection, *, consume: bool) -> None:
        """Declare (or, with ``declare=False``, check) the exchanges and queues; with
        ``consume``, keep the exchanges for publishing and start consuming the queues."""
        publishing = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange: AbstractExchange
        dead: AbstractExchange | None = None
        if self.declare:
            exchange = await publishing.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            if self.dead_letter_exchange is not None:
                dead = await publishing.declare_exchange(
                    self.dead_letter_exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
        else:
            exchange = await publishing.get_exchange(self.exchange_name, ensure=not consume)
            if self.dead_letter_exchange is not None:
                dead = await publishing.get_exchange(self.dead_letter_exchange, ensure=not consume)
        for queue_name in self.queue_names:
            channel = await connection.channel(publisher_confirms=False)
            await channel.set_qos(prefetch_count=self.prefetch)
            queue: AbstractQueue
            if self.declare:
                arguments: Any = (
                    {"x-dead-letter-exchange": self.dead_letter_exchange}
                    if self.dead_letter_exchange is not None
                    else None
                )
                queue = await channel.declare_queue(queue_name, durable=True, arguments=arguments)
                for key in self.binding_keys:
                    await queue.bind(exchange, key)
            else:
                queue = await channel.get_queue(queue_name, ensure=not consume)
            if consume:
                waiting: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
                await queue.consume(self._arrived(waiting), no_ack=False)
                self._workers.append(
                    asyncio.create_task(
                        self._work(queue_name, waiting), name=f"tidings-{self.name}-{queue_name}"
                    )
                )
        if consume:
            self._publishing = publishing
            self._dead_exchange = dead

    def _reconnected(self, *_: object) -> None:
        self.counts.reconnects += 1
        logger.info("AMQP bridge %s reconnected to %s", self.name, self._safe_url())

    def _arrived(self, waiting: asyncio.Queue[AbstractIncomingMessage]) -> Any:
        async def arrived(message: AbstractIncomingMessage) -> None:
            waiting.put_nowait(message)  # at most ``prefetch`` unacknowledged ones

        return arrived

    async def aclose(self) -> None:
        """Stop bridging: end the subscriptions out, stop taking messages (those not yet
        acknowledged go back to their queues) and close the connection."""
        self.closing = True
        self.unsubscribe_out()
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            # Their ends (a sink's write in flight may finish first); a cancellation of this
            # caller goes on up, not taken for a worker's, and a second aclose() goes on.
            await asyncio.wait(self._workers)
        for worker in self._workers:
            if not worker.cancelled():
                with contextlib.suppress(Exception):
                    worker.result()
        self._workers.clear()
        connection, self._connection = self._connection, None
        self._publishing = self._dead_exchange = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    @property
    def connected(self) -> bool:
        """Whether the connection to the broker is up now."""
        connection = self._connection
        return connection is not None and connection.connected.is_set()

    # -- in -----------------------------------------------------------------------------------

    async def _work(self, queue: str, waiting: asyncio.Queue[AbstractIncomingMessage]) -> None:
        """Take the queue's messages in delivery order, in batches (those waiting at once,
        up to :data:`_BATCH`, of one channel): accept them together, then acknowledge the
        accepted ones with one ``multiple`` ack, not one frame and broker wake-up each."""
        held: AbstractIncomingMessage | None = None
        while True:
            message = held if held is not None else await waiting.get()
            held = None
            batch = [message]
            while len(batch) < _BATCH and not waiting.empty():
                more = waiting.get_nowait()
                if more.channel is not message.channel:  # acks belong to their channel
                    held = more
                    break
                batch.append(more)
            try:
                taken = await self._take(queue, batch)
            except Exception:  # a defect: give the messages back to the queue
                logger.exception("AMQP bridge %s failed taking messages", self.name)
                for each in batch:
                    with contextlib.suppress(Exception):
                        await each.nack(requeue=True)
                continue
            await self._acknowledge(batch, taken)

    async def _acknowledge(self, batch: list[AbstractIncomingMessage], taken: list[bool]) -> None:
        """Ack the messages of ``batch`` (of one channel) that ``taken`` marks: one
        ``multiple`` ack when every one is (a rejected one, with no dead-letter exchange,
        is settled already), else one each."""
        count = sum(taken)
        if not count:
            return
        try:
            if all(taken):
                await batch[-1].ack(multiple=True)
            else:
                for message, ack in zip(batch, taken, strict=True):
                    if ack:
                        await message.ack()
        except (ChannelInvalidStateError, AMQPError, ConnectionError) as exc:
            # The channel they came on is gone: the broker delivers them again.
            self.counts.ack_failed += count
            logger.info("AMQP bridge %s: acks lost with their channel (%s)", self.name, exc)
        else:
            self.counts.acknowledged += count

    async def _take(self, queue: str, batch: list[AbstractIncomingMessage]) -> list[bool]:
        """Accept (or dead-letter) the messages of ``batch`` together; for each, whether
        the caller is to acknowledge it."""
        self.counts.received += len(batch)
        intake = self.intake
        assert intake is not None  # there are filters or queues only with an intake
        decoded: list[Envelope[Any] | MalformedMessageError] = []
        for message in batch:
            try:
                decoded.append(self._decode(message))
            except MalformedMessageError as exc:
                decoded.append(exc)
        reasons = await self.accept_batch(intake, decoded)
        taken: list[bool] = []
        for message, reason in zip(batch, reasons, strict=True):
            if reason is None:
                taken.append(True)
                continue
            await self.until_done(lambda: self._dead_letter(queue, message, reason))  # noqa: B023
            self.counts.dead_lettered += 1
            # Rejected to the queue's own policy (no dead-letter exchange): nothing to ack.
            taken.append(self.dead_letter_exchange is not None)
        return taken

    async def _dead_letter(self, queue: str, message: AbstractIncomingMessage, reason: str) -> None:
        """Dead-letter ``message`` through the broker (see the module docstring)."""
        exchange = self._dead_exchange
        if exchange is None:
            await message.reject(requeue=False)
            return
        headers = dict(message.headers or {})
        headers[DEAD_REASON] = reason
        headers[DEAD_QUEUE] = queue
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            message_id=message.message_id,
            timestamp=message.timestamp,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await exchange.publish(
            copy, routing_key=message.routing_key or "", timeout=self.publish_timeout
        )

    def _decode(self, message: AbstractIncomingMessage) -> Envelope[Any]:
        routing_key = message.routing_key or ""
        subject = f"{message.exchange or ''}/{routing_key}"
        try:
            topic = validate_topic(routing_key)
        except InvalidTopicError as exc:
            raise MalformedMessageError(
                f"the routing key {routing_key!r} names no tidings topic: {exc}"
            ) from None
        attributes: dict[str, str] = {}
        others: dict[str, str] = {}
        for name, value in (message.headers or {}).items():
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    attribute = name[len(prefix) :]
                    if (
                        attribute == "time"
                        and isinstance(value, int)
                        and not isinstance(value, bool)
                    ):
                        attributes[attribute] = format_time(value * 1_000_000)  # AMQP ms
                    else:
                        attributes[attribute] = _text(value)
                    break
            else:
                others[name] = _text(value)
        return decode_message(
            topic=topic,
            subject=subject,
            attributes=attributes,
            headers=others,
            content_type=message.content_type,
            body=message.body,
            wrap_type=self.wrap_type,
            source=self._safe_url(),
            types=self._types,
        )

    # -- out ----------------------------------------------------------------------------------

    def subscribe_out(self, patterns: Sequence[str]) -> None:
        """Send the bus's events of ``patterns`` out: on a bus with a store as every bridge
        does (:meth:`Bridge.subscribe_out`: the durable consumer, one event at a time);
        without one through a queued subscription whose worker takes the events waiting at
        once, up to ``window``, and publishes them together (:meth:`send_window`)."""
        bus = self.bus
        if bus is None or bus.store is not None:
            super().subscribe_out(patterns)
            return
        batch = Batch(max_size=self.window, max_wait=0.0, adaptive=False)
        for pattern in patterns:
            sub = bus.subscribe(pattern, self.send_window, envelope=True, batch=batch)
            self._subscriptions.append(sub)

    def _wire(self, envelope: Envelope[Any]) -> tuple[bytes, Properties]:
        """The body and AMQP properties of ``envelope`` (see the module docstring): the one
        encoding every publish uses.

        Raises:
            EncodeError, HeaderError: the event cannot travel.
        """
        headers: dict[str, Any]
        if self.structured:
            headers, body = to_structured(envelope)
            content_type = headers.pop("content-type")
        else:
            attributes, plain = binary_attributes(envelope)
            content_type = attributes.pop("datacontenttype")
            headers = {
                _PREFIXED.get(name) or ATTRIBUTE_PREFIX + name: value
                for name, value in attributes.items()
            }
            if plain:
                headers.update(plain)
            body = encode_data(envelope)
        return body, Properties(
            content_type=content_type,
            headers=cast("FieldTable", headers),
            delivery_mode=_PERSISTENT,
            priority=0,
            message_id=envelope.id,
            timestamp=envelope.datetime,
        )

    def encode(self, envelope: Envelope[Any]) -> aio_pika.Message:
        """The AMQP message of ``envelope`` (see the module docstring).

        Raises:
            EncodeError, HeaderError: the event cannot travel.
        """
        body, properties = self._wire(envelope)
        return aio_pika.Message(
            body,
            headers=properties.headers,
            content_type=properties.content_type,
            message_id=properties.message_id,
            timestamp=properties.timestamp,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )

    async def publish_once(
        self, envelope: Envelope[Any], encoded: aio_pika.Message, routing_key: str | None = None
    ) -> None:
        """Publish ``encoded`` with ``routing_key`` (else the event's topic) and wait for
        the broker's confirm."""
        channel = await self._channel()
        await self._publish(
            channel, encoded.body, encoded.properties, routing_key or envelope.topic
        )

    async def _channel(self) -> UnderlayChannel:
        """The publishing channel as it is now (after a reconnect, the new one)."""
        channel = self._publishing
        if channel is None:
            raise TransportClosedError(f"the AMQP bridge {self.name} is not started")
        if channel.is_closed:  # lost with the connection: fail now, as aio-pika's publish
            raise ChannelInvalidStateError(f"the AMQP bridge {self.name}'s channel is closed")
        if self.connected:  # no wait for a reconnect: no timer to set
            return await channel.get_underlay_channel()
        async with asyncio.timeout(self.publish_timeout):
            return await channel.get_underlay_channel()

    def _publish(
        self, channel: UnderlayChannel, body: bytes, properties: Properties, routing_key: str
    ) -> Awaitable[object]:
        """Publish once and wait for the broker's confirm: the one publishing step."""
        publish: Any = channel.basic_publish  # ``wait`` is the concrete channel's
        return cast(
            "Awaitable[object]",
            publish(
                body,
                exchange=self.exchange_name,
                routing_key=routing_key,
                properties=properties,
                mandatory=self.mandatory,
                timeout=self.publish_timeout,
                **_NO_DRAIN,
            ),
        )

    async def send_window(self, envelopes: Sequence[Envelope[Any]]) -> None:
        """Publish ``envelopes`` in order, all in flight at once (publisher confirms
        pipelined), and return when the broker confirmed every one. One the broker refused
        (a ``nack``, a return with ``mandatory``) or did not confirm (the connection
        dropped) is published again, with the others of its window that failed, in their
        order, with backoff, until confirmed. An event that cannot be encoded, or is not
        confirmed when the bridge closes, is dead-lettered on the bus (a
        :class:`~tidings.DeadLetter`, as a failing handler's event); the others go.
        """
        pending: list[_Outgoing] = []
        for envelope in envelopes:
            try:
                body, properties = self._wire(envelope)
            except (EncodeError, HeaderError) as exc:
                await self._not_sent(envelope, exc)
                continue
            pending.append(_Outgoing(envelope, envelope.topic, body, properties))
        backoff: Backoff | None = None
        while pending:
            if self.closing:
                for item in pending:
                    closed = TransportClosedError(
                        f"the AMQP bridge {self.name} closed before event {item.envelope.id} "
                        "was sent"
                    )
                    await self._not_sent(item.envelope, closed)
                return
            failed = await self._publish_all(pending)
            self.counts.published += len(pending) - len(failed)
            if not failed:
                return
            self.counts.publish_failed += len(failed)
            first, error = failed[0]
            self._log.warning(
                "AMQP bridge %s: %d of %d events not confirmed (event %s: %s: %s); retrying",
                self.name,
                len(failed),
                len(pending),
                first.envelope.id,
                type(error).__name__,
                error,
            )
            pending = [item for item, _ in failed]
            if backoff is None:
                backoff = Backoff(limit=self.backoff_limit)
            await backoff.sleep()

    async def _publish_all(self, items: list[_Outgoing]) -> list[tuple[_Outgoing, BaseException]]:
        """Publish ``items`` on one channel in order, all in flight; those that failed (in
        order) with why. With ``mandatory``, an event id met again starts a new flight:
        the broker's return names its message only by ``message_id``, so the ids in flight
        at once must differ."""
        if self.mandatory and len(items) > 1:
            failed: list[tuple[_Outgoing, BaseException]] = []
            for flight in _unique_runs(items):
                failed += await self._publish_flight(flight)
            return failed
        return await self._publish_flight(items)

    async def _publish_flight(
        self, items: list[_Outgoing]
    ) -> list[tuple[_Outgoing, BaseException]]:
        """:meth:`_publish_all` for ``items`` of distinct event ids."""
        try:
            channel = await self._channel()
        except _PUBLISH_ERRORS as exc:
            return [(item, exc) for item in items]
        publish = self._publish
        outcomes: list[object]
        if len(items) == 1:  # no task to run it beside others
            item = items[0]
            try:
                outcomes = [await publish(channel, item.body, item.properties, item.routing_key)]
            except _PUBLISH_ERRORS as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(publish(channel, item.body, item.properties, item.routing_key) for item in items),
                return_exceptions=True,
            )
        failed: list[tuple[_Outgoing, BaseException]] = []
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, _PUBLISH_ERRORS):
                    raise outcome
                failed.append((item, outcome))
        return failed

    async def _not_sent(self, envelope: Envelope[Any], exc: Exception) -> None:
        """Dead-letter an event :meth:`send_window` cannot send, as a failing handler's
        event is (the subscription's other events were sent: its call does not fail)."""
        self._log.error(
            "AMQP bridge %s: event %s was not sent (%s: %s); dead-lettered",
            self.name,
            envelope.id,
            type(exc).__name__,
            exc,
        )
        bus = self.bus
        assert bus is not None  # only a bus's events go out
        try:
            await bus.emit(DeadLetter(envelope, f"{__name__}.AmqpBridge.send_window", exc))
        except BusClosedError:
            self._log.error(
                "AMQP bridge %s: the bus closed; event %s is lost", self.name, envelope.id
            )

    async def publish(self, envelope: Envelope[Any], routing_key: str | None = None) -> None:
        """Publish ``envelope`` once (with ``routing_key``, else its topic) and wait for the
        broker's confirm (a gateway's ``amqp`` target calls this).

        Raises:
            PublishError: the broker refused it (a ``nack``, or unroutable with
                ``mandatory``): not stored.
            PublishOutcomeUnknownError: no confirm came (a timeout, the connection lost):
                it may or may not be there.
            TransportClosedError: the bridge is closed.
        """
        if self.closing:
            raise TransportClosedError(f"the AMQP bridge {self.name} is closed")
        message = self.encode(envelope)
        try:
            await self.publish_once(envelope, message, routing_key)
        except DeliveryError as exc:
            self.counts.publish_failed += 1
            raise PublishError(
                f"the AMQP broker refused event {envelope.id} ({exc})",
                event_id=envelope.id,
                topic=envelope.topic,
            ) from None
        except _PUBLISH_ERRORS as exc:
            self.counts.publish_failed += 1
            raise PublishOutcomeUnknownError(
                f"event {envelope.id} got no confirm from the AMQP broker ({type(exc).__name__}: "
                f"{exc}); it may or may not be there",
                event_id=envelope.id,
                topic=envelope.topic,
            ) from None
        self.counts.published += 1

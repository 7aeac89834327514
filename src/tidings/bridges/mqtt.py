"""The MQTT bridge: MQTT topic filters onto the bus, bus topics out to MQTT (``tidings[mqtt]``,
on aiomqtt).

**Topics.** An MQTT topic ``a/b/c`` is the bus topic ``a.b.c``; in filters and patterns
``+`` is ``*`` and ``#`` is ``>`` (:func:`to_mqtt_filter`, :func:`from_mqtt_filter`). An
MQTT topic that names no tidings topic (an empty level, a level holding ``.`` or a
character outside ``[A-Za-z0-9_-]``) cannot be taken: its messages are dead-lettered.

**CloudEvents MQTT binding.** Out, MQTT 5: binary mode by default (each context attribute
and extension a user property of its own name, ``datacontenttype`` as the Content Type
property, the data as the payload), structured mode with ``structured=True`` (Content Type
``application/cloudevents+json``, the JSON event as the payload); MQTT 3.1.1 has no
properties, so always structured mode. In: both modes on MQTT 5; on MQTT 3.1.1 a JSON
object carrying ``specversion`` is a structured CloudEvent. Anything else is a plain
payload, wrapped as an event of type ``wrap_type`` whose ``subject`` is the MQTT topic
(JSON data when the payload is JSON, else its bytes).

Guarantees:

- **QoS 1 both ways, acknowledged after acceptance.** A received message is acknowledged
  (PUBACK) only after the event is accepted (:class:`~tidings.bridges.Intake`: on the bus,
  appended to its log first when it has a store), in the order received. The messages
  waiting at once (up to 256) are taken together: on a bus with a log their events are
  appended in one transaction, then each is acknowledged. A message that
  cannot become an event is dead-lettered on ``dead_letter`` (a bus topic) with the reason,
  then acknowledged. ``counts.acknowledged`` counts the PUBACKs handed to an open
  connection, ``counts.ack_failed`` those not sent because the connection went first (their
  messages come again). An event sent out counts as published only when the broker's PUBACK
  came.
- **Reconnects lose nothing accepted.** The bridge keeps a persistent session (MQTT 5:
  ``clean_start`` off with a session expiry; 3.1.1: ``clean_session`` off), so messages the
  broker holds for it while it is away, and messages it received but had not yet
  acknowledged, are delivered again after it reconnects (with exponential backoff and
  jitter). Delivery is at least once: a CloudEvent delivered twice keeps its id, so a
  store (idempotent on id) keeps it once; a wrapped plain payload gets a new id each time.
- **Out, at least once with a store.** On a bus with a store, the events of ``publish``
  patterns are read from the log by a durable consumer (``<name>-out``) that commits an
  event only after its PUBACK, retrying while the broker is away: a restart resumes there.
  Without a store, a queued subscription (one worker, publish order kept) sends them while
  the process lives.

Manual acknowledgement needs paho-mqtt's ``manual_ack`` (paho 2.0+), which aiomqtt 2.5
does not expose yet (aiomqtt issue #345): the bridge switches it on the paho client inside
aiomqtt's (:func:`_paho`), a reach into aiomqtt's internals. Through it the bridge
also reads the rest of a burst itself (paho's ``loop_read``, :func:`_burst`) rather than
waiting a turn of the event loop for each message. The other reach reads why a connection
went off aiomqtt's disconnect future (:func:`_lost`) when the bridge closes a client whose
message iterator did not see it, so that the loss is logged once rather than left there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from tidings.bridges._common import (
    DEAD_LETTER_TOPIC,
    Backoff,
    Bridge,
    Intake,
    MalformedMessageError,
    Sink,
    dead_letter_data,
    decode_message,
    missing_extra,
    type_filter,
)
from tidings.bridges.names import from_mqtt_filter, from_mqtt_topic, to_mqtt_filter, to_mqtt_topic
from tidings.cloudevents import binary_attributes, encode_data, to_structured
from tidings.exceptions import (
    InvalidTopicError,
    PublishError,
    PublishOutcomeUnknownError,
    TransportClosedError,
    TransportUnavailableError,
)
from tidings.topics import validate_pattern

try:
    import aiomqtt
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise missing_extra("mqtt", "aiomqtt") from exc

if TYPE_CHECKING:
    from tidings.bus import Bus
    from tidings.event import Envelope

__all__ = (
    "MqttBridge",
    "from_mqtt_filter",
    "from_mqtt_topic",
    "to_mqtt_filter",
    "to_mqtt_topic",
)

logger = logging.getLogger("tidings.bridges.mqtt")

_SESSION_EXPIRY: Final = 3600  # seconds the broker keeps the session of a bridge away
_BATCH: Final = 256  # messages taken (accepted, then acknowledged) together at most
_TOPICS_KEPT: Final = 1024  # MQTT topics whose bus topic is kept, mapped once (then cleared)
_CLOSE_WAIT: Final = 5.0  # seconds a connection attempt given up has to close its socket


class _Inbox(asyncio.Queue[aiomqtt.Message]):
    """The queue aiomqtt puts received messages in (its public ``queue_type`` option), made
    through :func:`_inbox_type` so that the bridge holds it and takes a burst from it
    (:func:`_burst`) without the task and ``asyncio.wait`` aiomqtt's iterator spends on
    each message."""


def _inbox_type(made: list[_Inbox]) -> type[_Inbox]:
    """An :class:`_Inbox` class whose instances are appended to ``made`` as they are made."""

    class Inbox(_Inbox):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(maxsize)
            made.append(self)

    return Inbox


def _burst(first: aiomqtt.Message, inbox: _Inbox, reader: paho.Client) -> list[aiomqtt.Message]:
    """``first`` and the messages that wait behind it, up to :data:`_BATCH`. When the
    inbox is empty, ``reader`` (the paho client) reads the socket once (paho's public
    ``loop_read``, which aiomqtt's reader calls when the socket is readable; its messages
    land in the inbox), so the burst grows while the socket holds messages, without a turn
    of the event loop each, and ends when it holds none (or the connection failed: paho
    then tells aiomqtt, whose iterator raises next)."""
    batch = [first]
    while len(batch) < _BATCH:
        if inbox.empty() and (reader.loop_read() != paho.MQTT_ERR_SUCCESS or inbox.empty()):
            break  # no whole message in the socket now, or the connection failed
        batch.append(inbox.get_nowait())
    return batch


def _lost(client: aiomqtt.Client) -> BaseException | None:
    """Why ``client``'s connection went, if it went unexpectedly, read off aiomqtt's
    ``_disconnected`` future (a second reach into its internals, read with ``getattr`` so
    that a release renaming it only skips this). aiomqtt reads that future only in its
    message iterator: a client closed before the iterator saw the loss (``__aexit__``
    returns early on a finished future) leaves its exception unread, and asyncio logs
    "Future exception was never retrieved" when the client is collected. Reading it here
    lets the bridge report the loss once, with its meaning."""
    done = getattr(client, "_disconnected", None)
    if not isinstance(done, asyncio.Future) or not done.done() or done.cancelled():
        return None
    return done.exception()


async def _close(client: aiomqtt.Client) -> BaseException | None:
    """Disconnect ``client`` (errors of a connection already gone are no news) and return
    why its connection went, if it went unexpectedly (:func:`_lost`)."""
    with contextlib.suppress(Exception):
        await client.__aexit__(None, None, None)
    return _lost(client)


async def _enter(client: aiomqtt.Client, timeout: float) -> None:
    """Connect ``client`` (aiomqtt's ``__aenter__``) within ``timeout`` seconds, leaving
    nothing open if that fails or the caller is cancelled meanwhile (its timeout): the
    connection attempt is let run to its end and what it opened is then closed
    (:func:`_abandon`) before this raises.

    The TCP connection (paho's ``connect_timeout``, in aiomqtt's executor thread) and the
    broker's CONNACK (aiomqtt's ``timeout``) share one deadline: once the socket is open,
    the CONNACK may take only what is left, so the attempt ends within ``timeout`` (not
    ``timeout`` for each).

    ``__aenter__`` is not to be cancelled halfway: that cancels aiomqtt's ``_connected``
    future, which its disconnect callback then reads ("Exception in callback ...
    CancelledError"), and leaves paho's socket, its reader and aiomqtt's housekeeping task
    running. That orphaned connection has the bridge's client id: should the broker answer
    it (a partition heals), it takes over the bridge's session and the broker drops the
    bridge's own newer connection.
    """
    inner = _paho(client)
    deadline = time.monotonic() + timeout
    on_open = inner.on_socket_open

    def socket_opened(paho_client: paho.Client, userdata: Any, sock: Any) -> None:
        # In aiomqtt's executor thread, the TCP connection made: the CONNACK gets the rest.
        client.timeout = max(deadline - time.monotonic(), 0.0)
        if on_open is not None:
            on_open(paho_client, userdata, sock)

    inner.connect_timeout = timeout
    inner.on_socket_open = socket_opened
    client.timeout = timeout
    entering = asyncio.ensure_future(client.__aenter__())
    cancelled = False
    while not entering.done():  # bounded by the deadline above
        try:
            await asyncio.wait({entering})
        except asyncio.CancelledError:
            cancelled = True
    inner.on_socket_open = on_open
    client.timeout = timeout  # for subscribing and disconnecting
    entered = not entering.cancelled() and entering.exception() is None
    if cancelled or not entered:
        await _abandon(client, entered=entered)
        if cancelled:
            raise asyncio.CancelledError
        entering.result()  # raises why it failed


async def _abandon(client: aiomqtt.Client, *, entered: bool) -> None:
    """Close ``client`` after a connection attempt that was given up: through aiomqtt
    (``__aexit__``) if it connected, else through paho, whose connection may be open with
    no CONNACK yet. There paho sends DISCONNECT and closes the socket once it is written,
    and aiomqtt's socket-close callback drops its reader and housekeeping task; aiomqtt's
    disconnect callback is detached first (it has nothing to report for a client that
    never connected). Waits, up to :data:`_CLOSE_WAIT`, for the socket to be closed."""
    if entered:
        await _close(client)
        return
    inner = _paho(client)
    if inner.socket() is not None:
        closed = asyncio.Event()
        on_close = inner.on_socket_close

        def socket_closed(paho_client: paho.Client, userdata: Any, sock: Any) -> None:
            if on_close is not None:
                on_close(paho_client, userdata, sock)
            closed.set()

        inner.on_socket_close = socket_closed
        inner.on_disconnect = None
        if inner.disconnect() == paho.MQTT_ERR_SUCCESS:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await closed.wait()
        if inner.socket() is not None:
            logger.warning("MQTT: a connection attempt given up could not be closed")
    _lost(client)  # a failure the reader saw during the attempt: no news, but read


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client inside ``client`` (for manual acknowledgement; see the module
    docstring)."""
    inner: paho.Client = client._client
    return inner


class MqttBridge(Bridge):
    """Bridges an MQTT broker and a bus (or a gateway).

    Args:
        bus: the bus events go onto and come from.
        url: ``mqtt://[user:password@]host[:port]`` (port 1883 by default).
        subscribe: MQTT topic filters whose messages go onto the bus (QoS 1).
        publish: bus patterns whose events go out to MQTT (QoS 1).
        sink: accept received events through this instead of ``bus`` (a gateway's
            ``accept``); ``publish`` then needs a bus.
        wrap_type: the CloudEvents type of plain (non-CloudEvents) payloads.
        types: take only CloudEvents whose ``type`` matches one of these patterns
            (others are dead-lettered as unknown); ``None`` takes any.
        protocol: ``"5"`` (default) or ``"3.1.1"``.
        structured: send structured-mode CloudEvents on MQTT 5 too.
        client_id: the MQTT client id, which names the persistent session; give a stable
            one so that a restarted bridge gets what the broker kept for it.
        dead_letter: the bus topic of dead letters.
        connect_timeout: how long :meth:`start` waits for the broker (the TCP connection
            and the broker's answer together; an attempt given up is closed before
            :meth:`start` raises, or the bridge tries again).
        publish_timeout: how long one publish waits for its PUBACK before it is retried.
        name: names the durable consumer of ``publish`` (``<name>-out``) and the logs.
    """

    protocol = "MQTT"
    send_errors = (PublishError, PublishOutcomeUnknownError)

    def __init__(
        self,
        bus: Bus | None = None,
        url: str = "mqtt://127.0.0.1:1883",
        *,
        subscribe: Sequence[str] = (),
        publish: Sequence[str] = (),
        sink: Sink | None = None,
        wrap_type: str = "mqtt.message",
        types: Sequence[str] | None = None,
        protocol: Literal["5", "3.1.1"] = "5",
        structured: bool = False,
        client_id: str | None = None,
        dead_letter: str = DEAD_LETTER_TOPIC,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        backoff_limit: float = 5.0,
        name: str = "mqtt",
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError(f"{url!r} is no MQTT URL; write it as mqtt://host:1883")
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol is '5' or '3.1.1', not {protocol!r}")
        super().__init__(bus, name, backoff_limit)
        if publish and bus is None:
            raise TypeError("publishing bus topics to MQTT needs a bus")
        self.host = parts.hostname
        self.port = parts.port or 1883
        self._username = urllib.parse.unquote(parts.username) if parts.username else None
        self._password = urllib.parse.unquote(parts.password) if parts.password else None
        self.url = f"mqtt://{self.host}:{self.port}"
        self.filters = tuple(subscribe)
        for topic_filter in self.filters:
            from_mqtt_filter(topic_filter)
        self.patterns = tuple(validate_pattern(p) for p in publish)
        self.intake: Intake | None = None
        if bus is not None or sink is not None:
            self.intake = Intake(bus, sink=sink, dead_letter=dead_letter, source=self.url)
        elif self.filters:
            raise TypeError("taking MQTT messages in needs a bus or a sink")
        self.wrap_type = wrap_type
        self._types = type_filter(types)
        self.version = protocol
        self.structured = structured or protocol == "3.1.1"
        self.client_id = client_id or f"tidings-{name}-{uuid.uuid4().hex[:12]}"
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self._backoff = Backoff(limit=backoff_limit)
        self._live: aiomqtt.Client | None = None
        self._inbox: _Inbox | None = None  # the live client's queue of received messages
        self._bus_topics: dict[str, str] = {}  # MQTT topic -> bus topic, of those received
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> MqttBridge:
        """Connect, subscribe to the filters and start bridging.

        Raises:
            TransportUnavailableError: the broker did not accept a connection within
                ``connect_timeout``.
        """
        try:
            client = await asyncio.wait_for(self._connect(), self.connect_timeout)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            raise TransportUnavailableError(
                f"the MQTT broker at {self.url} did not accept a connection within "
                f"{self.connect_timeout:g}s ({type(exc).__name__}: {exc}); is it running?",
                servers=(self.url,),
                timeout=self.connect_timeout,
            ) from None
        self._reader = asyncio.create_task(self._run(client), name=f"tidings-{self.name}-in")
        self.subscribe_out(self.patterns)
        return self

    async def aclose(self) -> None:
        """Stop bridging: end the subscriptions out, stop taking messages (those not yet
        acknowledged stay with the broker) and disconnect."""
        self.closing = True
        self.unsubscribe_out()
        reader = self._reader
        if reader is not None:
            reader.cancel()
            # Its end (a connection attempt under way runs to its bounded end first); a
            # cancellation of this caller goes on up, not taken for the reader's.
            await asyncio.wait({reader})
            if not reader.cancelled():
                with contextlib.suppress(Exception):
                    reader.result()
        # The reader reports a loss it saw and drops that client; a client still here lost
        # its connection unseen (the reader was accepting a batch): reported here, once.
        lost = await self._disconnect()
        if lost is not None:
            logger.warning(
                "MQTT bridge %s had lost %s when it closed: %s", self.name, self.url, lost
            )

    @property
    def connected(self) -> bool:
        """Whether the bridge holds a live connection to the broker now (``False`` as soon
        as the client saw it go, before the bridge reconnects)."""
        client = self._live
        return client is not None and _paho(client).is_connected()

    @property
    def address(self) -> str:
        return self.url

    async def _connect(self) -> aiomqtt.Client:
        """A connected client with a persistent session, subscribed to the filters."""
        v5 = self.version == "5"
        persistent = bool(self.filters)  # a session only when there is something to keep
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = _SESSION_EXPIRY if persistent else 0
        made: list[_Inbox] = []
        client = aiomqtt.Client(
            self.host,
            self.port,
            username=self._username,
            password=self._password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else not persistent,
            clean_start=(not persistent) if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            timeout=self.connect_timeout,
            queue_type=_inbox_type(made),
        )
        (inbox,) = made
        _paho(client).manual_ack_set(True)
        await _enter(client, self.connect_timeout)
        try:
            for topic_filter in self.filters:
                await client.subscribe(topic_filter, qos=1)
        except BaseException:
            lost = await _close(client)
            if lost is not None:
                logger.info("MQTT bridge %s: lost %s subscribing: %s", self.name, self.url, lost)
            raise
        self._live = client
        self._inbox = inbox
        self._connected.set()
        return client

    async def _disconnect(self) -> BaseException | None:
        """Disconnect the live client, if any, and return why its connection went, if it
        went unexpectedly (:func:`_close`)."""
        client, self._live = self._live, None
        self._connected.clear()
        return None if client is None else await _close(client)

    async def _run(self, client: aiomqtt.Client) -> None:
        """Take messages until closed, in batches (the messages waiting at once, up to
        :data:`_BATCH`), reconnecting with backoff whenever the connection drops."""
        while not self.closing:
            try:
                inbox = self._inbox
                assert inbox is not None  # set with the live client
                async for message in client.messages:
                    batch = _burst(message, inbox, _paho(client))
                    await self._take(batch)
                    # Accepted: acknowledge them, in the order received.
                    self._acknowledge(client, [(m.mid, m.qos) for m in batch if m.qos > 0])
            except aiomqtt.MqttError as exc:
                logger.warning("MQTT bridge %s lost %s: %s", self.name, self.url, exc)
            except Exception:  # a defect: reconnect, and the broker delivers it again
                logger.exception("MQTT bridge %s failed taking a message", self.name)
            await self._disconnect()
            while not self.closing:
                await self._backoff.sleep()
                try:
                    client = await asyncio.wait_for(self._connect(), self.connect_timeout)
                except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                    logger.info("MQTT bridge %s: reconnecting to %s: %s", self.name, self.url, exc)
                    continue
                self.counts.reconnects += 1
                self._backoff.reset()
                logger.info("MQTT bridge %s reconnected to %s", self.name, self.url)
                break

    # -- in -----------------------------------------------------------------------------------

    def _acknowledge(self, client: aiomqtt.Client, unacked: list[tuple[int, int]]) -> None:
        """PUBACK the accepted messages of ``unacked``, in the order received, on ``client``
        while it is the live client and connected. Each PUBACK paho took for the open
        connection counts in ``acknowledged``; each one not sent (the connection went, or
        paho refused it) counts in ``ack_failed``: the broker delivers its message again
        after the bridge reconnects."""
        sent = 0
        try:
            paho_client = _paho(client)
            if client is self._live and paho_client.is_connected():
                for mid, qos in unacked:
                    if paho_client.ack(mid, qos) != paho.MQTT_ERR_SUCCESS:
                        break
                    sent += 1
        finally:
            self.counts.acknowledged += sent
            failed = len(unacked) - sent
            if failed:
                self.counts.ack_failed += failed
                logger.info(
                    "MQTT bridge %s: %d acknowledgement(s) not sent, the connection to %s "
                    "is gone; the broker delivers those messages again",
                    self.name,
                    failed,
                    self.url,
                )

    async def _take(self, batch: list[aiomqtt.Message]) -> None:
        """Accept (or dead-letter) the messages of ``batch`` together (the caller
        acknowledges them)."""
        self.counts.received += len(batch)
        intake = self.intake
        assert intake is not None  # there are filters or queues only with an intake
        bodies: list[bytes] = []
        decoded: list[Envelope[Any] | MalformedMessageError] = []
        for message in batch:
            payload = message.payload
            body = payload if isinstance(payload, bytes) else str(payload or "").encode()
            bodies.append(body)
            try:
                decoded.append(self._decode(message.topic.value, body, message.properties))
            except MalformedMessageError as exc:
                decoded.append(exc)
        reasons = await self.accept_batch(intake, decoded)
        for message, body, reason in zip(batch, bodies, reasons, strict=True):
            if reason is not None:
                origin = {"mqtt_topic": message.topic.value, "retain": bool(message.retain)}
                letter = dead_letter_data(self.name, reason, origin, body)
                await self.until_done(lambda: intake.reject(letter))  # noqa: B023 - awaited here
                self.counts.dead_lettered += 1

    def _decode(self, topic: str, body: bytes, properties: Properties | None) -> Envelope[Any]:
        bus_topic = self._bus_topics.get(topic)
        if bus_topic is None:
            try:
                bus_topic = from_mqtt_topic(topic)
            except InvalidTopicError as exc:
                raise MalformedMessageError(str(exc)) from None
            if len(self._bus_topics) >= _TOPICS_KEPT:
                self._bus_topics.clear()
            self._bus_topics[topic] = bus_topic
        attributes: dict[str, str] = {}
        content_type: str | None = None
        if properties is not None:
            content_type = getattr(properties, "ContentType", None)
            attributes = dict(getattr(properties, "UserProperty", ()))
        return decode_message(
            topic=bus_topic,
            subject=topic,
            attributes=attributes,
            headers=attributes,  # of a plain payload: its user properties
            content_type=content_type,
            body=body,
            wrap_type=self.wrap_type,
            source=self.url,
            types=self._types,
            sniff_structured=True,
        )

    # -- out ----------------------------------------------------------------------------------

    def encode(self, envelope: Envelope[Any]) -> tuple[bytes, Properties | None]:
        """The payload and (MQTT 5) properties of ``envelope`` (see the module docstring).

        Raises:
            EncodeError, HeaderError: the event cannot travel.
        """
        if self.structured:
            headers, body = to_structured(envelope)
            if self.version == "3.1.1":
                return body, None
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ContentType = headers.pop("content-type")
            if headers:
                properties.UserProperty = list(headers.items())
            return body, properties
        attributes, plain = binary_attributes(envelope)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = attributes.pop("datacontenttype")
        properties.UserProperty = [*attributes.items(), *plain.items()]
        return encode_data(envelope), properties

    async def _live_client(self, envelope: Envelope[Any]) -> aiomqtt.Client:
        """The live client, waiting up to ``publish_timeout`` for a reconnection.

        Raises:
            PublishError: no connection came: ``envelope`` was not sent.
        """
        client = self._live
        if client is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), self.publish_timeout)
            client = self._live
            if client is None:
                raise PublishError(
                    f"the MQTT broker at {self.url} is unreachable: event {envelope.id} "
                    "was not sent",
                    event_id=envelope.id,
                    topic=envelope.topic,
                )
        return client

    async def publish_once(
        self,
        envelope: Envelope[Any],
        encoded: tuple[bytes, Properties | None],
        topic: str | None = None,
    ) -> None:
        """Publish at QoS 1 (on ``topic``, else the event's MQTT topic) and wait for the
        PUBACK.

        Raises:
            PublishError: no connection within ``publish_timeout``: not sent.
            PublishOutcomeUnknownError: sent, but no PUBACK within ``publish_timeout``.
        """
        client = await self._live_client(envelope)
        body, properties = encoded
        try:
            await client.publish(
                topic or to_mqtt_topic(envelope.topic),
                body,
                qos=1,
                properties=properties,
                timeout=self.publish_timeout,
            )
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise PublishOutcomeUnknownError(
                f"publishing event {envelope.id} to the MQTT broker at {self.url} got no "
                f"PUBACK ({type(exc).__name__}: {exc}); it may or may not be there",
                event_id=envelope.id,
                topic=envelope.topic,
            ) from None

    async def publish(self, envelope: Envelope[Any], topic: str | None = None) -> None:
        """Publish ``envelope`` to MQTT once (on ``topic``, else its own mapped) and wait for
        the broker's PUBACK (a gateway's ``mqtt`` target calls this).

        Raises:
            PublishError: the broker was unreachable for ``publish_timeout``: not sent.
            PublishOutcomeUnknownError: sent, but no PUBACK within ``publish_timeout``.
            TransportClosedError: the bridge is closed.
        """
        if self.closing:
            raise TransportClosedError(f"the MQTT bridge {self.name} is closed")
        try:
            await self.publish_once(envelope, self.encode(envelope), topic)
        except (PublishError, PublishOutcomeUnknownError):
            self.counts.publish_failed += 1
            raise
        self.counts.published += 1

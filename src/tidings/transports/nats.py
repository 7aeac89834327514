"""The NATS JetStream transport (``pip install 'tidings[nats]'``).

Topics map one to one to subjects under a prefix (``orders.placed`` travels on
``tidings.orders.placed``); one stream captures them and the dead letters. The wire format,
CloudEvents 1.0 in binary mode over NATS headers, is documented in
:mod:`tidings.transports.wire` and ``docs/wire-format.md``.

Publishing: every publish carries ``Nats-Msg-Id`` = the event id, so the server drops a
duplicate within the stream's duplicate window (``StreamSettings.duplicate_window``) and
retrying is safe. :meth:`publish` waits for the server's ack; :meth:`send` pipelines, with at
most ``window`` publishes unacknowledged, held in publish order by the transport until
acked. After ``publish_timeout`` a publish is reported as failed: raised by :meth:`publish`,
or given to ``on_publish_error`` (logged by default) and set on the future by :meth:`send`;
publishes that time out are reported in publish order.

Publish order: publishes are written to the connection in publish order, and only while it
is up; nats-py's reconnect buffer never holds one (what it has not written yet is taken
back when the connection breaks). On a halt (disconnected; an answer "not stored", as while
a stream elects a leader; or an ack later than ``ack_timeout``) writing stops, and once
connected the oldest unacknowledged publish is sent alone until the stream stores it (or
says it had), then the others in publish order, then new ones. So one transport's events
are stored in publish order through reconnects, restarts and failovers. Not covered: a
publish lost past the server (its ack times out) while later ones on the same connection
are stored; it is stored after them.

Failures mean what they say: :class:`~tidings.PublishError` when no copy can have been
stored (none reached a server, each was answered "not stored", or the server refused it;
what the client had not written is taken back first); else
:class:`~tidings.PublishOutcomeUnknownError`, whose ``envelope`` published again within the
duplicate window is stored once.

Consuming: a subscription is a JetStream pull consumer with explicit acks. Without a group
each subscription has its own consumer (deleted when it ends, or by the server after
``inactive_threshold`` when its process died), so every process gets every event. With
``group="name"`` the subscriptions of all processes share one durable consumer, replicated
like the stream: competing consumers. With ``DeliveryPolicy(exclusive=True)`` that consumer
uses JetStream's ``pinned_client`` priority policy (nats-server 2.11+): the server delivers
to one process at a time, pull requests name the priority group ``tidings`` and carry the
``Nats-Pin-Id`` they were given, a process closing cleanly unpins at once, and a silent one
loses the pin after ``takeover``. The delivery policy (ack after success, nak with
exponential backoff, dead letters after ``max_deliver``, heartbeats, bounded prefetch, order
per key) is :mod:`tidings.transports.base`'s. The server never stops redelivering on its own
(``max_deliver=-1`` on the consumer): giving up is always a stored dead letter, never a
silent drop.

Resilience: the client reconnects forever (every server of the cluster is tried); fetching
resumes after a reconnect; a consumer lost with its server is recreated, an ungrouped one
from the sequence after the last one it saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client as _NatsClient
    from nats.aio.msg import Msg as _NatsMsg
    from nats.js import api as _api
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tidings.transports.nats needs nats-py: install it with pip install 'tidings[nats]'"
    ) from exc

import contextlib

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.exceptions import (
    InvalidTransportURLError,
    PublishError,
    PublishOutcomeUnknownError,
    StreamConfigError,
    TransportError,
    TransportUnavailableError,
)
from tidings.observability.logs import log_fields
from tidings.topics import validate_topic
from tidings.transports._checked import CheckedEncodings
from tidings.transports._common import (
    ClientTransport,
    Subjects,
    check_group_name,
    check_group_policy,
    dead_letter_message,
    quietly,
    report_publish_error,
)
from tidings.transports._consumer import Consumer
from tidings.transports.base import (
    DeliveryPolicy,
    MessageHandler,
    PublishAck,
    PublishErrorHook,
    TransportFeatures,
    TransportHealth,
)
from tidings.transports.wire import encode_envelope

__all__ = ("NatsTransport", "StreamSettings")

logger = logging.getLogger("tidings.transports.nats")
_T = TypeVar("_T")

_PRIORITY_GROUP = "tidings"
"""The priority group of exclusive consumers' pull requests (NATS 2.11 pinned clients)."""
_PIN_ID = "Nats-Pin-Id"
_MAX_BATCH = re.compile(r"Exceeded MaxRequestBatch of (\d+)")


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """The JetStream stream the transport creates, or checks when it exists.

    Attributes:
        name: the stream's name.
        retention: ``"limits"`` (keep until the limits below; every group and process can
            read), ``"interest"`` (drop once every consumer acked) or ``"workqueue"``
            (drop once acked; allows one group per subject).
        replicas: copies kept in a cluster (1, 3 or 5; 3 survives one dead node).
        storage: ``"file"`` (survives restarts) or ``"memory"``.
        duplicate_window: seconds during which a repeated ``Nats-Msg-Id`` is dropped.
        max_age: seconds to keep events (``None``: no limit).
        max_bytes: bytes to keep (``None``: no limit).
        create: create the stream when it is missing; ``False`` requires it to exist.
    """

    name: str = "TIDINGS"
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    replicas: int = 1
    storage: Literal["file", "memory"] = "file"
    duplicate_window: float = 120.0
    max_age: float | None = None
    max_bytes: int | None = None
    create: bool = True


class _Ack(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class _Pending:
    """One unacknowledged publish."""

    __slots__ = (
        "body",
        "deadline",
        "envelope",
        "event_id",
        "future",
        "headers",
        "number",
        "report",
        "resend_at",
        "subject",
        "unanswered",
    )

    def __init__(
        self,
        subject: str,
        headers: Any,
        body: bytes,
        envelope: Envelope[Any] | None,
        future: asyncio.Future[PublishAck],
        deadline: float,
        resend_at: float,
        report: bool,
    ) -> None:
        self.subject = subject
        self.headers = headers
        self.event_id = "?"
        self.body = body
        self.envelope = envelope
        self.future = future
        self.deadline = deadline
        self.resend_at = resend_at
        self.report = report
        self.number = 0
        """Its place in publish order (the token's number)."""
        self.unanswered = 0
        """Copies handed to a connection and neither answered "not stored" nor taken back
        from the client's buffer: while 0, the server cannot have stored it."""


_HEADER_LINE = re.compile(rb"^[ \t]*([!-9;-~]+)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.MULTILINE)


def _parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's header parser, same results for well-formed headers, in one regex pass.

    Lines whose name is empty, holds whitespace or is not ASCII are skipped, as nats-py does.
    """
    return {
        name.decode("ascii"): value.decode("utf-8", "replace")
        for name, value in _HEADER_LINE.findall(raw)
    }


class _HeaderBlock(bytes):
    """Headers already in NATS wire form: ``NATS/1.0``, ``Name: value`` lines, a blank line."""

    __slots__ = ()


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


def _header_block(headers: dict[str, str]) -> _HeaderBlock:
    """``headers`` encoded once, as nats-py would (newlines in values become spaces).

    Raises:
        ValueError: if a header name is not a valid NATS header name.
    """
    lines = ["NATS/1.0"]
    for name, value in headers.items():
        if _HEADER_NAME.fullmatch(name) is None:
            raise ValueError(f"{name!r} is not a valid NATS header name")
        if "\r" in value or "\n" in value:
            value = value.translate(_NEWLINES)
        lines.append(f"{name}: {value.strip()}")
    lines.append("\r\n")
    return _HeaderBlock("\r\n".join(lines).encode())


class _Client(_NatsClient):
    """The nats-py client, faster at what tidings does most: headers.

    It parses headers in one regex pass, and sends a :class:`_HeaderBlock` as it is, where
    nats-py would check, clean and encode every header of every publish (and re-sends).
    """

    _parse_header_lines = staticmethod(_parse_header_lines)

    def take_back(self, inbox: str, token: str | None = None) -> list[str]:
        """Remove from the client's outgoing buffer (written to no socket yet, and flushed
        first after a reconnect) every publish whose reply subject is ``<inbox>.<token>``
        (any token if ``None``); return their reply subjects, in order."""
        prefix = f"{inbox}.".encode()
        exact = None if token is None else prefix + token.encode()
        kept: list[bytes] = []
        taken: list[str] = []
        for command in self._pending:
            reply = _publish_reply(command)
            if reply is not None and (reply == exact if exact else reply.startswith(prefix)):
                taken.append(reply.decode())
            else:
                kept.append(command)
        if taken:
            self._pending = kept
            self._pending_data_size = sum(len(command) for command in kept)
        return taken

    async def _send_publish(
        self, subject: str, reply: str, payload: bytes, payload_size: int, headers: Any
    ) -> None:
        if type(headers) is not _HeaderBlock:
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(_hpub(subject, reply, headers, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()


def _publish_reply(command: bytes) -> bytes | None:
    """The reply subject of a ``PUB``/``HPUB`` protocol command, else ``None``."""
    if not command.startswith((b"HPUB ", b"PUB ")):
        return None
    fields = command[: command.find(b"\r\n")].split(b" ")
    wanted = 5 if command.startswith(b"H") else 4  # verb subject reply [hsize] size
    return fields[2] if len(fields) == wanted else None


def _hpub(subject: str, reply: str, headers: bytes, payload: bytes) -> bytes:
    size = len(headers)
    return b"".join(
        (
            f"HPUB {subject} {reply} {size} {size + len(payload)}\r\n".encode(),
            headers,
            payload,
            b"\r\n",
        )
    )


# The fast path relies on nats-py's private _send_publish; fall back to nats-py's own
# header handling if a future version changes its shape.
_FAST_HEADERS = list(inspect.signature(_NatsClient._send_publish).parameters) == [
    "self",
    "subject",
    "reply",
    "payload",
    "payload_size",
    "headers",
] and all(hasattr(_NatsClient, name) for name in ("_send_command", "_flush_pending"))


@dataclass
class _PinnedConsumerConfig(_api.ConsumerConfig):
    """A consumer config with NATS 2.11's priority group fields, which nats-py lacks."""

    priority_groups: list[str] | None = None
    priority_policy: str | None = None
    priority_timeout: int | None = None  # nanoseconds


class _Puller:
    """Keeps one pull request outstanding on a consumer and buffers what it brings.

    JetStream delivers the messages of a pull request with their own subjects, but its
    status replies (408 expired, 409 leadership change or consumer deleted, 503 no
    consumer) to the request's reply subject: with one request at a time, each its own
    reply subject, every message and status is accounted for. ``requested + buffered``
    never exceeds the ``batch`` asked for by :meth:`fetch`, which the consumer sizes to its
    free prefetch slots. The request lingers on the server until filled or expired, so
    events flow as soon as they are published.

    A request is written only while the client is connected, and one still in the client's
    outgoing buffer when the connection breaks is taken back (:meth:`disconnected`): so a
    request outstanding at a reconnect went out either on the new connection (it is live:
    it stays the current one) or on the old one. After a reconnect (:meth:`reconnected`)
    a request of the old connection may live on (the same server came back) or be gone:
    requests go out from a new inbox at once (:meth:`reset`), and the messages the old
    inbox still receives are nak'd as they come (redelivered after ``_STALE_NAK_DELAY``,
    not into the open request at once), so this process never holds more than ``batch``
    messages. A request written in the reconnect window must never be taken for such an
    old one: its messages would be nak'd and come back after later events of their keys.

    A stream message is told from a status reply by its reply subject (``$JS.ACK....``),
    never by its headers or body: anyone allowed to publish on a tidings subject can store
    an empty message with a ``Status`` header, and it is an event like any other.
    """

    def __init__(
        self, nc: _NatsClient, stream: str, consumer: str, expires: float, *, pinned: bool
    ) -> None:
        self._nc = nc
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._pinned = pinned
        self.pin: str | None = None
        """With ``pinned``: the id the server pinned this puller with (``Nats-Pin-Id``)."""
        self._expires_ns = int(expires * 1e9)
        self._grace = expires + 2.0
        self._inbox = ""
        self._cut = 0
        self._ids = itertools.count(1)
        self._current: str | None = None
        self._sent_on = -1  # the client's reconnect count when the current request went out
        self._remaining = 0
        self._deadline = 0.0
        self._buffer: deque[_NatsMsg] = deque()
        self._arrived = asyncio.Event()
        self._sub: Any = None
        self._stale: dict[Any, float] = {}  # old inbox subscriptions -> when to drop them
        self._refusals = 0  # requests the server refused in a row (400, 409, ...)
        self._max_batch = 1 << 30  # lowered when the server names its max_request_batch
        self._pause_until = 0.0  # no new request before this loop time
        self.lost = False
        self.on_given_back: Callable[[_NatsMsg], None] | None = None
        """Told of each message nak'd unseen (from a stale inbox), before its nak."""

    async def start(self) -> None:
        await self._listen()

    async def _listen(self) -> None:
        """Subscribe a new inbox; the previous one's messages are nak'd from now on."""
        inbox = self._nc.new_inbox()
        sub: Any = None

        async def on_msg(msg: _NatsMsg) -> None:
            if sub is self._sub:
                await self._on_msg(msg)
            else:
                await self._on_stale(sub, msg)

        sub = await self._nc.subscribe(f"{inbox}.*", cb=on_msg)
        self._sub, self._inbox, self._cut = sub, inbox, len(inbox) + 1

    async def stop(self) -> None:
        """Unsubscribe and give back what was fetched but never handed over."""
        for sub in (self._sub, *self._stale):
            if sub is not None:
                await quietly(sub.unsubscribe())
        self._stale.clear()
        while self._buffer:
            await quietly(self._buffer.popleft().nak())

    def held(self) -> list[_NatsMsg]:
        """The messages fetched but not handed over yet (they need heartbeats too)."""
        return list(self._buffer)

    def disconnected(self) -> None:
        """The connection broke: take the current request back if the client has not
        written it yet (it would reach the next server after the reconnect, live, while
        :meth:`reconnected` could not tell it from one written to the broken connection)."""
        nc = self._nc
        current = self._current
        if current is not None and isinstance(nc, _Client) and nc.take_back(self._inbox, current):
            self._current = None

    async def reconnected(self) -> None:
        """The client reconnected: a request written on this connection is live and stays
        the current one; one written on the previous connection is left behind
        (:meth:`reset`)."""
        if self._current is not None and self._sent_on == self._nc.stats["reconnects"]:
            self._arrived.set()
            return
        await self.reset()

    async def reset(self) -> None:
        """Start requesting afresh (after a reconnect, or with a recreated consumer).

        An outstanding request moves to the stale ones (see the class docstring) until it
        ends or its deadline passes; if no new inbox can be subscribed now, it keeps
        counting as outstanding until then.
        """
        if self._current is not None:
            old, deadline = self._sub, self._deadline
            try:
                await self._listen()
            except Exception as exc:
                logger.debug("no new pull inbox (%r); keeping the old request", exc)
                return
            self._stale[old] = deadline
            self._current = None
        self._arrived.set()

    async def _on_stale(self, sub: Any, msg: _NatsMsg) -> None:
        if not _is_stream_message(msg):
            status = _status(msg)
            if status not in (None, "100") and self._stale.pop(sub, None) is not None:
                await quietly(sub.unsubscribe())  # the old request ended
            return
        # Beyond this process's budget: the server redelivers it, after a delay, so that it
        # does not come straight back into the open request.
        if self.on_given_back is not None:
            self.on_given_back(msg)
        await quietly(msg.nak(delay=_STALE_NAK_DELAY))

    async def _on_msg(self, msg: _NatsMsg) -> None:
        headers = msg.headers
        if not _is_stream_message(msg):
            status = _status(msg)
            if status is None:
                logger.debug("ignored a message on pull inbox %s: no status", msg.subject)
                return
            if status == "100":
                return  # idle heartbeat
            description = (headers or {}).get("Description", "")
            current = msg.subject[self._cut :] == self._current
            if current:
                self._current = None
            if status == "423":
                self.pin = None  # another process holds the group now: ask unpinned
            elif status in ("404", "408"):  # ended without messages: nothing wrong
                if current:
                    self._refusals = 0
            elif current:  # refused (400, 409, 503...): back off
                self._refused(status, description)
            if status == "503" or "Deleted" in description:
                self.lost = True
            self._arrived.set()
            return
        self._refusals = 0
        if self._current is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self._current = None
        if self._pinned and headers:
            self.pin = headers.get(_PIN_ID, self.pin)
        self._buffer.append(msg)
        self._arrived.set()

    def _refused(self, status: str, description: str) -> None:
        """Pause requests after a refusal (0.1 s, doubling to 2 s); obey a server limit on
        the batch size; warn when refusals go on."""
        self._refusals += 1
        delay = min(0.05 * 2 ** min(self._refusals, 6), 2.0)
        self._pause_until = asyncio.get_running_loop().time() + delay
        limit = _MAX_BATCH.search(description)
        if limit is not None:
            self._max_batch = max(1, int(limit.group(1)))
        level = logging.WARNING if self._refusals == 5 else logging.DEBUG
        logger.log(
            level,
            "pull requests on %s refused %d time(s) in a row: %s %s; next in %.2fs",
            self._next,
            self._refusals,
            status,
            description,
            delay,
            extra=log_fields(),
        )

    async def fetch(self, batch: int, timeout: float) -> list[_NatsMsg]:
        now = asyncio.get_running_loop().time()
        if self._current is not None and now >= self._deadline:
            self._current = None  # the server forgot it (restart, lost reply)
        for sub, deadline in list(self._stale.items()):
            if now >= deadline:
                del self._stale[sub]
                await quietly(sub.unsubscribe())
        buffer = self._buffer
        if self._current is None and now < self._pause_until and not buffer:
            await asyncio.sleep(min(self._pause_until - now, timeout))
            return []
        if self._current is None and not self._nc.is_connected and not buffer:
            # Not into the reconnect buffer (see the class docstring); reconnected() wakes.
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
            return []
        if self._current is None and now >= self._pause_until and self._nc.is_connected:
            want = min(batch, self._max_batch) - len(buffer)
            if want > 0:
                rid = str(next(self._ids))
                self._current, self._remaining, self._deadline = rid, want, now + self._grace
                self._sent_on = self._nc.stats["reconnects"]
                body = b'{"batch":%d,"expires":%d' % (want, self._expires_ns)
                if self._pinned:
                    body += b',"group":"%s"' % _PRIORITY_GROUP.encode()
                    if self.pin is not None:
                        body += b',"id":"%s"' % self.pin.encode()
                body += b"}"
                await self._nc.publish(self._next, body, reply=f"{self._inbox}.{rid}")
        if not buffer:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return []
        count = min(batch, len(buffer))
        return [buffer.popleft() for _ in range(count)]


_STALE_NAK_DELAY = 1.0
"""Seconds before the server redelivers a message that reached a stale pull inbox."""


def _is_stream_message(msg: _NatsMsg) -> bool:
    """Whether ``msg`` is a message of the stream (whatever its headers and body): only those
    carry a ``$JS.ACK.`` reply subject; the server's status replies to a pull request carry
    none. A client that publishes an empty body with a ``Status`` header on a tidings
    subject makes a stream message, never a status."""
    return msg.reply.startswith("$JS.ACK.")


def _status(msg: _NatsMsg) -> str | None:
    """The status code of a pull request's status reply (``"408"``...), or ``None``."""
    headers = msg.headers
    return headers.get("Status") if headers else None


def _meta(msg: Any) -> tuple[int, int]:
    """``(delivery attempt, stream sequence)`` from a JetStream reply subject."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[4]), int(tokens[5])
    if len(tokens) >= 11:  # $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>...
        return int(tokens[6]), int(tokens[7])
    return 1, 0


def _header_size(headers: Mapping[str, str]) -> int:
    """The size of ``headers`` in a NATS message (``NATS/1.0`` line, one line per header)."""
    return 12 + sum(len(name) + len(value) + 4 for name, value in headers.items())


_NATS_SCHEMES = ("nats", "tls", "ws", "wss")


def _checked_servers(servers: str | Sequence[str]) -> tuple[str, ...]:
    """The server URLs, each checked to be a NATS URL (so a typo fails here, at once, not
    as an unreachable server after the connect timeout)."""
    urls = (servers,) if isinstance(servers, str) else tuple(servers)
    if not urls:
        raise InvalidTransportURLError(
            "no NATS server URL given; use nats://host:4222", url=repr(servers)
        )
    for url in urls:
        if not isinstance(url, str):
            raise InvalidTransportURLError(
                f"a NATS server URL is a str, not {type(url).__name__}", url=repr(url)
            )
        problem = None
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            problem = str(exc)
        else:
            if "://" not in url or not parts.scheme:
                problem = "it names no scheme"
            elif parts.scheme.lower() not in _NATS_SCHEMES:
                problem = f"{parts.scheme}:// is not a NATS scheme ({', '.join(_NATS_SCHEMES)})"
            elif not parts.hostname:
                problem = "it names no host"
        if problem is not None:
            raise InvalidTransportURLError(
                f"malformed NATS server URL {url!r}: {problem}; use nats://host:4222",
                url=url,
            )
    return urls


class NatsTransport(ClientTransport):
    """Events over NATS JetStream. See the module docstring for the guarantees.

    Args:
        servers: one URL or several (a cluster), e.g. ``"nats://127.0.0.1:4222"``
            (schemes ``nats``, ``tls``, ``ws``, ``wss``); a malformed one raises
            :class:`~tidings.exceptions.InvalidTransportURLError` here, before connecting.
        prefix: subjects are ``<prefix>.<topic>``.
        dead_letter_prefix: dead letters go to ``<dead_letter_prefix>.<topic>``
            (default ``<prefix>-dead``); the stream captures both.
        stream: the stream's settings (created or checked at start).
        policy: the default delivery policy of subscriptions.
        clock: merges the times of received events (receive rule); a new one by default.
        structured: publish JSON CloudEvents bodies instead of binary mode.
        window: the most pipelined publishes awaiting their ack (see :meth:`send`).
        connect_timeout: seconds :meth:`start` may take to reach a server and prepare the
            stream before it raises :class:`~tidings.TransportUnavailableError`.
        ack_timeout: seconds to wait for a publish's ack before halting and re-sending the
            unacknowledged publishes in order (see the module docstring).
        publish_timeout: seconds to keep re-sending before a publish fails (with
            :class:`~tidings.PublishError` or :class:`~tidings.PublishOutcomeUnknownError`).
        max_ack_pending: the most unacknowledged events the server hands out per consumer
            (across a group's processes); ``prefetch`` bounds each process.
        inactive_threshold: seconds after which the server deletes the consumer of an
            ungrouped subscription whose process is gone.
        on_publish_error: told of every failed :meth:`send`; failures are logged if unset.
        name: the client name shown in the server's monitoring.

    Raises:
        ValueError: if a prefix or number is invalid.
    """

    system = "nats"
    features = TransportFeatures(persistent=True)

    def _meta(self, raw: Any) -> tuple[int, int]:
        return _meta(raw)

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "tidings",
        dead_letter_prefix: str | None = None,
        stream: StreamSettings | None = None,
        policy: DeliveryPolicy | None = None,
        clock: HybridClock | None = None,
        structured: bool = False,
        window: int = 1024,
        connect_timeout: float = 5.0,
        ack_timeout: float = 2.0,
        publish_timeout: float = 30.0,
        max_ack_pending: int = 20_000,
        inactive_threshold: float = 60.0,
        on_publish_error: PublishErrorHook | None = None,
        name: str | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window!r}")
        for label, value in (
            ("connect_timeout", connect_timeout),
            ("ack_timeout", ack_timeout),
            ("publish_timeout", publish_timeout),
            ("inactive_threshold", inactive_threshold),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be a positive number of seconds, not {value!r}")
        self.servers = _checked_servers(servers)
        self.subjects = Subjects(prefix, dead_letter_prefix)
        self.stream = stream if stream is not None else StreamSettings()
        self.stream_name = self.stream.name
        self.policy = policy if policy is not None else DeliveryPolicy()
        self.clock = clock if clock is not None else HybridClock()
        self.structured = structured
        self.window = window
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.publish_timeout = publish_timeout
        self._api_timeout = max(ack_timeout, 1.0)  # one JetStream API request
        self.max_ack_pending = max_ack_pending
        self.inactive_threshold = inactive_threshold
        self.on_publish_error = on_publish_error
        self.name = name
        self._nc: _NatsClient | None = None
        self._js: Any = None
        self._state: Literal["new", "started", "closing", "closed"] = "new"
        self._inbox = ""
        self._cut = 0
        self._tokens = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._slots: asyncio.Semaphore | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._failed = 0
        self._sweeper: asyncio.Task[None] | None = None
        # The ordered window (see "Publish order" in the module docstring): while not
        # flowing, publishes wait in ``_pending`` and ``_resync`` sends them in order.
        self._flowing = True
        self._breaks = 0  # halts so far: a resync round seeing it change starts over
        self._resyncer: asyncio.Task[None] | None = None
        self._probe: str | None = None
        self._probe_answered = asyncio.Event()
        self._subs: list[Consumer] = []
        # Encodings check_envelope made, by the envelope's identity: send() and publish()
        # take them (one encode per publish); one never taken (a failed append) is dropped
        # after a while (see CheckedEncodings); emptied on close.
        self._encoded: CheckedEncodings[tuple[dict[str, str], bytes]] = CheckedEncodings(window)
        self._pullers: set[_Puller] = set()
        # what health() reports: the server last connected to, the last connection problem
        self._last_server: str | None = None
        self._last_error: tuple[str, float] | None = None
        self._disconnects = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if not self._needs_start():
            return
        nc = _Client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        try:
            await asyncio.wait_for(
                nc.connect(
                    list(self.servers),
                    name=self.name,
                    connect_timeout=max(1, int(self.connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,  # type: ignore[arg-type]
                    skip_subject_validation=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self.connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await quietly(nc.close())
            raise TransportUnavailableError(
                f"cannot reach NATS at {', '.join(self.servers)} within "
                f"{self.connect_timeout:g}s ({type(exc).__name__}: {exc}); check that "
                "nats-server runs with JetStream (-js) and the URL, or raise connect_timeout",
                servers=self.servers,
                timeout=self.connect_timeout,
            ) from exc
        self._nc = nc
        self._note_server()
        self._js = nc.jetstream(timeout=self._api_timeout)
        try:
            await self._ensure_stream(deadline)
        except BaseException:
            await quietly(nc.close())
            self._nc = None
            raise
        self._inbox = nc.new_inbox()
        self._cut = len(self._inbox) + 1
        await nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        self._slots = asyncio.Semaphore(self.window)
        self._sweeper = asyncio.create_task(self._sweep(), name="tidings:nats:publish-retry")
        self._state = "started"

    async def _ensure_stream(self, deadline: float) -> None:
        settings = self.stream
        subjects = self.subjects.stream_subjects()

        async def stream_info() -> Any:
            try:
                return await self._js.stream_info(settings.name)
            except nats.js.errors.NotFoundError:
                return None

        # Timeouts here mostly mean JetStream is still electing leaders (a cluster that
        # just started); ``_jetstream_call`` retries them until the deadline.
        info = await self._jetstream_call(
            stream_info, deadline, "JetStream did not answer; is it enabled (-js)?"
        )
        if info is not None:
            self._check_stream(info.config, subjects)
            return
        if not settings.create:
            raise StreamConfigError(
                f"stream {settings.name!r} does not exist and create=False",
                stream=settings.name,
                differences=("stream: missing",),
            )
        try:
            await self._jetstream_call(
                lambda: self._js.add_stream(
                    _api.StreamConfig(
                        name=settings.name,
                        subjects=subjects,
                        retention=_api.RetentionPolicy(settings.retention),
                        storage=_api.StorageType(settings.storage),
                        num_replicas=settings.replicas,
                        duplicate_window=settings.duplicate_window,
                        max_age=settings.max_age,
                        max_bytes=settings.max_bytes,
                    )
                ),
                deadline,
                f"could not create stream {settings.name!r}",
            )
        except nats.js.errors.BadRequestError as exc:
            raise StreamConfigError(
                f"cannot create stream {settings.name!r}: {exc.description}",
                stream=settings.name,
                differences=(str(exc.description),),
            ) from exc

    async def _jetstream_call(
        self, call: Callable[[], Awaitable[_T]], deadline: float, failure: str
    ) -> _T:
        """Run an idempotent JetStream API request, retrying while JetStream is unavailable.

        A request that times out or finds JetStream unavailable (a leader election, a
        replicated asset still being placed, a loaded machine) is sent again every 0.1 s
        until ``deadline`` (event-loop time); then :class:`TransportUnavailableError`
        says ``failure``. Other errors propagate at once.
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await call()
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError) as exc:
                if loop.time() >= deadline:
                    raise TransportUnavailableError(
                        f"{failure} (servers {', '.join(self.servers)}; gave up after "
                        f"connect_timeout={self.connect_timeout:g}s: {type(exc).__name__}"
                        f"{_detail(exc)})",
                        servers=self.servers,
                        timeout=self.connect_timeout,
                    ) from exc
                await asyncio.sleep(0.1)

    def _check_stream(self, config: Any, subjects: list[str]) -> None:
        settings = self.stream
        found = {
            "retention": str(getattr(config.retention, "value", config.retention)),
            "storage": str(getattr(config.storage, "value", config.storage)),
            "replicas": config.num_replicas or 1,
            "duplicate_window": float(config.duplicate_window or 0),
        }
        wanted = {
            "retention": settings.retention,
            "storage": settings.storage,
            "replicas": settings.replicas,
            "duplicate_window": float(settings.duplicate_window),
        }
        differences = [
            f"{key}: server has {found[key]!r}, configured {wanted[key]!r}"
            for key in wanted
            if found[key] != wanted[key]
        ]
        missing = [s for s in subjects if s not in (config.subjects or [])]
        if missing:
            differences.append(f"subjects: server has {config.subjects!r}, missing {missing!r}")
        if differences:
            raise StreamConfigError(
                f"stream {settings.name!r} exists with other settings: "
                + "; ".join(differences)
                + ". Align StreamSettings with it, or update the stream (nats stream edit)",
                stream=settings.name,
                differences=tuple(differences),
            )

    async def aclose(self, timeout: float = 10.0) -> None:
        deadline = await self._begin_close(timeout)
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        for task in (self._sweeper, self._resyncer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for token in list(self._pending):
            self._fail(token, "the transport closed before the server acknowledged it")
        nc = self._nc
        if nc is not None:
            await quietly(asyncio.wait_for(nc.flush(), max(deadline - loop.time(), 0.1)))
            await quietly(nc.close())
        self._encoded.clear()
        self._state = "closed"

    @property
    def connected(self) -> bool:
        """Whether the client is connected to a server right now."""
        return self._nc is not None and self._nc.is_connected

    @property
    def server(self) -> tuple[str, int] | None:
        """The host and port of the NATS server connected to right now (``None`` if none)."""
        nc = self._nc
        url = nc.connected_url if nc is not None and nc.is_connected else None
        if url is None or url.hostname is None:
            return None
        return url.hostname, url.port if url.port is not None else 4222

    @property
    def client_id(self) -> str | None:
        """The client id the connected NATS server gave this connection (``None`` if none)."""
        nc = self._nc
        client_id = nc.client_id if nc is not None and nc.is_connected else None
        return None if client_id is None else str(client_id)

    def health(self) -> TransportHealth:
        """Connected, reconnecting or disconnected; the server (no credentials); the last
        connection error; publishes awaiting the server's ack (see :class:`TransportHealth`)."""
        nc = self._nc
        state: Literal["connected", "reconnecting", "disconnected"]
        if self._state != "started" or nc is None or nc.is_closed:
            state = "disconnected"
        elif nc.is_connected:
            state = "connected"
        else:
            state = "reconnecting"
        error, at = self._last_error if self._last_error is not None else (None, None)
        return TransportHealth(
            state=state,
            server=self._last_server,
            last_error=error,
            last_error_at=at,
            pending=len(self._pending),
            disconnects=self._disconnects,
        )

    def _note_server(self) -> None:
        nc = self._nc
        url = nc.connected_url if nc is not None else None
        if url is not None and url.hostname is not None:
            port = url.port if url.port is not None else 4222
            self._last_server = f"{url.scheme}://{url.hostname}:{port}"

    def _note_error(self, what: str) -> None:
        self._last_error = (what, time.time())

    async def _on_error(self, exc: Exception) -> None:
        logger.debug("nats client error: %r", exc, extra=log_fields())
        self._note_error(f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def _on_disconnected(self) -> None:
        if self._state == "started":
            logger.warning("disconnected from NATS; reconnecting", extra=log_fields())
            self._disconnects += 1
            self._note_error(f"disconnected from {self._last_server or 'the server'}")
        for puller in list(self._pullers):
            puller.disconnected()
        self._halt("disconnected")

    async def _on_reconnected(self) -> None:
        self._note_server()
        nc = self._nc
        url = nc.connected_url.netloc if nc is not None and nc.connected_url else "?"
        logger.warning("reconnected to NATS at %s", url, extra=log_fields())
        for puller in list(self._pullers):
            await puller.reconnected()  # an older request may live on, or have died

    def _client(self) -> _NatsClient:
        if self._state not in ("started", "closing") or self._nc is None:
            raise self._closed_error()
        return self._nc

    # ------------------------------------------------------------------ publishing

    async def publish(self, envelope: Envelope[Any]) -> PublishAck:
        headers, body = self._encoding(envelope)
        future = await self._send(
            self.subjects.subject(envelope.topic), headers, body, envelope, report=False
        )
        return await future

    def check_envelope(self, envelope: Envelope[Any]) -> None:
        nc = self._nc
        if nc is None:
            return
        limit = nc.max_payload
        headers, body = encode_envelope(envelope, structured=self.structured)
        size = len(body) + _header_size(headers)
        if size > limit:
            raise PublishError(
                f"event {envelope.id} on {envelope.topic!r} was not published: it is "
                f"{size:,} bytes on the wire, above the server's max_payload of {limit:,} "
                "bytes; send less (store large data elsewhere and publish a reference to it) "
                "or raise max_payload in the server's configuration",
                event_id=envelope.id,
                topic=envelope.topic,
            )
        if self._state in ("started", "closing"):  # else no publish would take it
            self._encoded.keep(envelope, (headers, body))

    def _encoding(self, envelope: Envelope[Any]) -> tuple[dict[str, str], bytes]:
        """``envelope``'s headers and body: as :meth:`check_envelope` encoded them, else now."""
        encoded = self._encoded.take(envelope)
        if encoded is None:
            return encode_envelope(envelope, structured=self.structured)
        return encoded

    async def send(self, envelope: Envelope[Any]) -> asyncio.Future[PublishAck]:
        headers, body = self._encoding(envelope)
        return await self._send(
            self.subjects.subject(envelope.topic), headers, body, envelope, report=True
        )

    async def publish_raw(
        self, topic: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> PublishAck:
        subject = self.subjects.subject(validate_topic(topic))
        future = await self._send(subject, dict(headers or {}), body, None, report=False)
        return await future

    async def _send(
        self,
        subject: str,
        headers: dict[str, str],
        body: bytes,
        envelope: Envelope[Any] | None,
        *,
        report: bool,
    ) -> asyncio.Future[PublishAck]:
        nc = self._client()
        wire: Any = _header_block(headers) if _FAST_HEADERS else headers
        slots = self._slots
        assert slots is not None
        await slots.acquire()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[PublishAck] = loop.create_future()
        number = next(self._tokens)
        token = str(number)
        now = loop.time()
        self._pending[token] = pending = _Pending(
            subject,
            wire,
            body,
            envelope,
            future,
            now + self.publish_timeout,
            now + self.ack_timeout,
            report,
        )
        pending.number = number
        if envelope is None:
            pending.event_id = headers.get("Nats-Msg-Id", "?")
        self._idle.clear()
        if self._flowing:
            if nc.is_connected:
                await self._write(nc, token, pending)
            else:  # the client lost its connection and has not told us yet
                self._halt("not connected")
        return future

    async def _write(self, nc: _NatsClient, token: str, pending: _Pending) -> None:
        """Hand one copy of ``pending`` to the client (connected: never to its reconnect
        buffer)."""
        pending.unanswered += 1
        try:
            await nc.publish(
                pending.subject,
                pending.body,
                reply=f"{self._inbox}.{token}",
                headers=pending.headers,
            )
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as exc:
            # Not sent: sent again, in order, once the connection is back.
            pending.unanswered -= 1
            logger.debug("publish to %s deferred: %r", pending.subject, exc, extra=log_fields())
            self._halt("not connected")
        except Exception as exc:
            # Refused for good (too large, ...): fails now, once, and frees its window slot.
            pending.unanswered -= 1
            self._fail(token, f"the client refused it ({type(exc).__name__}: {exc})", exc)

    def _take_back(self, token: str | None = None) -> None:
        """Take the publish ``token`` (every publish if ``None``) back from the client's
        buffer."""
        nc = self._nc
        if not isinstance(nc, _Client):
            return
        for reply in nc.take_back(self._inbox, token):
            pending = self._pending.get(reply[self._cut :])
            if pending is not None:
                pending.unanswered -= 1

    def _halt(self, why: str) -> None:
        """Stop writing publishes: the connection broke, or one may have been lost (no
        answer in time, or "not stored" while the stream elects a leader). Unsent ones are
        taken back from the client's buffer (it would send them first after a reconnect),
        and :meth:`_resync` sends every unacknowledged publish again, in publish order,
        before any newer one."""
        self._breaks += 1
        self._take_back()
        if self._flowing:
            self._flowing = False
            logger.debug("publishing halted (%s); resending in order", why, extra=log_fields())
        if self._state in ("started", "closing") and (
            self._resyncer is None or self._resyncer.done()
        ):
            self._resyncer = asyncio.get_running_loop().create_task(
                self._resync(), name="tidings:nats:publish-resync"
            )

    async def _resync(self) -> None:
        """Send the unacknowledged publishes again in publish order, then let new ones flow.

        The oldest goes alone first (a probe) until the server stores it (or says it had),
        so that nothing newer is stored while the stream cannot take the older ones; then
        the rest follow, in order, on the same connection. A halt meanwhile starts over.
        Publishes past ``publish_timeout`` are failed meanwhile, in publish order (the probe
        once its answer came, or ``ack_timeout`` passed; the newer ones after it), and are
        never sent again.
        """
        loop = asyncio.get_running_loop()
        while True:
            nc = self._nc
            if not self._pending:
                self._flowing = True
                return
            if nc is None or not nc.is_connected:
                await asyncio.sleep(0.05)
                continue
            breaks = self._breaks
            token, probe = next(iter(self._pending.items()))
            if probe.deadline <= loop.time():
                self._expire(token)  # never sent again; failed before any newer one
                continue
            self._probe = token
            self._probe_answered.clear()
            await self._write(nc, token, probe)
            # Not wait_for: in Python 3.11 it swallows a cancel (aclose's) that comes when
            # the answer has arrived, and this loop would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ack_timeout):
                    await self._probe_answered.wait()
            self._probe = None
            future = probe.future
            if not future.done() or future.cancelled() or future.exception() is not None:
                # No answer, "not stored" (no stream leader yet), or failed meanwhile: the
                # next round probes again with the oldest.
                probe.resend_at = loop.time() + self.ack_timeout
                await asyncio.sleep(0.1)
                continue
            if breaks != self._breaks:
                continue
            last = probe.number
            while breaks == self._breaks:
                later = [(t, p) for t, p in self._pending.items() if p.number > last]
                if not later:
                    self._flowing = True
                    return
                now = loop.time()
                for later_token, pending in later:
                    if breaks != self._breaks:
                        break
                    last = pending.number
                    if self._pending.get(later_token) is pending:
                        pending.resend_at = now + self.ack_timeout
                        await self._write(nc, later_token, pending)

    def _done(self, token: str) -> _Pending | None:
        pending = self._pending.pop(token, None)
        if pending is None:
            return None
        assert self._slots is not None
        self._slots.release()
        if not self._pending:
            self._idle.set()
        return pending

    def _fail(self, token: str, why: str, cause: BaseException | None = None) -> None:
        """Fail the publish ``token`` (naming the event, its topic and ``why``; ``cause``
        chained): set on its future, and reported when sent with :meth:`send`.

        It is first taken back from the client's buffer. Then, if no copy can have reached
        a server, the error is a :class:`PublishError` (not stored, and never will be);
        otherwise a :class:`PublishOutcomeUnknownError` (publishing the same envelope again
        within the duplicate window stores it at most once).
        """
        if token not in self._pending:
            return
        self._take_back(token)
        pending = self._done(token)
        assert pending is not None
        env = pending.envelope
        event_id = env.id if env is not None else pending.event_id
        topic = self.subjects.topic(pending.subject)
        error: PublishError | PublishOutcomeUnknownError
        if pending.unanswered <= 0:
            error = PublishError(
                f"event {event_id} on {topic!r} was not stored and will not be: {why}",
                event_id=event_id,
                topic=topic,
            )
        else:
            error = PublishOutcomeUnknownError(
                f"event {event_id} on {topic!r} may or may not be stored: {why}. Publish "
                f"the same envelope again (same event id) within the stream's "
                f"duplicate_window={self.stream.duplicate_window:g}s to store it at most once",
                event_id=event_id,
                topic=topic,
                envelope=env,
            )
        error.__cause__ = cause
        self._failed += 1
        if pending.report:
            report_publish_error(
                self.on_publish_error,
                env,
                error,
                pending.future,
                event_id=event_id,
                topic=topic,
                log=logger,
            )
        if not pending.future.done():
            pending.future.set_exception(error)

    def _expire(self, token: str) -> None:
        """Fail the publish ``token``: it reached ``publish_timeout``."""
        self._fail(token, f"no acknowledgement within publish_timeout={self.publish_timeout:g}s")

    async def _on_ack(self, msg: _NatsMsg) -> None:
        token = msg.subject[self._cut :]
        pending = self._pending.get(token)
        if pending is None:
            return
        if token == self._probe:
            self._probe_answered.set()
        headers = msg.headers
        if headers and headers.get("Status") == "503":
            # No responders: no stream leader (an election, or no stream): not stored.
            self._not_stored(pending)
            return
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError:
            return
        if ack.error is not None:
            code = ack.error.get("code")
            if code == 503:
                self._not_stored(pending)  # JetStream unavailable for now
                return
            pending.unanswered -= 1
            self._fail(token, f"the server refused it: {ack.error.get('description', ack.error)}")
            return
        self._done(token)
        if not pending.future.done():
            pending.future.set_result(PublishAck(ack.stream, ack.seq, ack.duplicate))

    def _not_stored(self, pending: _Pending) -> None:
        """One copy of ``pending`` was answered "not stored": halt, so that nothing newer
        is stored before it (see :meth:`_halt`)."""
        pending.unanswered -= 1
        self._halt("the stream did not store a publish")

    async def _sweep(self) -> None:
        """Fail publishes past the publish timeout; halt (and so resend in order) when an
        acknowledgement is late."""
        loop = asyncio.get_running_loop()
        interval = min(self.ack_timeout / 4, 0.25)
        while True:
            await asyncio.sleep(interval)
            if not self._pending:
                continue
            now = loop.time()
            late = False
            for token, pending in list(self._pending.items()):
                if token == self._probe:
                    # Failed once its answer came (or ack_timeout passed); the newer ones
                    # after it, so that failures are reported in publish order.
                    break
                if pending.deadline <= now:
                    self._expire(token)
                elif pending.resend_at <= now:
                    late = True
            nc = self._nc
            if self._flowing and (late or nc is None or not nc.is_connected):
                self._halt("an acknowledgement is late" if late else "not connected")

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
        stream = self.stream.name
        if group is not None:
            digest = hashlib.blake2b(subject_filter.encode(), digest_size=5).hexdigest()
            consumer = f"{group}_{digest}"
        else:
            consumer = f"tidings_{self._client()._nuid.next().decode()}"
        last_seen = [0]
        pinned = group is not None and policy.exclusive
        pinning: dict[str, Any] = {}
        if pinned:
            version = self._client().connected_server_version
            if (version.major, version.minor) < (2, 11):
                raise TransportError(
                    f"DeliveryPolicy(exclusive=True) needs nats-server 2.11 or later (pinned "
                    f"clients); this one is {version}: upgrade it or drop exclusive="
                )
            pinning = {
                "priority_groups": [_PRIORITY_GROUP],
                "priority_policy": "pinned_client",
                "priority_timeout": round(policy.takeover * 1e9),
            }

        kept: list[tuple[_api.DeliverPolicy, int | None]] = []
        """The start of the group's consumer when it exists already: kept (the server
        refuses to change it), so a member with another ``start`` joins the group, which
        reads on from its position (``start`` only decides where a new group begins)."""

        def config(start_after: int | None) -> _api.ConsumerConfig:
            start_seq: int | None
            if start_after:
                deliver, start_seq = _api.DeliverPolicy.BY_START_SEQUENCE, start_after + 1
            elif kept:
                deliver, start_seq = kept[0]
            elif policy.start == "all":
                deliver, start_seq = _api.DeliverPolicy.ALL, None
            else:
                deliver, start_seq = _api.DeliverPolicy.NEW, None
            return (_PinnedConsumerConfig if pinned else _api.ConsumerConfig)(
                name=consumer,
                durable_name=consumer if group is not None else None,
                filter_subject=subject_filter,
                deliver_policy=deliver,
                opt_start_seq=start_seq,
                ack_policy=_api.AckPolicy.EXPLICIT,
                ack_wait=policy.ack_wait,
                max_deliver=-1,
                max_ack_pending=self.max_ack_pending,
                inactive_threshold=None if group is not None else self.inactive_threshold,
                num_replicas=None if group is not None else 1,
                **pinning,
            )

        deadline = asyncio.get_running_loop().time() + self.connect_timeout
        if group is not None:
            found = await self._jetstream_call(
                lambda: self._consumer_info(stream, consumer),
                deadline,
                f"could not look up consumer {consumer!r} on stream {stream!r}",
            )
            if found is not None:
                settings = found.get("config", {})
                with contextlib.suppress(ValueError):
                    kept.append(
                        (
                            _api.DeliverPolicy(settings.get("deliver_policy")),
                            settings.get("opt_start_seq"),
                        )
                    )
                pins = found.get("priority_groups") or ()
                check_group_policy(
                    settings.get("priority_timeout", 0) / 1e9
                    if settings.get("priority_policy") == "pinned_client"
                    else None,
                    policy,
                    running=bool(
                        found.get("num_waiting")
                        or found.get("num_ack_pending")
                        or any(g.get("pinned_client_id") for g in pins)
                    ),
                    group=group,
                    consumer=consumer,
                )
        await self._jetstream_call(
            lambda: self._js.add_consumer(stream, config(None)),
            deadline,
            f"could not create consumer {consumer!r} on stream {stream!r}",
        )
        nc = self._client()
        # A pinned puller renews its pin with every request, so it asks twice per takeover.
        expires = min(5.0, policy.takeover / 2) if pinned else 5.0
        puller = _Puller(nc, stream, consumer, expires=expires, pinned=pinned)
        await puller.start()
        self._pullers.add(puller)
        idle = [0]

        async def recover() -> None:
            """Recreate the consumer if the server lost it; restart requests if it was."""
            if await self._consumer_info(stream, consumer) is None:
                start_after = last_seen[0] if group is None else None
                logger.warning(
                    "consumer %s was lost; recreating it", consumer, extra=log_fields(None, name)
                )
                await self._js.add_consumer(stream, config(start_after))
                puller.lost = True
            if puller.lost:
                # Only then: a request still open on the server would be moved to a stale
                # inbox, and what it brings nak'd (redelivered after later events).
                puller.lost = False
                await puller.reset()

        async def fetch(batch: int, timeout: float) -> list[Any]:
            if puller.lost:
                await recover()
            msgs = await puller.fetch(batch, timeout)
            if not msgs:
                idle[0] += 1
                if idle[0] % 10 == 0:
                    await recover()
                return msgs
            idle[0] = 0
            if group is None:
                last_seen[0] = max(last_seen[0], _meta(msgs[-1])[1])
            return list(msgs)

        async def dead_letter(raw: Any, reason: str, handler: str, attempts: int) -> None:
            subject, headers, body = dead_letter_message(
                self.subjects, raw, _meta(raw)[1], reason, handler, attempts, consumer
            )
            future = await self._send(subject, headers, body, None, report=False)
            await future

        async def release() -> None:
            self._pullers.discard(puller)
            await puller.stop()
            if puller.pin is not None and self._nc is not None and self._nc.is_connected:
                await quietly(self._unpin(stream, consumer, puller.pin))
            if group is None and self._nc is not None and self._nc.is_connected:
                await quietly(self._js.delete_consumer(stream, consumer))

        subscription = self._start_consumer(
            pattern,
            group,
            name,
            policy,
            handler,
            fetch,
            decode,
            None if dead else dead_letter,
            release,
            puller.held,
        )
        puller.on_given_back = subscription.given_back
        return subscription

    async def _consumer_info(self, stream: str, consumer: str) -> dict[str, Any] | None:
        """The consumer's info as the server sends it (nats-py's parsing drops the priority
        group fields), or ``None`` when there is no such consumer."""
        try:
            msg = await self._client().request(
                f"$JS.API.CONSUMER.INFO.{stream}.{consumer}", b"", timeout=self._api_timeout
            )
        except nats.errors.NoRespondersError as exc:
            raise nats.js.errors.ServiceUnavailableError from exc
        info: dict[str, Any] = json.loads(msg.data)
        error = info.get("error")
        if error is not None:
            if error.get("code") == 404:
                return None
            raise nats.js.errors.APIError.from_error(error)
        return info

    async def _unpin(self, stream: str, consumer: str, pin: str) -> None:
        """Hand an exclusive group over now rather than after ``takeover`` seconds, if this
        process (``pin``) still holds it: an unpin request names no client, so it would
        unpin whoever holds the group."""
        info = await self._consumer_info(stream, consumer)
        groups = [] if info is None else info.get("priority_groups") or []
        if any(g.get("pinned_client_id") == pin for g in groups):
            await self._client().request(
                f"$JS.API.CONSUMER.UNPIN.{stream}.{consumer}",
                b'{"group":"%s"}' % _PRIORITY_GROUP.encode(),
                timeout=self._api_timeout,
            )

    def __repr__(self) -> str:
        return f"<NatsTransport {self._state} {', '.join(self.servers)} stream={self.stream.name}>"


def _detail(exc: BaseException) -> str:
    """``": <server's description>"`` of a JetStream API error, if it has one."""
    description = getattr(exc, "description", None)
    return f": {description}" if description else ""

"""A TCP fault proxy: put it between clients and a broker or database, then break the link.

:class:`FaultProxy` listens on a loopback port and relays each connection to ``upstream``.
While no fault is active every chunk is written straight through (one ``write`` per chunk
received, no task, no timer). Faults, switchable at run time and combinable:

- :meth:`~FaultProxy.partition`: data in one direction (``"upstream"``: client to server,
  the design's ``direction: to``; ``"downstream"``: server to client) or both is held, as a
  real partition holds TCP segments: nothing is lost or reordered, it arrives when the
  partition heals (so the byte streams stay valid); with ``close_after`` the connections
  are reset after that many seconds, as TCP eventually gives up. Connections opened
  meanwhile are accepted but reach the server only after the heal.
- :meth:`~FaultProxy.stall`: accept, never answer: both directions held, no close.
- :meth:`~FaultProxy.latency`: each chunk delayed by ``seconds`` plus a uniform jitter of
  up to ``jitter`` seconds, order kept.
- :meth:`~FaultProxy.bandwidth`: at most ``bytes_per_second`` in each direction.
- :meth:`~FaultProxy.reset`: every open connection is reset (RST) now.
- :meth:`~FaultProxy.timeout`: data in one direction or both is dropped (not held), and
  each connection is closed ``seconds`` after the fault began or it opened, whichever is
  later (``0``: never closed, data dropped until the heal), as Toxiproxy's ``timeout``;
- :meth:`~FaultProxy.limit_data`: each connection is closed once ``nbytes`` more bytes
  passed in the direction(s) limited (the chunk that crosses the limit is cut there), as
  Toxiproxy's ``limit_data``;
- :meth:`~FaultProxy.slow_close`: when one side closes, the proxy closes the other side
  only ``seconds`` later (data already on its way still flows), as Toxiproxy's
  ``slow_close``;
- :meth:`~FaultProxy.heal`: every fault off; held data flows, in order (a close already
  delayed by ``slow_close`` still happens when due).

Invariants: per connection and direction, bytes leave in the order they arrived, exactly
once, unless the connection is reset or closed, or a ``timeout`` drops them. Held data is bounded (``hold_limit`` bytes per
direction and connection): above it the proxy stops reading from that side, so TCP's own
flow control pushes back on the sender. :meth:`aclose` closes the listener and every
connection; ``async with`` does it on exit, also on errors and cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from tidings.chaos.errors import FaultError

__all__ = ("Direction", "FaultProxy", "ProxyFaults")

Direction = Literal["both", "upstream", "downstream"]
_DIRECTIONS = ("both", "upstream", "downstream")
_UP, _DOWN = 0, 1
_BANDWIDTH_CHUNK = 16384


@dataclass
class ProxyFaults:
    """The faults active on a proxy right now (read-only view for reports)."""

    held: set[int] = field(default_factory=set)
    """Directions held (0: upstream, 1: downstream)."""
    close_after: float | None = None
    latency: float = 0.0
    jitter: float = 0.0
    bytes_per_second: float | None = None
    dropped: set[int] = field(default_factory=set)
    """Directions whose data is dropped (``timeout``)."""
    timeout: float | None = None
    """Seconds after which a connection is closed (``timeout``)."""
    limit: int | None = None
    """Bytes each connection may pass in the ``limited`` directions before it is closed."""
    limited: set[int] = field(default_factory=set)
    close_delay: float = 0.0
    """Seconds a close waits (``slow_close``); not a data fault: :attr:`clean` ignores it."""

    @property
    def clean(self) -> bool:
        """No fault on the data path: chunks may be written straight through."""
        return (
            not self.held
            and self.latency == 0.0
            and self.jitter == 0.0
            and self.bytes_per_second is None
            and not self.dropped
            and self.limit is None
        )


def _directions(direction: Direction) -> set[int]:
    """The pipes ``direction`` names.

    Raises:
        FaultError: ``direction`` is not one of ``both``, ``upstream``, ``downstream``.
    """
    if direction not in _DIRECTIONS:
        raise FaultError(
            f"a fault's direction must be one of {', '.join(_DIRECTIONS)}, not {direction!r}"
        )
    return {_UP, _DOWN} if direction == "both" else {_UP if direction == "upstream" else _DOWN}


class _Pipe:
    """One direction of one connection: data received on ``source`` goes to ``dest``."""

    __slots__ = (
        "conn",
        "dest",
        "direction",
        "held_bytes",
        "left",
        "queue",
        "source",
        "task",
        "wake",
    )

    def __init__(self, conn: _Connection, direction: int) -> None:
        self.conn = conn
        self.direction = direction
        faults = conn.proxy.faults
        self.left: int | None = faults.limit if direction in faults.limited else None
        """Bytes this pipe may still pass before its connection closes (``limit_data``)."""
        self.source: asyncio.Transport | None = None
        self.dest: asyncio.Transport | None = None
        self.queue: deque[tuple[float, bytes]] = deque()
        self.held_bytes = 0
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()

    def feed(self, data: bytes) -> None:
        proxy = self.conn.proxy
        dest = self.dest
        if dest is not None and not self.queue and proxy.clean:
            dest.write(data)  # the fast path: no fault, nothing queued before it
            return
        self.queue.append((time.monotonic(), data))
        self.held_bytes += len(data)
        if self.held_bytes > proxy.hold_limit and self.source is not None:
            self.source.pause_reading()
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._pump())
        self.wake.set()

    async def _pump(self) -> None:
        """Write the queue out, honouring the faults; ends when the queue is empty and no
        fault is active (the fast path then takes over, order kept)."""
        proxy = self.conn.proxy
        released = 0.0
        try:
            while True:
                faults = proxy.faults
                if not self.queue:
                    if faults.clean:
                        return
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                if self.direction in faults.dropped:
                    self.queue.clear()  # a timeout: data dropped on the floor
                    self.held_bytes = 0
                    if self.source is not None:
                        self.source.resume_reading()
                    continue
                if self.direction in faults.held or self.dest is None:
                    self.wake.clear()
                    await proxy.changed(self.wake)
                    continue
                arrived, data = self.queue[0]
                if self.left is not None:
                    data = data[: self.left]
                # Latency: due ``latency`` (+ jitter) after arrival, never before the chunk
                # ahead of it (order kept).
                delay = faults.latency + (random.uniform(0, faults.jitter) if faults.jitter else 0)
                due = max(released, arrived + delay)
                rate = faults.bytes_per_second
                if rate:  # bandwidth: a chunk is through len / rate after the link is free
                    data = data[:_BANDWIDTH_CHUNK]
                    due = max(due, max(time.monotonic(), released) + len(data) / rate)
                released = due
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                faults = proxy.faults
                held = self.direction in faults.held or self.direction in faults.dropped
                if held or self.dest is None:
                    continue  # held (sent after the heal) or dropped meanwhile
                if len(data) < len(self.queue[0][1]):
                    self.queue[0] = (arrived, self.queue[0][1][len(data) :])
                else:
                    self.queue.popleft()
                self.held_bytes -= len(data)
                self.dest.write(data)
                if self.left is not None:
                    self.left -= len(data)
                    if self.left <= 0:  # limit_data: closed once the limit passed
                        self.conn.close()
                        return
                if self.source is not None and self.held_bytes <= proxy.hold_limit // 2:
                    self.source.resume_reading()
        finally:
            self.task = None


class _Side(asyncio.Protocol):
    """The protocol of one socket of a connection (client side or upstream side)."""

    def __init__(self, conn: _Connection, inbound: _Pipe, outbound: _Pipe) -> None:
        self.conn = conn
        self.inbound = inbound  # data this socket receives
        self.outbound = outbound  # data written to this socket
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.inbound.source = transport
        self.outbound.dest = transport
        self.outbound.wake.set()

    def data_received(self, data: bytes) -> None:
        self.inbound.feed(data)

    def eof_received(self) -> bool | None:
        self.conn.peer_closed(self)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.peer_closed(self)

    def pause_writing(self) -> None:  # the other side's reads wait for this socket
        if self.outbound.source is not None:
            self.outbound.source.pause_reading()

    def resume_writing(self) -> None:
        if self.outbound.source is not None:
            self.outbound.source.resume_reading()


class _Connection:
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.up = _Pipe(self, _UP)
        self.down = _Pipe(self, _DOWN)
        self.client = _Side(self, self.up, self.down)
        self.server = _Side(self, self.down, self.up)
        self.connector: asyncio.Task[None] | None = None
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        """The close a ``timeout`` fault scheduled."""
        self.closing_later = False

    async def connect(self) -> None:
        proxy = self.proxy
        gate = asyncio.Event()
        while _UP in proxy.faults.held:  # a SYN in a partition: no answer until it heals
            gate.clear()
            await proxy.changed(gate)
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self.server, *proxy.upstream)
        except OSError:
            self.close()

    def peer_closed(self, side: _Side) -> None:
        """``side``'s socket closed: close the connection, ``close_delay`` later if set."""
        delay = self.proxy.faults.close_delay
        if delay <= 0 or self.closed:
            self.close()
        elif not self.closing_later:
            self.closing_later = True
            side.outbound.dest = None  # nothing more can be written to the closed side
            asyncio.get_running_loop().call_later(delay, self.close)

    def close_in(self, seconds: float) -> None:
        """Close this connection ``seconds`` from now (a ``timeout`` fault)."""
        self.cancel_timer()
        self.timer = asyncio.get_running_loop().call_later(seconds, self.close)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self, *, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.cancel_timer()
        self.proxy.connections.discard(self)
        for side in (self.client, self.server):
            transport = side.transport
            if transport is None:
                continue
            if reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                transport.abort()
            else:
                transport.close()
        for pipe in (self.up, self.down):
            if pipe.task is not None:
                pipe.task.cancel()
        if self.connector is not None and not self.connector.done():
            self.connector.cancel()


class FaultProxy:
    """A TCP proxy from ``listen`` (loopback, port 0: any free port) to ``upstream``.

    Usable from pytest and from code::

        async with FaultProxy(("127.0.0.1", nats_port)) as proxy:
            client connects to proxy.port
            proxy.partition("upstream"); ...; proxy.heal()

    Args:
        upstream: ``(host, port)`` of the server.
        listen: ``(host, port)`` to listen on; port 0 picks a free one (see :attr:`port`).
        hold_limit: bytes held per connection and direction before reading pauses.

    Raises:
        FaultError: from :meth:`start`, when ``listen`` cannot be bound (in use, no
            permission); nothing is left open.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        hold_limit: int = 4 << 20,
    ) -> None:
        self.upstream = upstream
        self.listen = listen
        self.hold_limit = hold_limit
        self.faults = ProxyFaults()
        self.clean = True
        """No fault active: chunks are written straight through."""
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()
        self._closer: asyncio.TimerHandle | None = None
        self.accepted = 0

    @property
    def port(self) -> int:
        """The port the proxy listens on (after :meth:`start`)."""
        if self._server is None:
            raise FaultError("the proxy is not started: 'async with FaultProxy(...)' first")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def address(self) -> str:
        """``host:port`` to give clients instead of the server's."""
        return f"{self.listen[0]}:{self.port}"

    async def start(self) -> FaultProxy:
        """Listen. Raises :class:`FaultError` if the address cannot be bound."""
        if self._server is not None:
            return self
        loop = asyncio.get_running_loop()

        def accept() -> asyncio.Protocol:
            conn = _Connection(self)
            self.connections.add(conn)
            self.accepted += 1
            if self.faults.timeout:
                conn.close_in(self.faults.timeout)
            conn.connector = loop.create_task(conn.connect())
            return conn.client

        try:
            self._server = await loop.create_server(
                accept, self.listen[0], self.listen[1], reuse_address=True
            )
        except OSError as exc:
            raise FaultError(
                f"the fault proxy cannot listen on {self.listen[0]}:{self.listen[1]} "
                f"({exc.strerror or exc}); choose another port (0 picks a free one)"
            ) from exc
        return self

    async def aclose(self) -> None:
        """Stop listening and close every connection (held data is discarded)."""
        self.heal()
        server, self._server = self._server, None
        for conn in list(self.connections):
            conn.close()
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ faults

    async def changed(self, event: asyncio.Event) -> None:
        """Wait until the faults change (or ``event`` is set)."""
        changed = self._changed
        waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(event.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _apply(self) -> None:
        self.clean = self.faults.clean
        self._changed.set()
        self._changed = asyncio.Event()
        for conn in list(self.connections):
            for pipe in (conn.up, conn.down):
                if pipe.queue or not self.faults.clean:
                    pipe.wake.set()

    def partition(self, direction: Direction = "both", *, close_after: float | None = None) -> None:
        """Hold data in ``direction`` (see the module docstring) until :meth:`heal`.

        Raises:
            FaultError: ``direction`` is not one of ``both``, ``upstream``, ``downstream``.
        """
        self.faults.held |= _directions(direction)
        self.faults.close_after = close_after
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        if close_after is not None:
            loop = asyncio.get_running_loop()
            self._closer = loop.call_later(close_after, self.reset)
        self._apply()

    def stall(self) -> None:
        """Accept connections and never answer: both directions held until :meth:`heal`."""
        self.partition("both")

    def latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Delay each chunk by ``seconds`` plus up to ``jitter`` seconds (uniform)."""
        if seconds < 0 or jitter < 0:
            raise FaultError("latency and jitter are seconds >= 0")
        self.faults.latency = seconds
        self.faults.jitter = jitter
        self._apply()

    def bandwidth(self, bytes_per_second: float) -> None:
        """Pass at most ``bytes_per_second`` per connection and direction."""
        if not bytes_per_second > 0:
            raise FaultError(f"bandwidth must be a positive rate, not {bytes_per_second!r}")
        self.faults.bytes_per_second = bytes_per_second
        self._apply()

    def timeout(self, seconds: float, direction: Direction = "both") -> None:
        """Drop the data in ``direction`` and close each connection ``seconds`` after now
        or after it opens (``0``: never close; data dropped until :meth:`heal`).

        Raises:
            FaultError: a negative ``seconds`` or an unknown ``direction``.
        """
        if not seconds >= 0:
            raise FaultError(f"timeout is seconds >= 0, not {seconds!r}")
        self.faults.dropped |= _directions(direction)
        self.faults.timeout = seconds or None
        for conn in list(self.connections):
            conn.cancel_timer()
            if seconds:
                conn.close_in(seconds)
        self._apply()

    def limit_data(self, nbytes: int, direction: Direction = "both") -> None:
        """Close each connection (open or opened later) once ``nbytes`` more bytes passed
        in ``direction`` (counted per connection and direction, from now or its opening).

        Raises:
            FaultError: a negative ``nbytes`` or an unknown ``direction``.
        """
        if not nbytes >= 0:
            raise FaultError(f"limit_data is a number of bytes >= 0, not {nbytes!r}")
        limited = _directions(direction)
        self.faults.limit = nbytes
        self.faults.limited = limited
        for conn in list(self.connections):
            for pipe in (conn.up, conn.down):
                pipe.left = nbytes if pipe.direction in limited else None
        self._apply()

    def slow_close(self, seconds: float) -> None:
        """Delay the close of each connection by ``seconds`` once one side closed it."""
        if not seconds >= 0:
            raise FaultError(f"slow_close is seconds >= 0, not {seconds!r}")
        self.faults.close_delay = seconds
        self._apply()

    def reset(self) -> None:
        """Reset (RST) every open connection now; new ones are accepted as before."""
        for conn in list(self.connections):
            conn.close(reset=True)

    def heal(self) -> None:
        """Every fault off: held and delayed data flows, in order."""
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        self.faults = ProxyFaults()
        for conn in list(self.connections):
            conn.cancel_timer()
            for pipe in (conn.up, conn.down):
                pipe.left = None
        self._apply()

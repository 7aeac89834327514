"""The carrier of a bus with both a store and a transport: :class:`StoredAndSent`, and
:func:`carrier_of`, which picks a bus's one :class:`~tidings._ports.Carrier`.

Guarantees, for each event published or emitted:

- the transport's refusal known beforehand (``check_send``/``check_publish`` with the
  envelope: too large, or the bus not started) raises *before* the append, so an event the
  transport refuses is not in the log either;
- the append comes first, then the send: what was sent is in the log. An append deferred to
  a task (an async-only store, a ``publish`` on the loop's thread) is sent when the task
  has appended it (:meth:`StoredAndSent.send`, through ``BusPort.after_write_ahead``);
- on ``aclose`` the transport disconnects first (handlers in flight may still publish),
  then deferred appends settle, then followers stop and the store closes. ``close`` from
  synchronous code leaves the store open: a transport's idempotent subscriptions use it.

:class:`Forwarding` (``Bus(..., forward=StoreAndForward(...))``, see
:mod:`tidings.forwarding` for the promise) is the same carrier with store and forward:
before the append it admits the event against ``max_pending`` (events appended and not yet
acknowledged by the broker); it hears from the remote side's outbox of each event handed to
the transport (:class:`~tidings._remote.ForwardHook`), marks it acknowledged when the
broker acks it (or refuses it for good: then it is dead-lettered as before), and a task
commits the log position up to which everything was acknowledged. On connect, the records
after that checkpoint are queued for the broker ahead of anything new. Failures while the
bus closes are kept (the records stay after the checkpoint), not reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from typing import TYPE_CHECKING, Any

from tidings.exceptions import PublishError
from tidings.observability.logs import log_fields

if TYPE_CHECKING:
    from tidings._log import Log
    from tidings._ports import Carrier
    from tidings._remote import Remote
    from tidings.event import Envelope
    from tidings.forwarding import StoreAndForward
    from tidings.routing import Route
    from tidings.transports.base import PublishAck

__all__ = ("Forwarding", "StoredAndSent", "carrier_of")

logger = logging.getLogger("tidings")


def carrier_of(
    log: Log | None, remote: Remote | None, forward: StoreAndForward | None = None
) -> Carrier | None:
    """The one carrier of a bus with ``log`` and/or ``remote`` (``None`` with neither).

    Raises:
        ValueError: ``forward`` without both a store and a transport, or with a transport
            that gives up on publishes while the broker is away (a finite
            ``publish_timeout``).
    """
    if forward is not None:
        if log is None or remote is None:
            raise ValueError(
                "forward= (store and forward) needs both store= and transport=: the store "
                "holds what the transport cannot deliver yet"
            )
        return Forwarding(log, remote, forward)
    if log is None:
        return remote
    if remote is None:
        return log
    return StoredAndSent(log, remote)


class StoredAndSent:
    """Appends each event to the log, then sends it over the transport."""

    __slots__ = ("log", "remote")

    def __init__(self, log: Log, remote: Remote) -> None:
        self.log = log
        self.remote = remote

    def write_ahead(self, route: Route, env: Envelope[Any]) -> bool:
        self.remote.check_send(env)  # refuse before the append, not after it
        if not self.log.write_ahead(route, env):
            return False  # sent by send() once the deferred append is done
        self.remote.send(env)
        return True

    def send(self, env: Envelope[Any]) -> None:
        self.remote.send(env)

    async def carry(self, env: Envelope[Any]) -> None:
        self.remote.check_publish(env)  # refuse before the append, not after it
        await self.log.carry(env)
        await self.remote.carry(env)  # handlers run where the server delivers it

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.log.start(loop)

    async def connect(self) -> None:
        await self.remote.connect()

    async def flush(self) -> None:
        await self.log.flush()

    async def disconnect(self, timeout: float) -> None:
        await self.remote.disconnect(timeout)

    async def settle(self, deadline: float) -> None:
        await self.log.settle(deadline)

    async def aclose(self, deadline: float) -> list[str]:
        return await self.log.aclose(deadline)

    def close_sync(self) -> None:
        """Leave the store open: the transport's idempotent subscriptions use it."""


class Forwarding(StoredAndSent):
    """:class:`StoredAndSent` with store and forward (see the module docstring)."""

    __slots__ = (
        "_acked",
        "_checkpointer",
        "_closing",
        "_lock",
        "_outstanding",
        "_position",
        "dropped",
        "policy",
    )

    def __init__(self, log: Log, remote: Remote, policy: StoreAndForward) -> None:
        super().__init__(log, remote)
        timeout = getattr(remote.transport, "publish_timeout", math.inf)
        if math.isfinite(timeout):
            raise ValueError(
                f"store and forward keeps re-sending while the broker is away, but "
                f"{type(remote.transport).__name__} gives up after publish_timeout="
                f"{timeout:g}s (failed publishes would leave the log out of order): make it "
                "with publish_timeout=math.inf"
            )
        self.policy = policy
        self.dropped = 0
        self._lock = threading.Lock()
        self._outstanding = 0
        self._acked: set[str] = set()
        self._position = 0
        self._closing = False
        self._checkpointer: asyncio.Task[None] | None = None
        remote.forwarding = self

    @property
    def outstanding(self) -> int:
        """Events appended and not yet acknowledged by the broker."""
        return self._outstanding

    def _admit(self, env: Envelope[Any]) -> bool:
        with self._lock:
            if self._outstanding < self.policy.max_pending:
                self._outstanding += 1
                return True
        error = PublishError(
            f"event {env.id} on {env.topic!r} was not stored and will not be: "
            f"{self.policy.max_pending} events already wait for the broker "
            "(StoreAndForward.max_pending); publish again once it is reachable",
            event_id=env.id,
            topic=env.topic,
        )
        if self.policy.overflow == "error":
            raise error
        self.dropped += 1
        logger.error("%s", error, extra=log_fields(env))
        self.remote.bus.publish_failed(env, "tidings.publish", error)
        return False

    def _release(self) -> None:
        with self._lock:
            self._outstanding -= 1

    def write_ahead(self, route: Route, env: Envelope[Any]) -> bool:
        self.remote.check_send(env)
        if not self._admit(env):
            return False  # refused: neither stored nor dispatched
        try:
            appended = self.log.write_ahead(route, env)
        except BaseException:
            self._release()
            raise
        if appended:
            self.remote.send(env)
        return appended

    async def carry(self, env: Envelope[Any]) -> None:
        """Append ``env`` and queue it for the broker: the append is the acknowledgement."""
        self.remote.check_publish(env)
        if not self._admit(env):
            return
        try:
            await self.log.carry(env)
        except BaseException:
            self._release()
            raise
        self.remote.send(env)

    # ------------------------------------------------------------------ ForwardHook

    def sent(self, env: Envelope[Any], future: asyncio.Future[PublishAck]) -> None:
        def settled(done: asyncio.Future[PublishAck]) -> None:
            if not done.cancelled() and done.exception() is not None and self._closing:
                return  # kept in the log, after the checkpoint
            self._acked.add(env.id)
            self._release()

        future.add_done_callback(settled)

    def keeps(self, env: Envelope[Any], exc: BaseException) -> bool:
        return self._closing

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        store = self.log.store
        self._position = await store.load_checkpoint(self.policy.checkpoint)
        backlog = [record.envelope for record in await store.read(after=self._position)]
        if backlog:
            logger.warning(
                "forwarding %d event(s) left in the log by an earlier run",
                len(backlog),
                extra=log_fields(),
            )
        with self._lock:
            self._outstanding += len(backlog)
        self.remote.preload(backlog)
        await super().connect()
        self._checkpointer = asyncio.create_task(self._run_checkpoints(), name="tidings:forward")

    async def _run_checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.policy.checkpoint_interval)
            try:
                await self.checkpoint()
            except Exception as exc:  # the store is down: retried at the next interval
                logger.warning("forwarding checkpoint failed: %s", exc, extra=log_fields())

    async def checkpoint(self) -> None:
        """Commit the log position up to which the broker acknowledged every record."""
        if not self._acked:
            return
        store = self.log.store
        position = self._position
        while self._acked:
            records = await store.read(after=position, limit=1000)
            for record in records:
                if record.envelope.id not in self._acked:
                    break
                self._acked.discard(record.envelope.id)
                position = record.position
            else:
                if records:
                    continue
            break
        if position != self._position:
            await store.commit(self.policy.checkpoint, position)
            self._position = position

    async def disconnect(self, timeout: float) -> None:
        self._closing = True
        try:
            await super().disconnect(timeout)
        finally:
            task, self._checkpointer = self._checkpointer, None
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def aclose(self, deadline: float) -> list[str]:
        with contextlib.suppress(Exception):
            await self.checkpoint()
        return await super().aclose(deadline)

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

:class:`Checked` (``Bus(..., validator=...)``) checks each event before the carrier it wraps
(or, on a bus with neither store nor transport, before the bus dispatches it): an event the
check refuses raises to the publisher and is neither appended, sent nor dispatched. A bus
without a check has no :class:`Checked` carrier, so its publish path is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from tidings.exceptions import PublishError
from tidings.forwarding import ForwardingStatistics
from tidings.observability.logs import log_fields

if TYPE_CHECKING:
    from tidings._log import AppendBatch, Log
    from tidings._ports import Carrier, EventCheck
    from tidings._remote import Remote
    from tidings.event import Envelope
    from tidings.forwarding import StoreAndForward
    from tidings.routing import Route
    from tidings.transports.base import PublishAck

__all__ = ("Checked", "Forwarding", "StoredAndSent", "carrier_of")

logger = logging.getLogger("tidings")

_PAGE = 1000
"""Records read per page by the checkpoint task."""


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


class Checked:
    """Runs ``check`` on each event before ``inner`` carries it (nothing more without one)."""

    __slots__ = ("check", "inner")

    def __init__(self, check: EventCheck, inner: Carrier | None) -> None:
        self.check = check.check
        self.inner = inner

    def write_ahead(self, route: Route, env: Envelope[Any]) -> bool:
        self.check(env)  # refuse before the append, the send and the dispatch
        inner = self.inner
        return True if inner is None else inner.write_ahead(route, env)

    def send(self, env: Envelope[Any]) -> None:
        if self.inner is not None:
            self.inner.send(env)

    async def carry(self, env: Envelope[Any]) -> None:
        self.check(env)
        if self.inner is not None:
            await self.inner.carry(env)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.inner is not None:
            self.inner.start(loop)

    async def connect(self) -> None:
        if self.inner is not None:
            await self.inner.connect()

    async def flush(self) -> None:
        if self.inner is not None:
            await self.inner.flush()

    async def acknowledged(self) -> None:
        if self.inner is not None:
            await self.inner.acknowledged()

    def together(self) -> AppendBatch | None:
        # a batch's publishes pass write_ahead too: each is checked before it joins
        return None if self.inner is None else self.inner.together()

    async def disconnect(self, timeout: float) -> None:
        if self.inner is not None:
            await self.inner.disconnect(timeout)

    async def settle(self, deadline: float) -> None:
        if self.inner is not None:
            await self.inner.settle(deadline)

    async def aclose(self, deadline: float) -> list[str]:
        return [] if self.inner is None else await self.inner.aclose(deadline)

    def close_sync(self) -> None:
        if self.inner is not None:
            self.inner.close_sync()


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

    async def acknowledged(self) -> None:
        await self.remote.acknowledged()

    def together(self) -> None:
        """No batches: each event is sent once its own append is done."""

    async def disconnect(self, timeout: float) -> None:
        await self.remote.disconnect(timeout)

    async def settle(self, deadline: float) -> None:
        await self.log.settle(deadline)

    async def aclose(self, deadline: float) -> list[str]:
        return await self.log.aclose(deadline)

    def close_sync(self) -> None:
        """Leave the store open: the transport's idempotent subscriptions use it."""


class Forwarding(StoredAndSent):
    """:class:`StoredAndSent` with store and forward (see the module docstring).

    State, all but the counters touched on the loop's thread or under ``_lock``:

    - ``_own``: ids this bus admitted whose record the checkpoint task has not met yet
      (a record it meets that is not in it was appended by someone else: forwarded then);
    - ``_window``: the records met after the checkpoint, in log order (id -> position);
    - ``_acked``: ids the broker settled, with the checkpoint pass that saw them settle
      (an id still there after a pass that read the whole log is no record after the
      checkpoint: a re-appended id, stored before it; forgotten then).

    Bounds: ``_outstanding`` <= ``max_pending`` (records found in the log wait for room);
    ``_own`` and the unsettled part of ``_window`` hold at most ``_outstanding`` ids.
    """

    __slots__ = (
        "_acked",
        "_checkpointer",
        "_closing",
        "_counts",
        "_lock",
        "_outstanding",
        "_own",
        "_passes",
        "_position",
        "_scanned",
        "_window",
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
        self._lock = threading.Lock()
        self._outstanding = 0
        self._own: set[str] = set()
        self._acked: dict[str, int] = {}
        self._window: OrderedDict[str, int] = OrderedDict()
        self._passes = 0
        self._position = 0
        self._scanned = 0
        self._closing = False
        self._checkpointer: asyncio.Task[None] | None = None
        # forwarded, refused, found, dropped, failed (see ForwardingStatistics)
        self._counts = [0, 0, 0, 0, 0]
        remote.forwarding = self
        log.append_failed = self._append_failed

    def statistics(self) -> ForwardingStatistics:
        """The counters of this bus's forwarding (see
        :class:`~tidings.forwarding.ForwardingStatistics`)."""
        forwarded, refused, found, dropped, failed = self._counts
        return ForwardingStatistics(
            pending=self._outstanding,
            forwarded=forwarded,
            refused=refused,
            found=found,
            dropped=dropped,
            failed=failed,
            checkpoint=self._position,
        )

    def _admit(self, env: Envelope[Any]) -> bool:
        with self._lock:
            if self._outstanding < self.policy.max_pending:
                self._outstanding += 1
                self._own.add(env.id)
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
        with self._lock:  # publishers on any thread
            self._counts[3] += 1
        logger.error("%s", error, extra=log_fields(env))
        self.remote.bus.publish_failed(env, "tidings.publish", error)
        return False

    def _unadmit(self, env: Envelope[Any]) -> None:
        """``env`` was admitted but is not in the log: its append failed."""
        with self._lock:
            self._outstanding -= 1
            self._own.discard(env.id)

    def _release(self) -> None:
        with self._lock:
            self._outstanding -= 1

    def _append_failed(self, env: Envelope[Any], exc: Exception) -> None:
        """A deferred append (async-only store, ``publish`` on the loop's thread) failed
        after ``publish`` returned: release it, and dead-letter it as not stored (the log
        already logged the failure)."""
        self._unadmit(env)
        self._counts[4] += 1
        error = PublishError(
            f"event {env.id} on {env.topic!r} was not stored and will not be: its append "
            f"to the log failed after publish returned ({type(exc).__name__}: {exc}); "
            "publish it again, or use 'await bus.emit(...)' to be told at once",
            event_id=env.id,
            topic=env.topic,
        )
        self.remote.bus.publish_failed(env, "tidings.publish", error)

    def write_ahead(self, route: Route, env: Envelope[Any]) -> bool:
        self.remote.check_send(env)
        if not self._admit(env):
            return False  # refused: neither stored nor dispatched
        try:
            appended = self.log.write_ahead(route, env)
        except BaseException:
            self._unadmit(env)
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
            # Failed, or cancelled: then the append may still land; if it does, the
            # checkpoint task finds the record and forwards it like any other's.
            self._unadmit(env)
            raise
        self.remote.send(env)

    # ------------------------------------------------------------------ ForwardHook

    def sent(self, env: Envelope[Any], future: asyncio.Future[PublishAck]) -> None:
        def settled(done: asyncio.Future[PublishAck]) -> None:
            failed = done.cancelled() or done.exception() is not None
            if failed and self._closing:
                return  # kept in the log, after the checkpoint
            self._counts[1 if failed else 0] += 1
            self._acked[env.id] = self._passes
            self._release()

        future.add_done_callback(settled)

    def keeps(self, env: Envelope[Any], exc: BaseException) -> bool:
        return self._closing

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        store = self.log.store
        self._position = self._scanned = await store.load_checkpoint(self.policy.checkpoint)
        records = await store.read(after=self._position, unknown="raw")
        if records:
            logger.warning(
                "forwarding %d event(s) left in the log after the checkpoint",
                len(records),
                extra=log_fields(),
            )
            for record in records:
                self._window[record.envelope.id] = record.position
            self._scanned = records[-1].position
        with self._lock:
            self._outstanding += len(records)
        self.remote.preload([record.envelope for record in records])
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
        """Meet the records appended since the last pass (forwarding those this bus did
        not publish), then commit the log position up to which the broker settled every
        record."""
        started = self._passes
        self._passes += 1
        complete = await self._meet_new_records()
        position = self._position
        window, acked = self._window, self._acked
        while window:
            event_id = next(iter(window))
            if event_id not in acked:
                break
            at = window.pop(event_id)
            del acked[event_id]
            self._own.discard(event_id)  # an id published again while its record waited
            position = at
        if complete:  # every record settled before this pass began was met by it
            for event_id in [i for i, seen in acked.items() if seen <= started]:
                if event_id not in window:
                    del acked[event_id]
        if position != self._position:
            await self.log.store.commit(self.policy.checkpoint, position)
            self._position = position

    async def _meet_new_records(self) -> bool:
        """Read the records after the last one met, in log order, into the window; forward
        each this bus did not publish (appended by another process into the same store),
        while fewer than ``max_pending`` wait. Whether the end of the log was reached."""
        store = self.log.store
        while True:
            records = await store.read(after=self._scanned, limit=_PAGE, unknown="raw")
            for record in records:
                env = record.envelope
                with self._lock:
                    own = env.id in self._own
                    if own:
                        self._own.discard(env.id)
                    elif self._closing or self._outstanding >= self.policy.max_pending:
                        return False  # met again at the next pass (or start), with room
                    else:
                        self._outstanding += 1
                if not own:
                    self._counts[2] += 1
                    self.remote.send(env)
                self._window[env.id] = record.position
                self._scanned = record.position
            if len(records) < _PAGE:
                return True

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

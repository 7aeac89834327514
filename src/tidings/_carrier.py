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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from tidings._log import Log
    from tidings._ports import Carrier
    from tidings._remote import Remote
    from tidings.event import Envelope
    from tidings.routing import Route

__all__ = ("StoredAndSent", "carrier_of")


def carrier_of(log: Log | None, remote: Remote | None) -> Carrier | None:
    """The one carrier of a bus with ``log`` and/or ``remote`` (``None`` with neither)."""
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

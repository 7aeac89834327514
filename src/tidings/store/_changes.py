"""In-process change notification: wakes waiting subscriptions, from any thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ("Changes",)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Changes:
    """A change counter that coroutines on any event loop can wait on.

    :meth:`notify` may be called from any thread; each waiter is woken on its own loop.
    A waiter passes the count it last saw, so a change that happened before it started
    waiting is never missed.
    """

    __slots__ = ("__weakref__", "_lock", "_waiters", "count")

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def notify(self) -> None:
        """Record a change and wake every waiter."""
        with self._lock:
            self.count += 1
            waiters, self._waiters = self._waiters, []
        if not waiters:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, future in waiters:
            if loop is running:
                loop.call_soon(_wake, future)
            else:
                # A closed loop raises RuntimeError: nobody waits there any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_wake, future)

    async def wait(self, seen: int, timeout: float | None) -> int:
        """Wait until the count differs from ``seen`` or ``timeout`` seconds pass.

        Returns the count at return (equal to ``seen`` after a timeout without change).
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.count != seen:
                return self.count
            future: asyncio.Future[None] = loop.create_future()
            entry = (loop, future)
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return self.count

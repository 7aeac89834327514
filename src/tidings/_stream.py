"""The bounded buffer behind :meth:`Bus.stream <tidings.Bus.stream>`."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Generic, Literal, TypeVar, get_args

from tidings.exceptions import QueueFullError

__all__ = ("EventStream", "StreamOverflow")

T = TypeVar("T")

StreamOverflow = Literal["drop_oldest", "drop_newest", "error"]
"""What a full stream does with one more event."""


class EventStream(Generic[T]):
    """An async iterator over events, fed by a subscription through a bounded buffer.

    Thread-safe for producers; iterate it from the loop it was created on. It never holds
    more than ``maxsize`` events: overflow drops (counted in :attr:`dropped`) or fails the
    delivery, as chosen. Iteration ends after :meth:`close` once the buffer is drained.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, maxsize: int, overflow: StreamOverflow
    ) -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive int, not {maxsize!r}")
        if overflow not in get_args(StreamOverflow):
            raise ValueError(
                f"overflow must be one of {', '.join(get_args(StreamOverflow))}, not {overflow!r}"
            )
        self._loop = loop
        self._maxsize = maxsize
        self._overflow = overflow
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0
        """How many events overflow discarded."""

    def put(self, item: T) -> None:
        """Offer one event (called by the bus, from any thread).

        Raises:
            QueueFullError: if the stream is full and its overflow policy is ``"error"``.
        """
        with self._lock:
            if self._closed:
                return
            if len(self._items) >= self._maxsize:
                if self._overflow == "error":
                    raise QueueFullError(
                        f"stream is full ({self._maxsize} events) and its overflow policy is "
                        "'error'; consume faster, raise maxsize or choose a drop policy",
                        name="stream",
                        capacity=self._maxsize,
                    )
                self.dropped += 1
                if self._overflow == "drop_newest":
                    return
                self._items.popleft()
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    def close(self) -> None:
        """End iteration once the buffered events are consumed."""
        with self._lock:
            self._closed = True
            waiter, self._waiter = self._waiter, None
        if waiter is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_wake, waiter)

    def __len__(self) -> int:
        return len(self._items)

    def __aiter__(self) -> EventStream[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    raise StopAsyncIteration
                waiter = self._waiter = self._loop.create_future()
            await waiter


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

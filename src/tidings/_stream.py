"""The async iterator behind :meth:`Bus.stream <tidings.Bus.stream>`."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from tidings.event import Envelope
from tidings.exceptions import QueueClosedError
from tidings.queues import Overflow, RingBuffer

__all__ = ("EventStream",)

T = TypeVar("T")


class EventStream(Generic[T]):
    """Events pulled from a bounded buffer, as an async iterator of payloads.

    The bus fills the buffer through a queued subscription; iterating takes events out in
    publish order. It never holds more than ``maxsize`` events. Iteration ends once the
    stream is closed (its ``async with`` block exits or the bus closes) and drained.
    """

    def __init__(self, maxsize: int, overflow: Overflow) -> None:
        self.maxsize = maxsize
        self.overflow = overflow
        self._buffer: RingBuffer[Envelope[T]] | None = None

    def attach(self, buffer: RingBuffer[Envelope[T]]) -> None:
        """Read from ``buffer`` (the bus calls this)."""
        self._buffer = buffer

    async def consume(self, event: Any) -> None:
        """The subscription's nominal handler; never called (the iterator consumes)."""
        raise AssertionError("a stream's buffer is consumed by its iterator")

    @property
    def dropped(self) -> int:
        """How many events the overflow policy discarded."""
        return 0 if self._buffer is None else self._buffer.statistics().dropped

    def __len__(self) -> int:
        return 0 if self._buffer is None else len(self._buffer)

    def __aiter__(self) -> EventStream[T]:
        return self

    async def __anext__(self) -> T:
        assert self._buffer is not None, "stream used outside its 'async with' block"
        try:
            envelope = await self._buffer.aget()
        except QueueClosedError:
            raise StopAsyncIteration from None
        return envelope.payload

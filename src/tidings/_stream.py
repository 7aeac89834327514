"""The async iterator behind :meth:`Bus.stream <tidings.Bus.stream>`, and the kind of
subscription that fills it (:func:`stream_subscription`).

A stream is a queued subscription whose buffer is *external*: no worker calls a handler,
the stream's iterator takes the events out. The bus registers it like any subscription;
observability leaves it alone (:attr:`Subscription.observable
<tidings.Subscription.observable>`), and it takes no middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from tidings.delivery import FailureHook, Queued
from tidings.event import Envelope
from tidings.exceptions import QueueClosedError
from tidings.queues import Overflow, RingBuffer
from tidings.subscription import Subscription, SubscriptionOwner

__all__ = ("EventStream", "stream_subscription")

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


def stream_subscription(
    owner: SubscriptionOwner,
    target: type[Any] | str,
    *,
    maxsize: int,
    overflow: Overflow,
    where: Callable[[Any], bool] | None,
    on_failure: FailureHook,
    on_drained: Callable[[Queued], None],
) -> tuple[EventStream[Any], Subscription[Any]]:
    """A new stream and the subscription that fills it (a queued one with an external
    buffer, read by the stream), for the bus to register.

    Raises:
        InvalidHandlerError, InvalidTopicError, ValueError: as :meth:`Bus.subscribe`.
    """
    stream: EventStream[Any] = EventStream(maxsize, overflow)
    sub: Subscription[Any] = Subscription(
        owner,
        target,
        stream.consume,
        priority=0,
        where=where,
        once=False,
        weak=False,
        owner=None,
        envelope=False,
        mode="queued",
    )
    sub.queued = Queued(
        sub,
        workers=1,
        maxsize=maxsize,
        overflow=overflow,
        batch=None,
        pool=None,
        weight=1.0,
        on_failure=on_failure,
        on_drained=on_drained,
        external=True,
    )
    stream.attach(sub.queued.partitions[0])
    return stream, sub

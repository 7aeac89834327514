"""A hypothesis state machine: RingBuffer's non-waiting operations against a list model."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tidings.exceptions import QueueClosedError, QueueFullError, WouldBlock
from tidings.queues import Overflow, RingBuffer


class RingBufferModel(RuleBasedStateMachine):
    """Every operation is checked against a plain list and a handful of counters."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: RingBuffer[int] = RingBuffer(1)
        self.overflow: Overflow = "block"
        self.capacity = 1
        self.items: list[int] = []
        self.closed = False
        self.next_item = 0
        self.high_water = self.put_count = self.get_count = 0
        self.dropped_oldest = self.dropped_newest = 0

    @initialize(capacity=st.integers(1, 6), overflow=st.sampled_from(get_args(Overflow)))
    def create(self, capacity: int, overflow: Overflow) -> None:
        self.queue = RingBuffer(capacity, overflow=overflow, name="model")
        self.capacity = capacity
        self.overflow = overflow

    def fresh(self, count: int) -> list[int]:
        """Distinct items, so that every item's fate is visible."""
        batch = list(range(self.next_item, self.next_item + count))
        self.next_item += count
        return batch

    def store(self, batch: list[int]) -> None:
        self.items += batch
        self.put_count += len(batch)
        self.high_water = max(self.high_water, len(self.items))

    def room(self) -> int:
        return self.capacity - len(self.items)

    @rule()
    def put_nowait(self) -> None:
        (item,) = self.fresh(1)
        if self.closed:
            with pytest.raises(QueueClosedError):
                self.queue.put_nowait(item)
        elif self.room() or self.overflow == "drop_oldest":
            self.queue.put_nowait(item)
            if not self.room():
                del self.items[0]
                self.dropped_oldest += 1
            self.store([item])
        elif self.overflow == "drop_newest":
            self.queue.put_nowait(item)
            self.dropped_newest += 1
        else:
            expected = WouldBlock if self.overflow == "block" else QueueFullError
            with pytest.raises(expected):
                self.queue.put_nowait(item)

    @rule(count=st.integers(0, 8))
    def put_many(self, count: int) -> None:
        batch = self.fresh(count)
        room = self.room()
        if self.closed:
            with pytest.raises(QueueClosedError):
                self.queue.put_many(batch, timeout=0)
        elif count <= room:
            assert self.queue.put_many(batch, timeout=0) == count
            self.store(batch)
        elif self.overflow == "block":
            with pytest.raises(TimeoutError) as info:
                self.queue.put_many(batch, timeout=0)
            assert f"{room} of the batch's {count} items were stored" in info.value.__notes__
            self.store(batch[:room])
        elif self.overflow == "drop_oldest":
            assert self.queue.put_many(batch, timeout=0) == count
            self.store(batch)
            evicted = len(self.items) - self.capacity
            del self.items[:evicted]
            self.dropped_oldest += evicted
            self.high_water = self.capacity
        elif self.overflow == "drop_newest":
            assert self.queue.put_many(batch, timeout=0) == room
            self.store(batch[:room])
            self.dropped_newest += count - room
        else:
            with pytest.raises(QueueFullError):
                self.queue.put_many(batch, timeout=0)

    @rule()
    def get_nowait(self) -> None:
        if self.items:
            assert self.queue.get_nowait() == self.items.pop(0)
            self.get_count += 1
        else:
            with pytest.raises(QueueClosedError if self.closed else WouldBlock):
                self.queue.get_nowait()

    @rule(max_items=st.integers(1, 8))
    def get_many_nowait(self, max_items: int) -> None:
        if self.items:
            expected = self.items[:max_items]
            del self.items[:max_items]
            self.get_count += len(expected)
            assert self.queue.get_many_nowait(max_items) == expected
        else:
            with pytest.raises(QueueClosedError if self.closed else WouldBlock):
                self.queue.get_many_nowait(max_items)

    @rule(max_items=st.integers(1, 8))
    @precondition(lambda self: self.items or self.closed)
    def get_many_without_waiting(self, max_items: int) -> None:
        """``get_many`` when it need not wait: items are there, or the queue is closed."""
        if self.items:
            expected = self.items[:max_items]
            del self.items[:max_items]
            self.get_count += len(expected)
            assert self.queue.get_many(max_items, timeout=0) == expected
        else:
            with pytest.raises(QueueClosedError):
                self.queue.get_many(max_items)

    @rule()
    def close(self) -> None:
        self.queue.close()
        self.closed = True

    @invariant()
    def statistics_match(self) -> None:
        stats = self.queue.statistics()
        actual: dict[str, Any] = {
            "size": stats.size,
            "len": len(self.queue),
            "capacity": stats.capacity,
            "high_water": stats.high_water,
            "put_count": stats.put_count,
            "get_count": stats.get_count,
            "dropped_oldest": stats.dropped_oldest,
            "dropped_newest": stats.dropped_newest,
            "waiting": (stats.waiting_producers, stats.waiting_consumers),
            "closed": (stats.closed, self.queue.closed),
        }
        assert actual == {
            "size": len(self.items),
            "len": len(self.items),
            "capacity": self.capacity,
            "high_water": self.high_water,
            "put_count": self.put_count,
            "get_count": self.get_count,
            "dropped_oldest": self.dropped_oldest,
            "dropped_newest": self.dropped_newest,
            "waiting": (0, 0),
            "closed": (self.closed, self.closed),
        }
        assert stats.size == stats.put_count - stats.get_count - stats.dropped_oldest


RingBufferModel.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRingBufferModel = RingBufferModel.TestCase

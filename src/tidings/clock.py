"""Hybrid logical clock (HLC) and sortable event ids.

A hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks and Consistent
Snapshots in Globally Distributed Databases", 2014) pairs a physical time ``l`` with a
logical counter ``c``. Its two rules, with ``pt`` the local physical clock:

- **send or local event**: ``l' = max(l, pt)``; ``c' = c + 1`` if ``l' == l`` else ``0``;
- **receive** of a remote ``(l_m, c_m)``: ``l' = max(l, l_m, pt)``; ``c'`` is
  ``max(c, c_m) + 1`` if ``l' == l == l_m``, ``c + 1`` if ``l' == l``, ``c_m + 1`` if
  ``l' == l_m``, else ``0``.

tidings packs ``(l, c)`` into one non-negative 64-bit integer whose high bits are nanoseconds
since the Unix epoch with the low 16 bits cleared (``l``, so physical granularity is
65.536 µs) and whose low 16 bits are ``c``. Packed this way the send rule is exactly
``t' = max(t + 1, pt)`` and the receive rule ``t' = max(t + 1, t_m + 1, pt)``; the value
reads as an approximate nanosecond timestamp, sorts by causality, and fits a signed 64-bit
database column until the year 2262. Should ``c`` ever overflow its 16 bits it carries into
``l``, advancing the clock by one granule: order is kept either way.

Guarantees of :class:`HybridClock`, which is safe to share between threads:

- every value returned by :meth:`~HybridClock.now` or :meth:`~HybridClock.update` in one
  process is unique and greater than every value returned before it;
- after ``update(t_m)`` every later value is greater than ``t_m``;
- values never run ahead of ``max(physical time, largest accepted remote time)`` by more
  than the logical counter;
- ``update`` rejects a remote time whose physical part is more than ``max_offset`` ahead of
  the local physical clock with :class:`~tidings.exceptions.ClockSkewError`, so one bad
  clock cannot drag every other one into the future.

The clock takes no lock: its state is a one-element heap advanced with
:func:`heapq.heappushpop`, a single atomic step, in a compare-and-swap loop.
The bus's publish hot path (``tidings._fastpath``) makes the first attempt of
:meth:`HybridClock.now` on the clock's state itself, and falls back to it when it loses a race.
"""

from __future__ import annotations

import os
import time as _time
from collections.abc import Callable
from datetime import UTC, datetime
from heapq import heappushpop

from tidings.exceptions import ClockSkewError

__all__ = (
    "DEFAULT_MAX_OFFSET",
    "LOGICAL_BITS",
    "PHYSICAL_MASK",
    "WALL_MASK",
    "HybridClock",
    "format_event_id",
    "logical",
    "physical_ns",
    "to_datetime",
)

LOGICAL_BITS = 16
"""How many low bits of a packed HLC time hold the logical counter."""

_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
PHYSICAL_MASK = ~_LOGICAL_MASK
"""ANDed with nanoseconds since the epoch, gives the physical part of a packed time."""

WALL_MASK = (1 << 120) - 1 - _LOGICAL_MASK
""":data:`PHYSICAL_MASK` for a physical clock reading (non-negative, below ``2**120``): the
same result, as a non-negative int, which CPython ANDs with another one without first
copying either (the stamp of every publish reads the clock)."""

DEFAULT_MAX_OFFSET = 0.5
"""Default largest lead, in seconds, accepted from a remote clock."""


def physical_ns(t: int) -> int:
    """The physical part of packed HLC time ``t``, in nanoseconds since the epoch."""
    return t & PHYSICAL_MASK


def logical(t: int) -> int:
    """The logical counter of packed HLC time ``t``."""
    return t & _LOGICAL_MASK


def to_datetime(t: int) -> datetime:
    """Packed HLC time ``t`` as an aware UTC :class:`~datetime.datetime` (microseconds)."""
    return datetime.fromtimestamp(physical_ns(t) / 1e9, tz=UTC)


def format_event_id(t: int, node: str) -> str:
    """The text of an event id: 16 hex digits of HLC time then the node's 16 hex digits.

    Ids of one node sort by time; ids of all nodes sort by time, then node, so sorting ids
    as text sorts events in an order consistent with causality.
    """
    return f"{t:016x}{node}"


class HybridClock:
    """A thread-safe hybrid logical clock producing packed 64-bit times (see the module doc).

    Args:
        max_offset: the largest lead, in seconds, accepted from a remote time in
            :meth:`update`. Must be positive.
        wall: the physical clock, returning nanoseconds since the epoch; tests inject one.
        node: this clock's node id, 16 lowercase hex digits; random by default. Event ids
            are the time followed by the node, so two clocks must never share a node.

    Raises:
        ValueError: if ``max_offset`` is not positive or ``node`` is not 16 hex digits.
    """

    __slots__ = ("_state", "_wall", "max_offset_ns", "node")

    def __init__(
        self,
        *,
        max_offset: float = DEFAULT_MAX_OFFSET,
        wall: Callable[[], int] = _time.time_ns,
        node: str | None = None,
    ) -> None:
        if not max_offset > 0:
            raise ValueError(f"max_offset must be a positive number of seconds, not {max_offset!r}")
        if node is None:
            node = os.urandom(8).hex()
        elif len(node) != 16 or any(ch not in "0123456789abcdef" for ch in node):
            raise ValueError(f"node must be 16 lowercase hex digits, not {node!r}")
        self.max_offset_ns = int(max_offset * 1e9)
        self.node = node
        self._wall = wall
        self._state = [0]

    def now(self) -> int:
        """Advance the clock for a local or send event and return the new packed time."""
        state = self._state
        pt = self._wall() & WALL_MASK
        while True:
            t = state[0] + 1
            if pt > t:
                t = pt
            # heappushpop keeps the larger value and returns the smaller one, atomically:
            # getting anything but ``t`` back means ``t`` was above the state, and is now it.
            # It returns the very object ``t`` when ``t`` is not above the state, and the
            # old state (a smaller value, so another object) otherwise: ``is`` tells which.
            if heappushpop(state, t) is not t:
                return t

    def update(self, remote: int) -> int:
        """Merge a received packed time (receive rule) and return the new local time.

        Raises:
            ClockSkewError: if ``remote`` leads the local physical clock by more than
                ``max_offset``.
            ValueError: if ``remote`` is negative.
        """
        if remote < 0:
            raise ValueError(f"an HLC time is a non-negative integer, not {remote!r}")
        state = self._state
        pt = self._wall() & WALL_MASK
        remote_pt = remote & PHYSICAL_MASK
        if remote_pt - pt > self.max_offset_ns:
            raise ClockSkewError(remote_ns=remote_pt, local_ns=pt, max_offset_ns=self.max_offset_ns)
        while True:
            t = state[0] + 1
            if remote >= t:
                t = remote + 1
            if pt > t:
                t = pt
            if heappushpop(state, t) is not t:  # as in now()
                return t

    def peek(self) -> int:
        """The last time issued (0 before the first), without advancing the clock."""
        return self._state[0]

    def event_id(self, t: int) -> str:
        """The event id text for time ``t`` issued by this clock."""
        return format_event_id(t, self.node)

    def __repr__(self) -> str:
        return f"HybridClock(node={self.node!r}, last={self._state[0]})"

"""The encodings a transport's ``check_envelope`` made, kept for the publish of the same
envelope that follows (one encoding per event), and bounded: one whose publish never comes
(the bus's store append failed after the check, say) is dropped after a while, not kept
with its envelope until the transport closes.

An entry is found by the envelope's identity, not its id (another envelope of the same id,
a copy with other data, is encoded for itself); it holds the envelope, so no other object
takes that identity while it is here.

A bus checks an event on the thread that publishes it while its event loop's thread takes
the encodings of events checked before: each step here is one operation on a dict (atomic),
and the drop walks a copy of the entries made in one step (``dict.copy`` runs no Python
code, so no other thread runs in it). A race costs at most an encoding dropped that was
about to be taken, which its publish then makes again.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from tidings.event import Envelope

__all__ = ("WINDOWS", "CheckedEncodings")

T = TypeVar("T")

WINDOWS = 16
"""Envelopes checked after a checked one, in windows, after which its encoding is dropped
whatever was published (see :meth:`CheckedEncodings.keep`)."""


class CheckedEncodings(Generic[T]):
    """Encodings by envelope, for :meth:`take` by the publish that follows the check.

    One no publish takes is dropped once ``window`` envelopes checked after it were taken
    (checked envelopes are published about in check order), or once :data:`WINDOWS`
    windows of envelopes were checked after it (whatever was taken: the bound when nothing
    is). So a few windows of them are kept at most; one dropped and published after all is
    encoded again by its publish. The drop runs once a window of checks, in check order; an
    envelope checked again moves to the end (where its newest check's number goes), so it
    never holds back the drop of those checked after its first check. A publish a closed
    transport refuses takes the encoding to drop it.
    """

    __slots__ = ("_checked", "_entries", "_sweep_at", "_taken", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        """A publisher's window of unacknowledged publishes (at least 1)."""
        self._entries: dict[int, tuple[Envelope[Any], T, int]] = {}
        """By the envelope's identity, in check order: it, its encoding, the number of its
        check."""
        self._checked = 0
        """The number of the last check."""
        self._taken = 0
        """The highest number of a check whose encoding was taken."""
        self._sweep_at = 0
        """The number of the check at which the drop runs next."""

    def __len__(self) -> int:
        return len(self._entries)

    def keep(self, envelope: Envelope[Any], encoding: T) -> None:
        """Keep ``envelope``'s ``encoding`` for :meth:`take` (in place of one kept before)."""
        checked = self._checked = self._checked + 1
        entries, identity = self._entries, id(envelope)
        if identity in entries:  # checked again: moved to the end, where its number goes
            entries.pop(identity, None)
        entries[identity] = envelope, encoding, checked
        if checked >= self._sweep_at:
            self._sweep_at = checked + self.window
            self._drop_stale(checked)

    def take(self, envelope: Envelope[Any]) -> T | None:
        """``envelope``'s kept encoding, no longer kept (``None`` if none is)."""
        entry = self._entries.pop(id(envelope), None)
        if entry is None:
            return None
        if entry[2] > self._taken:
            self._taken = entry[2]
        return entry[1]

    def clear(self) -> None:
        """Keep nothing (the transport closed)."""
        self._entries.clear()

    def _drop_stale(self, newest: int) -> None:
        stale = max(self._taken - self.window, newest - WINDOWS * self.window)
        entries = self._entries
        for identity, entry in entries.copy().items():  # in check order
            if entry[2] >= stale:
                break
            if entries.get(identity) is entry:  # else taken meanwhile, or checked again
                entries.pop(identity, None)

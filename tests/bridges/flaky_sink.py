"""A bridge's sink (its intake without a bus) that refuses its first calls, for the tests
that a refusal which may pass is retried while the message waits."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from tidings.event import Envelope

__all__ = ("FlakySink",)


class FlakySink:
    """Refuses its first ``refusals`` calls with :class:`ConnectionError` ("the log is
    away"), then accepts; the ids of what it accepted are in :attr:`accepted`, in order."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.accepted: list[str] = []
        self._calls = itertools.count(1)

    async def __call__(self, envelopes: Sequence[Envelope[Any]]) -> None:
        if next(self._calls) <= self.refusals:
            raise ConnectionError("the log is away")
        self.accepted.extend(env.id for env in envelopes)

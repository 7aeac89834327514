"""A SQLite log that records the size of each append (one transaction each), for the tests
that bridges append a burst of messages together, and that can be made to refuse appends."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tidings.event import Envelope
from tidings.exceptions import StoreUnavailableError
from tidings.store import SQLiteStore

__all__ = ("CountingStore",)


class CountingStore(SQLiteStore):
    """A SQLite log that records how many events each append call (one transaction)
    carried, in :attr:`batches`; while :attr:`refusing`, each append call is refused
    (:class:`StoreUnavailableError`, a refusal that may pass) and recorded in
    :attr:`refused` instead."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.refusing = False
        self.refused: list[int] = []

    async def append(self, envelopes: Iterable[Envelope[Any]], **options: Any) -> list[int]:
        envelopes = list(envelopes)
        if self.refusing:
            self.refused.append(len(envelopes))
            raise StoreUnavailableError("the log is away (refusing, for the test)")
        self.batches.append(len(envelopes))
        return await super().append(envelopes, **options)

"""For the tests that several writers append to one log while a follower reads it live: the
follower, and the checks that the log came out gap-free, interleaved and as reported."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

from tidings.store import EventStore, StoredEvent

__all__ = ("assert_one_interleaved_log", "follow")


async def follow(store: EventStore, count: int) -> list[StoredEvent]:
    """The first ``count`` records of ``store``'s live feed, as it delivered them."""
    followed: list[StoredEvent] = []
    async with store.subscribe(unknown="raw") as events:
        async for record in events:
            followed.append(record)
            if len(followed) == count:
                break
    return followed


def assert_one_interleaved_log(
    records: Sequence[StoredEvent],
    followed: Sequence[StoredEvent],
    reports: Iterable[Mapping[str, int]],
    ids: set[str],
    writers: int,
) -> None:
    """``records`` (the whole log) hold exactly ``ids`` at positions 1, 2, ... with no gap,
    each at the position its writer was told (``reports``: ``id -> position``), the
    ``writers`` interleaved; the follower saw the same records in the same order."""
    total = len(ids)
    assert [r.position for r in records] == list(range(1, total + 1))
    stored = [r.id for r in records]
    assert set(stored) == ids
    for report in reports:
        for event_id, position in report.items():
            assert records[position - 1].id == event_id
    switches = sum(a.envelope.source != b.envelope.source for a, b in itertools.pairwise(records))
    assert switches > writers, "the writers did not run concurrently"
    assert [r.position for r in followed] == list(range(1, total + 1))
    assert [r.id for r in followed] == stored

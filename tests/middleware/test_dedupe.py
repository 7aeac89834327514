"""Dedupe: a bounded window of recent ids in memory; store-backed across a restart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings import Envelope, SQLiteStore
from tidings.event import NO_HEADERS
from tidings.middleware import Dedupe


@tidings.event("test.mw.dedupe")
@dataclass(frozen=True)
class Paid:
    n: int


def _env(n: int, event_id: str) -> Envelope[Paid]:
    return Envelope("test.mw.dedupe", Paid(n), 0, None, "test", NO_HEADERS, event_id)


async def _wait(condition: Any, timeout: float = 10.0) -> None:
    """Poll what the log follower's task writes, letting it run, until the timeout."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - plain lists written by handlers
            await asyncio.sleep(0.001)


def test_a_redelivered_id_is_dropped_within_the_window() -> None:
    got: list[int] = []
    dedupe = Dedupe(window=2)
    handler = dedupe(lambda env: got.append(env.payload.n))
    handler(_env(1, "a"))
    handler(_env(1, "a"))  # redelivered: dropped
    handler(_env(2, "b"))
    handler(_env(3, "c"))  # "a" leaves the window of 2
    handler(_env(2, "b"))  # still remembered: dropped
    handler(_env(1, "a"))  # forgotten: handled again
    assert got == [1, 2, 3, 1]
    assert dedupe.dropped == 2


def test_a_failed_call_forgets_its_id_so_a_redelivery_is_handled() -> None:
    calls: list[str] = []

    def handler(env: Envelope[Paid]) -> None:
        calls.append(env.id)
        if len(calls) == 1:
            raise ValueError("first try fails")

    deduped = Dedupe()(handler)
    with pytest.raises(ValueError, match="first try"):
        deduped(_env(1, "a"))
    deduped(_env(1, "a"))
    deduped(_env(1, "a"))
    assert calls == ["a", "a"]


def test_each_wrapped_handler_has_its_own_window(bus: tidings.Bus) -> None:
    dedupe = Dedupe()
    got: list[str] = []
    first = dedupe(lambda env: got.append("first"))
    second = dedupe(lambda env: got.append("second"))
    first(_env(1, "a"))
    second(_env(1, "a"))
    assert got == ["first", "second"]


async def _run(path: Path, handler_kind: str, new_events: range, log_size: int) -> list[int]:
    """Open a bus on ``path``, follow its log from the start through a store-backed Dedupe
    while publishing ``new_events``, until all ``log_size`` records were handled or dropped;
    the payloads handled, then the count dropped."""
    got: list[int] = []
    async with tidings.Bus(store=SQLiteStore(path)) as bus:
        assert bus.store is not None
        dedupe = Dedupe(store=bus.store, consumer="payments")
        if handler_kind == "async":

            async def handle(event: Paid) -> None:
                got.append(event.n)

            bus.subscribe(Paid, handle, from_=0, middleware=[dedupe])
        else:
            bus.subscribe(Paid, lambda e: got.append(e.n), from_=0, middleware=[dedupe])
        for i in new_events:
            bus.publish(Paid(i))
        await _wait(lambda: len(got) + dedupe.dropped == log_size)
    return [*got, dedupe.dropped]


@pytest.mark.parametrize("handler_kind", ["async", "sync"])
async def test_store_backed_dedupe_holds_across_a_restart(
    tmp_path: Path, handler_kind: str
) -> None:
    path = tmp_path / "events.db"
    assert await _run(path, handler_kind, range(5), 5) == [0, 1, 2, 3, 4, 0]
    # after the restart the follower replays the log from the start: the first five were
    # handled before, so they are dropped (5); only the new events are handled
    assert await _run(path, handler_kind, range(5, 7), 7) == [5, 6, 5]


async def test_store_records_are_the_idempotent_consumer_records(tmp_path: Path) -> None:
    async with tidings.Bus(store=SQLiteStore(tmp_path / "events.db")) as bus:
        assert bus.store is not None

        async def handle(event: Paid) -> None:
            pass

        bus.subscribe(Paid, handle, middleware=[Dedupe(store=bus.store, consumer="x")])
        env = bus.publish(Paid(1))
        assert await bus.store.was_handled("dedupe:x", env.id)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        Dedupe(window=0)
    with pytest.raises(ValueError, match="consumer"):
        Dedupe(consumer=" ")

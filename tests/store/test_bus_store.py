"""The bus on a durable log: write-ahead, replay, projections, catch-up and durable consumers."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings import DeadLetter, Projection
from tidings.store import MemoryStore, SQLiteStore
from tidings.transports.memory import MemoryBroker, MemoryTransport

from .conftest import PostgresHarness


@tidings.event("test.log.deposited")
@dataclass(frozen=True)
class Deposited:
    account: str
    amount: int


@tidings.event("test.log.withdrawn")
@dataclass(frozen=True)
class Withdrawn:
    account: str
    amount: int


@dataclass
class Balances:
    totals: dict[str, int]


NONE: dict[str, int] = {}


def _balance(state: dict[str, int], event: Any) -> dict[str, int]:
    sign = 1 if isinstance(event, Deposited) else -1
    return {**state, event.account: state.get(event.account, 0) + sign * event.amount}


async def _wait_for_checkpoint(store: Any, name: str, position: int) -> None:
    async with asyncio.timeout(10):
        while await store.load_checkpoint(name) != position:  # noqa: ASYNC110 - a store row
            await asyncio.sleep(0.001)


async def _wait(condition: Any, timeout: float = 10.0) -> None:
    """Poll what the log follower's task writes, letting it run, until the timeout."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - plain lists written by handlers
            await asyncio.sleep(0.001)


async def test_every_publish_is_appended_before_handlers_see_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "events.db")
    seen_positions: list[int] = []
    async with tidings.Bus(store=store) as bus:

        async def handler(event: Deposited) -> None:
            seen_positions.append(await store.last_position())

        bus.subscribe(Deposited, handler)
        envelopes = [bus.publish(Deposited("a", i)) for i in range(3)]
        delivery = await bus.emit(Deposited("a", 9))
        records = await store.read()
        assert [r.envelope.id for r in records] == [e.id for e in envelopes] + [
            delivery.envelope.id
        ]
    assert seen_positions == [1, 2, 3, 4]  # each handler saw its own event already stored


def test_a_synchronous_program_s_bus_closes_its_sqlite_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "events.db")
    seen: list[int] = []
    with tidings.Bus(store=store) as bus:
        bus.subscribe(Deposited, lambda event: seen.append(event.amount))
        bus.publish(Deposited("a", 1))
        assert store.append_sync([]) == []  # still open inside the block
    assert seen == [1]
    assert store.closed
    with pytest.raises(tidings.StoreClosedError):
        asyncio.run(store.read())
    reopened = SQLiteStore(tmp_path / "events.db")
    assert [r.envelope.payload for r in asyncio.run(reopened.read())] == [Deposited("a", 1)]
    asyncio.run(reopened.aclose())


async def test_a_failed_append_is_raised_and_nothing_is_dispatched() -> None:
    async with tidings.Bus(store=MemoryStore()) as bus:
        seen: list[object] = []
        bus.subscribe("test.log.raw", seen.append)
        with pytest.raises(tidings.EncodeError):
            bus.publish(object(), topic="test.log.raw")
        assert seen == []
        assert await bus.store.last_position() == 0  # type: ignore[union-attr]


async def test_replay_by_topic_position_and_time() -> None:
    async with tidings.Bus(store="memory://") as bus:
        bus.publish(Deposited("a", 10))
        bus.publish(Withdrawn("a", 3))
        middle = bus.publish(Deposited("b", 5))
        bus.publish(Deposited("a", 1))
        everything = await bus.replay(_balance, NONE)
        assert everything == {"a": 8, "b": 5}
        assert await bus.replay(_balance, NONE, topic="test.log.deposited") == {"a": 11, "b": 5}
        assert await bus.replay(_balance, NONE, after=2) == {"b": 5, "a": 1}
        assert await bus.replay(_balance, NONE, upto=2) == {"a": 7}
        assert await bus.replay(_balance, NONE, since=middle.time) == {"b": 5, "a": 1}
        assert await bus.replay(_balance, NONE, until=middle.time) == {"a": 7}
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
        assert await bus.replay(_balance, NONE, since=later) == {}
        with pytest.raises(ValueError, match="timezone-aware"):
            await bus.replay(_balance, NONE, since=datetime.datetime(2026, 1, 1))


async def test_projection_snapshots_every_n_events_and_resumes_from_the_latest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    folds = [0]

    def counting(state: Balances, event: Any) -> Balances:
        folds[0] += 1
        return Balances(_balance(state.totals, event))

    async with tidings.Bus(store=SQLiteStore(path)) as bus:
        for _ in range(25):
            bus.publish(Deposited("a", 1))
        first = Projection("balances", counting, Balances({}), every=10, state_type=Balances)
        assert (await bus.project(first)).totals == {"a": 25}
        assert folds[0] == 25
        snapshot = await bus.store.load_snapshot("balances")  # type: ignore[union-attr]
        assert snapshot is not None
        assert snapshot.position == 25  # saved at 10, 20 and after the catch-up
    async with tidings.Bus(store=SQLiteStore(path)) as bus:
        for _ in range(3):
            bus.publish(Withdrawn("a", 1))
        again = Projection("balances", counting, Balances({}), every=10, state_type=Balances)
        assert (await bus.project(again)).totals == {"a": 22}
        assert folds[0] == 28  # only the 3 new events were folded
        assert again.position == 28


async def test_catch_up_subscription_has_no_gap_and_no_duplicate_at_the_seam() -> None:
    async with tidings.Bus(store=MemoryStore()) as bus:
        for i in range(50):
            bus.publish(Deposited("a", i))
        got: list[int] = []
        bus.subscribe(Deposited, lambda e: got.append(e.amount), from_=0)
        for i in range(50, 100):  # published while the subscription catches up
            bus.publish(Deposited("a", i))
            if i % 10 == 0:
                await asyncio.sleep(0)
        await _wait(lambda: len(got) >= 100)
        bus.publish(Deposited("a", 100))
        await _wait(lambda: len(got) == 101)
        assert got == list(range(101))


async def test_catch_up_from_a_position_and_by_class() -> None:
    async with tidings.Bus(store=MemoryStore()) as bus:
        bus.publish(Deposited("a", 1))
        bus.publish(Withdrawn("a", 2))
        bus.publish(Deposited("a", 3))
        got: list[object] = []
        bus.subscribe(Deposited, got.append, from_=1)
        await _wait(lambda: len(got) == 1)
        assert got == [Deposited("a", 3)]


async def test_durable_consumer_resumes_after_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    handled: list[int] = []
    async with tidings.Bus(store=SQLiteStore(path)) as bus:
        bus.subscribe(Deposited, lambda e: handled.append(e.amount), durable="ledger")
        for i in range(5):
            bus.publish(Deposited("a", i))
        await _wait(lambda: len(handled) == 5)
    async with tidings.Bus(store=SQLiteStore(path)) as bus:
        for i in range(5, 8):
            bus.publish(Deposited("a", i))
        bus.subscribe(Deposited, lambda e: handled.append(e.amount), durable="ledger")
        await _wait(lambda: len(handled) == 8)
        await _wait_for_checkpoint(bus.store, "ledger", 8)
    assert handled == list(range(8))  # each once, none skipped across the restart


async def test_durable_consumer_retries_then_dead_letters_and_moves_on() -> None:
    async with tidings.Bus(store=MemoryStore()) as bus:
        attempts: dict[int, int] = {}
        dead: list[DeadLetter] = []
        bus.subscribe(DeadLetter, dead.append)

        async def flaky(event: Deposited) -> None:
            attempts[event.amount] = attempts.get(event.amount, 0) + 1
            if event.amount == 1 or (event.amount == 2 and attempts[2] < 2):
                raise RuntimeError(f"refused {event.amount}")

        bus.subscribe(Deposited, flaky, durable="flaky", max_attempts=3)
        for i in range(4):
            bus.publish(Deposited("a", i))
        await _wait(lambda: attempts.get(3) == 1)
        assert attempts == {0: 1, 1: 3, 2: 2, 3: 1}  # 2 succeeded on its retry
        assert [(d.envelope.payload.amount, d.attempts) for d in dead] == [(1, 3)]
        await _wait_for_checkpoint(bus.store, "flaky", 4)


async def test_idempotent_consumer_skips_what_it_already_handled() -> None:
    handled: list[int] = []

    def handle(event: Deposited) -> None:
        handled.append(event.amount)

    async with tidings.Bus(store=MemoryStore()) as bus:
        store = bus.store
        assert store is not None
        first = bus.subscribe(Deposited, handle, durable="once", idempotent=True)
        for i in range(3):
            bus.publish(Deposited("a", i))
        await _wait(lambda: len(handled) == 3)
        ids = [r.envelope.id for r in await store.read()]
        assert [await store.was_handled("once", i) for i in ids] == [True] * 3
        first.cancel()
        await store.commit("once", 0)  # rewind the checkpoint: the log will be redelivered
        bus.subscribe(Deposited, handle, durable="once", idempotent=True)
        bus.publish(Deposited("a", 3))
        await _wait(lambda: len(handled) == 4)
        await _wait_for_checkpoint(store, "once", 4)
    assert handled == [0, 1, 2, 3]  # the first three were skipped, not handled twice


async def test_log_following_needs_a_store_and_sane_arguments() -> None:
    async with tidings.Bus() as bus:
        with pytest.raises(tidings.InvalidHandlerError, match=r"Bus\(store=\.\.\.\)"):
            bus.subscribe(Deposited, print, from_=0)
        with pytest.raises(tidings.InvalidHandlerError, match=r"Bus\(store=\.\.\.\)"):
            await bus.replay(_balance, NONE)
        with pytest.raises(tidings.InvalidHandlerError, match="idempotent=True needs durable"):
            bus.subscribe(Deposited, print, idempotent=True)
    async with tidings.Bus(store=MemoryStore()) as bus:
        with pytest.raises(ValueError, match="from_ is a log position"):
            bus.subscribe(Deposited, print, from_=-1)
        with pytest.raises(ValueError, match="durable is a non-empty"):
            bus.subscribe(Deposited, print, durable=" ")
        with pytest.raises(ValueError, match="max_attempts"):
            bus.subscribe(Deposited, print, durable="x", max_attempts=0)
        with pytest.raises(tidings.InvalidHandlerError, match="cannot also be queued"):
            bus.subscribe(Deposited, print, durable="x", mode="queued")
    with pytest.raises(tidings.InvalidStoreURLError):
        tidings.Bus(store="mysql://nope")


async def test_cancelling_a_follower_stops_it() -> None:
    async with tidings.Bus(store=MemoryStore()) as bus:
        got: list[int] = []
        sub = bus.subscribe(Deposited, lambda e: got.append(e.amount), from_=0)
        bus.publish(Deposited("a", 1))
        await _wait(lambda: got == [1])
        sub.cancel()
        bus.publish(Deposited("a", 2))
        delivery = await bus.emit(Deposited("a", 3))
        assert delivery.ok
        assert got == [1]


@asynccontextmanager
async def _postgres_bus(
    harness: PostgresHarness,
) -> AsyncIterator[tuple[tidings.Bus, Any, list[int]]]:
    """A bus on a PostgreSQL store (async-only appends), recording deposited amounts."""
    store = await harness.open()
    seen: list[int] = []
    async with tidings.Bus(store=store) as bus:
        bus.subscribe(Deposited, lambda e: seen.append(e.amount))
        yield bus, store, seen


async def test_async_store_publish_on_the_loop_appends_then_dispatches(
    postgres_harness: PostgresHarness,
) -> None:
    async with _postgres_bus(postgres_harness) as (bus, store, seen):
        envelope = bus.publish(Deposited("a", 1))  # cannot wait for PostgreSQL here
        assert seen == []  # dispatched once the append is done
        await bus.emit(Deposited("a", 2))
        await _wait(lambda: len(seen) == 2)
        records = await store.read()
        assert envelope.id in [r.envelope.id for r in records]
        thread_envelope = await asyncio.to_thread(bus.publish, Deposited("a", 3))
        assert await store.last_position() == 3
        assert (await store.read(after=2))[0].envelope.id == thread_envelope.id
    assert sorted(seen) == [1, 2, 3]


@dataclass(frozen=True)
class Legacy:  # not @tidings.event: only a store that appended one knows its class
    x: int


async def test_a_follower_stalls_on_an_undecodable_record_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.db"
    async with tidings.Bus(store=SQLiteStore(path)) as writer:
        writer.publish(Deposited("a", 1))
        writer.publish(Legacy(1), topic="test.log.legacy")
        writer.publish(Deposited("a", 2))
    seen: list[Any] = []
    store = SQLiteStore(path)
    async with tidings.Bus(store=store) as bus:
        bus.subscribe("test.log.>", seen.append, durable="reader")
        await _wait(lambda: "stalled after position 1" in caplog.text)
        assert seen == [Deposited("a", 1)]  # the record before the bad one was delivered
        report = await bus.aclose()
    [stalled] = report.unfinished
    assert "log follower stalled after position 1" in stalled
    assert "event type 'legacy'" in stalled
    assert await SQLiteStore(path).load_checkpoint("reader") == 1

    store = SQLiteStore(path)
    store.register_type(Legacy)  # now it decodes: the follower resumes where it stalled
    async with tidings.Bus(store=store) as bus:
        bus.subscribe("test.log.>", seen.append, durable="reader")
        await _wait(lambda: len(seen) == 3)
    assert seen[1:] == [Legacy(1), Deposited("a", 2)]


async def test_a_raising_filter_fails_a_follower_s_event_not_the_follower() -> None:
    dead: list[DeadLetter] = []
    got: list[int] = []
    async with tidings.Bus(store=MemoryStore()) as bus:
        bus.subscribe(DeadLetter, dead.append)
        bus.subscribe(
            Deposited,
            lambda e: got.append(e.amount),
            durable="picky",
            max_attempts=1,
            where=lambda e: 10 // e.amount > 0,
        )
        for amount in (1, 0, 2):
            bus.publish(Deposited("a", amount))
        await _wait(lambda: got == [1, 2])
        await _wait_for_checkpoint(bus.store, "picky", 3)
    [letter] = dead
    assert isinstance(letter.error, ZeroDivisionError)
    assert letter.envelope.payload == Deposited("a", 0)


async def test_async_store_appends_and_dispatches_in_publish_order(
    postgres_harness: PostgresHarness,
) -> None:
    async with _postgres_bus(postgres_harness) as (bus, store, seen):
        for i in range(30):
            bus.publish(Deposited("a", i))  # deferred: appended by one task, in order
        await bus.emit(Deposited("a", 30))  # appended after them
        assert seen == list(range(31))
        records = await store.read()
    assert [r.envelope.payload.amount for r in records] == list(range(31))


async def test_async_store_and_transport_send_each_deferred_append_once_in_order(
    postgres_harness: PostgresHarness,
) -> None:
    """With a store and a transport (the two-part carrier), a publish on the loop's thread
    defers its append to a task; the event is sent once the task has appended it, so the
    server gets every event once, in publish order, and each is in the store."""
    store = await postgres_harness.open()
    broker = MemoryBroker()
    seen: list[int] = []
    async with tidings.Bus(store=store, transport=MemoryTransport(broker)) as bus:
        bus.subscribe(Deposited, lambda e: seen.append(e.amount))  # from the server
        for i in range(30):
            bus.publish(Deposited("a", i))  # deferred: appended, then sent, by one task
        await bus.emit(Deposited("a", 30))  # appended after them, then awaited on the server
        await _wait(lambda: len(seen) == 31)
        records = await store.read()
        assert len(broker) == 31  # sent once each
    assert seen == list(range(31))
    assert [r.envelope.payload.amount for r in records] == list(range(31))


@tidings.event("test.log.odd")
@dataclass(frozen=True)
class Odd:
    thing: object


async def test_async_store_an_event_that_cannot_be_appended_fails_alone(
    postgres_harness: PostgresHarness, caplog: pytest.LogCaptureFixture
) -> None:
    async with _postgres_bus(postgres_harness) as (bus, store, seen):
        bus.subscribe(Odd, lambda e: seen.append(-1))
        bus.publish(Deposited("a", 1))
        odd = bus.publish(Odd(object()))  # msgspec cannot encode it
        bus.publish(Deposited("a", 2))
        await _wait(lambda: seen == [1, 2])
        records = await store.read()
    assert f"could not append event {odd.id}" in caplog.text
    assert [r.envelope.payload.amount for r in records] == [1, 2]


async def test_a_store_subscription_yields_the_records_before_an_undecodable_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    async with tidings.Bus(store=SQLiteStore(path)) as writer:
        writer.publish(Deposited("a", 1))
        writer.publish(Legacy(1), topic="test.log.legacy")
    store = SQLiteStore(path)
    async with asyncio.timeout(10), store.subscribe() as records:
        first = await anext(records)
        assert first.position == 1
        for _ in range(2):  # not consumed: asking again raises again
            with pytest.raises(tidings.UnknownEventTypeError) as caught:
                await anext(records)
            assert caught.value.position == 2
            assert records.position == 1
        store.register_type(Legacy)
        assert (await anext(records)).envelope.payload == Legacy(1)
    await store.aclose()


async def test_publish_then_replay_reads_your_writes_on_every_store(store_url: str) -> None:
    # Regression: on PostgreSQL, publish() from the loop's thread appended behind the
    # publisher, so an immediate replay saw none of the events; SQLite saw them all.
    async with tidings.Bus(store=store_url) as bus:
        for n in range(5):
            bus.publish(Deposited("a", n))
        total = await bus.replay(lambda state, event: state + event.amount, 0)
        assert total == 0 + 1 + 2 + 3 + 4
        projected = await bus.project(
            Projection("sum", lambda state, event: state + event.amount, 0, every=100)
        )
        assert projected == 10
        bus.publish(Deposited("a", 5))
        await bus.flush()  # a direct read of the store needs the flush
        assert bus.store is not None
        assert len(await bus.store.read()) == 6

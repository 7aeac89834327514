"""The conformance suite every event store must pass.

Subclass :class:`StoreConformance` in a test module and provide a ``harness`` fixture
returning a :class:`StoreHarness` for the store under test; pytest then runs every test of
the suite against it (tests a store's :class:`~tidings.store.StoreFeatures` rule out are
skipped)::

    import pytest
    from tidings.testing.store_conformance import StoreConformance, StoreHarness

    class MyHarness(StoreHarness):
        def __init__(self, path): self.path = path
        async def open(self): return MyStore(self.path)

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def harness(self, tmp_path):
            return MyHarness(tmp_path / "log")

The suite needs pytest and pytest-asyncio (it marks its tests ``asyncio``). It registers
event classes under topics beginning ``suite.conformance.`` (not under ``tidings.``: those
are internal topics, which no leading wildcard matches; see :mod:`tidings.topics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import msgspec
import pytest
import pytest_asyncio

from tidings.clock import HybridClock
from tidings.event import NO_HEADERS, Envelope, event
from tidings.exceptions import (
    ConcurrencyError,
    DecodeError,
    EncodeError,
    StoreClosedError,
    UnknownEventTypeError,
)
from tidings.store import ANY, NO_STREAM, EventStore, StoredEvent, SupportsSyncAppend

__all__ = ("Placed", "Shipped", "StoreConformance", "StoreHarness", "envelope")

WAIT = 10.0
"""Seconds any single wait in the suite may take before the test fails."""


@event("suite.conformance.placed")
@dataclasses.dataclass(frozen=True)
class Placed:
    """A frozen-dataclass event used by the suite."""

    order_id: str
    amount: float


@event("suite.conformance.shipped")
class Shipped(msgspec.Struct, frozen=True):
    """A msgspec-Struct event used by the suite."""

    order_id: str
    carrier: str = "post"


@event("suite.conformance.versioned", version=1)
@dataclasses.dataclass(frozen=True)
class _VersionedV1:
    name: str


@dataclasses.dataclass(frozen=True)
class _VersionedV2:
    __tidings_version__: ClassVar[int] = 2
    first: str
    last: str


_clock = HybridClock()


def envelope(
    payload: Any,
    *,
    topic: str | None = None,
    key: str | None = None,
    source: str = "conformance",
    headers: Mapping[str, str] | None = None,
    event_id: str | None = None,
) -> Envelope[Any]:
    """An envelope as the bus would build it (HLC time, node id), for tests."""
    from tidings.event import topic_of

    return Envelope(
        topic if topic is not None else topic_of(type(payload)),
        payload,
        _clock.now(),
        key,
        source,
        NO_HEADERS if not headers else MappingProxyType(dict(headers)),
        event_id,
        _clock.node,
    )


def placed(count: int, *, start: int = 0, **kwargs: Any) -> list[Envelope[Any]]:
    """``count`` envelopes of :class:`Placed` events."""
    return [envelope(Placed(f"o{i}", float(i)), **kwargs) for i in range(start, start + count)]


class StoreHarness:
    """How the suite opens, and tampers with, the log of one store under test.

    Override :meth:`open`; override :meth:`tamper` to enable the tamper-evidence and
    bad-payload tests, and :meth:`cleanup` to remove what the log left behind.
    """

    async def open(self) -> EventStore:
        """A new store on this harness's log (for a durable store, the same log each time)."""
        raise NotImplementedError

    async def tamper(
        self, position: int, *, payload: str | None = None, type_name: str | None = None
    ) -> None:
        """Overwrite, behind the store's back, the payload or type name stored at a position."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Remove the log (called once after each test)."""


async def _next(events: AsyncIterator[StoredEvent]) -> StoredEvent:
    return await asyncio.wait_for(anext(events), WAIT)


async def _take(events: AsyncIterator[StoredEvent], count: int) -> list[StoredEvent]:
    return [await _next(events) for _ in range(count)]


def _positions(records: Iterable[StoredEvent]) -> list[int]:
    return [record.position for record in records]


@pytest.mark.asyncio
class StoreConformance:
    """The suite. Provide a ``harness`` fixture (see the module docstring)."""

    @pytest.fixture
    def harness(self) -> StoreHarness:
        """Override with the harness of the store under test."""
        raise NotImplementedError("override the harness fixture in your StoreConformance subclass")

    @pytest_asyncio.fixture
    async def store(self, harness: StoreHarness) -> AsyncIterator[EventStore]:
        """An open store from the harness, closed (and cleaned up) after the test."""
        store = await harness.open()
        try:
            async with store:
                yield store
        finally:
            await harness.cleanup()

    async def _tamper(self, harness: StoreHarness, position: int, **change: Any) -> None:
        try:
            await harness.tamper(position, **change)
        except NotImplementedError:
            pytest.skip("the harness cannot tamper with stored records")

    # -- appending -------------------------------------------------------------------------

    async def test_an_empty_log(self, store: EventStore) -> None:
        assert await store.last_position() == 0
        assert await store.read() == []
        assert await store.verify() is None
        assert await store.stream_version("nothing") == 0

    async def test_positions_are_one_based_gap_free_and_in_order(self, store: EventStore) -> None:
        assert await store.append(placed(2)) == [1, 2]
        assert await store.append(placed(1, start=2)) == [3]
        assert await store.append(placed(3, start=3)) == [4, 5, 6]
        assert await store.append([]) == []
        assert await store.last_position() == 6
        records = await store.read()
        assert _positions(records) == [1, 2, 3, 4, 5, 6]
        assert [r.payload.order_id for r in records] == [f"o{i}" for i in range(6)]

    async def test_a_record_keeps_its_envelope_exactly(self, store: EventStore) -> None:
        sent = [
            envelope(
                Placed("o1", 12.5),
                key="customer-7",
                source="shop/eu",
                headers={"traceparent": "00-abc-def-01", "tenant": "t1"},
            ),
            envelope(Shipped("o1", "dhl"), event_id="given-id-1"),
            envelope({"free": ["form", 1, None]}, topic="suite.conformance.plain"),
            envelope("just text", topic="suite.conformance.plain"),
        ]
        await store.append(sent)
        records = await store.read()
        for record, original in zip(records, sent, strict=True):
            got = record.envelope
            assert (got.id, got.topic, got.time, got.key, got.source) == (
                original.id,
                original.topic,
                original.time,
                original.key,
                original.source,
            )
            assert dict(got.headers) == dict(original.headers)
            assert got.payload == original.payload
            assert type(got.payload) is type(original.payload)
            assert len(record.hash) == 64
            int(record.hash, 16)
        assert [(r.type_name, r.type_version) for r in records] == [
            ("suite.conformance.placed", 1),
            ("suite.conformance.shipped", 1),
            (None, 0),
            (None, 0),
        ]
        assert records[1].id == "given-id-1"
        assert len({r.hash for r in records}) == 4

    async def test_a_pydantic_model_round_trips(self, store: EventStore) -> None:
        pydantic = pytest.importorskip("pydantic")

        @event("suite.conformance.pydantic")
        class Refunded(pydantic.BaseModel):  # type: ignore[name-defined,misc]
            order_id: str
            amount: float

        sent = envelope(Refunded(order_id="o1", amount=3.5))
        await store.append([sent])
        [record] = await store.read()
        assert record.payload == sent.payload
        assert type(record.payload) is Refunded

    async def test_an_unencodable_payload_writes_nothing(self, store: EventStore) -> None:
        await store.append(placed(1))
        with pytest.raises(EncodeError, match="object"):
            await store.append([*placed(1), envelope(object(), topic="suite.conformance.plain")])
        assert await store.last_position() == 1

    # -- streams and optimistic concurrency ------------------------------------------------

    async def test_streams_count_versions(self, store: EventStore) -> None:
        await store.append(placed(2), stream="order-1", expected_version=NO_STREAM)
        await store.append(placed(1), stream="order-2")
        await store.append(placed(1, start=9), stream="order-1", expected_version=2)
        assert await store.stream_version("order-1") == 3
        assert await store.stream_version("order-2") == 1
        records = await store.read(stream="order-1")
        assert [(r.position, r.stream, r.stream_version) for r in records] == [
            (1, "order-1", 1),
            (2, "order-1", 2),
            (4, "order-1", 3),
        ]
        assert await store.read(after=4) == []
        await store.append(placed(1))
        [last] = await store.read(after=4)
        assert (last.stream, last.stream_version) == (None, None)

    async def test_a_wrong_expected_version_names_stream_expected_and_actual(
        self, store: EventStore
    ) -> None:
        await store.append(placed(2), stream="order-1")
        with pytest.raises(ConcurrencyError) as caught:
            await store.append(placed(1, start=5), stream="order-1", expected_version=1)
        error = caught.value
        assert (error.stream, error.expected, error.actual) == ("order-1", 1, 2)
        assert "'order-1'" in str(error)
        assert "version 2" in str(error)
        assert "version 1" in str(error)
        with pytest.raises(ConcurrencyError) as caught:
            await store.append(placed(1, start=6), stream="order-1", expected_version=NO_STREAM)
        assert (caught.value.expected, caught.value.actual) == (0, 2)
        with pytest.raises(ConcurrencyError):
            await store.append(placed(1, start=7), stream="order-9", expected_version=3)
        assert await store.last_position() == 2
        assert await store.stream_version("order-1") == 2

    async def test_expected_version_needs_a_stream(self, store: EventStore) -> None:
        with pytest.raises(ValueError, match="needs a stream"):
            await store.append(placed(1), expected_version=NO_STREAM)
        with pytest.raises(ValueError, match="expected_version"):
            await store.append(placed(1), stream="s", expected_version=-1)
        assert await store.append(placed(1), expected_version=ANY) == [1]

    # -- idempotency -----------------------------------------------------------------------

    async def test_reappending_an_id_returns_its_position_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        first = placed(3)
        assert await store.append(first, stream="s", expected_version=NO_STREAM) == [1, 2, 3]
        # A retry with the now stale expected version succeeds: nothing new is written.
        assert await store.append(first, stream="s", expected_version=NO_STREAM) == [1, 2, 3]
        assert await store.append(first[1:2]) == [2]
        assert await store.last_position() == 3
        assert await store.stream_version("s") == 3

    async def test_a_mixed_batch_skips_known_ids_and_appends_new_ones(
        self, store: EventStore
    ) -> None:
        known = placed(2)
        await store.append(known)
        new = placed(2, start=10)
        batch = [new[0], known[1], new[1], new[0], known[0]]
        assert await store.append(batch) == [3, 2, 4, 3, 1]
        assert _positions(await store.read()) == [1, 2, 3, 4]
        assert [r.id for r in await store.read(after=2)] == [new[0].id, new[1].id]
        assert await store.verify() is None

    async def test_a_mixed_batch_checks_the_expected_version(self, store: EventStore) -> None:
        known = placed(1)
        await store.append(known, stream="s")
        with pytest.raises(ConcurrencyError):
            await store.append([*known, *placed(1, start=5)], stream="s", expected_version=0)
        assert await store.append([*known, *placed(1, start=5)], stream="s", expected_version=1)
        assert await store.stream_version("s") == 2

    # -- reading ---------------------------------------------------------------------------

    async def test_read_filters(self, store: EventStore) -> None:
        await store.append(placed(3))
        await store.append([envelope(Shipped("o1"))], stream="order-1")
        await store.append([envelope({"n": 1}, topic="suite.conformance.eu.placed")])
        await store.append(placed(2, start=3), stream="order-1")
        assert _positions(await store.read(after=2)) == [3, 4, 5, 6, 7]
        assert _positions(await store.read(after=2, upto=5)) == [3, 4, 5]
        assert _positions(await store.read(limit=2)) == [1, 2]
        assert _positions(await store.read(after=1, limit=3)) == [2, 3, 4]
        assert await store.read(limit=0) == []
        assert _positions(await store.read(topic="suite.conformance.placed")) == [1, 2, 3, 6, 7]
        assert _positions(await store.read(topic="suite.conformance.*")) == [1, 2, 3, 4, 6, 7]
        assert _positions(await store.read(topic="suite.conformance.>")) == [1, 2, 3, 4, 5, 6, 7]
        assert _positions(await store.read(topic="suite.*.*.placed")) == [5]
        assert _positions(await store.read(topic="*.conformance.shipped")) == [4]
        assert _positions(await store.read(topic=">")) == [1, 2, 3, 4, 5, 6, 7]
        assert _positions(await store.read(topic="suite.conformance.placed", limit=4)) == [
            1,
            2,
            3,
            6,
        ]
        assert _positions(await store.read(stream="order-1", after=4)) == [6, 7]
        assert _positions(await store.read(stream="order-1", topic="*.*.placed")) == [6, 7]
        assert await store.read(stream="nope") == []
        with pytest.raises(ValueError, match="after"):
            await store.read(after=-1)

    async def test_read_by_hlc_time(self, store: EventStore) -> None:
        await store.append(placed(6))
        records = await store.read()
        times = [r.time for r in records]
        assert times == sorted(times)
        assert _positions(await store.read(since=times[2])) == [3, 4, 5, 6]
        assert _positions(await store.read(until=times[2])) == [1, 2]
        assert _positions(await store.read(since=times[1], until=times[4])) == [2, 3, 4]

    async def test_iter_read_pages_through_a_long_log(self, store: EventStore) -> None:
        await store.append(placed(250))
        got = [r async for r in store.iter_read(page_size=64)]
        assert _positions(got) == list(range(1, 251))
        some = [r async for r in store.iter_read(after=100, upto=130, page_size=7)]
        assert _positions(some) == list(range(101, 131))
        with pytest.raises(ValueError, match="page_size"):
            [r async for r in store.iter_read(page_size=0)]
        odd = [
            r.position
            async for r in store.iter_read(topic="suite.conformance.placed", page_size=10)
            if r.position % 2
        ]
        assert len(odd) == 125

    # -- subscriptions ---------------------------------------------------------------------

    async def test_subscribe_catches_up_then_follows_live_without_gap_or_duplicate(
        self, store: EventStore
    ) -> None:
        await store.append(placed(5))
        async with store.subscribe(after=2) as events:
            history = await _take(events, 3)
            assert _positions(history) == [3, 4, 5]
            assert events.position == 5

            async def write() -> None:
                for index in range(10):
                    await store.append(placed(3, start=100 + 3 * index))

            writer = asyncio.create_task(write())
            live = await _take(events, 30)
            await asyncio.wait_for(writer, WAIT)
        assert _positions(live) == list(range(6, 36))

    async def test_subscribe_filters_by_topic_and_stream(self, store: EventStore) -> None:
        async with store.subscribe(topic="suite.conformance.shipped") as shipped:
            await store.append(placed(2))
            await store.append([envelope(Shipped("o1"))], stream="a")
            await store.append([envelope(Shipped("o2"))], stream="b")
            got = await _take(shipped, 2)
            assert [r.payload.order_id for r in got] == ["o1", "o2"]
        async with store.subscribe(stream="b") as only_b:
            assert _positions(await _take(only_b, 1)) == [4]

    async def test_closing_ends_subscriptions(self, store: EventStore) -> None:
        events = store.subscribe()
        pending = asyncio.create_task(anext(events))
        await store.append(placed(1))
        assert (await asyncio.wait_for(pending, WAIT)).position == 1
        pending = asyncio.create_task(anext(events))
        await asyncio.sleep(0)
        await events.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, WAIT)
        other = store.subscribe(after=1)
        pending = asyncio.create_task(anext(other))
        await asyncio.sleep(0)
        await store.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, WAIT)

    async def test_subscribe_sees_appends_through_another_store(
        self, harness: StoreHarness, store: EventStore
    ) -> None:
        if not store.features.multi_process:
            pytest.skip("the store serves one process")
        other = await harness.open()
        async with other:
            await other.append(placed(2))
            async with store.subscribe() as events:
                assert _positions(await _take(events, 2)) == [1, 2]
                await other.append(placed(3, start=2))
                assert _positions(await _take(events, 3)) == [3, 4, 5]

    # -- snapshots and checkpoints ---------------------------------------------------------

    async def test_snapshots(self, store: EventStore) -> None:
        assert await store.load_snapshot("totals") is None
        await store.save_snapshot("totals", 10, b"\x00state-1")
        await store.save_snapshot("other", 3, b"")
        await store.save_snapshot("totals", 25, b"state-2")
        snapshot = await store.load_snapshot("totals")
        assert snapshot is not None
        assert (snapshot.name, snapshot.position, snapshot.state) == ("totals", 25, b"state-2")
        other = await store.load_snapshot("other")
        assert other is not None
        assert other.state == b""
        with pytest.raises(TypeError):
            await store.save_snapshot("totals", 1, "text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name"):
            await store.save_snapshot("", 1, b"")

    async def test_checkpoints_and_handled_ids(self, store: EventStore) -> None:
        assert await store.load_checkpoint("mailer") == 0
        await store.commit("mailer", 4, handled_ids=["e1", "e2", "e2"])
        await store.commit("audit", 1)
        assert await store.load_checkpoint("mailer") == 4
        assert await store.load_checkpoint("audit") == 1
        assert await store.was_handled("mailer", "e1")
        assert await store.was_handled("mailer", "e2")
        assert not await store.was_handled("audit", "e1")
        assert not await store.was_handled("mailer", "e3")
        await store.commit("mailer", 9, handled_ids=["e3", "e1"])
        assert await store.load_checkpoint("mailer") == 9
        assert await store.was_handled("mailer", "e3")
        await store.commit("mailer", 2)
        assert await store.load_checkpoint("mailer") == 2

    # -- integrity and decoding ------------------------------------------------------------

    async def test_verify_reports_progress(self, store: EventStore) -> None:
        await store.append(placed(25))
        seen: list[tuple[int, int]] = []
        assert await store.verify(progress=lambda done, total: seen.append((done, total))) is None
        assert seen[-1] == (25, 25)
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)

    async def test_verify_names_the_first_tampered_position(
        self, harness: StoreHarness, store: EventStore
    ) -> None:
        await store.append(placed(10))
        assert await store.verify() is None
        await self._tamper(harness, 7, payload='{"order_id":"o6","amount":1000000.0}')
        assert await store.verify() == 7
        await self._tamper(harness, 3, type_name="suite.conformance.shipped")
        assert await store.verify() == 3

    async def test_an_undecodable_payload_names_position_and_type(
        self, harness: StoreHarness, store: EventStore
    ) -> None:
        await store.append(placed(3))
        await self._tamper(harness, 2, payload='{"order_id": 5}')
        with pytest.raises(DecodeError) as caught:
            await store.read()
        assert caught.value.position == 2
        assert caught.value.type_name == "suite.conformance.placed"
        assert "position 2" in str(caught.value)
        assert "suite.conformance.placed" in str(caught.value)
        await self._tamper(harness, 2, payload="not json")
        with pytest.raises(DecodeError, match="position 2"):
            await store.read(after=1)
        assert _positions(await store.read(limit=1)) == [1]

    async def test_an_unknown_type_is_an_error_unless_skipped_or_raw(
        self, harness: StoreHarness, store: EventStore
    ) -> None:
        await store.append(placed(3))
        await self._tamper(harness, 2, type_name="suite.conformance.vanished")
        with pytest.raises(UnknownEventTypeError) as caught:
            await store.read()
        assert (caught.value.type_name, caught.value.position) == (
            "suite.conformance.vanished",
            2,
        )
        assert "suite.conformance.vanished" in str(caught.value)
        assert _positions(await store.read(unknown="skip")) == [1, 3]
        raw = await store.read(unknown="raw")
        assert raw[1].payload == {"order_id": "o1", "amount": 1.0}
        assert raw[1].type_name == "suite.conformance.vanished"

    async def test_upcasters_bring_old_payloads_to_the_current_version(
        self, store: EventStore
    ) -> None:
        await store.append([envelope(_VersionedV1("Ada Lovelace"))])
        store.register_type(_VersionedV2, "suite.conformance.versioned")
        with pytest.raises(DecodeError, match="no upcaster") as caught:
            await store.read()
        assert caught.value.position == 1

        @store.upcasters.upcaster("suite.conformance.versioned", 1)
        def split(old: dict[str, Any]) -> dict[str, Any]:
            first, last = old["name"].split(" ", 1)
            return {"first": first, "last": last}

        [record] = await store.read()
        assert record.payload == _VersionedV2("Ada", "Lovelace")
        assert record.type_version == 1
        await store.append([envelope(_VersionedV2("Grace", "Hopper"))])
        assert [r.payload.first for r in await store.read()] == ["Ada", "Grace"]
        assert [r.type_version for r in await store.read()] == [1, 2]

    # -- lifecycle -------------------------------------------------------------------------

    async def test_a_closed_store_refuses_work(self, harness: StoreHarness) -> None:
        store = await harness.open()
        try:
            async with store:
                await store.append(placed(1))
            assert store.closed
            await store.aclose()
            with pytest.raises(StoreClosedError):
                await store.append(placed(1))
            with pytest.raises(StoreClosedError):
                await store.read()
            with pytest.raises(StoreClosedError):
                await store.last_position()
        finally:
            await harness.cleanup()

    async def test_append_sync(self, store: EventStore) -> None:
        if not store.features.sync_append:
            assert not isinstance(store, SupportsSyncAppend)
            pytest.skip("the store has no synchronous append")
        assert isinstance(store, SupportsSyncAppend)
        events = store.subscribe()
        pending = asyncio.create_task(anext(events))
        await asyncio.sleep(0)
        positions = await asyncio.to_thread(store.append_sync, placed(2))
        assert positions == [1, 2]
        assert (await asyncio.wait_for(pending, WAIT)).position == 1
        assert store.append_sync(placed(2)[:0]) == []
        await events.aclose()

    async def test_the_log_survives_reopening(self, harness: StoreHarness) -> None:
        first = await harness.open()
        if not first.features.durable:
            await first.aclose()
            await harness.cleanup()
            pytest.skip("the store is not durable")
        sent = placed(3)
        try:
            async with first:
                await first.append(sent, stream="s")
                await first.save_snapshot("snap", 3, b"s")
                await first.commit("c", 2, handled_ids=["x"])
            async with await harness.open() as second:
                assert _positions(await second.read()) == [1, 2, 3]
                assert await second.append(sent) == [1, 2, 3]
                assert await second.append(placed(1, start=3), stream="s", expected_version=3)
                assert await second.verify() is None
                snapshot = await second.load_snapshot("snap")
                assert snapshot is not None
                assert snapshot.state == b"s"
                assert await second.load_checkpoint("c") == 2
                assert await second.was_handled("c", "x")
        finally:
            with contextlib.suppress(Exception):
                await first.aclose()
            await harness.cleanup()

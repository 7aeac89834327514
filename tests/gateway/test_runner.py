"""The runner in-process: durable accept, routing from the log, splits, redaction, reloads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import tidings
from tidings.event import Envelope
from tidings.gateway import (
    CONFIG_REJECTED_TOPIC,
    VARIANT_HEADER,
    Dispatch,
    Gateway,
    RouteTable,
    load_config,
    parse_config,
)
from tidings.store.records import StoredEvent

CONFIG = """\
routes:
  - name: big
    from: orders.placed
    when: data.amount > 100
    redact: [data.card]
    to: [{topic: audit.big}]
  - name: rest
    from: orders.placed
    to: [{topic: audit.rest}]
  - name: scoring
    from: tx.>
    split:
      by: header model-version
      variants:
        - {match: v2, to: [{topic: scoring.v2}]}
        - {percent: 50, name: a, to: [{topic: scoring.a}]}
        - {percent: 50, name: b, to: [{topic: scoring.b}]}
"""


def envelope(n: int, topic: str, data: Any, **headers: str) -> Envelope[Any]:
    return Envelope(
        topic, data, 1_000_000 + n, key=None, source="test", headers=headers, _id=f"e{n}"
    )


async def test_routes_from_the_log_by_condition_default_split_and_redaction(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(CONFIG)
    routed: list[tuple[str, int, list[Dispatch]]] = []

    def seen(record: StoredEvent, table: RouteTable, dispatches: list[Dispatch]) -> None:
        routed.append((record.envelope.id, table.generation, dispatches))

    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        gateway = Gateway(bus, load_config([path]), on_routed=seen)
        await gateway.start()
        positions = await gateway.accept(
            [
                envelope(1, "orders.placed", {"amount": 500, "card": "4111"}),
                envelope(2, "orders.placed", {"amount": 5, "card": "4111"}),
                envelope(3, "tx.scored", {"v": 1}, **{"model-version": "v2"}),
            ]
        )
        again = await gateway.accept([envelope(1, "orders.placed", {"amount": 500})])
        assert again == positions[:1]
        assert await gateway.wait_routed(positions[-1] + 3, 10)
        await gateway.stop(5)
        store = bus.store
        assert store is not None
        records = await store.read(unknown="raw")
    first = {eid: d for eid, _, d in routed if eid in ("e1", "e2", "e3")}
    assert [d.route for d in first["e1"]] == ["big"]
    assert first["e1"][0].envelope.payload == {"amount": 500}
    assert [d.route for d in first["e2"]] == ["rest"]
    assert first["e3"][0].envelope.headers[VARIANT_HEADER] == "v2"
    assert sorted(eid for eid, _, _ in routed if eid.startswith("e")) == ["e1", "e2", "e3"]
    topics = [r.envelope.topic for r in records]
    assert topics.count("audit.big") == 1
    assert topics.count("audit.rest") == 1
    assert topics.count("scoring.v2") == 1
    assert records[0].envelope.payload == {"amount": 500, "card": "4111"}  # the log keeps it


async def test_an_invalid_reload_keeps_the_table_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(CONFIG)
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        # Without the file watcher, which would count its own reloads of the rewritten file.
        gateway = Gateway(bus, load_config([path]), paths=[path], watch=False)
        await gateway.start()
        path.write_text(CONFIG.replace("data.amount > 100", "data.amount >"))
        assert not await gateway.reload()
        assert gateway.table.generation == 1
        assert "g.yaml:4:11" in str(gateway.last_error)
        path.write_text(CONFIG.replace("audit.big", "audit.large"))
        assert await gateway.reload()
        assert gateway.table.generation == 2
        assert gateway.describe()["last_error"] is None
        assert dict(gateway.reloads) == {"rejected": 1, "accepted": 1}
        await gateway.stop(5)
        store = bus.store
        assert store is not None
        rejected = await store.read(topic=CONFIG_REJECTED_TOPIC, unknown="raw")
    assert len(rejected) == 1
    assert rejected[0].envelope.payload["problems"][0]["line"] == 4


def rewrite_whole(path: Path) -> None:
    path.write_text(path.read_text())


async def test_the_watcher_reloads_when_a_file_is_added_to_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("routes: [{name: a, from: x, to: []}]\n")
    async with tidings.Bus(store="memory://") as bus:
        gateway = Gateway(bus, load_config([tmp_path]), paths=[tmp_path])
        await gateway.start()

        def routes() -> list[str]:
            return [r.name for r in gateway.table.config.routes]

        async def reloaded(after: int, wanted: list[str], rewrite: Path | None = None) -> None:
            """Until a generation after ``after`` routes ``wanted``. (Not a generation
            number: rewrites made while a slow reload runs bring one more reload, which may
            read the folder before the next change.)"""
            for _ in range(100):  # bounded: 10 s
                if gateway.table.generation > after and routes() == wanted:
                    return
                if rewrite is not None:  # until the watcher, started in a task, sees it
                    rewrite_whole(rewrite)
                await asyncio.sleep(0.1)
            raise AssertionError(f"generation {gateway.table.generation} routes {routes()}")

        await reloaded(1, ["a"], rewrite=tmp_path / "a.yaml")  # the watcher is live
        live = gateway.table.generation
        (tmp_path / "b.yaml").write_text("routes: [{name: b, from: y, to: []}]\n")
        await reloaded(live, ["a", "b"])
        added = gateway.table.generation
        (tmp_path / "b.yaml").unlink()
        await reloaded(added, ["a"])
        await gateway.stop(5)


async def test_the_checkpoint_follows_the_routing_while_the_gateway_runs(tmp_path: Path) -> None:
    # The follower commits its checkpoint every 64 records routed, at most once per 5 ms:
    # a crash re-routes at most those. Rounds of 64 records, each routed before a pause of
    # more than 5 ms (the pause is the rate limit's own: no event marks it), leave the
    # checkpoint at or past the end of the round before the last.
    config = "routes: [{name: r, from: orders.>, to: [{topic: audit.orders}]}]"
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        gateway = Gateway(bus, parse_config([("g.yaml", config)]))
        await gateway.start()
        ends: list[int] = []
        for round_ in range(3):
            events = [envelope(round_ * 64 + n, "notes.added", {"n": n}) for n in range(1, 65)]
            positions = await gateway.accept(events)
            assert await gateway.wait_routed(positions[-1], 10)
            ends.append(positions[-1])
            if round_:
                checkpoint = await gateway.store.load_checkpoint(gateway.consumer)
                assert checkpoint >= ends[-2], (round_, checkpoint, ends)
            await asyncio.sleep(0.01)
        await gateway.stop(5)

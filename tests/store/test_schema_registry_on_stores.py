"""The schema registry on every durable store a cluster can share (SQLite, PostgreSQL): two
processes' registries, racing registrations, every version exactly once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tidings.contracts import SchemaRegistry
from tidings.store.url import open_store


def _schema(field: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"id": {"type": "string"}, field: {"type": "string"}}}


async def test_two_processes_share_one_registry(store_url: str) -> None:
    one, two = open_store(store_url), open_store(store_url)
    try:
        a, b = SchemaRegistry(one), SchemaRegistry(two)
        await a.register("orders-value", _schema("v1"))
        racers = [_schema(f"r{i}") for i in range(6)]
        made = await asyncio.gather(
            *(
                (a if i % 2 else b).register("orders-value", schema)
                for i, schema in enumerate(racers)
            )
        )
        assert sorted(m.version for m in made) == [2, 3, 4, 5, 6, 7]
        assert await a.versions("orders-value") == await b.versions("orders-value")
        seen = [(await b.version("orders-value", v)).parsed for v in range(2, 8)]
        canonical = [json.dumps(s, sort_keys=True) for s in racers]
        assert sorted(json.dumps(s, sort_keys=True) for s in seen) == sorted(canonical)
        assert len({m.id for m in made}) == 6
    finally:
        await one.aclose()
        await two.aclose()

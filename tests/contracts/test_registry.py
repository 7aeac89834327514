"""The registry kept in the log: versions, ids, modes, durability, sharing between
processes (two stores on one SQLite file), races, and an unreachable log."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.contracts import (
    IncompatibleSchemaError,
    InvalidSchemaError,
    RegistryUnavailableError,
    SchemaNotFoundError,
    SchemaRegistry,
)
from tidings.store.sqlite import SQLiteStore


def obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required}


V1 = obj(["id"], id={"type": "string"})
V2 = obj(["id"], id={"type": "string"}, note={"type": "string"})
BAD = obj(["id", "currency"], id={"type": "string"}, currency={"type": "string"})


async def test_versions_ids_and_lookups(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "log.db") as store:
        registry = SchemaRegistry(store)
        first = await registry.register("orders-value", V1)
        assert (first.version, first.subject) == (1, "orders-value")
        assert await registry.register("orders-value", V1) == first  # idempotent
        second = await registry.register("orders-value", V2)
        assert second.version == 2
        assert second.id != first.id
        shared = await registry.register("audit-value", V1)
        assert shared.id == first.id  # one id per schema text, across subjects
        assert await registry.versions("orders-value") == [1, 2]
        assert (await registry.version("orders-value", "latest")).version == 2
        assert (await registry.by_id(first.id)).parsed == V1
        assert (await registry.lookup("orders-value", V2)).version == 2
        assert await registry.subjects() == ["audit-value", "orders-value"]
        with pytest.raises(SchemaNotFoundError) as subject:
            await registry.versions("nothing-value")
        assert subject.value.code == 40401
        with pytest.raises(SchemaNotFoundError, match="no version 7") as version:
            await registry.version("orders-value", 7)
        assert version.value.code == 40402
        with pytest.raises(SchemaNotFoundError) as missing:
            await registry.by_id(99999)
        assert missing.value.code == 40403
        with pytest.raises(InvalidSchemaError, match="invalid JSON Schema"):
            await registry.register("orders-value", {"type": "nonsense"})
        with pytest.raises(InvalidSchemaError, match="not JSON"):
            await registry.register("orders-value", "{nope", "JSON")
        with pytest.raises(InvalidSchemaError, match="schemaType"):
            await registry.register("orders-value", V1, "PROTOBUF")


async def test_an_incompatible_schema_is_refused_with_rule_and_field_and_nothing_stored(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "log.db") as store:
        registry = SchemaRegistry(store)
        await registry.register("orders-value", V1)
        before = await store.last_position()
        with pytest.raises(IncompatibleSchemaError) as refused:
            await registry.register("orders-value", BAD)
        [broken] = refused.value.breaks
        assert (broken.rule, broken.field, broken.version) == (
            "required-field-added",
            "$.currency",
            1,
        )
        assert "BACKWARD" in str(refused.value)
        assert "$.currency" in str(refused.value)
        assert await store.last_position() == before
        await registry.set_mode("NONE", "orders-value")
        assert (await registry.register("orders-value", BAD)).version == 2
        assert await registry.mode("orders-value") == "NONE"
        assert await registry.mode() == "BACKWARD"
        with pytest.raises(ValueError, match="SIDEWAYS"):
            await registry.set_mode("SIDEWAYS")


async def test_durable_and_shared_by_processes_on_one_log(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with SQLiteStore(path) as one, SQLiteStore(path) as two:
        a, b = SchemaRegistry(one), SchemaRegistry(two)
        made = await a.register("orders-value", V1)
        assert await b.version("orders-value", 1) == made
        await b.set_mode("FULL_TRANSITIVE", "orders-value")
        assert await a.mode("orders-value") == "FULL_TRANSITIVE"
        # racing registrations of different schemas: versions stay 1, 2, 3 with no gap
        # or duplicate, each process's schema under exactly one version
        x = obj(["id"], id={"type": "string"}, x={"type": "string"})
        y = obj(["id"], id={"type": "string"}, y={"type": "string"})
        got = await asyncio.gather(a.register("orders-value", x), b.register("orders-value", y))
        assert sorted(g.version for g in got) == [2, 3]
        assert [s.parsed for s in [await a.version("orders-value", v) for v in (2, 3)]] in (
            [x, y],
            [y, x],
        )
    async with SQLiteStore(path) as again:  # reopened: everything is still there
        registry = SchemaRegistry(again)
        assert await registry.versions("orders-value") == [1, 2, 3]
        assert await registry.mode("orders-value") == "FULL_TRANSITIVE"


async def test_unreachable_log_at_start_is_a_clear_error_and_mid_run_uses_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    await store.aclose()
    with pytest.raises(RegistryUnavailableError, match="cannot read its log"):
        await SchemaRegistry(store).sync()
    store = SQLiteStore(tmp_path / "log.db")
    registry = SchemaRegistry(store)
    await registry.register("orders-value", V1)
    await store.aclose()
    with caplog.at_level(logging.WARNING, logger="tidings.contracts"):
        await registry.sync()
    assert registry.stale_since is not None
    assert "validating with the 1 schemas read before" in caplog.text
    assert registry.cached("orders-value") is not None
    with pytest.raises(RegistryUnavailableError, match="nothing was registered"):
        await registry.register("orders-value", V2)


@tidings.event("contracts.registered.order")
@dataclasses.dataclass(frozen=True)
class RegisteredOrder:
    id: str


@tidings.event("contracts.registered.skipped", version=2)
@dataclasses.dataclass(frozen=True)
class Skipped:
    id: str


async def test_an_event_class_registers_as_the_version_it_declares(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "log.db") as store:
        registry = SchemaRegistry(store)
        made = await registry.register_event(RegisteredOrder)
        assert (made.subject, made.version) == ("contracts.registered.order-value", 1)
        assert await registry.register_event(RegisteredOrder) == made
        with pytest.raises(InvalidSchemaError, match="declares version 2, but subject"):
            await registry.register_event(Skipped)

"""A reload refused for a target that cannot exist (an unknown kind, a ``nats`` target
without a transport): the table in force stays and keeps routing, and the refusal is said in
every place the gateway says it (an ERROR log line with the position, ``last_error``, the
``tidings.gateway.config_rejected`` event, the reload counts)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import tidings
from tidings.event import Envelope
from tidings.gateway import CONFIG_REJECTED_TOPIC, Gateway, load_config

GOOD = "routes:\n  - {name: copy, from: orders.>, to: [{topic: audit.v1}]}\n"
UNKNOWN_KIND = "routes:\n  - {name: copy, from: orders.>, to: [{ftp: audit.v2}]}\n"
NO_TRANSPORT = "routes:\n  - {name: copy, from: orders.>, to: [{nats: audit.v3}]}\n"


def order(n: int) -> Envelope[Any]:
    return Envelope(
        "orders.placed", {"n": n}, 1_000_000 + n, key=None, source="test", headers={}, _id=f"o{n}"
    )


async def test_a_reload_naming_a_target_that_cannot_exist_keeps_the_table_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(GOOD)
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/e.db") as bus:
        gateway = Gateway(bus, load_config([path]), paths=[path], watch=False)
        await gateway.start()
        first = gateway.table
        outcomes = []
        with caplog.at_level(logging.ERROR, logger="tidings.gateway"):
            for n, text in enumerate((UNKNOWN_KIND, NO_TRANSPORT)):
                path.write_text(text)
                outcomes.append(await gateway.reload())
                assert gateway.table is first  # the very table, not a rebuilt one
                [position] = await gateway.accept([order(n)])
                assert await gateway.wait_routed(position, 10)
        last_error = gateway.describe()["last_error"]
        await gateway.stop(5)
        store = bus.store
        assert store is not None
        copies = await store.read(topic="audit.>", unknown="raw")
        rejected = await store.read(topic=CONFIG_REJECTED_TOPIC, unknown="raw")
    assert outcomes == [False, False]
    assert dict(gateway.reloads) == {"rejected": 2}
    # both events accepted after a refused reload were routed by generation 1, once each
    assert [(c.envelope.topic, c.envelope.payload) for c in copies] == [
        ("audit.v1", {"n": 0}),
        ("audit.v1", {"n": 1}),
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all("generation 1 stays in force" in e for e in errors)
    assert "g.yaml:2:40: unknown target kind 'ftp'" in errors[0]
    assert "g.yaml:2:5:" in errors[1]
    assert "nats target" in errors[1]
    assert last_error is not None
    assert "nats target" in last_error
    assert len(rejected) == 2
    assert [r.envelope.payload["generation_kept"] for r in rejected] == [1, 1]
    assert rejected[0].envelope.payload["problems"][0]["line"] == 2

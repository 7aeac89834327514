"""The gateway's ingest steps, one at a time, for instruction counts under callgrind.

``python _callgrind_ingest.py N`` runs, each inside one ``functools.reduce`` call of N steps
(so that callgrind, collecting only inside ``functools_reduce`` and dumping after each call,
writes one profile per operation)::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        --dump-after=functools_reduce --callgrind-out-file=/tmp/ingest.%p \\
        .venv/bin/python benchmarks/_callgrind_ingest.py 200

the operations, in this order: one SQLite append of 1 row; of 100 rows; an AppendBatch of
14 publishes on a bus with a SQLite log (opened, published, waited for); one
``envelope_from_attributes`` of a structured event. Divide each profile's total by N.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import sys
import tempfile
from pathlib import Path
from typing import Any

import tidings
from tidings.cloudevents import envelope_from_attributes
from tidings.event import Envelope
from tidings.store import SQLiteStore


def envelopes(count: int, prefix: str) -> list[Envelope[Any]]:
    """``count`` envelopes with distinct ids, a JSON object each, as the gateway stores."""
    return [
        Envelope(
            "orders.created",
            {"order": index, "amount": 12.5, "customer": "c-17"},
            1_700_000_000_000 + index,
            source="/bench",
            _id=f"{prefix}-{index}",
        )
        for index in range(count)
    ]


def store_appends(directory: Path, n: int, rows: int) -> None:
    store = SQLiteStore(directory / f"append{rows}.db")
    batches = [envelopes(rows, f"a{rows}-{step}") for step in range(n)]
    store.append_sync(envelopes(1, f"warm{rows}"))
    functools.reduce(lambda _, batch: store.append_sync(batch), batches, None)
    store.close_sync()


def append_batches(directory: Path, n: int) -> None:
    loop = asyncio.new_event_loop()
    bus = tidings.Bus(store=SQLiteStore(directory / "batch.db"))
    seen = [0]
    bus.subscribe("orders.>", lambda event: seen.__setitem__(0, seen[0] + 1))
    payload = {"order": 1, "amount": 12.5}

    async def one() -> None:
        batch = bus.appending_together()
        assert batch is not None
        with batch:
            for index in range(14):
                bus.publish(payload, topic=f"orders.t{index % 3}")
        assert await batch.wait() == [None] * 14

    loop.run_until_complete(bus.__aenter__())
    loop.run_until_complete(one())
    functools.reduce(lambda _, __: loop.run_until_complete(one()), range(n), None)
    loop.run_until_complete(bus.__aexit__(None, None, None))
    loop.close()
    assert seen[0] == 14 * (n + 1), seen[0]


def decodes(n: int) -> None:
    attributes = {
        "specversion": "1.0",
        "id": "0b4f4c2e-7d7b-4b43-9d0c-3c7a3c8f2a11",
        "source": "/shop/orders",
        "type": "orders.created",
        "time": "2026-12-06T10:00:00.123Z",
        "datacontenttype": "application/json",
        "tenant": "acme",
    }
    data = {"order": 1, "amount": 12.5}

    def one(_: object, __: int) -> Envelope[Any]:
        return envelope_from_attributes(attributes, lambda cls: data, topic=None, payload_type=None)

    one(None, 0)
    functools.reduce(one, range(n), None)


if __name__ == "__main__":
    count = int(sys.argv[1])
    gc.disable()
    with tempfile.TemporaryDirectory() as tmp:
        store_appends(Path(tmp), count, 1)
        store_appends(Path(tmp), count, 100)
        append_batches(Path(tmp), count)
        decodes(count)

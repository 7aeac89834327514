"""schemathesis against ``/openapi.json`` of a live gateway (bounded examples): no 5xx.

The server runs on its own event loop in a thread; schemathesis calls it over loopback.
``GET /events`` (an endless event stream) is left out. The schema registry is on, so its
routes under ``/registry`` are listed and fuzzed too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

import tidings
from tidings.gateway import Gateway, load_config
from tidings.server.app import create_app

from .conftest import serving


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    config = folder / "g.yaml"
    config.write_text(
        "routes: [{name: all, from: 'orders.>', when: 'data.n > 1', to: [{topic: x.y}]}]\n"
        "schemas: {registry: true, validate: true}\n"
    )
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    found: list[str] = []
    loop = asyncio.new_event_loop()

    async def main() -> None:
        stop.append(asyncio.Event())
        async with tidings.Bus(store=f"sqlite:///{folder}/e.db") as bus:
            gateway = Gateway(bus, load_config([config]))
            await gateway.start()
            async with serving(create_app(gateway)) as url:
                found.append(url)
                ready.set()
                await stop[0].wait()
            await gateway.stop(5)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the gateway did not start within 30 s"
    yield found[0]
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(30)
    loop.close()


def test_no_server_error(live_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        operation = cast(Any, result).ok()  # raises when the schema of one is invalid
        if (operation.method.upper(), operation.path) == ("GET", "/events"):
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def call(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        call()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert sorted(tested) == [
        "GET /config",
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
        "GET /registry/config",
        "GET /registry/config/{subject}",
        "GET /registry/schemas/ids/{id}",
        "GET /registry/subjects",
        "GET /registry/subjects/{subject}/versions",
        "GET /registry/subjects/{subject}/versions/{version}",
        "POST /events",
        "POST /registry/compatibility/subjects/{subject}/versions",
        "POST /registry/compatibility/subjects/{subject}/versions/{version}",
        "POST /registry/subjects/{subject}",
        "POST /registry/subjects/{subject}/versions",
        "PUT /registry/config",
        "PUT /registry/config/{subject}",
    ]

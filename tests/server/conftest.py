"""Helpers for the service tests: a real uvicorn server on a free loopback port, a real
webhook receiver, and a gateway service over a SQLite log in the test's directory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import tidings
from tidings.gateway import Dispatch, Gateway, RouteTable, load_config
from tidings.server.access import Access
from tidings.server.app import create_app
from tidings.store.records import StoredEvent
from tidings.transports.base import Transport


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: Any, port: int = 0, grace: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on loopback (``port`` 0: a free one); yield its base URL.
    ``grace``: seconds a stop waits for open responses (streams) before cancelling them."""
    server = _Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=grace,
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start within 5 s"
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@dataclass
class Receiver:
    """A webhook receiver: answers with ``plan`` (status codes, or "slow"), then 200."""

    plan: list[int | str] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append((dict(request.headers), body))
        self.arrived.set()
        step = self.plan.pop(0) if self.plan else 200
        if step == "slow":
            await asyncio.sleep(1.0)
            step = 200
        assert isinstance(step, int)
        return Response(status_code=step)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def receiver(plan: list[int | str] | None = None) -> AsyncIterator[tuple[str, Receiver]]:
    """A webhook receiver on loopback: yields ``(url of /hook, receiver)``."""
    state = Receiver(list(plan or []))
    app = Starlette(routes=[Route("/hook", state.handle, methods=["POST"])])
    async with serving(app) as url:
        yield f"{url}/hook", state


@dataclass
class Service:
    url: str
    gateway: Gateway
    bus: tidings.Bus
    client: httpx.AsyncClient
    routed: list[tuple[StoredEvent, RouteTable, list[Dispatch]]]

    async def records(self, topic: str | None = None) -> list[StoredEvent]:
        store = self.bus.store
        assert store is not None
        return await store.read(topic=topic, unknown="raw")

    async def settle(self, timeout: float = 15.0) -> None:
        """Wait until everything in the log is routed and delivered, however much that
        delivering appends (bounded by ``timeout``)."""
        store = self.bus.store
        assert store is not None
        async with asyncio.timeout(timeout):
            while True:
                last = await store.last_position()
                assert await self.gateway.wait_routed(last, timeout)
                if await store.last_position() == last:
                    return


@contextlib.asynccontextmanager
async def service(
    tmp_path: Path,
    config: str,
    port: int = 0,
    grace: int | None = None,
    transport: Transport | None = None,
    watch: bool = True,
    **headers: str,
) -> AsyncIterator[Service]:
    """The gateway service for ``config`` (YAML) over a SQLite log in ``tmp_path``, on
    ``port`` (0: a free one; ``grace`` as for :func:`serving`), its bus on ``transport``
    if one is given; ``watch``: whether the gateway reloads when ``tmp_path / "gateway.yaml"``
    changes (else only when told)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config)
    loaded = load_config([path])
    routed: list[tuple[StoredEvent, RouteTable, list[Dispatch]]] = []
    async with tidings.Bus(store=f"sqlite:///{tmp_path}/events.db", transport=transport) as bus:
        gateway = Gateway(
            bus,
            loaded,
            paths=[path],
            watch=watch,
            on_routed=lambda r, t, d: routed.append((r, t, d)),
        )
        app = create_app(gateway, Access(loaded.http.tokens, loaded.http.rate_limit))
        await gateway.start()
        try:
            async with (
                serving(app, port, grace) as url,
                httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client,
            ):
                yield Service(url, gateway, bus, client, routed)
        finally:
            await gateway.stop(5)


def structured(n: int, topic: str = "orders.placed", **data: Any) -> dict[str, Any]:
    """A structured-mode CloudEvent (as a mapping) numbered ``n``."""
    return {
        "specversion": "1.0",
        "id": f"ev-{n}",
        "source": "tests",
        "type": topic,
        "data": {"n": n, **data},
    }

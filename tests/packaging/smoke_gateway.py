"""The gateway extra: the HTTP app accepts a CloudEvent into the log and routes it."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx

import tidings
from tidings.gateway import Gateway, load_config
from tidings.server.app import create_app


async def main(directory: Path) -> None:
    config = directory / "gateway.yaml"
    config.write_text(
        "routes:\n"
        "  - {name: big, from: orders.placed, when: data.amount > 100, to: [{topic: audit}]}\n"
    )
    async with tidings.Bus(store=f"sqlite:///{directory / 'events.db'}") as bus:
        audited: list[object] = []
        bus.subscribe("audit", audited.append)
        gateway = Gateway(bus, load_config([config]), paths=[config])
        await gateway.start()
        transport = httpx.ASGITransport(app=create_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://smoke") as client:
            answer = await client.post(
                "/events",
                headers={"content-type": "application/cloudevents+json"},
                json={
                    "specversion": "1.0",
                    "id": "e1",
                    "source": "smoke",
                    "type": "orders.placed",
                    "data": {"amount": 250},
                },
            )
        assert answer.status_code == 202, answer.text
        [position] = answer.json()["positions"]
        assert await gateway.wait_routed(position, timeout=30)
        await gateway.stop()
        assert audited == [{"amount": 250}], audited


with tempfile.TemporaryDirectory() as tmp:
    asyncio.run(main(Path(tmp)))
print("ok")

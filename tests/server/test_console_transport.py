"""The console's transport health against a real nats-server that the test stops and
starts again: connected, then reconnecting with the error, then connected again, in the API
(the bus's statistics) and on the page."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from tidings.testing.nats_server import NatsServer
from tidings.transports.nats import NatsTransport, StreamSettings

from .browser import browsing
from .conftest import Service, service, structured
from .consoles import post

pytestmark = pytest.mark.timeout(120)

CONFIG = """\
transport: "{url}"
routes:
  - {{name: small, from: orders.placed, to: [{{topic: audit.small}}]}}
"""


LAST_ERROR = re.compile(r"last error: (disconnected from nats://|ConnectionRefusedError)")


async def connection(svc: Service, want: str, timeout: float = 30.0) -> None:
    """Wait until the bus reports the transport ``want`` (bounded by ``timeout``)."""
    async with asyncio.timeout(timeout):
        # the transport reports its state when asked (no event to await); bounded above
        while True:
            health = svc.bus.statistics().transport
            if health is not None and health.state == want:
                return
            await asyncio.sleep(0.05)


async def test_the_health_tab_follows_the_nats_connection_through_a_server_restart(
    tmp_path: Path,
) -> None:
    with NatsServer(name="console-health") as nats:
        secret = nats.url.replace("nats://", "nats://ops:s3cret@")  # the server takes any
        transport = NatsTransport(
            secret, prefix="console", stream=StreamSettings(name="CONSOLE"), connect_timeout=10
        )
        async with (
            service(tmp_path, CONFIG.format(url=secret), grace=1, transport=transport) as svc,
            browsing(tmp_path) as browser,
        ):
            page = browser.page
            await page.goto(f"{svc.url}/#health")
            card = page.locator("#h-transport")
            await expect(card).to_have_class("card ok")
            await expect(card).to_contain_text("connected")
            await expect(card).to_contain_text(f"server {nats.url}")
            await expect(card).to_contain_text("awaiting ack 0")
            await expect(card).not_to_contain_text("s3cret")

            await asyncio.to_thread(nats.stop)
            await connection(svc, "reconnecting")
            await expect(card).to_have_class("card failing")
            await expect(card).to_contain_text("reconnecting")
            # the disconnect, then each refused reconnect attempt
            await expect(card).to_contain_text(LAST_ERROR)
            await expect(page.locator("#health-dot")).to_have_class("dot bad")
            health = svc.bus.statistics().transport
            assert health is not None
            assert health.disconnects == 1
            assert health.server == nats.url
            # routed meanwhile: its topic target's publish waits for the server's ack
            await post(svc, [structured(1, amount=5)])
            await expect(card).to_contain_text("awaiting ack 1")

            await asyncio.to_thread(nats.restart)
            await connection(svc, "connected")
            await expect(card).to_have_class("card ok")
            await expect(card).to_contain_text("disconnects 1")
            await expect(card).to_contain_text("awaiting ack 0")
            await svc.settle()
            assert len(await svc.records("audit.small")) == 1
            # the error stays, with its time, after the recovery
            await expect(card).to_contain_text(LAST_ERROR)
            await expect(page.locator("#health-dot")).to_have_class("dot ok")
            assert "s3cret" not in await page.content()
            assert browser.errors == []

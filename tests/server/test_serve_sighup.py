"""``kill -HUP`` reloads a running ``tidings serve`` from its files, as the file watcher does.

The file is left as it is, so the watcher has nothing to see: the one reload is the signal's.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from .test_serve import gateway_process

CONFIG = "routes: [{name: copy, from: load.>, to: [{topic: copied.load}]}]\n"


async def generation(client: httpx.AsyncClient, wanted: int) -> dict[str, object]:
    """``GET /config`` once its generation is ``wanted`` (bounded: 10 s)."""
    async with asyncio.timeout(10):
        while True:
            config: dict[str, object] = (await client.get("/config")).json()
            if config["generation"] == wanted:
                return config
            await asyncio.sleep(0.05)  # polling another process's state over HTTP


async def test_sighup_reloads_the_config_once_and_keeps_serving(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(CONFIG)
    async with gateway_process(tmp_path, "g.yaml") as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            before = await generation(client, 1)
            gateway.proc.send_signal(signal.SIGHUP)
            after = await generation(client, 2)
            gateway.proc.send_signal(signal.SIGHUP)
            again = await generation(client, 3)
            ready = await client.get("/readyz")
        code = await gateway.stop(signal.SIGINT)
    assert code == 0
    assert before["reloads"] == {}
    assert after["reloads"] == {"accepted": 1}
    assert again["reloads"] == {"accepted": 2}
    assert str(after["loaded_at"]) > str(before["loaded_at"])
    assert after["last_error"] is None
    assert ready.json()["generation"] == 3

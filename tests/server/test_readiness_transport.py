"""Readiness follows the transport: `/readyz` is 503 while the gateway's NATS connection is
lost and 200 again once it is back; a transport unreachable at start is one line on stderr
and exit status 1 (issue 13: "not ready until the store and transport are")."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from tidings.testing.nats_server import NatsServer, free_port

from .test_serve import gateway_process

DEADLINE = 30.0


async def _ready_status(client: httpx.AsyncClient, url: str, want: int) -> httpx.Response:
    """Poll ``/readyz`` until it answers ``want`` (bounded by DEADLINE)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            answer = await client.get(f"{url}/readyz")
            if answer.status_code == want:
                return answer
            await asyncio.sleep(0.1)  # polling an HTTP endpoint: there is no event to await


async def test_readyz_is_503_while_the_transport_is_down_and_200_once_it_is_back(
    tmp_path: Path,
) -> None:
    with NatsServer(name="tidings-readiness") as server:
        (tmp_path / "g.yaml").write_text(f"store: sqlite:///events.db\ntransport: {server.url}\n")
        async with (
            gateway_process(tmp_path, "g.yaml") as gateway,
            httpx.AsyncClient(timeout=10) as client,
        ):
            first = await _ready_status(client, gateway.url, 200)
            assert first.json()["status"] == "ready"
            server.stop()
            down = await _ready_status(client, gateway.url, 503)
            assert down.headers["content-type"].startswith("application/problem+json")
            assert "the transport is reconnecting" in down.json()["detail"]
            server.restart()
            again = await _ready_status(client, gateway.url, 200)
            assert again.json()["status"] == "ready"


async def test_a_transport_unreachable_at_start_is_one_line_and_exit_1(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "g.yaml").write_text(f"store: sqlite:///events.db\ntransport: {url}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli",
        "serve",
        "g.yaml",
        "--listen",
        "127.0.0.1:0",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        out, err = await proc.communicate()
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tidings serve: cannot start: TransportUnavailableError: ")
    assert "127.0.0.1" in lines[0]
    assert out == b""

"""``tidings serve`` as a process: the make-run path, SIGINT, and SIGKILL with a restart."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

import tidings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"


class Process:
    def __init__(self, proc: asyncio.subprocess.Process, lines: list[str]) -> None:
        self.proc = proc
        self.lines = lines

    @property
    def url(self) -> str:
        first = self.lines[0]
        return first.split()[3]

    async def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), timeout)


@asynccontextmanager
async def gateway_process(cwd: Path, *config: str, **env: str) -> AsyncIterator[Process]:
    """``tidings serve CONFIG --listen 127.0.0.1:0`` in ``cwd``, started and printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli",
        "serve",
        *config,
        "--listen",
        "127.0.0.1:0",
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not lines or not lines[-1].startswith("Ctrl-C"):
                line = await proc.stdout.readline()
                assert line, f"tidings serve exited early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        yield Process(proc, lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def curl_request(command: str) -> tuple[str, dict[str, str], str]:
    """The URL, headers and body of the printed curl command."""
    words = shlex.split(command)
    headers = {}
    for flag, value in itertools.pairwise(words):
        if flag == "-H":
            name, _, rest = value.partition(": ")
            headers[name] = rest
    url = next(w for w in words if w.startswith("http://"))
    return url, headers, words[words.index("-d") + 1]


def stream_request(command: str) -> tuple[str, dict[str, str]]:
    """The URL and headers of the printed ``curl -N`` command."""
    words = shlex.split(command)
    headers = dict(
        value.partition(": ")[::2] for flag, value in itertools.pairwise(words) if flag == "-H"
    )
    return next(w for w in words if w.startswith("http://")), headers


async def first_event(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Any:
    async with client.stream("GET", url, headers=headers) as answer:
        async for line in answer.aiter_lines():
            if line.startswith("data: "):
                return json.loads(line[6:])
    raise AssertionError("the stream ended without an event")


async def test_make_run_serves_the_example_answers_the_printed_curl_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    async with gateway_process(tmp_path, str(EXAMPLE), SHOP_TOKEN="test-token") as gateway:
        command = next(line.strip() for line in gateway.lines if line.strip().startswith("curl -i"))
        url, headers, body = curl_request(command)
        follow = next(line for line in gateway.lines if "curl -N" in line)
        stream_url, stream_headers = stream_request(follow[follow.index("curl -N") :])
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(url, headers=headers, content=body)
            first = await asyncio.wait_for(first_event(client, stream_url, stream_headers), 10)
            health = await client.get(f"{gateway.url}/healthz")
            ready = await client.get(f"{gateway.url}/readyz")
        code = await gateway.stop(signal.SIGINT)
        assert gateway.proc.stdout is not None
        rest = (await gateway.proc.stdout.read()).decode()
    assert answer.status_code == 202, answer.text
    assert answer.json()["ids"] == ["hello-1"]
    assert first["id"] == "hello-1"  # the printed stream command shows it
    assert (health.status_code, ready.status_code) == (200, 200)
    assert code == 0
    assert "tidings gateway stopped" in rest
    async with tidings.SQLiteStore(tmp_path / ".tidings" / "events.db") as store:
        topics = [r.envelope.topic for r in await store.read(unknown="raw")]
    # the webhook on port 9 refuses: 3 attempts, then the dead letter, before the exit
    assert topics == ["orders.placed", "audit.big-orders", "orders.dead"]


async def test_sigterm_drains_and_exits_0_and_a_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("routes: [{name: a, from: x, when: 'nope', to: []}]\n")
    bad = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.cli",
        "serve",
        "bad.yaml",
        cwd=tmp_path,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(bad.communicate(), 30)
    assert bad.returncode == 2
    assert "bad.yaml:1:35: route 'a'.when" in err.decode()
    async with gateway_process(tmp_path) as gateway:
        assert await gateway.stop(signal.SIGTERM) == 0


ROUTE = (
    "store: sqlite:///events.db\nroutes: [{name: copy, from: load.>, to: [{topic: copied.load}]}]\n"
)


async def test_every_event_answered_202_is_routed_after_a_sigkill_and_restart(
    tmp_path: Path,
) -> None:
    (tmp_path / "g.yaml").write_text(ROUTE)
    accepted: set[int] = set()
    async with gateway_process(tmp_path, "g.yaml") as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            for start in range(0, 1000, 250):
                batch = [
                    {
                        "specversion": "1.0",
                        "id": f"e{n}",
                        "source": "t",
                        "type": "load.x",
                        "data": {"n": n},
                    }
                    for n in range(start, start + 250)
                ]
                answer = await client.post(
                    "/events",
                    content=json.dumps(batch),
                    headers={"content-type": "application/cloudevents-batch+json"},
                )
                assert answer.status_code == 202
                accepted.update(range(start, start + 250))
        gateway.proc.kill()  # SIGKILL right after the last 202
        await asyncio.wait_for(gateway.proc.wait(), 10)
    async with tidings.SQLiteStore(tmp_path / "events.db") as store:
        routed_before = await store.load_checkpoint("tidings-gateway")
    async with gateway_process(tmp_path, "g.yaml") as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            async with asyncio.timeout(30):
                while True:  # bounded by the timeout
                    metrics = (await client.get("/metrics")).text
                    if "tidings_gateway_routed_total 0.0" not in metrics:
                        break
                    await asyncio.sleep(0.05)
        assert await gateway.stop(signal.SIGINT) == 0
    async with tidings.SQLiteStore(tmp_path / "events.db") as store:
        copies = await store.read(topic="copied.load", unknown="raw")
        originals = await store.read(topic="load.>", unknown="raw")
    assert len(originals) == 1000
    assert {c.envelope.payload["n"] for c in copies} == accepted  # each routed at least once
    # the kill left work after the checkpoint, which the restart routed from the log
    assert routed_before < 1000 + len(copies)


def test_serve_uses_httptools_and_uvloop_when_installed() -> None:
    # Both come with the gateway extra; uvicorn's h11 and asyncio's loop are the fallback.
    import uvloop

    from tidings.server.serve import http_implementation, loop_factory

    assert http_implementation() == "httptools"
    assert loop_factory() is uvloop.new_event_loop

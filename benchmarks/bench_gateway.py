"""Gateway benchmarks: route evaluation, reload, HTTP ingest against a floor.

- **G1 route evaluation**: events per second through a table of 50 routes with CEL
  conditions, in process: each event's topic is taken by 1 route (G1) or 5 (G1 5), whose
  conditions are evaluated and the matching ones' dispatches built. Target: >= 100,000
  events/s.
- **G2 reload**: a 500-route config parsed, validated, compiled and swapped by
  ``Gateway.reload`` (ms, best of 5), and the longest pause of the event loop meanwhile
  (a 1 ms ticker). Targets: <= 200 ms, pause <= 10 ms.
- **G3 HTTP ingest**: ``tidings serve`` in a second process on loopback (SQLite log), loaded
  by httpx from this process with 16 requests in flight: single-event POSTs, batches of 100,
  and the p99 accept latency at a paced 1,000 events/s. The floor is a minimal Starlette
  endpoint that only appends the same body to SQLite (``_gateway_floor.py``), on the same
  uvicorn, loaded the same way.

Usage: ``python benchmarks/bench_gateway.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))

import tidings
from _harness import Row, check
from tidings.event import Envelope
from tidings.gateway import Gateway, RouteTable, load_config, parse_config


def routes_yaml(count: int, topics: int) -> str:
    routes = [
        f"  - {{name: r{i}, from: t{i % topics}.>, when: 'data.amount > {i} && "
        f'source == "bench"\', to: [{{topic: out.r{i}}}]}}'
        for i in range(count)
    ]
    return "\n".join(["routes:", *routes]) + "\n"


def route_evaluation(count: int, topics: int) -> float:
    table = RouteTable.build(parse_config([("bench.yaml", routes_yaml(50, topics))]))
    events = [
        Envelope(f"t{n % topics}.x", {"amount": n % 60}, 1_000 + n, source="bench", _id=f"e{n}")
        for n in range(1000)
    ]
    routed = 0
    start = time.perf_counter()
    for _ in range(count // len(events)):
        for env in events:
            routed += len(table.route(env)) >= 0
    took = time.perf_counter() - start
    check("G1", "tidings", routed, (count // len(events)) * len(events))
    return routed / took


async def reload_500(repeat: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "g.yaml"
        path.write_text(routes_yaml(500, 50))
        async with tidings.Bus(store="memory://") as bus:
            gateway = Gateway(bus, load_config([path]), paths=[])
            gateway.paths = (path,)
            worst = 0.0
            running = True

            async def tick() -> None:
                nonlocal worst
                last = time.perf_counter()
                while running:
                    await asyncio.sleep(0.001)
                    now = time.perf_counter()
                    worst = max(worst, now - last)
                    last = now

            ticker = asyncio.create_task(tick())
            await asyncio.sleep(0.01)
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                assert await gateway.reload()
                best = min(best, time.perf_counter() - start)
            running = False
            await ticker
            assert len(gateway.table.config.routes) == 500
            return best * 1000, worst * 1000


def _start(args: list[str], cwd: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "http://" in line:
            url = next(w for w in line.split() if w.startswith("http://"))
            return proc, url
    proc.kill()
    raise RuntimeError("the server did not print its URL within 30 s")


def _event(n: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"e{n}",
        "source": "bench",
        "type": "orders.placed",
        "data": {"order_id": n, "amount": n % 500},
    }


async def _load(url: str, bodies: list[bytes], content_type: str, inflight: int) -> float:
    queue = iter(bodies)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker() -> None:
            for body in queue:
                answer = await client.post(
                    "/events", content=body, headers={"content-type": content_type}
                )
                assert answer.status_code in (200, 202), answer.text

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return time.perf_counter() - start


async def _paced(url: str, rate: int, seconds: float, first: int) -> float:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    timeout = httpx.Timeout(60, pool=None)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def one(n: int) -> None:
            body = json.dumps(_event(n)).encode()
            start = time.perf_counter()
            answer = await client.post(
                "/events", content=body, headers={"content-type": "application/cloudevents+json"}
            )
            latencies.append(time.perf_counter() - start)
            assert answer.status_code in (200, 202)

        tasks = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(first + i)))
        await asyncio.gather(*tasks)
    latencies.sort()
    return latencies[int(len(latencies) * 0.99) - 1] * 1000


def http_ingest(quick: bool) -> dict[str, dict[str, float]]:
    singles = 600 if quick else 3000
    batches = 10 if quick else 50
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "g.yaml"
        config.write_text(
            "store: sqlite:///events.db\nhttp: {max_body: 4MiB}\n"
            "routes: [{name: audit, from: orders.>, when: 'data.amount > 100', "
            "to: [{topic: audit.orders}]}]\n"
        )
        servers = {
            "tidings": [
                sys.executable,
                "-m",
                "tidings.cli",
                "serve",
                str(config),
                "--listen",
                "127.0.0.1:0",
            ],
            "Starlette+SQLite": [
                sys.executable,
                str(Path(__file__).with_name("_gateway_floor.py")),
            ],
        }
        for name, command in servers.items():
            proc, url = _start(command, folder)
            try:
                single = [json.dumps(_event(n)).encode() for n in range(singles)]
                took = asyncio.run(_load(url, single, "application/cloudevents+json", 16))
                batch = [
                    json.dumps([_event(10**6 + b * 100 + i) for i in range(100)]).encode()
                    for b in range(batches)
                ]
                took_batches = asyncio.run(
                    _load(url, batch, "application/cloudevents-batch+json", 4)
                )
                print(f"G3 {name}: {singles / took:,.0f} single/s", file=sys.stderr, flush=True)
                p99 = asyncio.run(_paced(url, 1000, 1, 2 * 10**6))
                out[name] = {
                    "single": singles / took,
                    "batch": batches * 100 / took_batches,
                    "p99": p99,
                }
            finally:
                proc.send_signal(2)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return out


def run(quick: bool = False) -> list[Row]:
    """Rows for ``benchmarks/run.py``."""
    rate = route_evaluation(20_000 if quick else 200_000, 50)
    rate5 = route_evaluation(20_000 if quick else 100_000, 10)
    reload_ms, pause_ms = asyncio.run(reload_500(2 if quick else 5))
    rows = [
        Row("G1 route eval", "tidings", "events/s", rate, "/s", "50 CEL routes, 1 candidate/event"),
        Row("G1 route eval 5", "tidings", "events/s", rate5, "/s", "50 CEL routes, 5 candidates"),
        Row(
            "G2 reload 500",
            "tidings",
            "ms",
            reload_ms,
            "µs",
            "parse+validate+compile+swap",
            {"max loop pause ms": pause_ms},
        ),
    ]
    ingest = http_ingest(quick)
    for library, figures in ingest.items():
        rows.append(Row("G3 POST single", library, "events/s", figures["single"], "/s"))
        rows.append(Row("G3 POST batch 100", library, "events/s", figures["batch"], "/s"))
        rows.append(Row("G3 p99 at 1k/s", library, "ms", figures["p99"], "µs"))
    return rows


BASELINES = {
    "G3 POST single": "Starlette+SQLite",
    "G3 POST batch 100": "Starlette+SQLite",
    "G3 p99 at 1k/s": "Starlette+SQLite",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    for row in run(args.quick):
        extra = ", ".join(f"{k} {v:.2f}" for k, v in row.extra.items())
        print(f"{row.scenario:20} {row.library:18} {row.value:>12,.2f} {row.metric} {extra}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

"""Gateway benchmarks: route evaluation, reload, HTTP ingest against a floor.

- **G1 route evaluation**: events per second through a table of 50 routes with CEL
  conditions, in process: each event's topic is taken by 1 route (G1) or 5 (G1 5), whose
  conditions are evaluated and the matching ones' dispatches built. Target: >= 100,000
  events/s.
- **G2 reload**: a 500-route config parsed, validated, compiled and swapped by
  ``Gateway.reload`` (ms, best of 10), the longest pause of the event loop meanwhile (a 1 ms
  ticker; the GC frozen first, as ``tidings serve`` does), the longest pause of the same
  ticker for as long with no reload (the machine's own noise: on a loaded machine the OS
  deschedules the process for milliseconds), and for as long beside a thread that only spins
  in Python (the floor of any reload in a thread: on a loaded machine the OS preempts the
  thread while it holds the GIL, and the loop waits for it). Targets: <= 200 ms, pause
  <= 10 ms.
- **G3 HTTP ingest**: ``tidings serve`` in a second process on loopback (SQLite log, in a
  folder other than the config's, which is watched for reloads), loaded by a raw asyncio
  HTTP/1.1 keep-alive client in a third process (``_gateway_load.py``, cheaper per request
  than the servers, so it is not the limit): single-event POSTs on 16 connections, batches of
  100 on 4, and the p99 accept latency of single events started at a paced 1,000/s (open
  loop, measured from when each was due; best of 3). Two gateway configs: a route whose
  topic target fires for 80% of the events (each firing appends one more event through
  ``bus.emit``, on the same loop), and the same route firing for none (intake alone). The
  floor is a minimal Starlette endpoint that only appends the body to SQLite
  (``_gateway_floor.py``), on the same uvicorn, loaded the same way. Every server runs at
  once and the load rounds alternate between them (5 rounds, the order reversed every other
  round; new ids each round), so a swing of the machine's load hits them alike: rates and
  CPU per event are medians over the rounds, ``x floor`` the median of the per-round rate
  ratios. Targets: single >= 0.6x floor and >= 3,000/s; batches >= 50,000 events/s; p99
  <= 10 ms. Beside the rates, each server's CPU time per event (from ``/proc``, counted until
  the server is idle again, so a gateway's routing after the 202 counts too): on a loaded
  machine the rates swing with the load, the CPU per event far less. G3 runs before G1 and
  G2, in a process that has done nothing else.

Usage: ``python benchmarks/bench_gateway.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import tidings
from _harness import Row, Worker, check
from tidings.event import Envelope
from tidings.gateway import Gateway, RouteTable, load_config, parse_config


def routes_yaml(count: int, topics: int) -> str:
    routes = [
        f"  - {{name: r{i}, from: t{i % topics}.>, when: 'data.amount > {i} && "
        f'source == "bench"\', to: [{{topic: out.r{i}}}]}}'
        for i in range(count)
    ]
    return "\n".join(["routes:", *routes]) + "\n"


def route_evaluation(count: int, topics: int) -> tuple[float, float]:
    """Events routed per second of wall time, and per second of this process's CPU time
    (steadier on a loaded machine)."""
    table = RouteTable.build(parse_config([("bench.yaml", routes_yaml(50, topics))]))
    events = [
        Envelope(f"t{n % topics}.x", {"amount": n % 60}, 1_000 + n, source="bench", _id=f"e{n}")
        for n in range(1000)
    ]
    routed = 0
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(count // len(events)):
        for env in events:
            routed += len(table.route(env)) >= 0
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    check("G1", "tidings", routed, (count // len(events)) * len(events))
    return routed / took, routed / cpu


async def _longest_pause(seconds: float, during: Any = None) -> float:
    """The longest gap (s) between the wake-ups of a 1 ms ticker over ``seconds``, or while
    ``during`` (a coroutine) runs."""
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
    if during is None:
        await asyncio.sleep(seconds)
    else:
        await during
    running = False
    await ticker
    return worst


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def reload_500(repeat: int) -> tuple[float, float, float, float]:
    """Best reload time (ms), longest loop pause during the reloads (ms), the longest
    pause of the same ticker with no reload, for as long (ms): the machine's own noise, and
    beside a thread spinning in Python for as long (ms)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "g.yaml"
        path.write_text(routes_yaml(500, 50))
        async with tidings.Bus(store="memory://") as bus:
            gateway = Gateway(bus, load_config([path]), paths=[])
            gateway.paths = (path,)
            gc.freeze()  # as ``tidings serve`` does once started
            times: list[float] = []

            async def reloads() -> None:
                for _ in range(repeat):
                    start = time.perf_counter()
                    assert await gateway.reload()
                    times.append(time.perf_counter() - start)

            began = time.perf_counter()
            pause = await _longest_pause(0, reloads())
            took = time.perf_counter() - began
            idle = await _longest_pause(took)
            busy = await _longest_pause(0, asyncio.to_thread(_spin, took))
            gc.unfreeze()
            assert len(gateway.table.config.routes) == 500
            return min(times) * 1000, pause * 1000, idle * 1000, busy * 1000


SERVER_START = 30.0
"""How long a server may take to print its URL (seconds)."""


def start_server(
    command: list[str], cwd: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start a server that prints its URL (``http://...``) among its first lines; the process
    and the URL. Its output is read by a thread (``_harness.Worker``): the wait for the URL
    is bounded, and a server writing on never blocks on a full pipe.

    Raises:
        TimeoutError: no URL within :data:`SERVER_START` seconds (the server is killed).
        RuntimeError: the server exited first.
    """
    server = Worker(shlex.join(command[1:]), command, SERVER_START, env, cwd)
    line = server.line_with("http://")
    return server.process, next(w for w in line.split() if w.startswith("http://"))


def stop_servers(servers: list[subprocess.Popen[str]]) -> None:
    """Interrupt every server (SIGINT, as Ctrl-C), then wait 30 s at most for each to exit,
    killing one that has not."""
    for proc in servers:
        proc.send_signal(signal.SIGINT)
    for proc in servers:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdin is not None:  # the pipe start_server opened (never written to)
            proc.stdin.close()


_LOAD = str(Path(__file__).with_name("_gateway_load.py"))


def generate_load(
    url: str, mode: str, count: int, connections: int, first: int, rate: float = 0
) -> Any:
    """Run the load generator (a second process) once; its JSON result."""
    command = [sys.executable, _LOAD, url, mode, str(count), str(connections), str(first)]
    done = subprocess.run(
        [*command, str(rate)], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(done.stdout)
    expected = {"202": count}
    if result["statuses"] != expected:
        raise AssertionError(f"G3 {mode} at {url}: answers {result['statuses']}, not {expected}")
    return result


def _cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid``'s threads used so far (``/proc/PID/task/*/schedstat``,
    nanoseconds); NaN where ``/proc`` is not."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return float("nan")
    return total / 1e9


def settled_cpu(pid: int) -> float:
    """The CPU time of ``pid`` once it is idle (under 3 ms of CPU in 0.2 s: an idle gateway
    polls its log, about 1.5 ms in 0.2 s; at most 10 s)."""
    used = _cpu_seconds(pid)
    for _ in range(50):
        time.sleep(0.2)
        now = _cpu_seconds(pid)
        if now - used < 0.003:
            break
        used = now
    return now


SHAPES = {"single": (16, 1), "batch": (4, 100)}
"""Connections and events per POST of each load mode."""


def load_rounds(
    servers: dict[str, tuple[subprocess.Popen[str], str]], mode: str, count: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    """Load every server with ``count`` POSTs of ``mode`` per round, servers alternating
    within each round (the order reversed every other round); per server, each round's
    (events/s, server CPU µs per event counted until it is idle again). Event ids are new
    in every round."""
    connections, size = SHAPES[mode]
    out: dict[str, list[tuple[float, float]]] = {label: [] for label in servers}
    order = list(servers)
    for round_ in range(rounds):
        first = 1_000_000 * (1 + round_) + (0 if mode == "single" else 500_000)
        for label in order if round_ % 2 == 0 else order[::-1]:
            proc, url = servers[label]
            before = settled_cpu(proc.pid)
            result = generate_load(url, mode, count, connections, first)
            used = settled_cpu(proc.pid) - before
            out[label].append((result["events"] / result["seconds"], used / (count * size) * 1e6))
    return out


def http_ingest(quick: bool) -> dict[str, dict[str, float]]:
    """G3 for the gateway (a route that fires for 80% of events, each fired route appending
    one more event through ``bus.emit``; and a route that fires for none) and the floor:
    every server up at once, load rounds interleaved between them; per server the median
    rate and CPU per event over the rounds, and the median of the per-round rate ratios to
    the floor."""
    singles, batches, rounds = (600, 20, 2) if quick else (3000, 200, 5)
    route = (
        "routes: [{{name: audit, from: orders.>, when: 'data.amount > {}', "
        "to: [{{topic: audit.orders}}]}}]\n"
    )
    out: dict[str, dict[str, float]] = {}
    servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
    with tempfile.TemporaryDirectory() as folder:
        try:
            configs = Path(folder) / "config"
            configs.mkdir()
            for name, threshold in {"tidings": 100, "tidings, no route fires": 1000}.items():
                config = configs / f"g{threshold}.yaml"
                # The logs in data/, outside the config folder (as ``make run`` keeps its log
                # in .tidings/, its config in examples/): the config folder is watched for
                # reloads, and a log there would wake the watcher on every write.
                config.write_text(
                    f"store: sqlite:///data/events{threshold}.db\nhttp: {{max_body: 4MiB}}\n"
                    + route.format(threshold)
                )
                command = ["-m", "tidings.cli", "serve", str(config), "--listen", "127.0.0.1:0"]
                servers[name] = start_server([sys.executable, *command], folder)
            floor = [sys.executable, str(Path(__file__).with_name("_gateway_floor.py"))]
            servers[FLOOR] = start_server(floor, folder)
            for _, url in servers.values():  # warm up: imports, caches, first pages
                generate_load(url, "single", 200, 16, 0)
                generate_load(url, "batch", 5, 4, 200)
            single = load_rounds(servers, "single", singles, rounds)
            batch = load_rounds(servers, "batch", batches, rounds)
            p99: dict[str, list[float]] = {label: [] for label in servers}
            for round_ in range(3):
                for label in servers if round_ % 2 == 0 else list(servers)[::-1]:
                    paced = generate_load(
                        servers[label][1], "paced", 3000, 64, 10**7 * (1 + round_), 1000
                    )
                    p99[label].append(paced["latencies_ms"][1])
        finally:
            stop_servers([proc for proc, _ in servers.values()])
    for label in servers:
        figures: dict[str, float] = {"p99": min(p99[label])}  # best of 3, as before
        for mode, rows in (("single", single), ("batch", batch)):
            figures[mode] = statistics.median(rate for rate, _ in rows[label])
            figures[f"cpu {mode}"] = statistics.median(cpu for _, cpu in rows[label])
            figures[f"x floor {mode}"] = statistics.median(
                ours[0] / base[0] for ours, base in zip(rows[label], rows[FLOOR], strict=True)
            )
        out[label] = figures
        print(f"G3 {label}: {figures}", file=sys.stderr, flush=True)
    return out


FLOOR = "Starlette+SQLite"


def run(quick: bool = False) -> list[Row]:
    """Rows for ``benchmarks/run.py``."""
    # G3 first, in a process that has done nothing else yet (no heap, threads or files
    # of G1 and G2 beside the servers it measures)
    ingest = ingest_rows(quick)
    return [*in_process_rows(quick), *ingest]


def in_process_rows(quick: bool) -> list[Row]:
    """G1 and G2."""
    rate, cpu_rate = route_evaluation(20_000 if quick else 200_000, 50)
    rate5, cpu_rate5 = route_evaluation(20_000 if quick else 100_000, 10)
    reload_ms, pause_ms, idle_ms, busy_ms = asyncio.run(reload_500(3 if quick else 10))
    return [
        Row(
            "G1 route eval",
            "tidings",
            "events/s",
            rate,
            "/s",
            "50 CEL routes, 1 candidate/event",
            {"per cpu second": cpu_rate},
        ),
        Row(
            "G1 route eval 5",
            "tidings",
            "events/s",
            rate5,
            "/s",
            "50 CEL routes, 5 candidates",
            {"per cpu second": cpu_rate5},
        ),
        Row(
            "G2 reload 500",
            "tidings",
            "ms",
            reload_ms,
            "µs",
            "parse+validate+compile+swap",
            {
                "max loop pause ms": pause_ms,
                "same, no reload ms": idle_ms,
                "same, spinning thread ms": busy_ms,
            },
        ),
    ]


def ingest_rows(quick: bool) -> list[Row]:
    """G3."""
    rows = []
    ingest = http_ingest(quick)
    for library, figures in ingest.items():
        floor = ingest[FLOOR]
        ratio = {
            "x floor": figures["x floor single"],
            "cpu µs/event": figures["cpu single"],
            "cpu x floor": floor["cpu single"] / figures["cpu single"],
        }
        rows.append(Row("G3 POST single", library, "events/s", figures["single"], "/s", "", ratio))
        ratio = {
            "x floor": figures["x floor batch"],
            "cpu µs/event": figures["cpu batch"],
            "cpu x floor": floor["cpu batch"] / figures["cpu batch"],
        }
        rows.append(
            Row("G3 POST batch 100", library, "events/s", figures["batch"], "/s", "", ratio)
        )
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
    parser.add_argument(
        "--ingest-only", action="store_true", help="only G3 (HTTP ingest against the floor)"
    )
    args = parser.parse_args()
    before = os.getloadavg()
    rows = ingest_rows(args.quick) if args.ingest_only else run(args.quick)
    after = os.getloadavg()
    for row in rows:
        extra = ", ".join(f"{k} {v:.2f}" for k, v in row.extra.items())
        print(f"{row.scenario:20} {row.library:24} {row.value:>12,.2f} {row.metric} {extra}")
    print(
        f"load average (1 min) before {before[0]:.2f}, after {after[0]:.2f}; {os.cpu_count()} cpus"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

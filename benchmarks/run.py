"""Run every benchmark, print one table and write benchmarks/RESULTS.md.

Usage: ``python benchmarks/run.py [--quick]`` (``make bench`` runs the full set).

Each benchmark module runs in a fresh process of its own (spawned, one after another), so
what an earlier module left behind (a large heap the collector walks, threads, open
files) does not weigh on a later one; the libraries compared within a scenario still run
side by side in one process.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import multiprocessing
import os
import platform
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_bridges
import bench_burst
import bench_bus
import bench_chaos
import bench_contracts
import bench_emit
import bench_gateway
import bench_kafka
import bench_nats
import bench_observability
import bench_queues
import bench_routing
import bench_store
from _harness import Row

BASELINES = {
    **{
        f"L {backend} {figure}": "eventsourcing"
        for backend in ("SQLite", "PostgreSQL")
        for figure in ("single", "batched", "read", "fold")
    },
    "E1": "blinker",
    "S5 1P/1C": "queue.Queue",
    "S5 4P/4C": "queue.Queue",
    "N1": "raw nats-py",
    "N2": "raw nats-py",
    "N3": "raw nats-py",
    "O1": "tidings",
    "OC": "tidings",
    "OA": "tidings",
    "C1": "jsonschema",
    "CC": "tidings publish",
    **bench_gateway.BASELINES,
    "X1": "direct connection",
    "X2": "direct connection",
    **bench_kafka.BASELINES,
    **bench_bridges.BASELINES,
}
"""The row each scenario's *vs baseline* ratio divides by (default: the raw loop)."""

PEERS = (
    "eventsourcing",
    "psycopg",
    "tidings",
    "pyee",
    "blinker",
    "pypubsub",
    "bubus",
    "msgspec",
    "nats-py",
    "faststream",
    "aiokafka",
    "aiomqtt",
    "aio-pika",
)


def _versions() -> str:
    found = []
    for name in PEERS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _speedups() -> str:
    import tidings

    return "compiled (mypyc)" if tidings.__speedups__ else "pure Python (no compiled build)"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _format(rows: list[Row]) -> list[str]:
    """Markdown table rows; ratios against tidings and against the floor where there is one."""
    lines = [
        "| scenario | library | figure | vs tidings | vs baseline | other | note |",
        "|---|---|---|---|---|---|---|",
    ]
    by_scenario: dict[str, list[Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, []).append(row)
    for scenario, group in by_scenario.items():
        ours = next((r for r in group if r.library == "tidings"), None)
        base_name = BASELINES.get(scenario, "raw loop")
        floor = next((r for r in group if r.library == base_name), None)
        for row in group:
            lower_is_better = row.unit in ("µs", "B", "instr", "ms")
            vs_ours = "" if row.library == "tidings" else _ratio(row, ours, lower_is_better)
            vs_floor = _ratio(row, floor, lower_is_better)
            other = ", ".join(f"{k} {_num(v)}" for k, v in row.extra.items())
            lines.append(
                f"| {scenario} | {row.library} | {_num(row.value)} {row.metric} | {vs_ours} "
                f"| {vs_floor} | {other} | {row.note} |"
            )
    return lines


def _ratio(row: Row, base: Row | None, lower_is_better: bool) -> str:
    if base is None or base is row or not base.value or not row.value:
        return ""
    ratio = base.value / row.value if lower_is_better else row.value / base.value
    return f"{ratio:.2f}x"


def _num(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _run_module(name: str, quick: bool, sender: Connection) -> None:
    """Send the rows of benchmark module ``name`` through ``sender`` (in a spawned process;
    not a pool's: those are daemonic, and some benchmarks start processes of their own)."""
    sender.send(importlib.import_module(name).run(quick=quick))
    sender.close()


def _rows_of(spawn: SpawnContext, name: str, quick: bool) -> list[Row]:
    receiver, sender = spawn.Pipe(duplex=False)
    process = spawn.Process(target=_run_module, args=(name, quick, sender), name=name)
    process.start()
    sender.close()
    try:
        rows: list[Row] = receiver.recv()
    except EOFError:
        rows = []
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"{name} failed (exit code {process.exitcode}); see its output above")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    rows: list[Row] = []
    took: list[str] = []
    started = time.perf_counter()
    spawn = multiprocessing.get_context("spawn")
    for module in (
        bench_bus,
        bench_emit,
        bench_queues,
        bench_routing,
        bench_burst,
        bench_nats,
        bench_kafka,
        bench_store,
        bench_observability,
        bench_gateway,
        bench_chaos,
        bench_contracts,
        bench_bridges,
    ):
        begun = time.perf_counter()
        rows.extend(_rows_of(spawn, module.__name__, args.quick))
        took.append(f"{module.__name__} {time.perf_counter() - begun:.0f} s")
        print(f"{took[-1]}", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    table = _format(rows)
    print("\n".join(table))
    if not args.no_write:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        header = [
            "# Benchmark results",
            "",
            f"- date: {now}",
            f"- machine: {_machine()}",
            f"- python: {platform.python_version()} ({platform.python_implementation()})",
            f"- versions: {_versions()}",
            f"- tidings' publish hot path: {_speedups()}",
            (
                f"- command: `make bench`{' (quick)' if args.quick else ''}, "
                f"{total:.0f} s ({', '.join(took)})"
            ),
            "",
            "Ratios: *vs tidings* is the row's figure over tidings' (above 1 means better than",
            "tidings); *vs baseline* is the row's figure over the scenario's baseline: a plain",
            "loop calling the same handlers (S1-S4), `queue.Queue` (S5), raw nats-py doing the",
            "same work on the same nats-server (N1-N3), the eventsourcing library doing the same",
            "work on the same database (L). Latency and memory rows",
            "invert the ratio so above 1 still means better. S7 runs tidings alone: the peers",
            "have no bounded buffer with an overflow policy. O1, OC and OA measure what",
            "observability costs the S1 hot path against plain tidings: O1 in wall time,",
            "OC in instructions per publish counted by valgrind's callgrind, OA in CPU time with",
            "every variant in one process, interleaved (median of per-round ratios). R1-R4 (routing at",
            "scale) run tidings alone: first publish to a new topic, memory over many topics,",
            "subscribe and cancel at 100,000 subscriptions. X1-X2: the chaos fault proxy with",
            "no fault active against a direct connection (acked NATS publishes, same rounds).",
            "C1/CC: what validating an event",
            "against its registered schema adds (C1 vs the jsonschema reference implementation,",
            "CC in instructions vs a publish); C2: a compatibility check, tidings alone.",
            "K1-K3: every contender set up once on one Tansu broker (groups Stable and warmed",
            "up first, every consumer with tidings' fetch wait of 100 ms), then interleaved",
            "rounds of slices; each figure is the median of its rounds, *other* gives the client's",
            "CPU per event and the median of the per-round ratios tidings / peer with the lowest",
            "and highest of them.",
            "",
        ]
        Path(__file__).with_name("RESULTS.md").write_text("\n".join(header + table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

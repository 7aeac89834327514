"""Run every benchmark, print one table and write benchmarks/RESULTS.md.

Usage: ``python benchmarks/run.py [--quick]`` (``make bench`` runs the full set).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_bus  # noqa: E402
from _harness import Row  # noqa: E402

PEERS = ("tidings", "pyee", "blinker", "pypubsub", "bubus", "msgspec")


def _versions() -> str:
    found = []
    for name in PEERS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


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
        "| scenario | library | figure | vs tidings | vs raw floor | other | note |",
        "|---|---|---|---|---|---|---|",
    ]
    by_scenario: dict[str, list[Row]] = {}
    for row in rows:
        by_scenario.setdefault(row.scenario, []).append(row)
    for scenario, group in by_scenario.items():
        ours = next((r for r in group if r.library == "tidings"), None)
        floor = next((r for r in group if r.library == "raw loop"), None)
        for row in group:
            lower_is_better = row.unit in ("µs", "B")
            vs_ours = _ratio(row, ours, lower_is_better)
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
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    rows = bench_bus.run(quick=args.quick)
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
            f"- command: `make bench`{' (quick)' if args.quick else ''}",
            "",
            "Ratios: *vs tidings* is the row's figure over tidings' (above 1 means better than",
            "tidings); *vs raw floor* is the row's figure over a plain loop calling the same",
            "handlers. Latency and memory rows invert the ratio so above 1 still means better.",
            "",
        ]
        Path(__file__).with_name("RESULTS.md").write_text("\n".join(header + table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

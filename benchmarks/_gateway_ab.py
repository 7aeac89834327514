"""A/B of gateway servers on a shared machine: every variant serves at once, load rounds
alternate between them (the order reversed every other round), and each variant's server
CPU time per event (from ``/proc``, counted until the server is idle again, as G3 does) and
rate are reported as medians over the rounds, with the rate ratio to the first variant per
round. On a machine shared with other work the rates swing with the load; CPU per event,
and ratios taken within one round, far less.

Usage: ``python benchmarks/_gateway_ab.py MODE ROUNDS VARIANT [VARIANT ...]``: MODE is
``single`` (2,000 single-event POSTs on 16 connections per round) or ``batch`` (30 POSTs of
100 on 4); a VARIANT is ``LABEL=floor`` (``_gateway_floor.py``) or ``LABEL=SRC`` (``tidings
serve`` with ``SRC`` first on ``PYTHONPATH``: a copy of ``src`` at another commit, say),
optionally followed by ``,THRESHOLD=N`` (the route fires for ``data.amount > N``: 100, the
default, fires for 80 % of the events, 1000 for none, as in G3).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_gateway import generate_load, settled_cpu

ROUTE = (
    "routes: [{{name: audit, from: orders.>, when: 'data.amount > {}', "
    "to: [{{topic: audit.orders}}]}}]\n"
)


def _command(spec: str, index: int, folder: str) -> tuple[str, list[str], dict[str, str]]:
    label, _, rest = spec.partition("=")
    source, *options = rest.split(",")
    threshold = 100
    for option in options:
        name, _, value = option.partition("=")
        if name != "THRESHOLD":
            raise SystemExit(f"unknown option {name!r} in {spec!r}")
        threshold = int(value)
    env = dict(os.environ)
    if source == "floor":
        return label, [sys.executable, str(Path(__file__).with_name("_gateway_floor.py"))], env
    env["PYTHONPATH"] = source
    config = Path(folder) / f"g{index}.yaml"
    config.write_text(
        f"store: sqlite:///events{index}.db\nhttp: {{max_body: 4MiB}}\n" + ROUTE.format(threshold)
    )
    serve = ["-m", "tidings.cli", "serve", str(config), "--listen", "127.0.0.1:0"]
    return label, [sys.executable, *serve], env


def _start(
    command: list[str], env: dict[str, str], folder: str
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    for _ in range(200):  # lines printed before the URL
        line = proc.stdout.readline()
        if "http://" in line:
            return proc, next(w for w in line.split() if w.startswith("http://"))
    proc.kill()
    raise RuntimeError(f"{command} printed no URL")


def main() -> None:
    mode, rounds, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    count, connections, per_request = (2000, 16, 1) if mode == "single" else (30, 4, 100)
    folder = tempfile.mkdtemp()
    servers: list[tuple[str, subprocess.Popen[str], str]] = []
    try:
        for index, spec in enumerate(specs):
            label, command, env = _command(spec, index, folder)
            servers.append((label, *_start(command, env, folder)))
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in servers}
        rate: dict[str, list[float]] = {label: [] for label, _, _ in servers}
        ratio: dict[str, list[float]] = {label: [] for label, _, _ in servers}
        first = 0
        for round_ in range(rounds):
            this: dict[str, float] = {}
            for label, proc, url in servers if round_ % 2 == 0 else servers[::-1]:
                before = settled_cpu(proc.pid)
                result = generate_load(url, mode, count, connections, first)
                used = settled_cpu(proc.pid) - before
                cpu[label].append(used / (count * per_request) * 1e6)
                this[label] = result["events"] / result["seconds"]
                rate[label].append(this[label])
            first += count * per_request
            for label, value in this.items():
                ratio[label].append(value / this[servers[0][0]])
    finally:
        for _, proc, _ in servers:
            proc.send_signal(2)
        for _, proc, _ in servers:
            proc.wait(30)
    for label, _, _ in servers:
        print(
            f"{mode} {label:12} cpu {statistics.median(cpu[label]):7.1f} µs/event "
            f"(min {min(cpu[label]):.1f})  rate {statistics.median(rate[label]):9,.0f}/s  "
            f"x {servers[0][0]} {statistics.median(ratio[label]):.2f} (median of {rounds})"
        )


if __name__ == "__main__":
    main()

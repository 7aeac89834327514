"""A/B of gateway servers on a shared machine: every variant serves at once, load rounds
alternate between them (the order reversed every other round), and each variant's server
CPU time per event (from ``/proc``, counted until the server is idle again, as G3 does) and
rate are reported as medians over the rounds, with the rate ratio to the first variant per
round. On a machine shared with other work the rates swing with the load; CPU per event,
and ratios taken within one round, far less.

Usage: ``python benchmarks/_gateway_ab.py MODE ROUNDS VARIANT [VARIANT ...]``: MODE is
``single`` (2,000 single-event POSTs on 16 connections per round) or ``batch`` (100 POSTs of
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

from bench_gateway import load_rounds, start_server, stop_servers

ROUTE = (
    "routes: [{{name: audit, from: orders.>, when: 'data.amount > {}', "
    "to: [{{topic: audit.orders}}]}}]\n"
)


def _command(spec: str, index: int, folder: str) -> tuple[str, list[str], dict[str, str], str]:
    """The label, command, environment and working folder of one variant; each gateway in
    a folder of its own, its config in ``config/`` and its log in ``data/`` (as in G3: no
    variant's config watcher sees another's, or its own, log being written)."""
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
        floor = [sys.executable, str(Path(__file__).with_name("_gateway_floor.py"))]
        return label, floor, env, folder
    env["PYTHONPATH"] = source
    home = Path(folder) / f"v{index}"
    (home / "config").mkdir(parents=True)
    config = home / "config" / "gateway.yaml"
    config.write_text(
        "store: sqlite:///data/events.db\nhttp: {max_body: 4MiB}\n" + ROUTE.format(threshold)
    )
    serve = ["-m", "tidings.cli", "serve", str(config), "--listen", "127.0.0.1:0"]
    return label, [sys.executable, *serve], env, str(home)


def main() -> None:
    mode, rounds, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    count = 2000 if mode == "single" else 100
    folder = tempfile.mkdtemp()
    servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
    try:
        for index, spec in enumerate(specs):
            label, command, env, home = _command(spec, index, folder)
            servers[label] = start_server(command, home, env)
        figures = load_rounds(servers, mode, count, rounds)
    finally:
        stop_servers([proc for proc, _ in servers.values()])
    first = next(iter(servers))
    for label, rows in figures.items():
        cpu = [c for _, c in rows]
        ratio = [ours[0] / base[0] for ours, base in zip(rows, figures[first], strict=True)]
        print(
            f"{mode} {label:12} cpu {statistics.median(cpu):7.1f} µs/event "
            f"(min {min(cpu):.1f})  rate {statistics.median(r for r, _ in rows):9,.0f}/s  "
            f"x {first} {statistics.median(ratio):.2f} (median of {rounds})"
        )


if __name__ == "__main__":
    main()

"""What observability costs the S1 hot path: 1 topic x 10 sync subscribers, typed publish.

Rows (scenario O1, publishes/s, each against plain tidings in the same run):

- ``tidings``: no observability (the reference);
- ``+ metrics``: :class:`tidings.observability.Metrics` on the bus;
- ``+ tracing, not sampling``: :class:`tidings.observability.Tracing` with an SDK tracer
  provider whose sampler is ``ParentBased(ALWAYS_OFF)``, publishing outside any span;
- ``+ tracing, no SDK``: ``Tracing(bus)`` with no tracer provider configured;
- ``+ metrics + tracing``: both, not sampling;
- ``+ tracing, sampling all``: every publish and handler recorded (spans made and ended,
  exported nowhere): what a sampled event costs.

Wall-clock time on a shared machine is noisy, so each variant runs in a fresh process (none
inherits another's heap layout), in alternating rounds, and keeps its best round; the
handler calls are counted in each process. Scenario OC counts instructions instead, with valgrind's callgrind
(when valgrind is installed, not in ``--quick``): the same loop run with N=0 and N=20,000
publishes in ``_callgrind_target.py``; the difference of the "Collected" totals divided by N
is the exact cost of one publish, independent of the machine's load.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from _callgrind_target import VARIANTS
from _harness import Row

__all__ = ("run",)

HANDLERS = 10
ROUNDS = 5
CALLGRIND_N = 20_000
TARGET = Path(__file__).with_name("_callgrind_target.py")
SHRINK = {"+ tracing, sampling all": 100}
"""Variants that run on fewer publishes: every one records 11 spans, tens of µs each."""


def _wall(count: int) -> list[Row]:
    """Each variant in a fresh process (so none inherits another's heap), in alternating
    rounds; the best round per variant."""
    best = dict.fromkeys(VARIANTS, float("inf"))
    counts = {name: count // SHRINK.get(name, 1) for name in VARIANTS}
    for _ in range(ROUNDS):
        for name in VARIANTS:
            result = subprocess.run(
                [sys.executable, str(TARGET), name, str(counts[name]), "--time"],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            best[name] = min(best[name], float(result.stdout) / counts[name])
    base = best["tidings"]
    return [
        Row(
            "O1",
            name,
            "publishes/s",
            1 / seconds,
            "/s",
            "" if name == "tidings" else f"{(seconds / base - 1) * 100:+.1f}% time per publish",
        )
        for name, seconds in best.items()
    ]


def _instructions(name: str, n: int) -> int:
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(TARGET),
            name,
            str(n),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total for {name}: {result.stderr[-500:]}")
    return int(found.group(1))


def _callgrind() -> list[Row]:
    rows = []
    per_publish = {}
    for name in VARIANTS:
        n = CALLGRIND_N // SHRINK.get(name, 1)
        per_publish[name] = (_instructions(name, n) - _instructions(name, 0)) / n
    base = per_publish["tidings"]
    for name, instructions in per_publish.items():
        note = "" if name == "tidings" else f"{(instructions / base - 1) * 100:+.1f}% instructions"
        rows.append(Row("OC", name, "instructions/publish", instructions, "instr", note))
    return rows


def run(quick: bool = False) -> list[Row]:
    """O1 (wall clock) and, with valgrind and not ``quick``, OC (instruction counts)."""
    rows = _wall(20_000 if quick else 200_000)
    if not quick and shutil.which("valgrind"):
        rows += _callgrind()
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.scenario} {row.library:<28} {row.value:>14,.1f} {row.metric}  {row.note}")

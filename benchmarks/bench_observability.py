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
handler calls are counted in each process. Scenario OC counts instructions instead, with
valgrind's callgrind (when valgrind is installed, not in ``--quick``): one process builds
each variant in turn and runs its publishes inside one ``functools.reduce`` call; callgrind
collects only inside that call and dumps a profile after each, so each profile's total
divided by N is the exact cost of one publish (and of the one-line lambda driving it, the
same for every variant), independent of the machine's load. Scenario OA is an A/B in one
process: every variant but sampling all is built in one fresh process and run in turn,
round after round, timed in CPU time; each row gives the median over rounds of its time per
publish over plain tidings' in the same round, which a loaded machine disturbs alike.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
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
                [sys.executable, str(TARGET), name, str(counts[name])],
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


def _interleaved(count: int, rounds: int) -> list[Row]:
    """OA: every variant but sampling all in one process, in turn, ``rounds`` times; per
    variant, its best CPU time per publish and the median of its per-round ratios."""
    result = subprocess.run(
        [sys.executable, str(TARGET), "--interleaved", str(count), str(rounds)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    times: dict[str, list[float]] = json.loads(result.stdout)
    base = times["tidings"]
    rows = []
    for name, series in times.items():
        ratio = statistics.median(t / b for t, b in zip(series, base, strict=True))
        note = "" if name == "tidings" else f"{(ratio - 1) * 100:+.1f}% CPU time per publish"
        rows.append(Row("OA", name, "publishes/s (CPU)", 1 / min(series), "/s", note))
    return rows


def _instructions(counts: dict[str, int]) -> dict[str, float]:
    """Instructions per publish of each variant, from one callgrind run."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=functools_reduce",
                "--dump-after=functools_reduce",
                f"--callgrind-out-file={out}",
                sys.executable,
                str(TARGET),
                "--callgrind",
                *(str(n) for n in counts.values()),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        totals = []
        for part in range(1, len(counts) + 1):
            found = re.search(r"^totals: (\d+)", Path(f"{out}.{part}").read_text(), re.MULTILINE)
            if found is None:
                raise RuntimeError(f"callgrind wrote no totals in {out}.{part}")
            totals.append(int(found.group(1)))
    if min(totals) == 0:
        raise RuntimeError("callgrind counted nothing: is this Python's libpython stripped?")
    return {name: total / counts[name] for name, total in zip(counts, totals, strict=True)}


def _callgrind() -> list[Row]:
    per_publish = _instructions({name: CALLGRIND_N // SHRINK.get(name, 1) for name in VARIANTS})
    base = per_publish["tidings"]
    return [
        Row(
            "OC",
            name,
            "instructions/publish",
            instructions,
            "instr",
            "" if name == "tidings" else f"{(instructions / base - 1) * 100:+.1f}% instructions",
        )
        for name, instructions in per_publish.items()
    ]


def run(quick: bool = False) -> list[Row]:
    """O1 (wall clock), OA (CPU time, interleaved in one process) and, with valgrind and not
    ``quick``, OC (instruction counts)."""
    rows = _wall(20_000 if quick else 100_000)
    rows += _interleaved(5_000 if quick else 20_000, 7 if quick else 15)
    if not quick and shutil.which("valgrind"):
        rows += _callgrind()
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row.scenario} {row.library:<28} {row.value:>14,.1f} {row.metric}  {row.note}")

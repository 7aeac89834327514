"""S1 wall-clock A/B in one process: tidings, pyee and the raw loop alternated, round by round.

``python _s1_ab.py ROUNDS COUNT``: each round times COUNT publishes of each library (the
order rotating round by round, garbage collection off) and prints the round's ratios; then the
medians. Which tidings is measured is whichever ``import tidings`` finds (set PYTHONPATH to
compare two trees, in alternating processes).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time

from bench_bus import SYNC_PEERS, Tick


def _time(publish: object, ticks: list[Tick]) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for tick in ticks:
            publish(0, tick)  # type: ignore[operator]
        return time.perf_counter() - start
    finally:
        gc.enable()


def main(rounds: int, count: int) -> None:
    ticks = [Tick(i) for i in range(count)]
    libraries = ("tidings", "pyee", "raw loop")
    publishers = {name: SYNC_PEERS[name](1, [0]) for name in libraries}
    vs_pyee, vs_raw, rates = [], [], []
    for r in range(rounds):
        order = libraries[r % 3 :] + libraries[: r % 3]
        seconds = {name: _time(publishers[name], ticks) for name in order}
        vs_pyee.append(seconds["pyee"] / seconds["tidings"])
        vs_raw.append(seconds["raw loop"] / seconds["tidings"])
        rates.append(count / seconds["tidings"])
        print(
            f"round {r}: tidings {rates[-1]:,.0f}/s, {vs_pyee[-1]:.2f}x pyee, {vs_raw[-1]:.2f}x raw"
        )
    print(
        f"median: tidings {statistics.median(rates):,.0f}/s, "
        f"{statistics.median(vs_pyee):.2f}x pyee, {statistics.median(vs_raw):.2f}x raw"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))

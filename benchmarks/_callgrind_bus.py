"""S1 under callgrind: instructions per publish, as ``bench_bus`` measures it (one typed
topic, 10 sync handlers), beside the raw loop and pyee.

``python _callgrind_bus.py N [STEP]`` drives N publishes of each library (tidings, raw loop,
pyee, in that order) through one ``functools.reduce`` call each, so that callgrind,
collecting only inside ``functools_reduce`` and dumping after each call, writes one profile
per library::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        --dump-after=functools_reduce --callgrind-out-file=cg.out \\
        python benchmarks/_callgrind_bus.py 20000 1500

Instructions per publish: the ``totals:`` of the last three profiles (tidings, raw loop,
pyee; the imports' own ``reduce`` calls write tiny ones before them) divided by N.

Under callgrind the program runs some 50 times slower than natively, so the wall clock
moves on by more than one 65.536 µs granule of the hybrid clock between two publishes,
which natively happens about once every 40 publishes. With ``STEP``, the bus's clock reads
a simulated wall clock instead, advancing ``STEP`` ns per reading (1500: a native
publish's duration), through calls as cheap as reading the real clock (a C call that makes
a new int); without it, the real clock (every publish in a new granule: the worst case).
"""

from __future__ import annotations

import functools
import gc
import itertools
import sys
import time
from typing import Any

import tidings
from bench_bus import SYNC_PEERS, Tick, _handlers


def _tidings(hits: list[int], step: int | None) -> Any:
    """bench_bus's S1 tidings publisher, on a clock reading a simulated wall if ``step``."""
    if step is None:
        return SYNC_PEERS["tidings"](1, hits)
    wall = functools.partial(next, itertools.count(time.time_ns(), step))
    bus = tidings.Bus(clock=tidings.HybridClock(wall=wall))
    for handler in _handlers(hits):
        bus.subscribe(Tick, handler)
    typed = bus.publish
    return lambda topic, event: typed(event)


def main(n: int, step: int | None) -> None:
    gc.disable()
    tick = Tick(0)
    for library in ("tidings", "raw loop", "pyee"):
        hits = [0]
        publish = _tidings(hits, step) if library == "tidings" else SYNC_PEERS[library](1, hits)
        functools.reduce(lambda _, __: publish(0, tick), range(n), None)
        assert hits[0] == 10 * n, (library, hits[0])


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None)

"""Shared pieces of the benchmarks: result rows, timing, delivery checks."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ("DeliveryMismatchError", "Row", "check", "timed")


class DeliveryMismatchError(AssertionError):
    """A scenario's handlers were not called exactly as often as they had to be."""


@dataclass
class Row:
    """One figure: a library's result in one scenario."""

    scenario: str
    library: str
    metric: str
    value: float
    unit: str
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def check(scenario: str, library: str, got: int, expected: int) -> None:
    """Fail loudly when a handler call is missing (or doubled)."""
    if got != expected:
        raise DeliveryMismatchError(
            f"{scenario}/{library}: {got} handler calls counted, {expected} expected"
        )


def timed(run: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time in seconds of ``repeat`` runs (GC collected before, disabled during)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best

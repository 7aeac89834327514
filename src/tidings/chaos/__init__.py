"""tidings.chaos: inject faults into your own system and prove what survived.

- :class:`FaultProxy` (:mod:`tidings.chaos.proxy`): a TCP proxy with partitions (both ways
  or one way), latency with jitter, a bandwidth limit, resets, stalls and heal.
- Handler faults (:mod:`tidings.chaos.handler_faults`): middleware adding latency,
  errors, hangs, drops, duplicate deliveries and reordering.
- Process faults (:mod:`tidings.chaos.process`): SIGKILL, SIGSTOP/SIGCONT, CPU saturation;
  each returns once the kernel reports it taken (the async forms without blocking the
  event loop meanwhile).
- :func:`check` (:mod:`tidings.chaos.checker`): lost acknowledged events, phantoms,
  duplicates, order violations, delays and convergence, from a :class:`History`.
- Scenarios (:mod:`tidings.chaos.scenario`, :mod:`tidings.chaos.runner`):
  ``tidings chaos run SCENARIO.yaml``.
"""

from __future__ import annotations

from tidings.chaos.checker import MODES, Mode, Verdict, check
from tidings.chaos.errors import ChaosError, FaultError, FaultTimeoutError, ScenarioError
from tidings.chaos.handler_faults import (
    Drop,
    Duplicate,
    ErrorRate,
    Hang,
    InjectedFaultError,
    Latency,
    Reorder,
)
from tidings.chaos.history import (
    Delivered,
    FaultWindow,
    History,
    HistoryWriter,
    Published,
    read_history,
)
from tidings.chaos.process import CpuBurn, Stop, kill, kill_async
from tidings.chaos.proxy import FaultProxy

__all__ = (
    "MODES",
    "ChaosError",
    "CpuBurn",
    "Delivered",
    "Drop",
    "Duplicate",
    "ErrorRate",
    "FaultError",
    "FaultProxy",
    "FaultTimeoutError",
    "FaultWindow",
    "Hang",
    "History",
    "HistoryWriter",
    "InjectedFaultError",
    "Latency",
    "Mode",
    "Published",
    "Reorder",
    "ScenarioError",
    "Stop",
    "Verdict",
    "check",
    "kill",
    "kill_async",
    "read_history",
)

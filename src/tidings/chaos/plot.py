"""The plot of a run: throughput (acknowledged publishes and first deliveries per second) and
delivery latency over time, with each fault's window shaded (``pip install
'tidings[chaos]'`` for matplotlib)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tidings.chaos.history import History
from tidings.exceptions import MissingExtraError

__all__ = ("plot_history",)

_BUCKET = 0.25


def plot_history(history: History, path: Path, *, title: str, start: float | None = None) -> Path:
    """Write the plot of ``history`` to ``path`` (PNG). Returns ``path``.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError(
            "the chaos plot needs matplotlib: pip install 'tidings[chaos]'"
        ) from exc
    times = [p.time for p in history.published] + [d.time for d in history.delivered]
    t0 = start if start is not None else min(times, default=0.0)
    published = Counter(
        int((p.time - t0) / _BUCKET) for p in history.published if p.outcome == "ok"
    )
    sent = {p.id: p.time for p in history.published}
    first: dict[tuple[str, str], float] = {}
    for d in sorted(history.delivered, key=lambda d: d.time):
        first.setdefault((d.handler, d.id), d.time)
    delivered = Counter(int((t - t0) / _BUCKET) for t in first.values())
    latency = sorted((t - t0, t - sent[i]) for (_, i), t in first.items() if i in sent)
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    for axis in (top, bottom):
        for fault in history.faults:
            end = max(fault.end, fault.start + 0.05)
            axis.axvspan(fault.start - t0, end - t0, color="tab:red", alpha=0.15)
    buckets = range(max([*published, *delivered, 0]) + 1)
    top.plot(
        [b * _BUCKET for b in buckets],
        [published[b] / _BUCKET for b in buckets],
        label="acknowledged publishes/s",
    )
    top.plot(
        [b * _BUCKET for b in buckets],
        [delivered[b] / _BUCKET for b in buckets],
        label="first deliveries/s",
    )
    top.set_ylabel("events/s")
    top.legend(loc="upper right")
    top.set_title(f"{title} (fault windows shaded)")
    if latency:
        bottom.scatter([x for x, _ in latency], [y * 1000 for _, y in latency], s=2)
    bottom.set_ylabel("publish to first delivery (ms)")
    bottom.set_xlabel("seconds since the workload started")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path

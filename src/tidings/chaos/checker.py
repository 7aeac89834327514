"""The consistency checker: from a :class:`~tidings.chaos.History`, what went wrong, judged
against the promise of the delivery mode under test.

Reported (:class:`Verdict`):

- ``lost``: acknowledged events (outcome ``ok``) some handler never received;
- ``phantoms``: deliveries of ids never published, and of events whose publisher was told
  they were *not* stored (outcome ``failed``: an error must mean what it says);
- ``duplicates``: per handler, deliveries beyond the first of one event;
- ``order_violations``: per handler and key, first deliveries (by time) whose publisher
  sequence is lower than one delivered before (acknowledged events only);
- ``double_charges``: events whose effect was applied more than once (given a count of
  effects per event id, as the ledger scenario records);
- ``max_delay``: the longest time from a publish to its first delivery (any handler);
- ``convergence``: seconds from the end of the last fault until every acknowledged event
  published before it had reached every handler (0 if none was late; ``None`` without
  faults).

Promises (:data:`MODES`): ``at_most_once`` (memory bus): no duplicates, loss allowed;
``at_least_once`` (a transport or the log): no loss, duplicates allowed;
``effectively_once`` (idempotent handlers): no loss, no double effect, duplicate deliveries
allowed. Every mode forbids phantoms and order violations. A verdict ``ok`` is ``True``
only when nothing the mode forbids happened.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tidings.chaos.history import History

__all__ = ("MODES", "Mode", "Verdict", "check")

Mode = Literal["at_most_once", "at_least_once", "effectively_once"]
MODES: tuple[Mode, ...] = ("at_most_once", "at_least_once", "effectively_once")


@dataclass
class Verdict:
    """What :func:`check` found. ``violations`` names each broken promise."""

    mode: Mode
    published: int = 0
    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    delivered: int = 0
    handlers: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    phantoms: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    order_violations: int = 0
    order_examples: list[str] = field(default_factory=list)
    double_charges: int = 0
    max_delay: float = 0.0
    convergence: float | None = None
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["lost"] = len(self.lost)
        out["lost_examples"] = self.lost[:10]
        out["phantoms"] = len(self.phantoms)
        out["phantom_examples"] = self.phantoms[:10]
        out["ok"] = self.ok
        return out

    def summary(self) -> str:
        dup = sum(self.duplicates.values(), 0)
        conv = "n/a" if self.convergence is None else f"{self.convergence:.2f}s"
        line = (
            f"{self.mode}: published {self.published} (ok {self.acknowledged}, failed "
            f"{self.failed}, unknown {self.unknown}), delivered {self.delivered}; lost "
            f"{len(self.lost)}, phantoms {len(self.phantoms)}, duplicates {dup}, order "
            f"violations {self.order_violations}, double charges {self.double_charges}, max "
            f"delay {self.max_delay:.2f}s, convergence {conv}"
        )
        verdict = "OK" if self.ok else "VIOLATED: " + "; ".join(self.violations)
        return f"{line}\n{verdict}"


def check(
    history: History,
    mode: Mode,
    *,
    handlers: list[str] | None = None,
    effects: Mapping[str, int] | None = None,
) -> Verdict:
    """Judge ``history`` against ``mode``'s promise.

    Args:
        handlers: the handlers that must each receive every acknowledged event (default:
            every handler seen in the deliveries).
        effects: how many times each event's effect was applied (e.g. ledger rows per
            event id), for ``double_charges``.

    Raises:
        ValueError: ``mode`` is not one of :data:`MODES`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    verdict = Verdict(mode)
    published = {p.id: p for p in history.published}
    outcomes = Counter(p.outcome for p in history.published)
    verdict.published = len(published)
    verdict.acknowledged = outcomes["ok"]
    verdict.failed = outcomes["failed"]
    verdict.unknown = outcomes["unknown"]
    verdict.delivered = len(history.delivered)
    names = sorted(handlers if handlers is not None else {d.handler for d in history.delivered})
    verdict.handlers = names

    first: dict[tuple[str, str], float] = {}
    counts: Counter[tuple[str, str]] = Counter()
    phantoms: set[str] = set()
    firsts_by_handler: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for d in sorted(history.delivered, key=lambda d: d.time):
        pub = published.get(d.id)
        if pub is None or pub.outcome == "failed":
            phantoms.add(d.id)
            continue
        counts[d.handler, d.id] += 1
        if (d.handler, d.id) not in first:
            first[d.handler, d.id] = d.time
            firsts_by_handler[d.handler].append((d.time, d.id))
    verdict.phantoms = sorted(phantoms)

    acked = [p for p in published.values() if p.outcome == "ok"]
    verdict.lost = sorted({p.id for p in acked for h in names if (h, p.id) not in first})
    duplicates: Counter[str] = Counter()
    for (handler, _), n in counts.items():
        if n > 1:
            duplicates[handler] += n - 1
    verdict.duplicates = {h: duplicates[h] for h in names}

    for handler, firsts in firsts_by_handler.items():
        last_seq: dict[str, int] = {}
        for _, event_id in firsts:
            pub = published[event_id]
            if pub.outcome != "ok":
                continue
            before = last_seq.get(pub.key)
            if before is not None and pub.seq < before:
                verdict.order_violations += 1
                if len(verdict.order_examples) < 10:
                    verdict.order_examples.append(
                        f"{handler}: key {pub.key} seq {pub.seq} after {before}"
                    )
            else:
                last_seq[pub.key] = pub.seq

    delays = [t - published[i].time for (_, i), t in first.items()]
    verdict.max_delay = max(delays, default=0.0)
    if history.faults:
        healed = max(f.end for f in history.faults)
        late = [
            first[h, p.id] - healed
            for p in acked
            if p.time <= healed
            for h in names
            if (h, p.id) in first
        ]
        verdict.convergence = max([0.0, *late])
    if effects is not None:
        verdict.double_charges = sum(1 for n in effects.values() if n > 1)

    forbids_loss = mode != "at_most_once"
    if forbids_loss and verdict.lost:
        verdict.violations.append(f"{len(verdict.lost)} acknowledged event(s) lost")
    if verdict.phantoms:
        verdict.violations.append(f"{len(verdict.phantoms)} phantom delivery(ies)")
    doubled = duplicates.total()
    if mode == "at_most_once" and doubled:
        verdict.violations.append(f"{doubled} duplicate delivery(ies)")
    if verdict.order_violations:
        verdict.violations.append(f"{verdict.order_violations} order violation(s) per key")
    if verdict.double_charges:
        verdict.violations.append(f"{verdict.double_charges} event(s) charged twice")
    return verdict

"""The reliability suite: every shipped scenario, short form, real processes on loopback.

Each must hold its mode's promise: 0 lost acknowledged events, 0 phantoms, 0 order
violations among first deliveries per key, 0 double charges; duplicates and convergence
are reported (printed with -s) and written to report.json, with plot.png. A fault that cuts
the publishers off (a partition or timeout of their data on the proxies) must really cut
them off: nothing they publish meanwhile reaches a consumer before it heals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidings.chaos.cli import shipped_scenarios
from tidings.chaos.runner import RunResult, run_scenario
from tidings.chaos.scenario import load_scenario

SHIPPED = sorted(shipped_scenarios())
GRACE = 0.5
"""Seconds after a cut begins during which events already on their way may still arrive."""


def _delivered_through_cuts(result: RunResult) -> list[str]:
    """The events published while a proxy fault cut the publishers' data off (after
    :data:`GRACE`) and delivered before it healed: none if the proxies carry all of it."""
    scenario, history = result.scenario, result.history
    windows = sorted(history.faults, key=lambda w: w.start)
    first: dict[str, float] = {}
    for delivery in history.delivered:
        first[delivery.id] = min(first.get(delivery.id, delivery.time), delivery.time)
    through = []
    for spec, window in zip(sorted(scenario.faults, key=lambda f: f.at), windows, strict=True):
        cuts = spec.kind in ("partition", "timeout", "stall")
        if not cuts or spec.direction == "downstream":
            continue
        through += [
            published.id
            for published in history.published
            if window.start + GRACE <= published.time <= window.end
            and first.get(published.id, window.end) < window.end - 0.1
        ]
    return through


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", SHIPPED)
async def test_shipped_scenario_holds_its_promise(name: str, tmp_path: Path) -> None:
    scenario = load_scenario(shipped_scenarios()[name])
    result = await run_scenario(scenario, tmp_path)
    verdict = result.verdict
    print(f"\n{name}: {verdict.summary()}")  # noqa: T201 - the figures of the report
    assert verdict.published > 0
    assert verdict.acknowledged > 0
    assert verdict.lost == []
    assert verdict.phantoms == []
    assert verdict.order_violations == 0
    assert verdict.double_charges == 0
    assert verdict.ok, verdict.summary()
    assert _delivered_through_cuts(result) == []
    report = json.loads(result.report_path.read_text())
    assert report["verdict"]["ok"] is True
    assert len(report["faults"]) == len(scenario.faults)
    assert result.plot_path is not None
    assert result.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

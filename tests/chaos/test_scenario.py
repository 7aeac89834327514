"""Scenario files: every shipped one loads; a malformed one is a ScenarioError naming the
file, the line and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.chaos import ScenarioError
from tidings.chaos.cli import shipped_scenarios
from tidings.chaos.scenario import load_scenario, parse_duration


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_every_shipped_scenario_loads() -> None:
    shipped = shipped_scenarios()
    assert set(shipped) == {
        "one-way-partition",
        "leader-killed",
        "consumer-kill-stop",
        "cpu-saturation",
        "slow-webhook",
        "payment-ledger",
        "cluster-partition",
    }
    for path in shipped.values():
        scenario = load_scenario(path)
        assert scenario.name == path.stem


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: x\nmode: exactly_twice\n", 2, "mode: must be one of"),
        ("name: x\nworkload:\n  rate: fast\n", 3, "workload.rate: must be a number, not 'fast'"),
        ("name: x\nworkload: {duration: soon}\n", 2, "no duration"),
        ("name: x\nbrokers: 3\n", 2, "unknown key 'brokers'"),
        ("name: x\nbroker: {nodes: 2}\n", 2, "broker.nodes: must be 1 or 3"),
        (
            "name: x\nconsumers: [{name: c}]\nfaults:\n  - {at: 1s, kind: kill, target: 'consumer:d:0'}\n",
            4,
            "no consumer named 'd'",
        ),
        (
            "name: x\nconsumers: [{name: c, processes: 2}]\nfaults:\n  - {kind: stop, target: 'consumer:c:5', for: 1s}\n",
            4,
            "processes 0..1",
        ),
        ("name: x\nfaults:\n  - {at: 1s, kind: partition}\n", 3, "needs for:"),
        ("name: x\nfaults:\n  - {at: 1s, kind: meteor}\n", 3, "kind: must be one of"),
        ("name: x\nfaults:\n  - {at: 1s, kind: kill, target: 'broker:leader'}\n", 3, "nodes: 3"),
        ("name: x\nfaults:\n  - {at: 1s, for: 1s, kind: cpu, cores: 999}\n", 3, "more than"),
        (
            "name: x\nworkload: {via_proxy: false}\nfaults:\n  - {for: 1s, kind: stall}\n",
            4,
            "via_proxy",
        ),
        ("name: x\nfaults:\n  - {at: 1s, for: 1s, kind: limit_data}\n", 3, "needs bytes:"),
        ("name: x\nfaults:\n  - {for: 1s, kind: limit_data, bytes: -1}\n", 3, "0 or more"),
        ("name: x\nfaults:\n  - {at: 1s, for: 1s, kind: slow_close}\n", 3, "needs delay:"),
        ("name: x\nfaults:\n  - {at: 1s, kind: timeout, timeout: 1s}\n", 3, "needs for:"),
        ("name: [unclosed\n", 2, "not valid YAML"),
        ("name: x\nproxy: {port: 70000}\n", 2, "TCP port"),
    ],
)
def test_a_malformed_scenario_names_file_line_and_problem(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert any(
        file == str(path) and at == line and message in what
        for file, at, what in caught.value.problems
    ), caught.value.problems
    assert f"{path}:{line}:" in str(caught.value)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path, "mode: nope\nsettle: later\ncolour: red\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert [line for _, line, _ in caught.value.problems] == [3, 1, 2]


def test_a_missing_or_empty_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.yaml")
    with pytest.raises(ScenarioError, match="empty"):
        load_scenario(_write(tmp_path, ""))


def test_durations_and_scaling(tmp_path: Path) -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2") == 2.0
    assert parse_duration("1m") == 60.0
    scenario = load_scenario(shipped_scenarios()["payment-ledger"]).scaled(2.0)
    assert scenario.workload.duration == 24.0
    assert scenario.faults[0].at == 2.0
    assert scenario.faults[0].duration == 4.0


def test_the_toxics_load_with_their_settings(tmp_path: Path) -> None:
    path = tmp_path / "toxics.yaml"
    path.write_text(
        "name: toxics\n"
        "faults:\n"
        "  - {at: 1s, for: 2s, kind: timeout, timeout: 500ms, direction: upstream}\n"
        "  - {at: 1s, for: 2s, kind: limit_data, bytes: 4096}\n"
        "  - {at: 1s, for: 2s, kind: slow_close, delay: 1s}\n"
    )
    timeout, limit, slow = load_scenario(path).faults
    assert (timeout.kind, timeout.timeout, timeout.direction) == ("timeout", 0.5, "upstream")
    assert (limit.kind, limit.limit, limit.direction) == ("limit_data", 4096, "both")
    assert (slow.kind, slow.delay, slow.target) == ("slow_close", 1.0, "proxy")

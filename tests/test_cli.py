"""The ``tidings`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidings.cli import app


def test_demo_runs_the_tour_and_exits_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the tour keeps its log in ./.tidings/events.db
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    for step in ("Typed events", "Patterns", "Async handlers", "Re-entrant", "dead letters"):
        assert step in result.output
    assert "done: bus closed cleanly=True, dead letters=1" in result.output
    assert "hash chain intact" in result.output
    assert (tmp_path / ".tidings" / "events.db").exists()
    again = CliRunner().invoke(app, ["demo"])  # the log grows; the durable consumer resumes
    assert again.exit_code == 0, again.output
    assert "5 order(s) it had not seen before" in again.output


def test_console_script_help() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "demo" in completed.stdout


def test_the_tour_prints_the_same_backpressure_figures_in_every_process(
    tmp_path: Path,
) -> None:
    # Regression: the step printed 2, 3 or 6 printed labels from one run to the next.
    import os

    lines = set()
    for seed in ("1", "2"):
        (tmp_path / seed).mkdir()
        done = subprocess.run(
            [sys.executable, "-m", "tidings.cli", "demo"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=tmp_path / seed,
            env={**os.environ, "PYTHONHASHSEED": seed, "COLUMNS": "200"},
        )
        text = " ".join(done.stdout.split())
        start = text.index("12 labels in a burst")
        lines.add(text[start : text.index("high-water", start) + len("high-water 4")])
    expected = (
        "12 labels in a burst, 2 workers busy, room for 4 more: 6 printed, 6 dropped "
        "(oldest first), high-water 4"
    )
    assert lines == {expected}

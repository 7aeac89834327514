"""The ``tidings`` command."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from tidings.cli import app


def test_demo_runs_the_tour_and_exits_zero() -> None:
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    for step in ("Typed events", "Patterns", "Async handlers", "Re-entrant", "dead letters"):
        assert step in result.output
    assert "done: bus closed cleanly=True, dead letters=1" in result.output


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

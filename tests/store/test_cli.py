"""``tidings log``: read, tail, stats and verify against a real SQLite log."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidings.cli import app
from tidings.store import SQLiteStore
from tidings.testing.store_conformance import Shipped, envelope, placed

runner = CliRunner()


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    store = SQLiteStore(tmp_path / "events.db")
    store.append_sync(placed(5))
    store.append_sync([envelope(Shipped("o1"))], stream="order-1")
    store.append_sync([envelope({"n": 1}, topic="misc.note", headers={"traceparent": "t"})])
    store._close_now()
    return f"sqlite:///{tmp_path}/events.db"


def test_read_prints_a_table(log_url: str) -> None:
    result = runner.invoke(
        app, ["log", "read", "--store", log_url, "--limit", "2"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "suite.conformance.placed" in result.output
    assert '"order_id":"o1"' in result.output
    assert '"o2"' not in result.output


def test_read_as_json_lines_with_filters(log_url: str) -> None:
    result = runner.invoke(
        app, ["log", "read", "--store", log_url, "--json", "--topic", "suite.conformance.>"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["position"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[5]["stream"] == "order-1"
    assert lines[5]["payload"] == {"order_id": "o1", "carrier": "post"}
    assert len(lines[0]["hash"]) == 64
    result = runner.invoke(app, ["log", "read", "--store", log_url, "--json", "--after", "6"])
    [note] = [json.loads(line) for line in result.output.splitlines()]
    assert note["headers"] == {"traceparent": "t"}
    assert note["type"] is None


def test_tail_follows_from_a_position_and_stops(log_url: str) -> None:
    result = runner.invoke(
        app, ["log", "tail", "--store", log_url, "--after", "4", "--count", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["position"] for line in result.output.splitlines()] == [5, 6]
    result = runner.invoke(app, ["log", "tail", "--store", log_url, "--timeout", "0.2"])
    assert result.exit_code == 0, result.output
    assert result.output == ""


def test_stats_counts_by_type(log_url: str) -> None:
    result = runner.invoke(app, ["log", "stats", "--store", log_url])
    assert result.exit_code == 0, result.output
    assert "records" in result.output
    assert "7" in result.output
    assert "suite.conformance.placed" in result.output
    assert "misc.note (plain JSON)" in result.output


def test_verify_passes_then_names_a_tampered_position(log_url: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["log", "verify", "--store", log_url])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output
    with sqlite3.connect(tmp_path / "events.db") as conn:
        conn.execute("UPDATE events SET source = 'forged' WHERE position = 4")
    conn.close()
    result = runner.invoke(app, ["log", "verify", "--store", log_url])
    assert result.exit_code == 1
    assert "position 4" in result.output


def test_a_malformed_url_is_a_clean_error() -> None:
    result = runner.invoke(app, ["log", "stats", "--store", "events.db"])
    assert result.exit_code == 2
    assert "names no scheme" in result.output


def test_long_reads_and_verifies_draw_progress(
    log_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tidings.store.cli.PROGRESS_ABOVE", 0)
    for command in ("read", "verify", "stats"):
        result = runner.invoke(app, ["log", command, "--store", log_url])
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["read", "tail", "stats", "verify"])
def test_a_missing_sqlite_log_is_an_error_and_nothing_is_created(
    tmp_path: Path, command: str
) -> None:
    folder = tmp_path / "typo"
    extra = ["--timeout", "0"] if command == "tail" else []
    result = runner.invoke(
        app, ["log", command, "--store", f"sqlite:///{folder}/events.db", *extra]
    )
    assert result.exit_code == 2, result.output
    assert "no SQLite log" in result.output
    assert "ok" not in result.output.split()
    assert not folder.exists()


def test_help_documents_the_exit_code_of_a_missing_log() -> None:
    result = runner.invoke(app, ["log", "--help"])
    assert result.exit_code == 0
    assert "no log at that URL" in " ".join(result.output.split())

"""``tidings chaos``: exit codes, bad input before anything starts, and a KeyboardInterrupt
mid-scenario that leaves nothing running (the test process is made a child subreaper, so
any process the command leaves behind becomes its child and is found)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidings.cli import app

PR_SET_CHILD_SUBREAPER = 36


def _children(*, zombies: bool = False) -> set[int]:
    """Processes whose parent is this process: the live ones, or with ``zombies`` the
    zombies only."""
    found = set()
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and (fields[0] == "Z") == zombies:
            found.add(int(entry))
    return found


def _reap(spared: set[int]) -> None:
    """Reap the zombie children, except ``spared`` (another fixture's processes, whose
    ``Popen`` waits for them itself)."""
    for pid in _children(zombies=True) - spared:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


@pytest.fixture
def subreaper() -> Iterator[set[int]]:
    """This process made a child subreaper for the test; yields the children it had
    before (the servers of session fixtures started by earlier tests), which the test
    leaves alone: only processes started during the test are its to find and kill."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available")
    spared = _children()
    try:
        yield spared
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in _children() - spared:  # never leave anything behind, even on failure
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        _reap(spared)


def _no_children_within(seconds: float, spared: set[int]) -> set[int]:
    """The test's children (not ``spared``) still running after at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := _children() - spared) and time.monotonic() < deadline:
        time.sleep(0.1)
    _reap(spared)
    return left


def test_a_malformed_scenario_exits_2_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nworkload:\n  rate: -5\n")
    result = CliRunner().invoke(app, ["chaos", "run", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{path}:3: workload.rate: must be positive" in result.output
    assert not (tmp_path / "o").exists()  # nothing ran


def test_list_shows_the_shipped_scenarios() -> None:
    result = CliRunner().invoke(app, ["chaos", "list"])
    assert result.exit_code == 0
    assert "payment-ledger" in result.output


def test_a_proxy_port_in_use_exits_2_before_anything_starts(
    tmp_path: Path, subreaper: set[int]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "s.yaml"
        path.write_text(
            f"name: s\nproxy: {{port: {port}}}\nconsumers: [{{name: c}}]\n"
            "faults:\n  - {at: 1s, for: 1s, kind: partition}\n"
        )
        out = tmp_path / "o"
        process = subprocess.run(
            [sys.executable, "-m", "tidings.cli", "chaos", "run", str(path), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert process.returncode == 2, process.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in process.stderr
    assert not (out / "processes.log").exists()  # no process was started
    assert _no_children_within(5.0, subreaper) == set()


def test_a_violation_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "lossy.yaml"
    path.write_text(
        "name: lossy\nmode: at_least_once\n"
        "workload: {rate: 50, keys: 2, duration: 1s, via_proxy: false}\n"
        "consumers:\n  - {name: c, faults: [{kind: drop, value: 0.2}]}\nsettle: 3s\n"
    )
    result = CliRunner().invoke(
        app, ["chaos", "run", str(path), "--out", str(tmp_path / "o"), "--no-plot"]
    )
    assert result.exit_code == 1, result.output
    assert "VIOLATED" in result.output
    assert "acknowledged event(s) lost" in result.output


@pytest.mark.timeout(120)
def test_keyboard_interrupt_mid_scenario_heals_and_stops_everything(
    tmp_path: Path, subreaper: set[int]
) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(
        "name: long\n"
        "workload: {rate: 50, keys: 2, duration: 60s, forward: true}\n"
        "consumers: [{name: c, processes: 2}]\n"
        "faults:\n"
        "  - {at: 0.5s, for: 60s, kind: partition}\n"
        "  - {at: 0.5s, for: 60s, kind: stop, target: 'consumer:c:1'}\n"
        "  - {at: 0.5s, for: 60s, kind: cpu, cores: 1}\n"
    )
    out = tmp_path / "o"
    with subprocess.Popen(
        [sys.executable, "-m", "tidings.cli", "chaos", "run", str(path), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    ) as command:
        assert command.stderr is not None
        applied = 0
        deadline = time.monotonic() + 90
        while applied < 3 and time.monotonic() < deadline:
            line = command.stderr.readline()
            assert line, "the command ended before its faults were applied"
            applied += line.startswith("chaos: fault:")
        assert applied == 3
        assert _children() - subreaper  # the run's processes, still going
        command.send_signal(signal.SIGINT)
        # read stderr while waiting: a child blocked on a full pipe would never exit
        _, rest = command.communicate(timeout=60)
        assert command.returncode == 130
    assert "interrupted; every fault healed, every process stopped" in rest
    assert _no_children_within(10.0, subreaper) == set()


def test_a_fault_that_fails_mid_run_exits_2_and_stops_everything(
    tmp_path: Path, subreaper: set[int]
) -> None:
    path = tmp_path / "gone.yaml"
    path.write_text(  # the consumer is killed for good, then stopped: it no longer exists
        "name: gone\nworkload: {rate: 20, keys: 2, duration: 2s, via_proxy: false}\n"
        "consumers: [{name: c}]\n"
        "faults:\n"
        "  - {at: 0.2s, kind: kill, target: 'consumer:c:0'}\n"
        "  - {at: 1s, for: 1s, kind: stop, target: 'consumer:c:0'}\n"
    )
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "tidings.cli",
            "chaos",
            "run",
            str(path),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert process.returncode == 2, process.stderr
    assert "stop consumer:c:0 (line 6): process" in process.stderr
    assert "does not exist" in process.stderr
    assert _no_children_within(10.0, subreaper) == set()

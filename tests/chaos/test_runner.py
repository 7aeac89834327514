"""The scenario runner's faults and close on its event loop: each waits for the kernel to
report a signal taken without blocking the loop (the publishers, the fault timeline and the
proxies run on it meanwhile)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidings.chaos import Stop
from tidings.chaos.runner import _fault, _Topology, _Worker
from tidings.chaos.scenario import FaultSpec, Scenario

from .signals import TIMEOUT, assert_loop_runs_while, losing, until_async

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
async def topology(tmp_path: Path) -> AsyncIterator[_Topology]:
    topology = _Topology(Scenario("runner", "runner.yaml"), tmp_path)
    try:
        yield topology
    finally:
        await asyncio.wait_for(topology.aclose(), 60.0)


async def test_a_kill_fault_waits_for_the_end_without_blocking_the_loop(
    topology: _Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the fault called the blocking kill(), which held the loop until the
    # process ended (up to 10 s: here it never does, its SIGKILL lost).
    worker = _Worker("consumer:orders:0", SLEEP, topology.out / "processes.log")
    await worker.start(topology, wait_ready=False)
    sent = losing(monkeypatch, signal.SIGKILL)
    kill = FaultSpec("kill", 0.0, None, "consumer:orders:0", 1)
    task = asyncio.create_task(_fault(topology, kill, []))
    await assert_loop_runs_while(task, lambda: signal.SIGKILL in sent)
    monkeypatch.undo()
    assert worker.process is not None
    worker.process.kill()  # taken now: the wait ends
    await asyncio.wait_for(task, TIMEOUT)
    assert worker.process.returncode == -signal.SIGKILL
    assert sent == [0, signal.SIGKILL]  # checked, killed once


async def test_a_cancelled_cpu_fault_waits_for_its_burners_without_blocking_the_loop(
    topology: _Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the fault's undo waited for the burners (up to 5 s each) blocking the loop.
    cpu = FaultSpec("cpu", 0.0, 60.0, "cpu", 1, cores=1)
    task = asyncio.create_task(_fault(topology, cpu, []))
    await until_async(lambda: len(topology.burns) == 1 and len(topology.burns[0].processes) == 1)
    (burner,) = topology.burns[0].processes
    sent = losing(monkeypatch, signal.SIGKILL)  # the burner goes on: the undo's wait goes on
    task.cancel()
    try:
        await assert_loop_runs_while(task, lambda: signal.SIGKILL in sent)
    finally:
        monkeypatch.undo()
        burner.kill()  # taken now: the wait ends
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert burner.returncode == -signal.SIGKILL  # ended and reaped by the undo
    assert sent == [signal.SIGKILL]


async def test_closing_continues_a_stopped_process_without_blocking_the_loop(
    topology: _Topology, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the close undid a Stop with the blocking undo() (up to its timeout, 10 s).
    stop = Stop(sleeper.pid, timeout=TIMEOUT)
    await stop.apply_async()
    topology.stops.append(stop)
    sent = losing(monkeypatch, signal.SIGCONT)  # the wait for the continue goes on
    closing = asyncio.create_task(topology.aclose())
    try:
        await assert_loop_runs_while(closing, lambda: signal.SIGCONT in sent)
    finally:
        monkeypatch.undo()
        sleeper.send_signal(signal.SIGCONT)  # taken now: the wait ends
    await asyncio.wait_for(closing, TIMEOUT)
    assert not stop.stopped
    assert sent == [signal.SIGCONT]

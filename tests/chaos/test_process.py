"""Process faults on real child processes: SIGKILL, SIGSTOP/SIGCONT (undone on exit, also
when the block raises), CPU burners that end on their own and are killed on undo."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tidings.chaos import CpuBurn, FaultError, Stop, kill
from tidings.chaos.process import check_signallable


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait(10)


def test_kill_sends_sigkill(sleeper: subprocess.Popen[bytes]) -> None:
    kill(sleeper.pid)
    assert sleeper.wait(10) == -9


def test_stop_is_undone_on_exit_also_when_the_block_raises(
    sleeper: subprocess.Popen[bytes],
) -> None:
    def failing_test() -> None:
        with Stop(sleeper.pid):
            _until(lambda: _state(sleeper.pid) == "T")
            raise RuntimeError("the test failed mid-fault")

    with pytest.raises(RuntimeError):
        failing_test()
    _until(lambda: _state(sleeper.pid) != "T")


async def test_stop_for_seconds_continues_the_process(sleeper: subprocess.Popen[bytes]) -> None:
    stop = Stop(sleeper.pid)
    await stop.for_seconds(0.1)
    assert not stop.stopped
    _until(lambda: _state(sleeper.pid) != "T")


def test_cpu_burn_is_bounded_and_undone() -> None:
    with CpuBurn(1, 30.0) as burn:
        (process,) = burn.processes
        assert process.poll() is None
    assert process.poll() is not None  # killed on exit, not left spinning for 30 s
    bounded = CpuBurn(1, 0.2)
    bounded.apply()
    assert bounded.processes[0].wait(20) == 0  # ends on its own after its time
    bounded.undo()


def test_faults_that_cannot_be_applied_are_fault_errors(
    sleeper: subprocess.Popen[bytes],
) -> None:
    sleeper.kill()
    sleeper.wait(10)
    with pytest.raises(FaultError, match="does not exist"):
        kill(sleeper.pid)
    with pytest.raises(FaultError, match="does not exist"):
        Stop(sleeper.pid).apply()
    with pytest.raises(FaultError, match="no process"):
        check_signallable(0)
    with pytest.raises(FaultError, match="at least one core"):
        CpuBurn(0, 1.0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may signal every process")
def test_no_permission_is_a_fault_error() -> None:
    with pytest.raises(FaultError, match="no permission"):
        check_signallable(1)

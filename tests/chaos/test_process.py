"""Process faults on real child processes: SIGKILL, SIGSTOP/SIGCONT (undone on exit, also
when the block raises), CPU burners that end on their own and are killed on undo."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from tidings.chaos import CpuBurn, FaultError, FaultTimeoutError, Stop, kill, kill_async
from tidings.chaos.process import check_signallable

from .signals import assert_loop_runs_while, losing, until_async

SPINNER = (  # four threads spinning: each must be scheduled to take a signal
    "import threading, time\n"
    "def spin():\n"
    "    while True: pass\n"
    "for _ in range(4): threading.Thread(target=spin, daemon=True).start()\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _states(pid: int) -> list[str]:
    """Each thread's state letter."""
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            states.append(stat.read().rsplit(")", 1)[1].split()[0])
    return states


def _until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)


def _reported(pid: int, options: int) -> bool:
    """Whether the kernel reports child ``pid`` stopped (WSTOPPED) or ended (WEXITED) now:
    one look, no wait (WNOHANG), the report left for later waits (WNOWAIT)."""
    return os.waitid(os.P_PID, pid, options | os.WNOHANG | os.WNOWAIT) is not None


@pytest.fixture
def spinner() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", SPINNER], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"  # its threads are spinning
        yield child
    finally:
        child.kill()
        child.wait(10)
        assert child.stdout is not None
        child.stdout.close()


def test_stop_returns_once_every_thread_is_stopped_and_undo_once_none_is(
    spinner: subprocess.Popen[bytes],
) -> None:
    stop = Stop(spinner.pid, timeout=10.0)
    for _ in range(5):  # before the wait, a spinning thread was still running 5 in 5 times
        stop.apply()
        assert _reported(spinner.pid, os.WSTOPPED)
        assert set(_states(spinner.pid)) == {"T"}
        stop.undo()
        assert "T" not in _states(spinner.pid)


def test_kill_returns_once_the_process_ended(spinner: subprocess.Popen[bytes]) -> None:
    kill(spinner.pid, timeout=10.0)
    assert _reported(spinner.pid, os.WEXITED)
    assert spinner.wait(10) == -9


def test_a_process_that_does_not_stop_in_time_is_a_fault_timeout_and_is_continued(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = losing(monkeypatch, signal.SIGSTOP)
    stop = Stop(sleeper.pid, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(FaultTimeoutError, match=f"process {sleeper.pid} not stopped within"):
        stop.apply()
    assert 0.2 <= time.monotonic() - started < 10.0
    assert isinstance(FaultTimeoutError("x"), TimeoutError)
    assert sent == [0, signal.SIGSTOP, signal.SIGCONT]  # checked, stopped, undone
    assert not stop.stopped


def test_stopping_a_process_that_ended_is_a_fault_error(
    sleeper: subprocess.Popen[bytes],
) -> None:
    kill(sleeper.pid)
    assert _reported(sleeper.pid, os.WEXITED)  # not reaped: a zombie, still signallable
    with pytest.raises(FaultError, match="ended instead of stopping"):
        Stop(sleeper.pid).apply()


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


async def test_stop_for_seconds_waits_without_blocking_the_loop_and_a_cancel_continues(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = losing(monkeypatch, signal.SIGSTOP)  # the wait for the stop goes on
    stop = Stop(sleeper.pid, timeout=10.0)
    task = asyncio.create_task(stop.for_seconds(60.0))
    # before, the loop was blocked for the whole wait, which failed
    await assert_loop_runs_while(task, lambda: signal.SIGSTOP in sent)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10.0)
    assert sent == [0, signal.SIGSTOP, signal.SIGCONT]  # checked, stopped, continued
    assert not stop.stopped


async def test_a_cancelled_stop_for_seconds_continues_the_process(
    sleeper: subprocess.Popen[bytes],
) -> None:
    stop = Stop(sleeper.pid, timeout=10.0)
    task = asyncio.create_task(stop.for_seconds(60.0))
    await until_async(lambda: _reported(sleeper.pid, os.WSTOPPED))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10.0)
    assert not stop.stopped
    assert "T" not in _states(sleeper.pid)  # continued before the cancel propagated


async def _stopped_in_async_with(stop: Stop) -> None:
    async with stop:
        await asyncio.sleep(60.0)


@pytest.mark.parametrize(
    "stopped",
    # Regression (async with): leaving the block by a cancel, a failure to continue the
    # process (FaultTimeoutError) was raised in place of the CancelledError.
    [lambda stop: stop.for_seconds(60.0), _stopped_in_async_with],
    ids=["for_seconds", "async with"],
)
async def test_a_cancel_is_not_replaced_by_a_failure_to_continue_which_is_logged(
    sleeper: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stopped: Callable[[Stop], Coroutine[Any, Any, None]],
) -> None:
    real_kill = os.kill
    losing(monkeypatch, signal.SIGCONT)  # the process stays stopped
    stop = Stop(sleeper.pid, timeout=0.2)
    task = asyncio.create_task(stopped(stop))
    await until_async(lambda: _reported(sleeper.pid, os.WSTOPPED))
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as cancelled:  # before: FaultTimeoutError
        await asyncio.wait_for(task, 10.0)
    failure = f"continuing process {sleeper.pid} failed"
    assert [r.getMessage() for r in caplog.records if r.name == "tidings.chaos"] == [
        f"{failure}: process {sleeper.pid} not continued within 0.2s (its threads' states: T)"
    ]
    assert any(failure in note for note in getattr(cancelled.value, "__notes__", []))
    real_kill(sleeper.pid, signal.SIGCONT)


async def test_kill_async_waits_for_the_end_without_blocking_the_loop(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = losing(monkeypatch, signal.SIGKILL)  # the wait for the end goes on
    task = asyncio.create_task(kill_async(sleeper.pid, timeout=10.0))
    await assert_loop_runs_while(task, lambda: signal.SIGKILL in sent)
    monkeypatch.undo()
    os.kill(sleeper.pid, signal.SIGKILL)  # taken now: the wait ends
    await asyncio.wait_for(task, 10.0)
    assert _reported(sleeper.pid, os.WEXITED)
    assert sent == [0, signal.SIGKILL]  # checked, killed


async def test_kill_async_past_its_timeout_is_a_fault_timeout(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    losing(monkeypatch, signal.SIGKILL)
    with pytest.raises(FaultTimeoutError, match=f"process {sleeper.pid} not exited within 0.2s"):
        await kill_async(sleeper.pid, timeout=0.2)
    monkeypatch.undo()
    await kill_async(sleeper.pid)
    assert sleeper.wait(10) == -9


async def test_stop_async_applies_and_undoes_as_an_async_with_block(
    spinner: subprocess.Popen[bytes],
) -> None:
    async with Stop(spinner.pid, timeout=10.0) as stop:
        assert _reported(spinner.pid, os.WSTOPPED)
        assert set(_states(spinner.pid)) == {"T"}
    assert not stop.stopped
    assert "T" not in _states(spinner.pid)


def test_a_with_stop_block_s_exception_is_raised_not_a_failure_to_continue(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: as the async block, the ``with`` block raised the failure to continue
    # in place of the block's own exception.
    real_kill = os.kill
    losing(monkeypatch, signal.SIGCONT)
    # before: a FaultTimeoutError
    with pytest.raises(RuntimeError, match="the test failed") as failed, Stop(sleeper.pid, 0.2):
        raise RuntimeError("the test failed mid-fault")
    notes = getattr(failed.value, "__notes__", [])
    assert any(f"continuing process {sleeper.pid} failed" in note for note in notes)
    real_kill(sleeper.pid, signal.SIGCONT)
    with pytest.raises(FaultTimeoutError), Stop(sleeper.pid, 0.2):  # nothing else raised
        pass
    real_kill(sleeper.pid, signal.SIGCONT)


async def test_stop_undo_async_waits_without_blocking_the_loop(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = Stop(sleeper.pid, timeout=10.0)
    await stop.apply_async()
    sent = losing(monkeypatch, signal.SIGCONT)  # the wait for the continue goes on
    task = asyncio.create_task(stop.undo_async())
    await assert_loop_runs_while(task, lambda: signal.SIGCONT in sent)
    monkeypatch.undo()
    os.kill(sleeper.pid, signal.SIGCONT)  # taken now: the wait ends
    await asyncio.wait_for(task, 10.0)
    assert "T" not in _states(sleeper.pid)


async def test_a_stop_apply_async_that_times_out_continues_the_process(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = losing(monkeypatch, signal.SIGSTOP)
    stop = Stop(sleeper.pid, timeout=0.2)
    with pytest.raises(FaultTimeoutError, match=f"process {sleeper.pid} not stopped within"):
        await stop.apply_async()
    assert sent == [0, signal.SIGSTOP, signal.SIGCONT]  # checked, stopped, undone
    assert not stop.stopped


async def test_cpu_burn_undo_async_waits_for_the_burners_without_blocking_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    burn = CpuBurn(1, 30.0)
    await burn.apply_async()
    (process,) = burn.processes
    sent = losing(monkeypatch, signal.SIGKILL)  # the burner goes on: the wait goes on
    task = asyncio.create_task(burn.undo_async())
    try:
        await assert_loop_runs_while(task, lambda: signal.SIGKILL in sent)
    finally:
        monkeypatch.undo()
        process.kill()
    await asyncio.wait_for(task, 10.0)
    assert process.returncode == -9  # ended and reaped by the undo
    assert burn.processes == []


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


async def test_a_process_that_ends_between_the_check_and_the_stop_is_a_fault_error(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the SIGSTOP's ProcessLookupError was raised as it was, not a FaultError.
    real_kill = os.kill

    def ended_after_the_check(pid: int, signum: int) -> None:
        if signum == signal.SIGSTOP:
            raise ProcessLookupError(3, "No such process")
        real_kill(pid, signum)

    monkeypatch.setattr(os, "kill", ended_after_the_check)
    with pytest.raises(FaultError, match="does not exist"):
        Stop(sleeper.pid).apply()
    stop = Stop(sleeper.pid)
    with pytest.raises(FaultError, match="does not exist"):
        await stop.apply_async()
    assert not stop.stopped


@pytest.mark.skipif(os.geteuid() == 0, reason="root may signal every process")
def test_no_permission_is_a_fault_error() -> None:
    with pytest.raises(FaultError, match="no permission"):
        check_signallable(1)

"""The wait until a signal sent to a process is taken, blocking and on an event loop (one
polling rule): on a real child stopped, continued and killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

from tidings._process_state import wait_for_process, wait_for_process_async


def _reported(pid: int, options: int) -> bool:
    """Whether the kernel reports child ``pid`` stopped (WSTOPPED) or ended (WEXITED) now,
    without waiting (WNOHANG) and leaving the report (WNOWAIT)."""
    return os.waitid(os.P_PID, pid, options | os.WNOHANG | os.WNOWAIT) is not None


async def test_the_async_wait_returns_once_the_signal_is_taken(
    sleeper: subprocess.Popen[bytes],
) -> None:
    sleeper.send_signal(signal.SIGSTOP)
    await wait_for_process_async(sleeper.pid, "stopped", 10.0)
    assert _reported(sleeper.pid, os.WSTOPPED)
    sleeper.send_signal(signal.SIGCONT)
    await wait_for_process_async(sleeper.pid, "continued", 10.0)
    sleeper.kill()
    await wait_for_process_async(sleeper.pid, "exited", 10.0)
    assert _reported(sleeper.pid, os.WEXITED)


async def test_the_async_wait_lets_the_loop_run_and_times_out_as_the_blocking_one(
    sleeper: subprocess.Popen[bytes],
) -> None:
    ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(ran.set)
    with pytest.raises(TimeoutError, match=rf"process {sleeper.pid} not stopped within 0.1s"):
        await wait_for_process_async(sleeper.pid, "stopped", 0.1)  # never signalled
    assert ran.is_set()
    with pytest.raises(TimeoutError, match=rf"process {sleeper.pid} not stopped within 0.1s"):
        wait_for_process(sleeper.pid, "stopped", 0.1)


def test_waiting_for_a_stop_of_a_process_that_ended_is_a_lookup_error(
    sleeper: subprocess.Popen[bytes],
) -> None:
    sleeper.kill()
    wait_for_process(sleeper.pid, "exited", 10.0)
    with pytest.raises(ProcessLookupError, match="ended instead of stopping"):
        wait_for_process(sleeper.pid, "stopped", 10.0)

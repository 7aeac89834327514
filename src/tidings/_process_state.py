"""Waiting until a signal sent to a process has taken effect: the one polling rule shared by
the chaos toolkit's process faults (``tidings.chaos.process``) and the test fixtures'
brokers (``tidings.testing.kafka_broker``), blocking (:func:`wait_for_process`) or on an
event loop (:func:`wait_for_process_async`, which lets the loop run meanwhile).

``kill`` only queues a signal: it returns before its target's threads have taken it (a
thread running, or runnable, on another core goes on until it next enters the kernel, long
enough on a loaded machine to answer a request sent just after). Each wait returns once the
kernel reports the whole process stopped, continued or ended, and gives up after a bound.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Literal

__all__ = ("ProcessState", "wait_for_process", "wait_for_process_async")

ProcessState = Literal["stopped", "continued", "exited"]
"""What a wait waits for: every thread stopped (SIGSTOP taken: nothing of the process
runs), no thread stopped (SIGCONT taken, or the process ended), or every thread ended
(SIGKILL taken: a zombie until its parent reaps it, or gone)."""

_STOPPED = frozenset("Tt")  # stopped by a signal, or stopped by a tracer
_ENDED = frozenset("ZX")  # zombie, dead


def _thread_states(pid: int) -> list[str]:
    """The state letter of each thread of process ``pid`` (``/proc/PID/task/*/stat``, Linux);
    none when the process is gone (reaped)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return []
    states = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as stat:
                # the command name, in parentheses, may hold spaces and parentheses itself
                states.append(chr(stat.read().rsplit(b")", 1)[1].split()[0][0]))
        except (FileNotFoundError, ProcessLookupError):
            continue  # that thread ended meanwhile
    return states


def _pauses(pid: int, state: ProcessState, timeout: float) -> Iterator[float]:
    """The polling rule: check process ``pid`` at once, then again after each pause yielded
    (0.1 ms, doubling up to 5 ms), until it is ``state``; the caller sleeps each pause.

    Polls: short of ``waitid`` on a child, which tells only its parent, the kernel offers no
    wait for another process's stop.

    Raises:
        TimeoutError: not so within ``timeout`` seconds (the threads' states are named).
        ProcessLookupError: waiting for ``"stopped"``, the process ended instead.
    """
    deadline = time.monotonic() + timeout
    pause = 0.0001
    while True:
        states = _thread_states(pid)
        ended = all(s in _ENDED for s in states)  # also when gone: no thread left
        if state == "exited":
            done = ended
        elif state == "continued":
            done = not any(s in _STOPPED for s in states)
        elif ended:
            raise ProcessLookupError(f"process {pid} ended instead of stopping")
        else:  # a zombie leader whose other threads are stopped is stopped
            done = all(s in _STOPPED or s in _ENDED for s in states)
        if done:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"process {pid} not {state} within {timeout:g}s "
                f"(its threads' states: {''.join(states)})"
            )
        yield pause
        pause = min(pause * 2, 0.005)


def wait_for_process(pid: int, state: ProcessState, timeout: float) -> None:
    """Return once the kernel reports process ``pid`` (any process this one may see, a child
    or not) ``state`` (see :data:`ProcessState`), blocking this thread meanwhile.

    Raises:
        TimeoutError: not so within ``timeout`` seconds (the threads' states are named).
        ProcessLookupError: waiting for ``"stopped"``, the process ended instead.
    """
    for pause in _pauses(pid, state, timeout):
        time.sleep(pause)  # polling another process's state: see _pauses


async def wait_for_process_async(pid: int, state: ProcessState, timeout: float) -> None:
    """:func:`wait_for_process` on an event loop, which runs other tasks between the checks;
    cancelling it stops waiting (the signal sent is not taken back).

    Raises:
        TimeoutError: not so within ``timeout`` seconds (the threads' states are named).
        ProcessLookupError: waiting for ``"stopped"``, the process ended instead.
    """
    for pause in _pauses(pid, state, timeout):
        await asyncio.sleep(pause)  # polling another process's state: see _pauses

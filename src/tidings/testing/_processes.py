"""The processes the test fixtures of this package start, and the chaos toolkit signals:
stopping them, and waiting until a signal sent to one has taken effect.

``kill`` only queues a signal: it returns before its target's threads have taken it (a
thread running, or runnable, on another core goes on until it next enters the kernel, long
enough on a loaded machine to answer a request sent just after). :func:`wait_for_process`
waits, bounded, until the kernel reports the whole process stopped, continued or ended.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Literal

__all__ = ("ProcessState", "stop_process", "wait_for_process")

ProcessState = Literal["stopped", "continued", "exited"]
"""What :func:`wait_for_process` waits for: every thread stopped (SIGSTOP taken: nothing of
the process runs), no thread stopped (SIGCONT taken, or the process ended), or every thread
ended (SIGKILL taken: a zombie until its parent reaps it, or gone)."""

_STOPPED = frozenset("Tt")  # stopped by a signal, or stopped by a tracer
_ENDED = frozenset("ZX")  # zombie, dead


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Stop ``process`` cleanly (SIGTERM) and wait for its exit; SIGKILL it if it has not
    exited after ``timeout`` seconds, then wait up to 10 s more. Nothing to do for ``None``
    or a process that already exited.

    Raises:
        subprocess.TimeoutExpired: if even the SIGKILLed process does not exit in 10 s.
    """
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


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


def wait_for_process(pid: int, state: ProcessState, timeout: float) -> None:
    """Return once the kernel reports process ``pid`` (any process this one may see, a child
    or not) ``state`` (see :data:`ProcessState`), checking at once, then every 0.1 to 5 ms.

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
        time.sleep(pause)  # polling another process's state: see above
        pause = min(pause * 2, 0.005)

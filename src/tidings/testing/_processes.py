"""Stopping the processes the test fixtures of this package start. (Waiting until a signal
sent to one has taken effect is :mod:`tidings._process_state`, shared with the chaos
toolkit.)"""

from __future__ import annotations

import subprocess

__all__ = ("stop_process",)


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

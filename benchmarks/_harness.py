"""Shared pieces of the benchmarks: result rows, timing, delivery checks, worker processes
answering within a bound."""

from __future__ import annotations

import contextlib
import gc
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

__all__ = ("DeliveryMismatchError", "Row", "Worker", "check", "timed")


class DeliveryMismatchError(AssertionError):
    """A scenario's handlers were not called exactly as often as they had to be."""


@dataclass
class Row:
    """One figure: a library's result in one scenario."""

    scenario: str
    library: str
    metric: str
    value: float
    unit: str
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def check(scenario: str, library: str, got: int, expected: int) -> None:
    """Fail loudly when a handler call is missing (or doubled)."""
    if got != expected:
        raise DeliveryMismatchError(
            f"{scenario}/{library}: {got} handler calls counted, {expected} expected"
        )


def timed(run: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time in seconds of ``repeat`` runs (GC collected before, disabled during)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best


class Worker:
    """A worker process that answers each line sent to its stdin with one line on its stdout,
    each answer awaited ``timeout`` seconds at most: a hung worker is killed and fails the
    benchmark instead of hanging it. Its output is read by a thread of its own, so that the
    wait for a line can be bounded."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.process = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=cwd
        )
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(
            target=self._read, args=(self.process.stdout,), name=f"{name} output", daemon=True
        ).start()

    def _read(self, stdout: IO[str]) -> None:
        with stdout:
            for line in stdout:
                self._lines.put(line)
        self._lines.put("")  # its output ended

    def send(self, line: str) -> None:
        """Send ``line`` (a newline is added)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n")
        self.process.stdin.flush()

    def answer(self) -> str:
        """The worker's next line, stripped, within ``timeout`` seconds.

        Raises:
            TimeoutError: no line within ``timeout`` (the worker is killed).
            RuntimeError: the worker's output ended first (it exited).
        """
        return self._line(time.monotonic() + self.timeout, "answer")

    def line_with(self, text: str) -> str:
        """The first line of the worker's output holding ``text``, stripped, within
        ``timeout`` seconds (the lines before it are skipped); a server printing its address
        among its first lines, say.

        Raises:
            TimeoutError: no such line within ``timeout`` (the worker is killed).
            RuntimeError: the worker's output ended first (it exited).
        """
        deadline = time.monotonic() + self.timeout
        while text not in (line := self._line(deadline, f"print {text!r}")):
            pass  # bounded: each line is awaited until the deadline at most
        return line

    def _line(self, deadline: float, waiting_for: str) -> str:
        """The next line, stripped, by ``deadline`` (``time.monotonic()``)."""
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise queue.Empty
            line = self._lines.get(timeout=left)
        except queue.Empty:
            self.process.kill()
            self.close(10.0)
            raise TimeoutError(
                f"worker {self.name} did not {waiting_for} within {self.timeout:g}s (hung?): killed"
            ) from None
        if not line:
            self.close(10.0)
            status = self.process.returncode
            raise RuntimeError(f"worker {self.name} exited ({status}) before answering")
        return line.strip()

    def close(self, timeout: float = 60.0) -> None:
        """Close its stdin (no more work: it exits) and wait for it; kill it if it has not
        exited within ``timeout`` seconds."""
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):  # a broken pipe: it exited already
            self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

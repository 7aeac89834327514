"""The driver's side of the multi-process consumer-group tests (Kafka and NATS): starting a
worker process (``group_worker.py``, ``kafka_group_worker.py``), reading and waiting on the
files the workers write, and the per-key order check on what one worker handled."""

from __future__ import annotations

import asyncio
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

__all__ = ("assert_in_key_order", "lines", "spawn", "stop", "wait_until")


def spawn(worker: Path, args: Sequence[str], ready_within: float) -> subprocess.Popen[str]:
    """Start ``python WORKER ARGS...`` and wait until it prints ``ready`` (at most
    ``ready_within`` seconds)."""
    process = subprocess.Popen(
        [sys.executable, str(worker), *args], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], ready_within)
    assert ready, f"worker did not start within {ready_within:g} s"
    assert process.stdout.readline().strip() == "ready"
    return process


def stop(started: Iterable[subprocess.Popen[str]]) -> None:
    """Kill the workers still running and reap them all."""
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def lines(path: Path) -> list[list[str]]:
    """The lines a worker wrote, each split into its fields (none before the file exists)."""
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` (other processes' output files) every 100 ms, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.1)  # polling other processes' output files


def assert_in_key_order(handled: Iterable[tuple[str, int]]) -> None:
    """Each key's ``n`` rises through ``(key, n)`` in the order one process handled them."""
    last: dict[str, int] = {}
    for key, n in handled:
        assert n > last.get(key, -1), f"key {key}: {n} after {last[key]}"
        last[key] = n

"""The benchmarks' worker processes (``benchmarks/_harness.py``, ``Worker``): an answer is
awaited for a bounded time, so a hung worker fails a benchmark run instead of hanging it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "_harness.py"


def _harness() -> ModuleType:
    """``benchmarks/_harness.py`` (not a package: loaded from its file, once)."""
    name = "tidings_benchmarks_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HARNESS)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


ECHO = "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n"


def test_a_worker_answers_each_line_and_exits_when_closed() -> None:
    worker = _harness().Worker("echo", [sys.executable, "-c", ECHO], 10.0)
    worker.send("round 1")
    assert worker.answer() == "ROUND 1"
    worker.close()
    assert worker.process.returncode == 0


def test_a_hung_worker_is_killed_and_fails_with_a_timeout() -> None:
    worker = _harness().Worker("hung", [sys.executable, "-c", "import time; time.sleep(60)"], 0.2)
    try:
        with pytest.raises(TimeoutError, match=r"worker hung did not answer within 0.2s"):
            worker.answer()
        assert worker.process.poll() == -9  # killed, not left running
    finally:
        worker.close(10.0)


def test_a_worker_that_exits_without_answering_fails_clearly() -> None:
    worker = _harness().Worker("gone", [sys.executable, "-c", "raise SystemExit(3)"], 10.0)
    with pytest.raises(RuntimeError, match=r"worker gone exited \(3\) before answering"):
        worker.answer()
    worker.close(10.0)


def test_closing_a_worker_that_ignores_its_stdin_kills_it() -> None:
    worker = _harness().Worker("deaf", [sys.executable, "-c", "import time; time.sleep(60)"], 10.0)
    worker.close(0.2)
    assert worker.process.returncode == -9

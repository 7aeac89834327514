"""The benchmarks' worker processes (``benchmarks/_harness.py``, ``Worker``): an answer is
awaited for a bounded time, so a hung worker fails a benchmark run instead of hanging it."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(file: str, name: str) -> ModuleType:
    """``benchmarks/FILE`` (not a package: loaded from its file, once, as ``name``)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / file)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def _harness() -> ModuleType:
    return _load("_harness.py", "tidings_benchmarks_harness")


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


NOISY = (  # prints its folder, then a line every 10 ms for a minute, never its URL
    "import os, time\n"
    "print('in', os.getcwd(), flush=True)\n"
    "for n in range(6000):\n"
    "    print('starting', n, flush=True)\n"
    "    time.sleep(0.01)\n"
)


def test_line_with_skips_to_the_line_holding_the_text(tmp_path: Path) -> None:
    worker = _harness().Worker("noisy", [sys.executable, "-c", NOISY], 10.0, cwd=str(tmp_path))
    try:
        assert worker.line_with("starting 3") == "starting 3"
    finally:
        worker.close(0.2)
    worker = _harness().Worker("noisy", [sys.executable, "-c", NOISY], 10.0, cwd=str(tmp_path))
    try:
        assert worker.line_with("in ") == f"in {tmp_path}"  # started in cwd
    finally:
        worker.close(0.2)


def test_a_worker_printing_on_without_the_text_is_killed_at_its_timeout() -> None:
    worker = _harness().Worker("noisy", [sys.executable, "-c", NOISY], 0.5)
    try:
        with pytest.raises(TimeoutError, match=r"worker noisy did not print 'http://' within 0.5s"):
            worker.line_with("http://")  # lines come every 10 ms: each alone is in time
        assert worker.process.poll() == -9
    finally:
        worker.close(10.0)


def test_a_gateway_bench_server_that_never_prints_its_url_fails_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the bench read the server's output with no timeout (a server printing
    # nothing hung the benchmark until it exited).
    bench = _load("bench_gateway.py", "tidings_benchmarks_bench_gateway")
    monkeypatch.setattr(bench, "SERVER_START", 0.5)
    silent = [sys.executable, "-c", "import time; time.sleep(20)"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        started = pool.submit(bench.start_server, silent, str(tmp_path))
        with pytest.raises(TimeoutError, match=r"did not print 'http://' within 0.5s"):
            started.result(timeout=10.0)

"""The two builds of the publish hot path (``tidings._fastpath``): compiled by mypyc at install
when a C compiler was there, or pure Python. Both must behave the same, so:

- the hybrid clock's guarantees are checked here through ``Bus.publish`` (strictly increasing
  and unique times, also across threads racing for the clock; never behind the physical
  clock), in whichever build this process runs;
- when this process runs the compiled build, the bus, clock and event tests, the metrics
  and tracing tests (an observed bus's :class:`~tidings._fastpath.ObservedPublisher`) and
  these run again in a subprocess forced to pure Python (``TIDINGS_PURE_PYTHON=1``), and a
  build whose source was edited after it was compiled is left unused.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import tidings
from tidings import _speedups
from tidings.clock import PHYSICAL_MASK, HybridClock

ROOT = Path(__file__).resolve().parent.parent

THREADS = 4
PER_THREAD = 2_000


@dataclass(frozen=True)
class Ping:
    n: int


def _publish_from_threads(bus: tidings.Bus) -> list[list[int]]:
    """Each of THREADS threads publishes PER_THREAD events at once; the times of each."""
    times: list[list[int]] = [[] for _ in range(THREADS)]
    start = threading.Barrier(THREADS, timeout=30)

    def publish(own: list[int]) -> None:
        start.wait()
        for n in range(PER_THREAD):
            own.append(bus.publish(Ping(n), topic="ping").time)

    threads = [threading.Thread(target=publish, args=(own,)) for own in times]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    return times


def test_the_build_in_use_is_reported() -> None:
    assert tidings.__speedups__ is _speedups.COMPILED
    assert _speedups.Publisher.__module__ == (
        _speedups.COMPILED_MODULE if _speedups.COMPILED else "tidings._fastpath"
    )


def _can_compile() -> bool:
    """Whether this interpreter has what the install's mypyc build needs: the C compiler it
    was built with, on PATH, and its headers."""
    compiler = (sysconfig.get_config_var("CC") or "").split()
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return bool(compiler) and shutil.which(compiler[0]) is not None and headers.exists()


def test_ci_runs_the_compiled_build() -> None:
    if os.environ.get("CI") != "true":
        pytest.skip("not on CI: an install without the compiled build is allowed")
    if os.environ.get(_speedups.PURE_PYTHON_ENV, "") not in ("", "0"):
        pytest.skip(f"{_speedups.PURE_PYTHON_ENV} forces the pure-Python build")
    if not _can_compile():
        pytest.skip("no C compiler or Python headers: the install cannot compile")
    assert tidings.__speedups__, (
        "this CI machine can compile, yet tidings runs its pure-Python fast path: the install "
        "did not build tidings._fastpath_c (see 'tidings._fastpath not compiled' in the pip "
        "log) or left a stale build unused (a 'was built from another version' warning at "
        "import); publish would silently run about a quarter slower"
    )


def test_the_pure_python_build_can_be_forced() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import tidings; print(tidings.__speedups__)"],
        env={**os.environ, _speedups.PURE_PYTHON_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_publish_times_increase_strictly_and_never_lag_the_physical_clock() -> None:
    bus = tidings.Bus()
    bus.subscribe("ping", lambda ping: None)  # plain sync handler: the hot path
    last = 0
    for n in range(5_000):
        before = time.time_ns() & PHYSICAL_MASK
        stamped = bus.publish(Ping(n), topic="ping").time
        assert stamped > last
        assert stamped >= before
        last = stamped


def test_threads_racing_for_the_clock_never_get_the_same_time() -> None:
    # A wall clock that stands still and hands the GIL over on every reading: each publish
    # reads the clock's last time, then waits, so threads keep losing the claim to another
    # and the clock's retry gives them the next time.
    still = 1_700_000_000_000_000_000

    def yielding_wall() -> int:
        time.sleep(0)
        return still

    bus = tidings.Bus(clock=HybridClock(wall=yielding_wall))
    delivered = [0]

    def count(ping: Ping) -> None:
        delivered[0] += 1

    bus.subscribe("ping", count)
    times = _publish_from_threads(bus)
    for own in times:
        assert own == sorted(own)
        assert len(set(own)) == PER_THREAD
    every = [t for own in times for t in own]
    assert len(set(every)) == THREADS * PER_THREAD
    assert min(every) >= still & PHYSICAL_MASK
    assert delivered[0] == THREADS * PER_THREAD


def test_the_hot_path_reports_failures_and_lets_a_base_exception_through() -> None:
    # Plain sync handlers only: the route takes Publisher.publish_plain's loop.
    bus = tidings.Bus()
    failed: list[str] = []
    bus.subscribe(tidings.DeadLetter, lambda letter: failed.append(letter.handler))
    calls: list[tuple[str, int]] = []

    def first(ping: Ping) -> None:
        calls.append(("first", ping.n))
        if ping.n == 1:
            raise ValueError("reported, and the next handler runs")
        if ping.n == 2:
            raise KeyboardInterrupt
        if ping.n == 3:
            bus.publish(Ping(30), topic="ping")  # queued behind this dispatch
            later.cancel()  # takes effect for what is published after it returns
            bus.publish(Ping(31), topic="ping")

    def second(ping: Ping) -> None:
        calls.append(("second", ping.n))

    bus.subscribe("ping", first)
    later = bus.subscribe("ping", second)
    bus.publish(Ping(1), topic="ping")
    assert calls == [("first", 1), ("second", 1)]
    assert len(failed) == 1
    assert failed[0].endswith("first")
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        bus.publish(Ping(2), topic="ping")
    assert calls == [("first", 2)]
    calls.clear()
    bus.publish(Ping(3), topic="ping")  # the thread is no longer taken for dispatching
    assert calls == [("first", 3), ("second", 3), ("first", 30), ("second", 30), ("first", 31)]
    assert len(failed) == 1


def test_an_interrupted_dispatch_drops_what_its_handlers_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Plain sync handlers: Publisher.publish_plain's loop, then the bus's drain.
    bus = tidings.Bus()
    calls: list[tuple[str, int]] = []

    def first(ping: Ping) -> None:
        calls.append(("first", ping.n))
        if ping.n in (1, 4):  # queues two events, then is interrupted (4: while drained)
            bus.publish(Ping(ping.n * 10), topic="ping")
            bus.publish(Ping(ping.n * 10 + 1), topic="ping")
            if ping.n == 1:
                raise KeyboardInterrupt
        if ping.n == 40:
            raise KeyboardInterrupt

    def second(ping: Ping) -> None:
        calls.append(("second", ping.n))

    subs = [bus.subscribe("ping", first), bus.subscribe("ping", second)]
    with caplog.at_level(logging.ERROR, logger="tidings"), pytest.raises(KeyboardInterrupt):
        bus.publish(Ping(1), topic="ping")
    assert calls == [("first", 1)]
    calls.clear()
    bus.publish(Ping(2), topic="ping")  # an unrelated publish: nothing stale before or after
    assert calls == [("first", 2), ("second", 2)]
    assert [s.statistics().dropped for s in subs] == [2, 2]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "a dispatch was interrupted by KeyboardInterrupt"
    ]
    assert "2 event(s)" in caplog.records[0].getMessage()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        bus.publish(Ping(4), topic="ping")  # interrupted in the drain: 41 was still queued
    assert calls == [("first", 4), ("second", 4), ("first", 40)]
    calls.clear()
    bus.publish(Ping(5), topic="ping")
    assert calls == [("first", 5), ("second", 5)]
    assert [s.statistics().dropped for s in subs] == [3, 3]
    assert len(caplog.records) == 2


def test_a_compiled_build_records_the_source_it_was_built_from() -> None:
    if not _speedups.COMPILED:
        pytest.skip("this process runs the pure-Python build")
    compiled = sys.modules[_speedups.COMPILED_MODULE]
    assert _speedups.source_digest() == compiled.SOURCE_SHA256


def test_a_build_from_another_source_is_left_unused(tmp_path: Path) -> None:
    if not _speedups.COMPILED:
        pytest.skip("this process runs the pure-Python build")
    package = Path(tidings.__file__).parent
    copy = tmp_path / "tidings"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "_fastpath.py").open("a") as source:
        source.write("# edited after the build\n")
    done = subprocess.run(
        [sys.executable, "-c", "import tidings; print(tidings.__speedups__)"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"
    assert "was built from another version" in done.stderr


def test_the_pure_python_build_passes_the_bus_clock_event_and_observed_bus_tests(
    tmp_path: Path,
) -> None:
    if not _speedups.COMPILED:
        pytest.skip("this process already runs the pure-Python build (no compiled one)")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'pure'}",
            "-q",
            "tests/test_bus.py",
            "tests/test_clock.py",
            "tests/test_event.py",
            "tests/test_speedups.py",
            "tests/observability/test_metrics.py",
            "tests/observability/test_tracing.py",
        ],
        cwd=ROOT,
        env={**os.environ, _speedups.PURE_PYTHON_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout

"""The bounded encodings a transport's ``check_envelope`` keeps for the publish that
follows (``tidings.transports._checked``)."""

from __future__ import annotations

import queue
import sys
import threading
from typing import Any

import msgspec

from tidings.clock import HybridClock
from tidings.event import Envelope
from tidings.testing.transport_conformance import ConformanceOrder, make_envelope
from tidings.transports._checked import WINDOWS, CheckedEncodings


def test_an_encoding_goes_only_with_its_own_envelope_and_once() -> None:
    kept: CheckedEncodings[str] = CheckedEncodings(4)
    env = make_envelope(HybridClock(), "a")
    copy = msgspec.structs.replace(env, payload=ConformanceOrder("other", 1.0))
    kept.keep(env, "a's")
    assert kept.take(copy) is None  # the same id, another envelope
    assert kept.take(env) == "a's"
    assert kept.take(env) is None
    assert len(kept) == 0


def test_one_never_taken_is_dropped_once_a_window_after_it_was_taken() -> None:
    window = 4
    kept: CheckedEncodings[int] = CheckedEncodings(window)
    clock = HybridClock()
    orphan = make_envelope(clock, "orphan")
    kept.keep(orphan, -1)
    for i in range(2 * window):
        env = make_envelope(clock, f"e-{i}")
        kept.keep(env, i)
        assert kept.take(env) == i
    assert kept.take(orphan) is None
    assert len(kept) == 0


def test_nothing_taken_keeps_at_most_a_bounded_number() -> None:
    window = 4
    kept: CheckedEncodings[int] = CheckedEncodings(window)
    clock = HybridClock()
    envelopes = [make_envelope(clock, f"e-{i}") for i in range(40 * window)]
    for i, env in enumerate(envelopes):
        kept.keep(env, i)
        assert len(kept) <= (WINDOWS + 1) * window
    assert kept.take(envelopes[0]) is None
    assert kept.take(envelopes[-1]) == len(envelopes) - 1


def test_an_envelope_checked_again_is_kept_as_checked_last() -> None:
    window = 2
    kept: CheckedEncodings[str] = CheckedEncodings(window)
    clock = HybridClock()
    again = make_envelope(clock, "again")
    kept.keep(again, "first")
    for i in range(WINDOWS * window):
        kept.keep(make_envelope(clock, f"o-{i}"), "other")
    kept.keep(again, "second")  # its newest encoding, last in check order
    # Kept in its first check's place, it would hold back the drop of those after it.
    for i in range(WINDOWS * window):
        kept.keep(make_envelope(clock, f"p-{i}"), "other")
        assert len(kept) <= (WINDOWS + 1) * window
    assert kept.take(again) == "second"
    kept.clear()
    assert len(kept) == 0


def test_checks_on_another_thread_than_the_takes_lose_nothing_and_never_fail() -> None:
    # Regression: a bus checks an event on the publishing thread (a synchronous publish)
    # while its loop thread takes the encodings of those checked before: the drop iterated
    # over the entries as the other thread removed some ("dictionary changed size during
    # iteration").
    window = 64
    kept: CheckedEncodings[int] = CheckedEncodings(window)
    clock = HybridClock()
    envelopes = [make_envelope(clock, f"e-{i}") for i in range(20_000)]
    handed: queue.Queue[Envelope[Any] | None] = queue.Queue()
    failures: list[BaseException] = []

    def check_all() -> None:
        try:
            for i, env in enumerate(envelopes):
                kept.keep(env, i)
                if i % 2:  # else never taken: its append failed
                    handed.put(env)
        except BaseException as exc:
            failures.append(exc)
        finally:
            handed.put(None)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns as often as they can
    checker = threading.Thread(target=check_all)
    taken = 0
    try:
        checker.start()
        while (env := handed.get(timeout=30.0)) is not None:
            if kept.take(env) is not None:
                taken += 1
    finally:
        sys.setswitchinterval(interval)
        checker.join(30.0)
    assert failures == []
    assert not checker.is_alive()
    assert 0 < taken <= len(envelopes) // 2
    assert len(kept) <= (WINDOWS + 1) * window


def test_one_checked_again_every_window_does_not_keep_those_checked_after_it() -> None:
    # As the Kafka copy's regression: an envelope checked again within every window (a
    # caller retrying it while its store fails) stopped the drop at its first check's place.
    window = 8
    kept: CheckedEncodings[str] = CheckedEncodings(window)
    clock = HybridClock()
    retried = make_envelope(clock, "retried")
    orphan = make_envelope(clock, "orphan")
    kept.keep(retried, "retried")
    kept.keep(orphan, "orphan")
    for i in range(20 * window):
        if i % window == 0:
            kept.keep(retried, "retried")
        kept.keep(make_envelope(clock, f"never-{i}"), "never")
        assert len(kept) <= (WINDOWS + 1) * window
    assert kept.take(orphan) is None
    assert kept.take(retried) == "retried"


def test_checks_on_several_threads_at_once_never_fail_and_stay_bounded() -> None:
    # As the Kafka copy's regression: a bus checks on each publishing thread, and the drop
    # of one check ran while other threads added entries.
    window, threads, checks = 512, 4, 512 * 24
    kept: CheckedEncodings[int] = CheckedEncodings(window)
    clock = HybridClock()
    batches = [[make_envelope(clock, f"{n}-{i}") for i in range(checks)] for n in range(threads)]
    failures: list[BaseException] = []

    def check_all(envelopes: list[Envelope[Any]]) -> None:
        try:
            for i, env in enumerate(envelopes):  # none taken: each drop removes a window
                kept.keep(env, i)
        except BaseException as exc:
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns as often as they can
    workers = [threading.Thread(target=check_all, args=(batch,)) for batch in batches]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60.0)
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert not any(worker.is_alive() for worker in workers)
    assert len(kept) <= (WINDOWS + 1) * window + threads

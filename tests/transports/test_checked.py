"""The bounded encodings a transport's ``check_envelope`` keeps for the publish that
follows (``tidings.transports._checked``)."""

from __future__ import annotations

import msgspec

from tidings.clock import HybridClock
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

"""The hybrid logical clock: Kulkarni et al.'s rules, skew rejection, ids."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.clock import (
    LOGICAL_BITS,
    HybridClock,
    format_event_id,
    logical,
    physical_ns,
    to_datetime,
)
from tidings.exceptions import ClockSkewError

G = 1 << LOGICAL_BITS  # one physical granule in packed units


class FakeWall:
    """A settable physical clock in nanoseconds."""

    def __init__(self, now: int = 1_000 * G) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def pack(l: int, c: int) -> int:  # noqa: E741 - the paper's name
    return l * G + c


def test_send_rule_takes_physical_time_when_it_moves() -> None:
    wall = FakeWall(pack(50, 0))
    clock = HybridClock(wall=wall)
    assert clock.now() == pack(50, 0)
    assert clock.now() == pack(50, 1)  # same physical time: counter
    wall.now = pack(51, 0) + 123  # sub-granule nanoseconds are cleared
    assert clock.now() == pack(51, 0)


def test_send_rule_keeps_order_when_physical_time_goes_back() -> None:
    wall = FakeWall(pack(50, 0))
    clock = HybridClock(wall=wall)
    first = clock.now()
    wall.now = pack(40, 0)
    assert clock.now() == first + 1


@pytest.mark.parametrize(
    ("local", "remote", "pt", "expected"),
    [
        # l' == l == l_m: c = max(c, c_m) + 1
        (pack(10, 3), pack(10, 7), pack(5, 0), pack(10, 8)),
        (pack(10, 9), pack(10, 7), pack(5, 0), pack(10, 10)),
        # l' == l only: c + 1
        (pack(10, 3), pack(9, 99), pack(5, 0), pack(10, 4)),
        # l' == l_m only: c_m + 1
        (pack(10, 3), pack(12, 4), pack(5, 0), pack(12, 5)),
        # physical time ahead of both: c = 0
        (pack(10, 3), pack(12, 4), pack(20, 0), pack(20, 0)),
    ],
)
def test_receive_rule_cases(local: int, remote: int, pt: int, expected: int) -> None:
    wall = FakeWall(physical_ns(local))
    clock = HybridClock(wall=wall)
    while clock.peek() < local:
        clock.now()
    assert clock.peek() == local
    wall.now = pt
    assert clock.update(remote) == expected


def test_remote_too_far_ahead_is_rejected_with_the_figures() -> None:
    wall = FakeWall(10**18)
    clock = HybridClock(wall=wall, max_offset=0.5)
    before = clock.peek()
    remote = 10**18 + 600_000_000
    with pytest.raises(ClockSkewError) as info:
        clock.update(remote)
    assert info.value.max_offset_ns == 500_000_000
    assert info.value.remote_ns == physical_ns(remote)
    assert "ahead of the local clock" in str(info.value)
    assert "max_offset" in str(info.value)
    assert clock.peek() == before  # nothing merged
    assert clock.update(10**18 + 400_000_000) > 10**18 + 400_000_000  # within bounds


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_offset"):
        HybridClock(max_offset=0)
    with pytest.raises(ValueError, match="16 lowercase hex"):
        HybridClock(node="xyz")
    with pytest.raises(ValueError, match="non-negative"):
        HybridClock().update(-1)


def test_real_clock_tracks_wall_time() -> None:
    clock = HybridClock()
    t = clock.now()
    assert abs((to_datetime(t) - datetime.now(UTC)).total_seconds()) < 5
    assert logical(t) < G


def test_ids_are_unique_and_sorted_across_threads() -> None:
    clock = HybridClock()
    per_thread: list[list[int]] = [[] for _ in range(4)]

    def work(out: list[int]) -> None:
        for _ in range(20_000):
            out.append(clock.now())

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    everything = [t for out in per_thread for t in out]
    assert len(set(everything)) == len(everything) == 80_000
    for out in per_thread:
        assert out == sorted(out)
    ids = [clock.event_id(t) for t in sorted(everything)]
    assert ids == sorted(ids)


def test_event_id_format() -> None:
    assert format_event_id(255, "00000000000000ab") == "00000000000000ff00000000000000ab"


# ----------------------------------------------------------------------------- properties

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(-5, 5)),
        st.tuples(st.just("recv"), st.integers(-5, 5), st.integers(-3, 3), st.integers(0, 5)),
    ),
    min_size=1,
    max_size=60,
)


@given(ops=_ops)
def test_monotonic_and_causal(ops: list[tuple[int | str, ...]]) -> None:
    """Every value exceeds the previous one and every received one; it stays near pt."""
    wall = FakeWall(pack(1000, 0))
    clock = HybridClock(wall=wall, max_offset=1.0)
    last = 0
    largest_remote = 0
    for op in ops:
        wall.now = max(0, wall.now + int(op[1]) * G)
        if op[0] == "tick":
            t = clock.now()
        else:
            remote = pack(wall.now // G + int(op[2]), int(op[3]))
            t = clock.update(remote)
            assert t > remote
            largest_remote = max(largest_remote, remote)
        assert t > last
        last = t
        # bounded drift: l never exceeds the largest of physical time and remote times seen
        assert physical_ns(t) <= max(physical_ns(clock.peek()), wall.now, largest_remote)
        assert physical_ns(t) <= max(wall.now, physical_ns(largest_remote), physical_ns(last))


@given(a_steps=st.integers(1, 20), b_steps=st.integers(1, 20), skew=st.integers(-50, 50))
def test_message_passing_orders_send_before_receive(a_steps: int, b_steps: int, skew: int) -> None:
    wall_a, wall_b = FakeWall(pack(1000, 0)), FakeWall(pack(1000 + skew, 0))
    a = HybridClock(wall=wall_a, max_offset=1.0)
    b = HybridClock(wall=wall_b, max_offset=1.0)
    for _ in range(a_steps):
        a.now()
    for _ in range(b_steps):
        b.now()
    sent = a.now()
    received = b.update(sent)
    assert received > sent
    assert b.now() > received

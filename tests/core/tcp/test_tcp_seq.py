"""seq.py: unwrapping, RFC 6528 ISNs, RFC 4987 SYN cookies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stack.core.clock import s, us
from stack.core.tcp.seq import (
    COOKIE_MSS,
    check_cookie,
    cookie_options,
    cookie_tsval,
    initial_sequence,
    isn_and_ts_offset,
    make_cookie,
    seq_diff,
    unwrap,
)
from stack.wire.addr import ip6

KEY = bytes(range(32))
A, B = ip6("2001:db8::1"), ip6("2001:db8::2")


def test_seq_diff_across_the_wrap() -> None:
    assert seq_diff(5, 0xFFFFFFFB) == 10
    assert seq_diff(0xFFFFFFFB, 5) == -10
    assert seq_diff(7, 7) == 0


@given(ref=st.integers(0, 2**40), delta=st.integers(-(2**31) + 1, 2**31 - 1))
def test_unwrap_recovers_nearby_numbers(ref: int, delta: int) -> None:
    value = ref + delta
    assert unwrap(value & 0xFFFFFFFF, ref) == value


def test_isn_is_keyed_per_tuple_and_ticks_every_4_us() -> None:
    a = initial_sequence(KEY, A, 1, B, 2, 0)
    assert initial_sequence(KEY, A, 1, B, 2, us(4)) == (a + 1) & 0xFFFFFFFF
    assert initial_sequence(KEY, A, 1, B, 3, 0) != a
    assert initial_sequence(bytes(32), A, 1, B, 2, 0) != a


def test_isn_and_timestamp_offset_come_from_one_keyed_hash() -> None:
    """One BLAKE2s per connection: its ISN is initial_sequence's, its RFC 7323 §5.4
    timestamp offset is the same at any time and keyed per tuple and secret."""
    isn, off = isn_and_ts_offset(KEY, A, 1, B, 2, us(40))
    assert isn == initial_sequence(KEY, A, 1, B, 2, us(40))
    assert isn_and_ts_offset(KEY, A, 1, B, 2, s(9))[1] == off
    assert isn_and_ts_offset(KEY, A, 1, B, 3, us(40))[1] != off
    assert isn_and_ts_offset(bytes(32), A, 1, B, 2, us(40))[1] != off
    assert 0 <= off <= 0xFFFFFFFF and off != (isn - 10) & 0xFFFFFFFF     # not the ISN's hash half


def test_cookie_round_trip_and_expiry() -> None:
    cookie, mss = make_cookie(KEY, A, 80, B, 4000, 12345, 1460, s(100))
    assert mss == 1460
    assert check_cookie(KEY, A, 80, B, 4000, 12345, cookie, s(100)) == 1460
    assert check_cookie(KEY, A, 80, B, 4000, 12345, cookie, s(100) + s(64)) == 1460   # one period later
    assert check_cookie(KEY, A, 80, B, 4000, 12345, cookie, s(100) + s(200)) is None   # too old
    assert check_cookie(KEY, A, 80, B, 4000, 12346, cookie, s(100)) is None            # other peer ISN
    assert check_cookie(KEY, A, 80, B, 4001, 12345, cookie, s(100)) is None            # other tuple
    assert check_cookie(KEY, A, 80, B, 4000, 12345, cookie ^ 1, s(100)) is None


def test_cookie_mss_rounds_down_to_the_table() -> None:
    assert make_cookie(KEY, A, 80, B, 4000, 1, 1459, 0)[1] == 1440
    assert make_cookie(KEY, A, 80, B, 4000, 1, 100, 0)[1] == COOKIE_MSS[0]


def test_cookie_timestamp_carries_options() -> None:
    ts = cookie_tsval(1_000_000, 7, True)
    assert ts <= 1_000_000 and cookie_options(ts) == (7, True)
    assert cookie_options(cookie_tsval(5000, None, False)) == (None, False)

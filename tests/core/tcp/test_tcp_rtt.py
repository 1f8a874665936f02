"""rtt.py: RFC 6298 estimator and the timestamp clock."""

from __future__ import annotations

from stack.core.clock import ms, s
from stack.core.tcp.rtt import RttEstimator, ts_clock, ts_elapsed, ts_newer


def test_initial_rto_is_one_second_and_backs_off_to_the_cap() -> None:
    r = RttEstimator()
    assert r.rto == s(1)
    for _ in range(10):
        r.on_timeout()
    assert r.rto == s(120)


def test_first_and_later_samples_follow_rfc6298() -> None:
    r = RttEstimator()
    r.sample(ms(100))
    assert (r.srtt, r.rttvar, r.rto) == (ms(100), ms(50), ms(300))
    r.sample(ms(200))
    assert r.srtt == (7 * ms(100) + ms(200)) // 8
    assert r.rttvar == (3 * ms(50) + ms(100)) // 4


def test_minimum_rto_is_200ms_and_a_sample_clears_backoff() -> None:
    r = RttEstimator()
    r.sample(ms(1))
    assert r.rto == ms(200)
    r.on_timeout()
    assert r.rto == ms(400)
    r.sample(ms(1))
    assert r.rto == ms(200)


def test_syn_timeout_rule() -> None:
    r = RttEstimator()
    r.on_timeout()
    r.reset_after_syn_timeout()
    assert r.rto == s(3)


def test_timestamp_clock() -> None:
    assert ts_clock(ms(5), 10) == 15
    assert ts_clock(ms(5), 0xFFFFFFFF) == 4
    assert ts_elapsed(ms(30), 0, 10) == ms(20)
    assert ts_elapsed(ms(30), 0, 40) == -1
    assert ts_newer(5, 0xFFFFFFF0) and not ts_newer(0xFFFFFFF0, 5) and not ts_newer(3, 3)

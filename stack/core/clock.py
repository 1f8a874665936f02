"""Time for the deterministic core.

An ``Instant`` is an ``int`` of nanoseconds from an arbitrary epoch. Durations are
ints built with :func:`ms` / :func:`s`. The core never reads a clock: every entry
point takes ``now``. ``ManualClock`` drives tests; the runtime supplies a
monotonic clock (``stack.runtime.driver.MonotonicClock``).
"""

from __future__ import annotations

from typing import Protocol

Instant = int


def us(n: float) -> int:
    return int(n * 1_000)


def ms(n: float) -> int:
    return int(n * 1_000_000)


def s(n: float) -> int:
    return int(n * 1_000_000_000)


def to_seconds(d: int) -> float:
    return d / 1e9


class Clock(Protocol):
    def now(self) -> Instant: ...


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: Instant = s(1000)) -> None:
        self._now = start

    def now(self) -> Instant:
        return self._now

    def advance(self, d: int) -> Instant:
        assert d >= 0, "time does not go backwards"
        self._now += d
        return self._now

    def set(self, t: Instant) -> None:
        assert t >= self._now, "time does not go backwards"
        self._now = t

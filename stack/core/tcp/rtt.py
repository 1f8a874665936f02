"""Round-trip time estimation and the retransmission timeout.

RFC 6298 §2-5 (SRTT, RTTVAR, RTO, back-off), RFC 7323 §4 (RTT samples from
timestamps: one per ACK that acknowledges new data, no Karn ambiguity because
TSecr names the transmission being acknowledged), Karn's algorithm for
connections without timestamps (RFC 6298 §3).

All durations are int nanoseconds. The minimum RTO is 200 ms as Linux uses
(RFC 6298 (2.4) asks for 1 s; the brief accepts Linux's value); the maximum is
120 s (RFC 6298 (2.5) allows any value of at least 60 s).
"""

from __future__ import annotations

from stack.core.clock import ms, s

RTO_INITIAL = s(1)       # RFC 6298 (2.1)
RTO_MIN = ms(200)
RTO_MAX = s(120)
CLOCK_GRANULARITY = ms(1)
TS_TICK_NS = 1_000_000   # timestamp clock: 1 ms per tick (RFC 7323 §5.4 allows 1 ms - 1 s)
TS_MASK = 0xFFFFFFFF


class RttEstimator:
    """SRTT/RTTVAR/RTO of one connection. ``rto`` includes the back-off."""

    __slots__ = ("_base_rto", "backoff", "rto_max", "rto_min", "rttvar", "srtt")

    def __init__(self, initial: int = RTO_INITIAL, rto_min: int = RTO_MIN, rto_max: int = RTO_MAX) -> None:
        self.srtt: int | None = None
        self.rttvar = 0
        self.rto_min = rto_min
        self.rto_max = rto_max
        self._base_rto = initial
        self.backoff = 0

    @property
    def rto(self) -> int:
        """RFC 6298 (5.5): the backed-off timeout, capped at the maximum."""
        return min(self._base_rto << self.backoff, self.rto_max)

    def sample(self, r: int) -> None:
        """One measurement ``r`` (ns). RFC 6298 (2.2)/(2.3); resets the back-off
        because a fresh sample shows the path is alive again (RFC 6298 (5.7) note)."""
        r = max(r, 0)
        if self.srtt is None:
            # (2.2) first measurement
            self.srtt = r
            self.rttvar = r // 2
        else:
            # (2.3) beta = 1/4, alpha = 1/8
            self.rttvar = (3 * self.rttvar + abs(self.srtt - r)) // 4
            self.srtt = (7 * self.srtt + r) // 8
        rto = self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)
        self._base_rto = min(max(rto, self.rto_min), self.rto_max)   # (2.4) and (2.5)
        self.backoff = 0

    def on_timeout(self) -> None:
        """RFC 6298 (5.5): back off the timer (double it)."""
        if self._base_rto << self.backoff < self.rto_max:
            self.backoff += 1

    def reset_after_syn_timeout(self) -> None:
        """RFC 6298 (5.7): when the SYN had to be retransmitted and no sample was
        taken, the RTO after the handshake goes back to 3 s."""
        if self.srtt is None:
            self._base_rto = max(self._base_rto, s(3))
            self.backoff = 0


def ts_clock(now: int, offset: int) -> int:
    """The 32-bit TSval clock at ``now`` (ms ticks from a per-connection random offset,
    RFC 7323 §5.4)."""
    return (now // TS_TICK_NS + offset) & TS_MASK


def ts_elapsed(now: int, offset: int, tsecr: int) -> int:
    """Nanoseconds since the segment whose TSval came back as ``tsecr`` was sent
    (RFC 7323 §4.1); negative distances (a bogus echo) give -1."""
    ticks = (ts_clock(now, offset) - tsecr) & TS_MASK
    if ticks >= 1 << 31:
        return -1
    return ticks * TS_TICK_NS


def ts_newer(a: int, b: int) -> bool:
    """a > b in 32-bit timestamp space (RFC 7323 §5.3 PAWS comparison)."""
    return 0 < ((a - b) & TS_MASK) < 1 << 31

"""Congestion control and loss recovery of one sender.

RFC 5681 (slow start, congestion avoidance, fast retransmit), RFC 6582
(NewReno "recover"), RFC 6675 (SACK-based loss recovery: scoreboard, IsLost,
pipe, NextSeg), RFC 6928 (initial window of 10 segments), RFC 3465 (byte
counting with L = 2 SMSS), RFC 2018 §8 (SACK information is advisory: it is
dropped after a repeated timeout in case the receiver reneged).

The model is a small subset of RFC 6675 kept in O(number of SACK ranges):

* ``Scoreboard`` holds the SACKed ranges above SND.UNA.
* Everything not SACKed below ``lost_end`` is considered lost (IsLost, or
  "all of it" after a retransmission timeout, or "the first segment" for a
  NewReno partial ACK). ``rexmit_high`` marks how far this episode has
  retransmitted, so lost-but-not-yet-retransmitted bytes are
  ``unsacked(max(rexmit_high, SND.UNA), lost_end)``.
* pipe = (SND.MAX - SND.UNA) - SACKed - lost-not-retransmitted: RFC 6675's
  SetPipe over ranges instead of octets (Linux computes in_flight the same
  way). Without SACK each duplicate ACK stands for one segment that left the
  network (``reno_sacked``), as Linux's Reno emulation does.

Sequence numbers are unwrapped ints (``seq.py``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from enum import IntEnum

DUP_THRESH = 3                 # RFC 5681 §3.2 / RFC 6675 §2
INFINITE_SSTHRESH = 1 << 62


class Recovery(IntEnum):
    OPEN = 0          # no loss being repaired
    FAST = 1          # fast retransmit / fast recovery (RFC 5681 §3.2, RFC 6675 §5)
    LOSS = 2          # after a retransmission timeout (RFC 5681 §3.1 eqn 4, RFC 6298 §5)


class Scoreboard:
    """SACKed ranges [start, end) above SND.UNA, sorted and disjoint (RFC 6675 §3)."""

    __slots__ = ("ends", "max_ranges", "sacked", "starts")

    def __init__(self, max_ranges: int = 128) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.sacked = 0
        self.max_ranges = max_ranges

    def __bool__(self) -> bool:
        return bool(self.starts)

    def add(self, start: int, end: int) -> int:
        """Mark [start, end) SACKed; returns the number of newly SACKed bytes."""
        starts, ends = self.starts, self.ends
        i = bisect_left(ends, start)
        j = i
        while j < len(starts) and starts[j] <= end:
            j += 1
        if i == j:
            if len(starts) >= self.max_ranges:
                return 0
            starts.insert(i, start)
            ends.insert(i, end)
            self.sacked += end - start
            return end - start
        new_start, new_end = min(start, starts[i]), max(end, ends[j - 1])
        before = sum(ends[k] - starts[k] for k in range(i, j))
        starts[i:j] = [new_start]
        ends[i:j] = [new_end]
        added = (new_end - new_start) - before
        self.sacked += added
        return added

    def trim(self, snd_una: int) -> None:
        starts, ends = self.starts, self.ends
        while starts and starts[0] < snd_una:
            if ends[0] <= snd_una:
                self.sacked -= ends[0] - starts[0]
                del starts[0], ends[0]
            else:
                self.sacked -= snd_una - starts[0]
                starts[0] = snd_una

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()
        self.sacked = 0

    def holes(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """Ranges in [lo, hi) not SACKed, in order."""
        cursor = lo
        for k in range(bisect_left(self.ends, lo + 1), len(self.starts)):
            if cursor >= hi:
                return
            s, e = self.starts[k], self.ends[k]
            if s > cursor:
                yield cursor, min(s, hi)
            cursor = max(cursor, e)
        if cursor < hi:
            yield cursor, hi

    def unsacked(self, lo: int, hi: int) -> int:
        return sum(e - s for s, e in self.holes(lo, hi))

    def lost_boundary(self, mss: int) -> int | None:
        """RFC 6675 §4 IsLost over ranges: un-SACKed bytes below the returned
        sequence number have DupThresh SACKed ranges or more than
        (DupThresh - 1) * SMSS SACKed bytes above them. None when nothing is."""
        total = 0
        for count, k in enumerate(range(len(self.starts) - 1, -1, -1), 1):
            total += self.ends[k] - self.starts[k]
            if count >= DUP_THRESH or total > (DUP_THRESH - 1) * mss:
                return self.starts[k]
        return None


def initial_window(mss: int, segments: int) -> int:
    """RFC 6928 §2: min(10*MSS, max(2*MSS, 14600)) for the default of 10 segments."""
    if segments == 10:
        return min(10 * mss, max(2 * mss, 14600))
    return max(1, segments) * mss


class Congestion:
    """cwnd/ssthresh plus the loss-recovery state of one connection."""

    __slots__ = ("board", "ca_acked", "cwnd", "dupacks", "force_retransmit", "initial_segments",
                 "lost_end", "lost_retransmits", "mss", "recover", "recoveries", "reno_sacked",
                 "rexmit_fence", "rexmit_high", "sack", "ssthresh", "state")

    def __init__(self, mss: int, snd_una: int, *, sack: bool, initial_segments: int = 10) -> None:
        self.mss = mss
        self.initial_segments = initial_segments
        self.cwnd = initial_window(mss, initial_segments)
        self.ssthresh = INFINITE_SSTHRESH       # RFC 5681 §3.1: arbitrarily high
        self.state = Recovery.OPEN
        self.recover = snd_una                  # RFC 6582 §3.2 step 1
        self.lost_end = snd_una
        self.rexmit_high = snd_una
        self.dupacks = 0
        self.reno_sacked = 0
        self.ca_acked = 0
        self.sack = sack
        self.board = Scoreboard()
        self.force_retransmit = False
        self.recoveries = 0
        self.rexmit_fence = snd_una             # SND.MAX when the latest retransmission left
        self.lost_retransmits = 0

    def set_mss(self, mss: int, *, reset_window: bool) -> None:
        self.mss = mss
        if reset_window:
            self.cwnd = initial_window(mss, self.initial_segments)

    # --- inputs -----------------------------------------------------------

    def on_ack(self, una_before: int, una: int, snd_max: int,
               blocks: list[tuple[int, int]], duplicate: bool) -> None:
        """One arriving ACK: SACK blocks (already unwrapped and validated), whether
        it is a duplicate ACK in the RFC 5681 §2 sense."""
        for start, end in blocks:
            self.board.add(start, end)
        acked = una - una_before
        if acked > 0:
            self.board.trim(una)
            self.dupacks = 0
            self._on_cumulative_ack(una, acked)
        elif duplicate:
            self.dupacks += 1
            if not self.sack:
                self.reno_sacked = min(self.reno_sacked + self.mss, max(0, snd_max - una - self.mss))
        self._detect_loss(una, snd_max)

    def _on_cumulative_ack(self, una: int, acked: int) -> None:
        if self.state is Recovery.OPEN:
            self._grow(acked)
            return
        if una >= self.recover:
            # RFC 6582 §3.2 step 3 (full acknowledgment) / RFC 6675 §5: leave recovery.
            if self.state is Recovery.FAST:
                self.cwnd = max(self.ssthresh, self.mss)
            self.state = Recovery.OPEN
            self.reno_sacked = 0
            return
        # Partial acknowledgment.
        if self.state is Recovery.LOSS:
            self._grow(acked)                       # slow start after RTO (RFC 5681 §3.1)
        elif not self.sack:
            # RFC 6582 §3.2 step 3: retransmit the first unacknowledged segment.
            self.reno_sacked = max(0, self.reno_sacked - acked)
            self.lost_end = max(self.lost_end, una + self.mss)
            self.force_retransmit = True

    def _detect_loss(self, una: int, snd_max: int) -> None:
        boundary = self.board.lost_boundary(self.mss) if self.sack else None
        # RFC 6675 §5: DupAcks >= DupThresh or IsLost(HighACK + 1).
        if self.state is Recovery.OPEN and snd_max > una and (
                self.dupacks >= DUP_THRESH or (boundary is not None and boundary > una)):
            self._enter_fast_recovery(una, snd_max)
        if self.state is not Recovery.OPEN and boundary is not None:
            self.lost_end = max(self.lost_end, boundary)
        if self.state is Recovery.FAST and self.rexmit_high > una and self.board \
                and self.board.ends[-1] >= self.rexmit_fence + DUP_THRESH * self.mss:
            # Data sent after our latest retransmission was SACKed, yet a resent hole
            # is still open: that retransmission was lost too (Linux tcp_mark_lost_retrans;
            # RFC 6675 alone would wait for the RTO). Walk the holes again.
            for _hole in self.board.holes(una, self.rexmit_high):
                self.rexmit_high = una
                self.rexmit_fence = snd_max
                self.lost_retransmits += 1
                break

    def _enter_fast_recovery(self, una: int, snd_max: int) -> None:
        flight = snd_max - una
        # RFC 5681 eqn (4) with RFC 6675 §5 (4.2): ssthresh = cwnd = FlightSize / 2.
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self.state = Recovery.FAST
        self.recover = snd_max                      # RFC 6582 §3.2 step 2
        self.lost_end = max(self.lost_end, una + self.mss)
        self.rexmit_high = una
        self.force_retransmit = True                # RFC 6675 §5 (4.3): first one regardless of pipe
        self.recoveries += 1

    def on_timeout(self, una: int, snd_max: int, *, repeated: bool) -> None:
        """RFC 5681 §3.1 eqn (4)/(5): ssthresh from FlightSize, cwnd to one segment;
        everything outstanding is retransmitted (go-back-N over the holes)."""
        if self.state is not Recovery.LOSS:
            self.ssthresh = max((snd_max - una) // 2, 2 * self.mss)
        self.cwnd = self.mss
        self.ca_acked = 0
        self.state = Recovery.LOSS
        self.recover = snd_max
        self.lost_end = snd_max
        self.rexmit_high = una
        self.dupacks = 0
        self.reno_sacked = 0
        self.force_retransmit = True
        if repeated:
            self.board.clear()                      # RFC 2018 §8: the receiver may have reneged

    def on_mtu_reduced(self, una: int, snd_max: int) -> None:
        """RFC 8201 §4 / RFC 1191 §6.5: resend what was too big, without a congestion response."""
        if self.state is Recovery.OPEN:
            self.state = Recovery.LOSS
            self.recover = snd_max
            self.ssthresh = max(self.ssthresh, self.cwnd)
        self.lost_end = snd_max
        self.rexmit_high = una

    def after_idle(self) -> None:
        """RFC 5681 §4.1: after an idle period longer than the RTO, cwnd restarts from
        min(IW, cwnd) (Linux tcp_slow_start_after_idle)."""
        if self.state is Recovery.OPEN:
            self.cwnd = min(self.cwnd, initial_window(self.mss, self.initial_segments))

    def _grow(self, acked: int) -> None:
        if self.cwnd < self.ssthresh:
            self.cwnd += min(acked, 2 * self.mss)   # RFC 5681 eqn (2) with RFC 3465 L = 2
        else:
            self.ca_acked += acked                  # RFC 5681 §3.1 byte counting in CA
            if self.ca_acked >= self.cwnd:
                self.ca_acked -= self.cwnd
                self.cwnd += self.mss

    # --- what to send -----------------------------------------------------

    def pipe(self, una: int, snd_max: int) -> int:
        out = snd_max - una - (self.board.sacked if self.sack else self.reno_sacked)
        if self.state is not Recovery.OPEN:
            lo = max(self.rexmit_high, una)
            if self.lost_end > lo:
                out -= self.board.unsacked(lo, self.lost_end)
        return max(out, 0)

    def next_retransmit(self, una: int, snd_max: int, mss: int) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg rule 1: the first lost, not yet retransmitted range."""
        if self.state is Recovery.OPEN:
            return None
        lo = max(self.rexmit_high, una)
        hi = min(self.lost_end, snd_max)
        for start, end in self.board.holes(lo, hi):
            return start, min(end, start + mss)
        return None

    def rescue(self, una: int, snd_max: int) -> bool:
        """RFC 6675 §4 NextSeg rule 3, bounded as FACK does: when nothing presumed lost
        is left to resend and there is no new data, un-SACKed data below the highest
        SACKed byte is treated as lost. True when that made a new range resendable."""
        if self.state is not Recovery.FAST or not self.board:
            return False
        high = self.board.ends[-1]
        if high <= self.lost_end:
            return False
        for _hole in self.board.holes(max(self.rexmit_high, una, self.lost_end), high):
            self.lost_end = high
            return True
        return False

    def retransmitted(self, end: int, snd_max: int) -> None:
        self.rexmit_high = max(self.rexmit_high, end)
        self.rexmit_fence = snd_max
        self.force_retransmit = False

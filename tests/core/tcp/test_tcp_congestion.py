"""congestion.py: scoreboard, IsLost, initial window, NewReno/SACK recovery state."""

from __future__ import annotations

from stack.core.tcp.congestion import Congestion, Recovery, Scoreboard, initial_window

M = 1000


def test_initial_window_rfc6928() -> None:
    assert initial_window(1460, 10) == 14600
    assert initial_window(536, 10) == 5360
    assert initial_window(9000, 10) == 18000
    assert initial_window(1000, 4) == 4000


def test_scoreboard_add_merge_trim_holes() -> None:
    b = Scoreboard()
    assert b.add(30, 40) == 10
    assert b.add(10, 20) == 10
    assert b.add(15, 32) == 10                       # fills 20..30, joins both
    assert (b.starts, b.ends, b.sacked) == ([10], [40], 30)
    b.add(50, 60)
    assert list(b.holes(0, 70)) == [(0, 10), (40, 50), (60, 70)]
    assert b.unsacked(0, 70) == 30
    b.trim(35)
    assert (b.starts, b.sacked) == ([35, 50], 15)


def test_lost_boundary_by_bytes_and_by_ranges() -> None:
    b = Scoreboard()
    b.add(5 * M, 7 * M)
    assert b.lost_boundary(M) is None                # 2 segments: not > 2*MSS
    b.add(7 * M, 8 * M)
    assert b.lost_boundary(M) == 5 * M
    c = Scoreboard()
    for k in (2, 4, 6):
        c.add(k * M, k * M + 10)
    assert c.lost_boundary(M) == 2 * M               # three discontiguous ranges


def test_slow_start_then_congestion_avoidance() -> None:
    cc = Congestion(M, 0, sack=True, initial_segments=2)
    cc.ssthresh = 4 * M
    cc.on_ack(0, M, 10 * M, [], False)
    cc.on_ack(M, 2 * M, 10 * M, [], False)
    assert cc.cwnd == 4 * M
    for i in range(4):
        cc.on_ack((2 + i) * M, (3 + i) * M, 10 * M, [], False)
    assert cc.cwnd == 5 * M                          # one MSS per cwnd of ACKed bytes


def test_three_dupacks_enter_fast_recovery_and_full_ack_leaves() -> None:
    cc = Congestion(M, 0, sack=False)
    for _ in range(3):
        cc.on_ack(0, 0, 8 * M, [], True)
    assert cc.state is Recovery.FAST and cc.ssthresh == cc.cwnd == 4 * M and cc.recover == 8 * M
    assert cc.next_retransmit(0, 8 * M, M) == (0, M)
    cc.retransmitted(M, 8 * M)
    assert cc.next_retransmit(0, 8 * M, M) is None
    cc.on_ack(0, 3 * M, 8 * M, [], False)            # partial: NewReno resends the next one
    assert cc.next_retransmit(3 * M, 8 * M, M) == (3 * M, 4 * M)
    cc.on_ack(3 * M, 8 * M, 8 * M, [], False)
    assert cc.state is Recovery.OPEN and cc.cwnd == 4 * M


def test_timeout_marks_everything_lost_and_clears_sack_when_repeated() -> None:
    cc = Congestion(M, 0, sack=True)
    cc.on_ack(0, 0, 6 * M, [(2 * M, 3 * M)], True)
    cc.on_timeout(0, 6 * M, repeated=False)
    assert cc.state is Recovery.LOSS and cc.cwnd == M and cc.ssthresh == 3 * M
    assert cc.pipe(0, 6 * M) == 0
    assert cc.next_retransmit(0, 6 * M, M) == (0, M)
    cc.on_timeout(0, 6 * M, repeated=True)
    assert not cc.board and cc.ssthresh == 3 * M     # not reduced again


def test_rescue_covers_a_hole_below_the_highest_sack() -> None:
    cc = Congestion(M, 0, sack=True)
    cc.on_ack(0, 0, 10 * M, [(M, 4 * M)], True)     # boundary at M: hole 0..M lost
    assert cc.state is Recovery.FAST
    cc.on_ack(0, 0, 10 * M, [(5 * M, 6 * M)], True)
    cc.retransmitted(M, 10 * M)
    assert cc.next_retransmit(0, 10 * M, M) is None
    assert cc.rescue(0, 10 * M)
    assert cc.next_retransmit(0, 10 * M, M) == (4 * M, 5 * M)

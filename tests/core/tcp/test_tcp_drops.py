"""Every TCP segment a connection or listener does not act on is counted under its
own drop reason (README "TCP drop reasons"), and answered as RFC 9293 / RFC 5961 /
RFC 1337 say: one case per reason, each asserting the one reason counted and what
is sent back."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from tcp_harness import (
    IRS,
    ISS,
    FakeIp,
    concrete,
    established,
    expect,
    feed,
    make,
    seg,
    syn_received,
    syn_sent,
    tcp_frame,
)
from test_tcp_connection import close_wait, time_wait
from test_tcp_output import SACK_ONLY

from stack.core.clock import ms
from stack.core.stats import Drop
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.layer import TcpLayer
from stack.core.tcp.tcb import TcpConfig, TcpState
from stack.wire.addr import ip6
from stack.wire.tcp import RST, TcpSegment, build_tcp

Case = tuple[Callable[[], TcpConnection], TcpSegment, str, list[TcpSegment], TcpState]


def with_ts() -> TcpConnection:
    c: TcpConnection = established(TcpConfig(sack=False, window_scaling=False), ts=(1000, 0))
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"new", ts=(2000, 0)), at=0)
    c.dispatch(ms(50))
    return c


def after_data() -> TcpConnection:
    c: TcpConnection = established()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"ab"), at=0)
    c.dispatch(ms(500))                         # the delayed ACK
    return c


def sent_and_acked() -> TcpConnection:
    c: TcpConnection = established()
    c.send(b"x" * 100)
    c.dispatch(0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 101), at=0)
    c.dispatch(0)
    return c


A = "A"
CASES: dict[str, Case] = {
    # first: sequence check; unacceptable segments are ACKed unless they carry RST
    "duplicate": (after_data, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"ab"), Drop.TCP_DUPLICATE,
                  [seg(A, seq=ISS + 1, ack=IRS + 3)], TcpState.ESTABLISHED),
    "keepalive probe": (after_data, seg("A", seq=IRS + 2, ack=ISS + 1), Drop.TCP_DUPLICATE,
                        [seg(A, seq=ISS + 1, ack=IRS + 3)], TcpState.ESTABLISHED),
    "beyond the window": (established, seg("PA", seq=IRS + 1 + 1_200_000, ack=ISS + 1, payload=b"far"),
                          Drop.TCP_OUT_OF_WINDOW, [seg(A, seq=ISS + 1, ack=IRS + 1)], TcpState.ESTABLISHED),
    "old timestamp": (with_ts, seg("PA", seq=IRS + 4, ack=ISS + 1, payload=b"old", ts=(1500, 0)), Drop.TCP_PAWS,
                      [seg(A, seq=ISS + 1, ack=IRS + 4)], TcpState.ESTABLISHED),
    "closed": (make, seg("A", seq=IRS + 1, ack=ISS + 1), Drop.TCP_CLOSED, [], TcpState.CLOSED),
    # second: RST (RFC 5961 §3.2, RFC 1337)
    "RST not at RCV.NXT": (established, seg("R", seq=IRS + 10), Drop.TCP_RST_IN_WINDOW,
                           [seg(A, seq=ISS + 1, ack=IRS + 1)], TcpState.ESTABLISHED),
    "RST in TIME-WAIT": (time_wait, seg("R", seq=IRS + 2), Drop.TCP_RST_TIME_WAIT, [], TcpState.TIME_WAIT),
    # fourth: SYN (RFC 5961 §4.2)
    "SYN in window": (established, seg("S", seq=IRS + 1), Drop.TCP_SYN_IN_WINDOW,
                      [seg(A, seq=ISS + 1, ack=IRS + 1)], TcpState.ESTABLISHED),
    # fifth: ACK
    "no ACK bit": (established, seg("P", seq=IRS + 1, payload=b"data"), Drop.TCP_NO_ACK, [],
                   TcpState.ESTABLISHED),
    "ACK of unsent data": (established, seg("A", seq=IRS + 1, ack=ISS + 100), Drop.TCP_ACK_UNSENT,
                           [seg(A, seq=ISS + 1, ack=IRS + 1)], TcpState.ESTABLISHED),
    "ACK too old": (established, seg("A", seq=IRS + 1, ack=ISS + 1 - 70_000), Drop.TCP_ACK_TOO_OLD,
                    [seg(A, seq=ISS + 1, ack=IRS + 1)], TcpState.ESTABLISHED),
    "old ACK": (sent_and_acked, seg("A", seq=IRS + 1, ack=ISS + 51), Drop.TCP_OLD_ACK, [],
                TcpState.ESTABLISHED),
    "SYN-RECEIVED bad ACK": (syn_received, seg("A", seq=IRS + 1, ack=ISS + 5), Drop.TCP_BAD_ACK,
                             [seg("R", seq=ISS + 5)], TcpState.SYN_RECEIVED),
    # seventh: text after the peer's FIN
    "data after FIN": (close_wait, seg("PA", seq=IRS + 2, ack=ISS + 1, payload=b"late"),
                       Drop.TCP_DATA_AFTER_FIN, [], TcpState.CLOSE_WAIT),
    # SYN-SENT (RFC 9293 §3.10.7.3)
    "SYN-SENT RST without ACK": (syn_sent, seg("R", seq=IRS), Drop.TCP_RST_NO_ACK, [], TcpState.SYN_SENT),
    "SYN-SENT neither SYN nor RST": (syn_sent, seg("P", seq=IRS, payload=b"x"), Drop.TCP_NO_SYN, [],
                                     TcpState.SYN_SENT),
}


@pytest.mark.parametrize("name", list(CASES))
def test_segment_not_acted_on_is_counted_and_answered_per_rfc(name: str) -> None:
    start, segment, reason, answer, state = CASES[name]
    c = start()
    before = dict(c.stats.drops)
    queued = c.recv_queue
    feed(c, segment, at=ms(50))
    expect(c, answer, at=ms(50))
    new = {k: v - before.get(k, 0) for k, v in c.stats.drops.items() if v != before.get(k, 0)}
    assert new == {reason: 1}
    assert c.state is state and c.recv_queue == queued


def test_an_old_ack_with_data_is_not_an_old_ack_drop() -> None:
    c = sent_and_acked()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 51, payload=b"hi"), at=0)
    assert c.stats[Drop.TCP_OLD_ACK] == 0 and c.recv(10) == b"hi"


# --- listeners (RFC 9293 §3.10.7.2) ----------------------------------------------------

US, PEER = ip6("2001:db8:1::2"), ip6("2001:db8:1::1")


@pytest.mark.parametrize(("flags", "reason", "answer"), [
    ("R", Drop.TCP_LISTEN_RST, []),                      # first: ignore RST
    ("A", Drop.TCP_LISTEN_ACK, [(RST, 777)]),           # second: <SEQ=SEG.ACK><CTL=RST>
    ("P", Drop.TCP_LISTEN_NO_SYN, []),                  # neither: drop
], ids=["rst", "ack", "no-syn"])
def test_listener_segments_not_acted_on(flags: str, reason: str, answer: list[tuple[int, int]]) -> None:
    ip = FakeIp([US], random.Random(1))
    la = TcpLayer(ip)
    la.listen(None, 7)
    la.handle(tcp_frame(PEER, US, build_tcp(PEER, US, 40000, 7, concrete(seg(flags, seq=100, ack=777)))), 2, 0)
    assert [(s.flags, s.seq) for s in ip.take()] == answer
    assert {k: v for k, v in ip.stats.drops.items() if v} == {reason: 1}
    assert la.connections == {}


def test_sack_blocks_outside_the_send_window_are_discarded_and_counted() -> None:
    """RFC 2018 §4: only blocks inside (SND.UNA, SND.NXT] mean anything. A block past
    SND.NXT (nothing outstanding) or below SND.UNA is ignored and counted as
    tcp.sack_discards (Linux TCPSACKDiscard); an old ACK whose blocks were all discarded
    is an old ACK."""
    c: TcpConnection = established(SACK_ONLY, sack_permitted=True)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, sack=((ISS + 100, ISS + 200),)), at=0)
    assert c.stats.get("tcp", "sack_discards") == 1 and expect(c, [], 0) == []
    c.send(b"x" * 100)
    c.dispatch(0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 101), at=0)
    c.dispatch(0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 51, sack=((ISS + 1, ISS + 51), (ISS + 300, ISS + 400))), at=0)
    assert c.stats.get("tcp", "sack_discards") == 3 and c.stats[Drop.TCP_OLD_ACK] == 1
    assert expect(c, [], 0) == []

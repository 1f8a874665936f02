"""TcpConnection output and timers: RTO, Nagle, persist, SACK recovery, keepalive, close."""

from __future__ import annotations

import errno

from tcp_harness import IRS, ISS, SACK_ONLY, established, events, expect, feed, run_timers, seg

from stack.core.clock import ms, s
from stack.core.events import SocketError
from stack.core.tcp.congestion import Recovery
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.tcb import TcpConfig, TcpState

MSS = 1440


def test_rto_backs_off_and_gives_up_with_etimedout() -> None:
    c = established(TcpConfig(timestamps=False, sack=False, window_scaling=False, max_retries=3))
    assert c.rtt.rto == ms(200)                        # one 0 ms sample, clamped to RTO_MIN
    c.send(b"x" * 100)
    expect(c, [seg("PA", seq=ISS + 1, payload=b"x" * 100)], at=0)
    times = []
    while (t := c.poll_at()) is not None:
        times.append(t)
        c.poll(t)
        out = c.dispatch(t)
        if c.state is TcpState.ESTABLISHED:
            assert [(o.seq, o.payload) for o in out] == [(ISS + 1, b"x" * 100)]
    assert times == [ms(200), ms(600), ms(1400), ms(3000)]
    assert c.state is TcpState.CLOSED and c.error == errno.ETIMEDOUT
    assert isinstance(events(c)[-2], SocketError)


def test_rto_sets_loss_window_and_ack_resumes_slow_start() -> None:
    c = established()
    c.send(b"x" * (4 * MSS))
    assert len(c.dispatch(0)) == 4
    c.poll(ms(200))
    [rx] = c.dispatch(ms(200))
    assert rx.seq == ISS + 1 and len(rx.payload) == MSS
    assert c.cc.state is Recovery.LOSS and c.cc.cwnd == MSS and c.cc.ssthresh == 2 * MSS
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1 + MSS), at=ms(210))
    out = c.dispatch(ms(210))
    assert [o.seq for o in out] == [ISS + 1 + MSS, ISS + 1 + 2 * MSS]   # cwnd 2 segments


def test_nagle_holds_a_small_segment_while_data_is_unacked() -> None:
    c = established()
    c.send(b"a")
    expect(c, [seg("PA", seq=ISS + 1, payload=b"a")], at=0)
    c.send(b"b")
    c.send(b"c")
    expect(c, [], at=0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 2), at=ms(5))
    expect(c, [seg("PA", seq=ISS + 2, payload=b"bc")], at=ms(5))


def test_nodelay_sends_small_segments_at_once() -> None:
    c = established()
    c.set_nodelay(True)
    c.send(b"a")
    c.dispatch(0)
    c.send(b"b")
    expect(c, [seg("PA", seq=ISS + 2, payload=b"b")], at=0)


def test_nagle_full_segment_test_uses_mss_after_timestamp_option() -> None:
    # PROTOCOLS.md §7: with timestamps every segment carries 12 option bytes; 1428-byte
    # segments are full-sized and must not be held back by Nagle.
    c = established(TcpConfig(sack=False, window_scaling=False), ts=(500, 0))
    assert c.payload_mss() == MSS - 12
    c.send(b"x" * (3 * 1428 + 10))
    out = c.dispatch(0)
    assert [len(o.payload) for o in out] == [1428, 1428, 1428]
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1 + 3 * 1428, ts=(501, out[0].ts[1] if out[0].ts else 0)), at=ms(1))
    assert [len(o.payload) for o in c.dispatch(ms(1))] == [10]


def test_zero_window_probes_back_off_and_window_update_resumes() -> None:
    c = established()
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, window=0), at=0)
    c.send(b"data")
    expect(c, [], at=0)
    assert c.poll_at() == ms(200)
    probes = []
    for _ in range(3):
        t = c.poll_at()
        assert t is not None
        c.poll(t)
        expect(c, [seg("A", seq=ISS, ack=IRS + 1, payload=b"")], at=t)
        probes.append(t)
        feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, window=0), at=t)   # still closed
    assert probes == [ms(200), ms(600), ms(1400)]
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, window=1000), at=ms(1500))
    expect(c, [seg("PA", seq=ISS + 1, payload=b"data")], at=ms(1500))
    assert c.probe_at is None and c.state is TcpState.ESTABLISHED   # the peer answered: no give-up


def test_small_window_is_used_after_the_persist_timeout() -> None:
    c = established()
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, window=100), at=0)
    c.send(b"x" * 1000)
    expect(c, [], at=0)                              # 100 < half the largest window (SWS)
    c.poll(ms(200))
    expect(c, [seg("A", seq=ISS + 1, payload=b"x" * 100)], at=ms(200))


def sack_sender() -> TcpConnection:
    c = established(SACK_ONLY, sack_permitted=True)
    c.send(b"".join(bytes([i]) * MSS for i in range(10)))
    assert len(c.dispatch(0)) == 10                  # IW10
    return c


def S(i: int) -> int:
    return ISS + 1 + i * MSS


def test_sack_recovery_repairs_several_holes_in_one_window() -> None:
    c = sack_sender()
    # Segments 1, 4 and 7 were lost; ACKs come back for 0, 2, 3, 5, 6, 8, 9.
    acks = [
        (S(1), ()),
        (S(1), ((S(2), S(3)),)),
        (S(1), ((S(2), S(4)),)),
        (S(1), ((S(5), S(6)), (S(2), S(4)))),
        (S(1), ((S(5), S(7)), (S(2), S(4)))),
        (S(1), ((S(8), S(9)), (S(5), S(7)), (S(2), S(4)))),
        (S(1), ((S(8), S(10)), (S(5), S(7)), (S(2), S(4)))),
    ]
    out = []
    for i, (ack, blocks) in enumerate(acks):
        feed(c, seg("A", seq=IRS + 1, ack=ack, sack=blocks), at=ms(10 + i))
        out += c.dispatch(ms(10 + i))
    assert c.cc.state is Recovery.FAST
    assert [(o.seq, o.payload[:1]) for o in out] == [(S(1), b"\x01"), (S(4), b"\x04"), (S(7), b"\x07")]
    assert c.rto_at is not None and c.stats.get("tcp", "timeouts") == 0
    feed(c, seg("A", seq=IRS + 1, ack=S(10)), at=ms(30))
    assert c.cc.state is Recovery.OPEN and c.cc.cwnd == c.cc.ssthresh == 9 * MSS // 2
    assert c.send_queue == 0 and c.rto_at is None


def test_newreno_without_sack_retransmits_on_three_dupacks_and_partial_acks() -> None:
    c = established()
    c.send(b"".join(bytes([i]) * MSS for i in range(6)))
    assert len(c.dispatch(0)) == 6
    # Segments 1 and 3 lost.
    out = []
    for i, ack in enumerate([S(1), S(1), S(1), S(1)]):
        feed(c, seg("A", seq=IRS + 1, ack=ack), at=ms(10 + i))
        out += c.dispatch(ms(10 + i))
    assert [o.seq for o in out] == [S(1)]
    feed(c, seg("A", seq=IRS + 1, ack=S(3)), at=ms(20))            # partial ACK
    assert [o.seq for o in c.dispatch(ms(20))] == [S(3)]
    feed(c, seg("A", seq=IRS + 1, ack=S(6)), at=ms(30))
    assert c.cc.state is Recovery.OPEN and c.send_queue == 0


def test_close_after_write_sends_every_byte_then_fin() -> None:
    data = bytes(range(256)) * 40                       # 10240 bytes, a 3000-byte peer window
    c = established(window=3000)
    assert c.send(data) == len(data)
    c.close()
    got = b""
    fin_seen = False
    t = 0
    for _ in range(40):
        out = c.dispatch(t)
        for o in out:
            assert not fin_seen
            got += o.payload
            fin_seen = bool(o.flags & 0x01)
        if fin_seen:
            break
        t += ms(1)
        feed(c, seg("A", seq=IRS + 1, ack=ISS + 1 + len(got), window=3000), at=t)
    assert got == data and fin_seen and c.state is TcpState.FIN_WAIT_1


def test_keepalive_probes_then_times_out() -> None:
    cfg = TcpConfig(timestamps=False, sack=False, window_scaling=False, keepalive=True,
                    keepalive_idle=s(10), keepalive_interval=s(1), keepalive_count=3)
    c = established(cfg)
    assert c.poll_at() == s(10)
    c.poll(s(10))
    expect(c, [seg("A", seq=ISS, ack=IRS + 1)], at=s(10))
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1), at=s(10))           # the peer answers
    assert c.poll_at() == s(20)
    probes = []
    while (t := c.poll_at()) is not None:
        c.poll(t)
        probes += [(t, o.seq) for o in c.dispatch(t)]
    assert probes == [(s(20), ISS), (s(21), ISS), (s(22), ISS)]
    assert c.error == errno.ETIMEDOUT and c.state is TcpState.CLOSED


def test_keepalive_is_off_by_default() -> None:
    c = established()
    assert c.poll_at() is None


def test_packet_too_big_shrinks_segments_and_resends() -> None:
    c = established()
    c.send(b"x" * (2 * MSS))
    assert [len(o.payload) for o in c.dispatch(0)] == [MSS, MSS]
    assert not c.on_icmp_error(errno.EMSGSIZE, ISS - 5, 1280, 0)     # RFC 5927: not in flight
    assert c.on_icmp_error(errno.EMSGSIZE, ISS + 1, 1280, ms(1))
    assert c.snd_mss == 1220
    out = c.dispatch(ms(1))
    assert [(o.seq, len(o.payload)) for o in out][:2] == [(ISS + 1, 1220), (ISS + 1221, 1220)]


def test_icmp_error_is_soft_when_established_and_reported_at_timeout() -> None:
    c = established(TcpConfig(timestamps=False, sack=False, window_scaling=False, max_retries=1))
    c.send(b"x")
    c.dispatch(0)
    c.on_icmp_error(errno.EHOSTUNREACH, ISS + 1, 0, 0)
    assert c.state is TcpState.ESTABLISHED
    run_timers(c, s(100))
    assert c.error == errno.EHOSTUNREACH


def test_window_scaling_shifts_both_ways() -> None:
    c = established(TcpConfig(timestamps=False, sack=False), wscale=7, window=1000)
    assert (c.snd_wscale, c.rcv_wscale) == (7, 5)        # RFC 7323 §2.3: 1 MiB needs 5
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, window=1000), at=0)
    assert c.snd_wnd == 1000 << 7
    c.send(b"x")
    [o] = c.dispatch(0)
    assert o.window == (1024 * 1024) >> 5


def test_receive_window_never_shrinks_and_avoids_silly_updates() -> None:
    c = established(TcpConfig(timestamps=False, sack=False, window_scaling=False, rcv_buf=10_000))
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"x" * 9000), at=0)
    c.poll(ms(40))
    [a] = c.dispatch(ms(40))
    assert a.window == 1000
    c.recv(100)                                       # 1100 free: not worth an update
    assert c.dispatch(ms(41)) == []
    c.recv(5000)
    [u] = c.dispatch(ms(42))
    assert u.window == 6100


def test_fin_wait_2_timer_only_for_an_orphan() -> None:
    c = established()
    c.close(now=0)
    c.dispatch(0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 2), at=ms(1))
    assert c.state is TcpState.FIN_WAIT_2 and c.fin_wait2_at == ms(1) + s(60)


def test_set_keepalive_on_an_idle_connection_arms_at_the_next_dispatch() -> None:
    c = established()
    c.set_keepalive(True, idle=s(5), interval=s(1), count=2)
    c.dispatch(ms(10))
    assert c.poll_at() == ms(10) + s(5)
    c.set_keepalive(False)
    assert c.poll_at() is None


def test_cwnd_restarts_after_an_idle_period() -> None:
    c = established()
    c.cc.cwnd = 40 * MSS
    c.send(b"x" * 100)
    c.dispatch(ms(1))
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 101), at=ms(2))
    c.send(b"y" * (20 * MSS))
    assert len(c.dispatch(ms(3))) == 20              # not idle: the big window is used
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 101 + 20 * MSS), at=ms(4))
    c.send(b"z" * (20 * MSS))
    assert len(c.dispatch(s(5))) == 10               # idle for seconds: back to IW10


def test_send_counts_bytes_of_a_view_with_wider_items() -> None:
    from array import array
    c = established(TcpConfig(timestamps=False, sack=False), window=65535)
    words = array("I", range(1000))                  # 4,000 bytes, 1,000 items
    assert c.send(memoryview(words)) == 4000
    sent = b"".join(bytes(o.payload) for o in c.dispatch(0))   # full segments; Nagle holds the rest
    assert len(sent) == 2880 and len(c.sndbuf) == 4000
    assert sent + c.sndbuf.read(c.sndbuf.seq + 2880, 1120) == words.tobytes()

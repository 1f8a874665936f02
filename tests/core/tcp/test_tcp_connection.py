"""TcpConnection: the transition table row by row, then each segment-arrival step."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from tcp_harness import (
    IRS,
    ISS,
    LOCAL,
    LPORT,
    NO_OPTS,
    REMOTE,
    RPORT,
    concrete,
    established,
    events,
    expect,
    feed,
    make,
    run_timers,
    seg,
    syn_received,
    syn_sent,
)

from stack.core.clock import ms, s
from stack.core.events import Closed, Connected, Readable, SocketError, Writable
from stack.core.stats import Drop, Stats
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.tcb import TcpConfig, TcpState

St = TcpState


# --- one helper per state -------------------------------------------------------

def closed() -> TcpConnection:
    return make()


def syn_received_active() -> TcpConnection:
    c = syn_sent()
    feed(c, seg("S", seq=IRS, mss=1460), at=0)
    c.dispatch(0)
    assert c.state is St.SYN_RECEIVED
    return c


def fin_wait_1() -> TcpConnection:
    c = established()
    c.close()
    expect(c, [seg("FA", seq=ISS + 1, ack=IRS + 1)], at=0)
    return c


def fin_wait_2() -> TcpConnection:
    c = fin_wait_1()
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 2), at=0)
    assert c.state is St.FIN_WAIT_2
    return c


def close_wait() -> TcpConnection:
    c = established()
    feed(c, seg("FA", seq=IRS + 1, ack=ISS + 1), at=0)
    c.dispatch(0)
    return c


def closing() -> TcpConnection:
    c = fin_wait_1()
    feed(c, seg("FA", seq=IRS + 1, ack=ISS + 1), at=0)
    c.dispatch(0)
    assert c.state is St.CLOSING
    return c


def last_ack() -> TcpConnection:
    c = close_wait()
    c.close()
    expect(c, [seg("FA", seq=ISS + 1, ack=IRS + 2)], at=0)
    return c


def time_wait() -> TcpConnection:
    c = fin_wait_2()
    feed(c, seg("FA", seq=IRS + 1, ack=ISS + 2), at=0)
    c.dispatch(0)
    assert c.state is St.TIME_WAIT
    return c


def retries_exhausted(c: TcpConnection) -> None:
    run_timers(c, s(10_000))


def with_data_then_exhausted(c: TcpConnection) -> None:
    c.send(b"x" * 100)
    c.dispatch(0)
    run_timers(c, s(100_000))


Row = tuple[Callable[[], TcpConnection], Callable[[TcpConnection], None], TcpState, list[str]]

# (start, event, next state, flags of what is sent right after) — the docstring table of connection.py
ROWS: dict[str, Row] = {
    "CLOSED open_active": (closed, lambda c: c.open_active(0), St.SYN_SENT, ["S"]),
    "LISTEN rcv SYN": (closed, lambda c: c.open_passive(concrete(seg("S", seq=IRS)), 0), St.SYN_RECEIVED, ["SA"]),
    "SYN-SENT rcv SYN,ACK": (syn_sent, lambda c: feed(c, seg("SA", seq=IRS, ack=ISS + 1), at=0),
                             St.ESTABLISHED, ["A"]),
    "SYN-SENT rcv SYN": (syn_sent, lambda c: feed(c, seg("S", seq=IRS), at=0), St.SYN_RECEIVED, ["SA"]),
    "SYN-SENT rcv RST,ACK": (syn_sent, lambda c: feed(c, seg("RA", seq=0, ack=ISS + 1), at=0), St.CLOSED, []),
    "SYN-SENT rcv bad ACK": (syn_sent, lambda c: feed(c, seg("A", seq=IRS, ack=ISS + 5), at=0), St.SYN_SENT, ["R"]),
    "SYN-SENT close": (syn_sent, lambda c: c.close(), St.CLOSED, []),
    "SYN-SENT retries exhausted": (syn_sent, retries_exhausted, St.CLOSED, []),
    "SYN-RECEIVED rcv ACK": (syn_received, lambda c: feed(c, seg("A", seq=IRS + 1, ack=ISS + 1), at=0),
                             St.ESTABLISHED, []),
    "SYN-RECEIVED rcv RST (passive)": (syn_received, lambda c: feed(c, seg("R", seq=IRS + 1), at=0), St.CLOSED, []),
    "SYN-RECEIVED rcv RST (active)": (syn_received_active, lambda c: feed(c, seg("R", seq=IRS + 1), at=0),
                                      St.CLOSED, []),
    "SYN-RECEIVED rcv dup SYN": (syn_received, lambda c: feed(c, seg("S", seq=IRS), at=0), St.SYN_RECEIVED, ["SA"]),
    "ESTABLISHED close": (established, lambda c: c.close(), St.FIN_WAIT_1, ["FA"]),
    "ESTABLISHED rcv FIN": (established, lambda c: feed(c, seg("FA", seq=IRS + 1, ack=ISS + 1), at=0),
                            St.CLOSE_WAIT, ["A"]),
    "ESTABLISHED rcv RST exact": (established, lambda c: feed(c, seg("R", seq=IRS + 1), at=0), St.CLOSED, []),
    "ESTABLISHED rcv RST in window": (established, lambda c: feed(c, seg("R", seq=IRS + 100), at=0),
                                      St.ESTABLISHED, ["A"]),
    "ESTABLISHED rcv SYN": (established, lambda c: feed(c, seg("S", seq=IRS + 1), at=0), St.ESTABLISHED, ["A"]),
    "ESTABLISHED abort": (established, lambda c: c.abort(), St.CLOSED, ["R"]),
    "ESTABLISHED retries exhausted": (established, with_data_then_exhausted, St.CLOSED, []),
    "FIN-WAIT-1 rcv ACK of FIN": (fin_wait_1, lambda c: feed(c, seg("A", seq=IRS + 1, ack=ISS + 2), at=0),
                                  St.FIN_WAIT_2, []),
    "FIN-WAIT-1 rcv FIN": (fin_wait_1, lambda c: feed(c, seg("FA", seq=IRS + 1, ack=ISS + 1), at=0),
                           St.CLOSING, ["A"]),
    "FIN-WAIT-1 rcv FIN,ACK of FIN": (fin_wait_1, lambda c: feed(c, seg("FA", seq=IRS + 1, ack=ISS + 2), at=0),
                                      St.TIME_WAIT, ["A"]),
    "FIN-WAIT-2 rcv FIN": (fin_wait_2, lambda c: feed(c, seg("FA", seq=IRS + 1, ack=ISS + 2), at=0),
                           St.TIME_WAIT, ["A"]),
    "FIN-WAIT-2 orphan timeout": (fin_wait_2, lambda c: run_timers(c, s(61)), St.CLOSED, []),
    "CLOSE-WAIT close": (close_wait, lambda c: c.close(), St.LAST_ACK, ["FA"]),
    "CLOSING rcv ACK of FIN": (closing, lambda c: feed(c, seg("A", seq=IRS + 2, ack=ISS + 2), at=0),
                               St.TIME_WAIT, []),
    "LAST-ACK rcv ACK of FIN": (last_ack, lambda c: feed(c, seg("A", seq=IRS + 2, ack=ISS + 2), at=0),
                                St.CLOSED, []),
    "TIME-WAIT rcv FIN again": (time_wait, lambda c: feed(c, seg("FA", seq=IRS + 1, ack=ISS + 2), at=s(1)),
                                St.TIME_WAIT, ["A"]),
    "TIME-WAIT rcv RST": (time_wait, lambda c: feed(c, seg("R", seq=IRS + 2), at=0), St.TIME_WAIT, []),
    "TIME-WAIT 2MSL": (time_wait, lambda c: run_timers(c, s(60)), St.CLOSED, []),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_transition(name: str) -> None:
    start, event, end, sends = ROWS[name]
    c = start()
    event(c)
    got = c.dispatch(0)
    assert c.state is end
    assert [g.describe().split()[0] for g in got] == sends


def test_transition_table_in_docstring_matches_rows() -> None:
    import re

    import stack.core.tcp.connection as mod

    assert mod.__doc__ is not None
    lines = [line for line in mod.__doc__.splitlines() if line[:1].isupper() and "  " in line]
    table = [re.split(r"\s{2,}", line.strip()) for line in lines]
    assert len(table) == len(ROWS)
    for (state, _event, nxt, sends), (name, (_s, _e, end, flags)) in zip(table, ROWS.items(), strict=True):
        assert name.startswith(state) and nxt == end.value, name
        assert (sends.split()[0] == "-") == (flags == []), name


# --- opening ---------------------------------------------------------------------

def test_active_open_handshake_and_connected_event() -> None:
    c = make(TcpConfig())
    c.open_active(0)
    [syn] = expect(c, [seg("S", seq=ISS, ack=0, mss=1440, wscale=5, sack_permitted=True)], at=0)
    assert syn.ts is not None and syn.ts[1] == 0
    feed(c, seg("SA", seq=IRS, ack=ISS + 1, window=1000, mss=1400, wscale=7, sack_permitted=True,
                ts=(77, syn.ts[0])), at=ms(10))
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 1, ts=(syn.ts[0] + 10, 77))], at=ms(10))
    assert (c.state, c.snd_mss, c.snd_wscale, c.rcv_wscale, c.sack_ok, c.ts_ok) == (
        St.ESTABLISHED, 1400, 7, 5, True, True)
    assert c.snd_wnd == 1000                         # RFC 7323 §2.2: the SYN's window is not scaled
    assert c.rtt.srtt == ms(10)
    assert [type(e) for e in events(c)] == [Connected]


def test_passive_open_answers_only_offered_options() -> None:
    c = make(TcpConfig())
    c.open_passive(concrete(seg("S", seq=IRS, mss=1460)), 0)
    expect(c, [seg("SA", seq=ISS, ack=IRS + 1, window=65535, mss=1440, wscale=None, sack_permitted=False,
                   ts=None)], at=0)
    assert not (c.ts_ok or c.sack_ok or c.wscale_ok)


def test_default_mss_without_option_is_1220_for_ipv6() -> None:
    c = make()
    c.open_passive(concrete(seg("S", seq=IRS)), 0)
    assert c.snd_mss == 1220                         # RFC 8200 §8.3


def test_syn_ack_retransmitted_with_backoff_then_gives_up_silently() -> None:
    c = syn_received()
    assert c.poll_at() == s(1)
    c.poll(s(1))
    expect(c, [seg("SA", seq=ISS, ack=IRS + 1)], at=s(1))
    assert c.poll_at() == s(3)
    run_timers(c, s(1000))
    assert c.state is St.CLOSED and events(c) == []   # embryonic: nobody to tell


def test_syn_retries_exhausted_reports_etimedout() -> None:
    c = syn_sent()
    times = []
    while (t := c.poll_at()) is not None:
        times.append(t)
        c.poll(t)
        c.dispatch(t)
    assert times == [s(1), s(3), s(7), s(15), s(31), s(63), s(127)]
    assert c.state is St.CLOSED and c.error == errno.ETIMEDOUT
    assert [type(e) for e in events(c)] == [SocketError, Closed]


def test_syn_sent_rst_without_ack_is_ignored() -> None:
    c = syn_sent()
    feed(c, seg("R", seq=IRS), at=0)
    assert c.state is St.SYN_SENT


def test_syn_sent_rst_with_acceptable_ack_is_refused() -> None:
    c = syn_sent()
    feed(c, seg("RA", seq=0, ack=ISS + 1), at=0)
    assert c.error == errno.ECONNREFUSED
    assert isinstance(events(c)[0], SocketError)


def test_simultaneous_open() -> None:
    a = make(iss=ISS)
    b = TcpConnection(local=REMOTE, lport=RPORT, remote=LOCAL, rport=LPORT, zone=0, iss=IRS, mss_local=1440,
                      config=NO_OPTS, stats=Stats(), emit=[].append)
    a.open_active(0)
    b.open_active(0)
    [syn_a], [syn_b] = a.dispatch(0), b.dispatch(0)
    a.on_segment(syn_b, 0)
    b.on_segment(syn_a, 0)
    assert a.state is b.state is St.SYN_RECEIVED
    [sa_a], [sa_b] = a.dispatch(0), b.dispatch(0)
    assert (sa_a.seq, sa_a.ack, sa_b.seq, sa_b.ack) == (ISS, IRS + 1, IRS, ISS + 1)
    a.on_segment(sa_b, 0)
    b.on_segment(sa_a, 0)
    assert a.state is b.state is St.ESTABLISHED
    assert a.dispatch(0) == b.dispatch(0) == []
    assert any(isinstance(e, Connected) for e in events(a))


def exchange(a: TcpConnection, b: TcpConnection, at: int) -> None:
    for _ in range(10):
        out_a, out_b = a.dispatch(at), b.dispatch(at)
        if not out_a and not out_b:
            return
        for x in out_a:
            b.on_segment(x, at)
        for x in out_b:
            a.on_segment(x, at)


def test_simultaneous_close_goes_through_closing() -> None:
    a = established()
    b = TcpConnection(local=REMOTE, lport=RPORT, remote=LOCAL, rport=LPORT, zone=0, iss=IRS, mss_local=1440,
                      config=NO_OPTS, stats=Stats(), emit=[].append)
    b.open_active(0)
    b.dispatch(0)
    b.on_segment(concrete(seg("SA", seq=ISS, ack=IRS + 1)), 0)
    b.dispatch(0)
    a.close()
    b.close()
    fin_a, fin_b = a.dispatch(0), b.dispatch(0)
    for x in fin_a:
        b.on_segment(x, 0)
    for x in fin_b:
        a.on_segment(x, 0)
    assert a.state is b.state is St.CLOSING
    exchange(a, b, 0)
    assert a.state is b.state is St.TIME_WAIT


# --- first: sequence number check -------------------------------------------------

def test_check_sequence_unacceptable_segment_is_acked_and_counted() -> None:
    c = established()
    feed(c, seg("PA", seq=IRS + 1 + 1_200_000, ack=ISS + 1, payload=b"far"), at=0)
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 1)], at=0)
    assert c.stats[Drop.TCP_OUT_OF_WINDOW] == 1 and c.recv_queue == 0


def test_check_sequence_old_duplicate_is_acked_at_once() -> None:
    c = established()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"ab"), at=0)
    expect(c, [], at=0)                              # delayed
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"ab"), at=0)
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 3)], at=0)


def test_check_sequence_trims_overlap_on_the_left() -> None:
    c = established()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"abc"), at=0)
    feed(c, seg("PA", seq=IRS + 2, ack=ISS + 1, payload=b"bcdef"), at=0)
    assert c.recv(100) == b"abcdef" and c.rcv_nxt == IRS + 7


def test_check_sequence_trims_to_the_window_on_the_right() -> None:
    c = established(TcpConfig(timestamps=False, sack=False, window_scaling=False, rcv_buf=1000))
    feed(c, seg("FPA", seq=IRS + 1, ack=ISS + 1, payload=b"x" * 1500), at=0)
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 1001, window=0)], at=0)
    assert c.recv_queue == 1000 and c.state is St.ESTABLISHED   # the FIN was cut off too


def test_zero_window_still_takes_the_ack_of_a_segment_at_rcv_nxt() -> None:
    c = established(TcpConfig(timestamps=False, sack=False, window_scaling=False, rcv_buf=1000))
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"x" * 1000), at=0)
    c.dispatch(0)
    c.send(b"hello")
    c.dispatch(0)
    feed(c, seg("PA", seq=IRS + 1001, ack=ISS + 6, payload=b"more"), at=0)
    assert c.snd_una == ISS + 6 and c.recv_queue == 1000
    expect(c, [seg("A", seq=ISS + 6, ack=IRS + 1001, window=0)], at=0)


def test_paws_drops_old_timestamp_but_lets_a_reordered_pure_ack_through() -> None:
    c = established(TcpConfig(sack=False, window_scaling=False), ts=(1000, 0))
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"new", ts=(2000, 0)), at=0)
    assert c.ts_recent == 2000
    c.dispatch(ms(50))
    feed(c, seg("PA", seq=IRS + 4, ack=ISS + 1, payload=b"old", ts=(1500, 0)), at=ms(50))
    assert c.stats["tcp_paws"] == 1 and c.recv_queue == 3
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 4)], at=ms(50))
    feed(c, seg("A", seq=IRS + 4, ack=ISS + 1, ts=(1500, 0)), at=ms(50))
    assert c.stats["tcp_paws"] == 1


def test_segment_without_timestamp_is_taken_and_counted_once_timestamps_are_on() -> None:
    """RFC 7323 §3.2 (SHOULD drop) against Linux (takes it): taken, and counted."""
    c = established(TcpConfig(sack=False, window_scaling=False), ts=(1000, 0))
    base = c.stats.get("tcp", "in_missing_ts")        # (the harness's handshake ACK has none)
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"abc"), at=0)    # no TSopt
    assert c.recv_queue == 3 and c.stats.get("tcp", "in_missing_ts") == base + 1
    feed(c, seg("A", seq=IRS + 4, ack=ISS + 1), at=ms(1))                # a pure ACK without one
    assert c.stats.get("tcp", "in_missing_ts") == base + 2 and c.state is TcpState.ESTABLISHED
    feed(c, seg("A", seq=IRS + 4, ack=ISS + 1, ts=(1001, 0)), at=ms(2))  # with one: not counted
    feed(c, seg("R", seq=IRS + 4, ack=0), at=ms(3))                      # a RST needs none
    assert c.stats.get("tcp", "in_missing_ts") == base + 2 and c.state is TcpState.CLOSED


def test_segment_without_timestamp_is_not_counted_when_timestamps_are_off() -> None:
    c = established(TcpConfig(sack=False, window_scaling=False, timestamps=False))
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"abc"), at=0)
    assert c.recv_queue == 3 and c.stats.get("tcp", "in_missing_ts") == 0


# --- second: RST; fourth: SYN (RFC 5961) ---------------------------------------------

def test_rst_out_of_window_is_ignored() -> None:
    c = established()
    feed(c, seg("R", seq=IRS + 1 + 1_200_000), at=0)
    assert c.state is St.ESTABLISHED and c.dispatch(0) == []


def test_rst_exact_reports_connection_reset() -> None:
    c = established()
    feed(c, seg("R", seq=IRS + 1), at=0)
    assert c.error == errno.ECONNRESET
    assert [type(e) for e in events(c)] == [SocketError, Closed]
    with pytest.raises(ConnectionResetError):
        c.recv()


def test_challenge_acks_are_rate_limited() -> None:
    c = established()
    sent = 0
    for _ in range(15):
        feed(c, seg("R", seq=IRS + 50), at=ms(100))
        sent += len(c.dispatch(ms(100)))
    assert sent == 10 and c.stats.get("tcp", "challenge_acks_limited") == 5
    feed(c, seg("S", seq=IRS + 50), at=ms(1100))
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 1)], at=ms(1100))
    assert c.state is St.ESTABLISHED


def test_syn_in_passive_syn_received_returns_to_listen() -> None:
    c = syn_received()
    feed(c, seg("S", seq=IRS + 10), at=0)
    assert c.state is St.CLOSED and events(c) == []


# --- fifth: ACK ---------------------------------------------------------------------

def test_ack_of_unsent_data_gets_a_challenge_ack_and_drops_the_segment() -> None:
    c = established()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 100, payload=b"data"), at=0)
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 1)], at=0)
    assert c.recv_queue == 0


def test_ack_too_old_is_challenged() -> None:
    c = established()
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1 - 70_000), at=0)
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 1)], at=0)


def test_syn_received_bad_ack_gets_reset() -> None:
    c = syn_received()
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 77), at=0)
    expect(c, [seg("R", seq=ISS + 77)], at=0)
    assert c.state is St.SYN_RECEIVED


def test_window_update_rule() -> None:
    c = established()
    c.send(b"x" * 10)
    c.dispatch(0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 11, window=500), at=0)
    assert c.snd_wnd == 500 and (c.snd_wl1, c.snd_wl2) == (IRS + 1, ISS + 11)
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 11, window=400, payload=b"y"), at=0)
    assert c.snd_wnd == 400
    feed(c, seg("A", seq=IRS + 2, ack=ISS + 5, window=9000), at=0)     # older ACK: no update
    assert c.snd_wnd == 400


def writables(c: TcpConnection) -> int:
    return sum(isinstance(e, Writable) for e in events(c))


def test_acked_data_frees_buffer_and_emits_writable_when_blocked() -> None:
    c = established(TcpConfig(timestamps=False, sack=False, window_scaling=False, snd_buf=300))
    assert c.send(b"x" * 400) == 300                 # short: arms Writable
    c.dispatch(0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 51), at=0)
    assert writables(c) == 0                         # 50 free: less than a third
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 101), at=0)
    assert writables(c) == 1 and c.send_space == 100
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 301), at=0)
    assert writables(c) == 1                         # not armed again


def test_reading_send_space_as_zero_arms_writable() -> None:
    c = established(TcpConfig(timestamps=False, sack=False, window_scaling=False, snd_buf=300))
    assert c.send(b"x" * 300) == 300                 # exactly full: not short
    c.dispatch(0)
    assert c.send_space == 0
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 301), at=0)
    assert writables(c) == 1


# --- seventh: text --------------------------------------------------------------------

def test_in_order_text_is_delivered_and_readable_emitted() -> None:
    c = established()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"hello"), at=0)
    assert c.recv() == b"hello"
    assert [type(e) for e in events(c)] == [Readable]
    with pytest.raises(BlockingIOError):
        c.recv()


def test_readable_is_edge_triggered_and_recv_rearms_it() -> None:
    c = established()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"ab"), at=0)
    feed(c, seg("PA", seq=IRS + 3, ack=ISS + 1, payload=b"cd"), at=0)
    assert [type(e) for e in events(c)] == [Readable]          # one for the run, not one per segment
    assert c.recv() == b"abcd"
    feed(c, seg("PA", seq=IRS + 5, ack=ISS + 1, payload=b"e"), at=0)
    feed(c, seg("FA", seq=IRS + 6, ack=ISS + 1), at=0)         # the FIN behind unread data: no second event
    assert [type(e) for e in events(c)] == [Readable, Readable]
    assert c.recv() == b"e" and c.recv() == b""


def test_out_of_order_text_is_sacked_then_reassembled() -> None:
    c = established(TcpConfig(timestamps=False, window_scaling=False), sack_permitted=True)
    feed(c, seg("A", seq=IRS + 1001, ack=ISS + 1, payload=b"b" * 1000), at=0)
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 1, sack=((IRS + 1001, IRS + 2001),))], at=0)
    feed(c, seg("A", seq=IRS + 3001, ack=ISS + 1, payload=b"d" * 1000), at=0)
    expect(c, [seg("A", ack=IRS + 1, sack=((IRS + 3001, IRS + 4001), (IRS + 1001, IRS + 2001)))], at=0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, payload=b"a" * 1000), at=0)
    expect(c, [seg("A", ack=IRS + 2001, sack=((IRS + 3001, IRS + 4001),))], at=0)
    feed(c, seg("A", seq=IRS + 2001, ack=ISS + 1, payload=b"c" * 1000), at=0)
    expect(c, [seg("A", ack=IRS + 4001, sack=())], at=0)
    assert c.recv(10_000) == b"a" * 1000 + b"b" * 1000 + b"c" * 1000 + b"d" * 1000


def test_out_of_order_memory_is_bounded_and_counted() -> None:
    c = established(TcpConfig(timestamps=False, sack=False, window_scaling=False, ooo_limit=2000))
    feed(c, seg("A", seq=IRS + 1001, ack=ISS + 1, payload=b"x" * 1500), at=0)
    feed(c, seg("A", seq=IRS + 5001, ack=ISS + 1, payload=b"y" * 1000), at=0)
    assert c.stats[Drop.TCP_OOO_LIMIT] == 1 and c.ooo.size == 1500


def test_delayed_ack_fires_after_40ms() -> None:
    c = established()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"hi"), at=0)
    expect(c, [], at=0)
    assert c.poll_at() == ms(40)
    c.poll(ms(40))
    expect(c, [seg("A", seq=ISS + 1, ack=IRS + 3)], at=ms(40))


def test_every_second_full_segment_is_acked_at_once() -> None:
    c = established()
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, payload=b"x" * 1440), at=0)
    expect(c, [], at=0)
    feed(c, seg("A", seq=IRS + 1441, ack=ISS + 1, payload=b"x" * 1440), at=ms(1))
    expect(c, [seg("A", ack=IRS + 2881)], at=ms(1))
    assert c.delayed_ack_at is None


def test_data_after_close_resets() -> None:
    c = fin_wait_2()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 2, payload=b"late"), at=0)
    expect(c, [seg("R", seq=ISS + 2)], at=0)
    assert c.state is St.CLOSED


def test_close_with_unread_data_aborts() -> None:
    c = established()
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 1, payload=b"unread"), at=0)
    c.close()
    expect(c, [seg("R", seq=ISS + 1)], at=0)
    assert c.state is St.CLOSED


# --- eighth: FIN ---------------------------------------------------------------------

def test_fin_gives_eof_after_data() -> None:
    c = established()
    feed(c, seg("FPA", seq=IRS + 1, ack=ISS + 1, payload=b"bye"), at=0)
    expect(c, [seg("A", ack=IRS + 5)], at=0)
    assert c.recv() == b"bye" and c.recv() == b"" and c.at_eof


def test_out_of_order_fin_waits_for_the_gap() -> None:
    c = established()
    feed(c, seg("FA", seq=IRS + 11, ack=ISS + 1, payload=b"tail"), at=0)
    expect(c, [seg("A", ack=IRS + 1)], at=0)
    assert c.state is St.ESTABLISHED
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 1, payload=b"0123456789"), at=0)
    expect(c, [seg("A", ack=IRS + 16)], at=0)
    assert c.state is St.CLOSE_WAIT and c.recv() == b"0123456789tail"


def test_half_close_keeps_receiving() -> None:
    c = established()
    c.shutdown_write()
    expect(c, [seg("FA", seq=ISS + 1)], at=0)
    feed(c, seg("A", seq=IRS + 1, ack=ISS + 2), at=0)
    assert c.state is St.FIN_WAIT_2 and c.fin_wait2_at is None      # not orphaned
    feed(c, seg("PA", seq=IRS + 1, ack=ISS + 2, payload=b"still"), at=0)
    assert c.recv() == b"still"
    with pytest.raises(BrokenPipeError):
        c.send(b"no")
    feed(c, seg("FA", seq=IRS + 6, ack=ISS + 2), at=0)
    assert c.state is St.TIME_WAIT


def test_time_wait_expires_after_2msl() -> None:
    c = time_wait()
    assert c.poll_at() == s(60)
    c.poll(s(60) - 1)
    assert c.state is St.TIME_WAIT
    c.poll(s(60))
    assert c.state is St.CLOSED
    assert [type(e) for e in events(c)].count(Closed) == 1


def test_time_wait_accepts_newer_syn_only() -> None:
    c = time_wait()
    assert c.accepts_new_syn(concrete(seg("S", seq=IRS + 100)))
    assert not c.accepts_new_syn(concrete(seg("S", seq=IRS - 100)))
    assert not c.accepts_new_syn(concrete(seg("SA", seq=IRS + 100)))

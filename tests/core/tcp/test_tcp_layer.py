"""TcpLayer: demultiplexing, resets, listeners, SYN cookies, connect and route caching."""

from __future__ import annotations

import errno
import random

import pytest
from tcp_harness import FakeIp, concrete, seg, tcp_frame

from stack.core.clock import ms, s
from stack.core.events import Accepted, Closed, Connected, Readable, SocketError
from stack.core.ipservice import RouteError
from stack.core.stats import Drop
from stack.core.tcp.layer import TcpLayer
from stack.core.tcp.seq import COOKIE_MSS
from stack.core.tcp.tcb import TcpConfig, TcpState
from stack.wire.addr import ip4, ip6
from stack.wire.tcp import ACK, FIN, RST, SYN, TcpSegment, build_tcp

US = ip6("2001:db8:1::2")
PEER = ip6("2001:db8:1::1")
US4, PEER4 = ip4("192.0.2.2"), ip4("192.0.2.1")
LL_US, LL_PEER = ip6("fe80::2"), ip6("fe80::1")


def layer(config: TcpConfig | None = None, seed: int = 7) -> tuple[TcpLayer, FakeIp]:
    ip = FakeIp([US, US4, LL_US], random.Random(seed))
    return TcpLayer(ip, config), ip


def inject(la: TcpLayer, s_: TcpSegment, *, src: bytes = PEER, dst: bytes = US, sport: int = 40000,
           dport: int = 7, ifindex: int = 2, at: int = 0) -> None:
    la.handle(tcp_frame(src, dst, build_tcp(src, dst, sport, dport, concrete(s_))), ifindex, at)


def test_bad_checksum_is_dropped_and_counted() -> None:
    la, ip = layer()
    wire = bytearray(build_tcp(PEER, US, 1, 7, concrete(seg("S", seq=1))))
    wire[16] ^= 0xFF
    la.handle(tcp_frame(PEER, US, bytes(wire)), 2, 0)
    assert ip.stats[Drop.BAD_CHECKSUM] == 1 and ip.sent == []


def test_truncated_header_counts_a_parse_reason() -> None:
    la, ip = layer()
    la.handle(tcp_frame(PEER, US, b"\x00" * 12)._replace(csum_ok=True), 2, 0)
    assert ip.stats["parse_tcp_truncated"] == 1


def test_multicast_destination_is_dropped() -> None:
    la, ip = layer()
    inject(la, seg("S", seq=1), dst=ip6("ff02::1"))
    assert ip.stats[Drop.TCP_BAD_SEGMENT] == 1 and ip.sent == []


def test_syn_to_closed_port_gets_rst_ack() -> None:
    la, ip = layer()
    inject(la, seg("S", seq=100, payload=b"ab"))
    [(route, _l4, cached)] = ip.sent
    [rst] = ip.take()
    assert (rst.flags, rst.seq, rst.ack) == (RST | ACK, 0, 103)     # SEG.SEQ + SEG.LEN
    assert ip.stats[Drop.TCP_NO_PORT] == 1 and not cached and route.src == US


def test_ack_to_closed_port_gets_rst_with_its_ack_as_seq() -> None:
    la, ip = layer()
    inject(la, seg("A", seq=100, ack=777))
    [rst] = ip.take()
    assert (rst.flags, rst.seq) == (RST, 777)
    inject(la, seg("R", seq=1))
    assert ip.take() == []                                            # never RST a RST


def handshake(la: TcpLayer, ip: FakeIp, *, sport: int = 40000, at: int = 0) -> TcpSegment:
    inject(la, seg("S", seq=5000, mss=1460, window=65535), sport=sport, at=at)
    [synack] = ip.take()
    assert synack.flags == SYN | ACK and synack.ack == 5001
    inject(la, seg("A", seq=5001, ack=synack.seq + 1), sport=sport, at=at)
    return synack


def test_listen_accept_and_data() -> None:
    la, ip = layer()
    lst = la.listen(None, 7)
    synack = handshake(la, ip)
    assert [type(e) for e in ip.events] == [Accepted] and ip.events[0].sock is lst
    conn = lst.accept()
    assert conn is not None and conn.state is TcpState.ESTABLISHED and lst.accept() is None
    inject(la, seg("PA", seq=5001, ack=synack.seq + 1, payload=b"hello"))
    assert conn.recv() == b"hello" and isinstance(ip.events[-1], Readable)
    conn.send(b"world", now=0)
    [out] = ip.take()
    assert out.payload == b"world" and out.seq == synack.seq + 1
    assert ip.confirmed == 1                                          # the handshake ACK moved SND.UNA


def test_listener_on_specific_address_and_wildcard() -> None:
    la, ip = layer()
    la.listen(US4, 80)
    with pytest.raises(OSError) as exc:
        la.listen(US4, 80)
    assert exc.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError):
        la.listen(ip4("203.0.113.9"), 80)                             # not ours
    inject(la, seg("S", seq=1), src=PEER4, dst=US4, dport=80)
    assert ip.take()[0].flags == SYN | ACK
    inject(la, seg("S", seq=1), dport=80)                             # IPv6: no listener
    assert ip.take()[0].flags == RST | ACK


def test_connect_caches_the_route_and_relooks_it_up_after_a_table_change() -> None:
    la, ip = layer()
    conn = la.connect(PEER, 7, now=0)
    assert [c for _r, _l4, c in ip.sent] == [False]                   # route=lookup
    [syn] = ip.take()
    inject(la, seg("SA", seq=9000, ack=syn.seq + 1), sport=7, dport=conn.lport)
    assert conn.state is TcpState.ESTABLISHED and isinstance(ip.events[0], Connected)
    conn.send(b"a", now=ms(1))
    ip.gen += 1                                                       # routing table changed
    inject(la, seg("A", seq=9001, ack=syn.seq + 2), sport=7, dport=conn.lport, at=ms(2))
    conn.send(b"b", now=ms(3))
    conn.send(b"c", now=ms(3))
    assert [c for _r, _l4, c in ip.sent] == [True, True, False]       # ACK, data a, then lookup again
    inject(la, seg("A", seq=9001, ack=syn.seq + 3), sport=7, dport=conn.lport, at=ms(4))
    assert [c for _r, _l4, c in ip.sent][-1] is True


def test_connect_without_route_raises() -> None:
    la, ip = layer()
    ip.unreachable.add(PEER)
    with pytest.raises(RouteError) as exc:
        la.connect(PEER, 7, now=0)
    assert exc.value.errno == errno.ENETUNREACH


def test_ephemeral_ports_come_from_the_rng_in_range() -> None:
    ports_a = [layer(seed=3)[0].connect(PEER, 7, now=0).lport for _ in range(1)]
    la, _ip = layer(seed=3)
    ports = [la.connect(PEER, 7, now=0).lport for _ in range(20)]
    assert ports[0] == ports_a[0]                                     # deterministic per seed
    assert len(set(ports)) == 20 and all(32768 <= p <= 60999 for p in ports)
    assert ports != sorted(ports)                                     # RFC 6056: not sequential


def test_isns_differ_per_tuple_and_grow_with_time() -> None:
    la, ip = layer()
    a = la.connect(PEER, 7, now=0, sport=1111)
    b = la.connect(PEER, 7, now=0, sport=2222)
    assert a.iss != b.iss
    la2 = TcpLayer(ip)
    la2._secret = la._secret
    c = la2.connect(PEER, 7, now=ms(4), sport=1111)
    assert c.iss == (a.iss + 1000) & 0xFFFFFFFF                       # RFC 6528: 4 µs ticks


def test_link_local_connections_are_keyed_by_zone() -> None:
    la, ip = layer()
    la.listen(None, 7)
    inject(la, seg("S", seq=1), src=LL_PEER, dst=LL_US, ifindex=3)
    inject(la, seg("S", seq=1), src=LL_PEER, dst=LL_US, ifindex=4)
    zones = sorted(k[4] for k in la.connections)
    assert zones == [3, 4]
    routes = [r for r, _l4, _c in ip.sent]
    assert [r.zone for r in routes] == [3, 4]


def test_syn_queue_overflow_uses_cookies_and_still_serves_clients() -> None:
    la, ip = layer()
    lst = la.listen(None, 7, backlog=2)
    for p in (1, 2):
        inject(la, seg("S", seq=100, mss=1460), sport=p)               # half-open, never completed
    ip.take()
    assert len(lst.syn_queue) == 2
    inject(la, seg("S", seq=5000, mss=1460, wscale=7, sack_permitted=True, ts=(42, 0)), sport=3)
    [synack] = ip.take()
    assert len(la.connections) == 2 and ip.stats.get("tcp", "syncookies_sent") == 1
    assert synack.wscale == 5 and synack.sack_permitted and synack.ts is not None
    inject(la, seg("PA", seq=5001, ack=synack.seq + 1, payload=b"hi", ts=(43, synack.ts[0]), window=100),
           sport=3)
    conn = lst.accept()
    assert conn is not None and conn.state is TcpState.ESTABLISHED and conn.recv() == b"hi"
    assert conn.snd_mss == min(1440, max(m for m in COOKIE_MSS if m <= 1460))
    assert (conn.snd_wscale, conn.sack_ok, conn.ts_ok, conn.snd_wnd) == (7, True, True, 100 << 7)


def test_forged_cookie_ack_gets_reset() -> None:
    la, ip = layer()
    la.listen(None, 7)
    inject(la, seg("A", seq=5001, ack=123456))
    [rst] = ip.take()
    assert (rst.flags, rst.seq) == (RST, 123456) and la.connections == {}


def test_full_accept_queue_drops_syns() -> None:
    la, ip = layer()
    lst = la.listen(None, 7, backlog=1)
    handshake(la, ip, sport=1)
    inject(la, seg("S", seq=1), sport=2)
    assert ip.take() == [] and ip.stats[Drop.TCP_BACKLOG_FULL] == 1
    assert lst.accept() is not None


def test_connection_limit_drops_syns_and_refuses_connect_until_one_ends() -> None:
    la, ip = layer()
    la.max_connections = 2
    lst = la.listen(None, 7, backlog=16)
    handshake(la, ip, sport=1)
    handshake(la, ip, sport=2)
    inject(la, seg("S", seq=1), sport=3)
    assert ip.take() == [] and ip.stats[Drop.TCP_CONN_LIMIT] == 1     # as a full backlog: no answer
    with pytest.raises(OSError) as e:
        la.connect(PEER, 80, now=0)
    assert e.value.errno == errno.ENOBUFS and "tcp_max_connections" in str(e.value)
    first = lst.accept()
    assert first is not None
    first.abort(0)
    ip.take()
    inject(la, seg("S", seq=1), sport=3)
    [synack] = ip.take()
    assert synack.flags == SYN | ACK


def test_connection_limit_covers_syn_cookie_acks() -> None:
    la, ip = layer()
    lst = la.listen(None, 7, backlog=1)
    inject(la, seg("S", seq=100, mss=1460), sport=1)                 # fills the SYN queue
    inject(la, seg("S", seq=5000, mss=1460), sport=2)                # answered with a cookie
    cookie = ip.take()[-1]
    la.max_connections = 1
    inject(la, seg("A", seq=5001, ack=cookie.seq + 1), sport=2)
    assert ip.stats[Drop.TCP_CONN_LIMIT] == 1 and lst.accept() is None and len(la.connections) == 1


def test_listener_close_resets_unaccepted_connections() -> None:
    la, ip = layer()
    lst = la.listen(None, 7)
    handshake(la, ip)
    lst.close(now=0)
    [rst] = ip.take()
    assert rst.flags & RST and la.connections == {} and la.listeners == {}


def test_icmp_errors_match_a_connection_and_a_sequence_number() -> None:
    la, ip = layer()
    conn = la.connect(PEER, 7, now=0)
    la.on_icmp_error(US, conn.lport, PEER, 8, 0, conn.iss, errno.ECONNREFUSED, 0)
    assert ip.stats[Drop.ICMP_ERROR_NO_MATCH] == 1
    la.on_icmp_error(US, conn.lport, PEER, 7, 0, conn.iss + 99, errno.ECONNREFUSED, 0)
    assert conn.state is TcpState.SYN_SENT
    la.on_icmp_error(US, conn.lport, PEER, 7, 0, conn.iss, errno.ECONNREFUSED, 0)
    assert conn.state is TcpState.CLOSED and la.connections == {}
    assert [type(e) for e in ip.events] == [SocketError, Closed] and ip.events[0].errno == errno.ECONNREFUSED


def test_time_wait_tuple_is_reused_by_a_newer_syn() -> None:
    la, ip = layer()
    lst = la.listen(None, 7)
    synack = handshake(la, ip)
    conn = lst.accept()
    assert conn is not None
    conn.close(now=0)
    [fin] = ip.take()
    inject(la, seg("FA", seq=5001, ack=fin.seq + 1))
    ip.take()
    assert conn.state is TcpState.TIME_WAIT
    inject(la, seg("S", seq=90000), at=s(1))
    [synack2] = ip.take()
    assert synack2.flags == SYN | ACK and synack2.ack == 90001 and synack2.seq != synack.seq
    assert ip.stats.get("tcp", "time_wait_reused") == 1


def test_api_calls_without_now_are_flushed_by_poll() -> None:
    la, ip = layer()
    lst = la.listen(None, 7)
    handshake(la, ip, at=ms(5))
    conn = lst.accept()
    assert conn is not None
    conn.send(b"later")
    assert ip.sent == [] and la.poll_at() == ms(5)
    la.poll(ms(6))
    assert ip.take()[0].payload == b"later"
    assert la.poll_at() == ms(6) + ms(200)                            # now only the RTO


def test_sockets_listing() -> None:
    la, ip = layer()
    la.listen(None, 7)
    handshake(la, ip)
    rows = la.sockets()
    assert rows[0] == {"proto": "tcp", "state": "LISTEN", "local": "*:7", "remote": "*:*", "recv_q": 1,
                       "send_q": 128}
    assert rows[1]["state"] == "ESTABLISHED" and rows[1]["proto"] == "tcp6"
    assert rows[1]["local"] == "[2001:db8:1::2]:7" and rows[1]["remote"] == "[2001:db8:1::1]:40000"


def test_timers_are_driven_by_layer_poll() -> None:
    la, ip = layer()
    conn = la.connect(PEER, 7, now=0)
    ip.take()
    assert la.poll_at() == s(1)
    la.poll(s(1))
    [syn] = ip.take()
    assert syn.flags == SYN and syn.seq == conn.iss


def test_timer_heap_follows_the_earliest_deadline_of_many_connections() -> None:
    la, ip = layer()
    conns = [la.connect(PEER, 7, now=ms(i), sport=1000 + i) for i in range(3)]   # SYN RTOs at 1 s + i ms
    ip.take()
    assert la.poll_at() == s(1)
    inject(la, seg("SA", seq=1, ack=conns[0].iss + 1), sport=7, dport=1000, at=ms(10))
    conns[0].send(b"x", now=ms(10))                  # RTO now 10 ms + 200 ms, earlier than the SYNs'
    assert len(ip.take()) == 2                       # the ACK of the SYN,ACK and the data
    assert la.poll_at() == ms(210)
    la.poll(ms(210))
    assert [o.seq for o in ip.take()] == [conns[0].iss + 1]                   # the retransmission
    due = [c.poll_at() for c in conns]
    assert due == [ms(610), s(1) + ms(1), s(1) + ms(2)]
    assert la.poll_at() == min(d for d in due if d is not None)
    la.poll(s(2))
    assert len(ip.take()) == 3                       # one data and two SYN retransmissions


def test_time_wait_entries_are_bounded() -> None:
    la, ip = layer(TcpConfig(max_time_wait=1))
    lst = la.listen(None, 7)
    for sport in (1, 2):
        synack = handshake(la, ip, sport=sport)
        conn = lst.accept()
        assert conn is not None
        conn.close(now=0)
        ip.take()
        inject(la, seg("FA", seq=5001, ack=synack.seq + 2), sport=sport)
        ip.take()
    states = sorted(c.state.value for c in la.connections.values())
    assert states == ["TIME-WAIT"] and ip.stats["tcp_time_wait_overflow"] == 1


def test_a_receive_batch_acks_a_run_of_in_order_segments_once_at_its_end() -> None:
    la, ip = layer()
    la.listen(None, 7)
    synack = handshake(la, ip)
    ack = synack.seq + 1
    ip.take()
    # alone, every second full segment is ACKed at once (RFC 5681 §4.2) ...
    inject(la, seg("A", seq=5001, ack=ack, payload=b"a" * 1000))
    inject(la, seg("A", seq=6001, ack=ack, payload=b"b" * 1000))
    [one] = ip.take()
    assert one.ack == 7001
    # ... in a batch, nothing until end_batch, then one ACK for the whole run
    la.begin_batch()
    for i in range(6):
        inject(la, seg("A", seq=7001 + 1000 * i, ack=ack, payload=b"c" * 1000))
    assert ip.take() == []
    la.end_batch(0)
    [run] = ip.take()
    assert run.ack == 13001
    # out of order data is ACKed at once even in a batch (the sender counts duplicates)
    la.begin_batch()
    inject(la, seg("A", seq=15001, ack=ack, payload=b"d" * 1000))
    [dup] = ip.take()
    assert dup.ack == 13001
    la.end_batch(0)
    assert ip.take() == []


def test_fin_ack_waits_for_the_next_poll_so_a_close_on_eof_sends_one_fin_ack() -> None:
    la, ip = layer()
    lst = la.listen(None, 7)
    synack = handshake(la, ip, at=ms(1))
    conn = lst.accept()
    assert conn is not None
    ip.take()
    ack = synack.seq + 1
    inject(la, seg("FA", seq=5001, ack=ack), at=ms(2))
    assert ip.take() == [] and conn.state is TcpState.CLOSE_WAIT
    assert la.poll_at() == ms(2)                                      # due at once
    assert conn.recv(now=ms(2)) == b""
    conn.close(now=ms(2))                                             # the application reacts
    [finack] = ip.take()
    assert finack.flags == FIN | ACK and finack.ack == 5002 and finack.seq == ack
    assert conn.state is TcpState.LAST_ACK
    # nobody closes: the bare ACK leaves at the next poll
    synack2 = handshake(la, ip, at=ms(3), sport=40001)
    conn2 = lst.accept()
    assert conn2 is not None
    ip.take()
    inject(la, seg("FA", seq=5001, ack=synack2.seq + 1), sport=40001, at=ms(4))
    assert ip.take() == []
    la.poll(ms(4))
    [bare] = ip.take()
    assert bare.flags == ACK and bare.ack == 5002 and conn2.state is TcpState.CLOSE_WAIT


def test_window_update_after_a_read_rides_on_the_answer() -> None:
    la, ip = layer()
    lst = la.listen(None, 7)
    inject(la, seg("S", seq=5000, mss=1460, window=65535, wscale=7), at=ms(1))
    [synack] = ip.take()
    assert synack.window == 65535                                     # a SYN's window is unscaled
    inject(la, seg("A", seq=5001, ack=synack.seq + 1), at=ms(1))
    conn = lst.accept()
    assert conn is not None
    inject(la, seg("PA", seq=5001, ack=synack.seq + 1, payload=b"x"), at=ms(2))
    assert ip.take() == []                                            # delayed ACK
    assert conn.recv(now=ms(2)) == b"x"                               # the window can grow: update due
    assert ip.take() == [] and la.poll_at() == ms(2)
    conn.send(b"x", now=ms(2))
    [answer] = ip.take()                                              # one segment: data, ACK, window
    assert answer.payload == b"x" and answer.ack == 5002 and answer.window << conn.rcv_wscale > 65535
    la.poll(ms(2))
    assert ip.take() == []

"""limits.tcp_mem: what every connection's buffers hold together is bounded (TcpMemory),
each buffer keeps a 4 KB floor of its own, and the count returns to zero."""

from __future__ import annotations

import random

from tcp_harness import FakeIp, concrete, seg, tcp_frame

from stack.core.query import q_stats
from stack.core.stack import Limits, Stack
from stack.core.stats import Drop
from stack.core.tcp.buffers import ReassemblyQueue, ReceiveBuffer, SendBuffer, TcpMemory
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.layer import TcpLayer
from stack.core.tcp.tcb import TcpConfig, TcpState
from stack.wire.addr import ip6
from stack.wire.tcp import TcpSegment, build_tcp

US = ip6("2001:db8:1::2")
PEER = ip6("2001:db8:1::1")
FLOOR = TcpMemory.FLOOR
# no options: windows are plain 16-bit fields and every segment is easy to build
CONFIG = TcpConfig(timestamps=False, sack=False, window_scaling=False, rcv_buf=65535, snd_buf=65535)


def inject(la: TcpLayer, s_: TcpSegment, sport: int, at: int = 0) -> None:
    la.handle(tcp_frame(PEER, US, build_tcp(PEER, US, sport, 7, concrete(s_))), 2, at)


class Peer:
    """One kernel-side connection to port 7, driven segment by segment."""

    def __init__(self, la: TcpLayer, ip: FakeIp, sport: int) -> None:
        self.la, self.ip, self.sport = la, ip, sport
        inject(la, seg("S", seq=5000, mss=1460, window=65535), sport)
        [synack] = ip.take()
        self.iss = synack.seq
        self.seq = 5001
        inject(la, seg("A", seq=self.seq, ack=self.iss + 1), sport)
        conn = la.listeners[(None, 7, 0)].accept()
        assert isinstance(conn, TcpConnection) and conn.state is TcpState.ESTABLISHED
        conn.set_nodelay(True)           # what the application sends leaves at once (no Nagle)
        self.conn = conn

    def send(self, n: int, ack: int | None = None) -> None:
        """n bytes at the peer's next sequence number (as if nothing were lost)."""
        inject(self.la, seg("A", seq=self.seq, ack=self.iss + 1 if ack is None else ack, payload=bytes(n)),
               self.sport)
        self.seq += n


def layer(limit: int) -> tuple[TcpLayer, FakeIp]:
    ip = FakeIp([US], random.Random(3))
    la = TcpLayer(ip, CONFIG)
    la.mem.limit = limit
    la.listen(None, 7, backlog=16)
    return la, ip


def test_receive_stops_at_the_pool_and_every_connection_keeps_its_floor() -> None:
    la, ip = layer(20_000)
    a, b = Peer(la, ip, 40000), Peer(la, ip, 40001)
    assert a.conn.rcv_adv - 5001 == b.conn.rcv_adv - 5001 == 20_000     # the pool's room, each
    for _ in range(20):                  # 20,000 bytes the application does not read
        a.send(1000)
    assert a.conn.recv_queue == 20_000 and la.mem.used == 20_000
    a.send(1000)                         # the window never grew past the pool: nothing offered
    assert a.conn.recv_queue == 20_000 and ip.stats[Drop.TCP_MEM_PRESSURE] == 0
    # b was offered 20,000 too, but the pool is spent: it takes its floor, then refuses
    # data inside its advertised window (cut, then refused whole), counted
    for _ in range(6):
        b.send(1000)
    assert b.conn.recv_queue == FLOOR and la.mem.used == 20_000 + FLOOR
    assert ip.stats.get("tcp", "mem_pressure_trims") == 1 and ip.stats[Drop.TCP_MEM_PRESSURE] == 1
    # reading frees the pool: the refused data, sent again, is taken
    while a.conn.readable():
        a.conn.recv(1 << 20)
    assert la.mem.used == FLOOR
    b.seq = 5001 + FLOOR
    b.send(2000)
    assert b.conn.recv_queue == FLOOR + 2000 and la.mem.used == FLOOR + 2000


def test_the_ack_of_a_refused_segment_is_still_taken() -> None:
    la, ip = layer(0)                    # only floors
    a = Peer(la, ip, 40000)
    assert a.conn.send(b"x" * 3000, now=0) == 3000
    ip.take()
    a.send(FLOOR)                         # fills its receive floor
    assert a.conn.recv_queue == FLOOR and a.conn.send_queue == 3000
    a.send(100, ack=a.iss + 1 + 3000)     # refused data, but its ACK frees the send buffer
    assert a.conn.recv_queue == FLOOR and a.conn.send_queue == 0
    assert la.mem.used == FLOOR
    out = ip.take()
    assert out and all(s_.ack == 5001 + FLOOR for s_ in out)     # and it tells the sender where it stands


def test_send_takes_what_the_pool_allows() -> None:
    la, ip = layer(10_000)
    a, b = Peer(la, ip, 40000), Peer(la, ip, 40001)
    assert a.conn.send(bytes(30_000)) == 10_000
    assert b.conn.send_space == FLOOR and b.conn.send(bytes(5000)) == FLOOR
    assert la.mem.used == 10_000 + FLOOR
    la.poll(0)
    ip.take()
    inject(la, seg("A", seq=a.seq, ack=a.iss + 1 + 10_000), a.sport)   # the peer ACKs all of a's
    assert la.mem.used == FLOOR and b.conn.send_space == 10_000 - FLOOR


def test_the_count_returns_to_zero_when_connections_end() -> None:
    la, ip = layer(1 << 20)
    a, b = Peer(la, ip, 40000), Peer(la, ip, 40001)
    a.send(3000)
    b.send(2000)
    a.conn.send(bytes(7000))
    assert la.mem.used == 12_000
    inject(la, seg("R", seq=a.seq), a.sport)              # reset: unread data stays readable
    assert a.conn.state is TcpState.CLOSED and la.mem.used == 2000
    assert len(a.conn.recv(1 << 20)) == 3000 and la.mem.used == 2000
    b.conn.abort(0)
    assert la.mem.used == 0


def test_out_of_order_data_counts_and_is_refused_without_room() -> None:
    la, ip = layer(8000)
    a = Peer(la, ip, 40000)               # offered 8000
    a.seq += 1000                         # a hole: these wait out of order
    a.send(3000)
    assert la.mem.used == 3000 and a.conn.ooo.size == 3000
    a.seq += 1000                         # a second hole, then data the pool has no room for
    a.send(2500)                          # (5000 left): refused inside the offered window
    assert a.conn.ooo.size == 3000 and ip.stats[Drop.TCP_MEM_PRESSURE] == 1
    a.seq = 5001
    a.send(1000)                          # fills the first hole: the queued run moves to the buffer
    assert a.conn.recv_queue == 4000 and a.conn.ooo.size == 0 and la.mem.used == 4000


def test_buffers_charge_one_pool() -> None:
    mem = TcpMemory(limit=10_000)
    snd, rcv, ooo = SendBuffer(1, 8000, mem), ReceiveBuffer(8000, mem), ReassemblyQueue(8000, 8, mem)
    assert snd.append(bytes(6000)) == 6000 and mem.used == 6000
    rcv.append(bytes(3000))
    assert mem.used == 9000 and snd.space() == 1000 and rcv.space() == FLOOR - 3000   # its floor
    assert not ooo.insert(100, bytes(2000)) and ooo.insert(100, bytes(1000)) and mem.used == 10_000
    assert snd.append(bytes(5000)) == 0                     # above its floor already
    assert ReceiveBuffer(8000, mem).space() == FLOOR        # a new buffer still has its floor
    snd.ack(1 + 4000)
    assert mem.used == 6000 and rcv.read(2500) and mem.used == 3500
    ooo.clear()
    snd.clear()
    rcv.detach()
    assert mem.used == 0 and rcv.read(1000) == bytes(500)


def test_limits_reach_the_layer_apply_on_reload_and_show_in_stats() -> None:
    st = Stack(limits=Limits(tcp_mem=123_456, tcp_max_connections=7))
    assert st.tcp is not None and st.tcp.mem.limit == 123_456 and st.tcp.max_connections == 7
    st.set_limits(Limits(tcp_mem=65_536))
    assert st.tcp.mem.limit == 65_536 and st.tcp.max_connections == Limits().tcp_max_connections
    snap = q_stats(st, {}, 0)
    assert snap["tcp"]["mem_limit"] == 65_536 and snap["tcp"]["mem_used"] == 0

#!/usr/bin/env python3
"""Core-only CPU per frame: frames in memory, a ManualClock, no I/O.

    .venv/bin/python scripts/bench_core.py            # table
    .venv/bin/python scripts/bench_core.py -n 20000 -r 5
    .venv/bin/python scripts/bench_core.py --profile echo6   # cProfile of one case

Cases: echo6 (an ICMPv6 echo request to the stack, 56 data bytes, answered),
echo4 (ICMPv4 echo, answered), fwd6 (an ICMPv6 echo request forwarded between two
links in router mode), fwd4 (a UDP/IPv4 datagram forwarded). Each figure is the best
of r runs of n frames of process CPU time (time.process_time) per frame, counting
``Stack.receive`` and ``drain_tx`` as the driver calls them (one frame per batch).

TCP cases (core only: a minimal echo application on core events stands in for
``api``, whose cost ``bench.py`` shows): tcp_cps6 (one whole connection per
iteration, as bench.py cps does it: SYN, ACK, 1 data byte echoed, FIN, last ACK;
µs per connection, the peer's segment building included), tcp_in6 (1428-byte
in-order data segments into an established connection, read by the app, one ACK
per two segments; µs per segment) and tcp_out6 (the app sends, the peer ACKs every
second segment; µs per segment sent). With offloads on the link (a TAP with the
virtio-net header): tcp_in6_gso (64 KB GSO segments marked NEEDS_CSUM, 45 x 1428
bytes, read by the app; µs per GSO segment) and tcp_out6_gso (TSO segments sent,
one ACK per flight; µs per 64 KB of payload). Both run n/20 segments.
The native (cffi) or pure (TAPSTACK_PURE=1) wire path is whichever the import picks.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.core.clock import ManualClock
from stack.core.events import Accepted, Readable
from stack.core.stack import Stack
from stack.wire import frame as wire_frame
from stack.wire.addr import ip4, ip6
from stack.wire.checksum import pseudo_sum6
from stack.wire.ethernet import eth_header
from stack.wire.frame_types import ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTO_ICMPV6, PROTO_UDP
from stack.wire.gso import F_NEEDS_CSUM, GSO_TCPV6, Offload
from stack.wire.icmpv6 import ECHO_REQUEST, build_echo6
from stack.wire.ipv4 import build_ipv4
from stack.wire.ipv6 import build_ipv6
from stack.wire.tcp import ACK, FIN, PSH, SYN, TcpSegment, build_tcp, parse_tcp
from stack.wire.udp import build_udp

R0, R1 = bytes.fromhex("02000000aa00"), bytes.fromhex("02000000aa01")
MAC_B, MAC_C = bytes.fromhex("02000000000b"), bytes.fromhex("02000000000c")
B6, C6, R0_6, R1_6 = ip6("2001:db8:1::1"), ip6("2001:db8:2::1"), ip6("2001:db8:1::2"), ip6("2001:db8:2::2")
B4, C4, R0_4, R1_4 = ip4("192.0.2.1"), ip4("203.0.113.5"), ip4("192.0.2.2"), ip4("203.0.113.1")
T0, T1 = 2, 3


def router(forwarding: bool) -> tuple[Stack, ManualClock]:
    clock = ManualClock()
    st = Stack(rng=random.Random(5), now=clock.now(), forwarding=forwarding)
    st.add_interface("tap0", R0, now=clock.now(), dad_transmits=0)
    st.add_interface("tap1", R1, now=clock.now(), dad_transmits=0)
    st.add_address(T0, R0_6, 64, clock.now())
    st.add_address(T1, R1_6, 64, clock.now())
    st.add_address(T0, R0_4, 24, clock.now())
    st.add_address(T1, R1_4, 24, clock.now())
    for ifx, addr, m in ((T0, B6, MAC_B), (T0, B4, MAC_B), (T1, C6, MAC_C), (T1, C4, MAC_C)):
        st.add_neighbor(ifx, addr, m, clock.now())
    for _ in range(50):
        clock.advance(100_000_000)
        st.poll(clock.now())
    st.drain_tx()
    st.drain_events()
    return st, clock


def echo6(dst: bytes) -> bytes:
    msg = build_echo6(B6, dst, ECHO_REQUEST, 0x1234, 1, bytes(range(56)))
    return eth_header(R0, MAC_B, ETHERTYPE_IPV6) + build_ipv6(B6, dst, PROTO_ICMPV6, msg)


def echo4(dst: bytes) -> bytes:
    body = bytearray(b"\x08\x00\x00\x00\x12\x34\x00\x01" + bytes(range(56)))
    from stack.wire.checksum import internet_checksum
    body[2:4] = internet_checksum(bytes(body)).to_bytes(2, "big")
    return eth_header(R0, MAC_B, ETHERTYPE_IPV4) + build_ipv4(B4, dst, 1, bytes(body))


def udp4(dst: bytes) -> bytes:
    return eth_header(R0, MAC_B, ETHERTYPE_IPV4) + build_ipv4(B4, dst, PROTO_UDP, build_udp(B4, dst, 5000, 6000, bytes(56)))


CASES = {
    "echo6": (False, lambda: echo6(R0_6), 1),
    "echo4": (False, lambda: echo4(R0_4), 1),
    "fwd6": (True, lambda: echo6(C6), 1),
    "fwd4": (True, lambda: udp4(C4), 1),
}


# ---------------------------------------------------------------------------
# TCP: B6 (the "kernel") talks to R0_6 port 7; the app is an echo on core events


def tcp_frame(sport: int, seg: TcpSegment) -> bytes:
    return eth_header(R0, MAC_B, ETHERTYPE_IPV6) + build_ipv6(B6, R0_6, 6, build_tcp(B6, R0_6, sport, 7, seg))


def tcp_parse_out(frames: list[tuple[int, bytes]]) -> list[TcpSegment]:
    return [parse_tcp(f, 54, len(f)) for _, f in frames]


class EchoApp:
    """accept, echo what arrives, close at EOF (what services.tcp_echo does, minus asyncio)."""

    def __init__(self, st: Stack, clock: ManualClock, echo: bool = True) -> None:
        self.st, self.clock, self.echo = st, clock, echo
        self.listener = st.tcp.listen(None, 7, backlog=1024)
        self.conns: list[object] = []       # kept only while bulk cases need them
        self.accepted = 0
        self.keep = False

    def run(self) -> None:
        st = self.st
        now = self.clock.now()
        for ev in st.drain_events():
            if type(ev) is Accepted:
                while (c := self.listener.accept()) is not None:
                    c.set_nodelay(True)
                    self.accepted += 1
                    if self.keep:
                        self.conns.append(c)
            elif type(ev) is Readable:
                c = ev.sock
                while c.readable():
                    data = c.recv(65536, now)
                    if not data:
                        c.close(now)
                        break
                    if self.echo:
                        c.send(data, now)


def tcp_setup(echo: bool = True, gso: bool = False) -> tuple[Stack, ManualClock, EchoApp]:
    """A router stack with the echo app; ``gso``: tap0 takes 64 KB offload frames (TSO)."""
    st, clock = router(False)
    if gso:
        st.set_offload(T0, 65535)
    return st, clock, EchoApp(st, clock, echo)


def _step(st: Stack, app: EchoApp, frame: bytes) -> list[tuple[int, bytes]]:
    st.receive(T0, frame, app.clock.now())
    app.run()
    return st.drain_tx()


def tcp_cps(n: int) -> float:
    st, clock, app = tcp_setup()
    def one(i: int) -> None:
        sport = 32768 + i % 20000
        tv = (i * 7) & 0xFFFFFFFF
        clock.advance(50_000)
        out = _step(st, app, tcp_frame(sport, TcpSegment(1000, 0, SYN, 64800, b"", 0, 1440, 7, True, (), (tv, 0))))
        synack = parse_tcp(out[0][1], 54, len(out[0][1]))
        iss, ecr = synack.seq, synack.ts[0] if synack.ts else 0
        ts = (tv + 1, ecr)
        _step(st, app, tcp_frame(sport, TcpSegment(1001, iss + 1, ACK, 507, b"", 0, None, None, False, (), ts)))
        out = _step(st, app, tcp_frame(sport, TcpSegment(1001, iss + 1, ACK | PSH, 507, b"x", 0, None, None, False, (), ts)))
        _step(st, app, tcp_frame(sport, TcpSegment(1002, iss + 2, ACK | FIN, 507, b"", 0, None, None, False, (), ts)))
        _step(st, app, tcp_frame(sport, TcpSegment(1003, iss + 3, ACK, 507, b"", 0, None, None, False, (), ts)))
        if st.poll_at() is not None and st.poll_at() <= clock.now():
            st.poll(clock.now())
    one(0)
    if st.tcp.connections:
        raise SystemExit(f"tcp_cps6: connection left open: {list(st.tcp.connections.values())}")
    t0 = time.process_time()
    for i in range(1, n + 1):
        one(i)
    dt = (time.process_time() - t0) / n * 1e6
    if st.tcp.connections or app.accepted != n + 1:
        raise SystemExit(f"tcp_cps6: {len(st.tcp.connections)} open, {app.accepted} accepted")
    return dt


def _established(echo: bool, gso: bool = False) -> tuple[Stack, ManualClock, EchoApp, object, int, tuple[int, int]]:
    st, clock, app = tcp_setup(echo, gso)
    app.keep = True
    out = _step(st, app, tcp_frame(40000, TcpSegment(1000, 0, SYN, 64800, b"", 0, 1440, 7, True, (), (1, 0))))
    synack = parse_tcp(out[0][1], 54, len(out[0][1]))
    assert synack.ts is not None
    _step(st, app, tcp_frame(40000, TcpSegment(1001, synack.seq + 1, ACK, 2048, b"", 0, None, None, False, (),
                                               (2, synack.ts[0]))))
    [conn] = app.conns
    return st, clock, app, conn, synack.seq + 1, (2, synack.ts[0])


def tcp_in(n: int) -> float:
    st, clock, app, conn, iss1, ts = _established(echo=False)
    payload = bytes(1428)
    seq = 1001
    frames = []
    for _ in range(2):
        frames.append(tcp_frame(40000, TcpSegment(seq, iss1, ACK, 2048, payload, 0, None, None, False, (), ts)))
        seq += len(payload)
    # The stack sees sequence numbers move on: rebuild per segment (the peer's cost, included)
    t0 = time.process_time()
    seq = 1001
    for i in range(n):
        f = tcp_frame(40000, TcpSegment(seq & 0xFFFFFFFF, iss1, ACK, 2048, payload, 0, None, None, False, (), ts))
        seq += 1428
        if i & 1:
            clock.advance(20_000)
        st.receive(T0, f, clock.now())
        app.run()
        st.drain_tx()
    dt = (time.process_time() - t0) / n * 1e6
    assert conn.rcv_nxt == seq, (conn.rcv_nxt, seq)
    return dt


def tcp_out(n: int) -> float:
    st, clock, app, conn, iss1, ts = _established(echo=False)
    block = bytes(64 * 1024)
    acked = iss1
    sent = 0
    t0 = time.process_time()
    while sent < n:
        if conn.send_space > 0:
            conn.send(block[:conn.send_space], clock.now())
        segs = tcp_parse_out(st.drain_tx())
        app.run()
        sent += len(segs)
        if not segs:
            raise SystemExit("tcp_out6: nothing sent")
        end = max(s.seq + len(s.payload) for s in segs)
        # the peer ACKs every second segment, one ACK per pair (as Linux's delayed ACK)
        for k in range(1, len(segs), 2):
            a = segs[k].seq + len(segs[k].payload)
            clock.advance(10_000)
            st.receive(T0, tcp_frame(40000, TcpSegment(1001, a & 0xFFFFFFFF, ACK, 2048, b"", 0, None, None, False, (), ts)),
                       clock.now())
            acked = a
        if acked != end:
            st.receive(T0, tcp_frame(40000, TcpSegment(1001, end & 0xFFFFFFFF, ACK, 2048, b"", 0, None, None, False, (), ts)),
                       clock.now())
            acked = end
        segs2 = tcp_parse_out(st.drain_tx())
        sent += len(segs2)
        app.run()
        if segs2:
            end2 = max(s.seq + len(s.payload) for s in segs2)
            st.receive(T0, tcp_frame(40000, TcpSegment(1001, end2 & 0xFFFFFFFF, ACK, 2048, b"", 0, None, None, False, (), ts)),
                       clock.now())
    return (time.process_time() - t0) / sent * 1e6


# ---------------------------------------------------------------------------
# TCP with offloads (the TAP's virtio-net header): 64 KB GSO segments in, TSO out

GSO_PAYLOAD = 45 * 1428          # what the kernel coalesces into one GSO frame (< 64 KB)


def tcp_in_gso(n: int) -> float:
    """µs per 64 KB GSO segment in (NEEDS_CSUM: the checksum field holds the
    pseudo-header sum, as the kernel hands it over); the app reads everything."""
    st, clock, _app, conn, iss1, ts = _established(echo=False, gso=True)
    payload = bytes(GSO_PAYLOAD)
    tmpl = bytearray(tcp_frame(40000, TcpSegment(1001, iss1, ACK, 2048, payload, 0, None, None, False, (), ts)))
    l4 = 54
    tmpl[l4 + 16:l4 + 18] = pseudo_sum6(B6, R0_6, len(tmpl) - l4, 6).to_bytes(2, "big")
    off = Offload(F_NEEDS_CSUM, GSO_TCPV6, l4 + 32, 1428, l4, 16)
    seq = 1001
    got = 0
    t0 = time.process_time()
    for i in range(n):
        tmpl[l4 + 4:l4 + 8] = (seq & 0xFFFFFFFF).to_bytes(4, "big")
        f = bytes(tmpl)                         # the fast path's one copy out of its read
        seq += GSO_PAYLOAD
        if i & 1:
            clock.advance(20_000)
        st.receive(T0, f, clock.now(), off)     # as the driver hands a (bytes, Offload) pair
        for _ in st.drain_events():
            pass
        while conn.readable():                   # type: ignore[attr-defined]
            data = conn.recv(1 << 20, clock.now())   # type: ignore[attr-defined]
            if not data:
                break
            got += len(data)
        st.drain_tx()
    dt = (time.process_time() - t0) / n * 1e6
    assert conn.rcv_nxt == seq and got == n * GSO_PAYLOAD, (conn.rcv_nxt, seq, got)  # type: ignore[attr-defined]
    return dt


def tcp_out_gso(n: int) -> float:
    """µs per 64 KB of payload sent as TSO segments; the peer ACKs each flight."""
    st, clock, _app, conn, _iss1, ts = _established(echo=False, gso=True)
    block = bytes(1 << 20)
    sent = 0
    frames = 0
    t0 = time.process_time()
    while sent < n * 65536:
        space = conn.send_space                  # type: ignore[attr-defined]
        if space > 0:
            conn.send(memoryview(block)[:space], clock.now())   # type: ignore[attr-defined]
        out = st.drain_tx()
        if not out:
            raise SystemExit("tcp_out6_gso: nothing sent")
        end = 0
        for _ifx, f in out:
            frames += 1
            s = parse_tcp(f, 54, len(f))
            sent += len(s.payload)
            end = max(end, s.seq + len(s.payload))
        clock.advance(10_000)
        st.receive(T0, tcp_frame(40000, TcpSegment(1001, end & 0xFFFFFFFF, ACK, 1 << 15, b"", 0, None, None, False,
                                                   (), ts)), clock.now())
    dt = (time.process_time() - t0) / (sent / 65536) * 1e6
    if frames * 2 > sent / 65536 * 3:
        raise SystemExit(f"tcp_out6_gso: {frames} frames for {sent} bytes: no TSO?")
    return dt


TCP_CASES = {"tcp_cps6": tcp_cps, "tcp_in6": tcp_in, "tcp_out6": tcp_out,
             "tcp_in6_gso": tcp_in_gso, "tcp_out6_gso": tcp_out_gso}


def run_case(name: str, n: int) -> float:
    if name in TCP_CASES:
        return TCP_CASES[name](n // 10 if name == "tcp_cps6" else n // 20 if name.endswith("_gso") else n)
    fwd, make, want = CASES[name]
    st, clock = router(fwd)
    frame = make()
    now = clock.now()
    receive, drain = st.receive, st.drain_tx
    receive(T0, frame, now)
    out = drain()
    if len(out) != want:
        raise SystemExit(f"{name}: {len(out)} frames out, expected {want}: {st.stats.snapshot() if hasattr(st.stats, 'snapshot') else ''}")
    t0 = time.process_time()
    for _ in range(n):
        receive(T0, frame, now)
        drain()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("-j", action="store_true", help="JSON")
    ap.add_argument("--profile", choices=sorted([*CASES, *TCP_CASES]))
    ap.add_argument("--only", help="comma-separated cases")
    args = ap.parse_args()
    if args.profile:
        cProfile.runctx("run_case(args.profile, args.n)", globals(), {"args": args}, "/tmp/bench_core.prof")
        pstats.Stats("/tmp/bench_core.prof").sort_stats("tottime").print_stats(25)
        return
    names = args.only.split(",") if args.only else [*CASES, *TCP_CASES]
    res = {name: min(run_case(name, args.n) for _ in range(args.r)) for name in names}
    if args.j:
        print(json.dumps({"native": wire_frame.NATIVE if hasattr(wire_frame, "NATIVE") else None, "us_per_frame": res}))
        return
    for name, us in res.items():
        unit = "µs/connection" if name == "tcp_cps6" else "µs/segment" if name in TCP_CASES else "µs/frame"
        print(f"{name:8s} {us:7.2f} {unit}")


if __name__ == "__main__":
    main()

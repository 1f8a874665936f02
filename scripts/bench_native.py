#!/usr/bin/env python3
"""Native (cffi) vs pure-Python wire fast paths: µs per operation and speed-up.

    .venv/bin/python scripts/bench_native.py            # table
    .venv/bin/python scripts/bench_native.py -j         # JSON
    .venv/bin/python scripts/bench_native.py -t 0.5     # seconds per measurement

Cases: internet checksum of 64/576/1500/9000 random bytes, the IPv6 pseudo-header
sum, and parse_frame on a TCP/IPv6 data segment (1440 bytes), a UDP/IPv4 datagram
and an ICMPv6 echo request; then frames/s of the native flow fast path (tsk_fp_rx)
forwarding between two socketpairs. Each timing is the best of 5 runs of an auto-sized
loop (time.perf_counter). Targets (GUIDE.md §6): C checksum of 1500 B at least
10x faster than pure; native parse faster than pure parse.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack.wire import _pure, checksum, frame
from stack.wire.addr import ip4, ip6
from stack.wire.ethernet import eth_header
from stack.wire.frame_types import ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from stack.wire.icmpv6 import ECHO_REQUEST, build_echo6
from stack.wire.ipv4 import build_ipv4
from stack.wire.ipv6 import build_ipv6
from stack.wire.udp import build_udp

MAC_A, MAC_B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")


def tcp6_frame(rng: random.Random) -> bytes:
    src, dst = ip6("2001:db8:1::1"), ip6("2001:db8:1::2")
    seg = bytearray(b"\x9c\x40\x00\x07" + bytes(8) + b"\x50\x10\xff\xff" + bytes(4)) + rng.randbytes(1440)
    csum = _pure.internet_checksum(seg, _pure.pseudo_sum6(src, dst, len(seg), PROTO_TCP))
    seg[16:18] = csum.to_bytes(2, "big")
    return eth_header(MAC_A, MAC_B, ETHERTYPE_IPV6) + build_ipv6(src, dst, PROTO_TCP, bytes(seg))


def udp4_frame(rng: random.Random) -> bytes:
    src, dst = ip4("192.0.2.1"), ip4("192.0.2.2")
    dgram = build_udp(src, dst, 5353, 53, rng.randbytes(512))
    return eth_header(MAC_A, MAC_B, ETHERTYPE_IPV4) + build_ipv4(src, dst, PROTO_UDP, dgram)


def echo6_frame(rng: random.Random) -> bytes:
    src, dst = ip6("2001:db8:1::1"), ip6("2001:db8:1::2")
    msg = build_echo6(src, dst, ECHO_REQUEST, 0x1234, 1, rng.randbytes(56))
    return eth_header(MAC_A, MAC_B, ETHERTYPE_IPV6) + build_ipv6(src, dst, PROTO_ICMPV6, msg)


def per_op_us(fn: Callable[[], object], budget: float) -> float:
    """Best-of-5 µs per call, each run sized to about budget/5 seconds."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > 0.02:
            break
        n *= 4
    loops = max(1, int(n * (budget / 5) / dt))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - t0) / loops)
    return best * 1e6


def cases(rng: random.Random) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    out: list[tuple[str, Callable[[], object], Callable[[], object]]] = []
    for n in (64, 576, 1500, 9000):
        data = rng.randbytes(n)
        out.append((f"checksum {n} B", lambda d=data: checksum.internet_checksum(d),  # type: ignore[misc]
                    lambda d=data: _pure.internet_checksum(d)))  # type: ignore[misc]
    src, dst = ip6("2001:db8:1::1"), ip6("2001:db8:1::2")
    out.append(("pseudo_sum6", lambda: checksum.pseudo_sum6(src, dst, 1460, PROTO_TCP),
                lambda: _pure.pseudo_sum6(src, dst, 1460, PROTO_TCP)))
    for label, buf in (("parse TCP/IPv6 1494 B", tcp6_frame(rng)), ("parse UDP/IPv4 562 B", udp4_frame(rng)),
                       ("parse ICMPv6 echo 118 B", echo6_frame(rng))):
        assert frame.parse_frame(buf) == frame.parse_frame_pure(buf) and frame.parse_frame(buf).csum_ok
        out.append((label, lambda b=buf: frame.parse_frame(b),  # type: ignore[misc]
                    lambda b=buf: frame.parse_frame_pure(b)))  # type: ignore[misc]
    return out


def fastpath_fps(seconds: float, size: int = 100) -> tuple[float, float]:
    """Frames/s of tsk_fp_rx forwarding an IPv6 flow between two socketpairs (time
    inside tsk_fp_rx only: one read + checks + one writev per frame), and of a bare
    Python relay doing only os.read + os.writev per frame, for scale."""
    import os
    import socket

    from stack.link import fastpath

    mac_in, mac_out = bytes.fromhex("020000000101"), bytes.fromhex("020000000201")
    src, dst = ip6("2001:db8:1::10"), ip6("2001:db8:2::20")
    frame = eth_header(mac_in, MAC_B, ETHERTYPE_IPV6) + build_ipv6(
        src, dst, PROTO_UDP, build_udp(src, dst, 1000, 2000, bytes(size)))
    eth_out = eth_header(MAC_A, mac_out, ETHERTYPE_IPV6)
    socks = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(2)]
    (a, a_peer), (b, b_peer) = socks
    for s in (a, a_peer, b, b_peer):
        s.setblocking(False)
    try:
        _, lib = fastpath._lib()
        fp = fastpath.FastPath(16)
        table = fp._table

        class Fd:   # add_link only wants the fd and the offload mode of a TapLink
            def __init__(self, sock: socket.socket) -> None:
                self.offload = False
                self._fd = sock.fileno()

            def fileno(self) -> int:
                return self._fd

        assert fp.add_link(2, Fd(a)) and fp.add_link(3, Fd(b))  # type: ignore[arg-type]
        fp.install(family=6, action=fastpath.FORWARD, in_ifindex=2, out_ifindex=3, src=src, dst=dst,
                   eth=eth_out, in_mac=mac_in, mtu=1500, hop_limit=0)
        batch, buf, rx = 64, fp._buf, lib.tsk_fp_rx
        fd_a, fd_b = a.fileno(), b.fileno()

        def run(one_batch: Callable[[], None]) -> float:
            done, spent = 0, 0.0
            while spent < seconds:
                for _ in range(batch):
                    a_peer.send(frame)
                t0 = time.perf_counter()
                one_batch()
                spent += time.perf_counter() - t0
                done += batch
                for _ in range(batch):
                    b_peer.recv(2048)
            return done / spent

        def native() -> None:
            assert rx(table, fd_a, 0, 0, buf, fastpath.BUF_SIZE, batch) == -1

        def python() -> None:
            for _ in range(batch):
                f = os.read(fd_a, 65562)
                os.writev(fd_b, (eth_out, f[14:]))

        return run(native), run(python)
    finally:
        for pair in socks:
            for s in pair:
                s.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-j", "--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("-t", "--time", type=float, default=0.5, help="seconds per measurement (default 0.5)")
    args = ap.parse_args(argv)
    if checksum.BACKEND != "native":
        sys.stderr.write("stack._native is not available (build it: python native/build_native.py, "
                         "and unset TAPSTACK_PURE); only pure numbers would be meaningful\n")
        return 1
    rows = []
    for label, native, pure in cases(random.Random(1)):
        n_us, p_us = per_op_us(native, args.time), per_op_us(pure, args.time)
        rows.append({"case": label, "native_us": round(n_us, 3), "pure_us": round(p_us, 3),
                     "speedup": round(p_us / n_us, 2)})
    fp_native, fp_python = fastpath_fps(args.time)
    fast = {"fastpath_fwd6_fps": round(fp_native), "python_relay_fps": round(fp_python)}
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "rows": rows, **fast}, indent=2))
        return 0
    print(f"{'case':<26}{'native µs':>11}{'pure µs':>11}{'speed-up':>10}")
    for r in rows:
        print(f"{r['case']:<26}{r['native_us']:>11.3f}{r['pure_us']:>11.3f}{r['speedup']:>9.1f}x")
    print(f"tsk_fp_rx forwarding IPv6 between socketpairs: {fp_native:,.0f} frames/s "
          f"(bare Python read+writev relay: {fp_python:,.0f} frames/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

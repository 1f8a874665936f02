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
from stack.core.stack import Stack
from stack.wire import frame as wire_frame
from stack.wire.addr import ip4, ip6
from stack.wire.ethernet import eth_header
from stack.wire.frame_types import ETHERTYPE_IPV4, ETHERTYPE_IPV6, PROTO_ICMPV6, PROTO_UDP
from stack.wire.icmpv6 import ECHO_REQUEST, build_echo6
from stack.wire.ipv4 import build_ipv4
from stack.wire.ipv6 import build_ipv6
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


def run_case(name: str, n: int) -> float:
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
    ap.add_argument("--profile", choices=sorted(CASES))
    args = ap.parse_args()
    if args.profile:
        cProfile.runctx("run_case(args.profile, args.n)", globals(), {"args": args}, "/tmp/bench_core.prof")
        pstats.Stats("/tmp/bench_core.prof").sort_stats("tottime").print_stats(25)
        return
    res = {name: min(run_case(name, args.n) for _ in range(args.r)) for name in CASES}
    if args.j:
        print(json.dumps({"native": wire_frame.NATIVE if hasattr(wire_frame, "NATIVE") else None, "us_per_frame": res}))
        return
    for name, us in res.items():
        print(f"{name:6s} {us:6.2f} µs/frame")


if __name__ == "__main__":
    main()

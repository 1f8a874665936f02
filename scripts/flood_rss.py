#!/usr/bin/env python3
"""Memory flatness under floods: RSS before, after warm-up and at the end, per flood kind.

    .venv/bin/python scripts/flood_rss.py                 # every kind, 10 s each
    .venv/bin/python scripts/flood_rss.py -t 30 ns_sources frag6
    .venv/bin/python scripts/flood_rss.py --json          # one JSON object per kind
    .venv/bin/python scripts/flood_rss.py --list

Each kind runs in its own child process (so one kind's freed memory does not hide
another's growth) against a core ``Stack`` with the default ``Limits`` (the real
bounds), fed frames through ``Stack.receive`` (or sends through the UDP API) as
fast as it takes them. Virtual time advances 1 ms per frame and ``poll`` runs
every 1000 frames, so timers (reassembly timeout, NUD, lifetimes) fire as they
would on a wire. Printed per kind: frames and frames/s, RSS (VmRSS from
/proc/self/status) before the flood, after the first ``--warmup`` seconds (the
tables are full by then) and at the end, peak RSS (getrusage), and the size of
the table the flood aims at. Flat means end - warm is about zero while the
frame count keeps growing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stack.core.clock import ManualClock, ms  # noqa: E402
from stack.core.stack import Stack  # noqa: E402
from stack.wire.addr import ip4, ip6, multicast_mac, solicited_node  # noqa: E402
from stack.wire.arp import build_arp_request  # noqa: E402
from stack.wire.checksum import internet_checksum  # noqa: E402
from stack.wire.ethernet import eth_header  # noqa: E402
from stack.wire.icmpv6 import build_icmpv6  # noqa: E402
from stack.wire.ipv4 import build_ipv4  # noqa: E402
from stack.wire.ipv6 import build_ipv6  # noqa: E402
from stack.wire.ndp import PrefixInfo, build_ns, build_ra, build_redirect  # noqa: E402
from stack.wire.tcp import SYN, TcpSegment, build_tcp  # noqa: E402
from stack.wire.udp import build_udp  # noqa: E402

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")
MAC_R = bytes.fromhex("020000000001")
GA_A, GA_B = ip6("2001:db8:1::2"), ip6("2001:db8:1::1")
V4_A, V4_B = ip4("192.0.2.2"), ip4("192.0.2.1")
LL_R = ip6("fe80::1")
IF = 2
STEP = ms(1)            # virtual time per frame
POLL_EVERY = 1000


def make_stack() -> tuple[Stack, ManualClock]:
    clock = ManualClock()
    st = Stack(rng=random.Random(1), now=clock.now())
    st.add_interface("tap0", MAC_A, 1500, now=clock.now(), dad_transmits=0, accept_ra=True)
    st.add_address(IF, GA_A, 64, clock.now())
    st.add_address(IF, V4_A, 24, clock.now())
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, V4_B, MAC_B, clock.now())
    st.poll(clock.now())
    st.drain_tx()
    return st, clock


def _e6(packet: bytes, dst_mac: bytes = MAC_A, src_mac: bytes = MAC_B) -> bytes:
    return eth_header(dst_mac, src_mac, 0x86DD) + packet


def _e4(packet: bytes, dst_mac: bytes = MAC_A, src_mac: bytes = MAC_B) -> bytes:
    return eth_header(dst_mac, src_mac, 0x0800) + packet


def _addr(i: int, prefix: str = "2001:db8:1::") -> bytes:
    base = bytearray(ip6(prefix))
    base[10:16] = (i & 0xFFFFFFFFFFFF).to_bytes(6, "big")
    return bytes(base)


# -- the floods: each yields frames forever (or acts on the stack and yields b"") ------------

def ns_sources(st: Stack) -> Iterator[bytes]:
    """NS for our link-local from ever new link-local sources: neighbor cache churn."""
    target = st.interfaces[IF].addrs6[0].addr
    snm = solicited_node(target)
    i = 0
    while True:
        i += 1
        src, mac = _addr(i, "fe80::"), b"\x02" + i.to_bytes(5, "big")
        yield _e6(build_ipv6(src, snm, 58, build_ns(src, snm, target, slla=mac), 255), multicast_mac(snm), mac)


def onlink_destinations(st: Stack) -> Iterator[bytes]:
    """Our own datagrams to ever new on-link addresses: INCOMPLETE entries and their queues."""
    ep = st.udp.bind(None, 4000)
    i = 0
    while True:
        i += 1
        ep.sendto(b"flood", _addr(i + 0x10000), 9, 0, 0)
        yield b""


def frag6(st: Stack) -> Iterator[bytes]:
    """First fragments that are never completed: reassembly held at its limit."""
    payload = bytes(1232)
    i = 0
    while True:
        i += 1
        frag = bytes((17, 0, 0, 1)) + i.to_bytes(4, "big")          # offset 0, M=1
        yield _e6(build_ipv6(GA_B, GA_A, 44, frag + payload))


def frag6_tiny(st: Stack) -> Iterator[bytes]:
    """Tiny first fragments (8 bytes of UDP header) never completed: many small datagrams."""
    i = 0
    while True:
        i += 1
        frag = bytes((17, 0, 0, 1)) + i.to_bytes(4, "big")
        yield _e6(build_ipv6(GA_B, GA_A, 44, frag + bytes((0, 1, 0, 9, 0x10, 0, 0, 0))))


def frag4(st: Stack) -> Iterator[bytes]:
    i = 0
    while True:
        i += 1
        pkt = bytearray(build_ipv4(V4_B, V4_A, 17, bytes(1480), ident=i & 0xFFFF))
        pkt[6] |= 0x20                                             # MF
        pkt[10:12] = b"\0\0"
        pkt[10:12] = internet_checksum(bytes(pkt[:20])).to_bytes(2, "big")
        yield _e4(bytes(pkt))


def udp_closed_port(st: Stack) -> Iterator[bytes]:
    """Datagrams to a closed port: Port Unreachable within the ICMP error budget."""
    i = 0
    while True:
        i += 1
        yield _e6(build_ipv6(GA_B, GA_A, 17, build_udp(GA_B, GA_A, 1024 + i % 60000, 4444, b"x")))


def tcp_syn(st: Stack) -> Iterator[bytes]:
    """SYNs from ever new ports and sources to a listener with the default backlog."""
    if st.tcp is None:
        return
    st.tcp.listen(None, 80)
    i = 0
    while True:
        i += 1
        seg = TcpSegment(seq=i, ack=0, flags=SYN, window=65535, mss=1460)
        yield _e6(build_ipv6(GA_B, GA_A, 6, build_tcp(GA_B, GA_A, 1024 + i % 60000, 80, seg)))


def arp_senders(st: Stack) -> Iterator[bytes]:
    """ARP requests for our address from ever new senders: the ARP cache."""
    i = 0
    while True:
        i += 1
        mac = b"\x02\x01" + i.to_bytes(4, "big")
        spa = (0x0A000000 + i % 0xFFFFFF).to_bytes(4, "big")
        yield eth_header(b"\xff" * 6, mac, 0x0806) + build_arp_request(mac, spa, V4_A)


def ra_routers(st: Stack) -> Iterator[bytes]:
    """RAs from ever new routers, each with a new prefix: router, prefix and SLAAC lists."""
    i = 0
    while True:
        i += 1
        src, mac = _addr(i, "fe80::"), b"\x02\x02" + i.to_bytes(4, "big")
        prefix = ip6("2001:db8::")[:4] + i.to_bytes(4, "big") + bytes(8)     # a new /64 each time
        pio = PrefixInfo(prefix, 64, True, True, 86400, 14400)
        msg = build_ra(src, ip6("ff02::1"), 64, 1800, 0, 0, mac, [pio], None)
        yield _e6(build_ipv6(src, ip6("ff02::1"), 58, msg, 255), bytes.fromhex("333300000001"), mac)


def redirects(st: Stack) -> Iterator[bytes]:
    """Redirects from our router for ever new destinations: the redirect table."""
    ra = build_ra(LL_R, ip6("ff02::1"), 64, 1800, 0, 0, MAC_R, [], None)
    ra_frame = _e6(build_ipv6(LL_R, ip6("ff02::1"), 58, ra, 255), bytes.fromhex("333300000001"), MAC_R)
    st.receive(IF, ra_frame, 0)
    ll_a = st.interfaces[IF].addrs6[0].addr
    i = 0
    while True:
        i += 1
        if i % 100_000 == 0:
            # the router keeps advertising: at 1 ms of virtual time per frame its 1800 s
            # lifetime would run out within a minute's flood, and with it every redirect
            # (RFC 4861 §8.1: only the current first hop may redirect)
            yield ra_frame
        msg = build_redirect(LL_R, ll_a, ip6("fe80::2"), _addr(i, "2001:db8:99::"))
        yield _e6(build_ipv6(LL_R, ll_a, 58, msg, 255), MAC_A, MAC_R)


def packet_too_big(st: Stack) -> Iterator[bytes]:
    """Packet Too Big quoting our packets to ever new destinations: the PMTU cache."""
    i = 0
    while True:
        i += 1
        dst = _addr(i, "2001:db8:77::")
        quoted = build_ipv6(GA_A, dst, 17, build_udp(GA_A, dst, 1, 2, bytes(32)))
        msg = build_icmpv6(GA_B, GA_A, 2, 0, (1300).to_bytes(4, "big") + quoted)
        yield _e6(build_ipv6(GA_B, GA_A, 58, msg))


KINDS: dict[str, tuple[Callable[[Stack], Iterator[bytes]], Callable[[Stack], int]]] = {
    "ns_sources": (ns_sources, lambda st: len(st.nd.entries)),
    "onlink_destinations": (onlink_destinations, lambda st: len(st.nd.entries)),
    "frag6": (frag6, lambda st: st.ip6.reasm.held),
    "frag6_tiny": (frag6_tiny, lambda st: len(st.ip6.reasm.pending)),
    "frag4": (frag4, lambda st: st.ip4.reasm.held),
    "udp_closed_port": (udp_closed_port, lambda st: st.stats.get("icmp6", "out_errors_1_4")),
    "tcp_syn": (tcp_syn, lambda st: sum(len(li.syn_queue) for li in st.tcp.listeners.values())),
    "arp_senders": (arp_senders, lambda st: len(st.arp.entries)),
    "ra_routers": (ra_routers, lambda st: len(st.ndp.rdisc.routers) + len(st.ndp.rdisc.prefixes)),
    "redirects": (redirects, lambda st: len(st.ndp.rdisc.redirects)),
    "packet_too_big": (packet_too_big, lambda st: len(st.pmtu)),
}


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_kind(name: str, seconds: float, warmup: float) -> dict[str, object]:
    gen_fn, table = KINDS[name]
    st, clock = make_stack()
    virtual_start = clock.now()
    gc.collect()
    rss_start = rss_kib()
    frames = 0
    warm = None
    gen = gen_fn(st)
    t0 = time.monotonic()
    deadline = t0 + seconds
    while True:
        for frame in gen:
            clock.advance(STEP)
            if frame:
                st.receive(IF, frame, clock.now())
            frames += 1
            if frames % POLL_EVERY == 0:
                st.poll(clock.now())
                st.drain_tx()
                st.drain_events()
                now = time.monotonic()
                if warm is None and now - t0 >= warmup:
                    gc.collect()
                    warm = (rss_kib(), frames)
                if now >= deadline:
                    break
        break
    elapsed = time.monotonic() - t0
    gc.collect()
    rss_end = rss_kib()
    warm_rss, warm_frames = warm if warm is not None else (rss_end, frames)
    return {
        "kind": name, "frames": frames, "seconds": round(elapsed, 1), "fps": int(frames / elapsed),
        "virtual_s": (clock.now() - virtual_start) // 1_000_000_000, "rss_start_kib": rss_start, "rss_warm_kib": warm_rss,
        "rss_end_kib": rss_end, "growth_after_warmup_kib": rss_end - warm_rss,
        "frames_after_warmup": frames - warm_frames,
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "table": table(st),
        "drops": sum(st.stats.drops.values()),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kinds", nargs="*", help="flood kinds (default: all)")
    p.add_argument("-t", "--seconds", type=float, default=10.0, help="seconds per kind (default 10)")
    p.add_argument("--warmup", type=float, default=None, help="seconds before the warm RSS (default t/3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--list", action="store_true", help="list the kinds")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.list:
        for name, (fn, _t) in KINDS.items():
            print(f"{name:22} {(fn.__doc__ or '').strip()}")
        return 0
    kinds = args.kinds or list(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        p.error(f"unknown kind(s): {', '.join(unknown)} (see --list)")
    warmup = args.warmup if args.warmup is not None else args.seconds / 3
    if args.child:
        print(json.dumps(run_kind(kinds[0], args.seconds, warmup)))
        return 0
    if not args.json:
        print(f"{'kind':20} {'frames':>9} {'fps':>7} {'virt s':>7} {'RSS start':>10} {'warm':>9} "
              f"{'end':>9} {'end-warm':>9} {'peak':>9} {'table':>8}   (KiB)")
    for kind in kinds:
        out = subprocess.run([sys.executable, __file__, "--child", "-t", str(args.seconds), "--warmup",
                              str(warmup), kind], capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            print(f"{kind}: failed\n{out.stderr}", file=sys.stderr)
            return 1
        r = json.loads(out.stdout)
        if args.json:
            print(json.dumps(r))
        else:
            print(f"{r['kind']:20} {r['frames']:>9} {r['fps']:>7} {r['virtual_s']:>7} {r['rss_start_kib']:>10} "
                  f"{r['rss_warm_kib']:>9} {r['rss_end_kib']:>9} {r['growth_after_warmup_kib']:>+9} "
                  f"{r['peak_kib']:>9} {r['table']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

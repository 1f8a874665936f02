"""Hostile input from the kernel side of a TAP, against the real daemon (issue 9).

Frames are built with scapy here and sent with ``sendp`` on an L2 socket inside the
peer namespace (``tests.integration.l2inject``), which also sniffs what the stack sends
back. After each case the named drop counter of ``tapstack -j stats`` must have risen;
at the end the daemon must still be alive and answer ``ping -6``.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stack.control.client import ControlClient
from tests.integration.conftest import ONE_TAP, STACK_LL, STACK_MAC, Factory, StackProcess, wait_for
from tests.integration.l2inject import Injector

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("nc") is None, reason="netcat-openbsd not installed"),
]

WITH_ECHO = ONE_TAP + """
[services]
echo = 7
"""

K6, S6 = "2001:db8:1::1", "2001:db8:1::2"      # kernel side, stack
K4, S4 = "192.0.2.1", "192.0.2.2"
DEADLINE = 10.0


@pytest.fixture
def served(tapstack_factory: Factory) -> StackProcess:
    return tapstack_factory(WITH_ECHO)


@pytest.fixture
def injector(served: StackProcess) -> Iterator[Injector]:
    with Injector(served["ns0"], served["tap0"]) as inj:
        yield inj


def kernel_mac(sp: StackProcess) -> str:
    return sp.run_in_ns(["cat", f"/sys/class/net/{sp['tap0']}/address"]).stdout.strip()


def stats(sp: StackProcess) -> dict[str, Any]:
    data: dict[str, Any] = ControlClient(sp.name).request("stats")
    return data


def assert_alive(sp: StackProcess) -> None:
    assert sp.proc.poll() is None, f"daemon died:\n{sp.stderr()}"
    # three tries: right after a flood the first request may still queue behind it
    r = sp.run_in_ns(["ping", "-6", "-c", "3", "-i", "0.3", "-W", "3", S6], check=False)
    assert " 0 received" not in r.stdout and r.returncode == 0, (r.stdout, stats(sp)["drops"])


# -- the malformed corpus -------------------------------------------------------------------


def corpus(kmac: str) -> list[tuple[str, list[bytes], dict[str, int]]]:
    """(name, frames, {drop counter: at least this much more}) for every case."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import (
        ICMPv6DestUnreach,
        ICMPv6EchoRequest,
        ICMPv6ND_NS,
        ICMPv6ND_RA,
        ICMPv6ND_Redirect,
        ICMPv6NDOptSrcLLAddr,
        ICMPv6PacketTooBig,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        fragment6,
    )
    from scapy.layers.l2 import Ether
    from scapy.packet import Packet, Raw

    eth = Ether(src=kmac, dst=STACK_MAC)
    allnodes = Ether(src=kmac, dst="33:33:00:00:00:01")

    def ip6(plen: int | None = None, **kw: Any) -> Packet:
        return eth / IPv6(src=K6, dst=S6, plen=plen, **kw)

    def ip4(**kw: Any) -> Packet:
        return eth / IP(src=K4, dst=S4, **kw)

    def cut6(l4: Packet, n: int, nh: int) -> bytes:
        """An IPv6 packet whose payload length tells the truth about a cut L4 header."""
        return bytes(ip6(plen=n, nh=nh) / Raw(bytes(l4)[:n]))

    def l4(pkt: Packet) -> Packet:
        """Let scapy compute the checksum in an IPv6 context, then take the L4 part."""
        full = IPv6(src=K6, dst=S6) / pkt
        return IPv6(bytes(full)).payload

    def b(*pkts: Packet) -> list[bytes]:
        return [bytes(p) for p in pkts]

    rng = random.Random(9)
    chain = IPv6ExtHdrDestOpt()
    for _ in range(29):
        chain = chain / IPv6ExtHdrDestOpt()
    echo = ICMPv6EchoRequest(id=1, seq=1, data=b"A" * 40)
    frag_ns = ip6(hlim=255) / IPv6ExtHdrFragment(id=5) / ICMPv6ND_NS(tgt=S6) / ICMPv6NDOptSrcLLAddr(lladdr=kmac)
    frag_ns_parts = [bytes(f) for f in fragment6(frag_ns / Raw(b"\x00" * 1300), 1000)]  # type: ignore[no-untyped-call]
    return [
        # AF_PACKET pads a frame shorter than an Ethernet header to 14 bytes: ethertype 0
        ("ethernet cut to 10 bytes", [bytes(eth / IPv6())[:10]], {"ethertype_unknown": 1}),
        ("IPv6 header cut", [bytes(ip6() / echo)[:14 + 20]], {"parse_ipv6_truncated": 1}),
        ("IPv6 payload length > frame", b(ip6(plen=200) / echo), {"parse_ipv6_bad_length": 1}),
        ("ICMPv6 header cut", [cut6(l4(echo), 2, 58)], {"parse_icmp_truncated": 1}),
        ("UDP header cut", [cut6(l4(UDP(sport=1000, dport=7)), 4, 17)], {"parse_udp_truncated": 1}),
        ("TCP header cut", [cut6(l4(TCP(sport=1000, dport=7, flags="S")), 12, 6)], {"parse_tcp_truncated": 1}),
        ("IPv4 header cut", [bytes(ip4() / ICMP())[:14 + 10]], {"parse_ipv4_truncated": 1}),
        ("IPv4 total length > frame", b(ip4(len=400) / ICMP()), {"parse_ipv4_bad_length": 1}),
        ("IPv4 IHL 15 beyond the packet", b(ip4(ihl=15) / ICMP()), {"parse_ipv4_truncated": 1}),
        ("IPv4 IHL 3", b(ip4(ihl=3) / ICMP()), {"parse_ipv4_bad_ihl": 1}),
        ("IPv4 header checksum", b(ip4(chksum=0x1234) / ICMP()), {"parse_ipv4_bad_checksum": 1}),
        ("UDP length > payload", b(ip6() / UDP(sport=1000, dport=7, len=200) / b"hello"),
         {"parse_udp_bad_length": 1}),
        ("UDP length < 8", b(ip6() / UDP(sport=1000, dport=7, len=4) / b"hello"), {"parse_udp_bad_length": 1}),
        ("TCP data offset 15", b(ip6() / TCP(sport=1000, dport=7, dataofs=15, flags="S")),
         {"parse_tcp_bad_offset": 1}),
        ("TCP data offset 2", b(ip6() / TCP(sport=1000, dport=7, dataofs=2, flags="S")),
         {"parse_tcp_bad_offset": 1}),
        ("UDP/IPv6 checksum", b(ip6() / UDP(sport=1000, dport=7, chksum=0x1234) / b"hi"), {"bad_checksum": 1}),
        ("UDP/IPv4 checksum", b(ip4() / UDP(sport=1000, dport=7, chksum=0x1234) / b"hi"), {"bad_checksum": 1}),
        ("TCP checksum", b(ip6() / TCP(sport=1000, dport=7, flags="S", chksum=0x1234)), {"bad_checksum": 1}),
        ("ICMPv6 checksum", b(ip6() / ICMPv6EchoRequest(cksum=0x1234)), {"bad_checksum": 1}),
        ("ICMPv4 checksum", b(ip4() / ICMP(chksum=0x1234)), {"bad_checksum": 1}),
        ("30 chained extension headers", b(ip6() / chain / ICMPv6EchoRequest()), {"parse_ipv6_ext_too_many": 1}),
        ("overlapping IPv6 fragments",
         b(ip6() / IPv6ExtHdrFragment(id=77, offset=0, m=1, nh=58) / Raw(bytes(l4(echo))[:24]),
           ip6() / IPv6ExtHdrFragment(id=77, offset=1, m=0, nh=58) / Raw(b"B" * 24)), {"frag_overlap": 1}),
        ("overlapping IPv4 fragments",
         b(ip4(id=99, flags="MF", frag=0, proto=1) / Raw(b"\x08" + b"\x00" * 23),
           ip4(id=99, frag=1, proto=1) / Raw(b"C" * 24)), {"frag_overlap": 1}),
        ("tiny first fragment (RFC 7112)",
         b(ip6() / IPv6ExtHdrFragment(id=78, offset=0, m=1, nh=60) / Raw(b"\x3a\x00" + b"\x00" * 6)),
         {"frag_tiny": 1}),
        ("zero-length ND option", b(ip6(hlim=255) / ICMPv6ND_NS(tgt=S6) / Raw(b"\x01\x00" + b"\x00" * 6)),
         {"nd_bad_option": 1}),
        ("RA from a global source", b(allnodes / IPv6(src=K6, dst="ff02::1", hlim=255) / ICMPv6ND_RA()),
         {"nd_ra_bad_source": 1}),
        ("RA with hop limit 254", b(allnodes / IPv6(src="fe80::1", dst="ff02::1", hlim=254) / ICMPv6ND_RA()),
         {"nd_bad_hop_limit": 1}),
        ("fragmented NS (RFC 6980)", frag_ns_parts,
         {"nd_fragmented": 1}),
        ("Redirect from a non-router",
         b(eth / IPv6(src="fe80::1", dst=STACK_LL, hlim=255) / ICMPv6ND_Redirect(tgt="fe80::9", dst="2001:db8:5::1")),
         {"nd_redirect_not_from_router": 1}),
        ("ICMPv6 error quoting no connection",
         b(ip6() / ICMPv6DestUnreach(code=4) / IPv6(src=S6, dst=K6) / TCP(sport=7, dport=4444, seq=1234)),
         {"icmp_error_no_match": 1}),
        ("Packet Too Big quoting no connection",
         b(ip6() / ICMPv6PacketTooBig(mtu=1280) / IPv6(src=S6, dst=K6) / TCP(sport=7, dport=4444)),
         {"icmp_error_no_match": 1}),
        ("ICMPv4 error quoting no connection",
         b(ip4() / ICMP(type=3, code=3) / IP(src=S4, dst=K4) / TCP(sport=7, dport=4444, seq=1234)),
         {"icmp_error_no_match": 1}),
        # longer than a header, the version nibble forced wrong, the rest random: 8 frames, 8 drops
        ("random bytes after an IPv6 Ethernet header",
         [bytes(Ether(src=kmac, dst=STACK_MAC, type=0x86DD)) + bytes([0x10 | rng.randrange(16)])
          + rng.randbytes(rng.randrange(60, 200)) for _ in range(8)], {"parse_ipv6_bad_version": 8}),
        ("random bytes after an IPv4 Ethernet header",
         [bytes(Ether(src=kmac, dst=STACK_MAC, type=0x0800)) + bytes([0x90 | rng.randrange(16)])
          + rng.randbytes(rng.randrange(60, 200)) for _ in range(8)], {"parse_ipv4_bad_version": 8}),
    ]


def test_malformed_corpus_is_counted_and_survived(served: StackProcess, injector: Injector) -> None:
    served.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", S6])
    kmac = kernel_mac(served)
    failures = []
    cases = corpus(kmac)
    for name, frames, expect in cases:
        before = stats(served)["drops"]
        injector.send(*frames)
        want = {k: before.get(k, 0) + max(n, 1) for k, n in expect.items()}

        def reached(want: dict[str, int] = want) -> bool:
            drops = stats(served)["drops"]
            return all(drops.get(k, 0) >= v for k, v in want.items())

        try:
            wait_for(f"{name}: {expect}", reached, timeout=3)
        except AssertionError:
            after = stats(served)["drops"]
            failures.append(f"{name}: wanted {expect}, got "
                            f"{ {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)} }")
        assert served.proc.poll() is None, f"daemon died after {name}:\n{served.stderr()}"
    assert not failures, "\n".join(failures)
    assert_alive(served)
    drops = json.loads(served.tapstack("-j", "stats").stdout)["drops"]
    for _name, _frames, expect in cases:
        for counter in expect:
            assert drops.get(counter, 0) >= 1, counter
    assert stats(served)["runtime"]["core_errors"] == 0


def test_na_without_override_keeps_the_lladdr(served: StackProcess, injector: Injector) -> None:
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
    from scapy.layers.l2 import Ether

    served.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", S6])
    kmac = kernel_mac(served)

    def entry() -> dict[str, Any] | None:
        neigh = json.loads(served.tapstack("neigh", "-j").stdout)
        return next((n for n in neigh if n["dst"] == K6), None)

    wait_for("a neighbor entry for the kernel", entry)
    taken_before = stats(served).get("nd", {}).get("in_na_no_override", 0)
    na = Ether(src=kmac, dst=STACK_MAC) / IPv6(src=K6, dst=S6, hlim=255) / ICMPv6ND_NA(
        tgt=K6, R=0, S=1, O=0) / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:66:66")
    injector.send(bytes(na))
    wait_for("nd.in_na_no_override to rise",
             lambda: stats(served).get("nd", {}).get("in_na_no_override", 0) > taken_before)
    got = entry()
    assert got is not None and got["lladdr"] == kmac, got
    assert_alive(served)


# -- TCP: RFC 5961 against blind injection ------------------------------------------------------


class LineClient:
    """``nc`` in the namespace, one line at a time."""

    def __init__(self, sp: StackProcess, host: str, port: int) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", sp["ns0"], "nc", "-N", host, str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""

    def roundtrip(self, line: bytes, timeout: float = DEADLINE) -> bytes:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while len(self.buf) < len(line):
            left = deadline - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(0.0, left))
            if not r:
                raise AssertionError(f"no echo of {line!r} within {timeout}s (got {self.buf!r}, "
                                     f"nc {self.proc.poll()})")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"connection closed before the echo of {line!r} (got {self.buf!r})")
            self.buf += chunk
        got, self.buf = self.buf[:len(line)], self.buf[len(line):]
        return got

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def test_blind_rst_syn_and_data_get_challenge_acks(served: StackProcess, injector: Injector) -> None:
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    client = LineClient(served, S6, 7)
    try:
        assert client.roundtrip(b"before\n") == b"before\n"
        # The connection as the wire saw it, once the kernel has acknowledged the echo (its
        # last segment carries the newest TSval: an older one would be dropped by PAWS).
        segs: list[Any] = []

        def settled() -> bool:
            segs.extend(Ether(f) for f in injector.dump())
            tcp = [p for p in segs if TCP in p and IPv6 in p and 7 in (p[TCP].sport, p[TCP].dport)]
            k = [p[TCP] for p in tcp if p[TCP].dport == 7]
            echo = [p[TCP] for p in tcp if p[TCP].sport == 7 and len(p[TCP].payload)]   # not a pure ACK
            return bool(k and echo and k[-1].ack == (echo[-1].seq + len(echo[-1].payload)) & 0xFFFFFFFF)

        wait_for("the kernel's ACK of the echo", settled)
        tcp = [p for p in segs if TCP in p and IPv6 in p and 7 in (p[TCP].sport, p[TCP].dport)]
        from_k = [p for p in tcp if p[TCP].dport == 7]
        from_s = [p for p in tcp if p[TCP].sport == 7]
        last_k, last_s = from_k[-1][TCP], from_s[-1][TCP]
        cport = last_k.sport
        rcv_nxt = (last_k.seq + len(last_k.payload)) & 0xFFFFFFFF          # what the stack expects next
        snd_nxt = (last_s.seq + len(last_s.payload)) & 0xFFFFFFFF          # what the stack sent up to
        opts = [o for o in last_k.options if o[0] == "Timestamp"]
        kmac = from_k[-1][Ether].src
        base = Ether(src=kmac, dst=STACK_MAC) / IPv6(src=K6, dst=S6)
        tcp_before = stats(served).get("tcp", {})
        blind = [
            base / TCP(sport=cport, dport=7, flags="R", seq=(rcv_nxt + 1000) & 0xFFFFFFFF),   # in window, not exact
            base / TCP(sport=cport, dport=7, flags="S", seq=(rcv_nxt + 5000) & 0xFFFFFFFF, options=opts),
            base / TCP(sport=cport, dport=7, flags="PA", seq=rcv_nxt, ack=(snd_nxt + 100000) & 0xFFFFFFFF,
                       options=opts) / b"INJECTED\n",                                    # ACK not yet sent
        ]

        def challenge_acks() -> list[Any]:
            got = [Ether(f) for f in injector.dump()]
            return [p for p in got if TCP in p and p[Ether].src == STACK_MAC and p[TCP].sport == 7
                    and p[TCP].dport == cport and str(p[TCP].flags) == "A" and p[TCP].ack == rcv_nxt
                    and not bytes(p[TCP].payload)]

        # one at a time: ACKs owed for segments of one read batch leave as one ACK
        for pkt in blind:
            injector.send(bytes(pkt))
            try:
                wait_for("a challenge ACK", challenge_acks)
            except AssertionError:
                raise AssertionError(f"no challenge ACK sniffed for {pkt[TCP].summary()} (rcv_nxt {rcv_nxt}, "
                                     f"snd_nxt {snd_nxt}); tcp {stats(served)['tcp']}") from None
        tcp_after = stats(served)["tcp"]
        assert tcp_after["challenge_acks"] - tcp_before.get("challenge_acks", 0) == 3, str((
            tcp_before, tcp_after, {k: v for k, v in stats(served)["drops"].items() if k.startswith("tcp") and v},
            opts, [(p[TCP].flags, p[TCP].seq, p[TCP].ack, p[TCP].options) for p in tcp][-6:]))
        assert tcp_after.get("in_rsts", 0) == tcp_before.get("in_rsts", 0)            # the RST was not taken
        # the connection survived, and the injected bytes were not echoed
        assert client.roundtrip(b"after\n") == b"after\n"
    finally:
        client.close()
    assert b"INJECTED" not in client.buf
    assert_alive(served)


# -- SYN flood --------------------------------------------------------------------------------


def test_syn_flood_leaves_room_for_a_real_client(served: StackProcess, injector: Injector) -> None:
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    kmac = kernel_mac(served)
    rng = random.Random(5)
    n = 3000
    syns = [bytes(Ether(src=kmac, dst=STACK_MAC)
                  / IPv6(src=f"2001:db8:1::{rng.randrange(0x100, 0xffff):x}:{rng.randrange(1, 0xffff):x}", dst=S6)
                  / TCP(sport=rng.randrange(1024, 65535), dport=7, flags="S", seq=rng.randrange(1 << 32)))
            for _ in range(n)]
    def kernel_tx_dropped() -> int:      # what the TAP queue could not take (txqueuelen)
        path = f"/sys/class/net/{served['tap0']}/statistics/tx_dropped"
        return int(served.run_in_ns(["cat", path]).stdout)

    before = stats(served).get("tcp", {})
    dropped_before = kernel_tx_dropped()
    client = LineClient(served, S6, 7)
    try:
        start = time.monotonic()
        injector.send(*syns[: n // 2])
        assert client.roundtrip(b"during the flood\n") == b"during the flood\n"
        injector.send(*syns[n // 2:])
        elapsed = time.monotonic() - start
        rows = json.loads(served.tapstack("-j", "sockets").stdout)
        listener = next(r for r in rows if r["state"] == "LISTEN" and r["local"].endswith(":7"))
        half_open = [r for r in rows if r["state"] == "SYN-RECEIVED"]
        assert 0 < len(half_open) <= listener["send_q"], (len(half_open), listener)   # the backlog
        assert client.roundtrip(b"after the flood\n") == b"after the flood\n"
    finally:
        client.close()
    # every SYN either reached TCP or was dropped by the kernel at the full TAP queue
    def accounted() -> bool:
        seen = int(stats(served)["tcp"].get("in_segs", 0)) - before.get("in_segs", 0)
        return bool(seen + kernel_tx_dropped() - dropped_before >= n)

    wait_for(f"{n} SYNs sent in {elapsed:.1f}s to be taken by TCP or dropped by the kernel", accounted)
    after = stats(served)["tcp"]
    cookies = after.get("syncookies_sent", 0) - before.get("syncookies_sent", 0)
    assert cookies > 0
    assert_alive(served)
    print(f"{n} SYNs from random sources in {elapsed:.2f}s ({n / elapsed:.0f}/s, with one echo round trip); "
          f"SYN queue {len(half_open)} <= backlog {listener['send_q']}; {cookies} SYN cookies; "
          f"kernel TAP queue dropped {kernel_tx_dropped() - dropped_before}; nc echo worked during and after")

"""Fragmentation and reassembly: IPv6 (RFC 8200 §4.5, RFC 5722 overlaps, RFC 6946
atomic fragments, RFC 7112 header chain, RFC 8021) and IPv4 (RFC 791, RFC 1858),
limits, timeouts and the Time Exceeded they cause."""

from __future__ import annotations

import random

import pytest
from harness import GA_A, GA_B, IF, IP, MAC_A, MAC_B, UDP, V4_A, V4_B, Ether, IPv6, one_stack, smac
from scapy.layers.inet import ICMP, IPerror  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    defragment6,
)

from stack.core.clock import ManualClock, s
from stack.core.events import Readable
from stack.core.reasm import DATAGRAM_OVERHEAD, FRAGMENT_OVERHEAD
from stack.core.stack import Limits, Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt

PAYLOAD = bytes(range(256)) * 8          # 2048 bytes


def eth() -> Ether:
    return Ether(src=smac(MAC_B), dst=smac(MAC_A))


def frags6(upper: object, cuts: list[tuple[int, int]], ident: int = 0x1234, src: bytes = GA_B,
           dst: bytes = GA_A, more_last: bool = False) -> list[bytes]:
    """IPv6 fragments of IPv6(src, dst)/upper, one per (start, end) cut (RFC 8200 §4.5)."""
    whole = IPv6(bytes(IPv6(src=fmt(src), dst=fmt(dst)) / upper))
    data = bytes(whole)[40:]
    last = max(end for _, end in cuts)
    out = []
    for start, end in cuts:
        more = end < last or more_last
        out.append(bytes(eth() / IPv6(src=fmt(src), dst=fmt(dst), nh=44) /
                         IPv6ExtHdrFragment(nh=whole.nh, offset=start // 8, m=int(more), id=ident) /
                         data[start:min(end, len(data))]))
    return out


def frags4(upper: object, cuts: list[tuple[int, int]], ident: int = 0x77, src: bytes = V4_B,
           dst: bytes = V4_A, proto: int | None = None) -> list[bytes]:
    whole = IP(bytes(IP(src=fmt(src), dst=fmt(dst)) / upper))
    data = bytes(whole)[20:]
    last = max(end for _, end in cuts)
    return [bytes(eth() / IP(src=fmt(src), dst=fmt(dst), id=ident, proto=proto or whole.proto,
                             frag=start // 8, flags="MF" if end < last else 0) / data[start:end])
            for start, end in cuts]


def udp6_stack() -> tuple[Stack, ManualClock]:
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, V4_B, MAC_B, clock.now())
    return st, clock


def received(st: Stack) -> list[bytes]:
    out = []
    for ev in st.drain_events():
        if isinstance(ev, Readable):
            d = ev.sock.recv()  # type: ignore[attr-defined]
            if d is not None:
                out.append(d.data)
    return out


def sent(st: Stack) -> list[Ether]:
    return [Ether(raw) for _, raw in st.drain_tx()]


CUTS = [(0, 1000), (1000, 2000), (2000, 2056)]


# -- IPv6 reassembly ----------------------------------------------------------------------------


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_ipv6_fragments_in_any_order_are_reassembled(order: list[int]) -> None:
    st, clock = udp6_stack()
    st.udp.bind(None, 9)
    fr = frags6(UDP(sport=1, dport=9) / PAYLOAD, CUTS)
    for i in order:
        st.receive(IF, fr[i], clock.now())
    assert received(st) == [PAYLOAD]
    assert st.ip6.reasm.pending == {} and st.ip6.reasm.held == 0


def test_ipv6_exact_duplicate_fragment_is_ignored() -> None:
    st, clock = udp6_stack()
    st.udp.bind(None, 9)
    fr = frags6(UDP(sport=1, dport=9) / PAYLOAD, CUTS)
    for raw in (fr[0], fr[0], fr[1], fr[2]):
        st.receive(IF, raw, clock.now())
    assert received(st) == [PAYLOAD] and st.stats.get("reasm", "duplicates") == 1


def test_ipv6_overlapping_fragments_drop_the_datagram() -> None:
    st, clock = udp6_stack()
    st.udp.bind(None, 9)
    fr = frags6(UDP(sport=1, dport=9) / PAYLOAD, [(0, 1000), (992, 2000), (2000, 2056)])
    for raw in fr:
        st.receive(IF, raw, clock.now())
    assert received(st) == [] and st.stats[Drop.FRAG_OVERLAP] == 2      # RFC 5722
    assert len(st.ip6.reasm.pending) == 1          # the last fragment starts afresh, waits


def test_ipv6_atomic_fragment_is_processed_alone() -> None:
    st, clock = udp6_stack()
    st.udp.bind(None, 9)
    big = frags6(UDP(sport=1, dport=9) / PAYLOAD, CUTS, ident=5)
    st.receive(IF, big[0], clock.now())
    [atomic] = frags6(UDP(sport=1, dport=9) / b"tiny", [(0, 12)], ident=5)
    st.receive(IF, atomic, clock.now())                                # RFC 6946
    assert received(st) == [b"tiny"] and st.stats.get("reasm", "atomic") == 1
    st.receive(IF, big[1], clock.now())
    st.receive(IF, big[2], clock.now())
    assert received(st) == [PAYLOAD]


def test_ipv6_echo_in_fragments_is_answered() -> None:
    st, clock = udp6_stack()
    fr = frags6(ICMPv6EchoRequest(id=3, seq=4, data=PAYLOAD[:1500]), [(0, 800), (800, 1508)])
    for raw in fr:
        st.receive(IF, raw, clock.now())
    reply = sent(st)
    assert all(p.haslayer(IPv6ExtHdrFragment) for p in reply)             # 1548 bytes: fragmented
    whole = IPv6(bytes(defragment6([p[IPv6] for p in reply])))
    assert whole[ICMPv6EchoReply].data == PAYLOAD[:1500]


def test_ipv6_first_fragment_without_the_whole_header_chain_is_refused() -> None:
    st, clock = udp6_stack()
    upper = IPv6ExtHdrDestOpt(nh=17) / UDP(sport=1, dport=9) / PAYLOAD
    fr = frags6(upper, [(0, 8), (8, 2064)])                            # UDP header in fragment 2
    st.receive(IF, fr[0], clock.now())
    [p] = sent(st)
    assert (p[ICMPv6ParamProblem].code, p[ICMPv6ParamProblem].ptr) == (3, 0)   # RFC 7112
    assert st.stats[Drop.FRAG_TINY] == 1


def test_ipv6_non_last_fragment_not_a_multiple_of_8_gets_parameter_problem() -> None:
    st, clock = udp6_stack()
    fr = frags6(UDP(sport=1, dport=9) / PAYLOAD, [(0, 1001), (1001, 2056)])
    st.receive(IF, fr[0], clock.now())
    [p] = sent(st)
    assert (p[ICMPv6ParamProblem].code, p[ICMPv6ParamProblem].ptr) == (0, 4)    # Payload Length
    assert st.stats[Drop.FRAG_BAD] == 1


def test_ipv6_fragment_past_65535_gets_parameter_problem_at_fragment_offset() -> None:
    st, clock = udp6_stack()
    raw = bytes(eth() / IPv6(src=fmt(GA_B), dst=fmt(GA_A), nh=44) /
                IPv6ExtHdrFragment(nh=17, offset=65528 // 8, m=0, id=9) / (b"x" * 16))
    st.receive(IF, raw, clock.now())
    [p] = sent(st)
    assert (p[ICMPv6ParamProblem].code, p[ICMPv6ParamProblem].ptr) == (0, 42)
    assert st.ip6.reasm.pending == {}


def test_ipv6_timeout_sends_time_exceeded_only_when_the_first_fragment_came() -> None:
    st, clock = udp6_stack()
    echo = ICMPv6EchoRequest(id=3, seq=4, data=PAYLOAD)
    a = frags6(echo, CUTS, ident=1)
    b = frags6(echo, CUTS, ident=2)
    st.receive(IF, a[0], clock.now())        # first fragment of an ICMPv6 echo
    st.receive(IF, b[1], clock.now())        # no first fragment
    assert st.poll_at() == clock.now() + st.limits.reasm_timeout
    clock.advance(s(60))
    st.poll(clock.now())
    [p] = sent(st)
    assert (p[ICMPv6TimeExceeded].code, p[IPv6].dst) == (1, fmt(GA_B))    # RFC 8200 §4.5
    assert st.stats[Drop.FRAG_TIMEOUT] == 2 and st.ip6.reasm.held == 0
    assert len(p[IPv6]) <= 1280


def test_reassembly_memory_is_bounded_oldest_dropped_first() -> None:
    clock = ManualClock()
    st = Stack(rng=random.Random(1), now=clock.now(), limits=Limits(reasm_max_bytes=5000))
    st.add_interface("tap0", MAC_A, now=clock.now(), dad_transmits=0)
    st.add_address(IF, GA_A, 64, clock.now())
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    for ident in range(20):
        frame = frags6(UDP(sport=1, dport=9) / PAYLOAD, CUTS, ident=ident)[1]
        st.receive(IF, frame, clock.now())
        assert st.ip6.reasm.held <= 5000
    # each datagram: its one fragment's packet plus the per-fragment and per-datagram charge
    fit = 5000 // (len(frame) - 14 + FRAGMENT_OVERHEAD + DATAGRAM_OVERHEAD)
    assert fit >= 2
    assert st.stats[Drop.FRAG_LIMIT] == 20 - fit
    assert [k[2] for k in st.ip6.reasm.pending] == list(range(20 - fit, 20))


def test_tiny_fragment_flood_is_bounded_by_memory_not_only_payload_bytes() -> None:
    """Each never-completed first fragment carries 8 bytes of UDP: charged by packet size
    alone, 4 MiB held ~75000 datagrams (~100 MB of Python objects). With the per-fragment
    and per-datagram charge the count stays near limit / (packet + overheads), the oldest
    go first, and the oldest deadline is what poll_at reports."""
    limit = 64 * 1024
    clock = ManualClock()
    st = Stack(rng=random.Random(1), now=clock.now(), limits=Limits(reasm_max_bytes=limit))
    st.add_interface("tap0", MAC_A, now=clock.now(), dad_transmits=0)
    st.add_address(IF, GA_A, 64, clock.now())
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    n = 2000
    first_at = clock.now()
    for ident in range(n):
        frame = bytes(eth() / IPv6(src=fmt(GA_B), dst=fmt(GA_A), nh=44)
                      / IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=ident) / bytes((0, 1, 0, 9, 0, 16, 0, 0)))
        st.receive(IF, frame, clock.now())
        assert st.ip6.reasm.held <= limit
        clock.advance(s(0.001))
    per_datagram = 56 + FRAGMENT_OVERHEAD + DATAGRAM_OVERHEAD
    pending = st.ip6.reasm.pending
    assert len(pending) == limit // per_datagram                      # 60, not 1170 (= limit // 56)
    assert st.stats[Drop.FRAG_LIMIT] == n - len(pending)
    assert [k[2] for k in pending] == list(range(n - len(pending), n))   # the newest survive
    oldest = first_at + s(0.001) * (n - len(pending))
    assert st.ip6.reasm.poll_at() == oldest + st.limits.reasm_timeout
    # the timeout takes them oldest first, one poll at a time
    kept = len(pending)
    clock.advance(st.limits.reasm_timeout - s(0.001) * kept + s(0.001) * 9)   # the 10 oldest are due
    st.poll(clock.now())
    assert len(pending) == kept - 10 and st.stats[Drop.FRAG_TIMEOUT] == 10
    assert st.ip6.reasm.poll_at() == oldest + s(0.001) * 10 + st.limits.reasm_timeout
    clock.advance(s(61))
    st.poll(clock.now())
    assert not pending and st.ip6.reasm.held == 0 and st.ip6.reasm.poll_at() is None


# -- IPv6 source fragmentation --------------------------------------------------------------------


def test_ipv6_source_fragmentation_round_trip_between_two_stacks() -> None:
    a, clock = udp6_stack()
    b = Stack(rng=random.Random(2), now=clock.now())
    b.add_interface("tap0", MAC_B, now=clock.now(), dad_transmits=0)
    b.add_address(IF, GA_B, 64, clock.now())
    b.add_neighbor(IF, GA_A, MAC_A, clock.now())
    rx = b.udp.bind(None, 9)
    a.udp.bind(None, 0).sendto(PAYLOAD * 2, GA_B, 9, 0, clock.now())
    out = a.drain_tx()
    pk = [Ether(raw)[IPv6] for _, raw in out]
    assert len(pk) == 3 and all(len(p) <= 1500 for p in pk)
    assert len({p[IPv6ExtHdrFragment].id for p in pk}) == 1
    assert [p[IPv6ExtHdrFragment].m for p in pk] == [1, 1, 0]
    assert bytes(IPv6(bytes(defragment6(pk)))[UDP].payload) == PAYLOAD * 2
    for _, raw in reversed(out):
        b.receive(IF, raw, clock.now())
    d = rx.recv()
    assert d is not None and d.data == PAYLOAD * 2


def test_packet_too_big_below_1280_creates_no_atomic_fragments() -> None:
    st, clock = udp6_stack()
    ep = st.udp.bind(None, 40000)
    ep.sendto(b"x" * 1300, GA_B, 9, 0, clock.now())
    [first] = sent(st)
    ptb = eth() / IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / ICMPv6PacketTooBig(mtu=1000) / \
        bytes(first[IPv6])[:1000]
    st.receive(IF, bytes(ptb), clock.now())
    ep.sendto(b"x" * 1200, GA_B, 9, 0, clock.now())
    ep.sendto(b"x" * 1300, GA_B, 9, 0, clock.now())
    small, *big = sent(st)
    assert not small.haslayer(IPv6ExtHdrFragment)                      # RFC 8021
    assert len(big) == 2 and all(len(p[IPv6]) <= 1280 for p in big)


# -- IPv4 reassembly -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1]])
def test_ipv4_fragments_in_any_order_are_reassembled(order: list[int]) -> None:
    st, clock = udp6_stack()
    st.udp.bind(None, 9)
    fr = frags4(UDP(sport=1, dport=9) / PAYLOAD, CUTS)
    for i in order:
        st.receive(IF, fr[i], clock.now())
    assert received(st) == [PAYLOAD] and st.ip4.reasm.held == 0


def test_ipv4_overlap_drops_the_datagram() -> None:
    st, clock = udp6_stack()
    st.udp.bind(None, 9)
    for raw in frags4(UDP(sport=1, dport=9) / PAYLOAD, [(0, 1000), (96, 2056)]):
        st.receive(IF, raw, clock.now())
    assert received(st) == [] and st.stats[Drop.FRAG_OVERLAP] == 2


def test_ipv4_datagrams_with_other_protocol_or_id_are_kept_apart() -> None:
    st, clock = udp6_stack()
    st.udp.bind(None, 9)
    a = frags4(UDP(sport=1, dport=9) / PAYLOAD, CUTS, ident=1)
    b = frags4(UDP(sport=1, dport=9) / PAYLOAD[::-1], CUTS, ident=2)
    for x, y in zip(a, b, strict=True):
        st.receive(IF, x, clock.now())
        st.receive(IF, y, clock.now())
    assert received(st) == [PAYLOAD, PAYLOAD[::-1]]


def test_ipv4_echo_in_fragments_is_answered() -> None:
    st, clock = udp6_stack()
    for raw in frags4(ICMP(type=8, id=1, seq=2) / PAYLOAD[:1000], [(0, 504), (504, 1008)]):
        st.receive(IF, raw, clock.now())
    [p] = sent(st)
    assert (p[ICMP].type, bytes(p[ICMP].payload)) == (0, PAYLOAD[:1000])


@pytest.mark.parametrize(("cuts", "proto", "reason"), [
    ([(0, 16), (16, 2076)], 6, Drop.FRAG_TINY),             # RFC 1858: first TCP fragment < 20
    ([(0, 24), (8, 2076)], 6, Drop.FRAG_TINY),              # RFC 1858 §3.2: TCP at offset 8
    ([(0, 1001), (1001, 2056)], None, Drop.FRAG_BAD),       # not a multiple of 8
])
def test_ipv4_tiny_and_malformed_fragments_are_dropped(cuts: list[tuple[int, int]], proto: int | None,
                                                       reason: str) -> None:
    st, clock = udp6_stack()
    upper: object = UDP(sport=1, dport=9) / PAYLOAD
    if proto == 6:
        from scapy.layers.inet import TCP  # type: ignore[import-untyped]
        upper = TCP(sport=1, dport=9) / PAYLOAD
    fr = frags4(upper, cuts)
    st.receive(IF, fr[1] if reason == Drop.FRAG_TINY and cuts[1][0] == 8 else fr[0], clock.now())
    assert st.stats[reason] == 1 and sent(st) == []


def test_ipv4_fragment_past_65535_and_empty_fragments_are_dropped() -> None:
    st, clock = udp6_stack()
    st.receive(IF, bytes(eth() / IP(src=fmt(V4_B), dst=fmt(V4_A), proto=17, frag=65512 // 8) /
                         (b"x" * 8)), clock.now())
    st.receive(IF, bytes(eth() / IP(src=fmt(V4_B), dst=fmt(V4_A), proto=17, frag=8, flags="MF")),
               clock.now())
    assert st.stats[Drop.FRAG_BAD] == 2 and st.ip4.reasm.pending == {}


def test_ipv4_timeout_sends_time_exceeded_code_1_only_with_the_first_fragment() -> None:
    st, clock = udp6_stack()
    a = frags4(UDP(sport=1, dport=9) / PAYLOAD, CUTS, ident=1)
    b = frags4(UDP(sport=1, dport=9) / PAYLOAD, CUTS, ident=2)
    st.receive(IF, a[0], clock.now())
    st.receive(IF, b[2], clock.now())
    clock.advance(s(59))
    st.poll(clock.now())
    assert sent(st) == []
    clock.advance(s(1))
    st.poll(clock.now())
    [p] = sent(st)
    assert (p[ICMP].type, p[ICMP].code, p[IP].src, p[IP].dst, p[IPerror].id) == (11, 1, fmt(V4_A),
                                                                               fmt(V4_B), 1)
    assert st.stats[Drop.FRAG_TIMEOUT] == 2 and st.ip4.reasm.pending == {}

"""ICMP error origination: RFC 4443 §2.2/§2.4 (ICMPv6), RFC 1812 §4.3.2 (ICMPv4),
token-bucket rate limits, and the source of ICMPv4 errors on v4-via-v6 routers
(draft-ietf-intarea-v4-via-v6 §4, RFC 7600: 192.0.0.8)."""

from __future__ import annotations

import random

import pytest
from harness import ICMP, IP, UDP, Ether, IPv6, settle, smac
from scapy.layers.inet import IPerror, UDPerror  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    HBHOptUnknown,
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_Redirect,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPerror6,
    IPv6ExtHdrHopByHop,
)

from stack.core.clock import ManualClock, ms, s
from stack.core.stack import Limits, Stack
from stack.core.stats import Drop
from stack.wire.addr import DUMMY4, fmt, ip4, ip6, link_local_from_mac, mac

R0, R1 = mac("02:00:00:00:aa:00"), mac("02:00:00:00:aa:01")
MAC_B, MAC_C = mac("02:00:00:00:00:0b"), mac("02:00:00:00:00:0c")
LL_R0 = link_local_from_mac(R0)
LL_B, LL_C = ip6("fe80::b"), ip6("fe80::c")
B6, C6, R0_6, R0_6b = ip6("2001:db8:1::1"), ip6("2001:db8:2::1"), ip6("2001:db8:1::2"), ip6("2001:db8:1::3")
B4, C4, R0_4, R1_4 = ip4("192.0.2.1"), ip4("203.0.113.5"), ip4("192.0.2.2"), ip4("203.0.113.1")
T0, T1, LO = 2, 3, 1


def router(*, v4: bool = True, v6: bool = True, limits: Limits | None = None) -> tuple[Stack, ManualClock]:
    clock = ManualClock()
    st = Stack(rng=random.Random(9), now=clock.now(), forwarding=True, limits=limits)
    st.add_interface("tap0", R0, now=clock.now(), dad_transmits=0)
    st.add_interface("tap1", R1, now=clock.now(), dad_transmits=0)
    if v6:
        st.add_address(T0, R0_6, 64, clock.now())
        st.add_address(T0, R0_6b, 64, clock.now())
        st.add_address(T1, ip6("2001:db8:2::2"), 64, clock.now())
    if v4:
        st.add_address(T0, R0_4, 24, clock.now())
        st.add_address(T1, R1_4, 24, clock.now())
    for ifx, addr, m in ((T0, B6, MAC_B), (T0, LL_B, MAC_B), (T0, B4, MAC_B), (T1, C6, MAC_C),
                         (T1, LL_C, MAC_C), (T1, C4, MAC_C)):
        st.add_neighbor(ifx, addr, m, clock.now())
    settle(st, clock)
    st.drain_tx()
    return st, clock


def eth(l2: bytes = R0) -> Ether:
    return Ether(src=smac(MAC_B), dst=smac(l2))


def v6(dst: bytes = C6, src: bytes = B6, hlim: int = 64, l2: bytes = R0, payload: object = None) -> bytes:
    inner = payload if payload is not None else ICMPv6EchoRequest(id=1, seq=1, data=b"z" * 16)
    return bytes(eth(l2) / IPv6(src=fmt(src), dst=fmt(dst), hlim=hlim) / inner)


def v4(dst: bytes = C4, src: bytes = B4, ttl: int = 64, l2: bytes = R0, payload: object = None,
       frag: int = 0, mf: bool = False, size: int = 16) -> bytes:
    inner = payload if payload is not None else UDP(sport=5000, dport=6000) / (b"u" * size)
    return bytes(eth(l2) / IP(src=fmt(src), dst=fmt(dst), ttl=ttl, frag=frag, flags="MF" if mf else 0)
                 / inner)


def out(st: Stack) -> list[Ether]:
    return [Ether(raw) for _, raw in st.drain_tx()]


# -- RFC 4443 §2.4 suppression -------------------------------------------------------------


def test_no_icmpv6_error_about_an_icmpv6_error_or_a_redirect() -> None:
    st, clock = router()
    err = ICMPv6DestUnreach(code=4) / IPerror6(src=fmt(C6), dst=fmt(B6)) / UDPerror(sport=1, dport=2)
    st.receive(T0, v6(hlim=1, payload=err), clock.now())
    redirect = ICMPv6ND_Redirect(tgt="fe80::9", dst="2001:db8:2::9")
    st.receive(T0, v6(hlim=1, payload=redirect), clock.now())
    assert out(st) == []
    assert st.stats[Drop.ICMP_ERROR_SUPPRESSED] == 2
    st.receive(T0, v6(hlim=1), clock.now())                       # an echo request: error
    assert [p.haslayer(ICMPv6TimeExceeded) for p in out(st)] == [True]


def test_no_icmpv6_error_to_multicast_or_link_multicast_destination() -> None:
    st, clock = router()
    st.receive(T0, bytes(eth(mac("33:33:00:00:00:01")) / IPv6(src=fmt(B6), dst="ff02::1", nh=253)
                         / b"12345678"), clock.now())
    st.receive(T0, v6(dst=R0_6, l2=mac("33:33:00:00:00:02"), payload=UDP(dport=9) / b"x"), clock.now())
    assert out(st) == [] and st.stats[Drop.ICMP_ERROR_SUPPRESSED] == 2
    st.receive(T0, v6(dst=R0_6, payload=UDP(dport=9) / b"x"), clock.now())     # unicast: error
    [p] = out(st)
    assert p[ICMPv6DestUnreach].code == 4


def test_parameter_problem_code_2_goes_even_to_multicast() -> None:
    st, clock = router()
    hbh = IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x80, optdata=b"\x00" * 4)])
    raw = bytes(eth(mac("33:33:00:00:00:01")) / IPv6(src=fmt(B6), dst="ff02::1") / hbh /
                ICMPv6EchoRequest())
    st.receive(T0, raw, clock.now())
    [p] = out(st)
    assert (p[ICMPv6ParamProblem].code, p[ICMPv6ParamProblem].ptr) == (2, 42)
    assert (p[IPv6].src, p[IPv6].dst) == (fmt(R0_6), fmt(B6))       # §2.2: not the multicast
    hbh11 = IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0xC0, optdata=b"\x00" * 4)])
    st.receive(T0, bytes(eth(mac("33:33:00:00:00:01")) / IPv6(src=fmt(B6), dst="ff02::1") / hbh11 /
                         ICMPv6EchoRequest()), clock.now())
    assert out(st) == []                                          # type 11: not to multicast


def test_no_icmpv6_error_to_unspecified_source() -> None:
    st, clock = router()
    st.receive(T0, v6(src=bytes(16), dst=R0_6, payload=UDP(dport=9) / b"x"), clock.now())
    assert out(st) == [] and st.stats[Drop.ICMP_ERROR_SUPPRESSED] == 1


def test_icmpv6_error_fits_1280_bytes() -> None:
    st, clock = router()
    st.receive(T0, v6(hlim=1, payload=ICMPv6EchoRequest(data=b"z" * 1400)), clock.now())
    [p] = out(st)
    assert len(p[IPv6]) == 1280 and p.haslayer(ICMPv6TimeExceeded)


# -- RFC 4443 §2.2 source ---------------------------------------------------------------------


def test_icmpv6_error_source_is_the_address_the_packet_was_sent_to() -> None:
    st, clock = router()
    st.receive(T0, v6(dst=R0_6b, payload=UDP(dport=9) / b"x"), clock.now())
    st.receive(T0, v6(dst=ip6("2001:db8:2::2"), payload=UDP(dport=9) / b"x"), clock.now())
    assert [p[IPv6].src for p in out(st)] == [fmt(R0_6b), "2001:db8:2::2"]


def test_icmpv6_error_about_a_forwarded_packet_uses_source_selection() -> None:
    st, clock = router()
    st.receive(T0, v6(hlim=1), clock.now())
    st.receive(T0, v6(src=LL_B, hlim=1), clock.now())
    assert [p[IPv6].src for p in out(st)] == [fmt(R0_6), fmt(LL_R0)]


# -- RFC 1812 §4.3.2.7 suppression ------------------------------------------------------------


def test_no_icmpv4_error_about_an_icmp_error() -> None:
    st, clock = router()
    err = ICMP(type=3, code=3) / IPerror(src=fmt(C4), dst=fmt(B4)) / UDPerror(sport=1, dport=2)
    st.receive(T0, v4(ttl=1, payload=err), clock.now())
    st.receive(T0, v4(ttl=1, payload=ICMP(type=11) / IPerror(src=fmt(C4), dst=fmt(B4))), clock.now())
    st.receive(T0, v4(ttl=1, payload=ICMP(type=5, gw="192.0.2.9") / IPerror()), clock.now())
    assert out(st) == [] and st.stats[Drop.ICMP_ERROR_SUPPRESSED] == 3
    st.receive(T0, v4(ttl=1, payload=ICMP(type=8)), clock.now())
    [p] = out(st)
    assert (p[ICMP].type, p[IPerror].proto) == (11, 1)


def test_no_icmpv4_error_about_broadcasts() -> None:
    st, clock = router()
    st.receive(T0, v4(dst=ip4("192.0.2.255"), l2=b"\xff" * 6), clock.now())     # subnet broadcast
    st.receive(T0, v4(dst=ip4("255.255.255.255"), l2=b"\xff" * 6), clock.now())
    st.receive(T0, v4(dst=R0_4, l2=b"\xff" * 6), clock.now())                     # L2 broadcast
    st.receive(T0, v4(dst=ip4("192.0.2.255")), clock.now())                       # IP broadcast only
    assert out(st) == []
    assert st.stats[Drop.UDP_NO_PORT] == 4 and st.stats[Drop.ICMP_ERROR_SUPPRESSED] == 4


def test_no_icmpv4_error_about_non_first_fragments() -> None:
    st, clock = router()
    st.receive(T0, v4(ttl=1, frag=2, payload=b"x" * 16), clock.now())          # offset 16
    assert out(st) == [] and st.stats[Drop.ICMP_ERROR_SUPPRESSED] == 1
    st.receive(T0, v4(ttl=1, mf=True, payload=UDP(sport=1, dport=2) / (b"x" * 8)), clock.now())
    [p] = out(st)
    assert (p[ICMP].type, p[IPerror].flags) == (11, 1)


def test_first_fragment_of_an_icmp_error_gets_no_error() -> None:
    st, clock = router()
    err = bytes(ICMP(type=3, code=1) / IPerror(src=fmt(C4), dst=fmt(B4)) / (b"q" * 16))
    st.receive(T0, bytes(eth() / IP(src=fmt(B4), dst=fmt(C4), ttl=1, flags="MF", proto=1) / err[:32]),
               clock.now())
    assert out(st) == [] and st.stats[Drop.ICMP_ERROR_SUPPRESSED] == 1


def test_no_icmpv4_error_to_invalid_sources() -> None:
    st, clock = router()
    st.receive(T0, v4(src=ip4("0.0.0.0"), dst=R0_4), clock.now())
    assert out(st) == [] and st.stats[Drop.ICMP_ERROR_SUPPRESSED] == 1
    st.receive(T0, v4(src=ip4("240.0.0.1"), dst=R0_4), clock.now())
    st.receive(T0, v4(src=ip4("192.0.2.255"), dst=R0_4), clock.now())
    assert out(st) == [] and st.stats[Drop.IPV4_BAD_SOURCE] == 2


def test_icmpv4_error_fits_576_bytes() -> None:
    st, clock = router()
    st.receive(T0, v4(ttl=1, size=1400), clock.now())
    [p] = out(st)
    assert len(p[IP]) == 576 and p[ICMP].type == 11


def test_icmpv4_error_source_is_the_address_the_packet_was_sent_to() -> None:
    st, clock = router()
    st.receive(T0, v4(dst=R1_4), clock.now())                 # weak host: tap1's address on tap0
    [p] = out(st)
    assert (p[IP].src, p[IP].dst, p[ICMP].type, p[ICMP].code) == (fmt(R1_4), fmt(B4), 3, 3)


# -- rate limits (RFC 4443 §2.4(f), RFC 1812 §4.3.2.8) ----------------------------------------


def test_burst_of_500_hop_limit_expired_ipv6_packets_is_rate_limited() -> None:
    st, clock = router()
    raw = v6(hlim=1)
    for _ in range(500):
        st.receive(T0, raw, clock.now())
    burst = st.limits.icmp_error_burst
    assert len(out(st)) == burst == 50
    assert st.stats[Drop.ICMP_ERROR_RATE_LIMITED] == 500 - burst
    assert st.stats[Drop.IPV6_HOP_LIMIT_EXCEEDED] == 500
    clock.advance(ms(100))                                    # 100/s: 10 tokens
    for _ in range(20):
        st.receive(T0, raw, clock.now())
    assert len(out(st)) == 10


def test_burst_of_500_ttl_expired_ipv4_packets_is_rate_limited() -> None:
    st, clock = router()
    raw = v4(ttl=1)
    for _ in range(500):
        st.receive(T0, raw, clock.now())
    assert len(out(st)) == 50
    assert st.stats[Drop.ICMP_ERROR_RATE_LIMITED] == 450
    assert st.stats.snapshot()["drops"]["icmp_error_rate_limited"] == 450
    clock.advance(s(10))                                      # refills to the burst, not beyond
    for _ in range(500):
        st.receive(T0, raw, clock.now())
    assert len(out(st)) == 50


def test_rate_limit_follows_configured_limits() -> None:
    st, clock = router(limits=Limits(icmp_error_rate=2.0, icmp_error_burst=3))
    for _ in range(10):
        st.receive(T0, v4(ttl=1), clock.now())
        st.receive(T0, v6(hlim=1), clock.now())
    assert len(out(st)) == 6                                  # 3 per family
    clock.advance(ms(500))
    st.receive(T0, v4(ttl=1), clock.now())
    st.receive(T0, v4(ttl=1), clock.now())
    assert len(out(st)) == 1


# -- ICMPv4 errors on a v4-via-v6 router (draft-ietf-intarea-v4-via-v6 §4) ---------------------


def unnumbered(lo4: bytes | None = None) -> tuple[Stack, ManualClock]:
    """Only link-locals on both links; IPv4 routes via IPv6 link-local next hops."""
    st, clock = router(v4=False, v6=False)
    if lo4 is not None:
        st.add_address(LO, lo4, 32, clock.now())
    st.add_route(ip4("192.0.2.0"), 24, gateway=LL_B, gw_zone=T0, now=clock.now())
    st.add_route(ip4("203.0.113.0"), 24, gateway=LL_C, gw_zone=T1, now=clock.now())
    return st, clock


@pytest.mark.parametrize(("lo4", "want"), [(None, DUMMY4), (ip4("198.51.100.1"), ip4("198.51.100.1"))])
def test_time_exceeded_source_on_an_unnumbered_router(lo4: bytes | None, want: bytes) -> None:
    st, clock = unnumbered(lo4)
    st.receive(T0, v4(ttl=1), clock.now())
    [p] = out(st)
    assert (p.type, p.dst, p.src) == (0x0800, smac(MAC_B), smac(R0))   # via fe80::b, ND's MAC
    assert (p[IP].src, p[IP].dst, p[ICMP].type, p[ICMP].code) == (fmt(want), fmt(B4), 11, 0)
    assert p[IPerror].dst == fmt(C4)


def test_other_errors_on_an_unnumbered_router_also_come_from_192_0_0_8() -> None:
    st, clock = unnumbered()
    st.receive(T0, v4(dst=ip4("198.18.0.1")), clock.now())             # no route
    st.interfaces[T1].mtu = 1280
    st.receive(T0, bytes(eth() / IP(src=fmt(B4), dst=fmt(C4), flags="DF") / UDP() / (b"x" * 1400)),
               clock.now())
    [unreach, frag] = out(st)
    assert (unreach[IP].src, unreach[ICMP].type, unreach[ICMP].code) == ("192.0.0.8", 3, 0)
    assert (frag[IP].src, frag[ICMP].code, frag[ICMP].nexthopmtu) == ("192.0.0.8", 4, 1280)


def test_forwarding_through_an_unnumbered_router_works() -> None:
    st, clock = unnumbered()
    st.receive(T0, v4(), clock.now())
    [p] = out(st)
    assert (p.type, p.dst, p[IP].ttl) == (0x0800, smac(MAC_C), 63)


def test_icmpv4_error_with_no_route_back_is_dropped() -> None:
    st, clock = unnumbered()
    st.receive(T0, v4(src=ip4("198.18.7.7"), ttl=1), clock.now())
    assert out(st) == [] and st.stats[Drop.NO_ROUTE] == 1

"""Router mode: IPv6 and IPv4 forwarding between two links (RFC 8200, RFC 1812),
zones (RFC 4007 §9), MTU, v4-via-v6 next hops (RFC 8950) and Redirects
(RFC 4861 §8.2, RFC 1812 §5.2.7.2)."""

from __future__ import annotations

import random

import pytest
from harness import ICMP, IP, UDP, Ether, IPv6, settle, smac
from hypothesis import given
from hypothesis import strategies as hs
from scapy.layers.inet import defragment  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_Redirect,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptRedirectedHdr,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPerror6,
)

from stack.core.clock import ManualClock, s
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip4, ip6, link_local_from_mac, mac
from stack.wire.checksum import internet_checksum
from stack.wire.frame import parse_frame
from stack.wire.frame_types import ETHERTYPE_IPV4, ETHERTYPE_IPV6

R0, R1 = mac("02:00:00:00:aa:00"), mac("02:00:00:00:aa:01")     # router on tap0 / tap1
MAC_B, MAC_C, MAC_D = mac("02:00:00:00:00:0b"), mac("02:00:00:00:00:0c"), mac("02:00:00:00:00:0d")
LL_R0, LL_R1 = link_local_from_mac(R0), link_local_from_mac(R1)
B6, C6, R0_6 = ip6("2001:db8:1::1"), ip6("2001:db8:2::1"), ip6("2001:db8:1::2")
LL_B, LL_C, LL_D = ip6("fe80::b"), ip6("fe80::c"), ip6("fe80::d")
B4, C4, R0_4, R1_4 = ip4("192.0.2.1"), ip4("203.0.113.5"), ip4("192.0.2.2"), ip4("203.0.113.1")
T0, T1 = 2, 3


def router(*, forwarding: bool = True, mtu1: int = 1500) -> tuple[Stack, ManualClock]:
    """tap0: 2001:db8:1::2/64, 192.0.2.2/24 (host B); tap1: 2001:db8:2::2/64,
    203.0.113.1/24 (host C). Every neighbor is known (PERMANENT)."""
    clock = ManualClock()
    st = Stack(rng=random.Random(5), now=clock.now(), forwarding=forwarding)
    st.add_interface("tap0", R0, now=clock.now(), dad_transmits=0)
    st.add_interface("tap1", R1, mtu1, now=clock.now(), dad_transmits=0)
    st.add_address(T0, R0_6, 64, clock.now())
    st.add_address(T1, ip6("2001:db8:2::2"), 64, clock.now())
    st.add_address(T0, R0_4, 24, clock.now())
    st.add_address(T1, R1_4, 24, clock.now())
    for ifx, addr, m in ((T0, B6, MAC_B), (T0, LL_B, MAC_B), (T0, B4, MAC_B), (T1, C6, MAC_C),
                         (T1, LL_C, MAC_C), (T1, C4, MAC_C), (T0, LL_D, MAC_D)):
        st.add_neighbor(ifx, addr, m, clock.now())
    settle(st, clock)
    st.drain_tx()
    return st, clock


def from_b6(dst: bytes = C6, src: bytes = B6, hlim: int = 64, size: int = 16, l2: bytes = R0) -> bytes:
    return bytes(Ether(src=smac(MAC_B), dst=smac(l2)) / IPv6(src=fmt(src), dst=fmt(dst), hlim=hlim) /
                 ICMPv6EchoRequest(id=1, seq=1, data=b"z" * size))


def from_b4(dst: bytes = C4, src: bytes = B4, ttl: int = 64, size: int = 16, df: bool = False,
            l2: bytes = R0, options: bytes = b"") -> bytes:
    ip = IP(src=fmt(src), dst=fmt(dst), ttl=ttl, flags="DF" if df else 0, id=77)
    if options:
        ip.options = [options]
    return bytes(Ether(src=smac(MAC_B), dst=smac(l2)) / ip / UDP(sport=5000, dport=6000) / (b"u" * size))


def out(st: Stack) -> list[tuple[int, Ether]]:
    return [(ifx, Ether(raw)) for ifx, raw in st.drain_tx()]


# -- IPv6 ------------------------------------------------------------------------------------


def test_ipv6_is_forwarded_with_hop_limit_decremented_and_new_link_header() -> None:
    st, clock = router()
    st.receive(T0, from_b6(), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p.src, p.dst, p[IPv6].hlim) == (T1, smac(R1), smac(MAC_C), 63)
    sent = Ether(from_b6())[IPv6]
    sent.hlim = 63
    assert bytes(p[IPv6]) == bytes(sent)
    assert st.stats.get("ipv6", "out_forwarded") == 1


@pytest.mark.parametrize("hlim", [0, 1])
def test_ipv6_hop_limit_exhausted_gives_time_exceeded_from_router_address(hlim: int) -> None:
    st, clock = router()
    st.receive(T0, from_b6(hlim=hlim), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p.dst) == (T0, smac(MAC_B))
    assert (p[IPv6].src, p[IPv6].dst) == (fmt(R0_6), fmt(B6))      # RFC 4443 §2.2
    assert (p[ICMPv6TimeExceeded].code, p[IPerror6].hlim) == (0, hlim)
    assert st.stats[Drop.IPV6_HOP_LIMIT_EXCEEDED] == 1


def test_ipv6_no_route_gives_destination_unreachable_code_0() -> None:
    st, clock = router()
    st.receive(T0, from_b6(dst=ip6("2001:db8:99::1")), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p[ICMPv6DestUnreach].code, p[IPv6].dst) == (T0, 0, fmt(B6))
    assert st.stats[Drop.IPV6_NO_ROUTE] == 1


def test_link_local_source_never_leaves_its_link_beyond_scope_error() -> None:
    st, clock = router()
    st.receive(T0, from_b6(src=LL_B), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p.dst, p[IPv6].src, p[IPv6].dst) == (T0, smac(MAC_B), fmt(LL_R0), fmt(LL_B))
    assert p[ICMPv6DestUnreach].code == 2                           # RFC 4443 §3.1
    assert st.stats[Drop.IPV6_BEYOND_SCOPE] == 1


def test_link_local_destination_is_only_looked_up_in_the_arrival_zone() -> None:
    st, clock = router()
    # fe80::c lives on tap1, but a packet for it arriving on tap0 means fe80::c%tap0:
    # it may only go back out on tap0 (RFC 4007 §9), where there is no such neighbor.
    st.receive(T0, from_b6(dst=LL_D), clock.now())
    sent = out(st)
    fwd = [p for _, p in sent if not p.haslayer(ICMPv6ND_Redirect)]
    assert [(p.dst, p[IPv6].hlim) for p in fwd] == [(smac(MAC_D), 63)]
    assert all(ifx == T0 for ifx, _ in sent)
    [red] = [p for _, p in sent if p.haslayer(ICMPv6ND_Redirect)]     # §8.2: target = dst
    assert (red[ICMPv6ND_Redirect].tgt, red[ICMPv6ND_Redirect].dst) == (fmt(LL_D), fmt(LL_D))


def test_ipv6_too_big_for_next_link_gives_packet_too_big_with_mtu() -> None:
    st, clock = router(mtu1=1280)
    st.receive(T0, from_b6(size=1300), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p[IPv6].src, p[ICMPv6PacketTooBig].mtu) == (T0, fmt(R0_6), 1280)
    assert len(p[IPv6]) <= 1280
    assert st.stats[Drop.IPV6_TOO_BIG] == 1


def test_ipv6_unspecified_source_and_link_multicast_are_not_forwarded() -> None:
    st, clock = router()
    st.receive(T0, from_b6(src=bytes(16)), clock.now())
    st.receive(T0, from_b6(l2=mac("33:33:00:00:00:01")), clock.now())
    assert out(st) == []
    assert st.stats[Drop.IPV6_MARTIAN] == 1 and st.stats[Drop.IPV6_NOT_FOR_US] == 1


# -- IPv4 ------------------------------------------------------------------------------------


def test_ipv4_is_forwarded_with_ttl_decremented_and_checksum_fixed() -> None:
    st, clock = router()
    st.receive(T0, from_b4(), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p.src, p.dst, p.type, p[IP].ttl) == (T1, smac(R1), smac(MAC_C), ETHERTYPE_IPV4, 63)
    want = IP(bytes(Ether(from_b4())[IP]))
    want.ttl = 63
    del want.chksum
    assert bytes(p[IP]) == bytes(IP(bytes(want)))
    assert st.stats.get("ipv4", "out_forwarded") == 1


@given(ttl=hs.integers(2, 255), ident=hs.integers(0, 0xFFFF), tos=hs.integers(0, 255),
       size=hs.integers(0, 64), proto=hs.sampled_from([4, 41, 47, 50, 253]))
def test_incremental_ttl_checksum_matches_full_recomputation(ttl: int, ident: int, tos: int,
                                                            size: int, proto: int) -> None:
    st, clock = router()
    pkt = IP(src=fmt(B4), dst=fmt(C4), ttl=ttl, id=ident, tos=tos, proto=proto) / (b"\x00" * size)
    st.receive(T0, bytes(Ether(src=smac(MAC_B), dst=smac(R0)) / pkt), clock.now())
    [(_, p)] = out(st)
    hdr = bytearray(bytes(p[IP])[:20])
    assert hdr[8] == ttl - 1
    got = int.from_bytes(hdr[10:12], "big")
    hdr[10:12] = b"\x00\x00"
    assert got == internet_checksum(bytes(hdr))                     # RFC 1624 eqn. 3


def test_ipv4_with_options_is_forwarded_intact() -> None:
    st, clock = router()
    raw = from_b4(options=b"\x94\x04\x00\x00")                      # Router Alert (RFC 2113)
    st.receive(T0, raw, clock.now())
    [(_, p)] = out(st)
    assert p[IP].ihl == 6 and p[IP].ttl == 63 and bytes(p[UDP].payload) == b"u" * 16


def test_source_routed_ipv4_is_refused() -> None:
    st, clock = router()
    lsrr = bytes((131, 7, 4)) + C4                                    # RFC 7126 §4.3
    st.receive(T0, from_b4(options=lsrr + b"\x00"), clock.now())
    assert out(st) == [] and st.stats[Drop.IPV4_SOURCE_ROUTE] == 1


@pytest.mark.parametrize("ttl", [0, 1])
def test_ipv4_ttl_exhausted_gives_time_exceeded_from_egress_address(ttl: int) -> None:
    st, clock = router()
    st.receive(T0, from_b4(ttl=ttl), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p.dst, p[IP].src, p[IP].dst) == (T0, smac(MAC_B), fmt(R0_4), fmt(B4))
    assert (p[ICMP].type, p[ICMP].code) == (11, 0)
    assert st.stats[Drop.IPV4_TTL_EXCEEDED] == 1


def test_ipv4_no_route_gives_net_unreachable() -> None:
    st, clock = router()
    st.receive(T0, from_b4(dst=ip4("198.18.0.1")), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p[ICMP].type, p[ICMP].code, p[IP].src) == (T0, 3, 0, fmt(R0_4))
    assert st.stats[Drop.IPV4_NO_ROUTE] == 1


def test_ipv4_df_too_big_gives_fragmentation_needed_with_next_hop_mtu() -> None:
    st, clock = router(mtu1=1280)
    st.receive(T0, from_b4(size=1400, df=True), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p[ICMP].type, p[ICMP].code, p[ICMP].nexthopmtu) == (T0, 3, 4, 1280)
    assert len(p[IP]) <= 576
    assert st.stats[Drop.IPV4_NEEDS_FRAG] == 1


def test_ipv4_without_df_is_fragmented_to_the_next_hop_mtu() -> None:
    st, clock = router(mtu1=576)
    st.receive(T0, from_b4(size=1400), clock.now())
    frags = out(st)
    assert len(frags) == 3 and all(ifx == T1 and len(p[IP]) <= 576 for ifx, p in frags)
    assert all(p[IP].ttl == 63 and p[IP].id == 77 for _, p in frags)
    [whole] = defragment([p[IP] for _, p in frags])
    want = Ether(from_b4(size=1400))[IP]
    assert bytes(whole[UDP]) == bytes(want[UDP])


def test_ipv4_martians_and_directed_broadcasts_are_not_forwarded() -> None:
    st, clock = router()
    st.receive(T0, from_b4(src=ip4("169.254.1.1")), clock.now())
    st.receive(T0, from_b4(dst=ip4("169.254.1.1")), clock.now())
    st.receive(T0, from_b4(dst=ip4("0.1.2.3")), clock.now())
    st.receive(T0, from_b4(dst=ip4("203.0.113.255")), clock.now())    # RFC 2644
    st.receive(T0, from_b4(l2=b"\xff" * 6), clock.now())
    assert out(st) == []
    assert st.stats[Drop.IPV4_MARTIAN] == 3
    assert st.stats[Drop.IPV4_DIRECTED_BROADCAST] == 1
    assert st.stats[Drop.IPV4_NOT_FOR_US] == 1


def test_forward_trace_line() -> None:
    st, clock = router()
    lines: list[str] = []
    st.tracer = lines.append
    st.receive(T0, from_b4(), clock.now())
    st.receive(T0, from_b6(), clock.now())
    assert "ip_forward rcvif=tap0 ifp=tap1 src=192.0.2.1 dst=203.0.113.5 nexthop=203.0.113.5" in lines
    assert "ip6_forward rcvif=tap0 ifp=tap1 src=2001:db8:1::1 dst=2001:db8:2::1 " \
        "nexthop=2001:db8:2::1" in lines


# -- host mode -------------------------------------------------------------------------------


def test_forwarding_off_drops_what_is_not_for_us() -> None:
    st, clock = router(forwarding=False)
    st.receive(T0, from_b6(), clock.now())
    st.receive(T0, from_b4(), clock.now())
    st.receive(T0, from_b4(ttl=1), clock.now())
    assert out(st) == []
    assert st.stats[Drop.IPV6_NOT_FOR_US] == 1 and st.stats[Drop.IPV4_NOT_FOR_US] == 2


# -- v4-via-v6 router ------------------------------------------------------------------------


def test_ipv4_forwarded_via_ipv6_next_hop_resolved_by_nd() -> None:
    st, clock = router()
    st.add_route(ip4("198.51.100.0"), 24, gateway=ip6("fe80::e"), gw_zone=T1, now=clock.now())
    st.receive(T0, from_b4(dst=ip4("198.51.100.9")), clock.now())
    [(ifx, ns)] = out(st)
    assert (ifx, ns.type, ns[IPv6].dst, ns[IPv6].src) == (T1, ETHERTYPE_IPV6, "ff02::1:ff00:e", fmt(LL_R1))
    mac_e = mac("02:00:00:00:00:0e")
    na = Ether(src=smac(mac_e), dst=smac(R1)) / IPv6(src="fe80::e", dst=fmt(LL_R1), hlim=255) / \
        ICMPv6ND_NA(tgt="fe80::e", R=1, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(mac_e))
    st.receive(T1, bytes(na), clock.now())
    [(ifx, p)] = out(st)
    assert (ifx, p.type, p.dst, p[IP].dst, p[IP].ttl) == (T1, ETHERTYPE_IPV4, smac(mac_e), "198.51.100.9", 63)


def test_ipv4_via_unresolvable_ipv6_next_hop_gives_host_unreachable() -> None:
    st, clock = router()
    st.add_route(ip4("198.51.100.0"), 24, gateway=ip6("fe80::e"), gw_zone=T1, now=clock.now())
    st.receive(T0, from_b4(dst=ip4("198.51.100.9")), clock.now())
    settle(st, clock, s(4))
    sent = out(st)
    assert [ifx for ifx, _ in sent] == [T1, T1, T1, T0]
    p = sent[-1][1]
    assert (p[IP].src, p[IP].dst, p[ICMP].type, p[ICMP].code) == (fmt(R0_4), fmt(B4), 3, 1)
    assert st.stats[Drop.ND_RESOLUTION_FAILED] == 1


# -- Redirects -------------------------------------------------------------------------------


def test_ipv6_redirect_to_a_better_router_on_the_same_link() -> None:
    st, clock = router()
    st.add_route(ip6("2001:db8:9::"), 64, gateway=LL_D, gw_zone=T0, now=clock.now())
    st.receive(T0, from_b6(dst=ip6("2001:db8:9::1")), clock.now())
    sent = out(st)
    [red] = [p for _, p in sent if p.haslayer(ICMPv6ND_Redirect)]
    [fwd] = [p for _, p in sent if not p.haslayer(ICMPv6ND_Redirect)]
    assert (fwd.dst, fwd[IPv6].hlim) == (smac(MAC_D), 63)            # still forwarded
    assert (red.dst, red[IPv6].src, red[IPv6].dst, red[IPv6].hlim) == \
        (smac(MAC_B), fmt(LL_R0), fmt(B6), 255)                      # RFC 4861 §4.5
    r = red[ICMPv6ND_Redirect]
    assert (r.tgt, r.dst) == (fmt(LL_D), "2001:db8:9::1")
    assert red[ICMPv6NDOptDstLLAddr].lladdr == smac(MAC_D)
    assert red.haslayer(ICMPv6NDOptRedirectedHdr) and len(red[IPv6]) <= 1280


def test_ipv6_redirect_to_an_on_link_destination_names_the_destination() -> None:
    st, clock = router()
    st.add_neighbor(T0, ip6("2001:db8:1::7"), mac("02:00:00:00:00:07"), clock.now())
    st.receive(T0, from_b6(dst=ip6("2001:db8:1::7")), clock.now())
    [red] = [p for _, p in out(st) if p.haslayer(ICMPv6ND_Redirect)]
    assert (red[ICMPv6ND_Redirect].tgt, red[ICMPv6ND_Redirect].dst) == ("2001:db8:1::7",) * 2


def test_no_ipv6_redirect_when_the_source_is_not_a_neighbor_or_the_gateway_is_global() -> None:
    st, clock = router()
    st.add_route(ip6("2001:db8:9::"), 64, gateway=LL_D, gw_zone=T0, now=clock.now())
    st.add_route(ip6("2001:db8:8::"), 64, gateway=ip6("2001:db8:1::d"), now=clock.now())
    st.add_neighbor(T0, ip6("2001:db8:1::d"), MAC_D, clock.now())
    st.receive(T0, from_b6(src=ip6("2001:db8:77::1"), dst=ip6("2001:db8:9::1")), clock.now())
    st.receive(T0, from_b6(dst=ip6("2001:db8:8::1")), clock.now())
    sent = out(st)
    assert len(sent) == 2 and not any(p.haslayer(ICMPv6ND_Redirect) for _, p in sent)


def test_ipv4_host_redirect_on_the_same_subnet() -> None:
    st, clock = router()
    st.add_neighbor(T0, ip4("192.0.2.9"), MAC_D, clock.now())
    st.add_route(ip4("10.9.0.0"), 16, gateway=ip4("192.0.2.9"), now=clock.now())
    st.receive(T0, from_b4(dst=ip4("10.9.0.1")), clock.now())
    sent = out(st)
    [red] = [p for _, p in sent if p.haslayer(ICMP)]
    [fwd] = [p for _, p in sent if not p.haslayer(ICMP)]
    assert (fwd.dst, fwd[IP].ttl) == (smac(MAC_D), 63)
    assert (red[IP].src, red[IP].dst, red[ICMP].type, red[ICMP].code, red[ICMP].gw) == \
        (fmt(R0_4), fmt(B4), 5, 1, "192.0.2.9")                      # RFC 1812 §5.2.7.2


def test_no_redirect_when_redirects_are_off() -> None:
    st, clock = router()
    st.ip4.send_redirects = st.ip6.send_redirects = False
    st.add_neighbor(T0, ip4("192.0.2.9"), MAC_D, clock.now())
    st.add_route(ip4("10.9.0.0"), 16, gateway=ip4("192.0.2.9"), now=clock.now())
    st.add_route(ip6("2001:db8:9::"), 64, gateway=LL_D, gw_zone=T0, now=clock.now())
    st.receive(T0, from_b4(dst=ip4("10.9.0.1")), clock.now())
    st.receive(T0, from_b6(dst=ip6("2001:db8:9::1")), clock.now())
    assert len(out(st)) == 2


def test_forwarded_frames_parse_cleanly() -> None:
    st, clock = router()
    st.receive(T0, from_b6(), clock.now())
    st.receive(T0, from_b4(), clock.now())
    for _, raw in st.drain_tx():
        f = parse_frame(raw)
        assert f.csum_ok and f.ethertype in (ETHERTYPE_IPV6, ETHERTYPE_IPV4)

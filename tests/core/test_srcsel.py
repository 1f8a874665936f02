"""Source address selection: RFC 6724 rule by rule; IPv4 (RFC 5549 aware) order."""

from __future__ import annotations

import errno

import pytest
from harness import GA_A, GA_B, LL_A, LL_B, MAC_B, MAC_C, one_stack, only, settle

from stack.core.clock import ManualClock, ms
from stack.core.interface import Addr4, Addr6, AddrState, Interface, Kind, Origin, loopback_interface
from stack.core.ipservice import RouteError
from stack.core.srcsel import POLICY_TABLE, candidates6, policy, select_source4, select_source6
from stack.core.stack import Stack
from stack.wire.addr import fmt, fmt_prefix, ip4, ip6, link_local_from_mac, needs_zone
from stack.wire.frame import parse_frame


def iface(ifx: int, *addrs: tuple[str, int] | tuple[str, int, AddrState]) -> Interface:
    i = Interface(ifx, f"tap{ifx - 2}", Kind.ETHERNET, bytes(5) + bytes([ifx]), 1500)
    for a in addrs:
        state = a[2] if len(a) == 3 else AddrState.PREFERRED
        i.addrs6.append(Addr6(ip6(a[0]), a[1], state, Origin.STATIC))
    return i


def pick(ifaces: list[Interface], dst: str, zone: int = 0, out_if: int = 2) -> str:
    r = select_source6(ifaces, ip6(dst), zone, out_if)
    assert r is not None
    import ipaddress
    return str(ipaddress.IPv6Address(r[0]))


def test_rule1_prefer_same_address() -> None:
    i = iface(2, ("2001:db8:1::1", 64), ("2001:db8:1::2", 64))
    assert pick([i], "2001:db8:1::2") == "2001:db8:1::2"


def test_rule2_prefer_appropriate_scope_global_dst() -> None:
    i = iface(2, ("fe80::1", 64), ("2001:db8:1::1", 64))
    assert pick([i], "2001:db8:9::9") == "2001:db8:1::1"


def test_rule2_prefer_appropriate_scope_link_local_dst() -> None:
    i = iface(2, ("2001:db8:1::1", 64), ("fe80::1", 64))
    assert pick([i], "fe80::9", zone=2) == "fe80::1"


def test_rule3_avoid_deprecated() -> None:
    i = iface(2, ("2001:db8:1::1", 64, AddrState.DEPRECATED), ("2001:db8:2::1", 64))
    assert pick([i], "2001:db8:1::9") == "2001:db8:2::1"


def test_tentative_and_duplicated_are_not_candidates() -> None:
    i = iface(2, ("2001:db8:1::1", 64, AddrState.TENTATIVE), ("2001:db8:1::3", 64, AddrState.DUPLICATED),
              ("2001:db8:2::1", 64))
    assert pick([i], "2001:db8:1::9") == "2001:db8:2::1"


def test_rule5_prefer_outgoing_interface() -> None:
    a = iface(2, ("2001:db8:1::1", 64))
    b = iface(3, ("2001:db8:1::1:1", 64))
    assert pick([a, b], "2001:db8:7::9", out_if=3) == "2001:db8:1::1:1"
    assert pick([a, b], "2001:db8:7::9", out_if=2) == "2001:db8:1::1"


def test_rule6_prefer_matching_label() -> None:
    # 2002::/16 (6to4, label 2) vs 2001:db8 (label 1 via ::/0; 2001::/32 is label 5)
    i = iface(2, ("2002:c000:204::1", 48), ("2001:db8:1::1", 64))
    assert policy(ip6("2002:c000:204::9"))[1] == 2
    assert pick([i], "2002:c000:299::9") == "2002:c000:204::1"


def test_rule8_longest_matching_prefix() -> None:
    i = iface(2, ("2001:db8:1::1", 64), ("2001:db8:2::1", 64))
    assert pick([i], "2001:db8:2::77") == "2001:db8:2::1"
    assert pick([i], "2001:db8:1::77") == "2001:db8:1::1"


def test_link_local_destination_only_sees_its_zone() -> None:
    a = iface(2, ("fe80::a", 64))
    b = iface(3, ("fe80::b", 64))
    assert pick([a, b], "fe80::1", zone=3, out_if=3) == "fe80::b"
    assert pick([a, b], "fe80::1", zone=2, out_if=2) == "fe80::a"
    assert [c[1] for c in candidates6([a, b], ip6("fe80::1"), 3)] == [3]


def test_loopback_only_for_loopback_destination() -> None:
    lo = loopback_interface()
    a = iface(2, ("2001:db8:1::1", 64))
    assert pick([lo, a], "::1", out_if=1) == "::1"
    assert pick([lo, a], "2001:db8:1::7") == "2001:db8:1::1"


def test_route_src_wins_when_candidate() -> None:
    i = iface(2, ("2001:db8:1::1", 64), ("2001:db8:2::1", 64))
    r = select_source6([i], ip6("2001:db8:1::9"), 0, 2, ip6("2001:db8:2::1"))
    assert r is not None and r[0] == ip6("2001:db8:2::1")


def test_no_candidates_gives_none() -> None:
    i = iface(2, ("2001:db8:1::1", 64, AddrState.TENTATIVE))
    assert select_source6([i], ip6("2001:db8:1::9"), 0, 2) is None


# -- IPv4 ---------------------------------------------------------------------


def v4(ifx: int, *addrs: tuple[str, int]) -> Interface:
    i = Interface(ifx, f"tap{ifx - 2}", Kind.ETHERNET, bytes(6), 1500)
    for a, plen in addrs:
        i.addrs4.append(Addr4(ip4(a), plen))
    return i


def test_v4_route_src_first() -> None:
    ifs = {1: loopback_interface(), 2: v4(2, ("192.0.2.2", 24))}
    assert select_source4(ifs, ip4("203.0.113.2"), 2, ip4("198.51.100.7")) == ip4("198.51.100.7")


def test_v4_egress_address_matching_subnet_first() -> None:
    ifs = {1: loopback_interface(), 2: v4(2, ("192.0.2.2", 24), ("198.51.100.2", 24))}
    assert select_source4(ifs, ip4("198.51.100.9"), 2) == ip4("198.51.100.2")
    assert select_source4(ifs, ip4("203.0.113.9"), 2) == ip4("192.0.2.2")


def test_v4_egress_without_ipv4_takes_loopback_address_not_127() -> None:
    lo = loopback_interface()
    lo.addrs4.append(Addr4(ip4("198.51.100.1"), 32))
    ifs = {1: lo, 2: v4(2), 3: v4(3, ("192.0.2.2", 24))}
    # RFC 5549 case: tap with only IPv6 link-local; loopback's address wins over other ifaces.
    assert select_source4(ifs, ip4("203.0.113.2"), 2) == ip4("198.51.100.1")


def test_v4_falls_back_to_another_interface() -> None:
    ifs = {1: loopback_interface(), 2: v4(2), 3: v4(3, ("192.0.2.2", 24))}
    assert select_source4(ifs, ip4("203.0.113.2"), 2) == ip4("192.0.2.2")


def test_v4_nothing_at_all_is_none() -> None:
    ifs = {1: loopback_interface(), 2: v4(2)}
    assert select_source4(ifs, ip4("203.0.113.2"), 2) is None


# -- RFC 6724 §2.1 default policy table -------------------------------------------------------


@pytest.mark.parametrize(("addr", "precedence", "label"), [
    ("::1", 50, 0),                       # ::1/128
    ("2001:db8:1::2", 40, 1),             # ::/0 (2001:db8::/32 is not in 2001::/32)
    ("::ffff:192.0.2.1", 35, 4),          # ::ffff:0:0/96
    ("2002:c000:204::1", 30, 2),          # 2002::/16 (6to4)
    ("2001:0:4136:e378::1", 5, 5),        # 2001::/32 (Teredo)
    ("fd00:db8::1", 3, 13),               # fc00::/7 (ULA)
    ("fc00::1", 3, 13),
    ("::c000:201", 1, 3),                 # ::/96 (IPv4-compatible)
    ("fec0::1", 1, 11),                   # fec0::/10 (site-local)
    ("3ffe::1", 1, 12),                   # 3ffe::/16 (6bone)
    ("fe80::1", 40, 1),                   # link-local: ::/0
    ("3fff::1", 40, 1),                   # ::/0
])
def test_default_policy_table(addr: str, precedence: int, label: int) -> None:
    assert policy(ip6(addr)) == (precedence, label)


def test_default_policy_table_is_rfc6724_section_2_1() -> None:
    assert sorted((fmt_prefix(p, n), prec, lab) for p, n, prec, lab in POLICY_TABLE) == sorted([
        ("::1/128", 50, 0), ("default", 40, 1), ("::ffff:0:0/96", 35, 4), ("2002::/16", 30, 2),
        ("2001::/32", 5, 5), ("fc00::/7", 3, 13), ("::/96", 1, 3), ("fec0::/10", 1, 11), ("3ffe::/16", 1, 12)])


# -- the same rules frame-in/frame-out: the source of what a Stack sends -----------------------
# A UDP datagram from an unbound socket (or one bound as named) to a destination; the
# source of the frame on the wire (or on lo, for our own addresses) is what the rule says.


def frame_src(st: Stack, clock: ManualClock, dst: str, zone: int = 0, bind: str | None = None) -> str:
    looped: list[bytes] = []
    st.loop_tap = looped.append
    ep = st.udp.bind(ip6(bind) if bind else None, 0, zone if bind and needs_zone(ip6(bind)) else 0)
    try:
        ep.sendto(b"which source?", ip6(dst), 9, zone, clock.now())
        st.poll(clock.now())
    finally:
        ep.close()
    sent = [parse_frame(fr) for _ifx, fr in st.drain_tx()] + [parse_frame(fr) for fr in looped]
    f = only(f for f in sent if f.proto == 17)
    return fmt(f.src)


def stack6(*addrs: tuple[int, str, int]) -> tuple[Stack, ManualClock]:
    """one_stack (tap0 = 2, 2001:db8:1::2/64) without DAD plus tap1 (3) and addresses
    (ifindex, address, plen); peers B on both links are PERMANENT neighbors."""
    st, clock = one_stack(dad=False)
    st.add_interface("tap1", MAC_C, now=clock.now(), dad_transmits=0)
    for ifx, a, plen in addrs:
        st.add_address(ifx, ip6(a), plen, clock.now())
    for ifx in (2, 3):
        st.add_neighbor(ifx, LL_B, MAC_B, clock.now())
    st.add_neighbor(2, GA_B, MAC_B, clock.now())
    st.add_route(bytes(16), 0, gateway=LL_B, gw_zone=2, now=clock.now())    # default via tap0
    settle(st, clock, ms(10))
    st.drain_tx()
    return st, clock


def deprecate(st: Stack, ifx: int, addr: str) -> None:
    a = st.interfaces[ifx].find6(ip6(addr))
    assert a is not None
    a.state = AddrState.DEPRECATED
    st.routes.bump()


def test_frames_rule1_prefer_same_address_even_deprecated() -> None:
    st, clock = stack6((2, "2001:db8:1::3", 64))
    deprecate(st, 2, "2001:db8:1::3")
    # rule 1 comes before rule 3: to our own deprecated address, that address is the source
    assert frame_src(st, clock, "2001:db8:1::3") == "2001:db8:1::3"
    assert frame_src(st, clock, "2001:db8:1::2") == "2001:db8:1::2"


def test_frames_rule2_prefer_appropriate_scope() -> None:
    st, clock = stack6()
    assert frame_src(st, clock, "fe80::b", zone=2) == fmt(LL_A)               # link-local dst
    assert frame_src(st, clock, "2001:db8:77::9") == "2001:db8:1::2"          # global dst (via fe80::b)
    # global destination and only a link-local address on the outgoing link: rule 2 still
    # prefers a global source from another interface over the smaller-scope one (§5 rule 2)
    st.add_route(ip6("2001:db8:88::"), 64, gateway=LL_B, gw_zone=3, now=clock.now())
    assert frame_src(st, clock, "2001:db8:88::9") == "2001:db8:1::2"


def test_frames_rule3_avoid_deprecated_addresses() -> None:
    st, clock = stack6((2, "2001:db8:1::3", 64))
    assert frame_src(st, clock, "2001:db8:1::1") == "2001:db8:1::2"          # tie: the first
    deprecate(st, 2, "2001:db8:1::2")
    assert frame_src(st, clock, "2001:db8:1::1") == "2001:db8:1::3"


def test_frames_rule5_prefer_outgoing_interface() -> None:
    # tap0's 2001:db8:9::2 shares 63 bits with the destination, tap1's 2001:db8:2::1 44:
    # rule 8 alone would take tap0's; the route goes out tap1, so rule 5 takes tap1's.
    st, clock = stack6((2, "2001:db8:9::2", 64), (3, "2001:db8:2::1", 64))
    st.add_route(ip6("2001:db8:9:1::"), 64, gateway=LL_B, gw_zone=3, now=clock.now())
    assert frame_src(st, clock, "2001:db8:9:1::9") == "2001:db8:2::1"


def test_frames_rule6_prefer_matching_label() -> None:
    # destination 2001:db8:... (label 1); 2001:0:4136:e378::1 (Teredo, label 5) shares 20
    # bits with it, 3fff::1 (label 1) only 3: rule 6 picks 3fff::1 before rule 8 could.
    st, clock = stack6((2, "2001:0:4136:e378::1", 64), (2, "3fff::1", 64))
    st.remove_address(2, GA_A, clock.now())
    assert frame_src(st, clock, "2001:db8:77::9") == "3fff::1"


def test_frames_rule8_longest_matching_prefix() -> None:
    st, clock = stack6((2, "2001:db8:77::2", 64))
    assert frame_src(st, clock, "2001:db8:77:1::9") == "2001:db8:77::2"
    assert frame_src(st, clock, "2001:db8:1:1::9") == "2001:db8:1::2"


def test_frames_link_local_destination_sees_only_its_own_link() -> None:
    st, clock = stack6()
    ll_c = link_local_from_mac(MAC_C)
    assert frame_src(st, clock, "fe80::b", zone=3) == fmt(ll_c)
    assert frame_src(st, clock, "fe80::b", zone=2) == fmt(LL_A)
    # tap1's link-local gone: no borrowing tap0's for a destination on tap1
    st.remove_address(3, ll_c, clock.now())
    with pytest.raises(RouteError) as ei:
        st.route_output(ip6("fe80::b"), 3, None, clock.now())
    assert ei.value.errno == errno.EADDRNOTAVAIL


def test_frames_a_socket_bound_to_an_address_keeps_it() -> None:
    st, clock = stack6((2, "2001:db8:1::3", 64), (1, "2001:db8:ff::1", 128))
    deprecate(st, 2, "2001:db8:1::3")
    # every rule would pick 2001:db8:1::2; the bound addresses stay, deprecated or on lo
    for bound in ("2001:db8:1::3", "2001:db8:ff::1"):
        assert frame_src(st, clock, "2001:db8:1::1", bind=bound) == bound
        assert frame_src(st, clock, "2001:db8:77::9", bind=bound) == bound
    # and through a route change: the same socket's next datagram looks up again, same source
    ep = st.udp.bind(ip6("2001:db8:1::3"), 0)
    ep.sendto(b"1", GA_B, 9, 0, clock.now())
    st.add_route(ip6("2001:db8:99::"), 64, gateway=GA_B, now=clock.now())
    ep.sendto(b"2", GA_B, 9, 0, clock.now())
    assert [fmt(parse_frame(fr).src) for _i, fr in st.drain_tx()] == ["2001:db8:1::3"] * 2
    # TCP: a connection opened from a chosen source keeps it in every segment
    conn = st.tcp.connect(GA_B, 7, 0, ip6("2001:db8:1::3"), clock.now())
    assert conn.local == ip6("2001:db8:1::3")
    [syn] = [parse_frame(fr) for _i, fr in st.drain_tx()]
    assert (syn.proto, fmt(syn.src)) == (6, "2001:db8:1::3")

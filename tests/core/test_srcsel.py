"""Source address selection: RFC 6724 rule by rule; IPv4 (RFC 5549 aware) order."""

from __future__ import annotations

from stack.core.interface import Addr4, Addr6, AddrState, Interface, Kind, Origin, loopback_interface
from stack.core.srcsel import candidates6, policy, select_source4, select_source6
from stack.wire.addr import ip4, ip6


def iface(ifx: int, *addrs: tuple[str, int] | tuple[str, int, AddrState]) -> Interface:
    i = Interface(ifx, f"tap{ifx - 2}", Kind.ETHERNET, bytes(5) + bytes([ifx]), 1500)
    for a in addrs:
        state = a[2] if len(a) == 3 else AddrState.PREFERRED  # type: ignore[misc]
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

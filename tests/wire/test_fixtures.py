"""Byte fixtures: scapy (the oracle) still builds them, and so do our builders.

smoltcp's deconstruct/construct pattern: the bytes are pinned in
tests/fixtures/*.hex, scapy recipes in tests/fixtures/oracle.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stack.wire.addr import ALL_NODES, ALL_ROUTERS, BROADCAST_MAC, ip4, ip6, mac, solicited_node
from stack.wire.arp import build_arp_reply, build_arp_request
from stack.wire.ethernet import eth_frame, eth_header
from stack.wire.frame_types import (
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    PROTO_DSTOPTS,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_UDP,
)
from stack.wire.icmpv4 import ECHO_REQUEST as ECHO4
from stack.wire.icmpv4 import build_echo4, build_frag_needed4
from stack.wire.icmpv6 import DST_UNREACH, ECHO_REPLY, ECHO_REQUEST, UNREACH_PORT, build_echo6, build_error6
from stack.wire.ipv4 import Ipv4Header, build_ipv4, fragment_ipv4
from stack.wire.ipv6 import build_ipv6, fragment_ipv6, hbh_router_alert
from stack.wire.ndp import (
    CHANGE_TO_EXCLUDE,
    MODE_IS_INCLUDE,
    PrefixInfo,
    build_mldv2_report,
    build_na,
    build_ns,
    build_ra,
    build_redirect,
    build_rs,
)
from stack.wire.udp import build_udp
from tests.fixtures import oracle
from tests.fixtures.oracle import BIG_DATA, NONCE, PING_DATA, RECIPES, UDP_DATA, read_fixture

MAC_A = mac(oracle.MAC_A)
MAC_B = mac(oracle.MAC_B)
MAC_R = mac(oracle.MAC_R)
LL_A, LL_B, LL_R = ip6("fe80::a"), ip6("fe80::b"), ip6("fe80::1")
G1, G2 = ip6("2001:db8:1::1"), ip6("2001:db8:1::2")
V4_1, V4_2 = ip4("192.0.2.1"), ip4("192.0.2.2")


def eth6(dst: bytes, src: bytes, packet: bytes) -> bytes:
    return eth_header(dst, src, ETHERTYPE_IPV6) + packet


def eth4(dst: bytes, src: bytes, packet: bytes) -> bytes:
    return eth_header(dst, src, ETHERTYPE_IPV4) + packet


def udp6_packet() -> bytes:
    return build_ipv6(G1, G2, PROTO_UDP, build_udp(G1, G2, 5353, 9, UDP_DATA))


def icmp6(src: bytes, dst: bytes, msg: bytes, hop_limit: int = 255) -> bytes:
    return build_ipv6(src, dst, PROTO_ICMPV6, msg, hop_limit=hop_limit)


def _ns() -> bytes:
    dst = solicited_node(LL_A)
    return eth6(mac("33:33:ff:00:00:0a"), MAC_B, icmp6(LL_B, dst, build_ns(LL_B, dst, LL_A, slla=MAC_B)))


def _ns_dad() -> bytes:
    dst, src = solicited_node(LL_A), bytes(16)
    return eth6(mac("33:33:ff:00:00:0a"), MAC_A, icmp6(src, dst, build_ns(src, dst, LL_A, nonce=NONCE)))


def _na() -> bytes:
    msg = build_na(LL_A, LL_B, LL_A, router=False, solicited=True, override=True, tlla=MAC_A)
    return eth6(MAC_B, MAC_A, icmp6(LL_A, LL_B, msg))


def _rs() -> bytes:
    return eth6(mac("33:33:00:00:00:02"), MAC_B, icmp6(LL_B, ALL_ROUTERS, build_rs(LL_B, ALL_ROUTERS, MAC_B)))


def _ra() -> bytes:
    prefix = PrefixInfo(ip6("2001:db8:1::"), 64, True, True, 86400, 14400)
    msg = build_ra(LL_R, ALL_NODES, 64, 1800, 30000, 1000, MAC_R, [prefix], 1500, other=True)
    return eth6(mac("33:33:00:00:00:01"), MAC_R, icmp6(LL_R, ALL_NODES, msg))


def _redirect() -> bytes:
    msg = build_redirect(LL_R, LL_A, ip6("fe80::2"), G2, tlla=MAC_B, redirected=udp6_packet())
    return eth6(MAC_A, MAC_R, icmp6(LL_R, LL_A, msg))


def _echo6_request() -> bytes:
    return eth6(MAC_A, MAC_B, icmp6(G1, G2, build_echo6(G1, G2, ECHO_REQUEST, 0x1234, 1, PING_DATA), 64))


def _echo6_reply() -> bytes:
    return eth6(MAC_B, MAC_A, icmp6(G2, G1, build_echo6(G2, G1, ECHO_REPLY, 0x1234, 1, PING_DATA), 64))


def _mldv2_report() -> bytes:
    records = [(CHANGE_TO_EXCLUDE, ip6("ff02::1:ff00:a"), []),
               (MODE_IS_INCLUDE, ip6("ff05::1:3"), [ip6("2001:db8::53"), ip6("2001:db8::54")])]
    msg = build_mldv2_report(LL_A, records)
    packet = build_ipv6(LL_A, ip6("ff02::16"), PROTO_ICMPV6, msg, hop_limit=1, router_alert=True)
    return eth6(mac("33:33:00:00:00:16"), MAC_A, packet)


def _arp_request() -> bytes:
    return eth_header(BROADCAST_MAC, MAC_B, ETHERTYPE_ARP) + build_arp_request(MAC_B, V4_1, V4_2)


def _arp_reply() -> bytes:
    return eth_header(MAC_B, MAC_A, ETHERTYPE_ARP) + build_arp_reply(MAC_A, V4_2, MAC_B, V4_1)


def _udp6() -> bytes:
    return eth6(MAC_A, MAC_B, udp6_packet())


def _udp4() -> bytes:
    return eth4(MAC_A, MAC_B, build_ipv4(V4_1, V4_2, PROTO_UDP, build_udp(V4_1, V4_2, 5353, 9, UDP_DATA), ident=1))


def _udp4_padded() -> bytes:
    packet = build_ipv4(V4_1, V4_2, PROTO_UDP, build_udp(V4_1, V4_2, 5353, 9, b"hi"), ident=2)
    return eth_frame(MAC_A, MAC_B, ETHERTYPE_IPV4, packet, pad=True)


def _ipv4_options() -> bytes:
    dgram = build_udp(V4_1, V4_2, 5353, 9, UDP_DATA)
    hdr = Ipv4Header(0, 24 + len(dgram), 5, False, False, 0, 64, PROTO_UDP, 0, V4_1, V4_2, b"\x94\x04\x00\x00")
    return eth4(MAC_A, MAC_B, hdr.pack() + dgram)


def _icmp4_echo() -> bytes:
    return eth4(MAC_A, MAC_B, build_ipv4(V4_1, V4_2, PROTO_ICMP, build_echo4(ECHO4, 0x1234, 1, PING_DATA), ident=7))


def _ipv6_ext() -> bytes:
    dest_opts = bytes((PROTO_UDP, 0, 0x01, 0x04, 0, 0, 0, 0))  # PadN(4) fills 8 bytes
    payload = hbh_router_alert(PROTO_DSTOPTS) + dest_opts + build_udp(G1, G2, 5353, 9, UDP_DATA)
    packet = build_ipv6(G1, G2, 0, payload)
    return eth6(MAC_A, MAC_B, packet)


def _frag6() -> list[bytes]:
    packet = build_ipv6(G1, G2, PROTO_UDP, build_udp(G1, G2, 5353, 9, BIG_DATA))
    return [eth6(MAC_A, MAC_B, f) for f in fragment_ipv6(packet, 1280, 0xABCD)]


def _frag4() -> list[bytes]:
    packet = build_ipv4(V4_1, V4_2, PROTO_UDP, build_udp(V4_1, V4_2, 5353, 9, BIG_DATA), ident=0x77)
    return [eth4(MAC_A, MAC_B, f) for f in fragment_ipv4(packet, 20 + 552)]


def _icmp6_port_unreach() -> bytes:
    msg = build_error6(G2, G1, DST_UNREACH, UNREACH_PORT, 0, udp6_packet())
    return eth6(MAC_B, MAC_A, icmp6(G2, G1, msg, 64))


def _icmp4_frag_needed() -> bytes:
    dst = ip4("203.0.113.9")
    invoking = build_ipv4(V4_1, dst, PROTO_UDP, build_udp(V4_1, dst, 5353, 9, BIG_DATA), ttl=63, ident=9, df=True)
    return eth4(MAC_B, MAC_A, build_ipv4(V4_2, V4_1, PROTO_ICMP, build_frag_needed4(invoking, 1400), ident=3))


BUILDERS: dict[str, Callable[[], bytes]] = {
    "ns": _ns,
    "ns_dad": _ns_dad,
    "na": _na,
    "rs": _rs,
    "ra": _ra,
    "redirect": _redirect,
    "echo6_request": _echo6_request,
    "echo6_reply": _echo6_reply,
    "mldv2_report": _mldv2_report,
    "arp_request": _arp_request,
    "arp_reply": _arp_reply,
    "udp6": _udp6,
    "udp4": _udp4,
    "udp4_padded": _udp4_padded,
    "ipv4_options": _ipv4_options,
    "icmp4_echo": _icmp4_echo,
    "ipv6_ext": _ipv6_ext,
    "frag6_first": lambda: _frag6()[0],
    "frag6_last": lambda: _frag6()[-1],
    "frag4_first": lambda: _frag4()[0],
    "frag4_last": lambda: _frag4()[-1],
    "icmp6_port_unreach": _icmp6_port_unreach,
    "icmp4_frag_needed": _icmp4_frag_needed,
}
# Built elsewhere (TCP: stack/wire/tcp.py) or receive-only (queries): parsed in their modules' tests.
PARSE_ONLY = {"tcp6_syn", "tcp4_syn", "mld_query_v1", "mld_query_v2"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_scapy_still_builds_the_fixture(name: str) -> None:
    assert RECIPES[name]() == read_fixture(name)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_our_builder_matches_the_fixture(name: str) -> None:
    assert BUILDERS[name]().hex() == read_fixture(name).hex()


def test_every_fixture_is_built_or_listed_as_parse_only() -> None:
    assert set(RECIPES) == set(BUILDERS) | PARSE_ONLY


def test_fragment_counts_match_scapy() -> None:
    assert len(_frag6()) == len(oracle._frag6()) == 2
    assert [f.hex() for f in _frag4()] == [bytes(f).hex() for f in oracle._frag4()]

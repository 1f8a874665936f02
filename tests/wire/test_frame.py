"""parse_frame: fields of every fixture, every ParseError reason, edge shapes.

Every test runs against both the live parser (native when built) and the pure
reference; tests/native/test_equivalence.py compares them on mutated input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire.addr import ip4, ip6
from stack.wire.errors import ParseError
from stack.wire.ethernet import eth_header
from stack.wire.frame import REASONS, parse_frame, parse_frame_pure
from stack.wire.frame_types import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    PROTO_DSTOPTS,
    PROTO_FRAGMENT,
    PROTO_HOPOPTS,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_NONE,
    PROTO_ROUTING,
    PROTO_TCP,
    PROTO_UDP,
    Frame,
)
from stack.wire.icmpv4 import build_echo4
from stack.wire.icmpv6 import build_echo6
from stack.wire.ipv4 import build_ipv4
from stack.wire.ipv6 import build_ipv6
from stack.wire.udp import build_udp
from tests.fixtures.oracle import read_fixture

Parser = Callable[[bytes], Frame]
PARSERS = pytest.mark.parametrize("parse", [parse_frame, parse_frame_pure], ids=["live", "pure"])

MAC_A, MAC_B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")
G1, G2 = ip6("2001:db8:1::1"), ip6("2001:db8:1::2")
V1, V2 = ip4("192.0.2.1"), ip4("192.0.2.2")
ETH6 = eth_header(MAC_A, MAC_B, ETHERTYPE_IPV6)
ETH4 = eth_header(MAC_A, MAC_B, ETHERTYPE_IPV4)


def v6(nh: int, payload: bytes) -> bytes:
    return ETH6 + build_ipv6(G1, G2, nh, payload)


def v4(proto: int, payload: bytes, **kw: int) -> bytes:
    return ETH4 + build_ipv4(V1, V2, proto, payload, **kw)  # type: ignore[arg-type]


def ext(nh: int, length: int = 8) -> bytes:
    """An options-type extension header of ``length`` bytes (PadN filled)."""
    return bytes((nh, length // 8 - 1, 0x01, length - 4)) + bytes(length - 4)


def patch(buf: bytes, off: int, value: bytes) -> bytes:
    return buf[:off] + value + buf[off + len(value) :]


TCP20 = bytes.fromhex("9c40000700000000000000005002ffff00000000")  # doff 5, checksum not filled

# --- fixtures -----------------------------------------------------------------

EXPECTED = {
    # name: (ip_version, proto, l4_off, ip_end, sport, dport, icmp_type, icmp_code, is_fragment)
    "ns": (6, PROTO_ICMPV6, 54, 86, 0, 0, 135, 0, False),
    "na": (6, PROTO_ICMPV6, 54, 86, 0, 0, 136, 0, False),
    "rs": (6, PROTO_ICMPV6, 54, 70, 0, 0, 133, 0, False),
    "ra": (6, PROTO_ICMPV6, 54, 118, 0, 0, 134, 0, False),
    "redirect": (6, PROTO_ICMPV6, 54, 174, 0, 0, 137, 0, False),
    "echo6_request": (6, PROTO_ICMPV6, 54, 86, 0, 0, 128, 0, False),
    "mldv2_report": (6, PROTO_ICMPV6, 62, 142, 0, 0, 143, 0, False),
    "arp_request": (0, 0, 0, 0, 0, 0, 0, 0, False),
    "tcp6_syn": (6, PROTO_TCP, 54, 94, 40000, 7, 0, 0, False),
    "tcp4_syn": (4, PROTO_TCP, 34, 74, 40000, 7, 0, 0, False),
    "udp6": (6, PROTO_UDP, 54, 78, 5353, 9, 0, 0, False),
    "udp4": (4, PROTO_UDP, 34, 58, 5353, 9, 0, 0, False),
    "udp4_padded": (4, PROTO_UDP, 34, 44, 5353, 9, 0, 0, False),
    "ipv4_options": (4, PROTO_UDP, 38, 62, 5353, 9, 0, 0, False),
    "icmp4_echo": (4, PROTO_ICMP, 34, 66, 0, 0, 8, 0, False),
    "ipv6_ext": (6, PROTO_UDP, 70, 94, 5353, 9, 0, 0, False),
    "frag6_first": (6, PROTO_UDP, 62, 1294, 0, 0, 0, 0, True),
    "frag4_last": (4, PROTO_UDP, 34, 474, 0, 0, 0, 0, True),
    "icmp6_port_unreach": (6, PROTO_ICMPV6, 54, 126, 0, 0, 1, 4, False),
    "icmp4_frag_needed": (4, PROTO_ICMP, 34, 590, 0, 0, 3, 4, False),
}


@PARSERS
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_fields(parse: Parser, name: str) -> None:
    buf = read_fixture(name)
    f = parse(buf)
    got = (f.ip_version, f.proto, f.l4_off, f.ip_end, f.sport, f.dport, f.icmp_type, f.icmp_code, f.is_fragment)
    assert got == EXPECTED[name]
    assert f.csum_ok and f.buf is buf and f.l3_off == 14
    assert (f.eth_dst, f.eth_src) == (buf[0:6], buf[6:12])


@PARSERS
def test_ipv6_header_fields(parse: Parser) -> None:
    f = parse(read_fixture("ns"))
    assert (f.src, f.dst, f.hop_limit, f.tclass, f.flow_label) == (ip6("fe80::b"), ip6("ff02::1:ff00:a"), 255, 0, 0)
    g = parse(ETH6 + build_ipv6(G1, G2, PROTO_NONE, b"", hop_limit=7, tclass=0xB8, flow_label=0xABCDE))
    assert (g.hop_limit, g.tclass, g.flow_label, g.proto, g.l4_off, g.ip_end) == (7, 0xB8, 0xABCDE, 59, 54, 54)


@PARSERS
def test_ipv4_header_fields(parse: Parser) -> None:
    f = parse(read_fixture("tcp4_syn"))
    assert (f.src, f.dst, f.hop_limit, f.df, f.frag_id, f.ethertype) == (V1, V2, 64, True, 0x4242, ETHERTYPE_IPV4)
    assert f.ext == () and f.flow_label == 0


@PARSERS
def test_ipv6_extension_chain_and_fragment_fields(parse: Parser) -> None:
    f = parse(read_fixture("ipv6_ext"))
    assert f.ext == ((PROTO_HOPOPTS, 54, 8), (PROTO_DSTOPTS, 62, 8))
    last = parse(read_fixture("frag6_last"))
    assert last.ext == ((PROTO_FRAGMENT, 54, 8),)
    assert (last.frag_off, last.frag_more, last.frag_id, last.proto, last.l4_off) == (1232, False, 0xABCD, 17, 62)
    first = parse(read_fixture("frag6_first"))
    assert (first.frag_off, first.frag_more) == (0, True)


@PARSERS
def test_routing_header_is_walked_and_unknown_next_header_ends_the_chain(parse: Parser) -> None:
    routing = bytes((PROTO_DSTOPTS, 0, 4, 0, 0, 0, 0, 0))  # type 4 (SRH-like), segments left 0
    f = parse(v6(PROTO_ROUTING, routing + ext(253) + b"payload!"))
    assert f.ext == ((PROTO_ROUTING, 54, 8), (PROTO_DSTOPTS, 62, 8))
    assert (f.proto, f.l4_off, f.csum_ok) == (253, 70, True)


@PARSERS
def test_atomic_fragment_is_a_fragment(parse: Parser) -> None:
    frag = bytes((PROTO_UDP, 0, 0, 0)) + (7).to_bytes(4, "big")
    f = parse(v6(PROTO_FRAGMENT, frag + build_udp(G1, G2, 1, 2, b"x")))
    assert (f.is_fragment, f.frag_off, f.frag_more, f.frag_id, f.sport) == (True, 0, False, 7, 0)


@PARSERS
def test_ipv4_fragment_fields(parse: Parser) -> None:
    f = parse(read_fixture("frag4_first"))
    assert (f.is_fragment, f.frag_off, f.frag_more, f.frag_id, f.sport) == (True, 0, True, 0x77, 0)
    g = parse(read_fixture("frag4_last"))
    assert (g.frag_off, g.frag_more) == (1104, False)


@PARSERS
def test_padding_is_excluded_by_ip_end(parse: Parser) -> None:
    buf = read_fixture("udp4_padded")
    assert len(buf) == 60 and parse(buf).ip_end == 44
    f = parse(read_fixture("udp6") + bytes(10))
    assert (f.ip_end, f.csum_ok) == (78, True)


@PARSERS
def test_non_ip_frames(parse: Parser) -> None:
    f = parse(read_fixture("arp_request"))
    assert (f.ethertype, f.ip_version, f.l3_off, f.src, f.ip_end, f.csum_ok) == (0x0806, 0, 14, b"", 0, True)
    vlan = parse(eth_header(MAC_A, MAC_B, 0x8100) + bytes(50))
    assert (vlan.ethertype, vlan.ip_version) == (0x8100, 0)
    assert parse(bytes(14)).ethertype == 0


@PARSERS
def test_bytearray_and_memoryview_input_give_a_bytes_buf(parse: Parser) -> None:
    buf = read_fixture("udp6")
    for b in (bytearray(buf), memoryview(buf)):
        f = parse(b)  # type: ignore[arg-type]
        assert type(f.buf) is bytes and f == parse(buf)


# --- checksum verdicts ------------------------------------------------------------


@PARSERS
@pytest.mark.parametrize("name, at", [("tcp6_syn", 70), ("tcp4_syn", 50), ("udp6", 60), ("udp4", 40),
                                      ("echo6_request", 56), ("icmp4_echo", 36), ("ns", 70)])
def test_bad_l4_checksum_gives_false_verdict(parse: Parser, name: str, at: int) -> None:
    buf = read_fixture(name)
    bad = patch(buf, at, bytes((buf[at] ^ 0x01,)))
    assert parse(buf).csum_ok and not parse(bad).csum_ok


@PARSERS
def test_zero_udp_checksum(parse: Parser) -> None:
    # RFC 768: zero = none over IPv4. RFC 8200 §8.1: not allowed over IPv6.
    assert parse(patch(read_fixture("udp4"), 40, b"\0\0")).csum_ok
    assert not parse(patch(read_fixture("udp6"), 60, b"\0\0")).csum_ok


@PARSERS
def test_udp_length_shorter_than_ip_payload(parse: Parser) -> None:
    dgram = build_udp(G1, G2, 1, 2, b"abc")
    f = parse(v6(PROTO_UDP, dgram + b"trailer"))
    assert (f.sport, f.csum_ok, f.ip_end - f.l4_off) == (1, True, 18)


@PARSERS
def test_fragments_are_not_checksummed(parse: Parser) -> None:
    buf = read_fixture("frag6_first")
    assert parse(patch(buf, 70, b"\xff\xff")).csum_ok


# --- ParseError reasons -------------------------------------------------------------

_UDP6 = read_fixture("udp6")
_UDP4 = read_fixture("udp4")

BAD: dict[str, list[bytes]] = {
    "eth_truncated": [b"", bytes(13)],
    "ipv6_truncated": [_UDP6[:53], ETH6],
    "ipv6_bad_version": [patch(_UDP6, 14, b"\x40")],
    "ipv6_bad_length": [patch(_UDP6, 18, b"\x00\x19"), _UDP6[:77]],
    "ipv6_hbh_not_first": [v6(PROTO_DSTOPTS, ext(PROTO_HOPOPTS) + ext(PROTO_NONE))],
    "ipv6_ext_too_many": [v6(PROTO_DSTOPTS, b"".join(ext(PROTO_DSTOPTS) for _ in range(17)))],
    "ipv6_ext_truncated": [v6(PROTO_DSTOPTS, ext(PROTO_NONE)[:7]), v6(PROTO_DSTOPTS, b"\x3b"),
                           v6(PROTO_FRAGMENT, bytes(7)), v6(PROTO_HOPOPTS, bytes((59, 1)) + bytes(10))],
    "ipv4_truncated": [_UDP4[:33], patch(_UDP4[:40], 14, b"\x4f")],
    "ipv4_bad_version": [patch(_UDP4, 14, b"\x65")],
    "ipv4_bad_ihl": [patch(_UDP4, 14, b"\x44")],
    "ipv4_bad_length": [patch(_UDP4, 16, b"\x00\x13"), patch(_UDP4, 16, b"\x00\x2d")],
    "ipv4_bad_checksum": [patch(_UDP4, 24, b"\x00\x00"), patch(_UDP4, 22, b"\x3f")],
    "tcp_truncated": [v6(PROTO_TCP, TCP20[:19]), v4(PROTO_TCP, b"")],
    "tcp_bad_offset": [v6(PROTO_TCP, patch(TCP20, 12, b"\x40")), v4(PROTO_TCP, patch(TCP20, 12, b"\x60"))],
    "udp_truncated": [v6(PROTO_UDP, bytes(7)), v4(PROTO_UDP, bytes(4))],
    "udp_bad_length": [patch(_UDP6, 58, b"\x00\x07"), patch(_UDP4, 38, b"\x00\x19")],
    "icmp_truncated": [v6(PROTO_ICMPV6, build_echo6(G1, G2, 128, 1, 1, b"")[:7]),
                       v4(PROTO_ICMP, build_echo4(8, 1, 1, b"")[:4])],
}


def test_every_reason_has_a_case() -> None:
    assert set(BAD) == set(REASONS)


@PARSERS
@pytest.mark.parametrize("reason, index", [(r, i) for r, cases in BAD.items() for i in range(len(cases))])
def test_parse_error_reason(parse: Parser, reason: str, index: int) -> None:
    with pytest.raises(ParseError) as e:
        parse(BAD[reason][index])
    assert e.value.reason == reason


@PARSERS
def test_sixteen_extension_headers_are_fine(parse: Parser) -> None:
    f = parse(v6(PROTO_DSTOPTS, b"".join(ext(PROTO_DSTOPTS) for _ in range(15)) + ext(PROTO_NONE)))
    assert len(f.ext) == 16 and f.proto == PROTO_NONE


@settings(max_examples=300, deadline=None)
@given(ethertype=st.sampled_from([ETHERTYPE_IPV6, ETHERTYPE_IPV4, 0x0806]), body=st.binary(max_size=200))
def test_random_bytes_raise_parse_error_only(ethertype: int, body: bytes) -> None:
    buf = eth_header(MAC_A, MAC_B, ethertype) + body
    for parse in (parse_frame, parse_frame_pure):
        with contextlib.suppress(ParseError):
            parse(buf)


@pytest.mark.parametrize("v6", [True, False])
def test_tcp_trusted_skips_only_the_vouched_tcp_checksum(v6: bool) -> None:
    """``parse_frame(buf, tcp_trusted)``: a TCP header at that offset counts as checked
    (a NEEDS_CSUM frame's partial checksum); any other offset is summed as always. The
    pure parser sums regardless; everything but csum_ok is the same either way."""
    from stack.wire.tcp import TcpSegment, build_tcp

    src, dst = (ip6("2001:db8::1"), ip6("2001:db8::2")) if v6 else (ip4("192.0.2.1"), ip4("192.0.2.2"))
    l4 = bytearray(build_tcp(src, dst, 1, 2, TcpSegment(1, 2, 0x10, 100, bytes(range(200)) * 30)))
    l4[16:18] = b"\x12\x34"                  # not the full checksum (as a partial one is not)
    pkt = (build_ipv6 if v6 else build_ipv4)(src, dst, 6, bytes(l4))
    frame = eth_header(bytes(6), bytes(6), 0x86DD if v6 else 0x0800) + pkt
    at = 14 + (40 if v6 else 20)
    plain = parse_frame(frame)
    assert not plain.csum_ok and not parse_frame(frame, at + 1).csum_ok
    trusted = parse_frame(frame, at)
    from stack.wire.frame import BACKEND
    if BACKEND == "native":
        assert trusted.csum_ok and trusted._replace(csum_ok=False) == plain
    else:
        assert trusted == plain              # the pure build: core's offload check decides
    assert not parse_frame_pure(frame, at).csum_ok

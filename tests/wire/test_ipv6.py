"""ipv6: header value, router alert, options walk, fragmentation (RFC 8200 §4.5)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire.addr import ip6
from stack.wire.errors import ParseError
from stack.wire.frame_types import PROTO_DSTOPTS, PROTO_FRAGMENT, PROTO_HOPOPTS, PROTO_ROUTING, PROTO_UDP
from stack.wire.ipv6 import (
    IPV6_HEADER_LEN,
    OPT_ACTION_DISCARD_ICMP,
    OPT_ACTION_SKIP,
    OPT_ROUTER_ALERT,
    FragmentHeader,
    Ipv6Header,
    build_ipv6,
    fragment_ipv6,
    hbh_router_alert,
    iter_options,
    option_action,
    unfragmentable_part,
)

S, D = ip6("2001:db8::1"), ip6("2001:db8::2")


def test_header_roundtrip() -> None:
    h = Ipv6Header(tclass=0x2E, flow_label=0x12345, payload_len=8, next_header=17, hop_limit=9, src=S, dst=D)
    raw = h.pack()
    assert len(raw) == IPV6_HEADER_LEN and raw[0] >> 4 == 6
    assert Ipv6Header.parse(raw) == h
    assert Ipv6Header.parse(b"xx" + raw, 2) == h


def test_header_parse_errors() -> None:
    with pytest.raises(ParseError, match="ipv6_truncated"):
        Ipv6Header.parse(bytes(39))
    with pytest.raises(ParseError, match="ipv6_bad_version"):
        Ipv6Header.parse(bytes(40))


def test_build_ipv6_fields() -> None:
    p = build_ipv6(S, D, PROTO_UDP, b"abcd", hop_limit=3, tclass=0xB8, flow_label=0xFFFFF)
    h = Ipv6Header.parse(p)
    assert (h.payload_len, h.next_header, h.hop_limit, h.tclass, h.flow_label) == (4, 17, 3, 0xB8, 0xFFFFF)
    assert p[40:] == b"abcd"


def test_router_alert_hop_by_hop_header() -> None:
    # RFC 2711 §2.1 option, value 0 (MLD), padded with PadN to 8 bytes (as Linux sends it).
    assert hbh_router_alert(58) == bytes.fromhex("3a00050200000100")
    p = build_ipv6(S, D, 58, b"mld!", router_alert=True)
    assert (p[6], p[4:6], p[40:48], p[48:]) == (PROTO_HOPOPTS, b"\x00\x0c", hbh_router_alert(58), b"mld!")
    assert iter_options(p, 42, 48) == [(OPT_ROUTER_ALERT, 44, 2)]


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_ipv6(S[:4], D, 17, b"")
    with pytest.raises(ValueError):
        build_ipv6(S, D, 17, bytes(65536))


def test_iter_options_skips_padding_and_finds_truncation() -> None:
    opts = bytes((0, 1, 2, 0, 0, 0xC2, 4, 1, 2, 3, 4))  # Pad1, PadN(2), jumbo-type TLV
    assert iter_options(opts, 0, len(opts)) == [(0xC2, 7, 4)]
    with pytest.raises(ParseError, match="ipv6_option_truncated"):
        iter_options(opts[:-1], 0, len(opts) - 1)
    with pytest.raises(ParseError, match="ipv6_option_truncated"):
        iter_options(b"\x05", 0, 1)


def test_option_action_bits() -> None:
    assert option_action(OPT_ROUTER_ALERT) == OPT_ACTION_SKIP
    assert option_action(0x80 | 0x1E) == OPT_ACTION_DISCARD_ICMP


def test_fragment_header_roundtrip() -> None:
    fh = FragmentHeader(17, 1232, True, 0xDEADBEEF)
    assert FragmentHeader.parse(fh.pack(), 0) == fh
    with pytest.raises(ParseError, match="ipv6_ext_truncated"):
        FragmentHeader.parse(bytes(7), 0)
    with pytest.raises(ValueError):
        FragmentHeader(17, 3, False, 0).pack()


def reassemble(frags: list[bytes]) -> bytes:
    """Minimal RFC 8200 §4.5 reassembly for the tests (no overlap handling)."""
    unfrag_len, nh_pos = unfragmentable_part_of_fragment(frags[0])
    header = bytearray(frags[0][:unfrag_len])
    data = bytearray()
    for f in frags:
        fh = FragmentHeader.parse(f, unfrag_len)
        assert fh.offset == len(data)
        data += f[unfrag_len + 8 :]
        header[nh_pos] = fh.next_header
    header[4:6] = (unfrag_len - 40 + len(data)).to_bytes(2, "big")
    return bytes(header) + bytes(data)


def unfragmentable_part_of_fragment(frag: bytes) -> tuple[int, int]:
    off, nh, pos = 40, frag[6], 6
    while nh != PROTO_FRAGMENT:
        pos, nh, off = off, frag[off], off + (frag[off + 1] + 1) * 8
    return off, pos


def test_small_packet_is_not_fragmented() -> None:
    p = build_ipv6(S, D, 17, bytes(100))
    assert fragment_ipv6(p, 1280, 1) == [p]
    assert fragment_ipv6(p + b"pad", 1280, 1) == [p]  # trailing bytes past Payload Length dropped


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 5000), mtu=st.integers(1280, 1500), ident=st.integers(0, 2**32 - 1))
def test_fragments_fit_and_reassemble(size: int, mtu: int, ident: int) -> None:
    p = build_ipv6(S, D, 17, bytes(i & 0xFF for i in range(size)))
    frags = fragment_ipv6(p, mtu, ident)
    if len(p) <= mtu:
        assert frags == [p]
        return
    assert all(len(f) <= mtu for f in frags)
    assert all((len(f) - 48) % 8 == 0 for f in frags[:-1])  # RFC 8200 §4.5: multiples of 8
    assert all(FragmentHeader.parse(f, 40).ident == ident for f in frags)
    assert [FragmentHeader.parse(f, 40).more for f in frags] == [True] * (len(frags) - 1) + [False]
    assert reassemble(frags) == p


def test_per_fragment_headers_are_hbh_and_routing_but_not_later_dest_opts() -> None:
    hbh = bytes((PROTO_DSTOPTS, 0, 1, 4, 0, 0, 0, 0))
    dst1 = bytes((PROTO_ROUTING, 0, 1, 4, 0, 0, 0, 0))  # before Routing: per-fragment
    rth = bytes((PROTO_DSTOPTS, 0, 4, 0, 0, 0, 0, 0))
    dst2 = bytes((PROTO_UDP, 0, 1, 4, 0, 0, 0, 0))  # after Routing: fragmentable
    payload = hbh + dst1 + rth + dst2 + bytes(3000)
    p = build_ipv6(S, D, PROTO_HOPOPTS, payload)
    assert unfragmentable_part(p) == (64, 56)
    frags = fragment_ipv6(p, 1280, 9)
    for f in frags:
        assert f[40:56] == hbh + dst1 and f[56] == PROTO_FRAGMENT and f[57:64] == rth[1:]
        assert FragmentHeader.parse(f, 64).next_header == PROTO_DSTOPTS
    assert frags[0][72:80] == dst2
    assert reassemble(frags) == p


def test_fragmenting_a_fragment_or_a_tiny_mtu_is_refused() -> None:
    with pytest.raises(ValueError):
        fragment_ipv6(build_ipv6(S, D, PROTO_FRAGMENT, bytes(8) + bytes(2000)), 1280, 1)
    with pytest.raises(ValueError):
        fragment_ipv6(build_ipv6(S, D, 17, bytes(200)), 50, 1)


PARSERS_UNDER_FUZZ = (iter_options, FragmentHeader.parse, lambda b, o, e: Ipv6Header.parse(b[:e], o))


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=160), off=st.integers(0, 170), extra=st.integers(0, 40))
def test_untrusted_bytes_raise_parse_error_only(buf: bytes, off: int, extra: int) -> None:
    end = off + extra
    for parser in PARSERS_UNDER_FUZZ:
        with contextlib.suppress(ParseError):
            parser(buf, off, end)

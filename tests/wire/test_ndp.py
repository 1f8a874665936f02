"""ndp: option parsing rules (RFC 4861 §4.6), message parsers on the fixtures,
builders vs scapy where the fixtures do not already cover them, MLD."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6MLDMultAddrRec,
    ICMPv6MLReport2,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)

from stack.wire.addr import ALL_MLDV2_ROUTERS, ip6, mac
from stack.wire.errors import ParseError
from stack.wire.frame import parse_frame
from stack.wire.icmpv6 import icmpv6_checksum_ok
from stack.wire.ndp import (
    ALLOW_NEW_SOURCES,
    OPT_MTU,
    OPT_NONCE,
    OPT_PREFIX_INFO,
    OPT_RDNSS,
    OPT_SLLA,
    MldQuery,
    NdOptions,
    PrefixInfo,
    Rdnss,
    build_mldv2_report,
    build_ns,
    build_ra,
    build_redirect,
    decode_max_resp_code,
    decode_qqic,
    lla_option,
    mtu_option,
    nonce_option,
    parse_mld_query,
    parse_mldv2_report,
    parse_na,
    parse_nd_options,
    parse_ns,
    parse_ra,
    parse_redirect,
    parse_rs,
    prefix_option,
)
from tests.fixtures.oracle import NONCE, read_fixture

MAC_A, MAC_B, MAC_R = mac("02:00:00:00:00:0a"), mac("02:00:00:00:00:0b"), mac("02:00:00:00:00:01")
LL_A, LL_B = ip6("fe80::a"), ip6("fe80::b")


def body(name: str) -> tuple[bytes, int, int]:
    f = parse_frame(read_fixture(name))
    return f.buf, f.l4_off, f.ip_end


def test_parse_ns_and_dad_ns() -> None:
    ns = parse_ns(*body("ns"))
    assert ns.target == LL_A and ns.opts == NdOptions(slla=MAC_B)
    dad = parse_ns(*body("ns_dad"))
    assert dad.opts == NdOptions(nonce=NONCE)


def test_parse_na() -> None:
    na = parse_na(*body("na"))
    assert (na.router, na.solicited, na.override, na.target, na.opts.tlla) == (False, True, True, LL_A, MAC_A)


def test_parse_rs_and_ra() -> None:
    assert parse_rs(*body("rs")).opts.slla == MAC_B
    ra = parse_ra(*body("ra"))
    assert (ra.cur_hop_limit, ra.managed, ra.other, ra.router_lifetime) == (64, False, True, 1800)
    assert (ra.reachable_time, ra.retrans_timer, ra.opts.slla, ra.opts.mtu) == (30000, 1000, MAC_R, 1500)
    assert ra.opts.prefixes == (PrefixInfo(ip6("2001:db8:1::"), 64, True, True, 86400, 14400),)


def test_parse_redirect() -> None:
    r = parse_redirect(*body("redirect"))
    assert (r.target, r.dest, r.opts.tlla) == (ip6("fe80::2"), ip6("2001:db8:1::2"), MAC_B)
    udp6 = read_fixture("udp6")[14:]
    assert r.opts.redirected == udp6 + bytes(-len(udp6) % 8)


@pytest.mark.parametrize("parser, need", [(parse_ns, 24), (parse_na, 24), (parse_rs, 8), (parse_ra, 16),
                                          (parse_redirect, 40)])
def test_fixed_part_truncated(parser, need: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError, match="nd_truncated"):
        parser(bytes(need - 1), 0, need - 1)
    parser(bytes(need), 0, need)


def test_option_rules() -> None:
    sl = lla_option(OPT_SLLA, MAC_A)
    assert parse_nd_options(sl + lla_option(OPT_SLLA, MAC_B), 0, 16).slla == MAC_A  # first wins
    assert parse_nd_options(bytes((99, 2)) + bytes(14) + sl, 0, 24).slla == MAC_A  # unknown skipped
    with pytest.raises(ParseError, match="nd_option_zero_length"):
        parse_nd_options(sl + bytes((OPT_SLLA, 0)) + bytes(6), 0, 16)
    with pytest.raises(ParseError, match="nd_option_truncated"):
        parse_nd_options(sl[:7], 0, 7)
    with pytest.raises(ParseError, match="nd_option_truncated"):
        parse_nd_options(sl + b"\x01", 0, 9)
    with pytest.raises(ParseError, match="nd_option_bad_length"):
        parse_nd_options(bytes((OPT_SLLA, 2)) + bytes(14), 0, 16)
    with pytest.raises(ParseError, match="nd_option_bad_length"):
        parse_nd_options(bytes((OPT_PREFIX_INFO, 1)) + bytes(6), 0, 8)
    with pytest.raises(ParseError, match="nd_option_bad_length"):
        parse_nd_options(bytes((OPT_MTU, 2)) + bytes(14), 0, 16)
    with pytest.raises(ParseError, match="nd_option_bad_length"):
        parse_nd_options(bytes((OPT_RDNSS, 2)) + bytes(14), 0, 16)
    bad_prefix = bytearray(prefix_option(PrefixInfo(bytes(16), 64, True, True, 1, 1)))
    bad_prefix[2] = 129
    with pytest.raises(ParseError, match="nd_prefix_bad_length"):
        parse_nd_options(bytes(bad_prefix), 0, 32)


def test_options_respect_end() -> None:
    data = mtu_option(1400) + lla_option(OPT_SLLA, MAC_A)
    assert parse_nd_options(data, 0, 8) == NdOptions(mtu=1400)
    assert parse_nd_options(data, 8, 100) == NdOptions(slla=MAC_A)


def test_rdnss_matches_scapy() -> None:
    raw = bytes(ICMPv6NDOptRDNSS(lifetime=600, dns=["2001:db8::53", "2001:db8::54"]))
    assert parse_nd_options(raw, 0, len(raw)).rdnss == (Rdnss(600, (ip6("2001:db8::53"), ip6("2001:db8::54"))),)


def test_nonce_option_sizes() -> None:
    assert nonce_option(NONCE) == bytes((OPT_NONCE, 1)) + NONCE
    assert len(nonce_option(bytes(14))) == 16
    for bad in (bytes(5), bytes(7)):
        with pytest.raises(ValueError):
            nonce_option(bad)


def test_build_ns_unicast_matches_scapy() -> None:
    ours = build_ns(LL_B, LL_A, LL_A, slla=MAC_B)
    theirs = bytes(IPv6(src="fe80::b", dst="fe80::a") / ICMPv6ND_NS(tgt="fe80::a")
                   / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B))[40:]
    assert ours == theirs


def test_build_ra_flags_and_several_prefixes_match_scapy() -> None:
    p1 = PrefixInfo(ip6("2001:db8:1::"), 64, True, False, 0xFFFFFFFF, 0xFFFFFFFF)
    p2 = PrefixInfo(ip6("2001:db8:2::"), 48, False, True, 10, 5)
    ours = build_ra(LL_B, LL_A, 0, 0, 0, 0, None, [p1, p2], None, managed=True, other=True)
    theirs = bytes(IPv6(src="fe80::b", dst="fe80::a")
                   / ICMPv6ND_RA(chlim=0, M=1, O=1, prf=0, routerlifetime=0)
                   / ICMPv6NDOptPrefixInfo(prefixlen=64, L=1, A=0, validlifetime=0xFFFFFFFF,
                                           preferredlifetime=0xFFFFFFFF, prefix="2001:db8:1::")
                   / ICMPv6NDOptPrefixInfo(prefixlen=48, L=0, A=1, validlifetime=10, preferredlifetime=5,
                                           prefix="2001:db8:2::"))[40:]
    assert ours == theirs
    parsed = parse_ra(ours, 0, len(ours))
    assert parsed.managed and parsed.opts.prefixes == (p1, p2)


def test_redirect_quote_fits_1280() -> None:
    msg = build_redirect(LL_B, LL_A, LL_B, ip6("2001:db8::9"), tlla=MAC_B, redirected=bytes(3000))
    assert 40 + len(msg) <= 1280 and len(msg) % 8 == 0
    assert icmpv6_checksum_ok(LL_B, LL_A, msg)
    r = parse_redirect(msg, 0, len(msg))
    assert r.opts.redirected is not None and len(r.opts.redirected) == 1280 - 40 - 40 - 8 - 8


def test_mldv2_report_roundtrip_and_scapy() -> None:
    records = [(ALLOW_NEW_SOURCES, ip6("ff0e::1"), [ip6("2001:db8::1")])]
    ours = build_mldv2_report(LL_A, records)
    theirs = bytes(IPv6(src="fe80::a", dst="ff02::16")
                   / ICMPv6MLReport2(records=[ICMPv6MLDMultAddrRec(rtype=5, dst="ff0e::1",
                                                                   sources=["2001:db8::1"])]))[40:]
    assert ours == theirs and icmpv6_checksum_ok(LL_A, ALL_MLDV2_ROUTERS, ours)
    assert parse_mldv2_report(ours, 0, len(ours)) == ((5, ip6("ff0e::1"), (ip6("2001:db8::1"),)),)
    f = parse_frame(read_fixture("mldv2_report"))
    assert len(parse_mldv2_report(f.buf, f.l4_off, f.ip_end)) == 2
    with pytest.raises(ParseError, match="mld_truncated"):
        parse_mldv2_report(ours, 0, len(ours) - 1)


def test_mld_queries() -> None:
    v1 = parse_mld_query(*body("mld_query_v1"))
    assert v1 == MldQuery(1, 10000, bytes(16), False, 0, 0, ())
    v2 = parse_mld_query(*body("mld_query_v2"))
    assert (v2.version, v2.group, v2.s_flag, v2.qrv, v2.sources) == (2, ip6("ff05::1:3"), True, 2,
                                                                     (ip6("2001:db8::53"),))
    assert v2.max_resp_delay == decode_max_resp_code(0x8123) == (0x123 | 0x1000) << 3
    assert v2.qqi == decode_qqic(0x91) == (0x1 | 0x10) << 4
    assert decode_max_resp_code(1000) == 1000 and decode_qqic(125) == 125
    buf, off, end = body("mld_query_v2")
    for cut in (end - 1, off + 27, off + 25, off + 23):
        with pytest.raises(ParseError):
            parse_mld_query(buf, off, cut)


PARSERS_UNDER_FUZZ = (parse_nd_options, parse_ns, parse_na, parse_rs, parse_ra, parse_redirect, parse_mld_query,
                      parse_mldv2_report)


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=160), off=st.integers(0, 170), extra=st.integers(0, 40))
def test_untrusted_bytes_raise_parse_error_only(buf: bytes, off: int, extra: int) -> None:
    end = off + extra
    for parser in PARSERS_UNDER_FUZZ:
        with contextlib.suppress(ParseError):
            parser(buf, off, end)

"""icmpv6: builders vs scapy, error quote limit (RFC 4443 §2.4(c)), parsers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded, ICMPv6Unknown, IPv6

from stack.wire.addr import ip6
from stack.wire.errors import ParseError
from stack.wire.frame import parse_frame
from stack.wire.frame_types import PROTO_ICMPV6, PROTO_UDP
from stack.wire.icmpv6 import (
    ECHO_REPLY,
    ECHO_REQUEST,
    ERROR_MAX_PACKET,
    ERROR_MAX_QUOTE,
    MLDV2_REPORT,
    NEIGHBOR_SOLICIT,
    PACKET_TOO_BIG,
    PARAM_PROBLEM,
    TIME_EXCEEDED,
    build_echo6,
    build_error6,
    build_icmpv6,
    icmpv6_checksum_ok,
    is_error,
    parse_echo6,
    parse_error6,
)
from stack.wire.ipv6 import build_ipv6
from tests.fixtures.oracle import read_fixture

S, D = ip6("2001:db8::1"), ip6("2001:db8::2")


def scapy_l4(pkt: object) -> bytes:
    return bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / pkt)[40:]  # type: ignore[operator]


def test_constants_cover_every_type() -> None:
    assert (PACKET_TOO_BIG, TIME_EXCEEDED, PARAM_PROBLEM, MLDV2_REPORT, NEIGHBOR_SOLICIT) == (2, 3, 4, 143, 135)
    assert is_error(1) and is_error(127) and not is_error(ECHO_REQUEST)


def test_generic_builder_matches_scapy() -> None:
    assert build_icmpv6(S, D, 200, 7, b"\x00\x00\x00\x01body") == scapy_l4(
        ICMPv6Unknown(type=200, code=7, msgbody=b"\x00\x00\x00\x01body"))


@pytest.mark.parametrize("icmp_type, code, param, scapy_msg", [
    (PACKET_TOO_BIG, 0, 1280, lambda q: ICMPv6PacketTooBig(mtu=1280) / q),
    (TIME_EXCEEDED, 1, 0, lambda q: ICMPv6TimeExceeded(code=1) / q),
    (PARAM_PROBLEM, 2, 48, lambda q: ICMPv6ParamProblem(code=2, ptr=48) / q),
])
def test_errors_match_scapy(icmp_type: int, code: int, param: int, scapy_msg) -> None:  # type: ignore[no-untyped-def]
    invoking = build_ipv6(D, S, PROTO_UDP, bytes(30))
    assert build_error6(S, D, icmp_type, code, param, invoking) == scapy_l4(scapy_msg(invoking))


def test_error_quote_is_cut_to_fit_1280() -> None:
    invoking = build_ipv6(D, S, PROTO_UDP, bytes(3000))
    msg = build_error6(S, D, PACKET_TOO_BIG, 0, 1280, invoking)
    packet = build_ipv6(S, D, PROTO_ICMPV6, msg)
    assert len(packet) == ERROR_MAX_PACKET and msg[8:] == invoking[:ERROR_MAX_QUOTE]
    assert icmpv6_checksum_ok(S, D, msg)
    with pytest.raises(ValueError):
        build_error6(S, D, ECHO_REQUEST, 0, 0, invoking)


def test_echo_roundtrip_and_fixture() -> None:
    buf = read_fixture("echo6_request")
    f = parse_frame(buf)
    e = parse_echo6(f.buf, f.l4_off, f.ip_end)
    assert (e.icmp_type, e.ident, e.seq, e.data) == (ECHO_REQUEST, 0x1234, 1, b"tapstack-ping-0123456789")
    reply = build_echo6(f.dst, f.src, ECHO_REPLY, e.ident, e.seq, e.data)
    assert reply == read_fixture("echo6_reply")[54:]
    with pytest.raises(ParseError, match="icmp_truncated"):
        parse_echo6(buf, f.l4_off, f.l4_off + 7)
    with pytest.raises(ValueError):
        build_echo6(S, D, 1, 0, 0, b"")


def test_parse_error6_fixture() -> None:
    buf = read_fixture("icmp6_port_unreach")
    f = parse_frame(buf)
    err = parse_error6(buf, f.l4_off, f.ip_end)
    assert (err.icmp_type, err.code, err.param) == (1, 4, 0)
    assert err.quote == read_fixture("udp6")[14:]
    with pytest.raises(ParseError, match="icmp_error_short_quote"):
        parse_error6(buf, f.l4_off, f.l4_off + 47)
    with pytest.raises(ParseError, match="icmp_truncated"):
        parse_error6(buf, f.l4_off, f.l4_off + 4)


PARSERS_UNDER_FUZZ = (parse_echo6, parse_error6)


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=160), off=st.integers(0, 170), extra=st.integers(0, 40))
def test_untrusted_bytes_raise_parse_error_only(buf: bytes, off: int, extra: int) -> None:
    end = off + extra
    for parser in PARSERS_UNDER_FUZZ:
        with contextlib.suppress(ParseError):
            parser(buf, off, end)

"""icmpv4: builders vs scapy, the 576-byte quote rule (RFC 1812 §4.3.2.3), parsers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP

from stack.wire.addr import ip4
from stack.wire.errors import ParseError
from stack.wire.frame import parse_frame
from stack.wire.frame_types import PROTO_ICMP, PROTO_UDP
from stack.wire.icmpv4 import (
    DEST_UNREACH,
    ECHO_REPLY,
    ECHO_REQUEST,
    ERROR_MAX_DATAGRAM,
    PARAM_PROBLEM,
    TIME_EXCEEDED,
    UNREACH_FRAG_NEEDED,
    UNREACH_PORT,
    build_dest_unreach4,
    build_echo4,
    build_error4,
    build_icmpv4,
    build_param_problem4,
    build_time_exceeded4,
    is_error,
    parse_echo4,
    parse_error4,
    parse_icmpv4,
)
from stack.wire.ipv4 import build_ipv4
from tests.fixtures.oracle import read_fixture

S, D = ip4("192.0.2.1"), ip4("192.0.2.2")
INVOKING = build_ipv4(S, D, PROTO_UDP, bytes(40), ident=4)


def test_echo_matches_scapy() -> None:
    assert build_echo4(ECHO_REQUEST, 7, 9, b"abc") == bytes(ICMP(type=8, id=7, seq=9) / b"abc")
    assert build_echo4(ECHO_REPLY, 7, 9, b"") == bytes(ICMP(type=0, id=7, seq=9))
    with pytest.raises(ValueError):
        build_echo4(3, 0, 0, b"")


def test_errors_match_scapy() -> None:
    assert build_dest_unreach4(UNREACH_PORT, INVOKING) == bytes(ICMP(type=3, code=3) / INVOKING)
    assert build_time_exceeded4(0, INVOKING) == bytes(ICMP(type=11, code=0) / INVOKING)
    assert build_param_problem4(12, INVOKING) == bytes(ICMP(type=12, ptr=12) / INVOKING)
    assert build_dest_unreach4(UNREACH_FRAG_NEEDED, INVOKING, 1400) == bytes(
        ICMP(type=3, code=4, nexthopmtu=1400) / INVOKING)


def test_quote_is_cut_to_576_bytes_total() -> None:
    big = build_ipv4(S, D, PROTO_UDP, bytes(2000))
    msg = build_error4(TIME_EXCEEDED, 0, big)
    assert len(build_ipv4(D, S, PROTO_ICMP, msg)) == ERROR_MAX_DATAGRAM
    assert msg[8:] == big[: ERROR_MAX_DATAGRAM - 28]
    with pytest.raises(ValueError):
        build_error4(ECHO_REQUEST, 0, big)
    with pytest.raises(ValueError):
        build_icmpv4(8, 0, b"abc", b"")


def test_parse_fixtures() -> None:
    buf = read_fixture("icmp4_echo")
    f = parse_frame(buf)
    e = parse_echo4(buf, f.l4_off, f.ip_end)
    assert (e.icmp_type, e.ident, e.seq, e.data) == (ECHO_REQUEST, 0x1234, 1, b"tapstack-ping-0123456789")
    m = parse_icmpv4(buf, f.l4_off, f.ip_end)
    assert (m.icmp_type, m.code, m.rest) == (8, 0, b"\x12\x34\x00\x01")
    buf = read_fixture("icmp4_frag_needed")
    f = parse_frame(buf)
    err = parse_error4(buf, f.l4_off, f.ip_end)
    assert (err.icmp_type, err.code, err.next_hop_mtu, len(err.quote)) == (DEST_UNREACH, 4, 1400, 548)


def test_parse_errors() -> None:
    msg = build_param_problem4(9, INVOKING)
    assert parse_error4(msg, 0, len(msg)).pointer == 9
    assert is_error(PARAM_PROBLEM) and not is_error(ECHO_REPLY)
    with pytest.raises(ParseError, match="icmp_truncated"):
        parse_icmpv4(msg, 0, 7)
    with pytest.raises(ParseError, match="icmp_truncated"):
        parse_echo4(msg, 0, 7)
    with pytest.raises(ParseError, match="icmp_error_short_quote"):
        parse_error4(msg, 0, 27)


PARSERS_UNDER_FUZZ = (parse_icmpv4, parse_echo4, parse_error4)


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=160), off=st.integers(0, 170), extra=st.integers(0, 40))
def test_untrusted_bytes_raise_parse_error_only(buf: bytes, off: int, extra: int) -> None:
    end = off + extra
    for parser in PARSERS_UNDER_FUZZ:
        with contextlib.suppress(ParseError):
            parser(buf, off, end)

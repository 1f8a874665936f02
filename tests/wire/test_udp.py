"""udp: builder checksum per family, header parse, zero-checksum rule."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from stack.wire.addr import ip4, ip6
from stack.wire.errors import ParseError
from stack.wire.udp import UdpHeader, build_udp, parse_ports, udp_checksum_ok

S6, D6 = ip6("2001:db8::1"), ip6("2001:db8::2")
S4, D4 = ip4("192.0.2.1"), ip4("192.0.2.2")


@pytest.mark.parametrize("payload", [b"", b"x", b"hello world", bytes(range(256)) * 4])
def test_build_matches_scapy_both_families(payload: bytes) -> None:
    v6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1000, dport=53) / payload)[40:]
    v4 = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1000, dport=53) / payload)[20:]
    assert build_udp(S6, D6, 1000, 53, payload) == v6
    assert build_udp(S4, D4, 1000, 53, payload) == v4


def test_computed_zero_checksum_is_sent_as_ffff() -> None:
    # RFC 768: all ones stands for a computed zero. Find a payload whose checksum is 0.
    base = build_udp(S6, D6, 1, 2, b"\x00\x00")
    csum = (base[6] << 8) | base[7]
    # Putting the checksum value itself in the payload word brings the sum to
    # 0xffff, so the computed checksum becomes 0.
    dgram = build_udp(S6, D6, 1, 2, csum.to_bytes(2, "big"))
    assert dgram[6:8] == b"\xff\xff" and udp_checksum_ok(S6, D6, dgram)


def test_header_parse_and_errors() -> None:
    dgram = build_udp(S4, D4, 7, 9, b"abc")
    h = UdpHeader.parse(dgram)
    assert (h.sport, h.dport, h.length) == (7, 9, 11) and h.pack() == dgram[:8]
    with pytest.raises(ParseError, match="udp_truncated"):
        UdpHeader.parse(dgram[:7])
    with pytest.raises(ParseError, match="udp_bad_length"):
        UdpHeader.parse(dgram[:10])
    with pytest.raises(ParseError, match="udp_bad_length"):
        UdpHeader.parse(dgram[:4] + b"\x00\x07" + dgram[6:])
    assert parse_ports(dgram, 0, 4) == (7, 9)
    with pytest.raises(ParseError):
        parse_ports(dgram, 0, 3)


def test_checksum_verdicts() -> None:
    d6 = build_udp(S6, D6, 1, 2, b"data")
    assert udp_checksum_ok(S6, D6, d6) and not udp_checksum_ok(S6, D4 * 4, d6)
    zero6 = d6[:6] + b"\0\0" + d6[8:]
    zero4 = build_udp(S4, D4, 1, 2, b"data")[:6] + b"\0\0" + b"data"
    assert not udp_checksum_ok(S6, D6, zero6) and udp_checksum_ok(S4, D4, zero4)
    assert not udp_checksum_ok(S4, D4, b"short")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_udp(S4, D6, 1, 2, b"")
    with pytest.raises(ValueError):
        build_udp(S4, D4, 1, 2, bytes(65530))


PARSERS_UNDER_FUZZ = (UdpHeader.parse, parse_ports)


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=160), off=st.integers(0, 170), extra=st.integers(0, 40))
def test_untrusted_bytes_raise_parse_error_only(buf: bytes, off: int, extra: int) -> None:
    end = off + extra
    for parser in PARSERS_UNDER_FUZZ:
        with contextlib.suppress(ParseError):
            parser(buf, off, end)

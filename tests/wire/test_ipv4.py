"""ipv4: header value and checks, options, fragmentation (RFC 791 §3.2)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP

from stack.wire.addr import ip4
from stack.wire.errors import ParseError
from stack.wire.ipv4 import (
    IPV4_HEADER_LEN,
    OPT_LSRR,
    OPT_NOP,
    OPT_ROUTER_ALERT,
    OPT_RR,
    Ipv4Header,
    build_ipv4,
    fragment_ipv4,
    iter_options,
)
from tests.fixtures.oracle import read_fixture

S, D = ip4("192.0.2.1"), ip4("192.0.2.2")


def test_build_matches_scapy() -> None:
    ours = build_ipv4(S, D, 17, b"payload", ttl=17, tos=0x10, ident=0x1234, df=True)
    theirs = bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=17, ttl=17, tos=0x10, id=0x1234, flags="DF")
                   / b"payload")
    assert ours == theirs


def test_header_parse_roundtrip_with_options() -> None:
    packet = read_fixture("ipv4_options")[14:]
    h = Ipv4Header.parse(packet)
    assert (h.header_len, h.options, h.proto, h.ident, h.total_length) == (24, b"\x94\x04\x00\x00", 17, 5, 48)
    assert h.pack() == packet[:24]
    assert iter_options(packet, 20, 24) == [(OPT_ROUTER_ALERT, 20, 4)]


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: p[:19], "ipv4_truncated"),
    (lambda p: b"\x65" + p[1:], "ipv4_bad_version"),
    (lambda p: b"\x44" + p[1:], "ipv4_bad_ihl"),
    (lambda p: b"\x4f" + p[1:30], "ipv4_truncated"),
    (lambda p: p[:2] + b"\x00\x10" + p[4:], "ipv4_bad_length"),
    (lambda p: p[:2] + b"\xff\xff" + p[4:], "ipv4_bad_length"),
    (lambda p: p[:10] + b"\x00\x00" + p[12:], "ipv4_bad_checksum"),
])
def test_header_parse_errors(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    packet = build_ipv4(S, D, 17, bytes(20))
    with pytest.raises(ParseError) as e:
        Ipv4Header.parse(mutate(packet))
    assert e.value.reason == reason


def test_iter_options_rules() -> None:
    opts = bytes((OPT_NOP, OPT_RR, 7, 4, 0, 0, 0, 0, 0, 0))  # NOP, RR(7), EOL + padding
    assert iter_options(opts, 0, len(opts)) == [(OPT_NOP, 0, 1), (OPT_RR, 1, 7)]
    for bad in (bytes((OPT_RR,)), bytes((OPT_RR, 1)), bytes((OPT_RR, 9, 0))):
        with pytest.raises(ParseError, match="ipv4_bad_option"):
            iter_options(bad, 0, len(bad))


def test_fragments_match_scapy_fixtures() -> None:
    first, last = read_fixture("frag4_first")[14:], read_fixture("frag4_last")[14:]
    h1, h2 = Ipv4Header.parse(first), Ipv4Header.parse(last)
    assert (h1.mf, h1.frag_off, h2.mf, h2.frag_off, h1.ident) == (True, 0, False, 1104, 0x77)


def reassemble4(frags: list[bytes]) -> bytes:
    first = Ipv4Header.parse(frags[0])
    data = bytearray()
    for f in sorted(frags, key=lambda f: Ipv4Header.parse(f).frag_off):
        h = Ipv4Header.parse(f)
        assert h.frag_off == len(data) and h.ident == first.ident
        data += f[h.header_len : h.total_length]
    return bytes(data)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 4000), mtu=st.integers(68, 1500))
def test_fragments_fit_and_reassemble(size: int, mtu: int) -> None:
    payload = bytes(i & 0xFF for i in range(size))
    p = build_ipv4(S, D, 17, payload, ident=99)
    frags = fragment_ipv4(p, mtu)
    assert all(len(f) <= mtu for f in frags)
    if len(frags) > 1:
        assert all((len(f) - IPV4_HEADER_LEN) % 8 == 0 for f in frags[:-1])
        assert [Ipv4Header.parse(f).mf for f in frags] == [True] * (len(frags) - 1) + [False]
    assert reassemble4(frags) == payload


def test_only_copied_options_go_into_later_fragments() -> None:
    # RFC 791 §3.1: LSRR has the copied flag, RR does not.
    options = bytes((OPT_LSRR, 7, 4)) + S + bytes((OPT_RR, 7, 4)) + bytes(4) + bytes(2)
    payload = bytes(300)
    h = Ipv4Header(0, 20 + len(options) + len(payload), 5, False, False, 0, 64, 17, 0, S, D, options)
    frags = fragment_ipv4(h.pack() + payload, 150)
    assert Ipv4Header.parse(frags[0]).options == options
    assert all(Ipv4Header.parse(f).options == bytes((OPT_LSRR, 7, 4)) + S + b"\x00" for f in frags[1:])


def test_refragmenting_keeps_offsets_and_the_last_mf() -> None:
    p = build_ipv4(S, D, 17, bytes(3000), ident=3)
    first, second = fragment_ipv4(p, 1500)[:2]
    again = fragment_ipv4(second, 576)
    hs = [Ipv4Header.parse(f) for f in again]
    assert hs[0].frag_off == Ipv4Header.parse(second).frag_off == 1480
    assert all(h.mf for h in hs)  # the piece was not the end of the datagram
    assert Ipv4Header.parse(first).frag_off == 0


def test_df_and_tiny_mtu_refuse() -> None:
    with pytest.raises(ValueError):
        fragment_ipv4(build_ipv4(S, D, 17, bytes(2000), df=True), 1500)
    with pytest.raises(ValueError):
        fragment_ipv4(build_ipv4(S, D, 17, bytes(2000)), 24)
    assert fragment_ipv4(build_ipv4(S, D, 17, bytes(10), df=True), 1500)[0][6] & 0x40


PARSERS_UNDER_FUZZ = (iter_options, lambda b, o, e: Ipv4Header.parse(b[:e], o))


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=160), off=st.integers(0, 170), extra=st.integers(0, 40))
def test_untrusted_bytes_raise_parse_error_only(buf: bytes, off: int, extra: int) -> None:
    end = off + extra
    for parser in PARSERS_UNDER_FUZZ:
        with contextlib.suppress(ParseError):
            parser(buf, off, end)

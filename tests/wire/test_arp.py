"""arp: parse/build for Ethernet/IPv4 (RFC 826), unsupported spaces, padding."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire.addr import BROADCAST_MAC, ip4, mac
from stack.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket, arp_frame, build_arp_request
from stack.wire.errors import ParseError
from tests.fixtures.oracle import read_fixture

MAC_A, MAC_B = mac("02:00:00:00:00:0a"), mac("02:00:00:00:00:0b")


def test_parse_fixtures() -> None:
    req = ArpPacket.parse(read_fixture("arp_request"))
    assert req == ArpPacket(OP_REQUEST, MAC_B, ip4("192.0.2.1"), bytes(6), ip4("192.0.2.2"))
    rep = ArpPacket.parse(read_fixture("arp_reply") + bytes(18))  # padded to 60 bytes
    assert rep == ArpPacket(OP_REPLY, MAC_A, ip4("192.0.2.2"), MAC_B, ip4("192.0.2.1"))
    assert arp_frame(rep) == read_fixture("arp_reply")
    assert arp_frame(req) == read_fixture("arp_request")


def test_probe_and_announcement() -> None:
    probe = ArpPacket.parse(build_arp_request(MAC_A, bytes(4), ip4("192.0.2.9")), 0)
    assert probe.is_probe and not probe.is_announcement
    ann = ArpPacket.parse(build_arp_request(MAC_A, ip4("192.0.2.9"), ip4("192.0.2.9")), 0)
    assert ann.is_announcement and not ann.is_probe
    assert arp_frame(ann, eth_dst=MAC_B)[:6] == MAC_B and arp_frame(probe)[:6] == BROADCAST_MAC


@pytest.mark.parametrize("patch_at, value", [(0, b"\x00\x06"), (2, b"\x86\xdd"), (4, b"\x08"), (5, b"\x10")])
def test_unsupported_spaces(patch_at: int, value: bytes) -> None:
    pkt = read_fixture("arp_request")[14:]
    bad = pkt[:patch_at] + value + pkt[patch_at + len(value) :]
    with pytest.raises(ParseError, match="arp_unsupported"):
        ArpPacket.parse(bad, 0)


def test_truncated() -> None:
    pkt = read_fixture("arp_request")
    for n in (14, 19, 41):
        with pytest.raises(ParseError, match="arp_truncated"):
            ArpPacket.parse(pkt[:n])


def test_pack_validates_lengths() -> None:
    with pytest.raises(ValueError):
        ArpPacket(OP_REQUEST, MAC_A[:5], bytes(4), bytes(6), bytes(4)).pack()


PARSERS_UNDER_FUZZ = (lambda b, o, e: ArpPacket.parse(b[:e], o),)


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=160), off=st.integers(0, 170), extra=st.integers(0, 40))
def test_untrusted_bytes_raise_parse_error_only(buf: bytes, off: int, extra: int) -> None:
    end = off + extra
    for parser in PARSERS_UNDER_FUZZ:
        with contextlib.suppress(ParseError):
            parser(buf, off, end)

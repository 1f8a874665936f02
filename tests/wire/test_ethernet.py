"""ethernet: the 14-byte header."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire.addr import mac
from stack.wire.errors import ParseError
from stack.wire.ethernet import (
    ETH_MIN_FRAME,
    EthernetHeader,
    eth_frame,
    eth_header,
    is_broadcast_mac,
    is_multicast_mac,
)
from stack.wire.frame_types import ETHERTYPE_IPV6

A, B = mac("02:00:00:00:00:0a"), mac("33:33:00:00:00:01")


def test_header_roundtrip() -> None:
    raw = eth_header(B, A, ETHERTYPE_IPV6)
    assert raw == B + A + b"\x86\xdd"
    h = EthernetHeader.parse(raw)
    assert h == EthernetHeader(B, A, ETHERTYPE_IPV6) and h.pack() == raw
    buf = bytearray(16)
    h.pack_into(buf, 2)
    assert bytes(buf[2:]) == raw


def test_errors() -> None:
    with pytest.raises(ParseError, match="eth_truncated"):
        EthernetHeader.parse(bytes(13))
    with pytest.raises(ValueError):
        eth_header(A[:5], B, 0)


def test_padding_and_address_kinds() -> None:
    assert len(eth_frame(B, A, 0x0806, bytes(28), pad=True)) == ETH_MIN_FRAME
    assert len(eth_frame(B, A, 0x0806, bytes(28))) == 42
    assert is_multicast_mac(B) and not is_multicast_mac(A)
    assert is_broadcast_mac(b"\xff" * 6) and is_multicast_mac(b"\xff" * 6)


PARSERS_UNDER_FUZZ = (lambda b, o, e: EthernetHeader.parse(b[:e], o),)


@settings(max_examples=200, deadline=None)
@given(buf=st.binary(max_size=160), off=st.integers(0, 170), extra=st.integers(0, 40))
def test_untrusted_bytes_raise_parse_error_only(buf: bytes, off: int, extra: int) -> None:
    end = off + extra
    for parser in PARSERS_UNDER_FUZZ:
        with contextlib.suppress(ParseError):
            parser(buf, off, end)

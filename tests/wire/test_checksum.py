"""checksum: RFC 1071 vectors, odd lengths, pseudo-headers, RFC 1624 updates, backend choice."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire import _pure, checksum
from stack.wire.addr import ip4, ip6
from stack.wire.checksum import (
    checksum_adjust,
    internet_checksum,
    ones_sum,
    pseudo_sum4,
    pseudo_sum6,
)


def slow_ones_sum(data: bytes, initial: int = 0) -> int:
    """The textbook loop (RFC 1071 §4.1), as the oracle."""
    if len(data) % 2:
        data += b"\0"
    total = initial
    for (word,) in struct.iter_unpack(">H", data):
        total += word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_rfc1071_example() -> None:
    # RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_ipv4_header_example() -> None:
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(hdr) == 0xB861


def test_zero_and_negative_zero() -> None:
    assert ones_sum(b"") == 0 and ones_sum(bytes(7)) == 0
    assert ones_sum(b"\xff\xff") == 0xFFFF and ones_sum(b"\xff\xff\x00\x01") == 1
    assert internet_checksum(b"") == 0xFFFF


def test_odd_length_pads_with_a_zero_byte() -> None:
    assert ones_sum(b"\x01") == 0x0100
    assert ones_sum(b"\x12\x34\x56") == 0x1234 + 0x5600


def test_initial_is_added_before_folding() -> None:
    assert ones_sum(b"\xff\xff", 1) == 1
    assert ones_sum(b"", 0x12345) == 0x2346
    assert ones_sum(b"", 0xFFFFFFFF) == slow_ones_sum(b"", 0xFFFFFFFF)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), initial=st.integers(0, 2**32 - 1))
def test_matches_the_textbook_loop(data: bytes, initial: int) -> None:
    assert ones_sum(data, initial) == slow_ones_sum(data, initial)
    assert _pure.ones_sum(data, initial) == slow_ones_sum(data, initial)
    assert internet_checksum(data, initial) == ~slow_ones_sum(data, initial) & 0xFFFF


def test_accepts_bytearray_and_memoryview() -> None:
    data = bytes(range(256)) * 3
    expect = ones_sum(data)
    assert ones_sum(bytearray(data)) == expect
    assert ones_sum(memoryview(b"x" + data)[1:]) == expect


def test_pseudo_sum6_rfc8200() -> None:
    src, dst = ip6("2001:db8::1"), ip6("2001:db8::2")
    manual = src + dst + struct.pack(">I3xB", 70000, 17)
    assert pseudo_sum6(src, dst, 70000, 17) == slow_ones_sum(manual)
    assert _pure.pseudo_sum6(src, dst, 8, 58) == slow_ones_sum(src + dst + struct.pack(">I3xB", 8, 58))


def test_pseudo_sum4_rfc768() -> None:
    src, dst = ip4("192.0.2.1"), ip4("192.0.2.2")
    assert pseudo_sum4(src, dst, 1234, 6) == slow_ones_sum(src + dst + struct.pack(">xBH", 6, 1234))
    assert _pure.pseudo_sum4(src, dst, 8, 17) == slow_ones_sum(src + dst + struct.pack(">xBH", 17, 8))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=2, max_size=64).filter(lambda d: len(d) % 2 == 0 and any(d)),
       at=st.integers(0, 31), new=st.binary(min_size=2, max_size=2))
def test_checksum_adjust_matches_recomputation(data: bytes, at: int, new: bytes) -> None:
    # RFC 1624 eqn. 3 gives what a full recomputation gives, for every edit.
    at = (at * 2) % len(data)
    edited = data[:at] + new + data[at + 2 :]
    if not any(edited):
        return  # all zeros: the only case where recomputation yields 0xffff
    old_csum = internet_checksum(data)
    assert checksum_adjust(old_csum, data[at : at + 2], new) == internet_checksum(edited)


def test_checksum_adjust_rfc1624_example() -> None:
    # RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives 0x0000 (eqn. 3).
    assert checksum_adjust(0xDD2F, b"\x55\x55", b"\x32\x85") == 0x0000


def test_checksum_adjust_rejects_odd_lengths() -> None:
    with pytest.raises(ValueError):
        checksum_adjust(0, b"\x01", b"\x02")


def test_backend_is_named() -> None:
    assert checksum.BACKEND in ("native", "pure")


def test_tapstack_pure_forces_the_pure_backend() -> None:
    env = dict(os.environ, TAPSTACK_PURE="1")
    code = "from stack.wire import checksum, frame; print(checksum.BACKEND, frame.BACKEND)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[2], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["pure", "pure"]

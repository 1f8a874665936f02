"""Native and pure give identical results (GUIDE.md §6; gVisor checksum_test.go).

* checksum: 100k seeded buffers of length 0-2048 (odd included) at all eight
  memoryview offsets with a random ``initial``, plus hypothesis cases;
* pseudo-header sums on random addresses, lengths and protocols;
* parse_frame on every fixture, every truncation of each, every single-bit
  flip, and random bytes behind valid Ethernet/IP headers: each must give an
  equal Frame (field types included) or the same ParseError.reason.

Skipped when ``stack._native`` is not built or TAPSTACK_PURE=1 forces pure.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.wire import _pure, checksum, frame
from stack.wire.errors import ParseError
from stack.wire.frame_types import Frame
from tests.fixtures.oracle import RECIPES, read_fixture

if checksum.BACKEND != "native":
    reason = ("TAPSTACK_PURE=1 forces the pure backend" if os.environ.get("TAPSTACK_PURE", "") not in ("", "0")
              else "stack._native is not built (python native/build_native.py)")
    pytest.skip(reason, allow_module_level=True)

lib, ffi = checksum.lib, checksum.ffi
FIXTURES = {name: read_fixture(name) for name in sorted(RECIPES)}


def native_sum(data: bytes | memoryview, initial: int) -> int:
    return int(lib.tsk_ones_sum(ffi.from_buffer(data), len(data), initial))


# --- checksum ----------------------------------------------------------------------


def test_seeded_buffers_all_offsets() -> None:
    rng = random.Random(20240601)
    backing = bytearray(2048 + 8)
    for _ in range(100_000):
        n = rng.randrange(2049)
        data = rng.randbytes(n)
        initial = rng.getrandbits(32)
        expect = _pure.ones_sum(data, initial)
        for off in range(8):
            backing[off : off + n] = data
            view = memoryview(backing)[off : off + n]
            got = native_sum(view, initial)
            if got != expect:
                pytest.fail(f"len={n} off={off} initial={initial:#x}: native {got:#x} pure {expect:#x}")


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=2048), off=st.integers(0, 7), initial=st.integers(0, 2**32 - 1))
def test_checksum_equivalence(data: bytes, off: int, initial: int) -> None:
    view = memoryview(bytes(off) + data)[off:]
    assert checksum.ones_sum(view, initial) == _pure.ones_sum(data, initial)
    assert checksum.internet_checksum(view, initial) == _pure.internet_checksum(data, initial)
    assert checksum.ones_sum(data, initial) == _pure.ones_sum(data, initial)  # bytes take the direct path


@pytest.mark.parametrize("fill", [0x00, 0xFF, 0x80, 0x01])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 9, 31, 32, 33, 1500, 9000, 65535])
def test_checksum_extremes(fill: int, n: int) -> None:
    data = bytes([fill]) * n
    for initial in (0, 1, 0xFFFF, 0x10000, 0xFFFFFFFF):
        assert native_sum(data, initial) == _pure.ones_sum(data, initial)


@settings(max_examples=400, deadline=None)
@given(src=st.binary(min_size=16, max_size=16), dst=st.binary(min_size=16, max_size=16),
       length=st.integers(0, 2**32 - 1), nh=st.integers(0, 255))
def test_pseudo_sum6_equivalence(src: bytes, dst: bytes, length: int, nh: int) -> None:
    assert int(lib.tsk_pseudo_sum6(src, dst, length, nh)) == _pure.pseudo_sum6(src, dst, length, nh)


@settings(max_examples=400, deadline=None)
@given(src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4),
       length=st.integers(0, 0xFFFF), proto=st.integers(0, 255))
def test_pseudo_sum4_equivalence(src: bytes, dst: bytes, length: int, proto: int) -> None:
    assert int(lib.tsk_pseudo_sum4(src, dst, length, proto)) == _pure.pseudo_sum4(src, dst, length, proto)


# --- parse_frame ---------------------------------------------------------------------

Outcome = tuple[str, object]


def outcome(parse: Callable[[bytes], Frame], buf: bytes) -> Outcome:
    try:
        f = parse(buf)
    except ParseError as e:
        return ("error", e.reason)
    return ("frame", (f, tuple(type(x) for x in f)))


def native_only(buf: bytes) -> Outcome | None:
    """The C answer alone (None when it declines the shape)."""
    try:
        f = frame._parse_native(buf)
    except ParseError as e:
        return ("error", e.reason)
    return None if f is None else ("frame", (f, tuple(type(x) for x in f)))


def check(buf: bytes) -> bool:
    """Asserts equivalence for one buffer; True when the C handled it itself."""
    expect = outcome(frame.parse_frame_pure, buf)
    assert outcome(frame.parse_frame, buf) == expect, buf.hex()
    direct = native_only(buf)
    assert direct is None or direct == expect, buf.hex()
    return direct is not None


def test_error_codes_are_the_pure_reasons() -> None:
    names = [n for n in dir(lib) if n.startswith("TSK_E_")]
    assert {n[len("TSK_E_") :].lower() for n in names} <= set(frame.REASONS)
    assert ffi.sizeof("struct tsk_frame") == 16 * 4


COMMON = ["ns", "ns_dad", "na", "rs", "ra", "redirect", "echo6_request", "echo6_reply", "tcp6_syn", "tcp4_syn",
          "udp6", "udp4", "udp4_padded", "icmp4_echo", "icmp6_port_unreach", "icmp4_frag_needed"]


@pytest.mark.parametrize("name", COMMON)
def test_common_shapes_take_the_fast_path(name: str) -> None:
    assert check(FIXTURES[name])


@pytest.mark.parametrize("name", ["arp_request", "ipv6_ext", "ipv4_options", "frag6_first", "frag4_last",
                                  "mldv2_report"])
def test_other_shapes_are_declined(name: str) -> None:
    assert not check(FIXTURES[name])


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_truncation(name: str) -> None:
    buf = FIXTURES[name]
    for n in range(len(buf) + 1):
        check(buf[:n])


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_single_bit_flip(name: str) -> None:
    buf = bytearray(FIXTURES[name])
    for i in range(len(buf)):
        for bit in range(8):
            buf[i] ^= 1 << bit
            check(bytes(buf))
            buf[i] ^= 1 << bit


ETH6 = bytes.fromhex("02000000000a02000000000b86dd")
ETH4 = bytes.fromhex("02000000000a02000000000b0800")


@st.composite
def ipv6_frames(draw: st.DrawFn) -> bytes:
    payload = draw(st.binary(max_size=120))
    plen = draw(st.one_of(st.just(len(payload)), st.integers(0, 0xFFFF)))
    nh = draw(st.sampled_from([6, 17, 58, 0, 43, 44, 60, 59, 1, 255]))
    head = struct.pack(">IHBB", 0x60000000 | draw(st.integers(0, 0xFFFFFFF)), plen, nh, draw(st.integers(0, 255)))
    return ETH6 + head + draw(st.binary(min_size=32, max_size=32)) + payload + draw(st.binary(max_size=8))


def _fix_ipv4_checksum(header: bytearray) -> bytearray:
    header[10:12] = b"\0\0"
    header[10:12] = _pure.internet_checksum(bytes(header)).to_bytes(2, "big")
    return header


@st.composite
def ipv4_frames(draw: st.DrawFn) -> bytes:
    ihl = draw(st.sampled_from([5, 5, 5, 6, 4, 15]))
    options = draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    payload = draw(st.binary(max_size=120))
    total = draw(st.one_of(st.just(20 + len(options) + len(payload)), st.integers(0, 0xFFFF)))
    flags = draw(st.sampled_from([0, 0x4000, 0x2000, 0x0001, 0x8000]))
    proto = draw(st.sampled_from([6, 17, 1, 58, 47]))
    header = bytearray(struct.pack(">BBHHHBBH", 0x40 | ihl, draw(st.integers(0, 255)), total,
                                   draw(st.integers(0, 0xFFFF)), flags, draw(st.integers(0, 255)), proto, 0))
    header += draw(st.binary(min_size=8, max_size=8)) + options
    if draw(st.booleans()):
        header = _fix_ipv4_checksum(header)
    return ETH4 + bytes(header) + payload + draw(st.binary(max_size=8))


@settings(max_examples=1500, deadline=None)
@given(buf=st.one_of(ipv6_frames(), ipv4_frames()))
def test_random_ip_frames(buf: bytes) -> None:
    check(buf)


@settings(max_examples=500, deadline=None)
@given(ethertype=st.sampled_from([b"\x86\xdd", b"\x08\x00", b"\x08\x06", b"\x81\x00"]),
       body=st.binary(max_size=200))
def test_random_bytes_after_an_ethernet_header(ethertype: bytes, body: bytes) -> None:
    check(ETH6[:12] + ethertype + body)

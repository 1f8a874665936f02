"""stack.wire.tcp: parse/build against scapy as the oracle, option edge cases."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stack.wire.addr import ip4, ip6
from stack.wire.checksum import ones_sum, pseudo_sum4, pseudo_sum6
from stack.wire.errors import ParseError
from stack.wire.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    TcpSegment,
    build_tcp,
    options_bytes,
    options_len,
    parse_flags,
    parse_tcp,
    peek_seq,
)

scapy_all = pytest.importorskip("scapy.all")

SRC6, DST6 = ip6("2001:db8:1::1"), ip6("2001:db8:1::2")
SRC4, DST4 = ip4("192.0.2.1"), ip4("192.0.2.2")


def scapy_tcp6(**kw: object) -> bytes:
    pkt = scapy_all.IPv6(src="2001:db8:1::1", dst="2001:db8:1::2") / scapy_all.TCP(**kw)
    return bytes(pkt)[40:]


def test_syn_with_linux_options_matches_scapy() -> None:
    seg = TcpSegment(1000, 0, SYN, 64240, mss=1460, wscale=7, sack_permitted=True, ts=(12345, 0))
    got = build_tcp(SRC6, DST6, 40000, 80, seg)
    want = scapy_tcp6(sport=40000, dport=80, seq=1000, ack=0, flags="S", window=64240,
                      options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (12345, 0)), ("NOP", None),
                               ("WScale", 7)])
    assert got == want


def test_data_segment_with_timestamps_matches_scapy() -> None:
    seg = TcpSegment(5, 7, ACK | PSH, 512, b"hello", ts=(1, 2))
    got = build_tcp(SRC6, DST6, 7, 40000, seg)
    pkt = scapy_all.IPv6(src="2001:db8:1::1", dst="2001:db8:1::2") / scapy_all.TCP(
        sport=7, dport=40000, seq=5, ack=7, flags="PA", window=512,
        options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / b"hello"
    assert got == bytes(pkt)[40:]


def test_ipv4_checksum_verifies() -> None:
    seg = TcpSegment(0xFFFFFFFF, 1, ACK, 100, b"abc")
    wire = build_tcp(SRC4, DST4, 1, 2, seg)
    assert ones_sum(wire, pseudo_sum4(SRC4, DST4, len(wire), 6)) == 0xFFFF
    pkt = scapy_all.IP(bytes(scapy_all.IP(src="192.0.2.1", dst="192.0.2.2", proto=6) / scapy_all.Raw(wire)))
    assert pkt[scapy_all.TCP].chksum == int.from_bytes(wire[16:18], "big")


def test_ipv6_checksum_verifies() -> None:
    wire = build_tcp(SRC6, DST6, 1, 2, TcpSegment(1, 2, ACK, 3, b"x" * 1001))
    assert ones_sum(wire, pseudo_sum6(SRC6, DST6, len(wire), 6)) == 0xFFFF


def test_parse_scapy_syn() -> None:
    raw = scapy_tcp6(sport=1, dport=2, seq=10, ack=0, flags="S", window=1000,
                     options=[("MSS", 1220), ("NOP", None), ("WScale", 20), ("SAckOK", b""),
                              ("Timestamp", (5, 0))])
    seg = parse_tcp(raw, 0, len(raw))
    assert (seg.seq, seg.flags, seg.window, seg.mss, seg.sack_permitted, seg.ts) == (10, SYN, 1000, 1220, True, (5, 0))
    assert seg.wscale == 14        # RFC 7323 §2.3: larger shifts mean 14


def test_parse_sack_blocks_and_unknown_option() -> None:
    raw = scapy_tcp6(sport=1, dport=2, seq=10, ack=20, flags="A", window=1000,
                     options=[(254, b"\x01\x02"), ("NOP", None), ("NOP", None), ("SAck", (100, 200, 300, 400))])
    seg = parse_tcp(raw + b"data", 0, len(raw) + 4)
    assert seg.sack_blocks == ((100, 200), (300, 400))
    assert seg.payload == b"data"


def test_roundtrip_everything() -> None:
    seg = TcpSegment(1, 2, ACK | FIN, 3, b"payload", 0, None, None, False, ((5, 6), (7, 8), (9, 10)), (11, 12))
    wire = build_tcp(SRC6, DST6, 9, 10, seg)
    assert parse_tcp(wire, 0, len(wire)) == seg
    assert options_len(seg) == len(options_bytes(seg)) == 40


def test_sack_blocks_cut_to_fit() -> None:
    seg = TcpSegment(1, 2, ACK, 3, sack_blocks=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10)), ts=(1, 1))
    wire = build_tcp(SRC6, DST6, 9, 10, seg)
    assert len(parse_tcp(wire, 0, len(wire)).sack_blocks) == 3
    no_ts = seg._replace(ts=None)
    wire = build_tcp(SRC6, DST6, 9, 10, no_ts)
    assert len(parse_tcp(wire, 0, len(wire)).sack_blocks) == 4


def test_parse_at_offset_inside_larger_buffer() -> None:
    wire = build_tcp(SRC6, DST6, 9, 10, TcpSegment(1, 2, ACK, 3, b"abc"))
    buf = b"\xee" * 54 + wire + b"\x00" * 6          # Ethernet padding after ip_end
    assert parse_tcp(buf, 54, 54 + len(wire)).payload == b"abc"


@pytest.mark.parametrize("mutate, reason", [
    (lambda w: w[:19], "tcp_truncated"),
    (lambda w: w[:12] + bytes((0x40,)) + w[13:], "tcp_bad_offset"),
    (lambda w: w[:12] + bytes((0xF0,)) + w[13:], "tcp_bad_offset"),
    (lambda w: w[:20] + b"\x02\x05" + w[22:], "tcp_bad_option"),         # MSS of length 5
    (lambda w: w[:20] + b"\x08\x01" + w[22:], "tcp_bad_option"),         # length below 2
    (lambda w: w[:20] + b"\x01\x01\x01\x05", "tcp_bad_option"),          # kind without length byte... SACK len
], ids=["short", "offset4", "offset_past_end", "mss_len", "len1", "sack_len"])
def test_malformed(mutate: object, reason: str) -> None:
    wire = build_tcp(SRC6, DST6, 9, 10, TcpSegment(1, 2, SYN, 3, mss=1460))
    bad = mutate(wire)  # type: ignore[operator]
    with pytest.raises(ParseError) as exc:
        parse_tcp(bad, 0, len(bad))
    assert exc.value.reason == reason


def test_flags_and_helpers() -> None:
    assert parse_flags("SA") == SYN | ACK
    assert parse_flags("FRPA") == FIN | RST | PSH | ACK
    seg = TcpSegment(1, 2, SYN | ACK, 3)
    assert seg.seg_len == 1 and seg.describe() == "SA seq=1 ack=2 win=3 len=0"
    assert TcpSegment(1, 2, FIN | SYN, 3, b"ab").seg_len == 4
    wire = build_tcp(SRC6, DST6, 9, 10, TcpSegment(0xDEADBEEF, 2, ACK, 3))
    assert peek_seq(wire[:8], 0) == 0xDEADBEEF


@given(st.binary(max_size=80))
def test_parse_never_raises_anything_but_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_tcp(data, 0, len(data))


@given(seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1), flags=st.integers(0, 255),
       window=st.integers(0, 0xFFFF), payload=st.binary(max_size=64),
       mss=st.none() | st.integers(0, 0xFFFF), wscale=st.none() | st.integers(0, 14),
       sack_permitted=st.booleans(), ts=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)))
def test_roundtrip_property(seq: int, ack: int, flags: int, window: int, payload: bytes, mss: int | None,
                            wscale: int | None, sack_permitted: bool, ts: tuple[int, int] | None) -> None:
    seg = TcpSegment(seq, ack, flags, window, payload, 0, mss, wscale, sack_permitted, (), ts)
    wire = build_tcp(SRC4, DST4, 1, 2, seg)
    assert parse_tcp(wire, 0, len(wire)) == seg
    assert ones_sum(wire, pseudo_sum4(SRC4, DST4, len(wire), 6)) == 0xFFFF

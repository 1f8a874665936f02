"""wire/gso: virtio-net header values, software segmentation and checksum completion vs scapy."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from stack.wire.checksum import pseudo_sum4, pseudo_sum6
from stack.wire.errors import ParseError
from stack.wire.gso import (
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    GsoChain,
    Offload,
    OffloadBytes,
    complete_checksum,
    gso_segment,
    joined,
    offload_of,
    tcp_gso,
    unpack_offload,
)

SRC6, DST6 = "2001:db8::1", "2001:db8::2"
SRC4, DST4 = "192.0.2.1", "198.51.100.2"
OPTS = [("NOP", None), ("NOP", None), ("Timestamp", (1234, 5678))]


def _payload(n: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


def _big6(n: int, flags: str, seq: int = 1000) -> bytes:
    return bytes(IPv6(src=SRC6, dst=DST6, hlim=63, tc=0x20)
                 / TCP(sport=40000, dport=9, seq=seq, ack=77, flags=flags, window=512, options=OPTS)
                 / _payload(n))


def _big4(n: int, flags: str, seq: int = 1000, ident: int = 0xFFFE) -> bytes:
    return bytes(IP(src=SRC4, dst=DST4, ttl=63, id=ident, flags="DF")
                 / TCP(sport=40000, dport=9, seq=seq, ack=77, flags=flags, window=512, options=OPTS)
                 / _payload(n))


def _expected(big: bytes, mss: int, v6: bool) -> list[bytes]:
    """What scapy builds for each piece (fresh lengths and checksums)."""
    pkt = IPv6(big) if v6 else IP(big)
    tcp = pkt[TCP]
    data = bytes(tcp.payload)
    n = max(1, -(-len(data) // mss))
    out = []
    for i in range(n):
        flags = int(tcp.flags)
        if i != n - 1:
            flags &= ~0x09          # FIN, PSH
        if i != 0:
            flags &= ~0x80          # CWR
        t = TCP(sport=tcp.sport, dport=tcp.dport, seq=(tcp.seq + i * mss) & 0xFFFFFFFF, ack=tcp.ack,
                flags=flags, window=tcp.window, options=tcp.options)
        ip: IPv6 | IP
        if v6:
            ip = IPv6(src=pkt.src, dst=pkt.dst, hlim=pkt.hlim, tc=pkt.tc)
        else:
            ip = IP(src=pkt.src, dst=pkt.dst, ttl=pkt.ttl, id=(pkt.id + i) & 0xFFFF, flags=pkt.flags)
        out.append(bytes(ip / t / data[i * mss:(i + 1) * mss]))
    return out


@pytest.mark.parametrize("v6", [True, False])
@pytest.mark.parametrize(("size", "flags"), [(5000, "PA"), (4320, "FPA"), (100, "A"), (0, "FA"), (60000, "CPA")])
def test_segments_match_scapy(v6: bool, size: int, flags: str) -> None:
    big = _big6(size, flags) if v6 else _big4(size, flags)
    segs = gso_segment(big, 1440)
    assert segs == _expected(big, 1440, v6)
    assert len(segs) == max(1, -(-size // 1440))
    data = b"".join(bytes((IPv6(s) if v6 else IP(s))[TCP].payload) for s in segs)
    assert data == _payload(size)


def test_sequence_wraps_and_ident_wraps() -> None:
    big = _big4(3000, "PA", seq=0xFFFFFC00, ident=0xFFFF)
    segs = gso_segment(big, 1000)
    assert segs == _expected(big, 1000, False)
    assert [IP(s).id for s in segs] == [0xFFFF, 0, 1]
    assert [IP(s)[TCP].seq for s in segs] == [0xFFFFFC00, (0xFFFFFC00 + 1000) & 0xFFFFFFFF, 0x3E8 + 0x3E8 - 0x400]


@pytest.mark.parametrize("v6", [True, False])
def test_partial_checksum_input_gives_the_same_segments(v6: bool) -> None:
    """The kernel hands over GSO packets whose checksum field holds only the pseudo-header sum."""
    big = bytearray(_big6(9000, "PA") if v6 else _big4(9000, "PA"))
    l4 = 40 if v6 else 20
    tcp_len = len(big) - l4
    partial = pseudo_sum6(bytes(big[8:24]), bytes(big[24:40]), tcp_len, 6) if v6 else \
        pseudo_sum4(bytes(big[12:16]), bytes(big[16:20]), tcp_len, 6)
    expected = gso_segment(bytes(big), 1200)
    big[l4 + 16:l4 + 18] = partial.to_bytes(2, "big")
    assert gso_segment(bytes(big), 1200) == expected


@pytest.mark.parametrize("v6", [True, False])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_complete_checksum_matches_scapy(v6: bool, proto: str) -> None:
    l4 = TCP(sport=1, dport=2, flags="PA") if proto == "tcp" else UDP(sport=1, dport=2)
    ip = IPv6(src=SRC6, dst=DST6) if v6 else IP(src=SRC4, dst=DST4)
    good = bytes(ip / l4 / _payload(1001))
    start = 40 if v6 else 20
    off = 16 if proto == "tcp" else 6
    length = len(good) - start
    nh = 6 if proto == "tcp" else 17
    partial = pseudo_sum6(good[8:24], good[24:40], length, nh) if v6 else pseudo_sum4(good[12:16], good[16:20], length, nh)
    bad = bytearray(good)
    bad[start + off:start + off + 2] = partial.to_bytes(2, "big")
    assert bytes(bad) != good
    assert complete_checksum(bytes(bad), start, off) == good


def test_complete_checksum_bad_offset() -> None:
    with pytest.raises(ParseError, match="csum_bad_offset"):
        complete_checksum(bytes(30), 20, 16)


@pytest.mark.parametrize("bad", [
    b"",                                                     # truncated
    bytes(IPv6(src=SRC6, dst=DST6) / UDP() / (b"x" * 100)),  # not TCP
    bytes(IP(src=SRC4, dst=DST4, flags="MF") / TCP() / b"x"),  # a fragment
    bytes(IP(src=SRC4, dst=DST4) / TCP() / b"x")[:30],       # total length past the end
    b"\x50" + bytes(60),                                     # version 5
])
def test_bad_input_is_a_parse_error(bad: bytes) -> None:
    with pytest.raises(ParseError):
        gso_segment(bad, 1440)
    with pytest.raises(ParseError, match="gso_bad_size"):
        gso_segment(_big6(10, "A"), 0)


def test_header_pack_roundtrip_and_shift() -> None:
    off = Offload(F_NEEDS_CSUM, GSO_TCPV6, 86, 1428, 54, 16)
    raw = off.pack()
    assert raw == bytes([1, 4]) + (86).to_bytes(2, "little") + (1428).to_bytes(2, "little") \
        + (54).to_bytes(2, "little") + (16).to_bytes(2, "little")
    assert unpack_offload(raw) == off
    assert off.shifted(-14) == Offload(F_NEEDS_CSUM, GSO_TCPV6, 72, 1428, 40, 16)
    assert Offload(0, GSO_TCPV4, 0, 1000, 0, 0).shifted(14) == Offload(0, GSO_TCPV4, 0, 1000, 0, 0)
    assert off.csum_trusted and off.needs_csum and off.gso == GSO_TCPV6


def test_offload_bytes_carry_metadata_only_on_purpose() -> None:
    off = Offload(0, GSO_TCPV4, 52, 1448, 0, 0)
    b = OffloadBytes.make(b"abcdef", off)
    assert b == b"abcdef" and offload_of(b) == off
    assert offload_of(b[1:]) is None and offload_of(b + b"x") is None and offload_of(b"abc") is None


def test_tcp_gso_header_for_local_packets() -> None:
    big = _big6(5000, "PA")
    assert tcp_gso(big, 1428) == Offload(0, GSO_TCPV6, 40 + 32, 1428, 0, 0)
    big4 = _big4(5000, "CPA")
    assert tcp_gso(big4, 1428) == Offload(0, GSO_TCPV4 | GSO_ECN, 20 + 32, 1428, 0, 0)


@pytest.mark.parametrize("v6", [True, False])
def test_gso_chain_stands_for_the_joined_bytes(v6: bool) -> None:
    """A TSO segment built unjoined (build_tcp chain=True) and wrapped in IP and Ethernet
    headers by ``+`` is, joined, byte for byte the packet built the usual way, with the
    same metadata; len and int indexing agree with the joined bytes."""
    from stack.wire.ipv4 import build_ipv4
    from stack.wire.ipv6 import build_ipv6
    from stack.wire.tcp import TcpSegment, build_tcp

    src, dst = (bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000002")) \
        if v6 else (bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]))
    payload = bytes(range(256)) * 200
    seg = TcpSegment(7, 9, 0x18, 1000, memoryview(payload)[3:], 0, None, None, False, (), (5, 6))
    l4 = build_tcp(src, dst, 19, 40000, seg, chain=True)
    assert isinstance(l4, GsoChain) and l4.offload is None
    plain = build_tcp(src, dst, 19, 40000, seg)
    assert type(plain) is bytes and bytes(l4) == plain and len(l4) == len(plain)
    build = build_ipv6 if v6 else build_ipv4
    packet = build(src, dst, 6, l4)
    assert isinstance(packet, GsoChain)
    whole = build(src, dst, 6, plain)
    assert bytes(packet) == whole and packet.join() == whole and type(packet.join()) is bytes
    assert [packet[i] for i in (0, 9, len(whole) - 1, -1, -len(whole))] == \
        [whole[i] for i in (0, 9, len(whole) - 1, -1, -len(whole))]
    packet.offload = tcp_gso(packet, 1000)
    assert packet.offload == tcp_gso(whole, 1000)
    eth = bytes(range(14))
    frame = eth + packet
    assert isinstance(frame, GsoChain) and frame.body is packet.body
    assert frame.offload == packet.offload.shifted(14)
    joined_frame = frame.join()
    assert type(joined_frame) is OffloadBytes and joined_frame == eth + whole
    assert joined_frame.offload == frame.offload
    assert joined(frame) == joined_frame and joined(whole) is whole
    with pytest.raises(TypeError):
        frame[0:2]    # type: ignore[index]

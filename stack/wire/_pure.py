"""Pure-Python reference implementations: checksums and the frame parser.

Always importable, no native code. ``stack.wire.checksum`` and
``stack.wire.frame`` use these when ``stack._native`` is missing or
``TAPSTACK_PURE=1``; the C in ``native/`` must give identical results
(tests/native/test_equivalence.py), so this file is the specification.

Checksums (RFC 1071). A 16-bit one's-complement sum of big-endian words is
congruent to the whole buffer read as one big integer modulo 0xffff, because
2**16 == 1 (mod 0xffff). ``int.from_bytes(...) % 0xffff`` is one C-level pass
(about 3 µs for 1500 bytes, LIMITS.md); the only subtlety is one's-complement
zero: a non-zero sum folds to 1..0xffff and never to 0, which is what
``(x - 1) % 0xffff + 1`` gives for x > 0.

The frame parser: ``parse_frame(buf, ones_sum)`` walks Ethernet, IPv6 (with
the bounded extension header walk) or IPv4 (options skipped) and the
upper-layer header, and returns a ``Frame`` (field rules in frame_types.py,
ParseError reasons listed in frame.py).
"""

from __future__ import annotations

from collections.abc import Callable
from struct import Struct

from stack.wire.errors import ParseError
from stack.wire.frame_types import (
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    PROTO_DSTOPTS,
    PROTO_FRAGMENT,
    PROTO_HOPOPTS,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_ROUTING,
    PROTO_TCP,
    PROTO_UDP,
    Frame,
)

Buffer = bytes | bytearray | memoryview
OnesSum = Callable[[Buffer, int], int]

_from_bytes = int.from_bytes


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """Folded 16-bit one's-complement sum of ``data`` plus ``initial`` (not
    inverted). Odd length: padded with a zero byte (RFC 1071 §4.1)."""
    v = _from_bytes(data, "big")
    if len(data) & 1:
        v <<= 8
    v += initial
    return (v - 1) % 0xFFFF + 1 if v else 0


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_sum6(src: bytes, dst: bytes, length: int, nh: int) -> int:
    """RFC 8200 §8.1 pseudo-header: src, dst, 32-bit length, zeros, next header."""
    v = _from_bytes(src, "big") + _from_bytes(dst, "big") + (length >> 16) + (length & 0xFFFF) + nh
    return (v - 1) % 0xFFFF + 1 if v else 0


def pseudo_sum4(src: bytes, dst: bytes, length: int, proto: int) -> int:
    """RFC 768 / RFC 9293 §3.1 pseudo-header: src, dst, zero, protocol, length."""
    v = _from_bytes(src, "big") + _from_bytes(dst, "big") + (length >> 16) + (length & 0xFFFF) + proto
    return (v - 1) % 0xFFFF + 1 if v else 0


# --- frame parser -----------------------------------------------------------

ETH_LEN = 14
IPV6_LEN = 40
IPV4_LEN = 20
MAX_EXT_HEADERS = 16

_IPV6 = Struct(">IHBB")  # version/tclass/flow, payload length, next header, hop limit
_IPV4 = Struct(">BBHHHBB")  # ver/ihl, tos, total length, ident, flags/offset, ttl, proto
_PORTS = Struct(">HH")
_UDP = Struct(">HHHH")
_FRAG = Struct(">BxHI")  # next header, reserved, offset/res/M, identification


def _non_ip(buf: bytes, ethertype: int) -> Frame:
    # frame_types: for non-IP frames every IP/L4 field is zero/empty and
    # l3_off is 14; nothing was checked, so csum_ok is True.
    return Frame(buf, buf[0:6], buf[6:12], ethertype, 0, ETH_LEN, b"", b"", 0, 0, 0, 0, 0, 0,
                 (), False, 0, False, 0, False, 0, 0, 0, 0, True)


def parse_frame(buf: bytes, ones_sum: OnesSum = ones_sum) -> Frame:
    """The reference parser. ``ones_sum`` lets frame.py's slow path use the
    native checksum for the same walk."""
    n = len(buf)
    if n < ETH_LEN:
        raise ParseError("eth_truncated")
    ethertype = (buf[12] << 8) | buf[13]
    if ethertype == ETHERTYPE_IPV6:
        return _ipv6(buf, n, ones_sum)
    if ethertype == ETHERTYPE_IPV4:
        return _ipv4(buf, n, ones_sum)
    return _non_ip(buf, ethertype)


def _ipv6(buf: bytes, n: int, ones_sum: OnesSum) -> Frame:
    if n < ETH_LEN + IPV6_LEN:
        raise ParseError("ipv6_truncated")
    vtf, plen, nh, hop_limit = _IPV6.unpack_from(buf, ETH_LEN)
    if vtf >> 28 != 6:
        raise ParseError("ipv6_bad_version")
    end = ETH_LEN + IPV6_LEN + plen
    if end > n:
        # RFC 8200 §3: Payload Length counts everything after the fixed header;
        # more than the frame carries is a broken packet, not padding.
        raise ParseError("ipv6_bad_length")
    off = ETH_LEN + IPV6_LEN
    ext: list[tuple[int, int, int]] = []
    is_fragment = frag_more = False
    frag_off = frag_id = 0
    while nh in (PROTO_HOPOPTS, PROTO_ROUTING, PROTO_DSTOPTS, PROTO_FRAGMENT):
        if nh == PROTO_HOPOPTS and off != ETH_LEN + IPV6_LEN:
            # RFC 8200 §4.1: Hop-by-Hop only immediately after the IPv6 header.
            raise ParseError("ipv6_hbh_not_first")
        if len(ext) == MAX_EXT_HEADERS:
            raise ParseError("ipv6_ext_too_many")
        if nh == PROTO_FRAGMENT:
            # RFC 8200 §4.5: fixed 8 bytes. What follows is fragment data, not
            # more of the header chain, so the walk stops here.
            if off + 8 > end:
                raise ParseError("ipv6_ext_truncated")
            next_nh, offm, frag_id = _FRAG.unpack_from(buf, off)
            ext.append((PROTO_FRAGMENT, off, 8))
            is_fragment = True
            frag_off = offm & 0xFFF8
            frag_more = bool(offm & 1)
            nh = next_nh
            off += 8
            break
        # RFC 8200 §4.3-4.6: Hdr Ext Len in 8-octet units, not counting the first 8.
        if off + 2 > end:
            raise ParseError("ipv6_ext_truncated")
        length = (buf[off + 1] + 1) * 8
        if off + length > end:
            raise ParseError("ipv6_ext_truncated")
        ext.append((nh, off, length))
        nh = buf[off]
        off += length
    src = buf[22:38]
    dst = buf[38:54]
    sport = dport = icmp_type = icmp_code = 0
    csum_ok = True
    if not is_fragment:
        if nh == PROTO_TCP:
            sport, dport, csum_ok = _tcp(buf, off, end, ones_sum, pseudo_sum6(src, dst, end - off, nh))
        elif nh == PROTO_UDP:
            sport, dport, csum_ok = _udp(buf, off, end, ones_sum, src, dst, True)
        elif nh == PROTO_ICMPV6:
            if end - off < 8:
                raise ParseError("icmp_truncated")
            icmp_type = buf[off]
            icmp_code = buf[off + 1]
            csum_ok = _csum(buf, off, end, ones_sum, pseudo_sum6(src, dst, end - off, nh))
    return Frame(buf, buf[0:6], buf[6:12], ETHERTYPE_IPV6, 6, ETH_LEN, src, dst, hop_limit,
                 (vtf >> 20) & 0xFF, vtf & 0xFFFFF, end, nh, off, tuple(ext), is_fragment,
                 frag_off, frag_more, frag_id, False, sport, dport, icmp_type, icmp_code, csum_ok)


def _ipv4(buf: bytes, n: int, ones_sum: OnesSum) -> Frame:
    if n < ETH_LEN + IPV4_LEN:
        raise ParseError("ipv4_truncated")
    vihl, tos, total, ident, flags, ttl, proto = _IPV4.unpack_from(buf, ETH_LEN)
    if vihl >> 4 != 4:
        raise ParseError("ipv4_bad_version")
    ihl = (vihl & 0x0F) * 4
    if ihl < IPV4_LEN:
        raise ParseError("ipv4_bad_ihl")  # RFC 791 §3.1: minimum IHL is 5
    if ETH_LEN + ihl > n:
        raise ParseError("ipv4_truncated")  # options run past the frame
    if total < ihl or ETH_LEN + total > n:
        raise ParseError("ipv4_bad_length")
    # RFC 791 §3.1 / RFC 1071: header (options included) sums to all ones.
    if ones_sum(memoryview(buf)[ETH_LEN : ETH_LEN + ihl], 0) != 0xFFFF:
        raise ParseError("ipv4_bad_checksum")
    end = ETH_LEN + total
    off = ETH_LEN + ihl
    src = buf[26:30]
    dst = buf[30:34]
    frag_off = (flags & 0x1FFF) * 8
    frag_more = bool(flags & 0x2000)
    is_fragment = frag_more or frag_off != 0
    sport = dport = icmp_type = icmp_code = 0
    csum_ok = True
    if not is_fragment:
        if proto == PROTO_TCP:
            sport, dport, csum_ok = _tcp(buf, off, end, ones_sum, pseudo_sum4(src, dst, end - off, proto))
        elif proto == PROTO_UDP:
            sport, dport, csum_ok = _udp(buf, off, end, ones_sum, src, dst, False)
        elif proto == PROTO_ICMP:
            if end - off < 8:
                raise ParseError("icmp_truncated")
            icmp_type = buf[off]
            icmp_code = buf[off + 1]
            csum_ok = _csum(buf, off, end, ones_sum, 0)  # RFC 792: no pseudo-header
    return Frame(buf, buf[0:6], buf[6:12], ETHERTYPE_IPV4, 4, ETH_LEN, src, dst, ttl, tos, 0, end,
                 proto, off, (), is_fragment, frag_off, frag_more, ident, bool(flags & 0x4000),
                 sport, dport, icmp_type, icmp_code, csum_ok)


def _csum(buf: bytes, off: int, end: int, ones_sum: OnesSum, initial: int) -> bool:
    return ones_sum(memoryview(buf)[off:end], initial) == 0xFFFF


def _tcp(buf: bytes, off: int, end: int, ones_sum: OnesSum, pseudo: int) -> tuple[int, int, bool]:
    # RFC 9293 §3.1: 20 fixed bytes; Data Offset (32-bit words) at least 5 and
    # inside the segment. Options and flags are tcp.py's business.
    if end - off < 20:
        raise ParseError("tcp_truncated")
    doff = buf[off + 12] >> 4
    if doff < 5 or doff * 4 > end - off:
        raise ParseError("tcp_bad_offset")
    sport, dport = _PORTS.unpack_from(buf, off)
    return sport, dport, _csum(buf, off, end, ones_sum, pseudo)


def _udp(buf: bytes, off: int, end: int, ones_sum: OnesSum, src: bytes, dst: bytes,
         v6: bool) -> tuple[int, int, bool]:
    if end - off < 8:
        raise ParseError("udp_truncated")
    sport, dport, ulen, csum = _UDP.unpack_from(buf, off)
    if ulen < 8 or ulen > end - off:
        # RFC 768: Length counts header and data. A shorter Length than the IP
        # payload is accepted (the datagram ends at off + Length); longer is not.
        raise ParseError("udp_bad_length")
    if csum == 0:
        # RFC 768: zero = no checksum (IPv4). RFC 8200 §8.1: an IPv6 receiver
        # discards a zero UDP checksum, so the verdict is False there.
        return sport, dport, not v6
    # RFC 8200 §8.1: protocols with their own length use it in the pseudo-header.
    pseudo = pseudo_sum6(src, dst, ulen, PROTO_UDP) if v6 else pseudo_sum4(src, dst, ulen, PROTO_UDP)
    return sport, dport, _csum(buf, off, off + ulen, ones_sum, pseudo)

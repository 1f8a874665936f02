"""IPv4 header, options and fragmentation (RFC 791, RFC 1122 §3.2.1, RFC 1812 §4.2.2).

Byte layout of the header, the option TLVs (skipped by the receive path, only
walked here for fragmentation's copy rule), the header checksum and source
fragmentation. Reassembly and TTL policy live in ``stack.core``.

Builders take trusted arguments and raise ``ValueError`` on misuse; parsers
take untrusted bytes and raise ``ParseError`` only, with the same reasons as
``parse_frame`` for the same defects.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from stack.wire import checksum
from stack.wire.errors import ParseError

IPV4_HEADER_LEN = 20
IPV4_MAX_HEADER_LEN = 60
IPV4_MIN_MTU = 68  # RFC 791 §3.2: every module must forward 68 octets unfragmented

FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF

# RFC 791 §3.1 option types (copied flag 0x80, class 0x60, number 0x1f).
OPT_EOL = 0
OPT_NOP = 1
OPT_COPIED = 0x80
OPT_RR = 7
OPT_TS = 68
OPT_LSRR = 131
OPT_SSRR = 137
OPT_ROUTER_ALERT = 148  # RFC 2113

_HDR = Struct(">BBHHHBBH4s4s")


@dataclass(frozen=True, slots=True)
class Ipv4Header:
    """IPv4 header, RFC 791 §3.1 (``frag_off`` in bytes)::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |Version|  IHL  |Type of Service|          Total Length         |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |         Identification        |Flags|      Fragment Offset    |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |  Time to Live |    Protocol   |         Header Checksum       |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                       Source Address                          |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                    Destination Address                        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                    Options                    |    Padding    |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    tos: int
    total_length: int
    ident: int
    df: bool
    mf: bool
    frag_off: int
    ttl: int
    proto: int
    checksum: int
    src: bytes
    dst: bytes
    options: bytes = b""

    @property
    def header_len(self) -> int:
        return IPV4_HEADER_LEN + len(self.options)

    @property
    def is_fragment(self) -> bool:
        return self.mf or self.frag_off != 0

    @classmethod
    def parse(cls, buf: bytes, off: int = 0, verify_checksum: bool = True) -> Ipv4Header:
        """Checks in the order of ``parse_frame``; the payload ends at
        ``off + total_length`` (anything after is link padding)."""
        n = len(buf)
        if off < 0 or n - off < IPV4_HEADER_LEN:
            raise ParseError("ipv4_truncated")
        vihl, tos, total, ident, flags, ttl, proto, csum, src, dst = _HDR.unpack_from(buf, off)
        if vihl >> 4 != 4:
            raise ParseError("ipv4_bad_version")
        ihl = (vihl & 0x0F) * 4
        if ihl < IPV4_HEADER_LEN:
            raise ParseError("ipv4_bad_ihl")
        if off + ihl > n:
            raise ParseError("ipv4_truncated")
        if total < ihl or off + total > n:
            raise ParseError("ipv4_bad_length")
        if verify_checksum and checksum.ones_sum(memoryview(buf)[off : off + ihl]) != 0xFFFF:
            raise ParseError("ipv4_bad_checksum")
        return cls(tos, total, ident, bool(flags & FLAG_DF), bool(flags & FLAG_MF), (flags & OFFSET_MASK) * 8,
                   ttl, proto, csum, src, dst, bytes(buf[off + IPV4_HEADER_LEN : off + ihl]))

    def pack_into(self, buf: bytearray | memoryview, off: int) -> None:
        """Writes the header with a freshly computed checksum (``self.checksum`` is ignored)."""
        hlen = self.header_len
        if hlen > IPV4_MAX_HEADER_LEN or len(self.options) & 3:
            raise ValueError("IPv4 options must be padded to 4 bytes, at most 40")
        if self.frag_off & 7 or not 0 <= self.frag_off <= OFFSET_MASK * 8:
            raise ValueError("fragment offset must be a multiple of 8 below 65536")
        flags = (FLAG_DF if self.df else 0) | (FLAG_MF if self.mf else 0) | (self.frag_off >> 3)
        _HDR.pack_into(buf, off, 0x40 | (hlen >> 2), self.tos, self.total_length, self.ident, flags,
                       self.ttl, self.proto, 0, self.src, self.dst)
        buf[off + IPV4_HEADER_LEN : off + hlen] = self.options
        csum = checksum.internet_checksum(memoryview(buf)[off : off + hlen])
        buf[off + 10] = csum >> 8
        buf[off + 11] = csum & 0xFF

    def pack(self) -> bytes:
        out = bytearray(self.header_len)
        self.pack_into(out, 0)
        return bytes(out)


def iter_options(buf: bytes, off: int, end: int) -> list[tuple[int, int, int]]:
    """``(type, offset, length)`` of each option in ``buf[off:end]``, RFC 791 §3.1.

    End of Option List stops the walk; No Operation is one byte; every other
    option has a length octet counting the type and length octets (>= 2).
    """
    end = min(end, len(buf))
    out: list[tuple[int, int, int]] = []
    while off < end:
        opt = buf[off]
        if opt == OPT_EOL:
            break
        if opt == OPT_NOP:
            out.append((opt, off, 1))
            off += 1
            continue
        if off + 2 > end:
            raise ParseError("ipv4_bad_option")
        length = buf[off + 1]
        if length < 2 or off + length > end:
            raise ParseError("ipv4_bad_option")
        out.append((opt, off, length))
        off += length
    return out


def build_ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = 64, tos: int = 0, ident: int = 0,
               df: bool = False) -> bytes:
    """A complete IPv4 packet without options, header checksum filled."""
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("IPv4 addresses are 4 bytes")
    total = IPV4_HEADER_LEN + len(payload)
    if total > 0xFFFF:
        raise ValueError("IPv4 packet over 65535 bytes")
    hdr = bytearray(_HDR.pack(0x45, tos, total, ident & 0xFFFF, FLAG_DF if df else 0, ttl, proto, 0, src, dst))
    csum = checksum.internet_checksum(hdr)
    hdr[10] = csum >> 8
    hdr[11] = csum & 0xFF
    return bytes(hdr) + payload


def _copied_options(options: bytes) -> bytes:
    """RFC 791 §3.2: only options with the copied flag go into later fragments;
    the result is padded with End of Option List to a 4-byte boundary."""
    kept = b"".join(options[o : o + n] for t, o, n in iter_options(options, 0, len(options)) if t & OPT_COPIED)
    return kept + bytes(-len(kept) % 4)


def fragment_ipv4(packet: bytes, mtu: int) -> list[bytes]:
    """Split an IPv4 packet into fragments of at most ``mtu`` bytes (RFC 791 §3.2).

    Works on already-fragmented packets too (a router re-fragmenting): offsets
    are added to the packet's own and only the last piece keeps its MF bit.
    ``ValueError`` when DF is set (the caller sends "fragmentation needed") or
    when ``mtu`` leaves no room for 8 bytes of data.
    """
    hdr = Ipv4Header.parse(packet, 0, verify_checksum=False)
    packet = packet[: hdr.total_length]
    if len(packet) <= mtu:
        return [packet]
    if hdr.df:
        raise ValueError("DF set: cannot fragment")
    data = memoryview(packet)[hdr.header_len :]
    options = hdr.options
    out: list[bytes] = []
    start = 0
    while start < len(data):
        hlen = IPV4_HEADER_LEN + len(options)
        room = mtu - hlen
        more = len(data) - start > room
        size = room & ~7 if more else len(data) - start
        if size <= 0:
            raise ValueError(f"mtu {mtu} leaves no room for fragment data")
        piece = data[start : start + size]
        frag = Ipv4Header(hdr.tos, hlen + size, hdr.ident, False, more or hdr.mf, hdr.frag_off + start,
                          hdr.ttl, hdr.proto, 0, hdr.src, hdr.dst, options)
        buf = bytearray(hlen + size)
        frag.pack_into(buf, 0)
        buf[hlen:] = piece
        out.append(bytes(buf))
        start += size
        if start == size:
            options = _copied_options(options)  # after the first fragment
    return out


__all__ = [
    "FLAG_DF",
    "FLAG_MF",
    "IPV4_HEADER_LEN",
    "IPV4_MAX_HEADER_LEN",
    "IPV4_MIN_MTU",
    "OPT_COPIED",
    "OPT_EOL",
    "OPT_LSRR",
    "OPT_NOP",
    "OPT_ROUTER_ALERT",
    "OPT_RR",
    "OPT_SSRR",
    "OPT_TS",
    "Ipv4Header",
    "build_ipv4",
    "fragment_ipv4",
    "iter_options",
]

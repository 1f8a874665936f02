"""IPv6 header, Hop-by-Hop/Destination options, fragmentation (RFC 8200).

Owns the byte layout of the fixed header (§3), the TLV options of the
Hop-by-Hop and Destination Options headers (§4.2-4.3, §4.6), the Router Alert
option (RFC 2711) and source fragmentation (§4.5). No policy: which options
to act on, hop-limit checks and reassembly live in ``stack.core``. Receive-side
walking of the extension header chain is in the frame parser (``_pure.py``).

Builders take trusted arguments and raise ``ValueError`` on misuse; parsers
take untrusted bytes and raise ``ParseError`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from stack.wire.errors import ParseError
from stack.wire.frame_types import (
    PROTO_DSTOPTS,
    PROTO_FRAGMENT,
    PROTO_HOPOPTS,
    PROTO_ROUTING,
)

IPV6_HEADER_LEN = 40
FRAGMENT_HEADER_LEN = 8
IPV6_MIN_MTU = 1280  # RFC 8200 §5
MAX_PAYLOAD = 0xFFFF  # jumbograms (RFC 2675) are not built

# RFC 8200 §4.2 option types; RFC 2711 Router Alert; RFC 2675 Jumbo Payload.
OPT_PAD1 = 0x00
OPT_PADN = 0x01
OPT_ROUTER_ALERT = 0x05
OPT_JUMBO = 0xC2
ROUTER_ALERT_MLD = 0  # RFC 2711 §2.1: value 0 = "packet contains MLD"

# RFC 8200 §4.2: the two high bits of an unrecognized option's type say what to do.
OPT_ACTION_SKIP = 0
OPT_ACTION_DISCARD = 1
OPT_ACTION_DISCARD_ICMP = 2
OPT_ACTION_DISCARD_ICMP_UNICAST = 3

_HDR = Struct(">IHBB16s16s")
_FRAG = Struct(">BBHI")


@dataclass(frozen=True, slots=True)
class Ipv6Header:
    """IPv6 fixed header, RFC 8200 §3::

        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |Version| Traffic Class |           Flow Label                  |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |         Payload Length        |  Next Header  |   Hop Limit   |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        +                         Source Address                        +
        |                          (128 bits)                           |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                                                               |
        +                      Destination Address                      +
        |                          (128 bits)                           |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    tclass: int
    flow_label: int
    payload_len: int
    next_header: int
    hop_limit: int
    src: bytes
    dst: bytes

    @classmethod
    def parse(cls, buf: bytes, off: int = 0) -> Ipv6Header:
        if off < 0 or len(buf) - off < IPV6_HEADER_LEN:
            raise ParseError("ipv6_truncated")
        vtf, plen, nh, hlim, src, dst = _HDR.unpack_from(buf, off)
        if vtf >> 28 != 6:
            raise ParseError("ipv6_bad_version")
        return cls((vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen, nh, hlim, src, dst)

    def pack_into(self, buf: bytearray | memoryview, off: int) -> None:
        vtf = (6 << 28) | ((self.tclass & 0xFF) << 20) | (self.flow_label & 0xFFFFF)
        _HDR.pack_into(buf, off, vtf, self.payload_len, self.next_header, self.hop_limit, self.src, self.dst)

    def pack(self) -> bytes:
        out = bytearray(IPV6_HEADER_LEN)
        self.pack_into(out, 0)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class FragmentHeader:
    """Fragment header, RFC 8200 §4.5 (``offset`` in bytes, a multiple of 8)::

        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                         Identification                        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    next_header: int
    offset: int
    more: bool
    ident: int

    @classmethod
    def parse(cls, buf: bytes, off: int, end: int | None = None) -> FragmentHeader:
        end = len(buf) if end is None else min(end, len(buf))
        if off < 0 or end - off < FRAGMENT_HEADER_LEN:
            raise ParseError("ipv6_ext_truncated")
        nh, _res, offm, ident = _FRAG.unpack_from(buf, off)
        return cls(nh, offm & 0xFFF8, bool(offm & 1), ident)

    def pack(self) -> bytes:
        if self.offset & 7 or not 0 <= self.offset <= 0xFFF8:
            raise ValueError("fragment offset must be a multiple of 8 below 65536")
        return _FRAG.pack(self.next_header, 0, self.offset | int(self.more), self.ident)


def option_action(opt_type: int) -> int:
    """RFC 8200 §4.2: the action for an unrecognized option, ``OPT_ACTION_*``."""
    return opt_type >> 6


def iter_options(buf: bytes, off: int, end: int) -> list[tuple[int, int, int]]:
    """TLV options of a Hop-by-Hop or Destination Options header.

    ``off``/``end`` delimit the options area (the header minus its first two
    bytes). Returns ``(type, data_offset, data_length)`` for every option but
    Pad1/PadN. RFC 8200 §4.2: Pad1 is a lone byte; every other option is
    type, length, data.
    """
    end = min(end, len(buf))
    out: list[tuple[int, int, int]] = []
    while off < end:
        opt = buf[off]
        if opt == OPT_PAD1:
            off += 1
            continue
        if off + 2 > end:
            raise ParseError("ipv6_option_truncated")
        length = buf[off + 1]
        if off + 2 + length > end:
            raise ParseError("ipv6_option_truncated")
        if opt != OPT_PADN:
            out.append((opt, off + 2, length))
        off += 2 + length
    return out


def hbh_router_alert(next_header: int, value: int = ROUTER_ALERT_MLD) -> bytes:
    """An 8-byte Hop-by-Hop header carrying only a Router Alert option.

    RFC 2711 §2.1: type 5, length 2, 16-bit value; PadN(0) fills the header to
    a multiple of 8 octets (RFC 8200 §4.3). MLD uses value 0 (RFC 3810 §5).
    """
    return bytes((next_header, 0, OPT_ROUTER_ALERT, 2, value >> 8, value & 0xFF, OPT_PADN, 0))


def build_ipv6(src: bytes, dst: bytes, proto: int, payload: bytes, hop_limit: int = 64, tclass: int = 0,
               flow_label: int = 0, router_alert: bool = False) -> bytes:
    """A complete IPv6 packet; ``router_alert`` inserts the RFC 2711 Hop-by-Hop header."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses are 16 bytes")
    ext = b""
    nh = proto
    if router_alert:
        ext = hbh_router_alert(proto)
        nh = PROTO_HOPOPTS
    plen = len(ext) + len(payload)
    if plen > MAX_PAYLOAD:
        raise ValueError("IPv6 payload over 65535 bytes")
    vtf = (6 << 28) | ((tclass & 0xFF) << 20) | (flow_label & 0xFFFFF)
    return _HDR.pack(vtf, plen, nh, hop_limit, src, dst) + ext + payload


def unfragmentable_part(packet: bytes) -> tuple[int, int]:
    """``(length, nh_pos)`` of the Per-Fragment headers of an IPv6 packet.

    RFC 8200 §4.5: "the IPv6 header plus any extension headers that must be
    processed by nodes en route to the destination, that is, all headers up to
    and including the Routing header if present, else the Hop-by-Hop Options
    header if present, else no extension headers". ``nh_pos`` is the offset of
    the Next Header field that names the first fragmentable header.
    """
    if len(packet) < IPV6_HEADER_LEN:
        raise ValueError("not an IPv6 packet")
    end, nh_pos = IPV6_HEADER_LEN, 6
    off, nh, field = IPV6_HEADER_LEN, packet[6], 6
    while nh in (PROTO_HOPOPTS, PROTO_ROUTING, PROTO_DSTOPTS):
        if off + 2 > len(packet):
            raise ValueError("extension header runs past the packet")
        length = (packet[off + 1] + 1) * 8
        if nh in (PROTO_HOPOPTS, PROTO_ROUTING):
            end, nh_pos = off + length, off
        field = off
        nh = packet[field]
        off += length
    if nh == PROTO_FRAGMENT:
        raise ValueError("packet is already a fragment")
    if end > len(packet):
        raise ValueError("extension header runs past the packet")
    return end, nh_pos


def fragment_ipv6(packet: bytes, mtu: int, ident: int) -> list[bytes]:
    """Split an IPv6 packet into fragments of at most ``mtu`` bytes (RFC 8200 §4.5).

    Each fragment = Per-Fragment headers (Payload Length rewritten, the last
    Next Header set to 44) + Fragment header + a piece of the Fragmentable
    Part; every piece but the last is a multiple of 8 bytes. A packet that
    already fits is returned unchanged (no atomic fragments, RFC 8021).
    """
    plen = (packet[4] << 8) | packet[5] if len(packet) >= IPV6_HEADER_LEN else 0
    packet = packet[: IPV6_HEADER_LEN + plen]
    if len(packet) <= mtu:
        return [packet]
    unfrag_len, nh_pos = unfragmentable_part(packet)
    per_frag = bytearray(packet[:unfrag_len])
    first_nh = per_frag[nh_pos]
    per_frag[nh_pos] = PROTO_FRAGMENT
    data = memoryview(packet)[unfrag_len:]
    last_max = mtu - unfrag_len - FRAGMENT_HEADER_LEN  # the last piece need not be a multiple of 8
    piece = last_max & ~7
    if piece <= 0:
        raise ValueError(f"mtu {mtu} leaves no room for fragment data")
    out: list[bytes] = []
    start = 0
    while True:
        more = len(data) - start > last_max
        chunk = data[start : start + piece] if more else data[start:]
        per_frag[4:6] = (unfrag_len - IPV6_HEADER_LEN + FRAGMENT_HEADER_LEN + len(chunk)).to_bytes(2, "big")
        out.append(bytes(per_frag) + _FRAG.pack(first_nh, 0, start | int(more), ident & 0xFFFFFFFF) + chunk)
        if not more:
            return out
        start += piece


__all__ = [
    "FRAGMENT_HEADER_LEN",
    "IPV6_HEADER_LEN",
    "IPV6_MIN_MTU",
    "OPT_ACTION_DISCARD",
    "OPT_ACTION_DISCARD_ICMP",
    "OPT_ACTION_DISCARD_ICMP_UNICAST",
    "OPT_ACTION_SKIP",
    "OPT_JUMBO",
    "OPT_PAD1",
    "OPT_PADN",
    "OPT_ROUTER_ALERT",
    "ROUTER_ALERT_MLD",
    "FragmentHeader",
    "Ipv6Header",
    "build_ipv6",
    "fragment_ipv6",
    "hbh_router_alert",
    "iter_options",
    "option_action",
    "unfragmentable_part",
]

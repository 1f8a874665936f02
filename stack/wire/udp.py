"""UDP header and checksum (RFC 768; over IPv6, RFC 8200 §8.1).

``build_udp`` picks the pseudo-header family from ``len(src)`` (4 or 16).
The receive path gets ports, length sanity and the checksum verdict from
``parse_frame``; ``UdpHeader.parse`` is for ICMP error quotes and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from stack.wire import checksum
from stack.wire.errors import ParseError
from stack.wire.frame_types import PROTO_UDP

UDP_HEADER_LEN = 8
UDP_MAX_PAYLOAD = 0xFFFF - UDP_HEADER_LEN

_HDR = Struct(">HHHH")


@dataclass(frozen=True, slots=True)
class UdpHeader:
    """UDP header, RFC 768::

         0      7 8     15 16    23 24    31
        +--------+--------+--------+--------+
        |     Source      |   Destination   |
        |      Port       |      Port       |
        +--------+--------+--------+--------+
        |                 |                 |
        |     Length      |    Checksum     |
        +--------+--------+--------+--------+
        |          data octets ...
        +---------------- ...
    """

    sport: int
    dport: int
    length: int
    checksum: int

    @classmethod
    def parse(cls, buf: bytes, off: int = 0, end: int | None = None) -> UdpHeader:
        """Same checks as ``parse_frame``: 8 bytes, 8 <= Length <= what is there.

        ``end`` defaults to the end of ``buf``; ICMP error quotes pass a short
        ``end`` and may then want ``parse_ports`` instead.
        """
        end = len(buf) if end is None else min(end, len(buf))
        if off < 0 or end - off < UDP_HEADER_LEN:
            raise ParseError("udp_truncated")
        sport, dport, length, csum = _HDR.unpack_from(buf, off)
        if length < UDP_HEADER_LEN or length > end - off:
            raise ParseError("udp_bad_length")
        return cls(sport, dport, length, csum)

    def pack(self) -> bytes:
        return _HDR.pack(self.sport, self.dport, self.length, self.checksum)


def parse_ports(buf: bytes, off: int, end: int | None = None) -> tuple[int, int]:
    """Source and destination port of a UDP (or TCP) header, e.g. inside an ICMP
    error quote where only the first 8 bytes are guaranteed (RFC 792, RFC 4443 §3)."""
    end = len(buf) if end is None else min(end, len(buf))
    if off < 0 or end - off < 4:
        raise ParseError("udp_truncated")
    return (buf[off] << 8) | buf[off + 1], (buf[off + 2] << 8) | buf[off + 3]


def udp_pseudo_sum(src: bytes, dst: bytes, length: int) -> int:
    if len(src) == 16:
        return checksum.pseudo_sum6(src, dst, length, PROTO_UDP)
    if len(src) == 4:
        return checksum.pseudo_sum4(src, dst, length, PROTO_UDP)
    raise ValueError("source address must be 4 or 16 bytes")


def build_udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram with its checksum over the pseudo-header of src/dst.

    RFC 768 / RFC 8200 §8.1: a computed checksum of zero is sent as 0xffff
    (zero means "no checksum", which IPv6 forbids).
    """
    if len(src) != len(dst):
        raise ValueError("src and dst must be the same family")
    length = UDP_HEADER_LEN + len(payload)
    if length > 0xFFFF:
        raise ValueError("UDP datagram over 65535 bytes")
    dgram = bytearray(_HDR.pack(sport, dport, length, 0))
    dgram += payload
    csum = checksum.internet_checksum(dgram, udp_pseudo_sum(src, dst, length)) or 0xFFFF
    dgram[6] = csum >> 8
    dgram[7] = csum & 0xFF
    return bytes(dgram)


def udp_checksum_ok(src: bytes, dst: bytes, dgram: bytes) -> bool:
    """Verdict on a whole datagram (``Frame.csum_ok`` already has it for received
    frames). A zero checksum is fine over IPv4 and not over IPv6."""
    if len(dgram) < UDP_HEADER_LEN:
        return False
    if dgram[6] == 0 and dgram[7] == 0:
        return len(src) == 4
    return checksum.ones_sum(dgram, udp_pseudo_sum(src, dst, len(dgram))) == 0xFFFF


__all__ = [
    "UDP_HEADER_LEN",
    "UDP_MAX_PAYLOAD",
    "UdpHeader",
    "build_udp",
    "parse_ports",
    "udp_checksum_ok",
    "udp_pseudo_sum",
]

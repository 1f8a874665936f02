"""Ethernet II header (IEEE 802.3 §3.2.6 "Type" interpretation; RFC 894, RFC 2464).

Builds and parses the 14-byte header only. Frames handed to a TAP need no
padding to 60 bytes (the kernel pads on a real NIC), and received padding is
excluded by ``Frame.ip_end``. VLAN tags are not interpreted: a tagged frame
shows ethertype 0x8100 and is dropped as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from stack.wire.errors import ParseError
from stack.wire.frame_types import ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6

ETH_MIN_FRAME = 60  # without FCS: 64 - 4
ETHERTYPE_VLAN = 0x8100

_ETYPE = Struct(">H")


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    """Ethernet II header::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                Destination MAC (6 bytes)                      |
        +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                               |                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
        |                   Source MAC (6 bytes)                        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |          EtherType            |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    dst: bytes
    src: bytes
    ethertype: int

    @classmethod
    def parse(cls, buf: bytes, off: int = 0) -> EthernetHeader:
        if len(buf) - off < ETH_HEADER_LEN or off < 0:
            raise ParseError("eth_truncated")
        (ethertype,) = _ETYPE.unpack_from(buf, off + 12)
        return cls(bytes(buf[off : off + 6]), bytes(buf[off + 6 : off + 12]), ethertype)

    def pack(self) -> bytes:
        return eth_header(self.dst, self.src, self.ethertype)

    def pack_into(self, buf: bytearray | memoryview, off: int) -> None:
        buf[off : off + ETH_HEADER_LEN] = self.pack()


def eth_header(dst_mac: bytes, src_mac: bytes, ethertype: int) -> bytes:
    """The 14-byte Ethernet II header."""
    if len(dst_mac) != 6 or len(src_mac) != 6:
        raise ValueError("MAC addresses are 6 bytes")
    return dst_mac + src_mac + _ETYPE.pack(ethertype)


def eth_frame(dst_mac: bytes, src_mac: bytes, ethertype: int, payload: bytes, pad: bool = False) -> bytes:
    """Header + payload; ``pad`` zero-fills to the 60-byte Ethernet minimum
    (IEEE 802.3 §4.2.3.3), which a TAP does not need but a pcap reader may like."""
    frame = eth_header(dst_mac, src_mac, ethertype) + payload
    if pad and len(frame) < ETH_MIN_FRAME:
        frame += bytes(ETH_MIN_FRAME - len(frame))
    return frame


def is_broadcast_mac(lladdr: bytes) -> bool:
    return lladdr == b"\xff\xff\xff\xff\xff\xff"


def is_multicast_mac(lladdr: bytes) -> bool:
    """I/G bit (IEEE 802 §8.2): set for group addresses, broadcast included."""
    return bool(lladdr[0] & 0x01)


__all__ = [
    "ETHERTYPE_ARP",
    "ETHERTYPE_IPV4",
    "ETHERTYPE_IPV6",
    "ETHERTYPE_VLAN",
    "ETH_HEADER_LEN",
    "ETH_MIN_FRAME",
    "EthernetHeader",
    "eth_frame",
    "eth_header",
    "is_broadcast_mac",
    "is_multicast_mac",
]

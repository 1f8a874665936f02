"""ARP for IPv4 over Ethernet (RFC 826; RFC 5227 probes and announcements).

Only hardware type 1 (Ethernet, 6-byte addresses) with protocol type 0x0800
(IPv4, 4-byte addresses) is understood; anything else is ParseError
"arp_unsupported". Trailing Ethernet padding after the 28-byte packet is
ignored. Which requests to answer and what to learn is core policy
(RFC 826 "Packet Reception", RFC 1122 §2.3.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from stack.wire.addr import BROADCAST_MAC
from stack.wire.errors import ParseError
from stack.wire.ethernet import eth_header
from stack.wire.frame_types import ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4

ARP_LEN = 28
HTYPE_ETHERNET = 1
OP_REQUEST = 1
OP_REPLY = 2

_ARP = Struct(">HHBBH6s4s6s4s")
_HEAD = Struct(">HHBB")


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """ARP for Ethernet/IPv4, RFC 826::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |      Hardware Type (1)        |     Protocol Type (0x0800)    |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |  HLEN (6)     |   PLEN (4)    |          Operation            |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |           Sender Hardware Address (sha, 6 bytes)              |
        +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                               |  Sender Protocol Address (spa)|
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |   (spa, cont.)                |  Target Hardware Address (tha)|
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
        |                                                               |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |               Target Protocol Address (tpa)                   |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    """

    op: int
    sha: bytes
    spa: bytes
    tha: bytes
    tpa: bytes

    @classmethod
    def parse(cls, buf: bytes, off: int = ETH_HEADER_LEN) -> ArpPacket:
        """An ARP packet at ``buf[off:]`` (``Frame.l3_off`` for a received frame)."""
        if off < 0 or len(buf) - off < _HEAD.size:
            raise ParseError("arp_truncated")
        htype, ptype, hlen, plen = _HEAD.unpack_from(buf, off)
        # RFC 826: the hardware and protocol spaces decide the layout; only the
        # Ethernet/IPv4 one is spoken here.
        if (htype, ptype, hlen, plen) != (HTYPE_ETHERNET, ETHERTYPE_IPV4, 6, 4):
            raise ParseError("arp_unsupported")
        if len(buf) - off < ARP_LEN:
            raise ParseError("arp_truncated")
        _h, _p, _hl, _pl, op, sha, spa, tha, tpa = _ARP.unpack_from(buf, off)
        return cls(op, sha, spa, tha, tpa)

    def pack(self) -> bytes:
        if len(self.sha) != 6 or len(self.tha) != 6 or len(self.spa) != 4 or len(self.tpa) != 4:
            raise ValueError("ARP addresses are 6 (hardware) and 4 (IPv4) bytes")
        return _ARP.pack(HTYPE_ETHERNET, ETHERTYPE_IPV4, 6, 4, self.op, self.sha, self.spa, self.tha, self.tpa)

    @property
    def is_probe(self) -> bool:
        """RFC 5227 §2.1.1: a request with sender IP 0.0.0.0."""
        return self.op == OP_REQUEST and self.spa == bytes(4)

    @property
    def is_announcement(self) -> bool:
        """RFC 5227 §2.3 / gratuitous ARP: sender and target IP are the same."""
        return self.spa == self.tpa and self.spa != bytes(4)


def build_arp_request(sha: bytes, spa: bytes, tpa: bytes) -> bytes:
    """Who has ``tpa``? (RFC 826; tha is zero in requests, RFC 5227 §2.1.1)."""
    return ArpPacket(OP_REQUEST, sha, spa, bytes(6), tpa).pack()


def build_arp_reply(sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    """``spa`` is at ``sha``, sent to the requester (tha/tpa = its sha/spa)."""
    return ArpPacket(OP_REPLY, sha, spa, tha, tpa).pack()


def arp_frame(packet: ArpPacket, eth_dst: bytes | None = None) -> bytes:
    """The whole Ethernet frame: requests go to broadcast unless ``eth_dst`` is
    given (unicast re-validation), replies to ``packet.tha``."""
    if eth_dst is None:
        eth_dst = BROADCAST_MAC if packet.op == OP_REQUEST else packet.tha
    return eth_header(eth_dst, packet.sha, ETHERTYPE_ARP) + packet.pack()


__all__ = [
    "ARP_LEN",
    "HTYPE_ETHERNET",
    "OP_REPLY",
    "OP_REQUEST",
    "ArpPacket",
    "arp_frame",
    "build_arp_reply",
    "build_arp_request",
]

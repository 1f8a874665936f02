"""The parsed-frame value: one parse per frame, every layer reads plain fields.

``parse_frame(buf)`` (in ``stack.wire.frame``) walks Ethernet, IPv4/IPv6 (with the
whole IPv6 extension header chain) and the upper-layer header in one pass and
returns a ``Frame``. Handlers never re-parse what is here; protocol-specific
bodies (ND options, TCP options, ARP payload) are parsed by the module that owns
them, starting at the offsets given here.

Field rules (the native and pure parsers must agree on every one):

* Offsets are absolute into ``buf``. ``ip_end`` excludes Ethernet padding.
* ``ip_version`` is 6 or 4 for IP, 0 for anything else (ARP included); for
  non-IP frames every IP/L4 field is zero/empty and ``l3_off`` is 14.
* IPv6: ``proto`` is the Next Header value that ends the extension header chain
  (the upper-layer protocol, or 59, or the type of an unknown extension), and
  ``l4_off`` points at that header. ``ext`` lists the walked extension headers
  as ``(type, offset, length)``. A Fragment header sets ``is_fragment``,
  ``frag_off`` (bytes), ``frag_more``, ``frag_id``.
* IPv4: ``proto`` is the Protocol field, ``l4_off = l3_off + IHL*4``; MF or a
  non-zero offset sets ``is_fragment``; ``frag_id`` is the Identification;
  ``df`` the DF bit. A bad IPv4 header checksum is a ParseError.
* Upper layer (only when not a fragment): TCP/UDP fill ``sport``/``dport``;
  ICMPv6/ICMPv4 fill ``icmp_type``/``icmp_code``. ``csum_ok`` is the verdict
  of the TCP/UDP/ICMP checksum over the pseudo-header (False for a zero UDP
  checksum over IPv6; True for a zero UDP checksum over IPv4). For fragments
  and for protocols without a checksum the parser does not check and sets
  ``csum_ok = True``.
* ``offload``: None from the parsers. Core sets it to the frame's virtio-net
  metadata (``stack.wire.gso.Offload``) when the link read it with some, whether it
  came as ``OffloadBytes`` or beside plain ``bytes`` (``Stack.receive(..., offload)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Frame(NamedTuple):
    buf: bytes
    eth_dst: bytes
    eth_src: bytes
    ethertype: int
    ip_version: int
    l3_off: int
    src: bytes
    dst: bytes
    hop_limit: int
    tclass: int
    flow_label: int
    ip_end: int
    proto: int
    l4_off: int
    ext: tuple[tuple[int, int, int], ...]
    is_fragment: bool
    frag_off: int
    frag_more: bool
    frag_id: int
    df: bool
    sport: int
    dport: int
    icmp_type: int
    icmp_code: int
    csum_ok: bool
    offload: Any = None          # the link's Offload for this frame (set by core), or None

    @property
    def l4_len(self) -> int:
        return self.ip_end - self.l4_off

    def l4(self) -> bytes:
        return self.buf[self.l4_off : self.ip_end]

    def ip_packet(self) -> bytes:
        return self.buf[self.l3_off : self.ip_end]


ETH_HEADER_LEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD

PROTO_HOPOPTS = 0
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_ICMPV6 = 58
PROTO_NONE = 59
PROTO_DSTOPTS = 60

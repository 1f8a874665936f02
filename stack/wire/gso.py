"""Offload metadata (the virtio-net header) and software TCP segmentation.

A TAP opened with IFF_VNET_HDR prefixes every frame with ``struct virtio_net_hdr``
(include/uapi/linux/virtio_net.h, 10 bytes, little-endian on the hosts we run on)::

    u8  flags        NEEDS_CSUM = 1: the L4 checksum is partial (pseudo-header sum
                     only), to be completed over [csum_start, end) and stored at
                     csum_start + csum_offset; DATA_VALID = 2: already verified
    u8  gso_type     NONE = 0, TCPV4 = 1, UDP = 3, TCPV6 = 4, | ECN = 0x80
    u16 hdr_len      length of the headers (Ethernet + IP + TCP)
    u16 gso_size     payload bytes per segment (the MSS) when gso_type != NONE
    u16 csum_start
    u16 csum_offset

``Offload`` is that header as a value. Its offsets are relative to the start of the
bytes it travels with: the Ethernet frame on a link, the IP packet inside core
(``shifted(-14)`` / ``shifted(+14)`` move between the two).

``OffloadBytes`` is ``bytes`` with an ``offload`` attribute, so a frame or packet can
carry its metadata through every queue (ND resolution, pcap, the tx list) while
every consumer that only wants bytes keeps working. Any slice or concatenation is
plain ``bytes`` again: metadata is only ever carried on purpose.

``gso_segment(packet, gso_size)`` splits a large TCP packet (IPv4 or IPv6 without
extension headers) into ``gso_size`` pieces as the kernel's tcp_gso_segment does:
IPv4 identification incremented per segment, lengths and checksums rewritten,
sequence numbers advanced, FIN and PSH only on the last segment, CWR only on the
first. ``complete_checksum`` fills in a partial (NEEDS_CSUM) checksum.
``segment_frame(frame, off)`` does what a link without offloads must do to an
Ethernet frame with metadata before it goes on the wire (Linux: validate_xmit_skb):
cut a TCP GSO frame, or complete a partial checksum. It is the pure twin of
``native/gso.c`` (``stack.link.gso``).
"""

from __future__ import annotations

from struct import Struct
from typing import NamedTuple

from stack.wire.checksum import internet_checksum, ones_sum, pseudo_sum4, pseudo_sum6
from stack.wire.errors import ParseError

VNET_HDR_LEN = 10
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80
GSO_MAX_PACKET = 0xFFFF        # largest IP packet handed down as one GSO segment

_HDR = Struct("<BBHHHH")
_TCP_FIN = 0x01
_TCP_PSH = 0x08
_TCP_CWR = 0x80


class Offload(NamedTuple):
    """One virtio-net header (field meanings in the module docstring)."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & F_NEEDS_CSUM)

    @property
    def csum_trusted(self) -> bool:
        """The kernel vouches for the L4 checksum (partial or verified)."""
        return bool(self.flags & (F_NEEDS_CSUM | F_DATA_VALID))

    @property
    def gso(self) -> int:
        """The GSO type without the ECN bit."""
        return self.gso_type & ~GSO_ECN

    def pack(self) -> bytes:
        return _HDR.pack(*self)

    def shifted(self, delta: int) -> Offload:
        """The same header for bytes that start ``delta`` bytes earlier (+) or later (-)."""
        return self._replace(hdr_len=self.hdr_len + delta if self.hdr_len else 0,
                             csum_start=self.csum_start + delta if self.flags & F_NEEDS_CSUM else self.csum_start)


NO_OFFLOAD_HDR = bytes(VNET_HDR_LEN)


def unpack_offload(hdr: bytes | bytearray | memoryview) -> Offload:
    """The header at the start of ``hdr`` (at least 10 bytes)."""
    return Offload(*_HDR.unpack_from(hdr))


class OffloadBytes(bytes):
    """Bytes with offload metadata (``offload``); slices are plain bytes."""

    offload: Offload

    @classmethod
    def make(cls, data: bytes | bytearray | memoryview, offload: Offload) -> OffloadBytes:
        b = cls(data)
        b.offload = offload
        return b


class GsoChain:
    """A large TCP packet or frame not yet joined: ``head`` (the headers, small
    ``bytes``) followed by ``body`` (the payload, as TCP had it: ``bytes`` or a
    ``memoryview`` of an immutable send-buffer chunk), with ``offload`` metadata
    (None until IP output sets it). It stands for ``head + body`` so that a 64 KB
    TSO segment is not copied by every layer that prepends a header: ``prefix +
    chain`` is a new chain (the offsets of ``offload`` moved by ``len(prefix)``),
    ``len``, an int index and ``offload_of`` work as on the joined bytes, and a
    link with offloads writes head and body with one writev. Whatever needs the
    whole (pcap, faults, a link that cuts segments, loopback, software
    segmentation) calls ``join()``: the ``OffloadBytes`` (or ``bytes`` without
    metadata) of the same content, byte for byte."""

    __slots__ = ("body", "head", "offload")

    def __init__(self, head: bytes, body: bytes | memoryview, offload: Offload | None = None) -> None:
        self.head = head
        self.body = body
        self.offload = offload

    def __len__(self) -> int:
        return len(self.head) + len(self.body)

    def __radd__(self, prefix: bytes) -> GsoChain:
        off = self.offload
        return GsoChain(prefix + self.head, self.body, off.shifted(len(prefix)) if off is not None else None)

    def __getitem__(self, i: int) -> int:
        if type(i) is not int:
            raise TypeError("a GsoChain is indexed by int only; join() it for slices")
        h = len(self.head)
        if 0 <= i < h:
            return self.head[i]
        if i < 0:
            i += len(self)
            if i < h:
                return self.head[i]
        return self.body[i - h]

    def join(self) -> bytes:
        """The whole as one object: ``OffloadBytes`` with ``offload``, else ``bytes``."""
        whole = b"".join((self.head, self.body))
        if self.offload is None:
            return whole
        return OffloadBytes.make(whole, self.offload)

    def __bytes__(self) -> bytes:
        return b"".join((self.head, self.body))

    def __repr__(self) -> str:
        return f"GsoChain(head={len(self.head)}, body={len(self.body)}, offload={self.offload})"


def joined(data: bytes | GsoChain) -> bytes:
    """``data`` itself, or a ``GsoChain`` joined (see there)."""
    if isinstance(data, GsoChain):
        return data.join()
    return data


def offload_of(data: object) -> Offload | None:
    """The metadata a frame or packet carries, or None for plain bytes."""
    if type(data) is bytes:
        return None
    return getattr(data, "offload", None)


def tcp_gso(packet: bytes, gso_size: int) -> Offload:
    """The header for a locally built TCP packet (IP start = offset 0) whose
    checksum is complete: split into ``gso_size`` payload pieces by the receiver."""
    v6 = packet[0] >> 4 == 6
    l4 = 40 if v6 else (packet[0] & 0x0F) * 4
    hdr_len = l4 + (packet[l4 + 12] >> 4) * 4
    gso_type = GSO_TCPV6 if v6 else GSO_TCPV4
    if packet[l4 + 13] & _TCP_CWR:
        gso_type |= GSO_ECN
    return Offload(0, gso_type, hdr_len, gso_size, 0, 0)


def _tcp_offsets(packet: bytes) -> tuple[bool, int, int]:
    """(is_v6, l4 offset, end of the IP packet) of a plain TCP packet."""
    if len(packet) < 20:
        raise ParseError("gso_truncated")
    version = packet[0] >> 4
    if version == 6:
        if len(packet) < 60 or packet[6] != 6:
            raise ParseError("gso_not_tcp")
        l4 = 40
        end = 40 + int.from_bytes(packet[4:6], "big")
    elif version == 4:
        l4 = (packet[0] & 0x0F) * 4
        if l4 < 20 or packet[9] != 6 or int.from_bytes(packet[6:8], "big") & 0x3FFF:
            raise ParseError("gso_not_tcp")
        end = int.from_bytes(packet[2:4], "big")
    else:
        raise ParseError("gso_not_tcp")
    if end > len(packet) or end < l4 + 20:
        raise ParseError("gso_truncated")
    return version == 6, l4, end


def gso_segment(packet: bytes, gso_size: int) -> list[bytes]:
    """Split one TCP packet into segments of at most ``gso_size`` payload bytes,
    each a complete packet with valid IP and TCP checksums. The input checksum
    may be partial or complete: it is recomputed. Raises ParseError when the
    packet is not a TCP packet this function handles."""
    if gso_size <= 0:
        raise ParseError("gso_bad_size")
    v6, l4, end = _tcp_offsets(packet)
    thl = (packet[l4 + 12] >> 4) * 4
    if thl < 20 or l4 + thl > end:
        raise ParseError("gso_truncated")
    ip_hdr = bytearray(packet[:l4])
    tcp_hdr = bytearray(packet[l4:l4 + thl])
    payload = memoryview(packet)[l4 + thl:end]
    seq = int.from_bytes(tcp_hdr[4:8], "big")
    flags = tcp_hdr[13]
    src, dst = (bytes(packet[8:24]), bytes(packet[24:40])) if v6 else (bytes(packet[12:16]), bytes(packet[16:20]))
    ident = 0 if v6 else int.from_bytes(ip_hdr[4:6], "big")
    n = max(1, -(-len(payload) // gso_size))
    out: list[bytes] = []
    for i in range(n):
        chunk = payload[i * gso_size:(i + 1) * gso_size]
        th = tcp_hdr
        th[4:8] = ((seq + i * gso_size) & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags
        if i != n - 1:
            f &= ~(_TCP_FIN | _TCP_PSH)
        if i != 0:
            f &= ~_TCP_CWR
        th[13] = f
        th[16:18] = b"\0\0"
        seg_len = thl + len(chunk)
        pseudo = pseudo_sum6(src, dst, seg_len, 6) if v6 else pseudo_sum4(src, dst, seg_len, 6)
        csum = internet_checksum(chunk, ones_sum(th, pseudo))
        th[16:18] = csum.to_bytes(2, "big")
        ih = ip_hdr
        if v6:
            ih[4:6] = seg_len.to_bytes(2, "big")
        else:
            ih[2:4] = (l4 + seg_len).to_bytes(2, "big")
            ih[4:6] = ((ident + i) & 0xFFFF).to_bytes(2, "big")
            ih[10:12] = b"\0\0"
            ih[10:12] = internet_checksum(ih).to_bytes(2, "big")
        out.append(b"".join((ih, th, chunk)))
    return out


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes:
    """``packet`` with its partial checksum completed (what the kernel's
    skb_checksum_help does): the one's-complement sum of [csum_start, end), whose
    checksum field holds the pseudo-header sum, inverted, stored in that field
    (a result of 0 is stored as 0xffff, as the kernel's CSUM_MANGLED_0)."""
    at = csum_start + csum_offset
    if csum_start < 0 or at + 2 > len(packet):
        raise ParseError("csum_bad_offset")
    csum = internet_checksum(memoryview(packet)[csum_start:]) or 0xFFFF   # as the kernel: never 0
    return b"".join((packet[:at], csum.to_bytes(2, "big"), packet[at + 2:]))


def segment_frame(frame: bytes, off: Offload) -> list[bytes]:
    """The frames a link without offloads sends for one Ethernet ``frame`` with
    metadata ``off`` (frame-relative offsets): a TCP GSO frame cut into its
    segments (``gso_segment`` of the IP packet, the Ethernet header copied to
    each), a NEEDS_CSUM frame with its checksum completed, any other frame as
    it is. Raises ParseError (``bad_gso`` for a GSO type other than TCP) for a
    frame that cannot be sent."""
    if off.gso:
        if off.gso not in (GSO_TCPV4, GSO_TCPV6):
            raise ParseError("bad_gso")
        if off.gso_size <= 0:
            raise ParseError("gso_bad_size")
        eth = bytes(frame[:14])
        return [eth + seg for seg in gso_segment(frame[14:], off.gso_size)]
    if off.needs_csum:
        return [complete_checksum(frame, off.csum_start, off.csum_offset)]
    return [bytes(frame)]

"""Fragment reassembly for IPv6 (RFC 8200 §4.5, RFC 5722) and IPv4 (RFC 791).

Bounded: at most ``limits.reasm_max_bytes`` held over all datagrams (the oldest
datagram is dropped to make room), one datagram at most 65535 bytes, and a
timeout (60 s by default). Overlapping fragments drop the whole datagram
(RFC 5722 for IPv6; the same policy for IPv4, which RFC 791 leaves open).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stack.core.stats import Drop
from stack.wire.checksum import internet_checksum
from stack.wire.errors import ParseError
from stack.wire.frame import parse_frame
from stack.wire.frame_types import PROTO_FRAGMENT, Frame

if TYPE_CHECKING:
    from stack.core.stack import Stack

MAX_DATAGRAM = 65535


@dataclass(slots=True)
class _Datagram:
    first_seen: int
    rcvif: int
    pieces: list[tuple[int, bytes]] = field(default_factory=list)   # (offset, data)
    total: int | None = None        # payload length once the last fragment arrived
    head: Frame | None = None       # the offset-0 fragment: its headers are kept
    held: int = 0


class Reassembler:
    def __init__(self, stack: Stack, family: int) -> None:
        self.st = stack
        self.family = family
        self.pending: dict[tuple[object, ...], _Datagram] = {}
        self.held = 0

    def _key(self, f: Frame, rcvif: int) -> tuple[object, ...]:
        if self.family == 6:
            return (f.src, f.dst, f.frag_id, rcvif)
        return (f.src, f.dst, f.proto, f.frag_id)

    def _data(self, f: Frame) -> bytes:
        if self.family == 6:
            return f.buf[f.l4_off:f.ip_end]
        return f.buf[f.l4_off:f.ip_end]

    def add(self, f: Frame, rcvif: int, now: int) -> tuple[Frame, int] | None:
        """Add a fragment; returns (whole datagram as a Frame, rcvif) when complete."""
        st = self.st
        data = self._data(f)
        off = f.frag_off
        end = off + len(data)
        if end > MAX_DATAGRAM or (f.frag_more and len(data) % 8):
            st.stats.drop(Drop.FRAG_BAD)
            return None
        key = self._key(f, rcvif)
        d = self.pending.get(key)
        if d is None:
            limit = st.limits.reasm_max_bytes
            while self.pending and self.held + len(data) > limit:
                self._discard(next(iter(self.pending)), Drop.FRAG_LIMIT)
            if self.held + len(data) > limit:
                st.stats.drop(Drop.FRAG_LIMIT)
                return None
            d = self.pending[key] = _Datagram(now, rcvif)
        for o, piece in d.pieces:
            if off < o + len(piece) and o < end:
                if off == o and piece == data:
                    st.stats.count("reasm", "duplicates")
                    return None
                self._discard(key, Drop.FRAG_OVERLAP)   # RFC 5722
                return None
        if not f.frag_more:
            if d.total is not None and d.total != end:
                self._discard(key, Drop.FRAG_BAD)
                return None
            d.total = end
        if d.total is not None and end > d.total:
            self._discard(key, Drop.FRAG_BAD)
            return None
        if off == 0:
            d.head = f
        d.pieces.append((off, data))
        d.held += len(data)
        self.held += len(data)
        st.stats.count("reasm", "fragments")
        if d.total is None or d.head is None or sum(len(p) for _, p in d.pieces) != d.total:
            return None
        del self.pending[key]
        self.held -= d.held
        d.pieces.sort()
        payload = b"".join(p for _, p in d.pieces)
        try:
            whole = self._rebuild(d.head, payload)
        except ParseError as e:
            st.stats.drop("parse_" + e.reason)
            return None
        st.stats.count("reasm", "reassembled")
        return whole, d.rcvif

    def _rebuild(self, head: Frame, payload: bytes) -> Frame:
        buf = head.buf
        eth = buf[:head.l3_off]
        if self.family == 6:
            frag = next(e for e in head.ext if e[0] == PROTO_FRAGMENT)
            fh_off = frag[1]
            unfrag = bytearray(buf[head.l3_off:fh_off])
            nh = buf[fh_off]
            prev = [e for e in head.ext if e[1] < fh_off]
            if prev:
                unfrag[prev[-1][1] - head.l3_off] = nh
            else:
                unfrag[6] = nh
            plen = len(unfrag) - 40 + len(payload)
            unfrag[4:6] = plen.to_bytes(2, "big")
            return parse_frame(bytes(eth) + bytes(unfrag) + payload)
        ihl = head.l4_off - head.l3_off
        hdr = bytearray(buf[head.l3_off:head.l4_off])
        hdr[2:4] = (ihl + len(payload)).to_bytes(2, "big")
        hdr[6:8] = (int.from_bytes(hdr[6:8], "big") & 0x4000).to_bytes(2, "big")
        hdr[10:12] = b"\x00\x00"
        hdr[10:12] = internet_checksum(bytes(hdr)).to_bytes(2, "big")
        return parse_frame(bytes(eth) + bytes(hdr) + payload)

    def _discard(self, key: tuple[object, ...], reason: str) -> None:
        d = self.pending.pop(key)
        self.held -= d.held
        self.st.stats.drop(reason, max(1, len(d.pieces)))

    def poll_at(self) -> int | None:
        if not self.pending:
            return None
        return min(d.first_seen for d in self.pending.values()) + self.st.limits.reasm_timeout

    def poll(self, now: int) -> None:
        timeout = self.st.limits.reasm_timeout
        for key in [k for k, d in self.pending.items() if d.first_seen + timeout <= now]:
            d = self.pending[key]
            if d.head is not None:
                # RFC 8200 §4.5 / RFC 792: Time Exceeded, fragment reassembly time exceeded.
                rcv = self.st.interfaces.get(d.rcvif)
                if rcv is not None:
                    if self.family == 6:
                        self.st.icmp6.error(d.head, 3, 1, 0, rcv, now)
                    else:
                        self.st.ip4.icmp_error(d.head, 11, 1, rcv, now)
            self._discard(key, Drop.FRAG_TIMEOUT)

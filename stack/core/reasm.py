"""Fragment reassembly for IPv6 (RFC 8200 §4.5, RFC 5722, RFC 6946, RFC 7112) and
IPv4 (RFC 791 §3.2, RFC 1122 §3.3.2, RFC 1858).

Datagrams are keyed by (src, dst, Identification, receive interface) for IPv6
(the zone is part of a link-local address's identity) and by (src, dst,
Protocol, Identification) for IPv4 (RFC 791).

Checks on each fragment, in order:

* RFC 8200 §4.5: a fragment that is not the last must carry a multiple of 8
  bytes (IPv6: Parameter Problem code 0 at Payload Length); a fragment whose end
  lies past 65535 is refused (IPv6: Parameter Problem code 0 at Fragment Offset).
  Empty non-last fragments are refused as well.
* RFC 6946: an atomic fragment (offset 0, M=0) is processed on its own, never
  mixed with a pending datagram of the same Identification.
* RFC 7112 / RFC 8200 §4.5: a first fragment must hold the whole header chain
  up to and including the upper-layer header (IPv6: Parameter Problem code 3,
  pointer 0). RFC 1858 §3.2: an IPv4 TCP fragment at offset 8 is dropped.
* RFC 5722: any overlap drops the whole datagram; exact duplicates are ignored
  (RFC 8200 §4.5 allows that).

Bounded: at most ``limits.reasm_max_bytes`` held over all datagrams, counting
each fragment's whole packet plus what holding it costs in memory
(``FRAGMENT_OVERHEAD`` per fragment, ``DATAGRAM_OVERHEAD`` per pending datagram: the
kept headers, the bookkeeping objects), so that a flood of tiny fragments is bounded
in real memory too (the oldest datagram is dropped to make room), and
a timeout (``limits.reasm_timeout``, 60 s: RFC 8200 §4.5). On timeout, Time
Exceeded code 1 goes to the source only if the first fragment arrived (RFC 8200
§4.5, RFC 792 / RFC 1122 §3.3.2).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stack.core.stats import Drop
from stack.wire.checksum import internet_checksum
from stack.wire.errors import ParseError
from stack.wire.frame import parse_frame
from stack.wire.frame_types import (
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

if TYPE_CHECKING:
    from stack.core.stack import Stack

MAX_DATAGRAM = 65535
PROTO_AH = 51
# Bytes of the upper-layer header a first fragment must carry (RFC 7112 §5, sized as
# Linux ipv6_frag_thdr_truncated); anything else: at least one byte.
UPPER_HEADER_LEN = {PROTO_TCP: 20, PROTO_UDP: 8, PROTO_ICMPV6: 8, PROTO_ICMP: 8}
# RFC 4443 §3.4 Parameter Problem codes
PP_ERRONEOUS_FIELD = 0
PP_INCOMPLETE_CHAIN = 3
# Memory charged on top of a fragment's bytes (CPython 3.11, measured with tracemalloc on
# the frag6_tiny flood of scripts/flood_rss.py: about 1.1 KB for a one-fragment datagram).
# Per fragment: the data bytes object, its offset int and two list slots (with slack).
FRAGMENT_OVERHEAD = 256
# Per pending datagram: the key tuple, the dict slot, _Datagram and its lists, and the
# first fragment's parsed Frame kept for the rebuilt headers.
DATAGRAM_OVERHEAD = 768


@dataclass(slots=True)
class _Datagram:
    first_seen: int
    rcvif: int
    starts: list[int] = field(default_factory=list)     # sorted fragment offsets
    pieces: list[bytes] = field(default_factory=list)   # data, parallel to starts
    have: int = 0                   # data bytes held (no overlaps, so no double count)
    total: int | None = None        # payload length once the last fragment arrived
    head: Frame | None = None       # the offset-0 fragment: its headers are kept
    held: int = 0                   # memory charged (whole fragment packets)


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

    def _param_problem(self, f: Frame, rcvif: int, code: int, pointer: int, now: int) -> None:
        iface = self.st.interfaces.get(rcvif)
        if iface is not None:
            self.st.icmp6.error(f, 4, code, pointer, iface, now)

    def add(self, f: Frame, rcvif: int, now: int) -> tuple[Frame, int] | None:
        """Add a fragment; returns (whole datagram as a Frame, rcvif) when complete."""
        st = self.st
        data = f.buf[f.l4_off:f.ip_end]
        off, more = f.frag_off, f.frag_more
        end = off + len(data)
        fh = _frag_header_off(f) if self.family == 6 else 0
        if more and (len(data) % 8 or not data):
            # RFC 8200 §4.5: Parameter Problem code 0 pointing at Payload Length.
            if self.family == 6 and data:
                self._param_problem(f, rcvif, PP_ERRONEOUS_FIELD, 4, now)
            st.stats.drop(Drop.FRAG_BAD)
            return None
        # The reassembled packet must fit 65535 bytes: IPv4 counts its header, IPv6
        # the Per-Fragment headers after the fixed header (RFC 8200 §4.5).
        over = (f.l4_off - f.l3_off) if self.family == 4 else (fh - f.l3_off - 40)
        if end + over > MAX_DATAGRAM:
            if self.family == 6:
                self._param_problem(f, rcvif, PP_ERRONEOUS_FIELD, fh - f.l3_off + 2, now)
            st.stats.drop(Drop.FRAG_BAD)
            return None
        if off == 0 and not self._chain_complete(f, data):
            # RFC 7112 §5 / RFC 8200 §4.5: the first fragment must hold the header chain.
            if self.family == 6:
                self._param_problem(f, rcvif, PP_INCOMPLETE_CHAIN, 0, now)
            st.stats.drop(Drop.FRAG_TINY)
            return None
        if self.family == 4 and off == 8 and f.proto == PROTO_TCP:
            st.stats.drop(Drop.FRAG_TINY)       # RFC 1858 §3.2: rewrites TCP flags
            return None
        if off == 0 and not more:
            # RFC 6946 §4: an atomic fragment is a whole packet; no pending state.
            st.stats.count("reasm", "atomic")
            return self._finish(f, data, rcvif)
        key = self._key(f, rcvif)
        d = self.pending.get(key)
        cost = f.ip_end - f.l3_off + FRAGMENT_OVERHEAD
        limit = st.limits.reasm_max_bytes
        while self.pending and self.held + cost + (DATAGRAM_OVERHEAD if d is None else 0) > limit:
            victim = next(iter(self.pending))
            self._discard(victim, Drop.FRAG_LIMIT)
            if victim == key:
                d = None
        if d is None:
            cost += DATAGRAM_OVERHEAD       # a new datagram always takes this fragment
        if self.held + cost > limit:
            st.stats.drop(Drop.FRAG_LIMIT)
            return None
        if d is None:
            d = self.pending[key] = _Datagram(now, rcvif)
        i = bisect_left(d.starts, off)
        if i < len(d.starts) and d.starts[i] == off and d.pieces[i] == data:
            st.stats.count("reasm", "duplicates")        # RFC 8200 §4.5: exact duplicate
            return None
        if (i > 0 and d.starts[i - 1] + len(d.pieces[i - 1]) > off) \
                or (i < len(d.starts) and d.starts[i] < end):
            self._discard(key, Drop.FRAG_OVERLAP, 1)       # RFC 5722 §4
            return None
        if not more:
            last_end = d.starts[-1] + len(d.pieces[-1]) if d.starts else 0
            if (d.total is not None and d.total != end) or last_end > end:
                self._discard(key, Drop.FRAG_BAD, 1)
                return None
            d.total = end
        elif d.total is not None and end > d.total:
            self._discard(key, Drop.FRAG_BAD, 1)
            return None
        if off == 0:
            d.head = f
        d.starts.insert(i, off)
        d.pieces.insert(i, data)
        d.have += len(data)
        d.held += cost
        self.held += cost
        st.stats.count("reasm", "fragments")
        if d.total is None or d.head is None or d.have != d.total:
            return None
        del self.pending[key]
        self.held -= d.held
        return self._finish(d.head, b"".join(d.pieces), d.rcvif)

    def _chain_complete(self, f: Frame, data: bytes) -> bool:
        """The first fragment holds every extension header and the upper-layer header."""
        nh, i = f.proto, 0
        if self.family == 6:
            while nh in (PROTO_HOPOPTS, PROTO_ROUTING, PROTO_DSTOPTS, PROTO_AH, PROTO_FRAGMENT):
                if i + 2 > len(data):
                    return False
                if nh == PROTO_FRAGMENT:
                    length = 8
                elif nh == PROTO_AH:
                    length = (data[i + 1] + 2) * 4
                else:
                    length = (data[i + 1] + 1) * 8
                nh, i = data[i], i + length
        return i + UPPER_HEADER_LEN.get(nh, 1) <= len(data) or nh == 59

    def _finish(self, head: Frame, payload: bytes, rcvif: int) -> tuple[Frame, int] | None:
        try:
            whole = self._rebuild(head, payload)
        except ParseError as e:
            self.st.stats.drop("parse_" + e.reason)
            return None
        self.st.stats.count("reasm", "reassembled")
        return whole, rcvif

    def _rebuild(self, head: Frame, payload: bytes) -> Frame:
        buf = head.buf
        eth = buf[:head.l3_off]
        if self.family == 6:
            fh_off = _frag_header_off(head)
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
        hdr[6:8] = (int.from_bytes(hdr[6:8], "big") & 0x4000).to_bytes(2, "big")   # keep DF
        hdr[10:12] = b"\x00\x00"
        hdr[10:12] = internet_checksum(bytes(hdr)).to_bytes(2, "big")
        return parse_frame(bytes(eth) + bytes(hdr) + payload)

    def _discard(self, key: tuple[object, ...], reason: str, in_hand: int = 0) -> None:
        """Drop a pending datagram: one count per fragment held (and in hand)."""
        d = self.pending.pop(key)
        self.held -= d.held
        self.st.stats.drop(reason, len(d.pieces) + in_hand)

    def poll_at(self) -> int | None:
        # ``pending`` is in insertion order, which is first_seen order (time never goes
        # back; a datagram is never re-keyed): the oldest is the first, O(1).
        for d in self.pending.values():
            return d.first_seen + self.st.limits.reasm_timeout
        return None

    def poll(self, now: int) -> None:
        timeout = self.st.limits.reasm_timeout
        pending = self.pending
        while pending:
            key, d = next(iter(pending.items()))
            if d.first_seen + timeout > now:
                break
            if d.head is not None:
                # RFC 8200 §4.5 / RFC 792, RFC 1122 §3.3.2: Time Exceeded code 1
                # (fragment reassembly time exceeded), only when the first fragment came.
                rcv = self.st.interfaces.get(d.rcvif)
                if rcv is not None:
                    if self.family == 6:
                        self.st.icmp6.error(d.head, 3, 1, 0, rcv, now)
                    else:
                        self.st.ip4.icmp_error(d.head, 11, 1, rcv, now)
            self._discard(key, Drop.FRAG_TIMEOUT)


def _frag_header_off(f: Frame) -> int:
    """Absolute offset of the Fragment header of an IPv6 fragment."""
    for typ, off, _length in f.ext:
        if typ == PROTO_FRAGMENT:
            return off
    return f.l4_off - 8

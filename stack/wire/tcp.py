"""TCP header and options: one value, one parser, one builder.

RFC 9293 §3.1 (header), RFC 9293 §3.2 (MSS option), RFC 7323 §2-3 (window
scale, timestamps), RFC 2018 §2-3 (SACK-permitted, SACK). Pure: no state, no
time. Ports travel outside the value (``Frame.sport``/``dport`` on input, the
``build_tcp`` arguments on output) so that the engine works on port-free
segments.

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |          Source Port          |       Destination Port        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                        Sequence Number                        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                    Acknowledgment Number                      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |  Data |       |C|E|U|A|P|R|S|F|                               |
    | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
    |       |       |R|E|G|K|H|T|N|N|                               |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           Checksum            |         Urgent Pointer        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           [Options]                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

Invariants: ``seq``/``ack``/SACK edges in a ``TcpSegment`` are 32-bit wire
values on input; ``build_tcp`` masks them, so the engine may hand in
unwrapped (64-bit) numbers. Option layout on output follows Linux (MSS,
SACK-permitted+timestamps, NOP+window scale; NOP NOP before timestamps and
SACK blocks) so that a capture reads like a kernel's.
"""

from __future__ import annotations

from struct import Struct
from typing import NamedTuple, cast

from stack.wire.checksum import internet_checksum, ones_sum, pseudo_sum4, pseudo_sum6
from stack.wire.errors import ParseError
from stack.wire.gso import GsoChain

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

TCP_HEADER_LEN = 20
MAX_OPTIONS_LEN = 40
MAX_WSCALE = 14             # RFC 7323 §2.3
SEQ_MASK = 0xFFFFFFFF

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMP = 8

TS_OPTION_LEN = 12           # NOP NOP kind len val ecr: what every timestamped segment carries

_HDR = Struct("!HHIIBBHHH")  # sport dport seq ack offset flags window checksum urgent
_HDR_TS = Struct("!HHIIBBHHHIII")   # the same, then NOP NOP TS(8, 10) TSval TSecr: 32 bytes
_TS_WORD = 0x0101080A
_HLEN_TS_BYTE = (32 >> 2) << 4
_new = tuple.__new__         # TcpSegment without its Python-level __new__ (hot path: ~5x cheaper)
_U16 = Struct("!H")
_U32 = Struct("!I")
_TS = Struct("!II")
_TS_ALIGNED = b"\x01\x01\x08\x0a"   # RFC 7323 Appendix A layout
_FLAG_NAMES = "FSRPAUEC"
_JOIN_AT = 4096              # build_tcp: from this segment size on, header and payload are joined


class TcpSegment(NamedTuple):
    """One TCP segment without ports. ``flags`` is the 8-bit flag byte."""

    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes = b""
    urgent: int = 0
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    sack_blocks: tuple[tuple[int, int], ...] = ()
    ts: tuple[int, int] | None = None     # (TSval, TSecr)

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies (RFC 9293 §3.4: SYN and FIN count)."""
        return len(self.payload) + (self.flags & SYN) // SYN + (self.flags & FIN)

    def describe(self) -> str:
        """'SA seq=1 ack=2 win=3 len=0' for test failures and traces."""
        names = "".join(c for i, c in enumerate(_FLAG_NAMES) if self.flags & (1 << i)) or "."
        return f"{names} seq={self.seq} ack={self.ack} win={self.window} len={len(self.payload)}"


def parse_tcp(buf: bytes, off: int, end: int) -> TcpSegment:
    """Parse the TCP header and options at ``buf[off:end]``; the payload is copied out.

    Raises ParseError: ``tcp_truncated`` (fewer than 20 bytes), ``tcp_bad_offset``
    (data offset below 5 or past ``end``), ``tcp_bad_option`` (an option whose
    length is wrong for its kind or runs past the header).
    """
    if end - off < TCP_HEADER_LEN:
        raise ParseError("tcp_truncated")
    _sport, _dport, seq, ack, doff, flags, window, _csum, urgent = _HDR.unpack_from(buf, off)
    hlen = (doff >> 4) * 4
    if hlen < TCP_HEADER_LEN or off + hlen > end:
        raise ParseError("tcp_bad_offset")
    payload = bytes(buf[off + hlen : end])
    if hlen == TCP_HEADER_LEN:
        return _new(TcpSegment, (seq, ack, flags, window, payload, urgent, None, None, False, (), None))
    opt = off + TCP_HEADER_LEN
    if hlen == TCP_HEADER_LEN + TS_OPTION_LEN and buf[opt : opt + 4] == _TS_ALIGNED:
        # Fast path: the common NOP NOP TS layout of every established segment.
        return _new(TcpSegment, (seq, ack, flags, window, payload, urgent, None, None, False, (),
                                 _TS.unpack_from(buf, opt + 4)))
    return _parse_options(buf, opt, off + hlen, seq, ack, flags, window, payload, urgent)


def _parse_options(buf: bytes, i: int, end: int, seq: int, ack: int, flags: int, window: int,
                   payload: bytes, urgent: int) -> TcpSegment:
    mss: int | None = None
    wscale: int | None = None
    sack_permitted = False
    blocks: list[tuple[int, int]] = []
    ts: tuple[int, int] | None = None
    while i < end:
        kind = buf[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise ParseError("tcp_bad_option", f"kind {kind} without length")
        length = buf[i + 1]
        if length < 2 or i + length > end:
            raise ParseError("tcp_bad_option", f"kind {kind} length {length}")
        if kind == OPT_MSS:
            _need(kind, length, length == 4)
            mss = _U16.unpack_from(buf, i + 2)[0]
        elif kind == OPT_WSCALE:
            _need(kind, length, length == 3)
            wscale = min(buf[i + 2], MAX_WSCALE)    # RFC 7323 §2.3: use 14 for larger values
        elif kind == OPT_SACK_PERMITTED:
            _need(kind, length, length == 2)
            sack_permitted = True
        elif kind == OPT_SACK:
            _need(kind, length, length >= 10 and (length - 2) % 8 == 0)
            blocks.extend(_TS.unpack_from(buf, j) for j in range(i + 2, i + length, 8))
        elif kind == OPT_TIMESTAMP:
            _need(kind, length, length == 10)
            ts = _TS.unpack_from(buf, i + 2)
        i += length      # RFC 9293 §3.1: unknown options are skipped by their length
    return _new(TcpSegment, (seq, ack, flags, window, payload, urgent, mss, wscale, sack_permitted,
                             tuple(blocks), ts))


def _need(kind: int, length: int, ok: bool) -> None:
    if not ok:
        raise ParseError("tcp_bad_option", f"kind {kind} length {length}")


def options_bytes(seg: TcpSegment) -> bytes:
    """The option block for ``seg``, padded to a multiple of 4, at most 40 bytes.

    SACK blocks are cut to what fits after the other options (RFC 2018 §3:
    at most 3 blocks next to timestamps, 4 without).
    """
    out = bytearray()
    if seg.mss is not None:
        out += b"\x02\x04" + _U16.pack(seg.mss)
    if seg.ts is not None:
        head = b"\x04\x02\x08\x0a" if seg.sack_permitted else _TS_ALIGNED
        out += head + _TS.pack(seg.ts[0] & SEQ_MASK, seg.ts[1] & SEQ_MASK)
    elif seg.sack_permitted:
        out += b"\x01\x01\x04\x02"
    if seg.wscale is not None:
        out += b"\x01\x03\x03" + bytes((seg.wscale,))
    if seg.sack_blocks:
        room = (MAX_OPTIONS_LEN - len(out) - 4) // 8
        blocks = seg.sack_blocks[:room]
        if blocks:
            out += b"\x01\x01\x05" + bytes((2 + 8 * len(blocks),))
            for left, right in blocks:
                out += _TS.pack(left & SEQ_MASK, right & SEQ_MASK)
    if len(out) & 3:
        out += b"\x01" * (4 - (len(out) & 3))
    return bytes(out)


def options_len(seg: TcpSegment) -> int:
    """Length of ``options_bytes(seg)`` without building it (hot path)."""
    if seg.mss is None and seg.wscale is None and not seg.sack_blocks and not seg.sack_permitted:
        return TS_OPTION_LEN if seg.ts is not None else 0
    return len(options_bytes(seg))


def address_sum(src: bytes, dst: bytes) -> int:
    """The pseudo-header's address part (one's-complement sum of ``src`` and ``dst``),
    which a connection computes once and hands to every ``build_tcp`` as ``pseudo``."""
    return pseudo_sum6(src, dst, 0, 0) if len(src) == 16 else pseudo_sum4(src, dst, 0, 0)


def build_tcp(src: bytes, dst: bytes, sport: int, dport: int, seg: TcpSegment,
              pseudo: int | None = None, chain: bool = False) -> bytes:
    """The whole TCP segment with its checksum over the pseudo-header of
    ``src``/``dst`` (IPv6 when ``len(src) == 16``, else IPv4). ``pseudo`` is
    ``address_sum(src, dst)`` when the caller has it already. ``chain``: a segment
    larger than 4 KB comes back as a ``GsoChain`` (header and payload not joined: no
    copy; see ``stack.wire.gso``)."""
    seq, ack, flags, window, payload, urgent, mss, wscale, sack_permitted, blocks, ts = seg
    if pseudo is None:
        pseudo = address_sum(src, dst)
    if ts is not None and mss is None and wscale is None and not blocks and not sack_permitted:
        # Every segment of an established timestamped connection: one pack.
        total = 32 + len(payload)
        if total > _JOIN_AT:
            # A large payload (a TSO segment): summed where it lies and copied once, by
            # the join (into a bytearray and out again would be two copies).
            hdr = bytearray(_HDR_TS.pack(sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, _HLEN_TS_BYTE, flags & 0xFF,
                                         window, 0, urgent, _TS_WORD, ts[0] & SEQ_MASK, ts[1] & SEQ_MASK))
            _U16.pack_into(hdr, 16, internet_checksum(
                payload, ones_sum(hdr, pseudo + (total >> 16) + (total & 0xFFFF) + 6)))
            if chain:
                return cast(bytes, GsoChain(bytes(hdr), payload))
            return b"".join((hdr, payload))
        if payload:
            buf = bytearray(total)
            _HDR_TS.pack_into(buf, 0, sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, _HLEN_TS_BYTE, flags & 0xFF,
                              window, 0, urgent, _TS_WORD, ts[0] & SEQ_MASK, ts[1] & SEQ_MASK)
            buf[32:] = payload
        else:
            buf = bytearray(_HDR_TS.pack(sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, _HLEN_TS_BYTE,
                                         flags & 0xFF, window, 0, urgent, _TS_WORD, ts[0] & SEQ_MASK,
                                         ts[1] & SEQ_MASK))
    else:
        opts = options_bytes(seg)
        hlen = TCP_HEADER_LEN + len(opts)
        total = hlen + len(payload)
        if chain and total > _JOIN_AT:
            head = bytearray(hlen)
            _HDR.pack_into(head, 0, sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, (hlen >> 2) << 4,
                           flags & 0xFF, window, 0, urgent)
            head[TCP_HEADER_LEN:hlen] = opts
            _U16.pack_into(head, 16, internet_checksum(
                payload, ones_sum(head, pseudo + (total >> 16) + (total & 0xFFFF) + 6)))
            return cast(bytes, GsoChain(bytes(head), payload))
        buf = bytearray(total)
        _HDR.pack_into(buf, 0, sport, dport, seq & SEQ_MASK, ack & SEQ_MASK, (hlen >> 2) << 4,
                       flags & 0xFF, window, 0, urgent)
        if opts:
            buf[TCP_HEADER_LEN:hlen] = opts
        if payload:
            buf[hlen:] = payload
    # pseudo-header: addresses, the (32-bit for IPv6) length, the protocol (6)
    _U16.pack_into(buf, 16, internet_checksum(buf, pseudo + (total >> 16) + (total & 0xFFFF) + 6))
    return bytes(buf)


def parse_flags(text: str) -> int:
    """'SA' -> SYN|ACK (test and trace helper; letters as in ``describe``)."""
    value = 0
    for c in text:
        idx = _FLAG_NAMES.find(c)
        if idx < 0:
            raise ValueError(f"unknown TCP flag {c!r}")
        value |= 1 << idx
    return value


def peek_seq(buf: bytes, off: int) -> int:
    """The sequence number of a (possibly truncated) TCP header quoted in an ICMP error."""
    return int(_U32.unpack_from(buf, off + 4)[0])

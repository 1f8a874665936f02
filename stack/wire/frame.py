"""``parse_frame(buf) -> Frame``: every layer of a received frame in one pass.

Field rules are in ``frame_types.Frame``. Two implementations, one result:

* native: one cffi call, ``tsk_parse_frame`` in native/frame.c, handles the
  common shapes (Ethernet + IPv6 without extension headers or IPv4 without
  options and not fragmented, + TCP/UDP/ICMPv6/ICMPv4). It writes 16 integers
  into a caller-owned struct; the addresses are sliced here from ``buf``. Any
  other shape (ARP, IPv6 extension headers, IPv4 options, fragments, unknown
  ethertypes) comes back "not handled" and takes the slow path: the pure walk
  with the native checksum (the FreeBSD ``nd6_resolve``/``_slow`` split).
* pure: ``parse_frame_pure`` (``_pure.parse_frame``), the reference.

``BACKEND`` is ``checksum.BACKEND``; ``TAPSTACK_PURE=1`` forces pure for both.
``Frame.buf`` is the buffer passed in (a bytearray/memoryview is copied to
bytes first; a bytes subclass such as ``gso.OffloadBytes`` is kept, with its metadata).

ParseError reasons (the core counts them as ``parse_<reason>``), in the order
the parser checks them:

=====================  =======================================================
eth_truncated          fewer than 14 bytes
ipv6_truncated         no room for the 40-byte IPv6 header
ipv6_bad_version       version field is not 6
ipv6_bad_length        Payload Length runs past the end of the frame
ipv6_hbh_not_first     Hop-by-Hop header anywhere but first (RFC 8200 §4.1)
ipv6_ext_too_many      more than 16 extension headers (``MAX_EXT_HEADERS``)
ipv6_ext_truncated     an extension header runs past the payload
ipv4_truncated         no room for 20 bytes, or for IHL*4 bytes
ipv4_bad_version       version field is not 4
ipv4_bad_ihl           IHL below 5
ipv4_bad_length        Total Length below IHL*4 or past the end of the frame
ipv4_bad_checksum      header checksum does not verify (options included)
tcp_truncated          fewer than 20 bytes of TCP
tcp_bad_offset         Data Offset below 5 or past the segment
udp_truncated          fewer than 8 bytes of UDP
udp_bad_length         UDP Length below 8 or past the IP payload
icmp_truncated         fewer than 8 bytes of ICMPv6/ICMPv4
=====================  =======================================================

Upper-layer headers are only looked at in non-fragments; a UDP datagram ends
at ``l4_off + Length`` (which may be before ``ip_end``).
"""

from __future__ import annotations

from struct import Struct
from typing import Any

from stack.wire import _pure, checksum
from stack.wire.errors import ParseError
from stack.wire.frame_types import Frame

BACKEND = checksum.BACKEND

REASONS = (
    "eth_truncated",
    "ipv6_truncated",
    "ipv6_bad_version",
    "ipv6_bad_length",
    "ipv6_hbh_not_first",
    "ipv6_ext_too_many",
    "ipv6_ext_truncated",
    "ipv4_truncated",
    "ipv4_bad_version",
    "ipv4_bad_ihl",
    "ipv4_bad_length",
    "ipv4_bad_checksum",
    "tcp_truncated",
    "tcp_bad_offset",
    "udp_truncated",
    "udp_bad_length",
    "icmp_truncated",
)

MAX_EXT_HEADERS = _pure.MAX_EXT_HEADERS


def parse_frame_pure(buf: bytes, tcp_trusted: int = 0) -> Frame:
    """The pure-Python reference parser (pure checksum too). ``tcp_trusted`` (the
    frame offset of a TCP header whose checksum the link vouches for, 0: none) lets
    the native parser skip summing that segment (csum_ok); here it changes nothing:
    the checksum is summed, and core's offload check (``Stack._offload_rx``) comes
    to the same verdict."""
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    return _pure.parse_frame(buf, _pure.ones_sum)


def _parse_slow(buf: bytes) -> Frame:
    """Shapes the C does not handle: the pure walk, live-backend checksum."""
    return _pure.parse_frame(buf, checksum.ones_sum)


_OUT = Struct("=16I")  # struct tsk_frame: 16 uint32 in declaration order
_unpack = _OUT.unpack
_ffi: Any = checksum.ffi
_lib: Any = checksum.lib
_ERRORS: dict[int, str] = {}
_OUT_TYPE: Any = None
if BACKEND == "native":
    _OUT_TYPE = _ffi.typeof("struct tsk_frame *")
    _ERRORS = {int(getattr(_lib, "TSK_E_" + r.upper())): r for r in REASONS if hasattr(_lib, "TSK_E_" + r.upper())}
    assert _ffi.sizeof("struct tsk_frame") == _OUT.size


# Output structs are recycled through a free list instead of allocated per call
# (ffi.new + ffi.buffer cost ~0.3 µs, a quarter of the whole parse). list.pop
# and list.append are atomic, so concurrent callers (cffi drops the GIL during
# the call) never share a struct; the list holds one entry per concurrent caller.
_free: list[tuple[Any, Any]] = []
_new_frame = tuple.__new__


def _parse_native(buf: bytes, tcp_trusted: int = 0) -> Frame | None:
    """One C call; None when the shape is not handled there."""
    try:
        out, raw = _free.pop()
    except IndexError:
        out = _ffi.new(_OUT_TYPE)
        raw = _ffi.buffer(out)
    rc = _lib.tsk_parse_frame_trusted(buf, len(buf), out, tcp_trusted)
    if rc:
        _free.append((out, raw))
        if rc == 1:  # TSK_NOT_HANDLED
            return None
        raise ParseError(_ERRORS[rc])
    (ethertype, version, l3_off, hop_limit, tclass, flow_label, ip_end, proto, l4_off, frag_id, df,
     sport, dport, icmp_type, icmp_code, csum_ok) = _unpack(raw)
    _free.append((out, raw))
    if version == 6:
        src = buf[22:38]
        dst = buf[38:54]
    else:
        src = buf[26:30]
        dst = buf[30:34]
    # tuple.__new__ skips the generated NamedTuple __new__ (same value, ~0.1 µs less).
    return _new_frame(Frame, (buf, buf[0:6], buf[6:12], ethertype, version, l3_off, src, dst, hop_limit,
                              tclass, flow_label, ip_end, proto, l4_off, (), False, 0, False, frag_id,
                              df == 1, sport, dport, icmp_type, icmp_code, csum_ok == 1, None))


def _parse_frame_native(buf: bytes, tcp_trusted: int = 0) -> Frame:
    """Parse one Ethernet frame (C for the common shapes, else the slow path);
    raises ParseError with the reasons in the module docstring."""
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    f = _parse_native(buf, tcp_trusted)
    return f if f is not None else _parse_slow(buf)


if BACKEND == "native":
    parse_frame = _parse_frame_native
else:
    parse_frame = parse_frame_pure

__all__ = ["BACKEND", "MAX_EXT_HEADERS", "REASONS", "parse_frame", "parse_frame_pure"]

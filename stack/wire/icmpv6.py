"""ICMPv6 messages: type/code constants, builders, echo and error parsing (RFC 4443).

Every builder returns the complete ICMPv6 message (type onwards) with the
checksum over the IPv6 pseudo-header of ``src``/``dst`` (RFC 4443 §2.3), ready
to be the payload of ``ipv6.build_ipv6(src, dst, PROTO_ICMPV6, ...)``.
Neighbor Discovery and MLD bodies are in ``ndp.py``. Which errors to send and
when (RFC 4443 §2.4 suppression, rate limits) is core policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from stack.wire import checksum
from stack.wire.errors import ParseError
from stack.wire.frame_types import PROTO_ICMPV6

ICMPV6_HEADER_LEN = 4  # type, code, checksum; the "body" starts after it
ICMPV6_MIN_LEN = 8  # every message type has at least 4 body bytes
IPV6_HEADER_LEN = 40

# RFC 4443 §2.1 error messages (type < 128).
DST_UNREACH = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAM_PROBLEM = 4
# Informational messages.
ECHO_REQUEST = 128
ECHO_REPLY = 129
MLD_QUERY = 130  # RFC 2710 / RFC 3810
MLD_REPORT = 131  # MLDv1
MLD_DONE = 132  # MLDv1
ROUTER_SOLICIT = 133  # RFC 4861 §4
ROUTER_ADVERT = 134
NEIGHBOR_SOLICIT = 135
NEIGHBOR_ADVERT = 136
REDIRECT = 137
MLDV2_REPORT = 143  # RFC 3810 §5.2

# RFC 4443 §3.1 Destination Unreachable codes.
UNREACH_NO_ROUTE = 0
UNREACH_ADMIN = 1
UNREACH_BEYOND_SCOPE = 2
UNREACH_ADDR = 3
UNREACH_PORT = 4
UNREACH_SRC_POLICY = 5
UNREACH_REJECT_ROUTE = 6
# RFC 4443 §3.3 Time Exceeded codes.
TIME_EXCEEDED_HOP_LIMIT = 0
TIME_EXCEEDED_REASSEMBLY = 1
# RFC 4443 §3.4 Parameter Problem codes (+ RFC 7112 §5).
PARAM_HEADER_FIELD = 0
PARAM_NEXT_HEADER = 1
PARAM_OPTION = 2
PARAM_INCOMPLETE_CHAIN = 3

# RFC 4443 §2.4(c): an error message must not exceed the minimum IPv6 MTU.
ERROR_MAX_PACKET = 1280
ERROR_MAX_QUOTE = ERROR_MAX_PACKET - IPV6_HEADER_LEN - ICMPV6_MIN_LEN

_HDR = Struct(">BBH")
_ECHO = Struct(">BBHHH")
_ERR = Struct(">BBHI")


def is_error(icmp_type: int) -> bool:
    """RFC 4443 §2.1: types 0-127 are errors, 128-255 informational."""
    return icmp_type < 128


def icmpv6_checksum(src: bytes, dst: bytes, message: bytes | bytearray | memoryview) -> int:
    """Checksum for ``message`` whose checksum field is zero (RFC 4443 §2.3)."""
    return checksum.internet_checksum(message, checksum.pseudo_sum6(src, dst, len(message), PROTO_ICMPV6))


def icmpv6_checksum_ok(src: bytes, dst: bytes, message: bytes | bytearray | memoryview) -> bool:
    return checksum.ones_sum(message, checksum.pseudo_sum6(src, dst, len(message), PROTO_ICMPV6)) == 0xFFFF


def finish_icmpv6(src: bytes, dst: bytes, message: bytearray) -> bytes:
    """Fill the checksum of a message built with its checksum field zero."""
    csum = icmpv6_checksum(src, dst, message)
    message[2] = csum >> 8
    message[3] = csum & 0xFF
    return bytes(message)


def build_icmpv6(src: bytes, dst: bytes, icmp_type: int, code: int, body: bytes) -> bytes:
    """Any ICMPv6 message; ``body`` is everything after the checksum field."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses are 16 bytes")
    msg = bytearray(_HDR.pack(icmp_type, code, 0))
    msg += body
    return finish_icmpv6(src, dst, msg)


def build_echo6(src: bytes, dst: bytes, icmp_type: int, ident: int, seq: int, data: bytes) -> bytes:
    """Echo Request (128) or Echo Reply (129), RFC 4443 §4.1-4.2."""
    if icmp_type not in (ECHO_REQUEST, ECHO_REPLY):
        raise ValueError("echo type must be 128 or 129")
    msg = bytearray(_ECHO.pack(icmp_type, 0, 0, ident & 0xFFFF, seq & 0xFFFF))
    msg += data
    return finish_icmpv6(src, dst, msg)


def build_error6(src: bytes, dst: bytes, icmp_type: int, code: int, param: int, invoking: bytes) -> bytes:
    """An error message quoting the invoking packet (from its IPv6 header on).

    ``param`` is the 32-bit field after the checksum: unused (0) for
    Destination Unreachable and Time Exceeded, the MTU for Packet Too Big,
    the pointer for Parameter Problem. RFC 4443 §2.4(c): "as much of the
    invoking packet as possible without the ICMPv6 packet exceeding the
    minimum IPv6 MTU", i.e. the quote is cut at 1232 bytes.
    """
    if not is_error(icmp_type):
        raise ValueError("error types are 1-127")
    msg = bytearray(_ERR.pack(icmp_type, code, 0, param & 0xFFFFFFFF))
    msg += invoking[:ERROR_MAX_QUOTE]
    return finish_icmpv6(src, dst, msg)


@dataclass(frozen=True, slots=True)
class Echo:
    """Echo Request/Reply, RFC 4443 §4.1::

        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |     Type      |     Code      |          Checksum             |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |           Identifier          |        Sequence Number        |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |     Data ...
        +-+-+-+-+-
    """

    icmp_type: int
    ident: int
    seq: int
    data: bytes


def parse_echo6(buf: bytes, off: int, end: int) -> Echo:
    """An echo message at ``buf[off:end]`` (``Frame.l4_off``/``ip_end``)."""
    end = min(end, len(buf))
    if off < 0 or end - off < ICMPV6_MIN_LEN:
        raise ParseError("icmp_truncated")
    icmp_type, _code, _csum, ident, seq = _ECHO.unpack_from(buf, off)
    return Echo(icmp_type, ident, seq, bytes(buf[off + 8 : end]))


@dataclass(frozen=True, slots=True)
class Icmpv6Error:
    """An error message, RFC 4443 §3: ``param`` is the word after the checksum
    (MTU, pointer, or unused) and ``quote`` the start of the invoking packet::

        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |     Type      |     Code      |          Checksum             |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                   MTU / Pointer / Unused                      |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |                As much of invoking packet                     |
        +               as possible without the ICMPv6 packet           +
        |               exceeding the minimum IPv6 MTU                  |
    """

    icmp_type: int
    code: int
    param: int
    quote: bytes


def parse_error6(buf: bytes, off: int, end: int) -> Icmpv6Error:
    """An error message; the quote must hold at least the invoking IPv6 header
    (RFC 4443 §2.4(b): the upper-layer demultiplexing needs it)."""
    end = min(end, len(buf))
    if off < 0 or end - off < ICMPV6_MIN_LEN:
        raise ParseError("icmp_truncated")
    icmp_type, code, _csum, param = _ERR.unpack_from(buf, off)
    if end - off - ICMPV6_MIN_LEN < IPV6_HEADER_LEN:
        raise ParseError("icmp_error_short_quote")
    return Icmpv6Error(icmp_type, code, param, bytes(buf[off + 8 : end]))


__all__ = [
    "DST_UNREACH",
    "ECHO_REPLY",
    "ECHO_REQUEST",
    "ERROR_MAX_PACKET",
    "ERROR_MAX_QUOTE",
    "ICMPV6_HEADER_LEN",
    "ICMPV6_MIN_LEN",
    "MLDV2_REPORT",
    "MLD_DONE",
    "MLD_QUERY",
    "MLD_REPORT",
    "NEIGHBOR_ADVERT",
    "NEIGHBOR_SOLICIT",
    "PACKET_TOO_BIG",
    "PARAM_HEADER_FIELD",
    "PARAM_INCOMPLETE_CHAIN",
    "PARAM_NEXT_HEADER",
    "PARAM_OPTION",
    "PARAM_PROBLEM",
    "REDIRECT",
    "ROUTER_ADVERT",
    "ROUTER_SOLICIT",
    "TIME_EXCEEDED",
    "TIME_EXCEEDED_HOP_LIMIT",
    "TIME_EXCEEDED_REASSEMBLY",
    "UNREACH_ADDR",
    "UNREACH_ADMIN",
    "UNREACH_BEYOND_SCOPE",
    "UNREACH_NO_ROUTE",
    "UNREACH_PORT",
    "UNREACH_REJECT_ROUTE",
    "UNREACH_SRC_POLICY",
    "Echo",
    "Icmpv6Error",
    "build_echo6",
    "build_error6",
    "build_icmpv6",
    "finish_icmpv6",
    "icmpv6_checksum",
    "icmpv6_checksum_ok",
    "is_error",
    "parse_echo6",
    "parse_error6",
]

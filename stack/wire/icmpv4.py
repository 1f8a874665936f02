"""ICMPv4 messages (RFC 792, RFC 1122 §3.2.2, RFC 1191, RFC 1812 §4.3).

Builders return the ICMP message (type onwards) with its checksum, which
covers the message only: ICMPv4 has no pseudo-header. Error messages quote
the invoking datagram: RFC 792 asks for the IP header plus 64 bits; RFC 1812
§4.3.2.3 says to quote as much as fits without the ICMP datagram exceeding
576 bytes, which is what ``build_error4`` does (548 bytes of quote behind our
20-byte header and the 8-byte ICMP header).
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

from stack.wire import checksum
from stack.wire.errors import ParseError

ICMPV4_HEADER_LEN = 8
IPV4_HEADER_LEN = 20

ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4  # deprecated, RFC 6633
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAM_PROBLEM = 12
TIMESTAMP = 13
TIMESTAMP_REPLY = 14

# RFC 792 / RFC 1122 §3.2.2.1 / RFC 1812 §5.2.7.1 Destination Unreachable codes.
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_FRAG_NEEDED = 4  # RFC 1191 §4: carries the next-hop MTU
UNREACH_SRC_ROUTE_FAILED = 5
UNREACH_NET_UNKNOWN = 6
UNREACH_HOST_UNKNOWN = 7
UNREACH_NET_PROHIBITED = 9
UNREACH_HOST_PROHIBITED = 10
UNREACH_ADMIN_PROHIBITED = 13
# Time Exceeded codes.
TIME_EXCEEDED_TTL = 0
TIME_EXCEEDED_REASSEMBLY = 1

ERROR_MAX_DATAGRAM = 576  # RFC 1812 §4.3.2.3
ERROR_MAX_QUOTE = ERROR_MAX_DATAGRAM - IPV4_HEADER_LEN - ICMPV4_HEADER_LEN

_HDR = Struct(">BBH4s")
_ECHO = Struct(">BBHHH")
_MTU = Struct(">HH")


def is_error(icmp_type: int) -> bool:
    """RFC 1122 §3.2.2: the error types (never answered with another error)."""
    return icmp_type in (DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAM_PROBLEM)


def build_icmpv4(icmp_type: int, code: int, rest: bytes, body: bytes) -> bytes:
    """Any ICMPv4 message; ``rest`` is the 4 bytes after the checksum."""
    if len(rest) != 4:
        raise ValueError("rest of header is 4 bytes")
    msg = bytearray(_HDR.pack(icmp_type, code, 0, rest))
    msg += body
    csum = checksum.internet_checksum(msg)
    msg[2] = csum >> 8
    msg[3] = csum & 0xFF
    return bytes(msg)


def build_echo4(icmp_type: int, ident: int, seq: int, data: bytes) -> bytes:
    """Echo (8) or Echo Reply (0), RFC 792."""
    if icmp_type not in (ECHO_REQUEST, ECHO_REPLY):
        raise ValueError("echo type must be 8 or 0")
    return build_icmpv4(icmp_type, 0, _MTU.pack(ident & 0xFFFF, seq & 0xFFFF), data)


def build_error4(icmp_type: int, code: int, invoking: bytes, rest: bytes = bytes(4)) -> bytes:
    """An error quoting ``invoking`` (from its IP header on), cut so that the
    whole datagram stays within 576 bytes (RFC 1812 §4.3.2.3)."""
    if not is_error(icmp_type):
        raise ValueError("not an ICMPv4 error type")
    return build_icmpv4(icmp_type, code, rest, invoking[:ERROR_MAX_QUOTE])


def build_dest_unreach4(code: int, invoking: bytes, next_hop_mtu: int = 0) -> bytes:
    """Destination Unreachable; for code 4 (fragmentation needed and DF set)
    RFC 1191 §4 puts the next-hop MTU in the low 16 bits of the unused word."""
    return build_error4(DEST_UNREACH, code, invoking, _MTU.pack(0, next_hop_mtu & 0xFFFF))


def build_frag_needed4(invoking: bytes, next_hop_mtu: int) -> bytes:
    return build_dest_unreach4(UNREACH_FRAG_NEEDED, invoking, next_hop_mtu)


def build_time_exceeded4(code: int, invoking: bytes) -> bytes:
    return build_error4(TIME_EXCEEDED, code, invoking)


def build_param_problem4(pointer: int, invoking: bytes) -> bytes:
    """RFC 792: the pointer names the octet where the problem was found."""
    return build_error4(PARAM_PROBLEM, 0, invoking, bytes((pointer & 0xFF, 0, 0, 0)))


@dataclass(frozen=True, slots=True)
class Icmpv4Message:
    """The common ICMPv4 header, RFC 792::

         0                   1                   2                   3
         0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |     Type      |     Code      |          Checksum             |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |   rest: identifier/sequence, unused/next-hop MTU, pointer     |
        +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
        |     body: echo data, or the invoking datagram's IP header...  |
    """

    icmp_type: int
    code: int
    rest: bytes
    body: bytes


def parse_icmpv4(buf: bytes, off: int, end: int) -> Icmpv4Message:
    """Split a message at ``buf[off:end]``; the checksum verdict is in Frame."""
    end = min(end, len(buf))
    if off < 0 or end - off < ICMPV4_HEADER_LEN:
        raise ParseError("icmp_truncated")
    icmp_type, code, _csum, rest = _HDR.unpack_from(buf, off)
    return Icmpv4Message(icmp_type, code, rest, bytes(buf[off + ICMPV4_HEADER_LEN : end]))


@dataclass(frozen=True, slots=True)
class Echo4:
    icmp_type: int
    ident: int
    seq: int
    data: bytes


def parse_echo4(buf: bytes, off: int, end: int) -> Echo4:
    end = min(end, len(buf))
    if off < 0 or end - off < ICMPV4_HEADER_LEN:
        raise ParseError("icmp_truncated")
    icmp_type, _code, _csum, ident, seq = _ECHO.unpack_from(buf, off)
    return Echo4(icmp_type, ident, seq, bytes(buf[off + ICMPV4_HEADER_LEN : end]))


@dataclass(frozen=True, slots=True)
class Icmpv4Error:
    """An error message: ``next_hop_mtu`` is set for frag-needed (RFC 1191),
    ``pointer`` for Parameter Problem, ``quote`` starts at the invoking IP header."""

    icmp_type: int
    code: int
    next_hop_mtu: int
    pointer: int
    quote: bytes


def parse_error4(buf: bytes, off: int, end: int) -> Icmpv4Error:
    """An error message whose quote holds at least a 20-byte IP header."""
    msg = parse_icmpv4(buf, off, end)
    if len(msg.body) < IPV4_HEADER_LEN:
        raise ParseError("icmp_error_short_quote")
    mtu = _MTU.unpack(msg.rest)[1] if (msg.icmp_type, msg.code) == (DEST_UNREACH, UNREACH_FRAG_NEEDED) else 0
    pointer = msg.rest[0] if msg.icmp_type == PARAM_PROBLEM else 0
    return Icmpv4Error(msg.icmp_type, msg.code, mtu, pointer, msg.body)


__all__ = [
    "DEST_UNREACH",
    "ECHO_REPLY",
    "ECHO_REQUEST",
    "ERROR_MAX_DATAGRAM",
    "ERROR_MAX_QUOTE",
    "ICMPV4_HEADER_LEN",
    "PARAM_PROBLEM",
    "REDIRECT",
    "SOURCE_QUENCH",
    "TIMESTAMP",
    "TIMESTAMP_REPLY",
    "TIME_EXCEEDED",
    "TIME_EXCEEDED_REASSEMBLY",
    "TIME_EXCEEDED_TTL",
    "UNREACH_ADMIN_PROHIBITED",
    "UNREACH_FRAG_NEEDED",
    "UNREACH_HOST",
    "UNREACH_HOST_PROHIBITED",
    "UNREACH_HOST_UNKNOWN",
    "UNREACH_NET",
    "UNREACH_NET_PROHIBITED",
    "UNREACH_NET_UNKNOWN",
    "UNREACH_PORT",
    "UNREACH_PROTOCOL",
    "UNREACH_SRC_ROUTE_FAILED",
    "Echo4",
    "Icmpv4Error",
    "Icmpv4Message",
    "build_dest_unreach4",
    "build_echo4",
    "build_error4",
    "build_frag_needed4",
    "build_icmpv4",
    "build_param_problem4",
    "build_time_exceeded4",
    "is_error",
    "parse_echo4",
    "parse_error4",
    "parse_icmpv4",
]

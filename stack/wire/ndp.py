"""Neighbor Discovery (RFC 4861) and MLDv2 (RFC 3810) message bodies.

Parsers take the ICMPv6 message at ``buf[off:end]`` (``Frame.l4_off`` and
``Frame.ip_end``), check only the layout (fixed part present, options well
formed) and return small frozen values; the validity checks that need the IP
header (hop limit 255, code 0, source rules; RFC 4861 §6.1, §7.1) are the
core's. Builders return complete ICMPv6 messages with checksum, to be sent
with hop limit 255 (MLD: hop limit 1 with ``router_alert=True``, to ff02::16).

Option rules (RFC 4861 §4.6): an option of length 0 makes the whole message
invalid ("nd_option_zero_length"); one that runs past the message is
"nd_option_truncated"; a recognized option with the wrong size for Ethernet
is "nd_option_bad_length" (Linux drops such NS/NA too); unknown options are
skipped (§4.6 "MUST silently ignore"). For a repeated single-valued option
the first one counts; every Prefix Information option is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from struct import Struct

from stack.wire.addr import ALL_MLDV2_ROUTERS
from stack.wire.errors import ParseError
from stack.wire.icmpv6 import (
    MLDV2_REPORT,
    NEIGHBOR_ADVERT,
    NEIGHBOR_SOLICIT,
    REDIRECT,
    ROUTER_ADVERT,
    ROUTER_SOLICIT,
    build_icmpv6,
)

# RFC 4861 §4.6, RFC 3971 §5.3.2 / RFC 7527 (nonce), RFC 8106 (RDNSS).
OPT_SLLA = 1
OPT_TLLA = 2
OPT_PREFIX_INFO = 3
OPT_REDIRECTED = 4
OPT_MTU = 5
OPT_NONCE = 14
OPT_RDNSS = 25

NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20
RA_MANAGED = 0x80
RA_OTHER = 0x40
PI_ON_LINK = 0x80
PI_AUTONOMOUS = 0x40
INFINITE_LIFETIME = 0xFFFFFFFF

NS_LEN = 24  # type, code, checksum, reserved, target
NA_LEN = 24
RS_LEN = 8
RA_LEN = 16
REDIRECT_LEN = 40
REDIRECT_MAX_PACKET = 1280  # RFC 4861 §4.5: fits the minimum MTU

# RFC 3810 §5.2.12 multicast address record types.
MODE_IS_INCLUDE = 1
MODE_IS_EXCLUDE = 2
CHANGE_TO_INCLUDE = 3
CHANGE_TO_EXCLUDE = 4
ALLOW_NEW_SOURCES = 5
BLOCK_OLD_SOURCES = 6
MLDV1_QUERY_LEN = 24  # RFC 3810 §8.1
MLDV2_QUERY_MIN_LEN = 28

_PREFIX = Struct(">BBBBIII16s")
_RA = Struct(">BBHII")
_MTU = Struct(">BBHI")
_RECORD = Struct(">BBH16s")
_QUERY = Struct(">HH16s")


@dataclass(frozen=True, slots=True)
class PrefixInfo:
    """Prefix Information option, RFC 4861 §4.6.2::

        |     Type      |    Length     | Prefix Length |L|A| Reserved1 |
        |                         Valid Lifetime                        |
        |                       Preferred Lifetime                      |
        |                           Reserved2                           |
        |                            Prefix (16 bytes)                  |
    """

    prefix: bytes
    plen: int
    on_link: bool
    autonomous: bool
    valid_lifetime: int
    preferred_lifetime: int


@dataclass(frozen=True, slots=True)
class Rdnss:
    """Recursive DNS Server option, RFC 8106 §5.1."""

    lifetime: int
    servers: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class NdOptions:
    slla: bytes | None = None
    tlla: bytes | None = None
    prefixes: tuple[PrefixInfo, ...] = ()
    mtu: int | None = None
    nonce: bytes | None = None
    redirected: bytes | None = None
    rdnss: tuple[Rdnss, ...] = ()


def parse_nd_options(buf: bytes, off: int, end: int) -> NdOptions:
    """The TLV options in ``buf[off:end]`` (RFC 4861 §4.6)::

        |     Type      |    Length     |              ...              |
        ~  Length counts 8-octet units, type and length included        ~
    """
    end = min(end, len(buf))
    slla = tlla = nonce = redirected = None
    mtu: int | None = None
    prefixes: list[PrefixInfo] = []
    rdnss: list[Rdnss] = []
    while off < end:
        if off + 2 > end:
            raise ParseError("nd_option_truncated")
        opt, units = buf[off], buf[off + 1]
        if units == 0:
            raise ParseError("nd_option_zero_length")  # RFC 4861 §4.6: discard the packet
        size = units * 8
        if off + size > end:
            raise ParseError("nd_option_truncated")
        if opt in (OPT_SLLA, OPT_TLLA):
            if units != 1:  # RFC 2464 §6: Ethernet addresses make 8-byte options
                raise ParseError("nd_option_bad_length")
            if opt == OPT_SLLA and slla is None:
                slla = bytes(buf[off + 2 : off + 8])
            elif opt == OPT_TLLA and tlla is None:
                tlla = bytes(buf[off + 2 : off + 8])
        elif opt == OPT_PREFIX_INFO:
            if units != 4:
                raise ParseError("nd_option_bad_length")
            prefixes.append(_parse_prefix(buf, off))
        elif opt == OPT_MTU:
            if units != 1:
                raise ParseError("nd_option_bad_length")
            if mtu is None:
                mtu = _MTU.unpack_from(buf, off)[3]
        elif opt == OPT_NONCE:
            if nonce is None:  # RFC 3971 §5.3.2: at least 6 bytes of nonce
                nonce = bytes(buf[off + 2 : off + size])
        elif opt == OPT_REDIRECTED:
            if redirected is None:  # RFC 4861 §4.6.3: 6 reserved bytes, then IP header + data
                redirected = bytes(buf[off + 8 : off + size])
        elif opt == OPT_RDNSS:
            if units < 3 or units % 2 == 0:  # RFC 8106 §5.1: 1 + 2 * addresses
                raise ParseError("nd_option_bad_length")
            lifetime = _MTU.unpack_from(buf, off)[3]
            servers = tuple(bytes(buf[a : a + 16]) for a in range(off + 8, off + size, 16))
            rdnss.append(Rdnss(lifetime, servers))
        off += size
    return NdOptions(slla, tlla, tuple(prefixes), mtu, nonce, redirected, tuple(rdnss))


def _parse_prefix(buf: bytes, off: int) -> PrefixInfo:
    _t, _l, plen, flags, valid, preferred, _res, prefix = _PREFIX.unpack_from(buf, off)
    if plen > 128:
        raise ParseError("nd_prefix_bad_length")
    return PrefixInfo(prefix, plen, bool(flags & PI_ON_LINK), bool(flags & PI_AUTONOMOUS), valid, preferred)


def _fixed(buf: bytes, off: int, end: int, need: int) -> int:
    end = min(end, len(buf))
    if off < 0 or end - off < need:
        raise ParseError("nd_truncated")
    return end


@dataclass(frozen=True, slots=True)
class Ns:
    """Neighbor Solicitation, RFC 4861 §4.3: reserved(4), target(16), options."""

    target: bytes
    opts: NdOptions


@dataclass(frozen=True, slots=True)
class Na:
    """Neighbor Advertisement, RFC 4861 §4.4: R|S|O flags, reserved, target, options."""

    router: bool
    solicited: bool
    override: bool
    target: bytes
    opts: NdOptions


@dataclass(frozen=True, slots=True)
class Rs:
    """Router Solicitation, RFC 4861 §4.1: reserved(4), options."""

    opts: NdOptions


@dataclass(frozen=True, slots=True)
class Ra:
    """Router Advertisement, RFC 4861 §4.2::

        |     Type      |     Code      |          Checksum             |
        | Cur Hop Limit |M|O|  Reserved |       Router Lifetime         |
        |                         Reachable Time                        |
        |                          Retrans Timer                        |
        |   Options ...
    """

    cur_hop_limit: int
    managed: bool
    other: bool
    router_lifetime: int
    reachable_time: int
    retrans_timer: int
    opts: NdOptions


@dataclass(frozen=True, slots=True)
class Redirect:
    """Redirect, RFC 4861 §4.5: reserved(4), target(16), destination(16), options."""

    target: bytes
    dest: bytes
    opts: NdOptions


def parse_ns(buf: bytes, off: int, end: int) -> Ns:
    end = _fixed(buf, off, end, NS_LEN)
    return Ns(bytes(buf[off + 8 : off + 24]), parse_nd_options(buf, off + NS_LEN, end))


def parse_na(buf: bytes, off: int, end: int) -> Na:
    end = _fixed(buf, off, end, NA_LEN)
    flags = buf[off + 4]
    return Na(bool(flags & NA_ROUTER), bool(flags & NA_SOLICITED), bool(flags & NA_OVERRIDE),
              bytes(buf[off + 8 : off + 24]), parse_nd_options(buf, off + NA_LEN, end))


def parse_rs(buf: bytes, off: int, end: int) -> Rs:
    end = _fixed(buf, off, end, RS_LEN)
    return Rs(parse_nd_options(buf, off + RS_LEN, end))


def parse_ra(buf: bytes, off: int, end: int) -> Ra:
    end = _fixed(buf, off, end, RA_LEN)
    chl, flags, lifetime, reachable, retrans = _RA.unpack_from(buf, off + 4)
    return Ra(chl, bool(flags & RA_MANAGED), bool(flags & RA_OTHER), lifetime, reachable, retrans,
              parse_nd_options(buf, off + RA_LEN, end))


def parse_redirect(buf: bytes, off: int, end: int) -> Redirect:
    end = _fixed(buf, off, end, REDIRECT_LEN)
    return Redirect(bytes(buf[off + 8 : off + 24]), bytes(buf[off + 24 : off + 40]),
                    parse_nd_options(buf, off + REDIRECT_LEN, end))


# --- builders ---------------------------------------------------------------

def lla_option(opt_type: int, lladdr: bytes) -> bytes:
    """Source/Target Link-layer Address option for Ethernet (RFC 4861 §4.6.1)."""
    if len(lladdr) != 6:
        raise ValueError("link-layer address must be 6 bytes")
    return bytes((opt_type, 1)) + lladdr


def prefix_option(p: PrefixInfo) -> bytes:
    flags = (PI_ON_LINK if p.on_link else 0) | (PI_AUTONOMOUS if p.autonomous else 0)
    return _PREFIX.pack(OPT_PREFIX_INFO, 4, p.plen, flags, p.valid_lifetime, p.preferred_lifetime, 0, p.prefix)


def mtu_option(mtu: int) -> bytes:
    return _MTU.pack(OPT_MTU, 1, 0, mtu)


def nonce_option(nonce: bytes) -> bytes:
    """RFC 3971 §5.3.2 / RFC 7527 §4.1: the option is a multiple of 8 bytes,
    so the nonce is 6, 14, ... bytes (DAD uses 6)."""
    if len(nonce) < 6 or (len(nonce) + 2) % 8:
        raise ValueError("nonce length must be 6 + 8k bytes")
    return bytes((OPT_NONCE, (len(nonce) + 2) // 8)) + nonce


def redirected_option(data: bytes) -> bytes:
    """Redirected Header option (RFC 4861 §4.6.3), zero-padded to 8 bytes."""
    data = data + bytes(-len(data) % 8)
    return bytes((OPT_REDIRECTED, 1 + len(data) // 8)) + bytes(6) + data


def build_ns(src: bytes, dst: bytes, target: bytes, slla: bytes | None = None,
             nonce: bytes | None = None) -> bytes:
    """Neighbor Solicitation. RFC 4861 §4.3: no SLLA when src is :: (DAD)."""
    body = bytes(4) + target
    if slla is not None:
        body += lla_option(OPT_SLLA, slla)
    if nonce is not None:
        body += nonce_option(nonce)
    return build_icmpv6(src, dst, NEIGHBOR_SOLICIT, 0, body)


def build_na(src: bytes, dst: bytes, target: bytes, router: bool, solicited: bool, override: bool,
             tlla: bytes | None = None) -> bytes:
    flags = (NA_ROUTER if router else 0) | (NA_SOLICITED if solicited else 0) | (NA_OVERRIDE if override else 0)
    body = bytes((flags, 0, 0, 0)) + target
    if tlla is not None:
        body += lla_option(OPT_TLLA, tlla)
    return build_icmpv6(src, dst, NEIGHBOR_ADVERT, 0, body)


def build_rs(src: bytes, dst: bytes, slla: bytes | None = None) -> bytes:
    body = bytes(4)
    if slla is not None:
        body += lla_option(OPT_SLLA, slla)
    return build_icmpv6(src, dst, ROUTER_SOLICIT, 0, body)


def build_ra(src: bytes, dst: bytes, cur_hop_limit: int, router_lifetime: int, reachable_time: int,
             retrans_timer: int, slla: bytes | None, prefixes: Iterable[PrefixInfo], mtu: int | None,
             managed: bool = False, other: bool = False) -> bytes:
    """Router Advertisement with options in the order SLLA, MTU, prefixes."""
    flags = (RA_MANAGED if managed else 0) | (RA_OTHER if other else 0)
    body = _RA.pack(cur_hop_limit, flags, router_lifetime, reachable_time, retrans_timer)
    if slla is not None:
        body += lla_option(OPT_SLLA, slla)
    if mtu is not None:
        body += mtu_option(mtu)
    for p in prefixes:
        body += prefix_option(p)
    return build_icmpv6(src, dst, ROUTER_ADVERT, 0, body)


def build_redirect(src: bytes, dst: bytes, target: bytes, dest: bytes, tlla: bytes | None = None,
                   redirected: bytes = b"") -> bytes:
    """Redirect (RFC 4861 §4.5, §8.2). The Redirected Header carries as much of
    the forwarded packet as fits without the IPv6 packet exceeding 1280 bytes."""
    body = bytes(4) + target + dest
    if tlla is not None:
        body += lla_option(OPT_TLLA, tlla)
    if redirected:
        room = REDIRECT_MAX_PACKET - 40 - 4 - len(body) - 8  # IPv6, ICMPv6 header, option header
        body += redirected_option(redirected[: room - room % 8])
    return build_icmpv6(src, dst, REDIRECT, 0, body)


# --- MLDv2 ------------------------------------------------------------------

def build_mldv2_report(src: bytes, records: Sequence[tuple[int, bytes, Sequence[bytes]]]) -> bytes:
    """Version 2 Multicast Listener Report, RFC 3810 §5.2, to ff02::16::

        |  Type = 143   |    Reserved   |           Checksum            |
        |           Reserved            |Nr of Mcast Address Records (M)|
        |  Record Type  |  Aux Data Len |     Number of Sources (N)     |
        |            Multicast Address (16), Source Address [i] (16 each)

    ``records`` are ``(record_type, group, sources)``; no auxiliary data.
    """
    body = bytearray(2) + len(records).to_bytes(2, "big")
    for rtype, group, sources in records:
        body += _RECORD.pack(rtype, 0, len(sources), group)
        for s in sources:
            body += s
    return build_icmpv6(src, ALL_MLDV2_ROUTERS, MLDV2_REPORT, 0, bytes(body))


def parse_mldv2_report(buf: bytes, off: int, end: int) -> tuple[tuple[int, bytes, tuple[bytes, ...]], ...]:
    """The records of a Version 2 Report (the inverse of ``build_mldv2_report``)."""
    end = min(end, len(buf))
    if off < 0 or end - off < 8:
        raise ParseError("mld_truncated")
    count = (buf[off + 6] << 8) | buf[off + 7]
    pos = off + 8
    out = []
    for _ in range(count):
        if pos + 20 > end:
            raise ParseError("mld_truncated")
        rtype, aux, nsrc, group = _RECORD.unpack_from(buf, pos)
        after = pos + 20 + 16 * nsrc + 4 * aux  # RFC 3810 §5.2.6: Aux Data Len in 32-bit words
        if after > end:
            raise ParseError("mld_truncated")
        sources = tuple(bytes(buf[a : a + 16]) for a in range(pos + 20, pos + 20 + 16 * nsrc, 16))
        out.append((rtype, group, sources))
        pos = after
    return tuple(out)


@dataclass(frozen=True, slots=True)
class MldQuery:
    """Multicast Listener Query: MLDv1 (RFC 2710 §3, 24 bytes) or MLDv2
    (RFC 3810 §5.1, 28 + 16N bytes). ``max_resp_delay`` in milliseconds,
    ``qqi`` in seconds (0 for MLDv1, where neither S nor QRV exist)."""

    version: int
    max_resp_delay: int
    group: bytes
    s_flag: bool
    qrv: int
    qqi: int
    sources: tuple[bytes, ...]


def decode_max_resp_code(code: int) -> int:
    """RFC 3810 §5.1.3: below 32768 literal ms, else a 3-bit exp, 12-bit mantissa float."""
    if code < 0x8000:
        return code
    return ((code & 0x0FFF) | 0x1000) << (((code >> 12) & 0x7) + 3)


def decode_qqic(code: int) -> int:
    """RFC 3810 §5.1.9: below 128 literal seconds, else a 3-bit exp, 4-bit mantissa float."""
    if code < 0x80:
        return code
    return ((code & 0x0F) | 0x10) << (((code >> 4) & 0x7) + 3)


def parse_mld_query(buf: bytes, off: int, end: int) -> MldQuery:
    """RFC 3810 §8.1: exactly 24 bytes is an MLDv1 query, 28 or more MLDv2;
    any other length is invalid ("mld_bad_length")."""
    end = min(end, len(buf))
    length = end - off
    if off < 0 or length < 0:
        raise ParseError("mld_bad_length")
    if length == MLDV1_QUERY_LEN:
        delay, _res, group = _QUERY.unpack_from(buf, off + 4)
        return MldQuery(1, delay, bytes(group), False, 0, 0, ())
    if length < MLDV2_QUERY_MIN_LEN:
        raise ParseError("mld_bad_length")
    code, _res, group = _QUERY.unpack_from(buf, off + 4)
    flags, qqic = buf[off + 24], buf[off + 25]
    nsrc = (buf[off + 26] << 8) | buf[off + 27]
    if off + MLDV2_QUERY_MIN_LEN + 16 * nsrc > end:
        raise ParseError("mld_truncated")
    base = off + MLDV2_QUERY_MIN_LEN
    sources = tuple(bytes(buf[a : a + 16]) for a in range(base, base + 16 * nsrc, 16))
    return MldQuery(2, decode_max_resp_code(code), bytes(group), bool(flags & 0x08), flags & 0x07,
                    decode_qqic(qqic), sources)


__all__ = [
    "ALLOW_NEW_SOURCES",
    "BLOCK_OLD_SOURCES",
    "CHANGE_TO_EXCLUDE",
    "CHANGE_TO_INCLUDE",
    "INFINITE_LIFETIME",
    "MODE_IS_EXCLUDE",
    "MODE_IS_INCLUDE",
    "OPT_MTU",
    "OPT_NONCE",
    "OPT_PREFIX_INFO",
    "OPT_RDNSS",
    "OPT_REDIRECTED",
    "OPT_SLLA",
    "OPT_TLLA",
    "MldQuery",
    "Na",
    "NdOptions",
    "Ns",
    "PrefixInfo",
    "Ra",
    "Rdnss",
    "Redirect",
    "Rs",
    "build_mldv2_report",
    "build_na",
    "build_ns",
    "build_ra",
    "build_redirect",
    "build_rs",
    "decode_max_resp_code",
    "decode_qqic",
    "lla_option",
    "mtu_option",
    "nonce_option",
    "parse_mld_query",
    "parse_mldv2_report",
    "parse_na",
    "parse_nd_options",
    "parse_ns",
    "parse_ra",
    "parse_redirect",
    "parse_rs",
    "prefix_option",
    "redirected_option",
]

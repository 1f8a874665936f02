"""Addresses as bytes: IPv6 (16 bytes), IPv4 (4 bytes), MAC (6 bytes).

Pure helpers, no state. Text forms appear only at the edges (config, CLI, repr);
the core works on ``bytes``. A link-scope IPv6 address always travels with a zone,
the ifindex of its link (RFC 4007 §6); zone 0 means "global / no zone".
"""

from __future__ import annotations

import functools
import ipaddress

UNSPECIFIED6 = bytes(16)
LOOPBACK6 = bytes(15) + b"\x01"
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")
ALL_MLDV2_ROUTERS = bytes.fromhex("ff020000000000000000000000000016")
SOLICITED_NODE_PREFIX = bytes.fromhex("ff0200000000000000000001ff")
LINK_LOCAL_PREFIX = bytes.fromhex("fe800000000000000000000000000000")
UNSPECIFIED4 = bytes(4)
BROADCAST4 = b"\xff\xff\xff\xff"
DUMMY4 = bytes((192, 0, 0, 8))  # RFC 7600 IPv4 dummy address
BROADCAST_MAC = b"\xff" * 6

# RFC 4291 §2.7 multicast scope values / RFC 6724 §3.1 unicast scopes.
SCOPE_INTERFACE = 0x1
SCOPE_LINK = 0x2
SCOPE_SITE = 0x5
SCOPE_GLOBAL = 0xE


def ip6(text: str) -> bytes:
    """'2001:db8::1' -> 16 bytes. Raises ValueError on bad text."""
    return ipaddress.IPv6Address(text).packed


def ip4(text: str) -> bytes:
    """'192.0.2.1' -> 4 bytes. Raises ValueError on bad text."""
    return ipaddress.IPv4Address(text).packed


def ip(text: str) -> bytes:
    """Either family by form."""
    return ipaddress.ip_address(text).packed


def fmt(addr: bytes) -> str:
    """4 or 16 bytes -> canonical text."""
    if type(addr) is bytes:
        return _fmt_cached(addr)        # per connection (peer names, traces): ipaddress is slow
    return _fmt(addr)


def _fmt(addr: bytes) -> str:
    if len(addr) == 16:
        return str(ipaddress.IPv6Address(addr))
    if len(addr) == 4:
        return str(ipaddress.IPv4Address(addr))
    raise ValueError(f"not an IP address: {addr.hex()}")


_fmt_cached = functools.lru_cache(maxsize=4096)(_fmt)


def mac(text: str) -> bytes:
    """'02:00:00:00:00:02' -> 6 bytes."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"bad MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)


def fmt_mac(lladdr: bytes) -> str:
    return ":".join(f"{b:02x}" for b in lladdr)


def is_multicast6(addr: bytes) -> bool:
    return addr[0] == 0xFF


def is_link_local6(addr: bytes) -> bool:
    """fe80::/10 unicast."""
    return addr[0] == 0xFE and (addr[1] & 0xC0) == 0x80


def is_loopback6(addr: bytes) -> bool:
    return addr == LOOPBACK6


def is_unspecified(addr: bytes) -> bool:
    return not any(addr)


def is_v4mapped(addr: bytes) -> bool:
    return addr[:12] == b"\x00" * 10 + b"\xff\xff"


def multicast_scope(addr: bytes) -> int:
    return addr[1] & 0x0F


def scope6(addr: bytes) -> int:
    """RFC 6724 §3.1 scope of any IPv6 address (unicast or multicast)."""
    if is_multicast6(addr):
        return multicast_scope(addr)
    if is_link_local6(addr) or addr == LOOPBACK6:
        return SCOPE_LINK
    if is_v4mapped(addr):
        return scope4(addr[12:])
    return SCOPE_GLOBAL


def scope4(addr: bytes) -> int:
    """RFC 6724 §3.2: 127/8 and 169.254/16 are link-local, the rest global."""
    if addr[0] == 127 or addr[:2] == b"\xa9\xfe":
        return SCOPE_LINK
    return SCOPE_GLOBAL


def needs_zone(addr: bytes) -> bool:
    """True for IPv6 addresses whose meaning depends on the link (RFC 4007 §6)."""
    # several calls per packet: the tests of is_multicast6 / multicast_scope /
    # is_link_local6, inlined
    if len(addr) != 16:
        return False
    b0 = addr[0]
    if b0 == 0xFF:
        return (addr[1] & 0x0F) <= SCOPE_LINK
    return b0 == 0xFE and (addr[1] & 0xC0) == 0x80


def is_multicast4(addr: bytes) -> bool:
    return 224 <= addr[0] <= 239


def is_loopback4(addr: bytes) -> bool:
    return addr[0] == 127


def solicited_node(addr: bytes) -> bytes:
    """RFC 4291 §2.7.1: ff02::1:ffXX:XXXX from the low 24 bits."""
    return SOLICITED_NODE_PREFIX + addr[13:16]


def multicast_mac(addr: bytes) -> bytes:
    """RFC 2464 §7 (IPv6: 33:33 + low 32 bits); RFC 1112 §6.4 for IPv4."""
    if len(addr) == 16:
        return b"\x33\x33" + addr[12:16]
    return bytes((0x01, 0x00, 0x5E, addr[1] & 0x7F, addr[2], addr[3]))


def eui64(lladdr: bytes) -> bytes:
    """Modified EUI-64 interface identifier (RFC 4291 App. A) from a MAC."""
    return bytes((lladdr[0] ^ 0x02,)) + lladdr[1:3] + b"\xff\xfe" + lladdr[3:6]


def link_local_from_mac(lladdr: bytes) -> bytes:
    return LINK_LOCAL_PREFIX[:8] + eui64(lladdr)


def prefix_match(a: bytes, b: bytes, plen: int) -> bool:
    """True when the first plen bits of a and b agree (same length assumed)."""
    full, rem = divmod(plen, 8)
    if a[:full] != b[:full]:
        return False
    if rem == 0:
        return True
    mask = (0xFF << (8 - rem)) & 0xFF
    return (a[full] & mask) == (b[full] & mask)


def common_prefix_len(a: bytes, b: bytes) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        d = x ^ y
        if d == 0:
            n += 8
            continue
        return n + (8 - d.bit_length())
    return n


def prefix_mask(nbytes: int, plen: int) -> int:
    """The netmask of ``plen`` bits in an address of ``nbytes`` bytes, as an int."""
    bits = nbytes * 8
    return ((1 << plen) - 1) << (bits - plen) if plen else 0


# netmasks as ints for IPv4 and IPv6, by prefix length (route lookups mask per length)
PREFIX_MASKS: dict[int, list[int]] = {n: [prefix_mask(n, p) for p in range(n * 8 + 1)] for n in (4, 16)}


def mask_prefix(addr: bytes, plen: int) -> bytes:
    """Zero every bit past plen."""
    n = len(addr)
    masks = PREFIX_MASKS.get(n)
    mask = masks[plen] if masks is not None and 0 <= plen <= n * 8 else prefix_mask(n, plen)
    return (int.from_bytes(addr, "big") & mask).to_bytes(n, "big")


@functools.lru_cache(maxsize=1024)      # asked several times per IPv4 packet (Ip4.is_broadcast)
def broadcast4(addr: bytes, plen: int) -> bytes:
    value = int.from_bytes(addr, "big")
    host = (1 << (32 - plen)) - 1
    return (value | host).to_bytes(4, "big")


def split_zone(text: str) -> tuple[str, str | None]:
    """'fe80::1%tap0' -> ('fe80::1', 'tap0'); no '%' -> (text, None)."""
    if "%" in text:
        addr, zone = text.split("%", 1)
        if not zone:
            raise ValueError(f"empty zone in {text!r}")
        return addr, zone
    return text, None


def parse_prefix(text: str) -> tuple[bytes, int]:
    """'2001:db8::/64' or '192.0.2.0/24' or a bare address (host route)."""
    if "/" in text:
        addr, plen_text = text.split("/", 1)
        if not plen_text.isdigit():
            raise ValueError(f"bad prefix length in {text!r}")
        plen = int(plen_text)
    else:
        addr, plen = text, -1
    raw = ip(addr)
    maxlen = len(raw) * 8
    if plen == -1:
        plen = maxlen
    if not 0 <= plen <= maxlen:
        raise ValueError(f"prefix length {plen} out of range in {text!r}")
    return raw, plen


def fmt_prefix(addr: bytes, plen: int) -> str:
    if addr == bytes(len(addr)) and plen == 0:
        return "default"
    return f"{fmt(addr)}/{plen}"

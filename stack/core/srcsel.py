"""Source address selection.

IPv6: RFC 6724 §5 rules 1, 2, 3, 5, 6 and 8 with the default policy table (§2.1);
rule 3 also avoids optimistic addresses (RFC 4429 §3.3).
Rule 4 (home addresses) and 7 (temporary addresses) do not apply: the stack has
neither. Candidates (§4): usable addresses (not tentative, not duplicated); for a
link-scope destination only addresses of the destination's zone.

IPv4 (RFC 5549 aware, as Linux ``fib_result_prefsrc`` + ``inet_select_addr``):
route ``src`` → a primary address of the egress interface (one whose subnet
holds dst first) → the loopback's non-127/8 addresses → the first address of any
other interface. An IPv6 next hop changes nothing here: the family of the
*destination* picks the source, never the family of the gateway.
"""

from __future__ import annotations

from collections.abc import Iterable

from stack.core.interface import Addr6, AddrState, Interface
from stack.wire.addr import (
    common_prefix_len,
    is_loopback4,
    needs_zone,
    prefix_match,
    scope4,
    scope6,
)

# RFC 6724 §2.1 default policy table: (prefix, plen, precedence, label)
POLICY_TABLE: tuple[tuple[bytes, int, int, int], ...] = (
    (bytes(15) + b"\x01", 128, 50, 0),
    (bytes(16), 0, 40, 1),
    (bytes(10) + b"\xff\xff" + bytes(4), 96, 35, 4),
    (b"\x20\x02" + bytes(14), 16, 30, 2),
    (b"\x20\x01" + bytes(14), 32, 5, 5),
    (b"\xfc" + bytes(15), 7, 3, 13),
    (bytes(16), 96, 1, 3),
    (b"\xfe\xc0" + bytes(14), 10, 1, 11),
    (b"\x3f\xfe" + bytes(14), 16, 1, 12),
)
_POLICY_BY_LEN = sorted(POLICY_TABLE, key=lambda p: -p[1])


def policy(addr: bytes) -> tuple[int, int]:
    """(precedence, label) of the longest matching policy entry."""
    for prefix, plen, prec, label in _POLICY_BY_LEN:
        if prefix_match(prefix, addr, plen):
            return prec, label
    return 40, 1


def _better(a: Addr6, a_if: int, b: Addr6, b_if: int, dst: bytes, out_if: int) -> bool:
    """True when a is preferred over b as source for dst (RFC 6724 §5)."""
    # Rule 1: prefer same address.
    if a.addr == dst or b.addr == dst:
        return a.addr == dst
    # Rule 2: prefer appropriate scope.
    sa, sb, sd = scope6(a.addr), scope6(b.addr), scope6(dst)
    if sa != sb:
        if sa < sb:
            return not sa < sd
        return sb < sd
    # Rule 3: avoid deprecated addresses; RFC 4429 §3.3: an optimistic address is
    # treated as deprecated here (as Linux without use_optimistic).
    a_dep = a.state is AddrState.DEPRECATED or a.state is AddrState.OPTIMISTIC
    b_dep = b.state is AddrState.DEPRECATED or b.state is AddrState.OPTIMISTIC
    if a_dep != b_dep:
        return b_dep
    # Rule 5: prefer outgoing interface.
    if (a_if == out_if) != (b_if == out_if):
        return a_if == out_if
    # Rule 6: prefer matching label.
    dl = policy(dst)[1]
    a_lab, b_lab = policy(a.addr)[1] == dl, policy(b.addr)[1] == dl
    if a_lab != b_lab:
        return a_lab
    # Rule 8: longest matching prefix (up to the prefix length of the source's prefix).
    a_cp = min(common_prefix_len(a.addr, dst), max(a.plen, 64))
    b_cp = min(common_prefix_len(b.addr, dst), max(b.plen, 64))
    return a_cp > b_cp


def candidates6(interfaces: Iterable[Interface], dst: bytes, zone: int) -> list[tuple[Addr6, int]]:
    """RFC 6724 §4 candidate set; link-scope destinations only see their own zone."""
    out: list[tuple[Addr6, int]] = []
    link_scoped = needs_zone(dst) or dst == bytes(15) + b"\x01"
    for iface in interfaces:
        if iface.ipv6_disabled:
            continue
        if link_scoped and zone and iface.ifindex != zone:
            continue
        for a in iface.addrs6:
            if not a.usable:
                continue
            if a.addr == bytes(15) + b"\x01" and dst != a.addr:
                continue  # ::1 is the loopback's own link-local scope address
            out.append((a, iface.ifindex))
    return out


def select_source6(interfaces: Iterable[Interface], dst: bytes, zone: int, out_if: int,
                   route_src: bytes | None = None) -> tuple[bytes, int] | None:
    """(address, its ifindex) or None. ``route_src`` wins when it is a candidate."""
    cands = candidates6(interfaces, dst, zone)
    if route_src is not None:
        for a, ifx in cands:
            if a.addr == route_src:
                return a.addr, ifx
    best: tuple[Addr6, int] | None = None
    for a, ifx in cands:
        if best is None or _better(a, ifx, best[0], best[1], dst, out_if):
            best = (a, ifx)
    if best is None:
        return None
    return best[0].addr, best[1]


def select_source4(interfaces: dict[int, Interface], dst: bytes, out_if: int,
                   route_src: bytes | None = None) -> bytes | None:
    """IPv4 source for locally originated traffic (see module docstring)."""
    if route_src is not None:
        return route_src
    egress = interfaces.get(out_if)
    if egress is not None and egress.addrs4:
        allow_lo = egress.loopback
        usable = [a for a in egress.addrs4 if allow_lo or not is_loopback4(a.addr)]
        for a in usable:
            if prefix_match(a.addr, dst, a.plen):
                return a.addr
        if usable:
            return usable[0].addr
    # Loopback first (Linux: "lo is the first interface in dev_base list"), then the rest.
    for ifx in sorted(interfaces):
        iface = interfaces[ifx]
        for a in iface.addrs4:
            if is_loopback4(a.addr) and not is_loopback4(dst):
                continue
            if scope4(a.addr) == 2 and not is_loopback4(dst):
                continue  # 169.254/16: link scope, not for another link
            return a.addr
    return None

"""The routing table: longest-prefix match per family, zone-aware (RFC 4007 §9).

Every route names its transmit interface (``ifindex``) and its address interface
(``aifp``). They differ only for routes to the stack's own addresses: those
transmit on the loopback (ifindex 1) and carry the interface that owns the
address, so a looped packet is received as if it arrived there (FreeBSD's
``nh_ifp``/``nh_aifp`` after D35732; Linux's local routes keep the owning
``inet6_dev``).

Zones: a route for a link-scope prefix (fe80::/64, an own link-local /128)
carries the zone (ifindex) it belongs to. A destination with a zone only
matches routes of that zone; a destination without one only matches routes
without one. fe80::1%tap0 and fe80::1%tap1 are different destinations.

``gen`` changes on every change to routes, addresses or interfaces; sockets
cache an ``OutRoute`` stamped with the ``gen`` it was computed in.
"""

from __future__ import annotations

from dataclasses import dataclass

from stack.wire.addr import PREFIX_MASKS, fmt, fmt_prefix, mask_prefix

MEMO_MAX = 1024             # RouteTable.lookup answers kept per generation
_MISS = object()

PROTO_LOCAL = "local"        # own address, via loopback
PROTO_KERNEL = "kernel"      # connected prefix (ip route's "proto kernel")
PROTO_STATIC = "static"      # configuration / tapstack route add
PROTO_RA = "ra"              # default router or prefix from a Router Advertisement
PROTO_REDIRECT = "redirect"  # RFC 4861 §8.3


@dataclass(frozen=True, slots=True)
class Route:
    dst: bytes                 # masked network, 4 or 16 bytes
    plen: int
    ifindex: int               # transmit interface
    aifp: int                  # address interface (== ifindex unless a local route)
    gateway: bytes | None = None   # any family: an IPv4 route may have an IPv6 gateway (RFC 5549)
    gw_zone: int = 0
    zone: int = 0              # zone of a link-scope prefix, else 0
    src: bytes | None = None   # preferred source
    proto: str = PROTO_STATIC
    metric: int = 0
    expires_at: int | None = None

    @property
    def family(self) -> int:
        return 6 if len(self.dst) == 16 else 4

    @property
    def local(self) -> bool:
        return self.proto == PROTO_LOCAL

    def describe(self, ifname: dict[int, str]) -> str:
        parts = [fmt_prefix(self.dst, self.plen)]
        if self.zone:
            parts[0] += f"%{ifname.get(self.zone, self.zone)}"
        if self.gateway is not None:
            via = fmt(self.gateway)
            if len(self.gateway) != len(self.dst):
                via = f"inet6 {via}" if len(self.gateway) == 16 else f"inet {via}"
            parts.append(f"via {via}")
        parts.append(f"dev {ifname.get(self.ifindex, self.ifindex)}")
        if self.aifp != self.ifindex:
            parts.append(f"origdev {ifname.get(self.aifp, self.aifp)}")
        parts.append(f"proto {self.proto}")
        if self.src is not None:
            parts.append(f"src {fmt(self.src)}")
        if self.metric:
            parts.append(f"metric {self.metric}")
        return " ".join(parts)


class RouteTable:
    """Two tables (IPv4, IPv6) of ``{plen: {(net, zone): [Route, ...]}}``."""

    def __init__(self) -> None:
        self._tables: dict[int, dict[int, dict[tuple[bytes, int], list[Route]]]] = {4: {}, 6: {}}
        self._plens: dict[int, list[int]] = {4: [], 6: []}
        self.gen = 1
        self._expiry: tuple[int, int | None] = (0, None)   # (gen, next_expiry()) of that gen
        # lookup() results of this gen until the first route expiry (a FIB cache: routes
        # are frozen and every change bumps gen); bounded, emptied when full.
        self._memo: dict[tuple[bytes, int], object] = {}
        self._memo_gen = 0
        self._memo_until: int | None = None

    def bump(self) -> int:
        """Something that routing depends on changed (an address, a link)."""
        self.gen += 1
        return self.gen

    def add(self, route: Route) -> None:
        fam = route.family
        table = self._tables[fam].setdefault(route.plen, {})
        key = (mask_prefix(route.dst, route.plen), route.zone)
        routes = table.setdefault(key, [])
        routes[:] = [r for r in routes if not _same_slot(r, route)]
        routes.append(route)
        routes.sort(key=lambda r: r.metric)
        self._plens[fam] = sorted(self._tables[fam], reverse=True)
        self.bump()

    def remove(self, dst: bytes, plen: int, zone: int = 0, *, proto: str | None = None,
               ifindex: int | None = None, gateway: bytes | None = None) -> list[Route]:
        """Remove matching routes; returns what was removed."""
        fam = 6 if len(dst) == 16 else 4
        table = self._tables[fam].get(plen)
        if not table:
            return []
        key = (mask_prefix(dst, plen), zone)
        routes = table.get(key, [])
        gone = [r for r in routes
                if (proto is None or r.proto == proto)
                and (ifindex is None or r.ifindex == ifindex)
                and (gateway is None or r.gateway == gateway)]
        if not gone:
            return []
        table[key] = [r for r in routes if r not in gone]
        if not table[key]:
            del table[key]
        if not table:
            del self._tables[fam][plen]
            self._plens[fam] = sorted(self._tables[fam], reverse=True)
        self.bump()
        return gone

    def remove_where(self, pred: object) -> list[Route]:
        """Remove every route for which pred(route) is true (interface removal)."""
        assert callable(pred)
        gone: list[Route] = []
        for fam in (4, 6):
            for plen in list(self._tables[fam]):
                table = self._tables[fam][plen]
                for key in list(table):
                    keep = [r for r in table[key] if not pred(r)]
                    gone.extend(r for r in table[key] if pred(r))
                    if keep:
                        table[key] = keep
                    else:
                        del table[key]
                if not table:
                    del self._tables[fam][plen]
            self._plens[fam] = sorted(self._tables[fam], reverse=True)
        if gone:
            self.bump()
        return gone

    def lookup(self, dst: bytes, zone: int = 0, now: int | None = None) -> Route | None:
        """Longest-prefix match within dst's zone (zone 0 = global routes only)."""
        if now is None:
            return self._lookup(dst, zone, None)
        # Memo of this gen's answers (a FIB cache: routes are frozen, every change bumps
        # gen); an answer stands until the first route expiry after it was computed.
        memo = self._memo
        if self._memo_gen != self.gen or len(memo) >= MEMO_MAX \
                or (self._memo_until is not None and now >= self._memo_until):
            self._refresh_memo(now)
        key = (dst, zone)
        r = memo.get(key, _MISS)
        if r is _MISS:
            r = memo[key] = self._lookup(dst, zone, now)
        return r  # type: ignore[return-value]

    def _refresh_memo(self, now: int) -> None:
        self._memo.clear()
        self._memo_gen = self.gen
        self._memo_until = self._next_expiry_after(now)

    def stable_until(self, now: int) -> int | None:
        """Until when (None: no end) every ``lookup`` answer of this gen given at
        ``now`` or later stays right, unless gen changes: a bound for caches built on
        lookups (Stack.route_output_cached)."""
        if self._memo_gen != self.gen or (self._memo_until is not None and now >= self._memo_until):
            self._refresh_memo(now)
        return self._memo_until

    def _next_expiry_after(self, now: int) -> int | None:
        at = self.next_expiry()         # cached per gen: the answer unless a route has expired
        if at is None or at > now:      # but is still in the table (removed at the next poll)
            return at
        at = None
        for r in self:
            t = r.expires_at
            if t is not None and t > now and (at is None or t < at):
                at = t
        return at

    def _lookup(self, dst: bytes, zone: int, now: int | None) -> Route | None:
        n = len(dst)
        fam = 6 if n == 16 else 4
        tables = self._tables[fam]
        value = int.from_bytes(dst, "big")      # mask_prefix, without converting dst per plen
        masks = PREFIX_MASKS[n]
        for plen in self._plens[fam]:
            routes = tables[plen].get(((value & masks[plen]).to_bytes(n, "big"), zone))
            if routes:
                for r in routes:
                    if now is None or r.expires_at is None or r.expires_at > now:
                        return r
        return None

    def expire(self, now: int) -> list[Route]:
        return self.remove_where(lambda r: r.expires_at is not None and r.expires_at <= now)

    def next_expiry(self) -> int | None:
        # Asked after every batch of frames (poll_at): a scan of the table only when it
        # changed. Routes are frozen and every change bumps gen.
        gen, at = self._expiry
        if gen == self.gen:
            return at
        times = [r.expires_at for r in self if r.expires_at is not None]
        at = min(times) if times else None
        self._expiry = (self.gen, at)
        return at

    def __iter__(self):  # type: ignore[no-untyped-def]
        for fam in (6, 4):
            for plen in self._plens[fam]:
                for routes in self._tables[fam][plen].values():
                    yield from routes

    def routes(self, family: int | None = None) -> list[Route]:
        return [r for r in self if family is None or r.family == family]


def _same_slot(a: Route, b: Route) -> bool:
    """Routes that replace each other (same prefix, zone, proto and transmit interface)."""
    return a.proto == b.proto and a.ifindex == b.ifindex and a.metric == b.metric \
        and a.gateway == b.gateway

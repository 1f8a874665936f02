"""Router discovery, prefix discovery, SLAAC and Redirect for hosts.

RFC 4861 §6.3 (host side of router discovery: Router Solicitations, the
Default Router List, the Prefix List, parameters from Router Advertisements),
§8.3 (Redirect), RFC 4862 §5.5 (stateless address autoconfiguration) and the
address lifetimes of §5.5.4 (deprecation, removal).

The Default Router List is kept here and mirrored as ``::/0`` routes (proto
"ra", gateway = the router's link-local in its zone, ``expires_at`` = the
router lifetime); the Prefix List as connected routes (proto "ra", expiring
with the valid lifetime); Redirects as host routes (proto "redirect"), the
Destination Cache of §5 being the route table. RAs are honoured on interfaces
with ``accept_ra`` while the stack is not a router (RFC 4861 §6.3: this is
host behaviour; Linux ``accept_ra=1`` does the same); Redirects whenever the
stack is not a router (§8.3).

Every table is bounded (MAX_* below). The module builds RS messages only; it
never reads a clock and draws randomness from ``stack.rng``.

Transitions:

    interface up (accept_ra)     -> RS after random [0, MAX_RTR_SOLICITATION_DELAY]
    RS timer, sent < 3           -> RS again in RTR_SOLICITATION_INTERVAL
    RA with router lifetime > 0  -> solicitation stops (§6.3.7); router added/refreshed
    RA with router lifetime 0    -> router removed
    router lifetime expires      -> router removed
    router's cache entry missing or INCOMPLETE -> its route ranks below the others (§6.3.6)
    NA with R=0 from a router    -> router removed, redirects through it removed (§7.2.5)
    PIO L=1 valid > 0            -> prefix added/refreshed; valid 0 -> removed
    PIO A=1 new prefix           -> address formed (EUI-64), DAD
    PIO A=1 known prefix         -> lifetimes updated, 2-hour rule (RFC 4862 §5.5.3 e)
    preferred lifetime passes    -> address DEPRECATED
    valid lifetime passes        -> address removed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.core.clock import ms, s
from stack.core.interface import Addr6, AddrState, Interface, Origin
from stack.core.nd import NeighborCache, NudState
from stack.core.routes import PROTO_KERNEL, PROTO_RA, PROTO_REDIRECT
from stack.core.stats import Drop
from stack.wire import ndp
from stack.wire.addr import (
    ALL_ROUTERS,
    UNSPECIFIED6,
    eui64,
    fmt,
    fmt_prefix,
    is_link_local6,
    is_multicast6,
    mask_prefix,
    multicast_mac,
    needs_zone,
    prefix_match,
)
from stack.wire.frame_types import PROTO_ICMPV6, Frame
from stack.wire.ipv6 import IPV6_MIN_MTU

if TYPE_CHECKING:
    from stack.core.stack import Stack

# RFC 4861 §10 host constants.
MAX_RTR_SOLICITATION_DELAY = s(1)
RTR_SOLICITATION_INTERVAL = s(4)
MAX_RTR_SOLICITATIONS = 3
MAX_REACHABLE_TIME_MS = 3_600_000          # §6.2.1: routers never advertise more
TWO_HOURS = s(2 * 3600)                    # RFC 4862 §5.5.3 e
IID_BITS = 64                              # RFC 4291 §2.5.1 / RFC 2464 §4

# Bounds (RFC 4861 §6.3.4 lets a host limit its lists) and route metrics
# (static routes and connected prefixes use 0, so they win over learned ones).
MAX_ROUTERS_PER_IF = 8
MAX_PREFIXES_PER_IF = 32
MAX_SLAAC_PER_IF = 16
MAX_REDIRECTS = 1024
REDIRECT_LIFETIME = s(600)
RA_DEFAULT_METRIC = 1024
RA_SUSPECT_METRIC = RA_DEFAULT_METRIC + 1  # §6.3.6: a router not known to be reachable
RA_PREFIX_METRIC = 256

_INF = 1 << 62                             # "infinite" for lifetime arithmetic


@dataclass(slots=True)
class DefaultRouter:
    ifindex: int
    addr: bytes                # link-local, zone = ifindex
    expires_at: int
    metric: int = RA_DEFAULT_METRIC


@dataclass(slots=True)
class OnLinkPrefix:
    ifindex: int
    prefix: bytes
    plen: int
    expires_at: int | None     # None = infinite valid lifetime


@dataclass(slots=True)
class Solicitation:
    at: int                    # next RS
    left: int                  # RS still to send


def _deadline(lifetime: int, now: int) -> int | None:
    """A lifetime in seconds as an instant; 0xffffffff is infinity (§4.6.2)."""
    return None if lifetime == ndp.INFINITE_LIFETIME else now + s(lifetime)


class RouterDiscovery:
    def __init__(self, stack: Stack) -> None:
        self.st = stack
        self.routers: dict[tuple[int, bytes], DefaultRouter] = {}
        self.prefixes: dict[tuple[int, bytes, int], OnLinkPrefix] = {}
        self.solicit: dict[int, Solicitation] = {}
        self.redirects: dict[bytes, int] = {}   # redirected destination -> expires_at

    def honours_ra(self, iface: Interface) -> bool:
        return iface.accept_ra and not self.st.forwarding and not iface.loopback

    def is_router(self, ifindex: int, addr: bytes) -> bool:
        return (ifindex, addr) in self.routers

    # -- Router Solicitation (§6.3.7) -------------------------------------------------

    def interface_up(self, iface: Interface, now: int) -> None:
        if not self.honours_ra(iface):
            return
        # §6.3.7: delay the first RS by a random [0, MAX_RTR_SOLICITATION_DELAY].
        delay = int(self.st.rng.uniform(0, 1) * MAX_RTR_SOLICITATION_DELAY)
        self.solicit[iface.ifindex] = Solicitation(now + delay, MAX_RTR_SOLICITATIONS)

    def _send_rs(self, iface: Interface, now: int) -> None:
        if not iface.up or iface.ipv6_disabled:
            return
        ll = iface.link_local()
        # §6.3.7 / §4.1: from the link-local if usable, else from :: without SLLAO.
        # RFC 4429 §3.3: never an SLLAO from an optimistic address; an RS SHOULD then
        # come from ::.
        src, slla = (ll.addr, iface.mac) if ll is not None and not ll.optimistic else (UNSPECIFIED6, None)
        msg = ndp.build_rs(src, ALL_ROUTERS, slla)
        self.st.stats.count("nd", "out_rs")
        self.st.ip6.send_raw(iface.ifindex, multicast_mac(ALL_ROUTERS), src, ALL_ROUTERS,
                             PROTO_ICMPV6, msg, now)

    # -- Router Advertisement (§6.1.2, §6.3.4) ------------------------------------------

    def handle_ra(self, rcvif: Interface, f: Frame, now: int) -> None:
        """Hop limit, code and checksum were checked by the caller; parsing
        enforces length >= 16 and non-zero option lengths (ParseError)."""
        st = self.st
        ra = ndp.parse_ra(f.buf, f.l4_off, f.ip_end)
        # §6.1.2: the source must be link-local (routers always use one). One of
        # our own addresses is a reflection or a spoof.
        if not is_link_local6(f.src) or rcvif.find6(f.src) is not None:
            st.stats.drop(Drop.ND_RA_BAD_SOURCE)
            return
        if not self.honours_ra(rcvif):
            st.stats.drop(Drop.ND_RA_IGNORED)
            return
        st.stats.count("nd", "in_ra")
        self._parameters(rcvif, ra, now)
        self._router_neighbor(rcvif, f.src, ra.opts.slla, now)
        self._router(rcvif, f.src, ra.router_lifetime, now)
        if ra.opts.mtu is not None:
            self._mtu(rcvif, ra.opts.mtu)
        for pi in ra.opts.prefixes:
            self._on_link(rcvif, pi, now)
            self._autoconf(rcvif, pi, now)

    def _parameters(self, iface: Interface, ra: ndp.Ra, now: int) -> None:
        nd = iface.nd
        # §6.3.4: each non-zero (specified) field replaces the host's variable.
        if ra.cur_hop_limit and ra.cur_hop_limit != nd.cur_hop_limit:
            nd.cur_hop_limit = ra.cur_hop_limit
            self.st._flow_epoch += 1         # echo flow hints carry the hop limit
        changed = False
        if ra.reachable_time and ra.reachable_time <= MAX_REACHABLE_TIME_MS:
            base = ms(ra.reachable_time)
            if base != nd.base_reachable_time:
                # §6.3.4: a new BaseReachableTime draws a new random ReachableTime.
                nd.base_reachable_time = base
                nd.reachable_time = NeighborCache.random_reachable_time(self.st.rng, base)
                changed = True
        if ra.retrans_timer and ms(ra.retrans_timer) != nd.retrans_timer:
            nd.retrans_timer = ms(ra.retrans_timer)
            changed = True
        if changed:
            self.st.nd.set_params(iface.ifindex, nd.reachable_time, nd.retrans_timer)

    def _router(self, iface: Interface, addr: bytes, lifetime: int, now: int) -> None:
        key = (iface.ifindex, addr)
        router = self.routers.get(key)
        if lifetime == 0:
            # §6.3.4: a zero Router Lifetime times the router out immediately.
            if router is not None:
                self._remove_router(router, "router lifetime 0")
            return
        # §6.3.7: a valid RA with a non-zero Router Lifetime ends solicitation.
        self.solicit.pop(iface.ifindex, None)
        expires_at = now + s(lifetime)
        if router is None:
            if sum(1 for r in self.routers.values() if r.ifindex == iface.ifindex) >= MAX_ROUTERS_PER_IF:
                self.st.stats.count("nd", "ra_router_list_full")
                return
            router = self.routers[key] = DefaultRouter(iface.ifindex, addr, expires_at)
            self.st.note("info", f"{iface.name}: default router {fmt(addr)} (lifetime {lifetime} s)")
        router.expires_at = expires_at
        self._route_router(router, self._metric(router), now)

    def _route_router(self, router: DefaultRouter, metric: int, now: int) -> None:
        """(Re)install the router's ::/0 route with this metric and its lifetime."""
        if metric != router.metric:
            self.st.routes.remove(UNSPECIFIED6, 0, proto=PROTO_RA, ifindex=router.ifindex,
                                  gateway=router.addr)
            router.metric = metric
        self.st.add_route(UNSPECIFIED6, 0, gateway=router.addr, gw_zone=router.ifindex, proto=PROTO_RA,
                          metric=metric, expires_at=router.expires_at, now=now)

    def _metric(self, router: DefaultRouter) -> int:
        """§6.3.6: routers reachable or probably reachable (a cache entry in any
        state but INCOMPLETE) are preferred over those whose reachability is
        unknown or suspect; the route metric carries the preference."""
        entry = self.st.nd.get(router.ifindex, router.addr)
        good = entry is not None and entry.state is not NudState.INCOMPLETE
        return RA_DEFAULT_METRIC if good else RA_SUSPECT_METRIC

    def rank_routers(self, now: int) -> None:
        """Re-apply §6.3.6 after neighbor cache changes."""
        for router in self.routers.values():
            metric = self._metric(router)
            if metric != router.metric:
                self._route_router(router, metric, now)

    def _remove_router(self, router: DefaultRouter, why: str) -> None:
        self.routers.pop((router.ifindex, router.addr), None)
        self.st.routes.remove(UNSPECIFIED6, 0, proto=PROTO_RA, ifindex=router.ifindex,
                              gateway=router.addr)
        self.st.note("info", f"{self.st.ifname(router.ifindex)}: default router {fmt(router.addr)} "
                     f"removed ({why})")

    def _router_neighbor(self, iface: Interface, addr: bytes, slla: bytes | None, now: int) -> None:
        st = self.st
        # §6.3.4: record the SLLAO (creating a STALE entry if needed); IsRouter
        # becomes TRUE on the entry whether or not the RA carried one.
        if slla is not None:
            st.ndp.apply(st.nd.on_solicitation(iface.ifindex, addr, slla, now), now)
        entry = st.nd.get(iface.ifindex, addr)
        if entry is not None:
            entry.is_router = True

    def _mtu(self, iface: Interface, mtu: int) -> None:
        # §6.3.4: accept 1280 <= MTU <= the link's maximum (RFC 8200 §5, RFC 2464).
        if not IPV6_MIN_MTU <= mtu <= iface.nd.link_mtu:
            self.st.stats.count("nd", "ra_mtu_ignored")
            return
        if mtu != iface.mtu:
            iface.mtu = mtu
            self.st.routes.bump()
            self.st.note("info", f"{iface.name}: MTU {mtu} from a router advertisement")

    # -- Prefix Information: on-link (§6.3.4) -----------------------------------------------

    def _on_link(self, iface: Interface, pi: ndp.PrefixInfo, now: int) -> None:
        if not pi.on_link or is_link_local6(pi.prefix) or is_multicast6(pi.prefix):
            return   # §6.3.4: the link-local prefix is silently ignored
        prefix = mask_prefix(pi.prefix, pi.plen)
        key = (iface.ifindex, prefix, pi.plen)
        entry = self.prefixes.get(key)
        if pi.valid_lifetime == 0:
            # §6.3.4: time out a known prefix immediately; ignore an unknown one.
            if entry is not None:
                self._remove_prefix(entry, "valid lifetime 0")
            return
        expires_at = _deadline(pi.valid_lifetime, now)
        if entry is None:
            if sum(1 for p in self.prefixes.values() if p.ifindex == iface.ifindex) >= MAX_PREFIXES_PER_IF:
                self.st.stats.count("nd", "ra_prefix_list_full")
                return
            entry = self.prefixes[key] = OnLinkPrefix(iface.ifindex, prefix, pi.plen, expires_at)
            self.st.note("info", f"{iface.name}: on-link prefix {fmt_prefix(prefix, pi.plen)}")
        entry.expires_at = expires_at
        self.st.add_route(prefix, pi.plen, ifindex=iface.ifindex, proto=PROTO_RA,
                          metric=RA_PREFIX_METRIC, expires_at=expires_at, now=now)

    def _remove_prefix(self, entry: OnLinkPrefix, why: str) -> None:
        self.prefixes.pop((entry.ifindex, entry.prefix, entry.plen), None)
        self.st.routes.remove(entry.prefix, entry.plen, proto=PROTO_RA, ifindex=entry.ifindex)
        self.st.note("info", f"{self.st.ifname(entry.ifindex)}: on-link prefix "
                     f"{fmt_prefix(entry.prefix, entry.plen)} removed ({why})")

    # -- Prefix Information: autonomous (RFC 4862 §5.5.3) ---------------------------------

    def _autoconf(self, iface: Interface, pi: ndp.PrefixInfo, now: int) -> None:
        st = self.st
        if not pi.autonomous:                             # a)
            return
        if is_link_local6(pi.prefix) or is_multicast6(pi.prefix):   # b)
            return
        if pi.preferred_lifetime > pi.valid_lifetime:     # c)
            st.stats.count("nd", "pio_preferred_exceeds_valid")
            return
        known = [a for a in iface.addrs6 if a.origin is Origin.SLAAC and a.plen == pi.plen
                 and prefix_match(a.addr, pi.prefix, pi.plen)]
        if known:                                         # e)
            for a in known:
                self._refresh(iface, a, pi, now)
            return
        if pi.valid_lifetime == 0:                        # d) only with a non-zero valid lifetime
            return
        if pi.plen + IID_BITS != 128:                     # d) prefix + 64-bit IID must make 128
            st.stats.count("nd", "pio_bad_prefix_length")
            return
        if sum(1 for a in iface.addrs6 if a.origin is Origin.SLAAC) >= MAX_SLAAC_PER_IF:
            st.stats.count("nd", "slaac_address_limit")
            return
        addr = mask_prefix(pi.prefix, pi.plen)[:8] + eui64(iface.mac)
        if iface.find6(addr) is not None:                 # configured by other means already
            return
        # add_address joins the solicited-node group and starts DAD (§5.4).
        st.add_address(iface.ifindex, addr, pi.plen, now, origin=Origin.SLAAC,
                       preferred_until=_deadline(pi.preferred_lifetime, now),
                       valid_until=_deadline(pi.valid_lifetime, now))
        self._drop_implied_prefix_route(iface, addr, pi.plen)
        st.note("info", f"{iface.name}: SLAAC address {fmt(addr)}/{pi.plen} "
                f"(valid {pi.valid_lifetime} s, preferred {pi.preferred_lifetime} s)")
        new = iface.find6(addr)
        if new is not None:
            self._age(iface, new, now)

    def _drop_implied_prefix_route(self, iface: Interface, addr: bytes, plen: int) -> None:
        """RFC 5942 §4: an autoconfigured address says nothing about on-link;
        only the L flag does. ``add_address`` adds a connected route for every
        address, so take it away again unless another address needs it."""
        if any(b.addr != addr and b.plen == plen and prefix_match(b.addr, addr, plen)
               for b in iface.addrs6):
            return
        self.st.routes.remove(mask_prefix(addr, plen), plen, proto=PROTO_KERNEL, ifindex=iface.ifindex)

    def _refresh(self, iface: Interface, a: Addr6, pi: ndp.PrefixInfo, now: int) -> None:
        # §5.5.3 e: the preferred lifetime is reset to the advertised value ...
        a.preferred_until = _deadline(pi.preferred_lifetime, now)
        # ... the valid lifetime obeys the two-hour rule (no SEND authentication here).
        remaining = _INF if a.valid_until is None else a.valid_until - now
        received = _INF if pi.valid_lifetime == ndp.INFINITE_LIFETIME else s(pi.valid_lifetime)
        if received > TWO_HOURS or received > remaining:          # e.1
            a.valid_until = _deadline(pi.valid_lifetime, now)
        elif remaining <= TWO_HOURS:                               # e.2: ignore
            self.st.stats.count("nd", "pio_two_hour_rule")
        else:                                                      # e.3
            a.valid_until = now + TWO_HOURS
        if a.state is AddrState.DEPRECATED and (a.preferred_until is None or a.preferred_until > now):
            a.state = AddrState.PREFERRED                          # preferred again
            self.st.routes.bump()
        self._age(iface, a, now)

    # -- address lifetimes (RFC 4862 §5.5.4) ----------------------------------------------

    def _age(self, iface: Interface, a: Addr6, now: int) -> None:
        st = self.st
        if a.valid_until is not None and a.valid_until <= now:
            st.remove_address(iface.ifindex, a.addr, now)          # §5.5.4: invalid: removed
            st.note("info", f"{iface.name}: address {fmt(a.addr)} expired (valid lifetime)")
            return
        # An OPTIMISTIC address stays so until DAD ends; _dad_tick deprecates it then.
        if a.preferred_until is not None and a.preferred_until <= now \
                and a.state is AddrState.PREFERRED:
            a.state = AddrState.DEPRECATED                         # §5.5.4: deprecated
            st.routes.bump()
            st.note("info", f"{iface.name}: address {fmt(a.addr)} deprecated")

    @staticmethod
    def _address_deadline(a: Addr6) -> int | None:
        times = [a.valid_until] if a.valid_until is not None else []
        if a.preferred_until is not None and a.state is AddrState.PREFERRED:
            times.append(a.preferred_until)
        return min(times) if times else None

    # -- Redirect (§8.1, §8.3) ---------------------------------------------------------------

    def handle_redirect(self, rcvif: Interface, f: Frame, now: int) -> None:
        """Hop limit, code and checksum were checked by the caller; parsing
        enforces length >= 40 and non-zero option lengths (ParseError)."""
        st = self.st
        rd = ndp.parse_redirect(f.buf, f.l4_off, f.ip_end)
        if st.forwarding:
            st.stats.drop(Drop.ND_REDIRECT_IGNORED)   # §8.3 is for hosts; routers ignore Redirects
            return
        ifx = rcvif.ifindex
        # §8.1 validity checks.
        if not is_link_local6(f.src):
            st.stats.drop(Drop.ND_REDIRECT_BAD_SOURCE)
            return
        if is_multicast6(rd.dest):
            st.stats.drop(Drop.ND_REDIRECT_BAD_DEST)
            return
        if not (is_link_local6(rd.target) or rd.target == rd.dest):
            st.stats.drop(Drop.ND_REDIRECT_BAD_TARGET)
            return
        # §8.1: the source must be the current first-hop router for the destination.
        r = st.routes.lookup(rd.dest, ifx if needs_zone(rd.dest) else 0, now)
        if r is None or r.local or r.gateway != f.src or r.gw_zone != ifx or r.ifindex != ifx:
            st.stats.drop(Drop.ND_REDIRECT_NOT_FROM_ROUTER)
            return
        st.stats.count("nd", "in_redirect")
        self._install_redirect(rcvif, rd.dest, rd.target, now)
        if rd.opts.tlla is not None:
            # §8.3: the target's cache entry gets the TLLAO (STALE when new or changed).
            st.ndp.apply(st.nd.on_solicitation(ifx, rd.target, rd.opts.tlla, now), now)
        if rd.target != rd.dest:
            entry = st.nd.get(ifx, rd.target)
            if entry is not None:
                entry.is_router = True                 # §8.3: a better first hop is a router

    def _install_redirect(self, iface: Interface, dest: bytes, target: bytes, now: int) -> None:
        st = self.st
        ifx = iface.ifindex
        self.redirects.pop(dest, None)
        st.routes.remove(dest, 128, proto=PROTO_REDIRECT)
        while len(self.redirects) >= MAX_REDIRECTS:
            oldest = next(iter(self.redirects))
            del self.redirects[oldest]
            st.routes.remove(oldest, 128, proto=PROTO_REDIRECT)
            st.stats.count("nd", "redirect_evicted")
        expires_at = now + REDIRECT_LIFETIME
        if target == dest:
            # §8.3: target == destination: the destination is on-link.
            st.add_route(dest, 128, ifindex=ifx, proto=PROTO_REDIRECT, expires_at=expires_at, now=now)
        else:
            st.add_route(dest, 128, gateway=target, gw_zone=ifx, proto=PROTO_REDIRECT,
                         expires_at=expires_at, now=now)
        self.redirects[dest] = expires_at

    # -- routers that stop being routers (§7.2.5) -------------------------------------------

    def router_lost(self, iface: Interface, addr: bytes, now: int) -> None:
        router = self.routers.get((iface.ifindex, addr))
        if router is not None:
            self._remove_router(router, "no longer a router")
        # §7.2.5: destinations that used it as their router pick a new one.
        gone = self.st.routes.remove_where(lambda r: r.proto == PROTO_REDIRECT and r.gateway == addr
                                           and r.gw_zone == iface.ifindex)
        for r in gone:
            self.redirects.pop(r.dst, None)

    # -- timers ------------------------------------------------------------------------------

    def poll_at(self) -> int | None:
        times = [sol.at for sol in self.solicit.values()] if self.solicit else []
        if self.routers:
            times.extend(r.expires_at for r in self.routers.values())
        if self.prefixes:
            times.extend(p.expires_at for p in self.prefixes.values() if p.expires_at is not None)
        if self.redirects:
            # Same lifetime for all, refreshed ones re-inserted: the first expires first.
            times.append(next(iter(self.redirects.values())))
        best = min(times) if times else None
        live = AddrState.PREFERRED
        for iface in self.st.interfaces.values():
            for a in iface.addrs6:
                # _address_deadline, inlined, and a running minimum instead of a list: this
                # runs after every batch of frames
                t = a.valid_until
                if t is not None and (best is None or t < best):
                    best = t
                t = a.preferred_until
                if t is not None and a.state is live and (best is None or t < best):
                    best = t
        return best

    def poll(self, now: int) -> None:
        st = self.st
        for ifx, sol in list(self.solicit.items()) if self.solicit else ():
            iface = st.interfaces.get(ifx)
            if iface is None or not self.honours_ra(iface):
                del self.solicit[ifx]
            elif sol.at <= now:
                self._send_rs(iface, now)
                sol.left -= 1
                if sol.left > 0:
                    sol.at = now + RTR_SOLICITATION_INTERVAL   # §6.3.7
                else:
                    del self.solicit[ifx]
        for router in list(self.routers.values()) if self.routers else ():
            if router.ifindex not in st.interfaces:
                del self.routers[(router.ifindex, router.addr)]
            elif router.expires_at <= now:
                self._remove_router(router, "router lifetime expired")
        self.rank_routers(now)
        for entry in list(self.prefixes.values()) if self.prefixes else ():
            if entry.ifindex not in st.interfaces:
                del self.prefixes[(entry.ifindex, entry.prefix, entry.plen)]
            elif entry.expires_at is not None and entry.expires_at <= now:
                self._remove_prefix(entry, "valid lifetime expired")
        while self.redirects:
            dest, expires_at = next(iter(self.redirects.items()))
            if expires_at > now:
                break
            del self.redirects[dest]
            st.routes.remove(dest, 128, proto=PROTO_REDIRECT)
        # Any address due? _address_deadline, inlined and without copying the lists: this
        # runs at every Stack.poll (several per TCP connection), rarely with one due.
        live = AddrState.PREFERRED
        due = False
        for iface in st.interfaces.values():
            for a in iface.addrs6:
                vu, pu = a.valid_until, a.preferred_until
                if (vu is not None and vu <= now) or (pu is not None and pu <= now and a.state is live):
                    due = True
        if not due:
            return
        for iface in list(st.interfaces.values()):
            for a in list(iface.addrs6):
                t = self._address_deadline(a)
                if t is not None and t <= now:
                    self._age(iface, a, now)

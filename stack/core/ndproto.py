"""Neighbor Discovery messages (RFC 4861 §6–§8) and DAD (RFC 4862 §5.4).

This module validates and answers ND messages and runs DAD; the neighbor state
machine itself lives in ``nd.NeighborCache``, router discovery, SLAAC and
Redirect in ``rdisc.RouterDiscovery``, the MLD listener in ``mld.MldListener``
(both reached through the hooks below). Validation follows §7.1.1/§7.1.2
(NS/NA), §6.1.1/§6.1.2 (RS/RA) and §8.1 (Redirect): hop limit 255, code 0,
length, non-zero option lengths, source and target rules; RFC 6980 (no
fragmented ND; reassembled ND is refused in ``ip6._local``). Every rejection is a
counted drop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.core.interface import Addr6, AddrState, Interface, Origin
from stack.core.mld import MldListener
from stack.core.nd import Action
from stack.core.rdisc import RouterDiscovery
from stack.core.stats import Drop
from stack.wire import ndp
from stack.wire.addr import (
    ALL_NODES,
    UNSPECIFIED6,
    fmt,
    is_multicast6,
    is_unspecified,
    multicast_mac,
    solicited_node,
)
from stack.wire.errors import ParseError
from stack.wire.frame_types import PROTO_ICMPV6, Frame

if TYPE_CHECKING:
    from stack.core.stack import Stack

NS, NA, RS, RA, REDIRECT = 135, 136, 133, 134, 137
MAX_RTR_SOLICITATION_DELAY = 1_000_000_000


class NdProto:
    def __init__(self, stack: Stack) -> None:
        self.st = stack
        self.dad: list[tuple[Interface, Addr6]] = []
        self.rdisc = RouterDiscovery(stack)
        self.mld = MldListener(stack)

    # -- dispatch ----------------------------------------------------------------

    def handle(self, rcvif: Interface, f: Frame, now: int, looped: bool) -> None:
        st = self.st
        if f.hop_limit != 255:
            st.stats.drop(Drop.ND_BAD_HOP_LIMIT)      # §7.1.1: must come from the link
            return
        if f.icmp_code != 0:
            st.stats.drop(Drop.ND_BAD_CODE)
            return
        if f.is_fragment or any(e[0] == 44 for e in f.ext):
            st.stats.drop(Drop.ND_FRAGMENTED)         # RFC 6980
            return
        t = f.icmp_type
        try:
            if t == NS:
                self._ns(rcvif, f, ndp.parse_ns(f.buf, f.l4_off, f.ip_end), now)
            elif t == NA:
                self._na(rcvif, f, ndp.parse_na(f.buf, f.l4_off, f.ip_end), now)
            elif t == RA:
                self.handle_ra(rcvif, f, now)
            elif t == REDIRECT:
                self.handle_redirect(rcvif, f, now)
            else:
                self._rs(f)
        except ParseError as e:
            reason = Drop.ND_BAD_OPTION if "option" in e.reason else Drop.ND_BAD_LENGTH
            st.stats.drop(reason)

    # -- Router Solicitation --------------------------------------------------------

    def _rs(self, f: Frame) -> None:
        """§6.1.1 validity (length, options; from :: no SLLAO), then ignored:
        we are not an advertising interface (§6.2.6 is for routers)."""
        rs = ndp.parse_rs(f.buf, f.l4_off, f.ip_end)
        if is_unspecified(f.src) and rs.opts.slla is not None:
            self.st.stats.drop(Drop.ND_BAD_SOURCE)
            return
        self.st.stats.count("nd", "in_rs_ignored")

    # -- Neighbor Solicitation ----------------------------------------------------

    def _ns(self, rcvif: Interface, f: Frame, ns: ndp.Ns, now: int) -> None:
        st = self.st
        src, dst, target = f.src, f.dst, ns.target
        if is_multicast6(target):
            st.stats.drop(Drop.ND_BAD_TARGET)
            return
        dad_probe = is_unspecified(src)
        # §7.1.1: from :: the destination is a solicited-node address, no SLLAO.
        if dad_probe and (dst != solicited_node(target) or ns.opts.slla is not None):
            st.stats.drop(Drop.ND_BAD_SOURCE)
            return
        a = rcvif.find6(target)
        if a is None or a.state is AddrState.DUPLICATED:
            st.stats.drop(Drop.ND_TARGET_NOT_OURS)
            return
        if a.in_dad and dad_probe:
            # RFC 4862 §5.4.3: an NS from :: for our tentative (or optimistic, RFC 4429
            # §3.3) address is a duplicate, unless it is our own looped probe (RFC 7527).
            if ns.opts.nonce is not None and ns.opts.nonce == a.dad_nonce:
                st.stats.count("nd", "dad_own_probe_looped")
                return
            self.dad_failed(rcvif, a, "neighbor solicitation from another node", now)
            return
        if a.state is AddrState.TENTATIVE:
            return                    # §5.4.3: other solicitations for it are not answered
        st.stats.count("nd", "in_ns")
        if not dad_probe and ns.opts.slla is not None:
            self.apply(st.nd.on_solicitation(rcvif.ifindex, src, ns.opts.slla, now), now)
        # §7.2.4: answer; to all-nodes without S for a DAD probe, else unicast with S.
        na_dst, solicited = (ALL_NODES, False) if dad_probe else (src, True)
        # RFC 4429 §3.3: an optimistic address is advertised with Override clear, so
        # that the NA cannot overwrite the cache entry of the address's rightful owner.
        msg = ndp.build_na(target, na_dst, target, router=st.forwarding, solicited=solicited,
                           override=not a.optimistic, tlla=rcvif.mac)
        if a.optimistic:
            st.stats.count("nd", "out_na_optimistic")
        st.stats.count("nd", "out_na")
        mac = multicast_mac(na_dst) if dad_probe else (ns.opts.slla or None)
        st.ip6.send_raw(rcvif.ifindex, mac, target, na_dst, PROTO_ICMPV6, msg, now)

    # -- Neighbor Advertisement ----------------------------------------------------

    def _na(self, rcvif: Interface, f: Frame, na: ndp.Na, now: int) -> None:
        st = self.st
        target = na.target
        if is_multicast6(target):
            st.stats.drop(Drop.ND_BAD_TARGET)
            return
        if is_multicast6(f.dst) and na.solicited:
            st.stats.drop(Drop.ND_BAD_DEST)           # §7.1.2
            return
        a = rcvif.find6(target)
        if a is not None:
            if a.in_dad:                                  # tentative or optimistic
                self.dad_failed(rcvif, a, f"neighbor advertisement from {fmt(f.src)}", now)
            else:
                st.stats.count("nd", "in_na_for_own_address")
                st.note("warning", f"{rcvif.name}: {fmt(f.src)} advertises our address {fmt(target)}")
            return
        st.stats.count("nd", "in_na")
        entry = st.nd.get(rcvif.ifindex, target)
        was_router = entry.is_router if entry is not None else False
        if entry is None:
            st.stats.drop(Drop.ND_UNSOLICITED_IGNORED)
            return
        if not na.override and na.opts.tlla is not None and entry.lladdr is not None \
                and na.opts.tlla != entry.lladdr:
            st.stats.count("nd", "in_na_no_override")
        self.apply(st.nd.on_advertisement(rcvif.ifindex, target, na.opts.tlla, now,
                                          solicited=na.solicited, override=na.override,
                                          is_router=na.router), now)
        # §7.2.5: IsRouter TRUE -> FALSE removes the router from the Default Router List.
        if not na.router and (was_router or self.rdisc.is_router(rcvif.ifindex, target)):
            self.router_lost(rcvif, target, now)
        elif self.rdisc.is_router(rcvif.ifindex, target):
            self.rdisc.rank_routers(now)                  # §6.3.6: its reachability changed

    def apply(self, actions: list[Action], now: int) -> None:
        """Turn neighbor-cache instructions into frames (and trace lines)."""
        if actions:
            self.st._nd_actions(actions, now)
            self.st._trace_nd()

    # -- sending -------------------------------------------------------------------

    def send_ns(self, ifindex: int, target: bytes, lladdr: bytes | None, src_hint: bytes | None,
                now: int) -> None:
        """§7.2.2: NS for target; source = the prompting packet's source when it is
        an address of this interface, else its link-local, else any of its addresses.
        RFC 4429 §3.3: a non-optimistic candidate is preferred (as Linux does); an NS
        from an optimistic address carries no SLLAO, so that it cannot overwrite the
        neighbors' cache entry for the address's rightful owner."""
        st = self.st
        iface = st.interfaces.get(ifindex)
        if iface is None:
            return
        picked: Addr6 | None = None
        if src_hint is not None:
            a = iface.find6(src_hint)
            if a is not None and a.usable:
                picked = a
        if picked is None or picked.optimistic:
            ll = iface.link_local()
            if ll is not None and (picked is None or not ll.optimistic):
                picked = ll
        if picked is None or picked.optimistic:
            usable = [a for a in iface.addrs6 if a.usable]
            settled = [a for a in usable if not a.optimistic]
            if settled:
                picked = settled[0]
            elif picked is None:
                if not usable:
                    st.stats.drop(Drop.NO_SOURCE)
                    return
                picked = usable[0]
        src = picked.addr
        slla: bytes | None = iface.mac
        if picked.optimistic:
            slla = None
            st.stats.count("nd", "out_ns_optimistic")
        dst = target if lladdr is not None else solicited_node(target)
        msg = ndp.build_ns(src, dst, target, slla=slla)
        st.stats.count("nd", "out_ns")
        st.ip6.send_raw(ifindex, lladdr if lladdr is not None else multicast_mac(dst), src, dst,
                        PROTO_ICMPV6, msg, now)

    # -- DAD (RFC 4862 §5.4) ---------------------------------------------------------

    def start_dad(self, iface: Interface, a: Addr6, now: int) -> None:
        # RFC 4429 §3.1 (config optimistic_dad): usable at once, DAD still runs; a
        # duplicate found makes it DUPLICATED like a tentative one (§3.3).
        a.state = AddrState.OPTIMISTIC if iface.nd.optimistic_dad else AddrState.TENTATIVE
        a.dad_probes_left = iface.nd.dup_addr_detect_transmits
        a.dad_nonce = self.st.rng.getrandbits(48).to_bytes(6, "big")
        # §5.4.2: the groups were joined when the address was added; delay the
        # first probe by a random 0-100 ms (RFC: up to MAX_RTR_SOLICITATION_DELAY;
        # shorter here so a test bed comes up quickly) to avoid synchronized bursts.
        a.dad_at = now + int(self.st.rng.uniform(0, 0.1) * MAX_RTR_SOLICITATION_DELAY)
        self.dad.append((iface, a))

    def dad_failed(self, iface: Interface, a: Addr6, why: str, now: int) -> None:
        a.state = AddrState.DUPLICATED
        a.dad_at = None
        self.st.stats.count("nd", "dad_duplicates")
        self.st.routes.bump()
        self.st.note("error", f"{iface.name}: duplicate address {fmt(a.addr)} detected ({why})")
        if a.origin is Origin.LINK:
            # §5.4.5: a duplicate MAC-derived link-local disables IPv6 on the link.
            iface.ipv6_disabled = True
            self.st.note("error", f"{iface.name}: IPv6 disabled: duplicate link-local address")

    def _dad_tick(self, iface: Interface, a: Addr6, now: int) -> None:
        if a.dad_probes_left > 0:
            a.dad_probes_left -= 1
            msg = ndp.build_ns(UNSPECIFIED6, solicited_node(a.addr), a.addr, nonce=a.dad_nonce)
            dst = solicited_node(a.addr)
            self.st.stats.count("nd", "out_dad_ns")
            self.st.ip6.send_raw(iface.ifindex, multicast_mac(dst), UNSPECIFIED6, dst, PROTO_ICMPV6,
                                 msg, now)
            a.dad_at = now + iface.nd.retrans_timer
            return
        a.dad_at = None
        # RFC 4862 §5.5.4: an address whose preferred lifetime ran out meanwhile
        # is deprecated as soon as it is usable.
        expired = a.preferred_until is not None and a.preferred_until <= now
        a.state = AddrState.DEPRECATED if expired else AddrState.PREFERRED
        self.st.routes.bump()
        self.st.note("info", f"{iface.name}: address {fmt(a.addr)}/{a.plen} passed DAD")
        if a.link_local and iface.link_local() is a:
            self.mld.link_local_ready(iface, now)   # RFC 3590 §4: report again from it

    def address_removed(self, iface: Interface, a: Addr6, now: int) -> None:
        self.dad = [(i, x) for i, x in self.dad if x is not a]
        self.leave(iface, solicited_node(a.addr), now)

    # -- groups (MLD hooks) -----------------------------------------------------------

    def join(self, iface: Interface, group: bytes, now: int) -> None:
        if iface.join6(group):
            self.mld.join(iface, group, now)      # RFC 3810 §6.1: report the new state

    def leave(self, iface: Interface, group: bytes, now: int) -> None:
        if iface.leave6(group):
            self.mld.leave(iface, group, now)

    def handle_mld(self, rcvif: Interface, f: Frame, now: int) -> None:
        self.mld.handle(rcvif, f, now)

    # -- router discovery hooks ----------------------------------------------------------

    def interface_up(self, iface: Interface, now: int) -> None:
        self.rdisc.interface_up(iface, now)

    def link_up(self, iface: Interface, now: int) -> None:
        """The link came back (set_link up): an interface (re)initialization.
        RFC 4862 §5.4: every address does DAD again (a duplicated one gets a new
        chance, as after ``ip link set up``); RFC 4861 §6.3.7: solicit routers."""
        iface.ipv6_disabled = False
        if iface.nd.dup_addr_detect_transmits > 0:
            self.dad = [(i, x) for i, x in self.dad if x.in_dad]
            for a in iface.addrs6:
                if all(x is not a for _, x in self.dad):
                    self.start_dad(iface, a, now)
            self.st.routes.bump()
        self.interface_up(iface, now)

    def handle_ra(self, rcvif: Interface, f: Frame, now: int) -> None:
        self.rdisc.handle_ra(rcvif, f, now)

    def handle_redirect(self, rcvif: Interface, f: Frame, now: int) -> None:
        self.rdisc.handle_redirect(rcvif, f, now)

    def router_lost(self, iface: Interface, addr: bytes, now: int) -> None:
        self.rdisc.router_lost(iface, addr, now)

    # -- timers -------------------------------------------------------------------------

    def poll_at(self) -> int | None:
        best = self.rdisc.poll_at()         # asked after every batch of frames: no lists
        t = self.mld.poll_at()
        if t is not None and (best is None or t < best):
            best = t
        for _, a in self.dad:
            t = a.dad_at
            if t is not None and (best is None or t < best):
                best = t
        return best

    def poll(self, now: int) -> None:
        if self.dad:                        # polled several times per TCP connection: no lists
            for iface, a in list(self.dad):
                if a.dad_at is not None and a.dad_at <= now and a.in_dad:
                    self._dad_tick(iface, a, now)
            self.dad = [(i, a) for i, a in self.dad if a.in_dad]
        self.rdisc.poll(now)
        self.mld.poll(now)

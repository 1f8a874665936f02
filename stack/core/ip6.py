"""IPv6 input, output and forwarding (RFC 8200, RFC 4007 §9, RFC 4291 §2.5).

Input order (ip6_input): loopback/multicast source checks → source address
validation (skipped for packets carrying the ``looped`` mark, whatever the
receive interface) → is the destination ours in the receive interface's zone →
extension headers (hop-by-hop options, routing, fragments) → upper layer.
Looped packets arrive with ``origifp`` as their receive interface, so zone
checks use origifp for both source and destination.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stack.core.flows import FORWARD, FlowContext
from stack.core.interface import Interface, Kind
from stack.core.ipservice import TRACED, OutRoute, RouteError, max_l4_len
from stack.core.reasm import Reassembler
from stack.core.stats import Drop
from stack.wire.addr import (
    LOOPBACK6,
    UNSPECIFIED6,
    is_link_local6,
    is_multicast6,
    multicast_scope,
    needs_zone,
)
from stack.wire.frame_types import (
    ETHERTYPE_IPV6,
    PROTO_DSTOPTS,
    PROTO_HOPOPTS,
    PROTO_ICMPV6,
    PROTO_NONE,
    PROTO_ROUTING,
    PROTO_TCP,
    PROTO_UDP,
    Frame,
)
from stack.wire.gso import GsoChain, OffloadBytes, gso_segment, joined, offload_of, tcp_gso
from stack.wire.ipv6 import build_ipv6, fragment_ipv6
from stack.wire.ndp import build_redirect

if TYPE_CHECKING:
    from stack.core.stack import Stack

ND_TYPES = frozenset((133, 134, 135, 136, 137))
_BYTE = tuple(bytes((i,)) for i in range(256))     # the hop limit byte, per packet
# RFC 4443 §3.4 Parameter Problem codes
PP_ERRONEOUS_FIELD = 0
PP_UNRECOGNIZED_NH = 1
PP_UNRECOGNIZED_OPTION = 2

MAX_L4_LEN6 = max_l4_len(bytes(16))


class Ip6:
    def __init__(self, stack: Stack) -> None:
        self.st = stack
        self.reasm = Reassembler(stack, family=6)
        self.frag_ident = stack.rng.getrandbits(32)
        self.send_redirects = True      # RFC 4861 §8.2 (router mode only)
        self.c = stack.stats.of("ipv6")  # bumped directly on the per-packet paths

    def poll(self, now: int) -> None:
        self.reasm.poll(now)

    def poll_at(self) -> int | None:
        return self.reasm.poll_at()

    # -- input ----------------------------------------------------------------

    def handle(self, rcvif: Interface, f: Frame, now: int, *, looped: bool) -> None:
        st = self.st
        self.c["in_receives"] += 1
        verdict = self._input(rcvif, f, now, looped)
        if st.tracer is not None and verdict != TRACED:
            self._trace_input(rcvif, f, looped, verdict)

    def _trace_input(self, rcvif: Interface, f: Frame, looped: bool, verdict: str) -> None:
        st = self.st
        assert st.tracer is not None
        st.tracer(f"ip6_input rcvif={rcvif.name} looped={int(looped)} "
                  f"src={st.fmt_zoned(f.src, rcvif.ifindex)} dst={st.fmt_zoned(f.dst, rcvif.ifindex)} "
                  f"proto={_proto_name(f.proto)} verdict={verdict}")

    def _drop(self, reason: str) -> str:
        self.st.stats.drop(reason)
        return f"drop:{reason}"

    def _input(self, rcvif: Interface, f: Frame, now: int, looped: bool) -> str:
        st = self.st
        src, dst = f.src, f.dst
        ifx = rcvif.ifindex
        if rcvif.ipv6_disabled:
            return self._drop(Drop.IFACE_DOWN)
        # RFC 4291 §2.5.3: ::1 must never arrive from a link.
        if not looped and (src == LOOPBACK6 or dst == LOOPBACK6):
            return self._drop(Drop.IPV6_LOOPBACK_FROM_WIRE)
        if src[0] == 0xFF:                          # is_multicast6, inlined (per packet)
            return self._drop(Drop.IPV6_BAD_SOURCE)
        nd_msg = f.proto == PROTO_ICMPV6 and f.icmp_type in ND_TYPES
        # Source address validation (FreeBSD D32915 as fixed by D35732): decided by
        # the looped mark, never by the receive interface's type. ND is exempt: DAD
        # must see a duplicate's advertisements.
        if not looped and not nd_msg and src != UNSPECIFIED6 and st.is_local_address(src, ifx):
            return self._drop(Drop.IPV6_SPOOFED_OWN_SOURCE)     # (the zone counts for link-local only)
        if dst[0] == 0xFF:
            if multicast_scope(dst) == 1 and not looped:
                return self._drop(Drop.IPV6_BAD_SCOPE)   # interface-local: only via loopback
            if not rcvif.accepts6(dst):
                return self._drop(Drop.IPV6_NOT_FOR_US)
        else:
            owner = st.owner6(dst, ifx)
            if owner is None:
                if looped:
                    return self._drop(Drop.IPV6_NOT_FOR_US)
                return self.forward(rcvif, f, now)
            if not owner[1].usable:
                return self._drop(Drop.IPV6_TENTATIVE_DST)  # RFC 4862 §5.4
        if f.ext or f.is_fragment:
            return self._local(rcvif, f, now, looped)
        return self.deliver(rcvif, f, now, looped)      # what _local does for a bare packet

    def _local(self, rcvif: Interface, f: Frame, now: int, looped: bool) -> str:
        for typ, off, length in f.ext:
            if typ in (PROTO_HOPOPTS, PROTO_DSTOPTS):
                bad = self._options(rcvif, f, off, length, now)
                if bad is not None:
                    return bad
            elif typ == PROTO_ROUTING:
                segments_left = f.buf[off + 3]
                if segments_left:
                    # RFC 8200 §4.4: we route no source-routed packets (RH0 is
                    # deprecated, RFC 5095); Parameter Problem at Segments Left.
                    self.st.icmp6.error(f, 4, PP_ERRONEOUS_FIELD, off + 3 - f.l3_off, rcvif, now)
                    return self._drop(Drop.IPV6_ROUTING_HEADER)
        if f.is_fragment:
            whole = self.reasm.add(f, rcvif.ifindex, now)
            if whole is None:
                return "reassembling"
            f, rcvif_index = whole
            rcvif = self.st.interfaces.get(rcvif_index, rcvif)
            if f.proto == PROTO_ICMPV6 and f.icmp_type in ND_TYPES:
                # RFC 6980 §5: ND that came in a Fragment header (atomic too) is ignored.
                return self._drop(Drop.ND_FRAGMENTED)
        return self.deliver(rcvif, f, now, looped)

    def deliver(self, rcvif: Interface, f: Frame, now: int, looped: bool) -> str:
        """Hand a packet for us to its protocol. The trace line is written before the
        protocol runs, so `tapstack trace` shows the input before the output it causes."""
        st = self.st
        proto = f.proto
        if not (proto in (PROTO_ICMPV6, PROTO_UDP, PROTO_NONE) or (proto == PROTO_TCP and st.tcp is not None)):
            # RFC 8200 §4: unrecognized Next Header -> Parameter Problem code 1,
            # pointing at the field that named it.
            st.icmp6.error(f, 4, PP_UNRECOGNIZED_NH, _nh_pointer(f), rcvif, now)
            return self._drop(Drop.IPV6_UNKNOWN_PROTO)
        self.c["in_delivers"] += 1
        if st.tracer is not None:
            self._trace_input(rcvif, f, looped, "accept")
        if proto == PROTO_ICMPV6:
            st.icmp6.handle(rcvif, f, now, looped)
        elif proto == PROTO_UDP:
            st.udp.handle(f, rcvif.ifindex, now)
        elif proto == PROTO_TCP:
            st.tcp.handle(f, rcvif.ifindex, now)
        else:
            st.stats.count("ipv6", "in_no_next_header")
        return TRACED

    def _options(self, rcvif: Interface, f: Frame, off: int, length: int, now: int) -> str | None:
        """RFC 8200 §4.2: act on unrecognized options by their two high bits."""
        buf = f.buf
        i, end = off + 2, off + length
        while i < end:
            opt = buf[i]
            if opt == 0:       # Pad1
                i += 1
                continue
            if i + 1 >= end:
                return self._drop("parse_ipv6_option_truncated")
            olen = buf[i + 1]
            if opt not in (1, 5):   # PadN, Router Alert: known
                action = opt >> 6
                if action == 1:
                    return self._drop(Drop.IPV6_EXT_UNKNOWN_OPTION)
                if action in (2, 3):
                    # 10: Parameter Problem even to multicast; 11: only if not multicast.
                    if action == 2 or not is_multicast6(f.dst):
                        self.st.icmp6.error(f, 4, PP_UNRECOGNIZED_OPTION, i - f.l3_off, rcvif, now,
                                            allow_multicast=(action == 2))
                    return self._drop(Drop.IPV6_EXT_UNKNOWN_OPTION)
            i += 2 + olen
        return None

    # -- forwarding --------------------------------------------------------------

    def forward(self, rcvif: Interface, f: Frame, now: int) -> str:
        """Router mode (RFC 8200 §3, RFC 4007 §9, RFC 4291 §2.5.6, RFC 4443 §3).

        Order as Linux ``ip6_forward``: hop limit → route (a link-local destination
        is looked up in the arrival link's zone, so it can only go back out there)
        → source scope → MTU → Redirect → decrement and send."""
        st = self.st
        if not st.forwarding:
            return self._drop(Drop.IPV6_NOT_FOR_US)
        src, dst = f.src, f.dst
        # RFC 4291 §2.5.2: the unspecified address is never forwarded (either side).
        if src == UNSPECIFIED6 or dst == UNSPECIFIED6:
            return self._drop(Drop.IPV6_MARTIAN)
        if f.eth_dst[0] & 1:
            return self._drop(Drop.IPV6_NOT_FOR_US)     # a link multicast for someone else
        # RFC 8200 §3 / RFC 4443 §3.3: a hop limit that would reach 0: Time Exceeded.
        if f.hop_limit <= 1:
            st.icmp6.error(f, 3, 0, 0, rcvif, now)
            return self._drop(Drop.IPV6_HOP_LIMIT_EXCEEDED)
        # RFC 4007 §9: the destination's zone comes from the arrival interface.
        dst_zoned = needs_zone(dst)
        dst_zone = rcvif.ifindex if dst_zoned else 0
        r = st.routes.lookup(dst, dst_zone, now)
        out = st.interfaces.get(r.ifindex) if r is not None else None
        if r is None or r.local or out is None or out.kind is Kind.LOOPBACK or not out.up \
                or out.ipv6_disabled:
            st.icmp6.error(f, 1, 0, 0, rcvif, now)     # RFC 4443 §3.1 code 0: no route
            return self._drop(Drop.IPV6_NO_ROUTE)
        # RFC 4007 §9 / RFC 4291 §2.5.6: a link-local source never leaves its link.
        if is_link_local6(src) and r.ifindex != rcvif.ifindex:
            st.icmp6.error(f, 1, 2, 0, rcvif, now)     # code 2: beyond scope of source address
            return self._drop(Drop.IPV6_BEYOND_SCOPE)
        buf, l3 = f.buf, f.l3_off
        off = f.offload                 # set by Stack._receive for a frame read with metadata
        if off is not None and off.gso:
            # A GSO packet from the kernel leaves as segments of gso_size (kept whole for
            # a link with offloads, split in software otherwise): those must fit.
            size = f.l4_off - l3 + (buf[f.l4_off + 12] >> 4) * 4 + off.gso_size
        else:
            size = f.ip_end - l3
        if size > out.mtu:
            # RFC 8200 §5 / RFC 4443 §3.2: routers never fragment; PTB with the MTU.
            st.icmp6.error(f, 2, 0, out.mtu, rcvif, now)
            return self._drop(Drop.IPV6_TOO_BIG)
        nexthop = r.gateway if r.gateway is not None else dst
        if r.ifindex == rcvif.ifindex:
            self._maybe_redirect(rcvif, f, r.gateway, now)
        # the hop limit decremented in the one copy made (no checksum covers it)
        packet = buf[l3:l3 + 7] + _BYTE[f.hop_limit - 1] + buf[l3 + 8:f.ip_end]
        self.c["out_forwarded"] += 1
        if st.tracer is not None:
            nh_zone = r.gw_zone if r.gateway is not None else (r.ifindex if dst_zoned else 0)
            st.tracer(f"ip6_forward rcvif={rcvif.name} ifp={out.name} "
                      f"src={st.fmt_zoned(src, rcvif.ifindex)} dst={st.fmt_zoned(dst, dst_zone)} "
                      f"nexthop={st.fmt_zoned(nexthop, nh_zone)}")
        if st.flow_hints is not None and r.ifindex != rcvif.ifindex:
            # a hint for the runtime's fast path if the next hop is a known neighbor
            st._flow_ctx = FlowContext(6, FORWARD, rcvif.ifindex, src, dst, rcvif.mac, out.mtu, 0)
        if off is not None:
            # the metadata goes with the packet; transmit keeps or resolves it (stack.transmit)
            st.link_output(r.ifindex, nexthop, ETHERTYPE_IPV6, OffloadBytes.make(packet, off.shifted(-14)), now)
        else:
            st.link_output(r.ifindex, nexthop, ETHERTYPE_IPV6, packet, now)
        st._flow_ctx = None
        return "forward"

    def _maybe_redirect(self, rcvif: Interface, f: Frame, gateway: bytes | None, now: int) -> None:
        """RFC 4861 §8.2: the packet goes back out the link it came from, its source
        is a neighbor (link-local, on-link prefix or in the neighbor cache), it is not
        source-routed and its destination is unicast: tell the sender the better first
        hop: the destination itself when on-link, else the router's link-local address
        (a global gateway cannot be named: no Redirect). Source = our link-local
        (§4.5), hop limit 255, rate limited with the ICMPv6 errors (§8.2)."""
        st = self.st
        src, dst = f.src, f.dst
        if not self.send_redirects or is_multicast6(dst):
            return
        if any(typ == PROTO_ROUTING for typ, _o, _n in f.ext):
            return
        target = dst if gateway is None else gateway
        if not is_link_local6(target) and gateway is not None:
            return
        if target == src:
            return
        neighbor = is_link_local6(src) or rcvif.on_link6(src) \
            or st.nd.get(rcvif.ifindex, src) is not None
        ll = rcvif.link_local()
        if not neighbor or ll is None:
            return
        if not st.icmp6.bucket.take(now):
            st.stats.drop(Drop.ICMP_ERROR_RATE_LIMITED)
            return
        entry = st.nd.get(rcvif.ifindex, target)
        tlla = entry.lladdr if entry is not None and entry.lladdr is not None else None
        msg = build_redirect(ll.addr, src, target, dst, tlla, f.ip_packet())
        st.stats.count("icmp6", "out_redirects")
        self.send_raw(rcvif.ifindex, f.eth_src, ll.addr, src, PROTO_ICMPV6, msg, now)

    # -- output ------------------------------------------------------------------

    def output(self, route: OutRoute, proto: int, l4: bytes, now: int, *, cached: bool = False,
               tclass: int = 0, hop_limit: int | None = None, gso: int = 0) -> None:
        st = self.st
        if len(l4) > MAX_L4_LEN6:
            st.stats.drop(Drop.IPV6_OUT_TOO_BIG)   # sockets and ping refuse these with EMSGSIZE first
            return
        if hop_limit is None:
            if route.dst[0] == 0xFF:         # is_multicast6
                hop_limit = 1
            else:
                hop_limit = st.interfaces[route.origifp].nd.cur_hop_limit
        packet = build_ipv6(route.src, route.dst, proto, l4, hop_limit, tclass)
        if gso and len(packet) > route.mtu:
            if isinstance(packet, GsoChain):
                packet.offload = tcp_gso(packet, gso)       # TSO: see Stack.tso_max
            else:
                packet = OffloadBytes.make(packet, tcp_gso(packet, gso))
        elif isinstance(packet, GsoChain):
            packet = packet.join()          # fits the MTU after all: plain bytes
        self.c["out_requests"] += 1
        if st.tracer is not None:
            st.tracer(f"ip6_output ifp={st.ifname(route.ifp)} origifp={st.ifname(route.origifp)} "
                      f"src={st.fmt_zoned(route.src, route.src_zone)} "
                      f"dst={st.fmt_zoned(route.dst, route.zone)} proto={_proto_name(proto)} "
                      f"route={'cached' if cached else 'lookup'} gen={route.gen}")
        self.send_packet(route, packet, now)

    def send_packet(self, route: OutRoute, packet: bytes, now: int) -> None:
        """Put a finished IPv6 packet on its way: loopback queue or link."""
        st = self.st
        if route.local:
            st.loop(route.origifp, ETHERTYPE_IPV6, packet)
            return
        # A cached route keeps the MTU of its time; a Packet Too Big learned since
        # (RFC 8201 §4) applies at once.
        # route.mtu came from path_mtu; with no learned path MTU at all it stands as is
        mtu = st.path_mtu(route.dst, route.mtu, now) if st.pmtu else route.mtu
        if len(packet) > mtu and type(packet) is not bytes:
            off = offload_of(packet)
            if off is not None and off.gso:
                if off.hdr_len + off.gso_size <= mtu:
                    st.link_output(route.ifp, route.nexthop, ETHERTYPE_IPV6, packet, now, route.src)
                    return
                # the path MTU fell below the segments TCP sized: split, then fragment
                for piece in gso_segment(joined(packet), off.gso_size):
                    self.send_packet(route, piece, now)
                return
        if len(packet) > mtu:
            # RFC 8200 §4.5: the source fragments.
            self.frag_ident = (self.frag_ident + 1) & 0xFFFFFFFF
            for frag in fragment_ipv6(packet, mtu, self.frag_ident):
                st.link_output(route.ifp, route.nexthop, ETHERTYPE_IPV6, frag, now, route.src)
            st.stats.count("ipv6", "out_fragmented")
            return
        st.link_output(route.ifp, route.nexthop, ETHERTYPE_IPV6, packet, now, route.src)

    def send_raw(self, ifindex: int, dst_mac: bytes | None, src: bytes, dst: bytes, proto: int,
                 l4: bytes, now: int, *, hop_limit: int = 255, router_alert: bool = False) -> None:
        """Send on one link without routing (ND, MLD, DAD): to dst_mac, or the
        multicast MAC of dst, or through neighbor resolution of dst."""
        st = self.st
        iface = st.interfaces.get(ifindex)
        if iface is None or iface.loopback:
            return
        packet = build_ipv6(src, dst, proto, l4, hop_limit, 0, router_alert=router_alert)
        if dst_mac is not None:
            st.transmit(iface, dst_mac, ETHERTYPE_IPV6, packet)
        else:
            st.link_output(ifindex, dst, ETHERTYPE_IPV6, packet, now, src)

    def route_back(self, dst: bytes, zone: int, src: bytes | None, now: int) -> OutRoute | None:
        try:
            return self.st.route_output(dst, zone, src, now)
        except RouteError:
            return None


def _proto_name(proto: int) -> str:
    names = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 59: "none", 0: "hopopt", 43: "routing",
             44: "frag", 60: "dstopts"}
    return names.get(proto, str(proto))


def _nh_pointer(f: Frame) -> int:
    """Offset (from the IPv6 header) of the Next Header field naming f.proto."""
    if not f.ext:
        return 6
    _typ, off, _ = f.ext[-1]
    return off - f.l3_off

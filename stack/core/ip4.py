"""IPv4 input, output, forwarding, ARP and ICMPv4 (RFC 791, 792, 826, 1122, 1812).

Input order (ip_input): 127/8 from a link → bad sources → source address
validation (skipped for packets carrying the ``looped`` mark, whatever the
receive interface) → options (source routes refused) → ours? (weak host: any of
our addresses, the receive link's broadcasts, 127/8 when looped) → reassembly →
upper layer; not ours → ``forward`` (router mode) or a counted drop.

v4-via-v6 (RFC 5549/8950): a route's gateway may be an IPv6 address; the
packet then goes through ND for that address and leaves with ethertype 0x0800
(``Stack.link_output`` picks ND or ARP by the next hop's family), for local
output and for forwarding alike.

ICMPv4 errors take their source by the rule of the v4-via-v6 draft
(draft-ietf-intarea-v4-via-v6 §4) and Linux ``__icmp_send``: the invoking
packet's destination when it is ours, else the normal source selection toward
the invoking packet's source (route ``src``, egress interface, loopback, any
interface) and 192.0.0.8 (RFC 7600) when the stack has no IPv4 address at all.

Path MTU (RFC 1191): TCP leaves with DF set; a Fragmentation Needed quoting a
packet of ours lowers the path MTU (floor MIN_PMTU4, below which DF is cleared,
as Linux) and reaches the TCP connection, which shrinks its MSS. Incoming
Redirects are honoured as a host (RFC 1122 §3.2.2.2, ``_redirect_in``) and
ignored in router mode.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.core.clock import s
from stack.core.events import EchoReply, PingError
from stack.core.flows import FORWARD, FlowContext
from stack.core.icmp6 import TokenBucket
from stack.core.interface import Interface
from stack.core.ipservice import TRACED, OutRoute, RouteError, max_l4_len, message_too_long
from stack.core.nd import Pending
from stack.core.reasm import Reassembler
from stack.core.routes import PROTO_REDIRECT
from stack.core.stats import Drop
from stack.wire import arp as warp
from stack.wire import icmpv4 as w
from stack.wire.addr import (
    BROADCAST4,
    DUMMY4,
    broadcast4,
    fmt,
    is_loopback4,
    is_multicast4,
    is_unspecified,
    needs_zone,
    prefix_match,
)
from stack.wire.checksum import checksum_adjust_word
from stack.wire.errors import ParseError
from stack.wire.frame_types import ETHERTYPE_ARP, ETHERTYPE_IPV4, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Frame
from stack.wire.gso import GsoChain, OffloadBytes, gso_segment, offload_of, tcp_gso
from stack.wire.ipv4 import OPT_LSRR, OPT_SSRR, build_ipv4, fragment_ipv4, iter_options

if TYPE_CHECKING:
    from stack.core.stack import Stack

ERROR_TEXT = {
    (3, 0): "Destination Net Unreachable", (3, 1): "Destination Host Unreachable",
    (3, 2): "Destination Protocol Unreachable", (3, 3): "Destination Port Unreachable",
    (3, 4): "Frag needed", (3, 13): "Communication administratively prohibited",
    (11, 0): "Time to live exceeded", (11, 1): "Frag reassembly time exceeded",
    (12, 0): "Parameter problem",
}
ERRNO = {(3, 0): errno.ENETUNREACH, (3, 1): errno.EHOSTUNREACH, (3, 2): errno.ENOPROTOOPT,
         (3, 3): errno.ECONNREFUSED, (3, 4): errno.EMSGSIZE, (11, 0): errno.EHOSTUNREACH}
# RFC 792 / RFC 1812 §4.3.2.7: the informational types; an error is never sent
# about any other ICMP message (errors, and types we do not know, as Linux does).
INFORMATIONAL = frozenset((w.ECHO_REPLY, w.ECHO_REQUEST, 9, 10, 13, 14, 15, 16, 17, 18, 42, 43))
DEFAULT_TTL = 64    # RFC 1700 / RFC 1122 §3.2.1.7
# Linux ip_rt_min_pmtu (512 + 20 + 20): a Fragmentation Needed below it is taken as
# this value and the path "locked": packets to it leave with DF clear and are
# fragmented (Linux ip_dont_fragment), so TCP, whose MSS stops at 536, never stalls.
MIN_PMTU4 = 552
# Host Redirects (RFC 1122 §3.2.2.2): /32 routes with Linux's exception lifetime
# (ip_rt_gc_timeout, 300 s), at most MAX_REDIRECTS4 of them (oldest evicted).
REDIRECT4_LIFETIME = s(300)
MAX_REDIRECTS4 = 1024
# Drop reasons of incoming Redirects (strings: counted like stats.Drop members).
REDIRECT_IGNORED = "icmp_redirect_ignored"        # router mode, or a configured host route
REDIRECT_BAD = "icmp_redirect_bad"                # code, length, quoted header, destination
REDIRECT_BAD_GATEWAY = "icmp_redirect_bad_gateway"  # not a unicast neighbor on that link
REDIRECT_NOT_FROM_GATEWAY = "icmp_redirect_not_from_gateway"

MAX_L4_LEN4 = max_l4_len(bytes(4))


def is_class_e(addr: bytes) -> bool:
    """240.0.0.0/4 (reserved, RFC 1112 §4); 255.255.255.255 is tested on its own."""
    return addr[0] >= 240


def is_link_local4(addr: bytes) -> bool:
    """169.254/16 (RFC 3927)."""
    return addr[0] == 169 and addr[1] == 254



class Ip4:
    def __init__(self, stack: Stack) -> None:
        self.st = stack
        self.reasm = Reassembler(stack, family=4)
        self.ident = stack.rng.getrandbits(16)
        self.bucket = TokenBucket(stack.limits.icmp_error_rate, stack.limits.icmp_error_burst)
        self.pings: dict[int, dict[int, int]] = {}
        self.send_redirects = True      # RFC 1812 §5.2.7.2 (Linux send_redirects=1)
        self.max_redirects = MAX_REDIRECTS4
        self.redirects: dict[bytes, int] = {}     # redirected destination -> expires_at

    def poll(self, now: int) -> None:
        self.reasm.poll(now)
        # The routes themselves expire in the table; forget them here too (same
        # lifetime for all, refreshed ones re-inserted: the first expires first).
        while self.redirects:
            dest, expires_at = next(iter(self.redirects.items()))
            if expires_at > now:
                break
            del self.redirects[dest]
            self.st.routes.remove(dest, 32, proto=PROTO_REDIRECT)

    def poll_at(self) -> int | None:
        return self.reasm.poll_at()

    def is_broadcast(self, iface: Interface, addr: bytes) -> bool:
        """255.255.255.255 or a directed broadcast of one of iface's subnets."""
        if addr == BROADCAST4:
            return True
        # several times per packet: a loop, not any() over a generator; broadcast4 is memoized
        for a in iface.addrs4:  # noqa: SIM110
            if a.plen < 31 and broadcast4(a.addr, a.plen) == addr:
                return True
        return False

    def is_any_broadcast(self, addr: bytes) -> bool:
        return any(self.is_broadcast(iface, addr) for iface in self.st.interfaces.values())

    def _ours(self, iface: Interface, dst: bytes, looped: bool) -> bool:
        """Weak host model (RFC 1122 §3.3.4.2): any of our addresses, plus the
        broadcasts of the receive link; all of 127/8 for looped packets."""
        if looped and is_loopback4(dst):
            return True
        return self.st.is_local_address(dst, 0) or self.is_broadcast(iface, dst)

    # -- input --------------------------------------------------------------------

    def handle(self, rcvif: Interface, f: Frame, now: int, *, looped: bool) -> None:
        st = self.st
        st.stats.count("ipv4", "in_receives")
        verdict = self._input(rcvif, f, now, looped)
        if st.tracer is not None and verdict != TRACED:
            self._trace_input(rcvif, f, looped, verdict)

    def _trace_input(self, rcvif: Interface, f: Frame, looped: bool, verdict: str) -> None:
        assert self.st.tracer is not None
        self.st.tracer(f"ip_input rcvif={rcvif.name} looped={int(looped)} src={fmt(f.src)} "
                       f"dst={fmt(f.dst)} proto={_proto(f.proto)} verdict={verdict}")

    def _drop(self, reason: str) -> str:
        self.st.stats.drop(reason)
        return f"drop:{reason}"

    def _input(self, rcvif: Interface, f: Frame, now: int, looped: bool) -> str:
        st = self.st
        src, dst = f.src, f.dst
        # RFC 1122 §3.2.1.3(g), RFC 1812 §5.3.7: 127/8 never appears on a link. Looped
        # packets are recognised by their mark, never by the receive interface's type.
        if not looped and (is_loopback4(src) or is_loopback4(dst)):
            return self._drop(Drop.IPV4_LOOPBACK_FROM_WIRE)
        # RFC 1122 §3.2.1.3: a source is never a broadcast, multicast or class E address.
        if is_multicast4(src) or src == BROADCAST4 or is_class_e(src) \
                or (not looped and self.is_broadcast(rcvif, src)):
            return self._drop(Drop.IPV4_BAD_SOURCE)
        # Source address validation (as FreeBSD after D35732): decided by the mark.
        if not looped and not is_unspecified(src) and st.is_local_address(src, 0):
            return self._drop(Drop.IPV4_SPOOFED_OWN_SOURCE)
        if f.l4_off - f.l3_off > 20:
            bad = self._options(rcvif, f, now)
            if bad is not None:
                return bad
        if not self._ours(rcvif, dst, looped):
            if looped or is_multicast4(dst):
                return self._drop(Drop.IPV4_NOT_FOR_US)   # no multicast routing, no IGMP
            return self.forward(rcvif, f, now)
        if f.is_fragment:
            whole = self.reasm.add(f, rcvif.ifindex, now)
            if whole is None:
                return "reassembling"
            f = whole[0]
        return self.deliver(rcvif, f, now, looped)

    def _options(self, rcvif: Interface, f: Frame, now: int) -> str | None:
        """RFC 791 §3.1 options are skipped, with two exceptions: a malformed option
        list gets Parameter Problem (RFC 1122 §3.2.1.8, RFC 1812 §5.2.5), and source
        routes are refused (RFC 7126 §4.3/§4.4; Linux accept_source_route=0)."""
        start = f.l3_off + 20
        try:
            opts = iter_options(f.buf, start, f.l4_off)
        except ParseError:
            self.icmp_error(f, w.PARAM_PROBLEM, 0, rcvif, now, rest=bytes((20, 0, 0, 0)))
            return self._drop(Drop.IPV4_BAD_OPTION)
        if any(t in (OPT_LSRR, OPT_SSRR) for t, _o, _n in opts):
            return self._drop(Drop.IPV4_SOURCE_ROUTE)
        return None

    def deliver(self, rcvif: Interface, f: Frame, now: int, looped: bool) -> str:
        """Hand a packet for us to its protocol. The trace line is written before the
        protocol runs, so `tapstack trace` shows the input before the output it causes."""
        st = self.st
        proto = f.proto
        if not (proto in (PROTO_ICMP, PROTO_UDP) or (proto == PROTO_TCP and st.tcp is not None)):
            self.icmp_error(f, w.DEST_UNREACH, w.UNREACH_PROTOCOL, rcvif, now)  # RFC 1122 §3.2.2.1
            return self._drop(Drop.IPV4_UNKNOWN_PROTO)
        st.stats.count("ipv4", "in_delivers")
        if st.tracer is not None:
            self._trace_input(rcvif, f, looped, "accept")
        if proto == PROTO_ICMP:
            self._icmp(rcvif, f, now)
        elif proto == PROTO_UDP:
            st.udp.handle(f, rcvif.ifindex, now)
        else:
            st.tcp.handle(f, rcvif.ifindex, now)
        return TRACED

    # -- forwarding ------------------------------------------------------------------

    def forward(self, rcvif: Interface, f: Frame, now: int) -> str:
        """Router mode, RFC 1812 §5.2/§5.3: validate, TTL, route (any next-hop family:
        an IPv6 next hop is resolved by ND, RFC 8950), MTU, redirect, send."""
        st = self.st
        if not st.forwarding:
            return self._drop(Drop.IPV4_NOT_FOR_US)
        src, dst = f.src, f.dst
        # RFC 1812 §5.3.4: not a link-layer broadcast/multicast (we route no multicast).
        if f.eth_dst[0] & 1:
            return self._drop(Drop.IPV4_NOT_FOR_US)
        # RFC 1812 §5.3.7 martians: 0/8 source or destination, class E destination;
        # RFC 3927 §2.7: 169.254/16 never crosses a router.
        if src[0] == 0 or dst[0] == 0 or is_class_e(dst) or is_link_local4(src) \
                or is_link_local4(dst):
            return self._drop(Drop.IPV4_MARTIAN)
        # RFC 1812 §5.3.1: TTL 1 (or 0) cannot be forwarded: Time Exceeded.
        if f.hop_limit <= 1:
            self.icmp_error(f, w.TIME_EXCEEDED, w.TIME_EXCEEDED_TTL, rcvif, now)
            return self._drop(Drop.IPV4_TTL_EXCEEDED)
        r = st.routes.lookup(dst, 0, now)
        out = st.interfaces.get(r.ifindex) if r is not None else None
        if r is None or r.local or out is None or out.loopback or not out.up:
            # RFC 1812 §5.2.7.1: Destination Unreachable, net unreachable (code 0).
            self.icmp_error(f, w.DEST_UNREACH, w.UNREACH_NET, rcvif, now)
            return self._drop(Drop.IPV4_NO_ROUTE)
        nexthop = r.gateway if r.gateway is not None else dst
        # RFC 2644: directed broadcasts are not forwarded by default.
        if r.gateway is None and self.is_broadcast(out, dst):
            return self._drop(Drop.IPV4_DIRECTED_BROADCAST)
        buf, l3 = f.buf, f.l3_off
        mtu = out.mtu
        off = f.offload                 # set by Stack._receive for a frame read with metadata
        if off is not None and off.gso:
            # A GSO packet from the kernel leaves as segments of gso_size (kept whole for
            # a link with offloads, split in software otherwise): those must fit.
            size = f.l4_off - l3 + (buf[f.l4_off + 12] >> 4) * 4 + off.gso_size
        else:
            size = f.ip_end - l3
        if size > mtu and f.df:
            # RFC 1812 §5.2.7.1 / RFC 1191 §4: code 4 with the next-hop MTU.
            self.icmp_error(f, w.DEST_UNREACH, w.UNREACH_FRAG_NEEDED, rcvif, now, mtu=mtu)
            return self._drop(Drop.IPV4_NEEDS_FRAG)
        # RFC 1812 §5.3.1: decrement TTL; RFC 1624 eqn. 3 updates the header checksum
        # for the changed TTL/Protocol word.
        # m' = m - 0x100; one copy made.
        ttl, proto = buf[l3 + 8], buf[l3 + 9]
        m = (ttl << 8) | proto
        csum = checksum_adjust_word((buf[l3 + 10] << 8) | buf[l3 + 11], m, m - 0x100)
        packet = buf[l3:l3 + 8] + bytes((ttl - 1, proto, csum >> 8, csum & 0xFF)) + buf[l3 + 12:f.ip_end]
        if r.ifindex == rcvif.ifindex and len(nexthop) == 4:
            self._maybe_redirect(rcvif, f, nexthop, now)
        st.stats.count("ipv4", "out_forwarded")
        if st.tracer is not None:
            st.tracer(f"ip_forward rcvif={rcvif.name} ifp={out.name} src={fmt(src)} dst={fmt(dst)} "
                      f"nexthop={st.fmt_zoned(nexthop, r.gw_zone)}")
        if off is not None and size <= mtu:
            if st.flow_hints is not None and r.ifindex != rcvif.ifindex:
                st._flow_ctx = FlowContext(4, FORWARD, rcvif.ifindex, src, dst, rcvif.mac, mtu, 0)
            # the metadata goes with the packet; transmit keeps or resolves it (stack.transmit)
            st.link_output(r.ifindex, nexthop, ETHERTYPE_IPV4, OffloadBytes.make(packet, off.shifted(-14)), now)
            st._flow_ctx = None
            return "forward"
        if len(packet) <= mtu:
            if st.flow_hints is not None and r.ifindex != rcvif.ifindex:
                # a hint for the runtime's fast path if the next hop is a known neighbor
                st._flow_ctx = FlowContext(4, FORWARD, rcvif.ifindex, src, dst, rcvif.mac, mtu, 0)
            st.link_output(r.ifindex, nexthop, ETHERTYPE_IPV4, packet, now)
            st._flow_ctx = None
            return "forward"
        # RFC 1812 §5.2.6 / RFC 791 §3.2: DF clear, fragment (options copied per rule).
        if off is not None and off.gso:
            try:
                pieces = [p for seg in gso_segment(packet, off.gso_size) for p in fragment_ipv4(seg, mtu)]
            except ParseError as e:
                return self._drop("offload_" + e.reason)
            st.stats.count("ipv4", "out_frag_creates", len(pieces))
            for p in pieces:
                st.link_output(r.ifindex, nexthop, ETHERTYPE_IPV4, p, now)
            return "forward"
        if f.frag_off + len(packet) - (f.l4_off - f.l3_off) > 0xFFFF:
            # A fragment whose data lies past 65535 (as reassembly refuses it): pieces
            # after the first would need offsets no header can carry.
            return self._drop(Drop.FRAG_BAD)
        pieces = fragment_ipv4(packet, mtu)
        st.stats.count("ipv4", "out_frag_creates", len(pieces))
        for p in pieces:
            st.link_output(r.ifindex, nexthop, ETHERTYPE_IPV4, p, now)
        return "forward"

    def _maybe_redirect(self, rcvif: Interface, f: Frame, nexthop: bytes, now: int) -> None:
        """RFC 1812 §5.2.7.2: a Host Redirect only when the packet leaves by the
        interface it came in on, the source is on the subnet of the next hop, and
        there is no source route (those were refused on input). Its source is our
        address on that subnet: RFC 1122 §3.2.2.2 hosts accept redirects only from
        their current first hop."""
        if not self.send_redirects or nexthop == f.src:
            return
        for a in rcvif.addrs4:
            if prefix_match(a.addr, f.src, a.plen) and prefix_match(a.addr, nexthop, a.plen):
                self._error(f.ip_packet(), f.src, f.dst, f.proto, self._icmp_type(f), f.frag_off,
                            False, w.REDIRECT, 1, now, rest=nexthop, from_addr=a.addr)
                return

    # -- output -----------------------------------------------------------------------

    def output(self, route: OutRoute, proto: int, l4: bytes, now: int, *, cached: bool = False,
               tos: int = 0, ttl: int | None = None, gso: int = 0) -> None:
        st = self.st
        if len(l4) > MAX_L4_LEN4:
            st.stats.drop(Drop.IPV4_OUT_TOO_BIG)   # sockets and ping refuse these with EMSGSIZE first
            return
        self.ident = (self.ident + 1) & 0xFFFF
        if ttl is None:
            ttl = 1 if is_multicast4(route.dst) else DEFAULT_TTL
        # TCP does PMTU discovery (RFC 1191 §3): DF set, unless the path MTU sits at
        # the floor (MIN_PMTU4, Linux's locked MTU). UDP/ICMP leave DF clear and fragment.
        # A cached route keeps the MTU of its time; a Fragmentation Needed learned
        # since (RFC 1191 §6.1) applies at once.
        mtu = 0 if route.local else st.path_mtu(route.dst, route.mtu, now)
        df = proto == PROTO_TCP and (route.local or mtu > MIN_PMTU4)
        packet = build_ipv4(route.src, route.dst, proto, l4, ttl, tos, self.ident, df=df)
        if gso and len(packet) > route.mtu:
            if isinstance(packet, GsoChain):
                packet.offload = tcp_gso(packet, gso)       # TSO: see Stack.tso_max
            else:
                packet = OffloadBytes.make(packet, tcp_gso(packet, gso))
            segments = -(-(len(l4) - (l4[12] >> 4) * 4) // gso)
            self.ident = (self.ident + segments - 1) & 0xFFFF          # one ID per segment, as Linux
        elif isinstance(packet, GsoChain):
            packet = packet.join()          # fits the MTU after all: plain bytes
        st.stats.count("ipv4", "out_requests")
        if st.tracer is not None:
            # The documented form (INTERFACE.md) with origifp appended, so that lines
            # matched by their old prefix still match; ip6_output has the same keys.
            st.tracer(f"ip_output ifp={st.ifname(route.ifp)} nexthop="
                      f"{st.fmt_zoned(route.nexthop, route.nexthop_zone)} src={fmt(route.src)} "
                      f"dst={fmt(route.dst)} proto={_proto(proto)} "
                      f"route={'cached' if cached else 'lookup'} gen={route.gen} "
                      f"origifp={st.ifname(route.origifp)}")
        if route.local:
            st.loop(route.origifp, ETHERTYPE_IPV4, packet)
            return
        if len(packet) <= mtu:
            st.link_output(route.ifp, route.nexthop, ETHERTYPE_IPV4, packet, now)
            return
        off = offload_of(packet)
        if off is not None and off.gso:
            if off.hdr_len + off.gso_size <= mtu:
                st.link_output(route.ifp, route.nexthop, ETHERTYPE_IPV4, packet, now)
                return
            st.stats.drop(Drop.IPV4_NEEDS_FRAG)   # the path MTU fell below what TCP sized
            return
        if df:
            st.stats.drop(Drop.IPV4_NEEDS_FRAG)   # TCP sizes its segments by the MSS
            return
        # RFC 791 §3.2 / RFC 1122 §3.3.3: the source fragments when DF is clear.
        pieces = fragment_ipv4(packet, mtu)
        st.stats.count("ipv4", "out_frag_creates", len(pieces))
        for p in pieces:
            st.link_output(route.ifp, route.nexthop, ETHERTYPE_IPV4, p, now)

    # -- ARP (RFC 826) ----------------------------------------------------------------------

    def handle_arp(self, rcvif: Interface, f: Frame, now: int) -> None:
        """RFC 826 "Packet Reception" with RFC 1122 §2.3.2.1 aging by the NUD machine:
        an existing entry for the sender is refreshed; a new one is made only when
        the packet is a request for one of our addresses on this link, so
        gratuitous ARP from strangers creates nothing."""
        st = self.st
        try:
            p = warp.ArpPacket.parse(f.buf, f.l3_off)
        except ParseError as e:
            st.stats.drop("parse_" + e.reason)
            return
        if p.op not in (warp.OP_REQUEST, warp.OP_REPLY) or is_multicast4(p.spa) \
                or p.spa == BROADCAST4 or is_loopback4(p.spa) or p.sha[0] & 1 \
                or p.sha == rcvif.mac:
            st.stats.drop(Drop.ARP_BAD)
            return
        st.stats.count("arp", "in_requests" if p.op == warp.OP_REQUEST else "in_replies")
        if rcvif.find4(p.spa) is not None:
            # RFC 5227 §2.4: someone else claims our address; never learn it.
            st.note("warning", f"{rcvif.name}: address conflict: {fmt(p.spa)} claimed by "
                    f"{p.sha.hex(':')}")
            st.stats.drop(Drop.ARP_ADDRESS_CONFLICT)
            return
        ours = not is_unspecified(p.tpa) and rcvif.find4(p.tpa) is not None
        entry = st.arp.get(rcvif.ifindex, p.spa)
        if not is_unspecified(p.spa):
            acts = None
            if entry is not None and p.op == warp.OP_REPLY:
                acts = st.arp.on_advertisement(rcvif.ifindex, p.spa, p.sha, now, solicited=True,
                                               override=True, is_router=False)
            elif entry is not None or (ours and p.op == warp.OP_REQUEST):
                acts = st.arp.on_solicitation(rcvif.ifindex, p.spa, p.sha, now)
            if acts is not None:
                st._nd_actions(acts, now)
                st._trace_nd()
        if p.op == warp.OP_REQUEST and ours:
            reply = warp.build_arp_reply(rcvif.mac, p.tpa, p.sha, p.spa)
            st.stats.count("arp", "out_replies")
            st.transmit(rcvif, p.sha, ETHERTYPE_ARP, reply)
        elif entry is None:
            st.stats.drop(Drop.ARP_UNSOLICITED if ours else Drop.ARP_NOT_FOR_US)

    def send_arp_request(self, ifindex: int, target: bytes, lladdr: bytes | None,
                         src_hint: bytes | None) -> None:
        """Who-has target: broadcast, or unicast to lladdr for a NUD probe."""
        st = self.st
        iface = st.interfaces.get(ifindex)
        if iface is None:
            return
        spa = src_hint if src_hint is not None and iface.find4(src_hint) is not None else None
        if spa is None:
            match = [a.addr for a in iface.addrs4 if prefix_match(a.addr, target, a.plen)]
            spa = match[0] if match else (iface.addrs4[0].addr if iface.addrs4 else bytes(4))
        req = warp.build_arp_request(iface.mac, spa, target)
        st.stats.count("arp", "out_requests")
        st.transmit(iface, lladdr or b"\xff" * 6, ETHERTYPE_ARP, req)

    # -- ICMPv4 ------------------------------------------------------------------------------

    def _icmp(self, rcvif: Interface, f: Frame, now: int) -> None:
        st = self.st
        if not f.csum_ok:
            st.stats.drop(Drop.BAD_CHECKSUM)
            return
        t = f.icmp_type
        st.stats.count("icmp", f"in_type_{t}")
        body = f.buf[f.l4_off + 4:f.ip_end]
        if t == w.ECHO_REQUEST:
            if is_multicast4(f.dst) or self.is_broadcast(rcvif, f.dst):
                st.stats.drop("icmp_echo_broadcast_ignored")   # RFC 1122 §3.2.2.6 MAY
                return
            try:
                route, cached = st.route_output_cached(f.src, 0, f.dst, now)
            except RouteError:
                st.stats.drop(Drop.NO_ROUTE)
                return
            st.stats.count("icmp", "out_echo_replies")
            # RFC 1122 §3.2.2.6: the reply carries the request's identifier, sequence, data.
            st.ip_send(route, PROTO_ICMP, w.build_icmpv4(w.ECHO_REPLY, 0, body[:4], body[4:]), now,
                       cached=cached)
        elif t == w.ECHO_REPLY:
            self._echo_reply(f, body, now)
        elif t in (w.DEST_UNREACH, w.TIME_EXCEEDED, w.PARAM_PROBLEM):
            self._error_in(rcvif, f, body, now)
        elif t == w.REDIRECT:
            self._redirect_in(rcvif, f, body, now)
        else:
            st.stats.drop(Drop.ICMP_UNKNOWN_TYPE)

    def _echo_reply(self, f: Frame, body: bytes, now: int) -> None:
        if len(body) < 4:
            return
        ident, seq = int.from_bytes(body[0:2], "big"), int.from_bytes(body[2:4], "big")
        sent = self.pings.get(ident)
        if sent is None or seq not in sent:
            self.st.stats.drop("icmp_echo_reply_unmatched")
            return
        sent_at = sent.pop(seq)
        self.st.emit(EchoReply(ident, seq, f.src, 0, f.hop_limit, len(body) - 4, sent_at, now))

    def _error_in(self, rcvif: Interface, f: Frame, body: bytes, now: int) -> None:
        """RFC 1122 §3.2.2: hand an error to the transport that sent what it quotes."""
        st = self.st
        inner = body[4:]
        if len(inner) < 28 or inner[0] >> 4 != 4:
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)
            return
        ihl = (inner[0] & 0x0F) * 4
        proto, isrc, idst = inner[9], inner[12:16], inner[16:20]
        l4 = inner[ihl:]
        if ihl < 20 or len(l4) < 8 or not st.is_local_address(isrc, 0):
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)
            return
        key = (f.icmp_type, f.icmp_code)
        mtu = int.from_bytes(body[2:4], "big") if key == (3, 4) else 0
        if mtu:
            st.learn_pmtu(idst, max(mtu, MIN_PMTU4), now)       # RFC 1191 §6.1
        err = ERRNO.get(key, errno.EHOSTUNREACH)
        if key == (3, 4):
            err = errno.EMSGSIZE
        sport, dport = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
        if proto == PROTO_UDP:
            st.udp.on_icmp_error(isrc, sport, idst, dport, 0, err, mtu, now)
        elif proto == PROTO_TCP and st.tcp is not None:
            seq = int.from_bytes(l4[4:8], "big")
            st.tcp.on_icmp_error(isrc, sport, idst, dport, 0, seq, err, now, mtu=mtu)
        elif proto == PROTO_ICMP and l4[0] == w.ECHO_REQUEST:
            ident, seq = int.from_bytes(l4[4:6], "big"), int.from_bytes(l4[6:8], "big")
            if seq in self.pings.get(ident, {}):
                del self.pings[ident][seq]
                st.emit(PingError(ident, seq, f.src, 0, ERROR_TEXT.get(key, f"ICMP type {key[0]} "
                                                                        f"code {key[1]}")))
            else:
                st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)    # not one of our pings
                return
        else:
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)        # nothing of ours sends that
            return
        st.stats.count("icmp", "in_errors_matched")

    def _redirect_in(self, rcvif: Interface, f: Frame, body: bytes, now: int) -> None:
        """RFC 1122 §3.2.2.2 as Linux does for a host (``__ip_do_redirect``): every
        code (net, host, and their TOS forms) redirects only the quoted destination
        (hosts treat Network Redirects as Host Redirects); it must come from the
        current first-hop gateway for that destination, on the link that route
        uses, and name a unicast gateway on the same subnet as the old one. It
        becomes a /32 route (proto redirect) for REDIRECT4_LIFETIME. Routers ignore
        Redirects (RFC 1812 §5.2.7.2; Linux accept_redirects=0 when forwarding);
        so do IPv4 routes via IPv6 next hops, whose gateway can never be the sender.
        Unlike Linux we install the route before the new gateway is resolved (ARP
        resolves it on first use), as the IPv6 side does (RFC 4861 §8.3)."""
        st = self.st
        if st.forwarding:
            st.stats.drop(REDIRECT_IGNORED)
            return
        inner = body[4:]
        if f.icmp_code > 3 or len(inner) < 28 or inner[0] >> 4 != 4 or (inner[0] & 0x0F) < 5:
            st.stats.drop(REDIRECT_BAD)
            return
        gateway, isrc, idst = body[0:4], inner[12:16], inner[16:20]
        if not st.is_local_address(isrc, 0):
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)     # RFC 5927 §4.1: not a packet of ours
            return
        if is_multicast4(idst) or is_unspecified(idst) or is_loopback4(idst) \
                or self.is_any_broadcast(idst) or st.is_local_address(idst, 0):
            st.stats.drop(REDIRECT_BAD)
            return
        r = st.routes.lookup(idst, 0, now)
        if r is None or r.local or r.gateway != f.src or r.ifindex != rcvif.ifindex:
            st.stats.drop(REDIRECT_NOT_FROM_GATEWAY)
            return
        if r.plen == 32 and r.proto != PROTO_REDIRECT:
            st.stats.drop(REDIRECT_IGNORED)             # a configured host route stays
            return
        if gateway == f.src or is_unspecified(gateway) or is_multicast4(gateway) \
                or is_loopback4(gateway) or is_class_e(gateway) or self.is_broadcast(rcvif, gateway) \
                or st.is_local_address(gateway, 0) or not any(
                    prefix_match(a.addr, gateway, a.plen) and prefix_match(a.addr, f.src, a.plen)
                    for a in rcvif.addrs4):
            st.stats.drop(REDIRECT_BAD_GATEWAY)
            return
        st.stats.count("icmp", "in_redirects_accepted")
        self.redirects.pop(idst, None)
        st.routes.remove(idst, 32, proto=PROTO_REDIRECT)
        while len(self.redirects) >= self.max_redirects:
            oldest = next(iter(self.redirects))
            del self.redirects[oldest]
            st.routes.remove(oldest, 32, proto=PROTO_REDIRECT)
            st.stats.count("icmp", "redirects_evicted")
        expires_at = now + REDIRECT4_LIFETIME
        st.add_route(idst, 32, gateway=gateway, ifindex=rcvif.ifindex, proto=PROTO_REDIRECT,
                     expires_at=expires_at, now=now)
        self.redirects[idst] = expires_at
        if st.tracer is not None:
            st.tracer(f"icmp_redirect dst={fmt(idst)} gateway={fmt(gateway)} from={fmt(f.src)} "
                      f"dev={rcvif.name}")

    # -- errors out (RFC 1812 §4.3.2) ---------------------------------------------------------

    @staticmethod
    def _icmp_type(f: Frame) -> int:
        """The ICMP type of f, also for a first fragment (the parser reads no L4
        header of fragments); -1 when it cannot be known."""
        if f.proto != PROTO_ICMP:
            return 0
        if not f.is_fragment:
            return f.icmp_type
        if f.frag_off == 0 and f.l4_off < f.ip_end:
            return f.buf[f.l4_off]
        return -1

    def icmp_error(self, f: Frame, typ: int, code: int, rcvif: Interface, now: int,
                   mtu: int = 0, *, rest: bytes | None = None) -> None:
        """Send an ICMPv4 error about the packet in f (received on rcvif)."""
        if rest is None and typ == w.DEST_UNREACH and code == w.UNREACH_FRAG_NEEDED:
            rest = (mtu & 0xFFFF).to_bytes(4, "big")    # RFC 1191 §4: next-hop MTU
        self._error(f.ip_packet(), f.src, f.dst, f.proto, self._icmp_type(f), f.frag_off,
                    f.eth_dst[0] & 1 == 1, typ, code, now, rest=rest)

    def host_unreachable(self, packet: bytes, ifindex: int, now: int) -> None:
        """ARP/ND resolution failed for a packet we were sending or forwarding
        (RFC 1812 §5.2.7.1 code 1; RFC 4861 §7.2.2 for v4-via-v6 next hops)."""
        if len(packet) < 20:
            return
        ihl = (packet[0] & 0x0F) * 4
        frag_off = (int.from_bytes(packet[6:8], "big") & 0x1FFF) * 8
        itype = 0
        if packet[9] == PROTO_ICMP:
            itype = packet[ihl] if frag_off == 0 and len(packet) > ihl else -1
        self._error(packet, packet[12:16], packet[16:20], packet[9], itype, frag_off, False,
                    w.DEST_UNREACH, w.UNREACH_HOST, now)

    def _error(self, packet: bytes, isrc: bytes, idst: bytes, proto: int, itype: int,
               frag_off: int, l2_bcast: bool, typ: int, code: int, now: int, *,
               rest: bytes | None = None, from_addr: bytes | None = None) -> None:
        """RFC 1812 §4.3.2.7: no error about an ICMP error, a packet to a broadcast or
        multicast address (IP or link layer), a non-first fragment, or a packet whose
        source is not one host (0.0.0.0, broadcast, multicast, class E). Then the
        token bucket (§4.3.2.8), then the source (module docstring) and route."""
        st = self.st
        if proto == PROTO_ICMP and itype not in INFORMATIONAL:
            st.stats.drop(Drop.ICMP_ERROR_SUPPRESSED)
            return
        if l2_bcast or frag_off or is_multicast4(idst) or self.is_any_broadcast(idst):
            st.stats.drop(Drop.ICMP_ERROR_SUPPRESSED)
            return
        # A 127/8 source here came over the loopback (input drops it from links), so it
        # names one host: us. Local UDP to a closed port gets its Port Unreachable.
        if is_unspecified(isrc) or is_multicast4(isrc) or is_class_e(isrc) \
                or self.is_any_broadcast(isrc):
            st.stats.drop(Drop.ICMP_ERROR_SUPPRESSED)
            return
        if not self.bucket.take(now):
            st.stats.drop(Drop.ICMP_ERROR_RATE_LIMITED)
            return
        route = self._error_route(isrc, idst, from_addr, now)
        if route is None:
            st.stats.drop(Drop.NO_ROUTE)
            return
        msg = w.build_error4(typ, code, packet, rest if rest is not None else bytes(4))
        st.stats.count("icmp", f"out_errors_{typ}_{code}")
        st.ip_send(route, PROTO_ICMP, msg, now)

    def _error_route(self, to: bytes, orig_dst: bytes, from_addr: bytes | None,
                     now: int) -> OutRoute | None:
        """The route back to the invoking packet's source and our source on it
        (Linux ``__icmp_send``): the original destination when it is ours, else
        the locally-originated rule (route src, egress interface, loopback, any
        interface); with no IPv4 address at all 192.0.0.8 (RFC 7600 §4.8,
        draft-ietf-intarea-v4-via-v6 §4)."""
        st = self.st
        own = from_addr
        if own is None and st.is_local_address(orig_dst, 0):
            own = orig_dst
        try:
            return st.route_output(to, 0, own, now)
        except RouteError as e:
            if e.errno != errno.EHOSTUNREACH:
                return None
        r = st.routes.lookup(to, 0, now)
        if r is None or r.local:
            return None
        iface = st.interfaces.get(r.ifindex)
        if iface is None or not iface.up:
            return None
        nexthop = r.gateway if r.gateway is not None else to
        return OutRoute(to, 0, DUMMY4, 0, r.ifindex, r.aifp, nexthop,
                        r.gw_zone if needs_zone(nexthop) else 0,
                        st.path_mtu(to, iface.mtu, now), st.routes.gen, False)

    def ping_send(self, dst: bytes, ident: int, seq: int, payload: bytes, now: int,
                  src: bytes | None = None, ttl: int | None = None) -> OutRoute:
        """Send one echo request; the reply comes back as an EchoReply event.
        Raises RouteError when there is no route or no IPv4 source."""
        if len(payload) + 8 > MAX_L4_LEN4:
            raise message_too_long()
        route = self.st.route_output(dst, 0, src, now)
        msg = w.build_icmpv4(w.ECHO_REQUEST, 0, ident.to_bytes(2, "big") + seq.to_bytes(2, "big"),
                             payload)
        sent = self.pings.setdefault(ident, {})
        if len(sent) > 1024:
            sent.pop(next(iter(sent)))
        sent[seq] = now
        self.st.stats.count("icmp", "out_echo_requests")
        self.st.ip_send(route, PROTO_ICMP, msg, now, hop_limit=ttl)
        return route

    def ping_forget(self, ident: int) -> None:
        self.pings.pop(ident, None)


def _proto(p: int) -> str:
    return {1: "icmp", 6: "tcp", 17: "udp"}.get(p, str(p))


__all__ = ["Ip4", "Pending"]

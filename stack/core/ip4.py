"""IPv4 input, output, forwarding, ARP and ICMPv4 (RFC 791, 792, 826, 1122, 1812).

v4-via-v6 (RFC 5549/8950): a route's gateway may be an IPv6 address; the
packet then goes through ND for that address and leaves with ethertype 0x0800
(``Stack.link_output`` picks ND or ARP by the next hop's family).

ICMPv4 errors take their source by the rule of the v4-via-v6 draft and Linux
``__icmp_send``: the invoking packet's destination when it is ours, else the
normal source selection toward the invoking packet's source (route ``src``,
egress interface, loopback, any interface) and 192.0.0.8 (RFC 7600) when the
stack has no IPv4 address at all.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from stack.core.events import EchoReply, PingError
from stack.core.icmp6 import TokenBucket
from stack.core.interface import Interface
from stack.core.ipservice import OutRoute, RouteError
from stack.core.nd import Pending
from stack.core.reasm import Reassembler
from stack.core.stats import Drop
from stack.wire import arp as warp
from stack.wire import icmpv4 as w
from stack.wire.addr import (
    BROADCAST4,
    DUMMY4,
    broadcast4,
    is_loopback4,
    is_multicast4,
    is_unspecified,
    needs_zone,
    prefix_match,
)
from stack.wire.errors import ParseError
from stack.wire.frame_types import ETHERTYPE_ARP, ETHERTYPE_IPV4, PROTO_ICMP, PROTO_TCP, PROTO_UDP, Frame
from stack.wire.ipv4 import build_ipv4, fragment_ipv4

if TYPE_CHECKING:
    from stack.core.stack import Stack

ERROR_TEXT = {
    (3, 0): "Destination Net Unreachable", (3, 1): "Destination Host Unreachable",
    (3, 2): "Destination Protocol Unreachable", (3, 3): "Destination Port Unreachable",
    (3, 4): "Frag needed", (3, 13): "Communication administratively prohibited",
    (11, 0): "Time to live exceeded", (11, 1): "Frag reassembly time exceeded",
}
ERRNO = {(3, 0): errno.ENETUNREACH, (3, 1): errno.EHOSTUNREACH, (3, 2): errno.ENOPROTOOPT,
         (3, 3): errno.ECONNREFUSED, (3, 4): errno.EMSGSIZE, (11, 0): errno.EHOSTUNREACH}


class Ip4:
    def __init__(self, stack: Stack) -> None:
        self.st = stack
        self.reasm = Reassembler(stack, family=4)
        self.ident = stack.rng.getrandbits(16)
        self.bucket = TokenBucket(stack.limits.icmp_error_rate, stack.limits.icmp_error_burst)
        self.pings: dict[int, dict[int, int]] = {}

    def poll(self, now: int) -> None:
        self.reasm.poll(now)

    def poll_at(self) -> int | None:
        return self.reasm.poll_at()

    def is_broadcast(self, iface: Interface, addr: bytes) -> bool:
        return addr == BROADCAST4 or any(
            a.plen < 31 and broadcast4(a.addr, a.plen) == addr for a in iface.addrs4)

    def _ours(self, iface: Interface, dst: bytes) -> bool:
        """Weak host model: any of our addresses, plus broadcasts of the receive link."""
        return self.st.is_local_address(dst, 0) or self.is_broadcast(iface, dst)

    # -- input --------------------------------------------------------------------

    def handle(self, rcvif: Interface, f: Frame, now: int, *, looped: bool) -> None:
        st = self.st
        st.stats.count("ipv4", "in_receives")
        verdict = self._input(rcvif, f, now, looped)
        if st.tracer is not None:
            st.tracer(f"ip_input rcvif={rcvif.name} looped={int(looped)} src={_f(f.src)} "
                      f"dst={_f(f.dst)} proto={_proto(f.proto)} verdict={verdict}")

    def _drop(self, reason: str) -> str:
        self.st.stats.drop(reason)
        return f"drop:{reason}"

    def _input(self, rcvif: Interface, f: Frame, now: int, looped: bool) -> str:
        st = self.st
        src, dst = f.src, f.dst
        if not looped and (is_loopback4(src) or is_loopback4(dst)):
            return self._drop(Drop.IPV4_LOOPBACK_FROM_WIRE)
        if is_multicast4(src) or src == BROADCAST4:
            return self._drop(Drop.IPV4_BAD_SOURCE)
        if not looped and not is_unspecified(src) and st.is_local_address(src, 0):
            return self._drop(Drop.IPV4_SPOOFED_OWN_SOURCE)   # source address validation
        if not self._ours(rcvif, dst):
            if is_multicast4(dst):
                return self._drop(Drop.IPV4_NOT_FOR_US)
            if looped:
                return self._drop(Drop.IPV4_NOT_FOR_US)
            return self.forward(rcvif, f, now)
        if f.is_fragment:
            whole = self.reasm.add(f, rcvif.ifindex, now)
            if whole is None:
                return "reassembling"
            f = whole[0]
        return self.deliver(rcvif, f, now)

    def deliver(self, rcvif: Interface, f: Frame, now: int) -> str:
        st = self.st
        proto = f.proto
        if proto == PROTO_ICMP:
            self._icmp(rcvif, f, now)
        elif proto == PROTO_UDP:
            st.udp.handle(f, rcvif.ifindex, now)
        elif proto == PROTO_TCP and st.tcp is not None:
            st.tcp.handle(f, rcvif.ifindex, now)
        else:
            self.icmp_error(f, 3, 2, rcvif, now)    # protocol unreachable
            return self._drop(Drop.IPV4_UNKNOWN_PROTO)
        st.stats.count("ipv4", "in_delivers")
        return "accept"

    # -- forwarding ------------------------------------------------------------------

    def forward(self, rcvif: Interface, f: Frame, now: int) -> str:
        """RFC 1812 §5.2/§5.3: TTL, route (any next-hop family), MTU."""
        st = self.st
        if not st.forwarding:
            return self._drop(Drop.IPV4_NOT_FOR_US)
        if f.eth_dst[0] & 1:
            return self._drop(Drop.IPV4_NOT_FOR_US)   # never forward link broadcasts
        if f.hop_limit <= 1:
            self.icmp_error(f, 11, 0, rcvif, now)
            return self._drop(Drop.IPV4_TTL_EXCEEDED)
        r = st.routes.lookup(f.dst, 0, now)
        if r is None or r.local:
            self.icmp_error(f, 3, 0, rcvif, now)
            return self._drop(Drop.IPV4_NO_ROUTE)
        out = st.interfaces[r.ifindex]
        packet = bytearray(f.ip_packet())
        if len(packet) > out.mtu and f.df:
            self.icmp_error(f, 3, 4, rcvif, now, mtu=out.mtu)    # fragmentation needed
            return self._drop(Drop.IPV4_NEEDS_FRAG)
        # Decrement TTL and patch the header checksum (RFC 1624 style, recomputed here).
        packet[8] -= 1
        ihl = (packet[0] & 0x0F) * 4
        packet[10:12] = b"\x00\x00"
        from stack.wire.checksum import internet_checksum
        packet[10:12] = internet_checksum(bytes(packet[:ihl])).to_bytes(2, "big")
        nexthop = r.gateway if r.gateway is not None else f.dst
        st.stats.count("ipv4", "out_forwarded")
        if st.tracer is not None:
            st.tracer(f"ip_forward rcvif={rcvif.name} ifp={out.name} src={_f(f.src)} dst={_f(f.dst)} "
                      f"nexthop={st.fmt_zoned(nexthop, r.gw_zone)}")
        pieces = [bytes(packet)] if len(packet) <= out.mtu else fragment_ipv4(bytes(packet), out.mtu)
        for p in pieces:
            st.link_output(r.ifindex, nexthop, ETHERTYPE_IPV4, p, now)
        return "forward"

    # -- output -----------------------------------------------------------------------

    def output(self, route: OutRoute, proto: int, l4: bytes, now: int, *, cached: bool = False,
               tos: int = 0, ttl: int | None = None) -> None:
        st = self.st
        self.ident = (self.ident + 1) & 0xFFFF
        packet = build_ipv4(route.src, route.dst, proto, l4, ttl or 64, tos, self.ident,
                            df=(proto == PROTO_TCP))
        st.stats.count("ipv4", "out_requests")
        if st.tracer is not None:
            st.tracer(f"ip_output ifp={st.ifname(route.ifp)} nexthop="
                      f"{st.fmt_zoned(route.nexthop, route.nexthop_zone)} src={_f(route.src)} "
                      f"dst={_f(route.dst)} proto={_proto(proto)} "
                      f"route={'cached' if cached else 'lookup'} gen={route.gen}")
        if route.local:
            st.loop(route.origifp, ETHERTYPE_IPV4, packet)
            return
        if len(packet) > route.mtu:
            if proto == PROTO_TCP:
                st.stats.drop(Drop.IPV4_NEEDS_FRAG)
                return
            for p in fragment_ipv4(build_ipv4(route.src, route.dst, proto, l4, ttl or 64, tos,
                                              self.ident, df=False), route.mtu):
                st.link_output(route.ifp, route.nexthop, ETHERTYPE_IPV4, p, now)
            return
        st.link_output(route.ifp, route.nexthop, ETHERTYPE_IPV4, packet, now)

    # -- ARP (RFC 826) ----------------------------------------------------------------------

    def handle_arp(self, rcvif: Interface, f: Frame, now: int) -> None:
        st = self.st
        try:
            p = warp.ArpPacket.parse(f.buf, f.l3_off)
        except ParseError as e:
            st.stats.drop("parse_" + e.reason)
            return
        if is_multicast4(p.spa) or p.spa == BROADCAST4 or p.sha[0] & 1:
            st.stats.drop(Drop.ARP_BAD)
            return
        ours = rcvif.find4(p.tpa) is not None
        st.stats.count("arp", "in_requests" if p.op == 1 else "in_replies")
        if not is_unspecified(p.spa) and (ours or st.arp.get(rcvif.ifindex, p.spa) is not None):
            if p.op == 2 and st.arp.get(rcvif.ifindex, p.spa) is not None:
                acts = st.arp.on_advertisement(rcvif.ifindex, p.spa, p.sha, now, solicited=True,
                                               override=True, is_router=False)
            else:
                acts = st.arp.on_solicitation(rcvif.ifindex, p.spa, p.sha, now)
            st._nd_actions(acts, now)
            st._trace_nd()
        if p.op == 1 and ours:
            reply = warp.build_arp_reply(rcvif.mac, p.tpa, p.sha, p.spa)
            st.stats.count("arp", "out_replies")
            st.transmit(rcvif, p.sha, ETHERTYPE_ARP, reply)
        elif not ours:
            st.stats.drop(Drop.ARP_NOT_FOR_US)

    def send_arp_request(self, ifindex: int, target: bytes, lladdr: bytes | None,
                         src_hint: bytes | None) -> None:
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
                route = st.route_output(f.src, 0, f.dst, now)
            except RouteError:
                st.stats.drop(Drop.NO_ROUTE)
                return
            st.stats.count("icmp", "out_echo_replies")
            st.ip_send(route, PROTO_ICMP, w.build_icmpv4(w.ECHO_REPLY, 0, body[:4], body[4:]), now)
        elif t == w.ECHO_REPLY:
            self._echo_reply(f, body, now)
        elif t in (w.DEST_UNREACH, w.TIME_EXCEEDED):
            self._error_in(rcvif, f, body, now)
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
        st = self.st
        inner = body[4:]
        if len(inner) < 28 or inner[0] >> 4 != 4:
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)
            return
        ihl = (inner[0] & 0x0F) * 4
        proto, isrc, idst = inner[9], inner[12:16], inner[16:20]
        l4 = inner[ihl:]
        if len(l4) < 8 or not st.is_local_address(isrc, 0):
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)
            return
        key = (f.icmp_type, f.icmp_code)
        mtu = int.from_bytes(body[2:4], "big") if key == (3, 4) else 0
        if mtu:
            st.learn_pmtu(idst, mtu, now)
        err = ERRNO.get(key, errno.EHOSTUNREACH)
        sport, dport = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
        if proto == PROTO_UDP:
            st.udp.on_icmp_error(isrc, sport, idst, dport, 0, err, mtu, now)
        elif proto == PROTO_TCP and st.tcp is not None:
            st.tcp.on_icmp_error(isrc, sport, idst, dport, 0, err, mtu, l4, now)
        elif proto == PROTO_ICMP and l4[0] == w.ECHO_REQUEST:
            ident, seq = int.from_bytes(l4[4:6], "big"), int.from_bytes(l4[6:8], "big")
            if seq in self.pings.get(ident, {}):
                del self.pings[ident][seq]
                st.emit(PingError(ident, seq, f.src, 0, ERROR_TEXT.get(key, f"ICMP type {key[0]} "
                                                                        f"code {key[1]}")))

    def icmp_error(self, f: Frame, typ: int, code: int, rcvif: Interface, now: int,
                   mtu: int = 0) -> None:
        self._error(f.ip_packet(), f.src, f.dst, f.proto, f.icmp_type, f.frag_off,
                    f.eth_dst[0] & 1 == 1, typ, code, now, mtu)

    def host_unreachable(self, packet: bytes, ifindex: int, now: int) -> None:
        """ARP/ND resolution failed for a packet we were sending or forwarding."""
        if len(packet) < 20:
            return
        ihl = (packet[0] & 0x0F) * 4
        itype = packet[ihl] if packet[9] == PROTO_ICMP and len(packet) > ihl else 0
        frag_off = (int.from_bytes(packet[6:8], "big") & 0x1FFF) * 8
        self._error(packet, packet[12:16], packet[16:20], packet[9], itype, frag_off, False, 3, 1,
                    now, 0)

    def _error(self, packet: bytes, src: bytes, dst: bytes, proto: int, itype: int, frag_off: int,
               l2_bcast: bool, typ: int, code: int, now: int, mtu: int) -> None:
        """RFC 1812 §4.3.2.7: no errors about errors, broadcasts, non-first fragments,
        or packets from an address that is not one host."""
        st = self.st
        if proto == PROTO_ICMP and itype not in (w.ECHO_REQUEST, w.ECHO_REPLY, 13, 14, 15, 16, 17, 18):
            st.stats.drop(Drop.ICMP_ERROR_SUPPRESSED)
            return
        if l2_bcast or frag_off or is_multicast4(dst) or dst == BROADCAST4 or is_unspecified(src) \
                or is_multicast4(src) or src == BROADCAST4 or is_loopback4(src):
            st.stats.drop(Drop.ICMP_ERROR_SUPPRESSED)
            return
        if not self.bucket.take(now):
            st.stats.drop(Drop.ICMP_ERROR_RATE_LIMITED)
            return
        route = self._error_route(src, dst, now)
        if route is None:
            st.stats.drop(Drop.NO_ROUTE)
            return
        rest = (mtu & 0xFFFF).to_bytes(4, "big") if typ == 3 and code == 4 else bytes(4)
        msg = w.build_error4(typ, code, packet, rest)
        st.stats.count("icmp", f"out_errors_{typ}_{code}")
        st.ip_send(route, PROTO_ICMP, msg, now)

    def _error_route(self, to: bytes, orig_dst: bytes, now: int) -> OutRoute | None:
        st = self.st
        own = orig_dst if st.is_local_address(orig_dst, 0) else None
        try:
            return st.route_output(to, 0, own, now)
        except RouteError as e:
            if e.errno != errno.EHOSTUNREACH:
                return None
        # No IPv4 address anywhere: RFC 7600 / draft-ietf-intarea-v4-via-v6 §4: 192.0.0.8.
        r = st.routes.lookup(to, 0, now)
        if r is None:
            return None
        nexthop = r.gateway if r.gateway is not None else to
        iface = st.interfaces[r.ifindex]
        return OutRoute(to, 0, DUMMY4, 0, r.ifindex, r.aifp, nexthop,
                        r.gw_zone if needs_zone(nexthop) else 0, iface.mtu, st.routes.gen, r.local)

    def ping_send(self, dst: bytes, ident: int, seq: int, payload: bytes, now: int,
                  src: bytes | None = None, ttl: int | None = None) -> OutRoute:
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


def _f(addr: bytes) -> str:
    from stack.wire.addr import fmt
    return fmt(addr)


def _proto(p: int) -> str:
    return {1: "icmp", 6: "tcp", 17: "udp"}.get(p, str(p))


__all__ = ["Ip4", "Pending"]

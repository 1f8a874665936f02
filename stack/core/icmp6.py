"""ICMPv6 (RFC 4443): echo, errors in and out, and the stack's own ping.

Errors we originate obey §2.4: never in answer to an ICMPv6 error or a
Redirect, never to a multicast destination / L2 multicast (except Packet Too
Big and Parameter Problem code 2), never to an unspecified or multicast source;
they are rate limited by a token bucket (§2.4(f)); their source is the
invoking packet's destination when that is ours, else normal source selection
toward the invoking packet's source (§2.2).

Errors we receive are matched to the socket they concern by the quoted
header and passed on (ECONNREFUSED, EHOSTUNREACH, EMSGSIZE ...).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stack.core.events import EchoReply, PingError
from stack.core.flows import ECHO, FlowContext
from stack.core.interface import Interface
from stack.core.ipservice import OutRoute, RouteError, max_l4_len, message_too_long
from stack.core.stats import Drop
from stack.wire import icmpv6 as w
from stack.wire.addr import is_multicast6, is_unspecified, needs_zone
from stack.wire.frame_types import PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Frame

if TYPE_CHECKING:
    from stack.core.stack import Stack

_IN_TYPE = tuple(f"in_type_{t}" for t in range(256))     # counter names, not formatted per packet

ERROR_TEXT = {
    (1, 0): "Destination unreachable: No route",
    (1, 1): "Destination unreachable: Administratively prohibited",
    (1, 2): "Destination unreachable: Beyond scope",
    (1, 3): "Destination unreachable: Address unreachable",
    (1, 4): "Destination unreachable: Port unreachable",
    (1, 5): "Destination unreachable: Source address failed ingress/egress policy",
    (1, 6): "Destination unreachable: Reject route",
    (3, 0): "Time exceeded: Hop limit",
    (3, 1): "Time exceeded: Fragment reassembly",
}
ERRNO = {(1, 0): errno.ENETUNREACH, (1, 1): errno.EACCES, (1, 2): errno.EHOSTUNREACH,
         (1, 3): errno.EHOSTUNREACH, (1, 4): errno.ECONNREFUSED, (1, 5): errno.EACCES,
         (1, 6): errno.EACCES, (3, 0): errno.EHOSTUNREACH, (3, 1): errno.ETIMEDOUT}


@dataclass(slots=True)
class TokenBucket:
    """RFC 4443 §2.4(f): average ``rate`` per second, ``burst`` at once."""

    rate: float
    burst: int
    tokens: float = 0.0
    last: int | None = None

    def take(self, now: int) -> bool:
        if self.last is None:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate / 1e9)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Icmp6:
    def __init__(self, stack: Stack) -> None:
        self.st = stack
        self.bucket = TokenBucket(stack.limits.icmp_error_rate, stack.limits.icmp_error_burst)
        self.pings: dict[int, dict[int, int]] = {}    # ident -> {seq: sent_at}
        self.c = stack.stats.of("icmp6")    # bumped directly on the per-packet paths

    # -- input ------------------------------------------------------------------

    def handle(self, rcvif: Interface, f: Frame, now: int, looped: bool) -> None:
        st = self.st
        if not f.csum_ok:
            st.stats.drop(Drop.BAD_CHECKSUM)
            return
        t = f.icmp_type
        self.c[_IN_TYPE[t]] += 1
        if t == w.ECHO_REQUEST:
            self._echo_request(rcvif, f, now)
        elif t == w.ECHO_REPLY:
            self._echo_reply(rcvif, f, now)
        elif t in (w.DST_UNREACH, w.PACKET_TOO_BIG, w.TIME_EXCEEDED, w.PARAM_PROBLEM):
            self._error_in(rcvif, f, now)
        elif t in (133, 134, 135, 136, 137):
            st.ndp.handle(rcvif, f, now, looped)
        elif t in (130, 131, 132, 143):
            st.ndp.handle_mld(rcvif, f, now)
        elif t < 128:
            st.stats.count("icmp6", "in_unknown_errors")  # §2.4(b): to the upper layer: none wants it
        else:
            st.stats.drop(Drop.ICMP_UNKNOWN_TYPE)       # §2.4(b): unknown informational

    def _echo_request(self, rcvif: Interface, f: Frame, now: int) -> None:
        st = self.st
        body = f.buf[f.l4_off + 4:f.ip_end]
        src = None if f.dst[0] == 0xFF else f.dst       # is_multicast6
        zone = rcvif.ifindex if needs_zone(f.src) else 0
        try:
            route, cached = st.route_output_cached(f.src, zone, src, now)
        except RouteError:
            st.stats.drop(Drop.NO_ROUTE)
            return
        if f.icmp_code == 0 and route.src == f.dst and route.dst == f.src:
            # The same pseudo-header (addresses swapped), the first word goes from 0x8000
            # to 0x8100: update the request's (verified) checksum, RFC 1624 eqn. 3,
            # instead of summing the whole message again.
            o = f.l4_off
            s = (~((f.buf[o + 2] << 8) | f.buf[o + 3]) & 0xFFFF) + 0x100
            s = (s & 0xFFFF) + (s >> 16)
            msg = bytes((w.ECHO_REPLY, 0)) + (~s & 0xFFFF).to_bytes(2, "big") + body
            if st.flow_hints is not None and not route.local and not f.ext and type(f.buf) is bytes:
                # a hint for the runtime's fast path (stack/core/flows.py): same reply, same way
                mtu = st.path_mtu(route.dst, route.mtu, now) if st.pmtu else route.mtu
                st._flow_ctx = FlowContext(6, ECHO, rcvif.ifindex, f.src, f.dst, rcvif.mac, mtu,
                                           st.interfaces[route.origifp].nd.cur_hop_limit)
        else:
            msg = w.build_icmpv6(route.src, route.dst, w.ECHO_REPLY, 0, body)
        self.c["out_echo_replies"] += 1
        st.ip6.output(route, PROTO_ICMPV6, msg, now, cached=cached, tclass=f.tclass)   # ip_send, IPv6
        st._flow_ctx = None

    def _echo_reply(self, rcvif: Interface, f: Frame, now: int) -> None:
        body = f.buf[f.l4_off + 4:f.ip_end]
        if len(body) < 4:
            self.st.stats.drop("icmp6_short_echo")
            return
        ident = int.from_bytes(body[0:2], "big")
        seq = int.from_bytes(body[2:4], "big")
        sent = self.pings.get(ident)
        if sent is None or seq not in sent:
            self.st.stats.drop("icmp6_echo_reply_unmatched")
            return
        sent_at = sent.pop(seq)
        zone = rcvif.ifindex if needs_zone(f.src) else 0
        self.st.emit(EchoReply(ident, seq, f.src, zone, f.hop_limit, len(body) - 4, sent_at, now))

    def _error_in(self, rcvif: Interface, f: Frame, now: int) -> None:
        """Match an incoming error to what it quotes (RFC 4443 §2.4(c), RFC 5927)."""
        st = self.st
        body = f.buf[f.l4_off + 4:f.ip_end]
        info = int.from_bytes(body[0:4], "big") if len(body) >= 4 else 0
        inner = body[4:]
        if len(inner) < 48 or inner[0] >> 4 != 6:
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)
            return
        isrc, idst, nh = inner[8:24], inner[24:40], inner[6]
        l4 = inner[40:]
        zone = rcvif.ifindex if needs_zone(idst) else 0
        key = (f.icmp_type, f.icmp_code)
        if not st.is_local_address(isrc, rcvif.ifindex if needs_zone(isrc) else 0):
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)    # RFC 5927 §4.1: not a packet of ours
            return
        if f.icmp_type == w.PACKET_TOO_BIG:
            st.learn_pmtu(idst, info, now)      # only once the quoted packet is ours
            err = errno.EMSGSIZE
        else:
            err = ERRNO.get(key, errno.EHOSTUNREACH)
        sport, dport = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
        if nh == PROTO_UDP:
            st.udp.on_icmp_error(isrc, sport, idst, dport, zone, err, info, now)
        elif nh == PROTO_TCP and st.tcp is not None:
            seq = int.from_bytes(l4[4:8], "big")
            st.tcp.on_icmp_error(isrc, sport, idst, dport, zone, seq, err, now,
                                 mtu=info if f.icmp_type == w.PACKET_TOO_BIG else 0)
        elif nh == PROTO_ICMPV6 and l4[0] == w.ECHO_REQUEST:
            ident, seq = int.from_bytes(l4[4:6], "big"), int.from_bytes(l4[6:8], "big")
            if seq in self.pings.get(ident, {}):
                del self.pings[ident][seq]
                text = ERROR_TEXT.get(key, f"ICMPv6 type {key[0]} code {key[1]}")
                if f.icmp_type == w.PACKET_TOO_BIG:
                    text = f"Packet too big: mtu={info}"
                st.emit(PingError(ident, seq, f.src, rcvif.ifindex if needs_zone(f.src) else 0, text))
            else:
                st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)    # not one of our pings
                return
        else:
            st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)        # nothing of ours sends that
            return
        st.stats.count("icmp6", "in_errors_matched")

    # -- errors out ---------------------------------------------------------------

    def error(self, f: Frame, typ: int, code: int, param: int, rcvif: Interface, now: int, *,
              allow_multicast: bool = False) -> None:
        """Send an ICMPv6 error about the packet in f (received on rcvif)."""
        itype = f.icmp_type
        if f.proto == PROTO_ICMPV6 and f.is_fragment:
            # The parser reads no L4 header of fragments: take the type from a first
            # fragment; a later one cannot show it, so it counts as an error (§2.4(e.1)).
            itype = f.buf[f.l4_off] if f.frag_off == 0 and f.l4_off < f.ip_end else 0
        self._error(f.ip_packet(), f.src, f.dst, f.proto, itype, f.eth_dst[0] & 1 == 1,
                    typ, code, param, rcvif.ifindex, now, allow_multicast)

    def address_unreachable(self, packet: bytes, ifindex: int, now: int) -> None:
        """Neighbor resolution failed for a packet we were sending (RFC 4861 §7.2.2)."""
        if len(packet) < 40:
            return
        nh = packet[6]
        itype = packet[40] if nh == PROTO_ICMPV6 and len(packet) > 40 else 0
        self._error(packet, packet[8:24], packet[24:40], nh, itype, False, w.DST_UNREACH, 3, 0,
                    ifindex, now, False)

    def _error(self, packet: bytes, src: bytes, dst: bytes, proto: int, itype: int, l2_mcast: bool,
               typ: int, code: int, param: int, zone_if: int, now: int, allow_mc: bool) -> None:
        st = self.st
        exempt = typ == w.PACKET_TOO_BIG or (typ == w.PARAM_PROBLEM and code == 2 and allow_mc)
        if proto == PROTO_ICMPV6 and (itype < 128 or itype == 137):
            st.stats.drop(Drop.ICMP_ERROR_SUPPRESSED)    # §2.4(e.1/e.2)
            return
        if (is_multicast6(dst) or l2_mcast) and not exempt:
            st.stats.drop(Drop.ICMP_ERROR_SUPPRESSED)    # §2.4(e.3/e.4)
            return
        if is_unspecified(src) or is_multicast6(src):
            st.stats.drop(Drop.ICMP_ERROR_SUPPRESSED)    # §2.4(e.6)
            return
        if not self.bucket.take(now):
            st.stats.drop(Drop.ICMP_ERROR_RATE_LIMITED)  # §2.4(f)
            return
        zone = zone_if if needs_zone(src) else 0
        dst_zone = zone_if if needs_zone(dst) else 0
        own = dst if not is_multicast6(dst) and st.is_local_address(dst, dst_zone) else None
        route = self._route(src, zone, own, now)
        if route is None:
            st.stats.drop(Drop.NO_ROUTE)
            return
        msg = w.build_error6(route.src, route.dst, typ, code, param, packet)
        st.stats.count("icmp6", f"out_errors_{typ}_{code}")
        st.ip_send(route, PROTO_ICMPV6, msg, now)

    def _route(self, dst: bytes, zone: int, src: bytes | None, now: int) -> OutRoute | None:
        try:
            return self.st.route_output(dst, zone, src, now)
        except RouteError:
            if src is None:
                return None
            try:
                return self.st.route_output(dst, zone, None, now)
            except RouteError:
                return None

    # -- our own ping -------------------------------------------------------------

    def ping_send(self, dst: bytes, zone: int, ident: int, seq: int, payload: bytes, now: int,
                  src: bytes | None = None, hop_limit: int | None = None) -> OutRoute:
        """Send one echo request; the reply comes back as an EchoReply event.
        Raises RouteError when there is no route or source."""
        if len(payload) + 8 > max_l4_len(dst):
            raise message_too_long()
        route = self.st.route_output(dst, zone, src, now)
        msg = w.build_echo6(route.src, route.dst, w.ECHO_REQUEST, ident, seq, payload)
        sent = self.pings.setdefault(ident, {})
        if len(sent) > 1024:
            sent.pop(next(iter(sent)))
        sent[seq] = now
        self.st.stats.count("icmp6", "out_echo_requests")
        self.st.ip_send(route, PROTO_ICMPV6, msg, now, hop_limit=hop_limit)
        return route

    def ping_forget(self, ident: int) -> None:
        self.pings.pop(ident, None)

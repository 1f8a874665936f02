"""UDP (RFC 768, RFC 8200 §8.1: the checksum is mandatory over IPv6).

An endpoint is bound to (address or wildcard, port, zone). Received datagrams
wait in a bounded queue (bytes, counted drops beyond ``limits.udp_rcvbuf``);
ICMP errors that quote one of our datagrams are reported on the endpoint that
sent it (connected endpoints only, as BSD sockets do). Datagrams to a port
nobody listens on get Port Unreachable.

Each endpoint caches its last ``OutRoute`` per destination and reuses it while
the table generation is unchanged; trace shows ``route=cached`` for those.
"""

from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stack.core.events import Readable, SocketError
from stack.core.ipservice import OutRoute, RouteError, max_l4_len, message_too_long
from stack.core.stats import Drop
from stack.wire.addr import is_multicast4, is_multicast6, needs_zone
from stack.wire.frame_types import PROTO_UDP, Frame
from stack.wire.udp import build_udp

if TYPE_CHECKING:
    from stack.core.stack import Stack

EPHEMERAL_LOW, EPHEMERAL_HIGH = 49152, 65535


@dataclass(slots=True)
class Datagram:
    data: bytes
    src: bytes
    sport: int
    zone: int
    dst: bytes


@dataclass(eq=False, slots=True)
class UdpEndpoint:
    layer: UdpLayer
    family: int                    # 4 or 6; 0 = both (wildcard bind)
    local: bytes | None            # None = wildcard
    port: int
    zone: int = 0
    remote: tuple[bytes, int, int] | None = None   # connected (addr, port, zone)
    queue: deque[Datagram] = field(default_factory=deque)
    queued_bytes: int = 0
    error: int = 0
    closed: bool = False
    route: OutRoute | None = None
    rcvbuf: int = 256 * 1024

    def sendto(self, data: bytes, dst: bytes, port: int, zone: int, now: int) -> int:
        """Send one datagram. Raises RouteError (errno) when it cannot leave."""
        return self.layer.send(self, data, dst, port, zone, now)

    def recv(self) -> Datagram | None:
        if not self.queue:
            return None
        d = self.queue.popleft()
        self.queued_bytes -= len(d.data)
        return d

    def connect(self, dst: bytes, port: int, zone: int) -> None:
        self.remote = (dst, port, zone)

    def close(self) -> None:
        self.layer.close(self)

    def take_error(self) -> int:
        e, self.error = self.error, 0
        return e


class UdpLayer:
    def __init__(self, stack: Stack) -> None:
        self.st = stack
        self.endpoints: dict[int, list[UdpEndpoint]] = {}

    def bind(self, local: bytes | None, port: int, zone: int = 0, family: int = 0) -> UdpEndpoint:
        """Bind (port 0 = ephemeral). Raises RouteError(EADDRINUSE / EADDRNOTAVAIL)."""
        st = self.st
        if local is not None and not st.is_local_address(local, zone):
            raise RouteError(errno.EADDRNOTAVAIL, "address not available")
        if port == 0:
            port = self._ephemeral()
        for ep in self.endpoints.get(port, []):
            same_family = ep.family == 0 or family == 0 or ep.family == family
            if same_family and (ep.local is None or local is None or ep.local == local) \
                    and ep.zone == zone:
                raise RouteError(errno.EADDRINUSE, "address in use")
        fam = family or (0 if local is None else (6 if len(local) == 16 else 4))
        ep = UdpEndpoint(self, fam, local, port, zone, rcvbuf=st.limits.udp_rcvbuf)
        self.endpoints.setdefault(port, []).append(ep)
        return ep

    def _ephemeral(self) -> int:
        rng = self.st.rng
        for _ in range(64):
            p = rng.randint(EPHEMERAL_LOW, EPHEMERAL_HIGH)     # RFC 6056 §3.3.1
            if p not in self.endpoints:
                return p
        for p in range(EPHEMERAL_LOW, EPHEMERAL_HIGH + 1):
            if p not in self.endpoints:
                return p
        raise RouteError(errno.EADDRINUSE, "no free ephemeral port")

    def close(self, ep: UdpEndpoint) -> None:
        ep.closed = True
        eps = self.endpoints.get(ep.port, [])
        if ep in eps:
            eps.remove(ep)
        if not eps:
            self.endpoints.pop(ep.port, None)

    def send(self, ep: UdpEndpoint, data: bytes, dst: bytes, port: int, zone: int, now: int) -> int:
        st = self.st
        if len(data) + 8 > max_l4_len(dst):
            raise message_too_long()
        route = ep.route
        cached = route is not None and route.dst == dst and route.zone == (zone if needs_zone(dst) else 0) \
            and st.route_valid(route)
        if not cached:
            route = st.route_output(dst, zone, ep.local, now)
            ep.route = route
        assert route is not None
        seg = build_udp(route.src, route.dst, ep.port, port, data)
        st.stats.count("udp", "out_datagrams")
        st.ip_send(route, PROTO_UDP, seg, now, cached=cached)
        return len(data)

    def _match(self, f: Frame, zone: int) -> UdpEndpoint | None:
        eps = self.endpoints.get(f.dport)
        if not eps:
            return None
        fam = 6 if len(f.dst) == 16 else 4
        best: UdpEndpoint | None = None
        for ep in eps:
            if ep.family and ep.family != fam:
                continue
            if ep.local is not None and ep.local != f.dst:
                continue
            if ep.local is not None and needs_zone(ep.local) and ep.zone != zone:
                continue
            if ep.remote is not None and (ep.remote[0] != f.src or ep.remote[1] != f.sport):
                continue
            score = (ep.remote is not None) * 2 + (ep.local is not None)
            if best is None or score > (best.remote is not None) * 2 + (best.local is not None):
                best = ep
        return best

    def handle(self, f: Frame, rcvif: int, now: int) -> None:
        st = self.st
        if not f.csum_ok:
            st.stats.drop(Drop.BAD_CHECKSUM)
            return
        st.stats.count("udp", "in_datagrams")
        ulen = int.from_bytes(f.buf[f.l4_off + 4:f.l4_off + 6], "big")
        if ulen < 8 or ulen > f.ip_end - f.l4_off:
            st.stats.drop(Drop.UDP_BAD_LENGTH)
            return
        zone = rcvif if needs_zone(f.dst) or needs_zone(f.src) else 0
        ep = self._match(f, zone)
        if ep is None:
            st.stats.drop(Drop.UDP_NO_PORT)
            if not (is_multicast6(f.dst) if len(f.dst) == 16 else is_multicast4(f.dst)):
                rif = st.interfaces.get(rcvif)
                if rif is not None:
                    if len(f.dst) == 16:
                        st.icmp6.error(f, 1, 4, 0, rif, now)     # port unreachable
                    else:
                        st.ip4.icmp_error(f, 3, 3, rif, now)
            return
        data = bytes(f.buf[f.l4_off + 8:f.l4_off + ulen])
        if ep.queued_bytes + len(data) > ep.rcvbuf:
            st.stats.drop(Drop.UDP_RCVBUF_FULL)
            return
        ep.queue.append(Datagram(data, f.src, f.sport, rcvif if needs_zone(f.src) else 0, f.dst))
        ep.queued_bytes += len(data)
        st.emit(Readable(ep))

    def on_icmp_error(self, local: bytes, lport: int, remote: bytes, rport: int, zone: int,
                      err: int, info: int, now: int) -> None:
        for ep in self.endpoints.get(lport, []):
            if ep.remote is not None and ep.remote[0] == remote and ep.remote[1] == rport:
                ep.error = err
                self.st.emit(SocketError(ep, err))
                return
        for ep in self.endpoints.get(lport, []):
            # Unconnected endpoints learn of it too (Linux IP_RECVERR-less behaviour is to
            # ignore; we report it so `tapstack connect -u` can print it). RFC 5927 §4.1:
            # never a connected endpoint for another peer, nor one bound to another address.
            if ep.remote is not None or (ep.local is not None and ep.local != local):
                continue
            ep.error = err
            self.st.emit(SocketError(ep, err))
            return
        self.st.stats.drop(Drop.ICMP_ERROR_NO_MATCH)    # RFC 5927: quotes nothing of ours

    def poll(self, now: int) -> None:
        pass

    def poll_at(self) -> int | None:
        return None

    def sockets(self) -> list[UdpEndpoint]:
        return [ep for eps in self.endpoints.values() for ep in eps]

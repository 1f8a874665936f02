"""Stack: the deterministic engine. Frames and time in; frames and events out.

Entry points (all take ``now``): ``receive``, ``poll``; configuration calls
(``add_interface``, ``add_address``, ``add_route`` ...); and the IP service used
by transports (``route_output``, ``ip_send``). Output frames collect in ``tx``
(``drain_tx``), socket events in ``events`` (``drain_events``).

The loopback shortcut (RFC 4007 zones kept, FreeBSD D35732 design): a packet to
one of our own addresses is routed to ifindex 1 (``lo``) with ``origifp`` = the
interface owning the address. It goes onto ``_loop_q`` and is received at the
end of the current core call with ``origifp`` as the receive interface and the
``looped`` mark set. Input-side source validation checks that mark, never the
interface type. Cached and fresh route lookups end in the same ``OutRoute``
value, so they cannot disagree about ifp/origifp.
"""

from __future__ import annotations

import dataclasses
import errno
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.core.clock import s
from stack.core.flows import FOLD_COUNTERS, FlowContext, FlowHint
from stack.core.icmp6 import Icmp6
from stack.core.interface import (
    LOOPBACK_IFINDEX,
    Addr4,
    Addr6,
    AddrState,
    Interface,
    Kind,
    Origin,
    loopback_interface,
)
from stack.core.ip4 import Ip4
from stack.core.ip6 import Ip6
from stack.core.ipservice import OutRoute, RouteError
from stack.core.nd import Fail, Flush, NeighborCache, NudState, Pending, Solicit
from stack.core.ndproto import NdProto
from stack.core.routes import PROTO_KERNEL, PROTO_LOCAL, PROTO_STATIC, Route, RouteTable
from stack.core.srcsel import select_source4, select_source6
from stack.core.stats import Drop, Stats
from stack.core.udp import UdpLayer
from stack.wire.addr import (
    fmt,
    fmt_mac,
    is_link_local6,
    is_multicast4,
    is_multicast6,
    link_local_from_mac,
    mask_prefix,
    multicast_mac,
    needs_zone,
    solicited_node,
)
from stack.wire.errors import ParseError
from stack.wire.ethernet import eth_header
from stack.wire.frame import parse_frame
from stack.wire.frame_types import ETH_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame
from stack.wire.gso import (
    F_DATA_VALID,
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    GsoChain,
    Offload,
    OffloadBytes,
    complete_checksum,
    gso_segment,
    joined,
    offload_of,
)

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 0: "hopopt", 44: "frag", 59: "none"}
LOOP_ETH = {et: bytes(12) + et.to_bytes(2, "big") for et in (ETHERTYPE_IPV6, ETHERTYPE_IPV4)}
LOOP_BUDGET = 10_000          # looped packets handled per core call (no livelock)
PMTU_EXPIRY = s(600)          # RFC 8201 §4: at least 5 minutes
OUT_CACHE_MAX = 1024          # route_output_cached decisions kept (emptied when full)
FLOW_HINTS_MAX = 256          # hints one core call may leave for the runtime (bounded)
_NO_OWNERS: list[tuple[Interface, Addr6]] = []
# The largest packet an IP header can describe, whatever the link MTU (lo has 65536):
# IPv4 Total Length counts the header (RFC 791); IPv6 Payload Length does not (RFC 8200
# §3; jumbograms, RFC 2675, are not supported). Path MTU and the TCP MSS stop here.
MAX_PACKET4 = 65535
MIN_TCP_BUF = 4096             # smaller TCP buffers are raised to this (two full segments)
MAX_PACKET6 = 65535 + 40


@dataclass(slots=True)
class Limits:
    """Every table and queue is bounded; these are the bounds (config ``[limits]``)."""

    neighbor_cache_max: int = 2048
    nd_queue_max: int = 16
    arp_cache_max: int = 2048
    icmp_error_rate: float = 100.0      # token bucket: errors per second ...
    icmp_error_burst: int = 50          # ... and burst (RFC 4443 §2.4(f))
    reasm_max_bytes: int = 4 * 1024 * 1024
    reasm_timeout: int = s(60)          # RFC 8200 §4.5
    udp_rcvbuf: int = 256 * 1024
    # TCP receive and send buffer per connection (the window it can advertise / the data
    # it can have in flight; memory is used only as data waits): 1 MiB, between Linux's
    # tcp_rmem/tcp_wmem defaults and their autotuned maximum (6 MiB / 4 MiB)
    tcp_rcvbuf: int = 1024 * 1024
    tcp_sndbuf: int = 1024 * 1024
    # What all TCP buffers together may hold (send, receive, out of order; Linux tcp_mem):
    # beyond it a buffer keeps only a 4 KB floor of its own (TcpMemory); 64 connections
    # with both buffers full
    tcp_mem: int = 128 * 1024 * 1024
    # TCP connections outside TIME-WAIT (about 10 KB each when idle): SYNs beyond are
    # dropped and counted, connect() fails with ENOBUFS
    tcp_max_connections: int = 32768
    loop_queue_max: int = 4096
    pmtu_max: int = 1024


class Stack:
    """The engine. One per stack instance; no global state."""

    def __init__(self, *, rng: random.Random | None = None, now: int = 0, forwarding: bool = False,
                 limits: Limits | None = None) -> None:
        self.rng = rng if rng is not None else random.Random(0)
        self.limits = limits or Limits()
        self.forwarding = forwarding
        self.stats = Stats()
        self.routes = RouteTable()
        self.interfaces: dict[int, Interface] = {}
        # address -> [(interface, Addr6)] in interface order, rebuilt after any change to
        # the interfaces or their IPv6 addresses (_addrs6_changed): owner6/is_local_address
        # run for every packet
        self._addr6_index: dict[bytes, list[tuple[Interface, Addr6]]] | None = None
        self._by_name: dict[str, int] = {}
        self.tx: list[tuple[int, bytes]] = []
        # The runtime writes GsoChain frames (a TSO segment's headers and payload, not
        # joined) with one writev; any other consumer of ``tx`` gets joined bytes.
        self.tx_chains = False
        self.events: list[object] = []
        self.tracer: Callable[[str], None] | None = None
        self.log: list[tuple[str, str]] = []         # (level, message): events that matter
        self.loop_tap: Callable[[bytes], None] | None = None   # pcap of lo
        self._loop_q: deque[tuple[int, int, bytes]] = deque()
        self._depth = 0
        self._next_ifindex = 2
        self.pmtu: dict[bytes, tuple[int, int]] = {}  # dst -> (mtu, expires_at)
        self._out_cache: dict[tuple[bytes, int, bytes | None], tuple[OutRoute, int | None]] = {}
        self.nd = NeighborCache(self.rng, max_entries=self.limits.neighbor_cache_max,
                                queue_max=self.limits.nd_queue_max, stats=self.stats)
        self.arp = NeighborCache(self.rng, max_entries=self.limits.arp_cache_max,
                                 queue_max=self.limits.nd_queue_max, stats=self.stats)
        self.ip6 = Ip6(self)
        self.ip4 = Ip4(self)
        self.icmp6 = Icmp6(self)
        self.ndp = NdProto(self)
        self.udp = UdpLayer(self)
        self.tcp: Any = None
        # Flow hints for the runtime's fast path (stack/core/flows.py): None = not collected
        self.flow_hints: list[FlowHint] | None = None
        self._flow_ctx: FlowContext | None = None
        self._flow_epoch = 0
        self._attach_tcp()
        self._add_loopback(now)

    def _attach_tcp(self) -> None:
        try:
            from stack.core.tcp.layer import TcpLayer
        except ImportError:  # pragma: no cover - during bring-up only
            return
        self.tcp = TcpLayer(self)
        self._tcp_buffers()

    def _tcp_buffers(self) -> None:
        """``limits.tcp_rcvbuf``/``tcp_sndbuf`` into the TCP configuration (connections opened
        later); ``limits.tcp_mem`` into the layer's pool and ``tcp_max_connections`` into its
        bound (both at once)."""
        if self.tcp is not None:
            lim = self.limits
            self.tcp.mem.limit = lim.tcp_mem
            self.tcp.max_connections = lim.tcp_max_connections
            self.tcp.config = dataclasses.replace(self.tcp.config, rcv_buf=max(MIN_TCP_BUF, lim.tcp_rcvbuf),
                                                  snd_buf=max(MIN_TCP_BUF, lim.tcp_sndbuf))

    # -- interfaces and addresses ----------------------------------------

    def _add_loopback(self, now: int) -> None:
        lo = loopback_interface()
        self.interfaces[LOOPBACK_IFINDEX] = lo
        self._addr6_index = None
        self._by_name["lo"] = LOOPBACK_IFINDEX
        for a6 in lo.addrs6:
            self._add_local_route(a6.addr, LOOPBACK_IFINDEX)
        for a4 in lo.addrs4:
            self._add_local_route(a4.addr, LOOPBACK_IFINDEX)
            self.routes.add(Route(mask_prefix(a4.addr, a4.plen), a4.plen, LOOPBACK_IFINDEX,
                                  LOOPBACK_IFINDEX, proto=PROTO_KERNEL, src=a4.addr))

    def ifindex(self, name: str) -> int:
        """ifindex of an interface name; KeyError when there is none."""
        return self._by_name[name]

    def ifname(self, ifindex: int) -> str:
        iface = self.interfaces.get(ifindex)
        return iface.name if iface is not None else f"if{ifindex}"

    def add_interface(self, name: str, mac: bytes, mtu: int = 1500, *, accept_ra: bool = False,
                      now: int = 0, dad_transmits: int = 1, optimistic_dad: bool = False) -> int:
        if name in self._by_name:
            raise ValueError(f"interface {name} exists")
        ifx = self._next_ifindex
        self._next_ifindex += 1
        iface = Interface(ifx, name, Kind.ETHERNET, mac, mtu, accept_ra=accept_ra)
        iface.nd.dup_addr_detect_transmits = dad_transmits
        iface.nd.optimistic_dad = optimistic_dad      # RFC 4429, also for the link-local
        iface.nd.reachable_time = NeighborCache.random_reachable_time(
            self.rng, iface.nd.base_reachable_time)
        iface.nd.link_mtu = mtu
        self.interfaces[ifx] = iface
        self._addr6_index = None
        self._by_name[name] = ifx
        self.nd.set_params(ifx, iface.nd.reachable_time, iface.nd.retrans_timer)
        self.arp.set_params(ifx, iface.nd.reachable_time, iface.nd.retrans_timer)
        self.ndp.join(iface, bytes.fromhex("ff020000000000000000000000000001"), now)
        self.routes.add(Route(bytes.fromhex("fe80" + "00" * 14), 64, ifx, ifx, zone=ifx,
                              proto=PROTO_KERNEL))
        self.add_address(ifx, link_local_from_mac(mac), 64, now, origin=Origin.LINK)
        self.ndp.interface_up(iface, now)
        self.note("info", f"{name}: interface added, lladdr {fmt_mac(mac)} mtu {mtu}")
        return ifx

    def add_address(self, ifindex: int, addr: bytes, plen: int, now: int = 0, *,
                    origin: Origin = Origin.STATIC, preferred_until: int | None = None,
                    valid_until: int | None = None) -> None:
        iface = self.interfaces[ifindex]
        if len(addr) == 4:
            if iface.find4(addr) is None:
                iface.addrs4.append(Addr4(addr, plen, origin))
                self._add_local_route(addr, ifindex)
                if plen < 32 and not iface.loopback:
                    self.routes.add(Route(mask_prefix(addr, plen), plen, ifindex, ifindex,
                                          proto=PROTO_KERNEL, src=addr))
                if origin is not Origin.LOOPBACK:
                    self.note("info", f"{iface.name}: address {fmt(addr)}/{plen} added")
            return
        if iface.find6(addr) is not None:
            return
        skip_dad = iface.loopback or iface.nd.dup_addr_detect_transmits == 0
        a = Addr6(addr, plen, AddrState.PREFERRED if skip_dad else AddrState.TENTATIVE, origin,
                  preferred_until=preferred_until, valid_until=valid_until)
        iface.addrs6.append(a)
        self._addr6_index = None
        zone = ifindex if is_link_local6(addr) else 0
        self._add_local_route(addr, ifindex, zone)
        if plen < 128 and not is_link_local6(addr) and not iface.loopback:
            self.routes.add(Route(mask_prefix(addr, plen), plen, ifindex, ifindex,
                                  proto=PROTO_KERNEL))
        if not iface.loopback:
            # RFC 4862 §5.4.2: join the solicited-node group before DAD (and always).
            self.ndp.join(iface, solicited_node(addr), now)
        if not skip_dad:
            self.ndp.start_dad(iface, a, now)
        else:
            self.note("info", f"{iface.name}: address {fmt(addr)}/{plen} added")

    def remove_address(self, ifindex: int, addr: bytes, now: int = 0) -> bool:
        iface = self.interfaces[ifindex]
        if len(addr) == 4:
            a4 = iface.find4(addr)
            if a4 is None:
                return False
            iface.addrs4.remove(a4)
            self.routes.remove(addr, 32, proto=PROTO_LOCAL)
            if a4.plen < 32:
                self.routes.remove(mask_prefix(addr, a4.plen), a4.plen, proto=PROTO_KERNEL,
                                   ifindex=ifindex)
            return True
        a6 = iface.find6(addr)
        if a6 is None:
            return False
        iface.addrs6.remove(a6)
        self._addr6_index = None
        zone = ifindex if is_link_local6(addr) else 0
        self.routes.remove(addr, 128, zone, proto=PROTO_LOCAL)
        if a6.plen < 128 and not is_link_local6(addr) and not any(
                b.plen == a6.plen and mask_prefix(b.addr, b.plen) == mask_prefix(addr, a6.plen)
                for b in iface.addrs6):
            self.routes.remove(mask_prefix(addr, a6.plen), a6.plen, proto=PROTO_KERNEL,
                               ifindex=ifindex)
        self.ndp.address_removed(iface, a6, now)
        self.note("info", f"{iface.name}: address {fmt(addr)}/{a6.plen} removed")
        return True

    def _add_local_route(self, addr: bytes, owner: int, zone: int = 0) -> None:
        self.routes.add(Route(addr, len(addr) * 8, LOOPBACK_IFINDEX, owner, zone=zone,
                              proto=PROTO_LOCAL, src=addr))

    def add_route(self, dst: bytes, plen: int, *, gateway: bytes | None = None, gw_zone: int = 0,
                  ifindex: int | None = None, src: bytes | None = None, now: int = 0,
                  proto: str = PROTO_STATIC, metric: int = 0, expires_at: int | None = None) -> Route:
        """Add a route; the transmit interface comes from ``ifindex``, the gateway's
        zone, or the connected route that holds the gateway (as ``ip route`` does)."""
        if gateway is not None and needs_zone(gateway):
            if not gw_zone:
                gw_zone = ifindex or 0
            if not gw_zone:
                raise RouteError(errno.EINVAL, f"gateway {fmt(gateway)} is link-local: name its "
                                 "interface (addr%ifname or dev)")
            if ifindex is not None and ifindex != gw_zone:
                raise RouteError(errno.EINVAL, "gateway zone and dev disagree")
            ifindex = gw_zone
        if ifindex is None:
            if gateway is None:
                raise RouteError(errno.EINVAL, "a route needs a gateway or a device")
            r = self.routes.lookup(gateway, 0)
            if r is None or r.gateway is not None or r.local:
                raise RouteError(errno.ENETUNREACH, f"gateway {fmt(gateway)} is not on a "
                                 "connected network")
            ifindex = r.ifindex
        if ifindex not in self.interfaces:
            raise RouteError(errno.ENODEV, f"no interface with index {ifindex}")
        if src is not None and not self.is_local_address(src, 0):
            raise RouteError(errno.EADDRNOTAVAIL, f"src {fmt(src)} is not a local address")
        route = Route(mask_prefix(dst, plen), plen, ifindex, ifindex, gateway=gateway,
                      gw_zone=gw_zone if gateway is not None and needs_zone(gateway) else 0,
                      src=src, proto=proto, metric=metric, expires_at=expires_at)
        self.routes.add(route)
        if proto == PROTO_STATIC:
            self.note("info", f"route added: {route.describe(self.ifnames())}")
        return route

    def del_route(self, dst: bytes, plen: int, now: int = 0, zone: int = 0) -> list[Route]:
        gone = [r for r in self.routes.remove(dst, plen, zone) if r.proto != PROTO_LOCAL]
        for r in gone:
            self.note("info", f"route deleted: {r.describe(self.ifnames())}")
        return gone

    def set_forwarding(self, on: bool) -> None:
        """Router mode on or off while running (SIGHUP). Every use reads the flag per
        packet: forwarding, the NA Router flag, RA and Redirect acceptance change at once."""
        self.forwarding = on
        self._flow_epoch += 1

    def set_limits(self, limits: Limits) -> None:
        """New bounds while running (SIGHUP). Caches and queues take them at the next
        insert (entries above a lowered cache bound go as they age or are evicted), the
        ICMP error token buckets at once; ``udp_rcvbuf``, ``tcp_rcvbuf`` and ``tcp_sndbuf``
        are for sockets opened later, ``tcp_mem`` bounds every connection's next take."""
        self.limits = limits
        self._flow_epoch += 1
        self._tcp_buffers()
        for cache, most in ((self.nd, limits.neighbor_cache_max), (self.arp, limits.arp_cache_max)):
            cache.max_entries = most
            cache.queue_max = limits.nd_queue_max
        for bucket in (self.icmp6.bucket, self.ip4.bucket):
            bucket.rate, bucket.burst = limits.icmp_error_rate, limits.icmp_error_burst
            bucket.tokens = min(bucket.tokens, float(limits.icmp_error_burst))

    def set_nd_params(self, ifindex: int, *, base_reachable_time: int | None = None,
                      retrans_timer: int | None = None, delay_first_probe_time: int | None = None,
                      gc_stale_time: int | None = None) -> None:
        """Per-interface ND timing in ns (config ``[interface.nd]``, Linux neigh
        sysctls); None keeps a value. RAs may still override ReachableTime and
        RetransTimer (RFC 4861 §6.3.4). Applies from the next state change."""
        iface = self.interfaces[ifindex]
        nd = iface.nd
        for name, value in (("base_reachable_time", base_reachable_time), ("retrans_timer", retrans_timer),
                            ("delay_first_probe_time", delay_first_probe_time),
                            ("gc_stale_time", gc_stale_time)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if base_reachable_time is not None:
            nd.base_reachable_time = base_reachable_time
            nd.reachable_time = NeighborCache.random_reachable_time(self.rng, base_reachable_time)
        if retrans_timer is not None:
            nd.retrans_timer = retrans_timer
        if delay_first_probe_time is not None:
            nd.delay_first_probe_time = delay_first_probe_time
        if gc_stale_time is not None:
            nd.gc_stale_time = gc_stale_time
        for cache in (self.nd, self.arp):
            cache.set_params(ifindex, nd.reachable_time, nd.retrans_timer, nd.delay_first_probe_time,
                             nd.gc_stale_time)

    def flush_neighbors(self, ifindex: int | None = None, now: int = 0) -> int:
        """``tapstack neigh flush [dev IF]`` (``ip neigh flush``): remove the dynamic
        entries of the ND and ARP caches, PERMANENT ones stay. Packets waiting on
        an INCOMPLETE entry are dropped (counted ``nd_flushed``), as Linux does."""
        n = self.nd.flush(ifindex) + self.arp.flush(ifindex)
        self.ndp.rdisc.rank_routers(now)      # §6.3.6: routers without an entry rank lower
        if n:
            where = f" on {self.ifname(ifindex)}" if ifindex is not None else ""
            self.note("info", f"neighbor cache flushed{where}: {n} entries")
        return n

    def add_neighbor(self, ifindex: int, addr: bytes, lladdr: bytes, now: int = 0) -> None:
        cache = self.nd if len(addr) == 16 else self.arp
        cache.add_permanent(ifindex, addr, lladdr, now)

    def remove_interface(self, ifindex: int, now: int = 0) -> None:
        iface = self.interfaces.pop(ifindex, None)
        self._addr6_index = None
        if iface is None or iface.loopback:
            return
        self._by_name.pop(iface.name, None)
        self.routes.remove_where(lambda r: r.ifindex == ifindex or r.aifp == ifindex
                                 or r.zone == ifindex)
        self.nd.remove_interface(ifindex)
        self.arp.remove_interface(ifindex)
        self.note("warning", f"{iface.name}: interface removed")

    def set_link(self, ifindex: int, up: bool, now: int = 0) -> None:
        iface = self.interfaces.get(ifindex)
        if iface is None or iface.up == up:
            return
        iface.up = up
        self.routes.bump()
        self.note("info", f"{iface.name}: link {'up' if up else 'down'}")
        if up and not iface.loopback:
            self.ndp.link_up(iface, now)      # RFC 4862 §5.4: DAD again; RFC 4861 §6.3.7: RS

    def ifnames(self) -> dict[int, str]:
        return {i: f.name for i, f in self.interfaces.items()}

    def ready(self) -> bool:
        """No configured address is still tentative (the daemon's ready line);
        optimistic ones (RFC 4429) are usable and do not hold it back."""
        return not any(a.state is AddrState.TENTATIVE
                       for iface in self.interfaces.values() for a in iface.addrs6)

    def note(self, level: str, message: str) -> None:
        """An event that matters (never per packet); the runtime forwards it to logging."""
        self.log.append((level, message))
        if len(self.log) > 1000:
            del self.log[:500]

    # -- frames in --------------------------------------------------------

    def receive(self, ifindex: int, frame: bytes, now: int, offload: Offload | None = None) -> None:
        """One Ethernet frame from a link. Never raises on bad input. Virtio-net
        metadata comes with the frame (``OffloadBytes``) or beside plain bytes
        (``offload``: the runtime's reader saves a 64 KB copy that way)."""
        self._depth += 1
        try:
            self._receive(ifindex, frame, now, offload)
        finally:
            self._depth -= 1
        if self._depth == 0 and self._loop_q:
            self._run_loopback(now)

    def begin_batch(self) -> None:
        """Several frames read at once follow (``receive`` each, then ``end_batch``):
        TCP sends for in-order segments of established connections once, at the end."""
        if self.tcp is not None:
            self.tcp.begin_batch()

    def end_batch(self, now: int) -> None:
        self._depth += 1
        try:
            if self.tcp is not None:
                self.tcp.end_batch(now)
        finally:
            self._depth -= 1
        if self._depth == 0:
            self._run_loopback(now)

    def _receive(self, ifindex: int, frame: bytes, now: int, off: Offload | None = None) -> None:
        iface = self.interfaces.get(ifindex)
        if iface is None or iface.kind is Kind.LOOPBACK:
            self.stats.drop(Drop.IFACE_UNKNOWN)
            return
        c = iface.counters
        c.rx_packets += 1
        c.rx_bytes += len(frame)
        if not iface.up:
            c.rx_dropped += 1
            self.stats.drop(Drop.IFACE_DOWN)
            return
        if off is None and type(frame) is not bytes:
            off = offload_of(frame)
        try:
            if off is None:
                f = parse_frame(frame)
            else:
                # NEEDS_CSUM on a TCP checksum: the parser need not sum up to 64 KB that
                # _offload_rx would accept anyway (it decides the same without the hint)
                f = parse_frame(frame, off.csum_start if off.flags & F_NEEDS_CSUM and off.csum_offset == 16 else 0)
        except ParseError as e:
            c.rx_dropped += 1
            self.stats.drop("parse_" + e.reason)
            return
        if off is not None:
            checked = self._offload_rx(f, off)
            if checked is None:
                c.rx_dropped += 1
                return
            f = checked
        if f.eth_dst != iface.mac and not f.eth_dst[0] & 1:
            self.stats.drop(Drop.ETH_NOT_FOR_US)
            return
        et = f.ethertype
        if et == ETHERTYPE_IPV6:
            self.ip6.handle(iface, f, now, looped=False)
        elif et == ETHERTYPE_IPV4:
            self.ip4.handle(iface, f, now, looped=False)
        elif et == ETHERTYPE_ARP:
            self.ip4.handle_arp(iface, f, now)
        else:
            self.stats.drop(Drop.ETHERTYPE_UNKNOWN)

    def _offload_rx(self, f: Frame, off: Offload) -> Frame | None:
        """A frame the link read with a virtio-net header (``stack.wire.gso``).

        NEEDS_CSUM: the kernel left the TCP/UDP checksum partial (CHECKSUM_PARTIAL);
        the frame never crossed a wire, so it counts as verified when the header
        points at that checksum. DATA_VALID: the kernel verified it. GSO: one TCP
        packet of up to 64 KB standing for ``gso_size``-byte segments; TCP takes it
        whole, forwarding keeps or splits it (``transmit``). Other GSO types are
        not enabled on our TAPs and are dropped (counted). The result carries ``off``
        in ``offload`` (forwarding reads it there)."""
        if off.gso and (off.gso not in (GSO_TCPV4, GSO_TCPV6) or f.proto != 6 or f.is_fragment
                        or not off.gso_size):
            self.stats.drop("offload_bad_gso")
            return None
        if off.csum_trusted and not f.csum_ok and f.proto in (6, 17) and not f.is_fragment \
                and (off.flags & F_DATA_VALID
                     or (off.csum_start == f.l4_off and off.csum_offset == (16 if f.proto == 6 else 6))):
            return f._replace(csum_ok=True, offload=off)
        return f._replace(offload=off)

    def _run_loopback(self, now: int) -> None:
        """Receive what was sent to ourselves, on origifp, marked looped."""
        budget = LOOP_BUDGET
        self._depth += 1
        try:
            while self._loop_q and budget:
                budget -= 1
                origifp, et, packet = self._loop_q.popleft()
                lo = self.interfaces[LOOPBACK_IFINDEX]
                lo.counters.rx_packets += 1
                lo.counters.rx_bytes += len(packet)
                iface = self.interfaces.get(origifp)
                frame = LOOP_ETH[et] + packet
                if self.loop_tap is not None:
                    self.loop_tap(frame)
                if iface is None:
                    self.stats.drop(Drop.IFACE_UNKNOWN)
                    continue
                try:
                    f = parse_frame(frame)
                except ParseError as e:
                    self.stats.drop("parse_" + e.reason)
                    continue
                if et == ETHERTYPE_IPV6:
                    self.ip6.handle(iface, f, now, looped=True)
                else:
                    self.ip4.handle(iface, f, now, looped=True)
        finally:
            self._depth -= 1

    # -- timers -------------------------------------------------------------

    def poll(self, now: int) -> None:
        """Do every piece of timed work that is due, and deliver looped packets."""
        self._depth += 1
        try:
            self._nd_actions(self.nd.poll(now), now)
            self._nd_actions(self.arp.poll(now), now)
            self.ndp.poll(now)
            self.ip6.poll(now)
            self.ip4.poll(now)
            self.udp.poll(now)
            if self.tcp is not None:
                self.tcp.poll(now)
            if self.routes.next_expiry() is not None:
                for r in self.routes.expire(now):
                    self.note("info", f"route expired: {r.describe(self.ifnames())}")
        finally:
            self._depth -= 1
        self._run_loopback(now)
        self._trace_nd()

    def poll_at(self) -> int | None:
        """The earliest deadline of any component (None: nothing scheduled)."""
        if self._loop_q:
            return 0
        best = self.tcp.poll_at() if self.tcp is not None else None
        # a running minimum, no lists: asked after every batch of frames
        for t in (self.nd.poll_at(), self.arp.poll_at(), self.ndp.poll_at(), self.ip6.poll_at(),
                  self.ip4.poll_at(), self.udp.poll_at(), self.routes.next_expiry()):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def drain_tx(self) -> list[tuple[int, bytes]]:
        out, self.tx = self.tx, []
        return out

    def drain_events(self) -> list[object]:
        out, self.events = self.events, []
        return out

    def emit(self, event: object) -> None:
        self.events.append(event)

    # -- IP service for transports -----------------------------------------

    def is_local_address(self, addr: bytes, zone: int) -> bool:
        """addr is a usable address of ours (in zone, for link-local)."""
        if len(addr) == 4:
            for ifc in self.interfaces.values():      # twice per IPv4 packet: no generator
                for a4 in ifc.addrs4:
                    if a4.addr == addr:
                        return True
            return False
        if needs_zone(addr):
            iface = self.interfaces.get(zone)
            a = iface.find6(addr) if iface is not None else None
            return a is not None and a.usable
        # per received packet: a loop, not any() over a generator
        for _iface, a in self._owners6(addr):  # noqa: SIM110
            if a.usable:
                return True
        return False

    def _owners6(self, addr: bytes) -> list[tuple[Interface, Addr6]]:
        """Every (interface, Addr6) holding addr, in interface order."""
        index = self._addr6_index
        if index is None:
            index = {}
            for iface in self.interfaces.values():
                for a in iface.addrs6:
                    index.setdefault(a.addr, []).append((iface, a))
            self._addr6_index = index
        return index.get(addr, _NO_OWNERS)

    def owner6(self, addr: bytes, zone: int) -> tuple[Interface, Addr6] | None:
        """Which interface holds addr (any state). Link-local: only in its zone."""
        if needs_zone(addr):
            iface = self.interfaces.get(zone)
            if iface is None:
                return None
            a = iface.find6(addr)
            return (iface, a) if a is not None else None
        owners = self._owners6(addr)
        return owners[0] if owners else None

    def route_output(self, dst: bytes, zone: int = 0, src: bytes | None = None,
                     now: int = 0) -> OutRoute:
        """The one output decision (ip6_output/ip_output): transmit interface,
        address interface, next hop, source, MTU and the table generation."""
        if len(dst) == 16:
            return self._route6(dst, zone, src, now)
        if len(dst) == 4:
            return self._route4(dst, src, now)
        raise RouteError(errno.EINVAL, "bad destination address")

    def route_output_cached(self, dst: bytes, zone: int, src: bytes | None, now: int) -> tuple[OutRoute, bool]:
        """``route_output`` for per-packet answers (echo replies): (route, from_cache).
        A decision is reused within its routing gen (every route, address and link change
        bumps it) until the first route expiry; never for a destination with a learned
        path MTU (that one ages). RouteError as route_output, never cached."""
        cache = self._out_cache
        key = (dst, zone, src)
        hit = cache.get(key)
        if hit is not None:
            route, until = hit
            if route.gen == self.routes.gen and (until is None or now < until):
                return route, True
        route = self.route_output(dst, zone, src, now)
        if dst not in self.pmtu:
            if len(cache) >= OUT_CACHE_MAX:
                cache.clear()
            cache[key] = (route, self.routes.stable_until(now))
        return route, False

    def _route6(self, dst: bytes, zone: int, src: bytes | None, now: int) -> OutRoute:
        if needs_zone(dst):
            if not zone:
                raise RouteError(errno.EINVAL, f"{fmt(dst)} is link-local: give its zone "
                                 "(addr%ifname)")
            if zone not in self.interfaces:
                raise RouteError(errno.ENODEV, f"no interface with index {zone}")
        else:
            zone = 0
        if is_multicast6(dst):
            if not zone:
                raise RouteError(errno.ENETUNREACH, "multicast destination needs an interface")
            ifp = aifp = zone
            nexthop, nh_zone, local, r_src = dst, zone, False, None
        else:
            r = self.routes.lookup(dst, zone, now)
            if r is None:
                raise RouteError(errno.ENETUNREACH, f"no route to {fmt(dst)}")
            ifp, aifp, local, r_src = r.ifindex, r.aifp, r.local, r.src
            if r.gateway is not None:
                nexthop, nh_zone = r.gateway, r.gw_zone
            else:
                nexthop, nh_zone = dst, zone or (ifp if needs_zone(dst) else 0)
        iface = self.interfaces[ifp]
        if not iface.up:
            raise RouteError(errno.ENETDOWN, f"{iface.name} is down")
        if src is not None:
            owner = self.owner6(src, aifp if needs_zone(src) else 0)
            if owner is None or not owner[1].usable:
                raise RouteError(errno.EADDRNOTAVAIL, f"{fmt(src)} is not a usable local address")
            if needs_zone(src) and needs_zone(dst) and owner[0].ifindex != zone:
                raise RouteError(errno.EINVAL, "source and destination are in different zones")
            src_zone = owner[0].ifindex if needs_zone(src) else 0
        else:
            picked = select_source6(self.interfaces.values(), dst, zone, aifp, r_src)
            if picked is None:
                raise RouteError(errno.EADDRNOTAVAIL, f"no usable source address for {fmt(dst)}")
            src, owner_if = picked
            src_zone = owner_if if needs_zone(src) else 0
        return OutRoute(dst, zone, src, src_zone, ifp, aifp, nexthop, nh_zone,
                        self.path_mtu(dst, iface.mtu, now), self.routes.gen, local)

    def _route4(self, dst: bytes, src: bytes | None, now: int) -> OutRoute:
        """IPv4 output decision; the gateway may be IPv6 (RFC 5549/8950), which
        changes the next hop only: the source is chosen for the IPv4 destination
        (PROTOCOLS.md §2.1 order, srcsel.select_source4), never from the gateway's
        family (the FreeBSD D31868 / 2025 freebsd-net failure)."""
        r = self.routes.lookup(dst, 0, now)
        if r is None:
            raise RouteError(errno.ENETUNREACH, f"no route to {fmt(dst)}")
        iface = self.interfaces[r.ifindex]
        if not iface.up:
            raise RouteError(errno.ENETDOWN, f"{iface.name} is down")
        # RFC 1122 §3.2.1.3(g): all of 127/8 is this host (Linux "local 127.0.0.0/8").
        local = r.local or (iface.loopback and dst[0] == 127)
        if src is not None:
            if not (self.is_local_address(src, 0) or (local and src[0] == 127)):
                raise RouteError(errno.EADDRNOTAVAIL, f"{fmt(src)} is not a local address")
        else:
            out_if = r.aifp if local else r.ifindex
            r_src = r.src if r.src is not None and self.is_local_address(r.src, 0) else None
            src = select_source4(self.interfaces, dst, out_if, r_src)
            if src is None:
                # FreeBSD in_pcbladdr's answer, kept: no IPv4 address anywhere.
                raise RouteError(errno.EHOSTUNREACH, f"No route to host: no IPv4 source address "
                                 f"for {fmt(dst)}")
        if r.gateway is not None:
            nexthop, nh_zone = r.gateway, r.gw_zone
        else:
            nexthop, nh_zone = dst, 0
        return OutRoute(dst, 0, src, 0, r.ifindex, r.aifp, nexthop, nh_zone,
                        self.path_mtu(dst, iface.mtu, now), self.routes.gen, local)

    def path_mtu(self, dst: bytes, link_mtu: int, now: int) -> int:
        link_mtu = min(link_mtu, MAX_PACKET6 if len(dst) == 16 else MAX_PACKET4)
        entry = self.pmtu.get(dst)
        if entry is None:
            return link_mtu
        mtu, expires_at = entry
        if expires_at <= now:
            del self.pmtu[dst]
            return link_mtu
        return min(mtu, link_mtu)

    def learn_pmtu(self, dst: bytes, mtu: int, now: int) -> None:
        """RFC 8201: a Packet Too Big lowers the path MTU (never below 1280)."""
        mtu = max(mtu, 1280 if len(dst) == 16 else 68)
        if len(self.pmtu) >= self.limits.pmtu_max and dst not in self.pmtu:
            self.pmtu.pop(next(iter(self.pmtu)))
        self.pmtu[dst] = (mtu, now + PMTU_EXPIRY)
        self._flow_epoch += 1

    def route_valid(self, route: OutRoute) -> bool:
        return route.gen == self.routes.gen

    def confirm_reachable(self, route: OutRoute, now: int) -> None:
        if route.local:
            return
        cache = self.nd if len(route.nexthop) == 16 else self.arp
        cache.confirm(route.ifp, route.nexthop, now)

    def ip_send(self, route: OutRoute, proto: int, l4: bytes, now: int, *, cached: bool = False,
                tclass: int = 0, hop_limit: int | None = None, gso: int = 0) -> None:
        """Send a transport segment along a decided route (checksum already in l4).
        ``gso``: a TCP segment larger than the path MTU allows, standing for
        segments of ``gso`` payload bytes (only on a route whose ``tso_max`` > 0)."""
        if len(route.dst) == 16:
            self.ip6.output(route, proto, l4, now, cached=cached, tclass=tclass, hop_limit=hop_limit, gso=gso)
        else:
            self.ip4.output(route, proto, l4, now, cached=cached, tos=tclass, ttl=hop_limit, gso=gso)

    def tso_max(self, route: OutRoute) -> int:
        """Largest IP packet TCP may hand to ``ip_send`` with ``gso`` on this route
        (0: segments must fit the MTU). Only TAPs with offloads have it."""
        iface = self.interfaces.get(route.ifp)
        return iface.gso_max if iface is not None else 0

    # -- link output ----------------------------------------------------------

    def loop(self, origifp: int, ethertype: int, packet: bytes) -> None:
        """Queue a packet to ourselves; received at the end of this core call."""
        if len(self._loop_q) >= self.limits.loop_queue_max:
            self.stats.drop(Drop.LINK_TX_FULL)
            return
        lo = self.interfaces[LOOPBACK_IFINDEX]
        lo.counters.tx_packets += 1
        lo.counters.tx_bytes += len(packet)
        self._loop_q.append((origifp, ethertype, joined(packet)))

    def link_output(self, ifindex: int, nexthop: bytes, ethertype: int, packet: bytes, now: int,
                    src_hint: bytes | None = None) -> None:
        """Resolve nexthop on ifindex (ND for IPv6 next hops, also under IPv4
        payloads; ARP for IPv4 next hops) and send, or queue until resolved."""
        iface = self.interfaces.get(ifindex)
        if iface is None or iface.kind is Kind.LOOPBACK:
            self.stats.drop(Drop.IFACE_UNKNOWN)
            return
        if len(nexthop) == 16:
            if nexthop[0] == 0xFF:      # is_multicast6, inlined (per packet)
                self.transmit(iface, multicast_mac(nexthop), ethertype, packet)
                return
            # An IPv4 packet via an IPv6 next hop (RFC 8950) uses the same ND entry as
            # IPv6 traffic to that neighbor; its IPv4 source is no NS source hint.
            cache = self.nd
            hint = src_hint if src_hint is not None and len(src_hint) == 16 else None
        else:
            if nexthop == b"\xff\xff\xff\xff" or self.ip4.is_broadcast(iface, nexthop):
                self.transmit(iface, b"\xff" * 6, ethertype, packet)
                return
            if is_multicast4(nexthop):
                self.transmit(iface, multicast_mac(nexthop), ethertype, packet)
                return
            cache, hint = self.arp, src_hint
        mac = cache.lladdr_for(ifindex, nexthop, now)     # the common case: a known neighbor
        if mac is not None:
            if self._flow_ctx is not None:
                self._flow_hint(cache, iface, nexthop, mac, ethertype)
            self.transmit(iface, mac, ethertype, packet)
            if self.nd.transitions or self.arp.transitions:
                self._trace_nd()     # moves made elsewhere (e.g. confirm) are traced as before
            return
        mac, actions = cache.resolve(ifindex, nexthop, Pending(ethertype, packet), now, hint)
        if actions:
            self._nd_actions(actions, now)
        if mac is not None:
            self.transmit(iface, mac, ethertype, packet)
        self._trace_nd()

    # -- flow hints (stack/core/flows.py) -------------------------------------

    def flow_epoch(self) -> tuple[int, int, int, int]:
        """Changes whenever an installed flow hint may have become wrong."""
        return (self.routes.gen, self.nd.epoch, self.arp.epoch, self._flow_epoch)

    def _flow_hint(self, cache: NeighborCache, iface: Interface, nexthop: bytes, mac: bytes,
                   ethertype: int) -> None:
        """The packet of the pending decision leaves to a known neighbor: a hint, when
        hints are collected and the entry's next move comes from a timer, not from a
        packet (REACHABLE, DELAY, PROBE, PERMANENT; a STALE entry must see the next packet
        to go to DELAY). Every move changes the epoch, which voids the flow."""
        ctx, self._flow_ctx = self._flow_ctx, None
        hints = self.flow_hints
        if ctx is None or hints is None or len(hints) >= FLOW_HINTS_MAX:
            return
        e = cache.get(iface.ifindex, nexthop)
        if e is None or e.state is NudState.STALE or e.state is NudState.INCOMPLETE:
            return
        hints.append(FlowHint(self.flow_epoch(), ctx.family, ctx.action, ctx.in_ifindex, iface.ifindex,
                              ctx.src, ctx.dst, eth_header(mac, iface.mac, ethertype), ctx.in_mac,
                              ctx.mtu, ctx.hop_limit))

    def fastpath_fold(self, rx: dict[int, tuple[int, int]], tx: dict[int, tuple[int, int]],
                      kinds: dict[str, int]) -> None:
        """Count what the fast path did as the slow path would have: ``rx``/``tx`` map
        ifindex -> (packets, Ethernet bytes), ``kinds`` a FOLD_COUNTERS kind -> packets."""
        for ifindex, (n, nbytes) in rx.items():
            iface = self.interfaces.get(ifindex)
            if iface is not None:
                iface.counters.rx_packets += n
                iface.counters.rx_bytes += nbytes
        for ifindex, (n, nbytes) in tx.items():
            iface = self.interfaces.get(ifindex)
            if iface is not None:
                iface.counters.tx_packets += n
                iface.counters.tx_bytes += nbytes
        for kind, n in kinds.items():
            if n:
                for proto, name in FOLD_COUNTERS[kind]:
                    self.stats.count(proto, name, n)

    def transmit(self, iface: Interface, dst_mac: bytes, ethertype: int, packet: bytes) -> None:
        if type(packet) is not bytes:
            off = offload_of(packet)
            if off is not None:
                self._transmit_offload(iface, eth_header(dst_mac, iface.mac, ethertype), packet, off)
                return
            packet = joined(packet)
        frame = eth_header(dst_mac, iface.mac, ethertype) + packet
        c = iface.counters
        c.tx_packets += 1
        c.tx_bytes += len(frame)
        self.tx.append((iface.ifindex, frame))

    def _transmit_offload(self, iface: Interface, eth: bytes, packet: bytes, off: Offload) -> None:
        """A packet with offload metadata (IP-relative offsets): a link with offloads
        takes it as it is (the header goes with the frame); otherwise it is done here:
        a GSO packet split into its segments (``gso_segment``), a partial checksum
        completed."""
        if iface.gso_max:
            if isinstance(packet, GsoChain):
                # unjoined (TSO output): the link writes head and body with one writev;
                # joined here only for a consumer that has not asked for chains
                chain = eth + packet            # offsets moved by the Ethernet header
                whole = chain if self.tx_chains else chain.join()
            else:
                whole = OffloadBytes.make(eth + packet, off.shifted(ETH_HEADER_LEN))
            iface.counters.tx_packets += 1
            iface.counters.tx_bytes += len(whole)
            self.tx.append((iface.ifindex, whole))
            return
        try:
            packet = joined(packet)
            if off.gso:
                if off.gso not in (GSO_TCPV4, GSO_TCPV6):
                    raise ParseError("bad_gso")
                pieces = gso_segment(packet, off.gso_size)
                self.stats.count("ip", "gso_split", len(pieces))
            elif off.needs_csum:
                pieces = [complete_checksum(packet, off.csum_start, off.csum_offset)]
            else:
                pieces = [bytes(packet)]
        except ParseError as e:
            self.stats.drop("offload_" + e.reason)
            return
        for piece in pieces:
            frame = eth + piece
            iface.counters.tx_packets += 1
            iface.counters.tx_bytes += len(frame)
            self.tx.append((iface.ifindex, frame))

    def set_offload(self, ifindex: int, gso_max: int) -> None:
        """The runtime tells core what the link under ``ifindex`` offloads: the largest
        GSO packet it takes (0: none; a TAP with TSO4/TSO6/CSUM takes 65535)."""
        self.interfaces[ifindex].gso_max = max(0, gso_max)
        self._flow_epoch += 1

    def _nd_actions(self, actions: list[Solicit | Flush | Fail], now: int) -> None:
        for act in actions:
            v6 = len(act.target) == 16
            if isinstance(act, Solicit):
                if v6:
                    self.ndp.send_ns(act.ifindex, act.target, act.lladdr, act.src_hint, now)
                else:
                    self.ip4.send_arp_request(act.ifindex, act.target, act.lladdr, act.src_hint)
            elif isinstance(act, Flush):
                iface = self.interfaces.get(act.ifindex)
                if iface is None:
                    continue
                for p in act.packets:
                    self.transmit(iface, act.lladdr, p.ethertype, p.packet)
            else:
                self._resolution_failed(act, now)

    def _resolution_failed(self, act: Fail, now: int) -> None:
        """§7.2.2: each queued packet gets ICMP 'address unreachable' to its sender."""
        if act.packets:
            self.note("warning", f"{self.ifname(act.ifindex)}: neighbor {fmt(act.target)} "
                      f"unreachable, {len(act.packets)} queued packet(s) failed")
        for p in act.packets:
            self.stats.drop(Drop.ND_RESOLUTION_FAILED)
            if p.ethertype == ETHERTYPE_IPV6:
                self.icmp6.address_unreachable(p.packet, act.ifindex, now)
            else:
                self.ip4.host_unreachable(p.packet, act.ifindex, now)

    # -- trace --------------------------------------------------------------------

    def trace(self, line: str) -> None:
        if self.tracer is not None:
            self.tracer(line)

    def _trace_nd(self) -> None:
        """Turn NUD transitions into probe lines (and notes for failures)."""
        for cache in (self.nd, self.arp):
            if not cache.transitions:
                continue
            moves, cache.transitions = cache.transitions, []
            if self.tracer is None:
                continue
            for e, old, queued in moves:
                old_name = old.value if old is not None else "NONE"
                new_name = "FAILED" if queued == -1 else e.state.value
                ll = fmt_mac(e.lladdr) if e.lladdr else "-"
                self.tracer(f"{'nd' if cache is self.nd else 'arp'} state={old_name}->{new_name} "
                            f"addr={self.fmt_zoned(e.addr, e.ifindex)} lladdr={ll} "
                            f"queued={max(queued, 0)}")

    def fmt_zoned(self, addr: bytes, zone: int) -> str:
        text = fmt(addr)
        if zone and needs_zone(addr):
            return f"{text}%{self.ifname(zone)}"
        return text

    def query(self, cmd: str, args: dict[str, Any], now: int) -> Any:
        """The control socket's read side (see stack.core.query)."""
        from stack.core.query import run_query
        return run_query(self, cmd, args, now)

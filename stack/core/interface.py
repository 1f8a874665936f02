"""Interfaces and the addresses on them.

An ``Interface`` is a link: the loopback (ifindex 1, no frames) or an Ethernet
TAP (ifindex 2, 3, ...). It owns its unicast addresses (``Addr6``/``Addr4``),
the multicast groups it has joined, and its ND parameters (RFC 4861 §6.3.2).
It never builds frames and never decides routes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from stack.core.clock import ms, s
from stack.wire.addr import (
    ALL_NODES,
    LOOPBACK6,
    is_link_local6,
    prefix_match,
    solicited_node,
)

LOOPBACK_IFINDEX = 1
LOOPBACK_MTU = 65536


class Kind(enum.Enum):
    LOOPBACK = "loopback"
    ETHERNET = "ether"


class AddrState(enum.Enum):
    """RFC 4862 address states (plus DUPLICATED after a failed DAD)."""

    TENTATIVE = "tentative"
    OPTIMISTIC = "optimistic"
    PREFERRED = "preferred"
    DEPRECATED = "deprecated"
    DUPLICATED = "duplicated"


class Origin(enum.Enum):
    STATIC = "static"      # from the configuration / control socket
    LINK = "link"          # fe80::/64 from the MAC
    SLAAC = "slaac"        # RFC 4862 §5.5.3 from a Prefix Information option
    LOOPBACK = "loopback"  # ::1, 127.0.0.1


@dataclass(slots=True)
class Addr6:
    addr: bytes
    plen: int
    state: AddrState
    origin: Origin
    preferred_until: int | None = None   # None = infinite
    valid_until: int | None = None
    dad_probes_left: int = 0             # NS still to send for DAD
    dad_at: int | None = None            # next DAD event (send or success)
    dad_nonce: bytes = b""               # RFC 7527: the nonce of our own DAD NS

    @property
    def usable(self) -> bool:
        """May be used as a source and may receive (RFC 4862 §5.4: not tentative)."""
        state = self.state      # per packet: identity tests, no tuple, no Enum.__eq__
        return state is AddrState.PREFERRED or state is AddrState.OPTIMISTIC or state is AddrState.DEPRECATED

    @property
    def optimistic(self) -> bool:
        """RFC 4429: usable while DAD still runs (§3.3 restrictions apply)."""
        return self.state is AddrState.OPTIMISTIC

    @property
    def in_dad(self) -> bool:
        """DAD still running (tentative or optimistic): a probe or NA for it is a duplicate."""
        return self.state is AddrState.TENTATIVE or self.state is AddrState.OPTIMISTIC

    @property
    def link_local(self) -> bool:
        return is_link_local6(self.addr)


@dataclass(slots=True)
class Addr4:
    addr: bytes
    plen: int
    origin: Origin = Origin.STATIC

    @property
    def usable(self) -> bool:
        return True


@dataclass(slots=True)
class NdParams:
    """Per-interface ND variables (RFC 4861 §6.3.2, §10)."""

    base_reachable_time: int = s(30)
    reachable_time: int = s(30)            # randomized from base_reachable_time
    retrans_timer: int = ms(1000)
    delay_first_probe_time: int = s(5)     # §10 DELAY_FIRST_PROBE_TIME
    gc_stale_time: int = s(60)             # Linux gc_stale_time: unused STALE entries go
    cur_hop_limit: int = 64
    dup_addr_detect_transmits: int = 1     # RFC 4862 §5.1
    optimistic_dad: bool = False           # RFC 4429: new addresses start OPTIMISTIC (Linux sysctl)
    link_mtu: int = 1500


@dataclass(slots=True)
class IfCounters:
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0


@dataclass(slots=True)
class Interface:
    ifindex: int
    name: str
    kind: Kind
    mac: bytes
    mtu: int
    up: bool = True
    accept_ra: bool = False
    addrs6: list[Addr6] = field(default_factory=list)
    addrs4: list[Addr4] = field(default_factory=list)
    groups6: dict[bytes, int] = field(default_factory=dict)   # multicast group -> refcount
    nd: NdParams = field(default_factory=NdParams)
    counters: IfCounters = field(default_factory=IfCounters)
    ipv6_disabled: bool = False   # RFC 4862 §5.4.5: duplicate MAC-derived link-local
    # TAP offloads (virtio-net header, TSO4/TSO6/CSUM): the largest IP packet the link takes
    # as one GSO segment; 0 = plain frames only. Set by the runtime from the link.
    gso_max: int = 0

    @property
    def loopback(self) -> bool:
        return self.kind is Kind.LOOPBACK

    def find6(self, addr: bytes) -> Addr6 | None:
        for a in self.addrs6:
            if a.addr == addr:
                return a
        return None

    def find4(self, addr: bytes) -> Addr4 | None:
        for a in self.addrs4:
            if a.addr == addr:
                return a
        return None

    def link_local(self) -> Addr6 | None:
        """The first usable link-local address (NS/RS source, RFC 4861 §4.1)."""
        for a in self.addrs6:
            if a.link_local and a.usable:
                return a
        return None

    def on_link6(self, addr: bytes) -> bool:
        """addr falls in one of this interface's IPv6 prefixes (usable or not)."""
        return any(a.plen < 128 and prefix_match(a.addr, addr, a.plen) for a in self.addrs6)

    def join6(self, group: bytes) -> bool:
        """Returns True when the group is new on this interface."""
        n = self.groups6.get(group, 0)
        self.groups6[group] = n + 1
        return n == 0

    def leave6(self, group: bytes) -> bool:
        """Returns True when the last reference went away."""
        n = self.groups6.get(group, 0)
        if n <= 1:
            self.groups6.pop(group, None)
            return n == 1
        self.groups6[group] = n - 1
        return False

    def accepts6(self, dst: bytes) -> bool:
        """A multicast destination we listen to on this link (RFC 4291 §2.8)."""
        return dst in self.groups6

    def default_groups(self) -> list[bytes]:
        groups = [ALL_NODES]
        for a in self.addrs6:
            groups.append(solicited_node(a.addr))
        return groups


def loopback_interface() -> Interface:
    lo = Interface(LOOPBACK_IFINDEX, "lo", Kind.LOOPBACK, bytes(6), LOOPBACK_MTU)
    lo.addrs6.append(Addr6(LOOPBACK6, 128, AddrState.PREFERRED, Origin.LOOPBACK))
    lo.addrs4.append(Addr4(bytes((127, 0, 0, 1)), 8, Origin.LOOPBACK))
    return lo

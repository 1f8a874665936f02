"""Hostile input to the core: ND/ICMP attacks, floods, and a test per bound.

Every test states what an attacker on the link (or off it) tries and asserts
the defence plus the accounting: each packet ends as output, as state, or as a
counted drop (GUIDE §3). Floods run with small ``Limits`` so that the bound is
reached quickly; the same code paths enforce the default bounds.

Sections: NA override attempts (RFC 4861 §7.2.5); RA validation (§6.1.2) and
list bounds (§6.3.4); fragmented ND (RFC 6980); Redirect validation (§8.1);
ICMP errors that quote nothing of ours (RFC 5927, RFC 8201 §4); floods against
the neighbor cache, reassembly and the ICMP error budget (RFC 4443 §2.4(f));
one test per table or queue bound.
"""

from __future__ import annotations

import importlib.util
import random
from typing import Any

import pytest
from harness import (
    GA_A,
    GA_B,
    IF,
    LL_A,
    LL_B,
    MAC_A,
    MAC_B,
    MAC_C,
    V4_A,
    V4_B,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    one_stack,
    settle,
    smac,
)
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6PacketTooBig,
    IPv6ExtHdrFragment,
    fragment6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from stack.core.clock import ManualClock, ms, s
from stack.core.events import SocketError
from stack.core.nd import NeighborEntry, NudState
from stack.core.stack import Limits, Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip4, ip6, multicast_mac, solicited_node
from stack.wire.arp import build_arp_reply
from stack.wire.ethernet import eth_header
from stack.wire.frame import parse_frame
from stack.wire.ipv4 import build_ipv4
from stack.wire.ipv6 import build_ipv6
from stack.wire.ndp import build_ns
from stack.wire.udp import build_udp
from tests.fuzz.target import Target

MAC_R = bytes.fromhex("020000000001")
LL_R = ip6("fe80::1")
LL_C = ip6("fe80::c")
GA_C = ip6("2001:db8:1::3")
SNM_A = "ff02::1:ff00:a"


# -- helpers ------------------------------------------------------------------------------

def eth(pkt: Any, dst: bytes = MAC_A, src: bytes = MAC_B) -> bytes:
    return bytes(Ether(dst=smac(dst), src=smac(src)) / pkt)


def small_stack(**limits: Any) -> tuple[Stack, ManualClock]:
    """one_stack() with some Limits lowered (DAD off: the addresses are usable at once)."""
    clock = ManualClock()
    st = Stack(rng=random.Random(1), now=clock.now(), limits=Limits(**limits))
    st.add_interface("tap0", MAC_A, 1500, now=clock.now(), dad_transmits=0)
    st.add_address(IF, GA_A, 64, clock.now())
    st.add_address(IF, V4_A, 24, clock.now())
    settle(st, clock)
    st.drain_tx()
    st.drain_events()
    return st, clock


def na(target: bytes, tlla: bytes | None, *, sol: int = 1, ovr: int = 1, src: bytes = LL_B,
       dst: str | None = None, hlim: int = 255, src_mac: bytes = MAC_B) -> bytes:
    """A Neighbor Advertisement (sol = S flag, ovr = O flag)."""
    p = IPv6(src=fmt(src), dst=dst or fmt(LL_A), hlim=hlim) / ICMPv6ND_NA(R=0, S=sol, O=ovr, tgt=fmt(target))
    if tlla is not None:
        p = p / ICMPv6NDOptDstLLAddr(lladdr=smac(tlla))
    return eth(p, MAC_A, src_mac)


def ns(src: bytes, target: bytes, slla: bytes, *, src_mac: bytes | None = None) -> bytes:
    """An NS for target (built by the stack's own wire code: floods need speed, not scapy)."""
    snm = solicited_node(target)
    return eth_header(multicast_mac(snm), src_mac or slla, 0x86DD) \
        + build_ipv6(src, snm, 58, build_ns(src, snm, target, slla=slla), 255)


def udp_frame(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    if len(src) == 16:
        return eth_header(MAC_A, MAC_B, 0x86DD) + build_ipv6(src, dst, 17, build_udp(src, dst, sport, dport, data))
    return eth_header(MAC_A, MAC_B, 0x0800) + build_ipv4(src, dst, 17, build_udp(src, dst, sport, dport, data))


def ra(src: bytes = LL_R, hlim: int = 255, *, lifetime: int = 1800, mtu: int | None = None,
       prefix: str | None = None, plen: int = 64, src_mac: bytes = MAC_R) -> bytes:
    p = IPv6(src=fmt(src), dst="ff02::1", hlim=hlim) / ICMPv6ND_RA(routerlifetime=lifetime) \
        / ICMPv6NDOptSrcLLAddr(lladdr=smac(src_mac))
    if mtu is not None:
        p = p / ICMPv6NDOptMTU(mtu=mtu)
    if prefix is not None:
        p = p / ICMPv6NDOptPrefixInfo(prefixlen=plen, L=1, A=1, validlifetime=86400,
                                      preferredlifetime=14400, prefix=prefix)
    return eth(p, bytes.fromhex("333300000001"), src_mac)


def redirect(src: bytes = LL_R, dest: str = "2001:db8:99::1", target: str = "fe80::2", hlim: int = 255,
             src_mac: bytes = MAC_R) -> bytes:
    return eth(IPv6(src=fmt(src), dst=fmt(LL_A), hlim=hlim) / ICMPv6ND_Redirect(tgt=target, dst=dest)
               / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_C)), MAC_A, src_mac)


def entry(st: Stack, addr: bytes) -> NeighborEntry:
    e = st.nd.get(IF, addr)
    assert e is not None, f"no neighbor entry for {fmt(addr)}"
    return e


def reachable(st: Stack, clock: ManualClock, addr: bytes, lladdr: bytes) -> None:
    """A REACHABLE entry by the book: we resolve, the neighbor answers (solicited NA)."""
    from stack.core.nd import Pending
    st.nd.resolve(IF, addr, Pending(0x86DD, b""), clock.now())
    st.receive(IF, na(addr, lladdr, src=addr), clock.now())
    st.drain_tx()
    assert entry(st, addr).state is NudState.REACHABLE


def icmp6_out(st: Stack, typ: int) -> int:
    return sum(1 for _, fr in st.drain_tx() if (f := parse_frame(fr)).proto == 58 and f.icmp_type == typ)


HAS_RDISC = importlib.util.find_spec("stack.core.rdisc") is not None
needs_rdisc = pytest.mark.skipif(not HAS_RDISC, reason="router discovery (stack/core/rdisc.py) not there yet")


# -- Neighbor Advertisements trying to take over an entry (RFC 4861 §7.2.5) ----------------

def test_na_without_override_cannot_replace_a_reachable_lladdr() -> None:
    st, clock = one_stack()
    reachable(st, clock, LL_B, MAC_B)
    st.receive(IF, na(LL_B, MAC_C, sol=1, ovr=0), clock.now())
    e = entry(st, LL_B)
    assert e.lladdr == MAC_B                       # the attacker's address is not taken
    assert e.state is NudState.STALE               # §7.2.5: REACHABLE -> STALE, nothing else
    assert st.stats.get("nd", "in_na_no_override") == 1
    assert st.drain_tx() == []


def test_na_without_override_leaves_a_stale_entry_alone() -> None:
    st, clock = one_stack()
    reachable(st, clock, LL_B, MAC_B)
    clock.advance(s(60))
    st.poll(clock.now())                            # REACHABLE -> STALE by timeout
    assert entry(st, LL_B).state is NudState.STALE
    st.receive(IF, na(LL_B, MAC_C, sol=0, ovr=0), clock.now())
    e = entry(st, LL_B)
    assert (e.lladdr, e.state) == (MAC_B, NudState.STALE)
    assert st.stats.get("nd", "in_na_no_override") == 1


def test_na_with_override_does_replace_it() -> None:
    """The contrast: O=1 is how a real address change is announced."""
    st, clock = one_stack()
    reachable(st, clock, LL_B, MAC_B)
    st.receive(IF, na(LL_B, MAC_C, sol=0, ovr=1, dst="ff02::1"), clock.now())
    e = entry(st, LL_B)
    assert (e.lladdr, e.state) == (MAC_C, NudState.STALE)


def test_unsolicited_na_creates_no_entry() -> None:
    st, clock = one_stack()
    st.receive(IF, na(LL_C, MAC_C, sol=0, ovr=1, src=LL_C, dst="ff02::1", src_mac=MAC_C), clock.now())
    assert st.nd.get(IF, LL_C) is None
    assert st.stats[Drop.ND_UNSOLICITED_IGNORED] == 1


def test_na_cannot_change_a_permanent_entry() -> None:
    st, clock = one_stack()
    st.add_neighbor(IF, LL_R, MAC_R, clock.now())
    st.receive(IF, na(LL_R, MAC_C, sol=1, ovr=1, src=LL_R), clock.now())
    e = entry(st, LL_R)
    assert (e.lladdr, e.state) == (MAC_R, NudState.PERMANENT)
    assert st.stats.get("nd", "in_na") == 1        # taken by ND and ignored, not lost


@pytest.mark.parametrize("hlim", [0, 1, 64, 254])
def test_na_from_off_link_is_dropped(hlim: int) -> None:
    st, clock = one_stack()
    reachable(st, clock, LL_B, MAC_B)
    st.receive(IF, na(LL_B, MAC_C, sol=1, ovr=1, hlim=hlim), clock.now())
    assert entry(st, LL_B).lladdr == MAC_B
    assert st.stats[Drop.ND_BAD_HOP_LIMIT] == 1


def test_solicited_na_to_multicast_is_dropped() -> None:
    st, clock = one_stack()
    reachable(st, clock, LL_B, MAC_B)
    st.receive(IF, na(LL_B, MAC_C, sol=1, ovr=1, dst="ff02::1"), clock.now())
    assert entry(st, LL_B).lladdr == MAC_B
    assert st.stats[Drop.ND_BAD_DEST] == 1


def test_na_claiming_our_address_changes_nothing() -> None:
    st, clock = one_stack()
    st.receive(IF, na(GA_A, MAC_C, sol=0, ovr=1, src=LL_C, dst="ff02::1", src_mac=MAC_C), clock.now())
    a = st.interfaces[IF].find6(GA_A)
    assert a is not None and a.usable
    assert st.nd.get(IF, GA_A) is None
    assert st.stats.get("nd", "in_na_for_own_address") == 1


# -- Router Advertisements (RFC 4861 §6.1.2, §6.3.4) --------------------------------------

def ra_stack() -> tuple[Stack, ManualClock]:
    st, clock = one_stack()
    st.interfaces[IF].accept_ra = True
    return st, clock


@needs_rdisc
def test_ra_from_the_router_is_taken() -> None:
    """The contrast for the attacks below."""
    st, clock = ra_stack()
    st.receive(IF, ra(), clock.now())
    assert st.ndp.rdisc.is_router(IF, LL_R)
    assert st.route_output(ip6("2001:db8:77::1"), 0, None, clock.now()).nexthop == LL_R


@needs_rdisc
@pytest.mark.parametrize("src", [GA_B, ip6("2001:db8:5::1"), ip6("::1")], ids=fmt)
def test_ra_from_a_non_link_local_source_is_dropped(src: bytes) -> None:
    st, clock = ra_stack()
    st.receive(IF, ra(src=src), clock.now())
    assert not st.ndp.rdisc.routers
    assert sum(st.stats.drops.values()) == 1        # one packet, one drop (which reason: the layer's)


@needs_rdisc
@pytest.mark.parametrize("hlim", [0, 1, 64, 254])
def test_ra_with_hop_limit_below_255_is_dropped(hlim: int) -> None:
    st, clock = ra_stack()
    st.receive(IF, ra(hlim=hlim), clock.now())
    assert not st.ndp.rdisc.routers
    assert st.stats[Drop.ND_BAD_HOP_LIMIT] == 1


@needs_rdisc
def test_ra_from_our_own_link_local_is_dropped() -> None:
    st, clock = ra_stack()
    st.receive(IF, ra(src=LL_A, src_mac=MAC_C), clock.now())
    assert not st.ndp.rdisc.routers
    assert st.stats[Drop.ND_RA_BAD_SOURCE] == 1


@needs_rdisc
def test_ra_is_ignored_without_accept_ra() -> None:
    st, clock = one_stack()
    st.receive(IF, ra(), clock.now())
    assert not st.ndp.rdisc.routers
    assert st.stats[Drop.ND_RA_IGNORED] == 1


@needs_rdisc
@pytest.mark.parametrize("mtu", [0, 68, 1279, 9000])
def test_ra_mtu_outside_1280_to_link_mtu_is_ignored(mtu: int) -> None:
    st, clock = ra_stack()
    st.receive(IF, ra(mtu=mtu), clock.now())
    assert st.interfaces[IF].mtu == 1500
    assert st.stats.get("nd", "ra_mtu_ignored") == 1


@needs_rdisc
def test_ra_flood_from_many_routers_keeps_every_list_bounded() -> None:
    from stack.core import rdisc
    st, clock = ra_stack()
    for i in range(200):
        mac = bytes.fromhex("0200000100") + bytes((i,))
        st.receive(IF, ra(src=ip6(f"fe80::1:{i:x}"), src_mac=mac, prefix=f"2001:db8:{1000 + i:x}::"),
                   clock.now())
    d = st.ndp.rdisc
    assert len(d.routers) <= rdisc.MAX_ROUTERS_PER_IF
    assert len(d.prefixes) <= rdisc.MAX_PREFIXES_PER_IF
    slaac = [a for a in st.interfaces[IF].addrs6 if a.origin.value == "slaac"]
    assert len(slaac) <= rdisc.MAX_SLAAC_PER_IF
    assert st.stats.get("nd", "ra_router_list_full") == 200 - rdisc.MAX_ROUTERS_PER_IF
    assert st.stats.get("nd", "slaac_address_limit") == 200 - rdisc.MAX_SLAAC_PER_IF
    assert len(st.log) <= 1000


# -- fragmented ND (RFC 6980 §5) -------------------------------------------------------------

def _nd_messages() -> dict[str, Any]:
    pad = Raw(b"\x63\x08" + bytes(62))           # an unknown 64-byte option: forces two fragments
    return {
        "ns": (IPv6(src=fmt(LL_C), dst=SNM_A, hlim=255), ICMPv6ND_NS(tgt=fmt(LL_A))
               / ICMPv6NDOptSrcLLAddr(lladdr=smac(MAC_C)) / pad),
        "na": (IPv6(src=fmt(LL_B), dst=fmt(LL_A), hlim=255), ICMPv6ND_NA(S=1, O=1, tgt=fmt(LL_B))
               / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_C)) / pad),
        "rs": (IPv6(src=fmt(LL_C), dst=fmt(LL_A), hlim=255), ICMPv6ND_RS() / pad),
        "ra": (IPv6(src=fmt(LL_R), dst="ff02::1", hlim=255), ICMPv6ND_RA(routerlifetime=1800)
               / ICMPv6NDOptSrcLLAddr(lladdr=smac(MAC_C)) / pad),
        "redirect": (IPv6(src=fmt(LL_R), dst=fmt(LL_A), hlim=255),
                     ICMPv6ND_Redirect(tgt="fe80::2", dst="2001:db8:99::1") / pad),
    }


@pytest.mark.parametrize("kind", ["atomic", "fragments"])
@pytest.mark.parametrize("msg", ["ns", "na", "rs", "ra", "redirect"])
def test_fragmented_nd_is_dropped(msg: str, kind: str) -> None:
    st, clock = ra_stack()
    reachable(st, clock, LL_B, MAC_B)
    st.receive(IF, ra(), clock.now())               # fe80::1 is our router (Redirects would count)
    st.drain_tx()
    routes_gen = st.routes.gen
    ip, body = _nd_messages()[msg]
    if kind == "atomic":
        frames = [ip / IPv6ExtHdrFragment(id=9, offset=0, m=0) / body]
    else:
        frames = list(fragment6(ip / IPv6ExtHdrFragment(id=9) / body, 96))  # type: ignore[no-untyped-call]
        assert len(frames) >= 2
    for f in frames:
        st.receive(IF, eth(f, bytes.fromhex("333300000001") if f[IPv6].dst.startswith("ff") else MAC_A,
                           MAC_C), clock.now())
    assert st.drain_tx() == []
    assert st.stats[Drop.ND_FRAGMENTED] == 1
    assert st.nd.get(IF, LL_C) is None                          # NS/RS: nothing learnt
    assert entry(st, LL_B).lladdr == MAC_B                  # NA: nothing overridden
    assert st.routes.gen == routes_gen                          # RA/Redirect: no route change


# -- Redirects (RFC 4861 §8.1) -----------------------------------------------------------------

@needs_rdisc
def test_redirect_from_our_router_is_taken() -> None:
    st, clock = ra_stack()
    st.receive(IF, ra(), clock.now())
    st.receive(IF, redirect(), clock.now())
    assert st.route_output(ip6("2001:db8:99::1"), 0, None, clock.now()).nexthop == ip6("fe80::2")


@needs_rdisc
def test_redirect_from_a_neighbor_that_is_not_the_router_is_dropped() -> None:
    st, clock = ra_stack()
    st.receive(IF, ra(), clock.now())
    reachable(st, clock, LL_B, MAC_B)
    st.receive(IF, redirect(src=LL_B, src_mac=MAC_B), clock.now())
    assert st.route_output(ip6("2001:db8:99::1"), 0, None, clock.now()).nexthop == LL_R
    assert st.stats[Drop.ND_REDIRECT_NOT_FROM_ROUTER] == 1


@needs_rdisc
def test_redirect_without_any_router_is_dropped() -> None:
    st, clock = ra_stack()
    st.add_route(ip6("2001:db8:99::"), 48, gateway=LL_R, gw_zone=IF)
    st.receive(IF, redirect(src=LL_B, src_mac=MAC_B), clock.now())
    assert st.stats[Drop.ND_REDIRECT_NOT_FROM_ROUTER] == 1
    assert not st.ndp.rdisc.redirects


@needs_rdisc
def test_redirect_from_a_global_source_or_off_link_is_dropped() -> None:
    st, clock = ra_stack()
    st.receive(IF, ra(), clock.now())
    st.receive(IF, redirect(src=GA_B), clock.now())
    st.receive(IF, redirect(hlim=64), clock.now())
    st.receive(IF, redirect(dest="ff05::1"), clock.now())
    assert not st.ndp.rdisc.redirects
    assert st.stats[Drop.ND_REDIRECT_BAD_SOURCE] == 1
    assert st.stats[Drop.ND_BAD_HOP_LIMIT] == 1
    assert st.stats[Drop.ND_REDIRECT_BAD_DEST] == 1


@needs_rdisc
def test_redirect_flood_is_bounded() -> None:
    from stack.core import rdisc
    st, clock = ra_stack()
    st.receive(IF, ra(), clock.now())
    for i in range(rdisc.MAX_REDIRECTS + 200):
        st.receive(IF, redirect(dest=f"2001:db8:99::{i:x}"), clock.now())
    assert len(st.ndp.rdisc.redirects) == rdisc.MAX_REDIRECTS
    assert st.stats.get("nd", "redirect_evicted") == 200


# -- ICMP errors quoting nothing of ours (RFC 5927) ---------------------------------------------

def test_icmp6_error_for_a_connection_that_does_not_exist_changes_nothing() -> None:
    t = Target()
    st = t.st
    conns = dict(st.tcp.connections)
    quoted = bytes(IPv6(src=fmt(GA_A), dst=fmt(GA_B)) / TCP(sport=44444, dport=80, flags="S"))
    st.receive(IF, eth(IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / ICMPv6DestUnreach(code=4) / Raw(quoted)),
               t.clock.now())
    assert st.drain_events() == [] and st.drain_tx() == []
    assert st.tcp.connections == conns and t.conn.state.name == "ESTABLISHED"
    assert st.stats[Drop.ICMP_ERROR_NO_MATCH] == 1


def test_icmp6_error_with_a_sequence_number_not_in_flight_changes_nothing() -> None:
    t = Target()
    st, c = t.st, t.conn
    before = (c.state, c.snd_una, c.snd_nxt, c.snd_mss)
    quoted = bytes(IPv6(src=fmt(GA_A), dst=fmt(GA_B)) / TCP(sport=40001, dport=80, seq=c.snd_nxt + 100_000))
    for icmp in (ICMPv6DestUnreach(code=1), ICMPv6PacketTooBig(mtu=1280)):
        st.receive(IF, eth(IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / icmp / Raw(quoted)), t.clock.now())
    assert (c.state, c.snd_una, c.snd_nxt, c.snd_mss) == before
    assert st.drain_events() == []
    assert st.stats[Drop.ICMP_ERROR_NO_MATCH] == 2


def test_icmp4_error_for_a_connection_that_does_not_exist_changes_nothing() -> None:
    t = Target()
    st = t.st
    quoted = bytes(IP(src=fmt(V4_A), dst=fmt(V4_B)) / TCP(sport=44444, dport=80, flags="S"))[:28]
    st.receive(IF, eth(IP(src=fmt(V4_B), dst=fmt(V4_A)) / ICMP(type=3, code=4, nexthopmtu=576)
                       / Raw(quoted)), t.clock.now())
    assert st.drain_events() == [] and st.drain_tx() == []
    assert st.stats[Drop.ICMP_ERROR_NO_MATCH] == 1


def test_packet_too_big_quoting_someone_elses_packet_leaves_the_path_mtu() -> None:
    st, clock = one_stack()
    quoted = bytes(IPv6(src="2001:db8:66::6", dst=fmt(GA_B)) / UDP(sport=1, dport=2) / (b"x" * 32))
    st.receive(IF, eth(IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / ICMPv6PacketTooBig(mtu=1280) / Raw(quoted)),
               clock.now())
    assert st.pmtu == {}
    assert st.stats[Drop.ICMP_ERROR_NO_MATCH] == 1


def test_packet_too_big_never_lowers_the_path_mtu_below_1280() -> None:
    st, clock = one_stack()
    quoted = bytes(IPv6(src=fmt(GA_A), dst="2001:db8:66::6") / UDP(sport=1, dport=2) / (b"x" * 32))
    st.receive(IF, eth(IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / ICMPv6PacketTooBig(mtu=100) / Raw(quoted)),
               clock.now())
    assert st.path_mtu(ip6("2001:db8:66::6"), 1500, clock.now()) == 1280


def test_port_unreachable_for_another_peer_is_not_reported_on_a_connected_socket() -> None:
    st, clock = one_stack()
    ep = st.udp.bind(None, 5353)
    ep.connect(GA_B, 9, 0)
    for dport in (10, 9):     # another peer port first, then the connected one
        quoted = bytes(IPv6(src=fmt(GA_A), dst=fmt(GA_B)) / UDP(sport=5353, dport=dport) / b"x")
        st.receive(IF, eth(IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / ICMPv6DestUnreach(code=4) / Raw(quoted)),
                   clock.now())
    errors = [e for e in st.drain_events() if isinstance(e, SocketError)]
    assert len(errors) == 1 and ep.take_error() != 0
    assert st.stats[Drop.ICMP_ERROR_NO_MATCH] == 1


# -- floods --------------------------------------------------------------------------------------

def test_ns_flood_from_thousands_of_sources_keeps_the_cache_bounded_and_entries_in_use() -> None:
    st, clock = small_stack(neighbor_cache_max=128)
    st.add_neighbor(IF, LL_R, MAC_R, clock.now())
    reachable(st, clock, GA_B, MAC_B)
    answered = 0
    for i in range(3000):
        src = ip6(f"fe80::1:{i:x}")
        mac = bytes.fromhex("0200") + i.to_bytes(4, "big")
        st.receive(IF, ns(src, LL_A, mac), clock.now())
        answered += len(st.drain_tx())
        assert len(st.nd.entries) <= 128
    assert answered == 3000                          # every NS is still answered
    assert entry(st, GA_B).state is NudState.REACHABLE and entry(st, GA_B).lladdr == MAC_B
    assert entry(st, LL_R).state is NudState.PERMANENT
    assert st.nd.evictions >= 3000 - 128


def test_traffic_to_thousands_of_on_link_addresses_loses_nothing_uncounted() -> None:
    st, clock = small_stack(neighbor_cache_max=128, nd_queue_max=4)
    reachable(st, clock, GA_B, MAC_B)
    ep = st.udp.bind(None, 4000)
    sent = 0
    for i in range(2000):
        ep.sendto(b"flood", ip6(f"2001:db8:1::1:{i:x}"), 9, 0, clock.now())
        sent += 1
        assert len(st.nd.entries) <= 128
    ep.sendto(b"still", GA_B, 9, 0, clock.now())
    out = [parse_frame(fr) for _, fr in st.drain_tx()]
    assert any(f.proto == 17 and f.dst == GA_B for f in out)          # the neighbor in use works
    assert entry(st, GA_B).state is NudState.REACHABLE
    held = sum(len(e.queue) for e in st.nd.entries.values())
    assert held + st.stats[Drop.ND_CACHE_FULL] + st.stats[Drop.ND_QUEUE_OVERFLOW] == sent
    # and when resolution fails, every held packet is a counted drop too
    settle(st, clock, s(10))
    assert st.stats[Drop.ND_RESOLUTION_FAILED] == held
    assert st.stats[Drop.ND_CACHE_FULL] + st.stats[Drop.ND_RESOLUTION_FAILED] == sent


def test_reassembly_memory_stays_bounded_under_incomplete_fragments() -> None:
    limit = 64 * 1024
    st, clock = small_stack(reasm_max_bytes=limit)
    payload = bytes(1024)
    for i in range(1000):
        pkt = IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / IPv6ExtHdrFragment(id=i, offset=0, m=1) \
            / UDP(sport=1, dport=9, len=8 + 2048) / payload
        st.receive(IF, eth(pkt), clock.now())
        assert 0 < st.ip6.reasm.held <= limit
    pending = sum(len(d.pieces) for d in st.ip6.reasm.pending.values())
    assert pending + st.stats[Drop.FRAG_LIMIT] == 1000
    clock.advance(s(61))
    st.poll(clock.now())
    assert st.ip6.reasm.held == 0 and not st.ip6.reasm.pending
    assert st.stats[Drop.FRAG_TIMEOUT] == pending
    assert icmp6_out(st, 3) <= st.limits.icmp_error_burst       # Time Exceeded, rate limited


def test_reassembly_memory_stays_bounded_under_incomplete_ipv4_fragments() -> None:
    limit = 64 * 1024
    st, clock = small_stack(reasm_max_bytes=limit)
    for i in range(1000):
        pkt = IP(src=fmt(V4_B), dst=fmt(V4_A), id=i, flags="MF") / UDP(sport=1, dport=9, len=8 + 2048) \
            / bytes(1024)
        st.receive(IF, eth(pkt), clock.now())
        assert 0 < st.ip4.reasm.held <= limit
    pending = sum(len(d.pieces) for d in st.ip4.reasm.pending.values())
    assert pending + st.stats[Drop.FRAG_LIMIT] == 1000
    clock.advance(s(61))
    st.poll(clock.now())
    assert st.ip4.reasm.held == 0 and st.stats[Drop.FRAG_TIMEOUT] == pending


@pytest.mark.parametrize("family", [6, 4])
def test_icmp_error_token_bucket_limits_output_under_a_flood(family: int) -> None:
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, V4_B, MAC_B, clock.now())
    lim = st.limits

    def flood(n: int) -> int:
        src, dst = (GA_B, GA_A) if family == 6 else (V4_B, V4_A)
        for i in range(n):
            st.receive(IF, udp_frame(src, dst, 1000 + i, 4444, b"x"), clock.now())
        return sum(1 for _, fr in st.drain_tx()
                   if (f := parse_frame(fr)).icmp_type in (1, 3) and f.proto in (1, 58))

    assert flood(2000) == lim.icmp_error_burst
    assert st.stats[Drop.ICMP_ERROR_RATE_LIMITED] == 2000 - lim.icmp_error_burst
    assert st.stats[Drop.UDP_NO_PORT] == 2000
    clock.advance(ms(100))                            # 0.1 s refills rate/10 tokens
    assert flood(1000) == int(lim.icmp_error_rate / 10)
    clock.advance(s(3600))                            # never more than the burst at once
    assert flood(1000) == lim.icmp_error_burst


# -- one test per bound --------------------------------------------------------------------------

def test_bound_loop_queue() -> None:
    st, clock = small_stack(loop_queue_max=64)
    rx = st.udp.bind(None, 7000)
    tx = st.udp.bind(None, 7001)
    for i in range(200):                              # outside a core call: all queue up
        tx.sendto(b"%d" % i, ip6("::1"), 7000, 0, clock.now())
        assert len(st._loop_q) <= 64
    assert st.stats[Drop.LINK_TX_FULL] == 200 - 64
    st.poll(clock.now())
    got = 0
    while rx.recv() is not None:
        got += 1
    assert got == 64


def test_bound_nd_queue_per_entry() -> None:
    st, clock = small_stack(nd_queue_max=4)
    ep = st.udp.bind(None, 4000)
    for i in range(10):
        ep.sendto(b"%d" % i, GA_C, 9, 0, clock.now())
    e = entry(st, GA_C)
    assert e.state is NudState.INCOMPLETE and len(e.queue) == 4
    assert st.stats[Drop.ND_QUEUE_OVERFLOW] == 6
    st.drain_tx()
    st.receive(IF, na(GA_C, MAC_C, src=GA_C, src_mac=MAC_C), clock.now())
    out = [parse_frame(fr) for _, fr in st.drain_tx()]
    assert [f.buf[f.l4_off + 8:f.ip_end] for f in out] == [b"6", b"7", b"8", b"9"]   # newest kept


def test_bound_neighbor_cache() -> None:
    st, clock = small_stack(neighbor_cache_max=32)
    for i in range(500):
        st.receive(IF, ns(ip6(f"fe80::2:{i:x}"), LL_A, bytes.fromhex("0201") + i.to_bytes(4, "big")),
                   clock.now())
    assert len(st.nd.entries) == 32


def test_bound_arp_cache() -> None:
    st, clock = small_stack(arp_cache_max=32)
    replies = 0
    for i in range(500):
        mac = bytes.fromhex("0202") + i.to_bytes(4, "big")
        st.receive(IF, eth(ARP(op=1, hwsrc=smac(mac), psrc=fmt(ip4(f"10.0.{i >> 8}.{i & 255}")), pdst=fmt(V4_A)),
                           b"\xff" * 6, mac), clock.now())
        replies += len(st.drain_tx())
        assert len(st.arp.entries) <= 32
    assert replies == 500


def test_bound_reassembly() -> None:
    limit = 16 * 1024
    st, clock = small_stack(reasm_max_bytes=limit)
    for i in range(200):
        pkt = IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / IPv6ExtHdrFragment(id=i, offset=8 * i, m=1) / bytes(512)
        st.receive(IF, eth(pkt), clock.now())
        assert st.ip6.reasm.held <= limit
    assert st.stats[Drop.FRAG_LIMIT] > 0


def test_bound_udp_receive_buffer() -> None:
    st, clock = small_stack(udp_rcvbuf=4096)
    ep = st.udp.bind(None, 9)
    for i in range(100):
        st.receive(IF, udp_frame(GA_B, GA_A, i + 1, 9, bytes(100)), clock.now())
        assert ep.queued_bytes <= 4096
    assert len(ep.queue) == 40
    assert st.stats[Drop.UDP_RCVBUF_FULL] == 60


def test_bound_path_mtu_cache() -> None:
    st, clock = small_stack(pmtu_max=32)
    for i in range(500):
        quoted = bytes(IPv6(src=fmt(GA_A), dst=f"2001:db8:{i:x}::1") / UDP(sport=1, dport=2) / b"x")
        st.receive(IF, eth(IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / ICMPv6PacketTooBig(mtu=1300)
                           / Raw(quoted)), clock.now())
        assert len(st.pmtu) <= 32
    assert len(st.pmtu) == 32


@pytest.mark.parametrize("family", [6, 4])
def test_bound_pings(family: int) -> None:
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, V4_B, MAC_B, clock.now())
    for seq in range(5000):
        if family == 6:
            st.icmp6.ping_send(GA_B, 0, 7, seq & 0xFFFF, b"", clock.now())
        else:
            st.ip4.ping_send(V4_B, 7, seq & 0xFFFF, b"", clock.now())
    pings = st.icmp6.pings if family == 6 else st.ip4.pings
    assert len(pings[7]) <= 1025                    # per identifier; identifiers are 16 bits


def test_bound_log() -> None:
    st, clock = one_stack()
    for i in range(3000):   # every ARP claim of our address is a logged conflict
        mac = bytes.fromhex("0203") + i.to_bytes(4, "big")
        st.receive(IF, eth_header(b"\xff" * 6, mac, 0x0806) + build_arp_reply(mac, V4_A, b"\xff" * 6, V4_A),
                   clock.now())
        assert len(st.log) <= 1000
    assert st.stats[Drop.ARP_ADDRESS_CONFLICT] == 3000


def test_bound_tcp_syn_queue() -> None:
    st, clock = one_stack()
    if st.tcp is None:
        pytest.skip("no TCP layer")
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    listener = st.tcp.listen(None, 80, backlog=16)
    answered = 0
    for i in range(1000):
        st.receive(IF, eth(IPv6(src=fmt(GA_B), dst=fmt(GA_A)) / TCP(sport=10000 + i, dport=80, flags="S",
                                                                    seq=i)), clock.now())
        answered += len(st.drain_tx())
        assert len(listener.syn_queue) <= 16
    assert answered == 1000                          # SYN cookies answer the rest (RFC 4987 §3.6)

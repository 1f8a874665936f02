"""Neighbor cache lifetime on a whole Stack, frame in / frame out on a manual clock:
STALE garbage collection, ``flush_neighbors``, ND timing knobs (``set_nd_params``),
a link coming back up (DAD and RS again), and resolution failure seen by a local
socket (EHOSTUNREACH)."""

from __future__ import annotations

import errno
import random

from harness import (
    GA_A,
    GA_B,
    IF,
    MAC_A,
    MAC_B,
    ICMPv6ND_NA,
    ICMPv6NDOptDstLLAddr,
    IPv6,
    eth6,
    frames,
    one_stack,
    settle,
    smac,
)

from stack.core.clock import ManualClock, ms, s
from stack.core.events import SocketError
from stack.core.interface import AddrState
from stack.core.nd import GC_STALE_TIME, NudState
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip6, solicited_node

GA_C = ip6("2001:db8:1::3")


def na_from(target: bytes, mac: bytes = MAC_B, solicited: bool = True) -> bytes:
    return bytes(eth6(src_mac=mac) / IPv6(src=fmt(target), dst=fmt(GA_A), hlim=255) /
                 ICMPv6ND_NA(tgt=fmt(target), R=0, S=int(solicited), O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(mac)))


def resolved(st: Stack, clock: ManualClock, target: bytes = GA_B) -> None:
    """Ping target once and answer the NS: a REACHABLE entry, the echo request sent."""
    st.icmp6.ping_send(target, 0, 9, 1, b"hi", clock.now())
    st.receive(IF, na_from(target), clock.now())
    assert [f.icmp_type for _, f in frames(st)] == [135, 128]
    assert st.nd.get(IF, target).state is NudState.REACHABLE  # type: ignore[union-attr]


def step_to(st: Stack, clock: ManualClock, until: int) -> None:
    """Run every timer up to ``until`` (absolute), as the driver does."""
    while True:
        at = st.poll_at()
        if at is None or at > until:
            break
        clock.set(max(at, clock.now()))
        st.poll(clock.now())
    clock.set(until)
    st.poll(clock.now())


# -- STALE garbage collection ----------------------------------------------------------------


def test_unused_stale_entry_is_forgotten_after_gc_stale_time_without_a_frame() -> None:
    st, clock = one_stack()
    resolved(st, clock)
    e = st.nd.get(IF, GA_B)
    assert e is not None
    step_to(st, clock, clock.now() + s(46))              # ReachableTime is at most 1.5 x 30 s
    assert e.state is NudState.STALE
    stale_since = e.updated_at
    step_to(st, clock, stale_since + GC_STALE_TIME - 1)
    assert st.nd.get(IF, GA_B) is e
    step_to(st, clock, stale_since + GC_STALE_TIME)
    assert st.nd.get(IF, GA_B) is None
    assert st.drain_tx() == []                            # collected silently, no probe
    nd = st.query("stats", {}, clock.now())["nd"]
    assert nd["cache_entries"] == 0 and nd["gc_stale"] == 1
    # the next packet resolves afresh
    st.icmp6.ping_send(GA_B, 0, 9, 2, b"hi", clock.now())
    [(_, ns)] = frames(st)
    assert ns.icmp_type == 135 and ns.dst == solicited_node(GA_B)


def test_gc_stale_time_is_configurable_per_interface() -> None:
    st, clock = one_stack()
    st.set_nd_params(IF, gc_stale_time=s(5))
    resolved(st, clock)
    step_to(st, clock, clock.now() + s(46))
    assert st.nd.get(IF, GA_B) is None                    # STALE at <= 45 s, gone 5 s later


# -- flush_neighbors ---------------------------------------------------------------------------


def test_flush_neighbors_forgets_dynamic_entries_keeps_permanent_and_drops_waiting_packets() -> None:
    st, clock = one_stack()
    resolved(st, clock)
    st.add_neighbor(IF, GA_C, MAC_B, clock.now())
    st.icmp6.ping_send(ip6("2001:db8:1::99"), 0, 9, 1, b"hi", clock.now())   # waits, INCOMPLETE
    frames(st)
    assert st.flush_neighbors(IF, clock.now()) == 2
    assert st.nd.get(IF, GA_B) is None and st.nd.get(IF, ip6("2001:db8:1::99")) is None
    kept = st.nd.get(IF, GA_C)
    assert kept is not None and kept.state is NudState.PERMANENT
    assert st.stats[Drop.ND_FLUSHED] == 1
    step_to(st, clock, clock.now() + s(5))
    assert st.drain_tx() == [] and st.drain_events() == []   # no NS, no ICMP error for it
    assert any("neighbor cache flushed on tap0: 2 entries" in m for _, m in st.log)
    # IPv4 (ARP) entries go too, and the next packet solicits again
    st.icmp6.ping_send(GA_B, 0, 9, 2, b"hi", clock.now())
    assert [f.icmp_type for _, f in frames(st)] == [135]
    assert st.flush_neighbors(None, clock.now()) == 1


# -- ND timing knobs -------------------------------------------------------------------------------


def test_set_nd_params_timing_of_the_whole_nud_cycle() -> None:
    st, clock = one_stack()
    st.set_nd_params(IF, base_reachable_time=ms(1000), retrans_timer=ms(500), delay_first_probe_time=ms(700))
    nd = st.interfaces[IF].nd
    assert ms(500) <= nd.reachable_time <= ms(1500) and nd.retrans_timer == ms(500)
    t0 = clock.now()
    resolved(st, clock)
    e = st.nd.get(IF, GA_B)
    assert e is not None and e.timer_at == t0 + nd.reachable_time
    step_to(st, clock, t0 + nd.reachable_time)
    assert e.state.value == "STALE"
    st.icmp6.ping_send(GA_B, 0, 9, 2, b"hi", clock.now())
    assert e.state.value == "DELAY" and e.timer_at == clock.now() + ms(700)
    frames(st)
    step_to(st, clock, clock.now() + ms(700))
    assert e.state is NudState.PROBE
    [(_, probe)] = frames(st)
    assert probe.icmp_type == 135 and probe.dst == GA_B and probe.eth_dst == MAC_B   # unicast
    step_to(st, clock, clock.now() + ms(500))
    [(_, probe2)] = frames(st)                             # RetransTimer 500 ms apart
    assert probe2.icmp_type == 135
    st.receive(IF, na_from(GA_B), clock.now())
    assert e.state.value == "REACHABLE"


# -- link down / up -----------------------------------------------------------------------------------


def test_link_up_restarts_dad_and_router_solicitation() -> None:
    clock = ManualClock()
    st = Stack(rng=random.Random(2), now=clock.now())
    st.add_interface("tap0", MAC_A, now=clock.now(), accept_ra=True)
    st.add_address(IF, GA_A, 64, clock.now())
    settle(st, clock, s(10))
    st.drain_tx()
    st.set_link(IF, False, clock.now())
    settle(st, clock, s(2))
    assert st.drain_tx() == []
    st.set_link(IF, True, clock.now())
    iface = st.interfaces[IF]
    assert all(a.state is AddrState.TENTATIVE for a in iface.addrs6)
    assert not st.ready()
    settle(st, clock, s(3))
    sent = [f for _, f in frames(st)]
    dad_targets = {bytes(f.buf[f.l4_off + 8:f.l4_off + 24]) for f in sent
                   if f.icmp_type == 135 and f.src == bytes(16)}
    assert dad_targets == {a.addr for a in iface.addrs6}
    assert any(f.icmp_type == 133 for f in sent)           # RS again
    assert all(a.state is AddrState.PREFERRED for a in iface.addrs6) and st.ready()


def test_link_up_gives_a_duplicated_address_another_dad() -> None:
    st, clock = one_stack()
    a = st.interfaces[IF].find6(GA_A)
    assert a is not None
    st.set_link(IF, False, clock.now())
    st.remove_address(IF, GA_A, clock.now())
    st.add_address(IF, GA_A, 64, clock.now())
    a = st.interfaces[IF].find6(GA_A)
    assert a is not None
    st.ndp.dad_failed(st.interfaces[IF], a, "test", clock.now())
    assert a.state.value == "duplicated"
    st.set_link(IF, True, clock.now())
    assert a.state.value == "tentative"
    settle(st, clock, s(3))
    assert a.state is AddrState.PREFERRED


def test_link_up_twice_does_not_double_dad() -> None:
    st, clock = one_stack()
    st.set_link(IF, False, clock.now())
    st.set_link(IF, True, clock.now())
    st.set_link(IF, True, clock.now())                    # no change: nothing
    settle(st, clock, s(3))
    dad = [f for _, f in frames(st) if f.icmp_type == 135 and f.src == bytes(16)]
    assert len(dad) == len(st.interfaces[IF].addrs6)       # DupAddrDetectTransmits = 1 each


# -- failure seen by a local socket -------------------------------------------------------------------


def test_failed_resolution_gives_ehostunreach_to_a_local_udp_socket() -> None:
    st, clock = one_stack()
    ep = st.udp.bind(None, 0)
    ep.connect(GA_C, 9, 0)
    ep.sendto(b"x", GA_C, 9, 0, clock.now())
    ep.sendto(b"y", GA_C, 9, 0, clock.now())              # both wait on the INCOMPLETE entry
    step_to(st, clock, clock.now() + s(3))
    sent = [f for _, f in frames(st)]
    assert [f.icmp_type for f in sent] == [135, 135, 135]      # MAX_MULTICAST_SOLICIT, no datagram
    errs = [e for e in st.drain_events() if isinstance(e, SocketError)]
    assert [e.errno for e in errs] == [errno.EHOSTUNREACH, errno.EHOSTUNREACH]
    assert st.stats[Drop.ND_RESOLUTION_FAILED] == 2
    assert st.nd.get(IF, GA_C) is None


def test_resolution_releases_queued_datagrams_in_order_to_the_new_lladdr() -> None:
    st, clock = one_stack()
    ep = st.udp.bind(None, 0)
    for data in (b"one", b"two", b"three"):
        ep.sendto(data, GA_C, 9, 0, clock.now())
    [(_, ns)] = frames(st)
    assert ns.icmp_type == 135
    st.receive(IF, na_from(GA_C, mac=MAC_B), clock.now())
    out = [f for _, f in frames(st)]
    assert [bytes(f.buf[f.l4_off + 8:f.ip_end]) for f in out] == [b"one", b"two", b"three"]
    assert all(f.eth_dst == MAC_B and f.proto == 17 for f in out)

"""Router discovery, SLAAC and Redirect for hosts (stack.core.rdisc), frame in /
frame out on a manual clock. RAs and Redirects are crafted with scapy; what the
stack sends is parsed back with scapy. RFC 4861 §6.3, §8; RFC 4862 §5.5."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from harness import (
    GA_A,
    GA_B,
    IF,
    LL_A,
    MAC_A,
    MAC_B,
    MAC_C,
    Ether,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    frames,
    one_stack,
    only,
    settle,
    smac,
)
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRedirectedHdr,
    ICMPv6NDOptUnknown,
    ICMPv6Unknown,
)

from stack.core import rdisc
from stack.core.clock import ManualClock, ms, s
from stack.core.interface import AddrState, Origin
from stack.core.ipservice import RouteError
from stack.core.nd import NudState
from stack.core.routes import PROTO_KERNEL, PROTO_RA, PROTO_REDIRECT, Route
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire.addr import eui64, fmt, ip6, mac, solicited_node
from stack.wire.frame_types import Frame

MAC_R = mac("02:00:00:00:00:01")
LL_R = ip6("fe80::1")
LL_R2 = ip6("fe80::2")
LL_X = ip6("fe80::99")
PREFIX = ip6("2001:db8:77::")
SLAAC_A = PREFIX[:8] + eui64(MAC_A)
FAR = ip6("2001:db8:99::5")
HOUR = 3600


def ra_stack(*, dad: bool = False, forwarding: bool = False, accept_ra: bool = True,
             seed: int = 1) -> tuple[Stack, ManualClock]:
    """A host on tap0 with accept_ra; nothing sent yet (RS and DAD are pending)."""
    clock = ManualClock()
    st = Stack(rng=random.Random(seed), now=clock.now(), forwarding=forwarding)
    st.add_interface("tap0", MAC_A, 1500, accept_ra=accept_ra, now=clock.now(),
                     dad_transmits=1 if dad else 0)
    return st, clock


def settled(**kw: Any) -> tuple[Stack, ManualClock]:
    """ra_stack after all its RS went out (13 s), output drained."""
    st, clock = ra_stack(**kw)
    settle(st, clock, s(13))
    st.drain_tx()
    return st, clock


def pio(prefix: bytes = PREFIX, plen: int = 64, *, L: int = 1, A: int = 1,
        valid: int = 2 * HOUR * 12, preferred: int = HOUR) -> Any:
    return ICMPv6NDOptPrefixInfo(prefixlen=plen, L=L, A=A, validlifetime=valid,
                                 preferredlifetime=preferred, prefix=fmt(prefix))


def ra(*opts: Any, src: bytes = LL_R, lifetime: int = 1800, hlim: int = 255, code: int = 0,
       chlim: int = 64, reachable: int = 0, retrans: int = 0, slla: bytes | None = MAC_R,
       mtu: int | None = None) -> bytes:
    p = (Ether(src=smac(MAC_R), dst="33:33:00:00:00:01")
         / IPv6(src=fmt(src), dst="ff02::1", hlim=hlim)
         / ICMPv6ND_RA(code=code, chlim=chlim, routerlifetime=lifetime, reachabletime=reachable,
                       retranstimer=retrans))
    if slla is not None:
        p /= ICMPv6NDOptSrcLLAddr(lladdr=smac(slla))
    if mtu is not None:
        p /= ICMPv6NDOptMTU(mtu=mtu)
    for o in opts:
        p /= o
    return bytes(p)


def redirect(target: bytes, dest: bytes, *, src: bytes = LL_R, hlim: int = 255,
             tlla: bytes | None = MAC_C, code: int = 0) -> bytes:
    p = (Ether(src=smac(MAC_R), dst=smac(MAC_A)) / IPv6(src=fmt(src), dst=fmt(LL_A), hlim=hlim)
         / ICMPv6ND_Redirect(code=code, tgt=fmt(target), dst=fmt(dest)))
    if tlla is not None:
        p /= ICMPv6NDOptDstLLAddr(lladdr=smac(tlla))
    p /= ICMPv6NDOptRedirectedHdr(pkt=bytes(IPv6(src=fmt(GA_A), dst=fmt(dest)) / ICMPv6EchoRequest()))
    return bytes(p)


def routes(st: Stack, proto: str) -> list[Route]:
    return [r for r in st.routes.routes(6) if r.proto == proto]


def of_type(out: list[tuple[int, Frame]], icmp_type: int) -> list[Frame]:
    return [f for _, f in out if f.icmp_type == icmp_type]


def scapy(f: Frame) -> Any:
    return Ether(bytes(f.buf))


def collect(st: Stack, clock: ManualClock, until: int) -> list[tuple[int, Frame]]:
    """Run timers for `until`, returning (time offset, frame) of everything sent."""
    start = clock.now()
    out: list[tuple[int, Frame]] = []
    end = start + until
    while True:
        at = st.poll_at()
        if at is None or at > end:
            break
        clock.set(max(at, clock.now()))
        st.poll(clock.now())
        out.extend((clock.now() - start, f) for _, f in frames(st))
    clock.set(end)
    return out


def add_router(st: Stack, clock: ManualClock, *opts: Any, **kw: Any) -> None:
    st.receive(IF, ra(*opts, **kw), clock.now())
    st.drain_tx()


# -- Router Solicitation (RFC 4861 §6.3.7) ----------------------------------------------------


def test_first_rs_after_random_delay_within_max_rtr_solicitation_delay() -> None:
    for seed in range(8):
        st, clock = ra_stack(seed=seed)
        sent = [(t, f) for t, f in collect(st, clock, s(1)) if f.icmp_type == 133]
        assert len(sent) == 1
        t, f = sent[0]
        assert 0 <= t <= rdisc.MAX_RTR_SOLICITATION_DELAY
        p = scapy(f)
        assert p[IPv6].dst == "ff02::2" and p[IPv6].hlim == 255 and p[Ether].dst == "33:33:00:00:00:02"
        assert ICMPv6ND_RS in p


def test_rs_from_unspecified_without_sllao_while_link_local_is_tentative() -> None:
    st, clock = ra_stack(dad=True, seed=2)
    sent = of_type(collect(st, clock, s(13)), 133)
    assert len(sent) == 3
    first = scapy(sent[0])
    assert first[IPv6].src == "::" and ICMPv6NDOptSrcLLAddr not in first   # §4.1
    later = scapy(sent[1])
    assert later[IPv6].src == fmt(LL_A) and later[ICMPv6NDOptSrcLLAddr].lladdr == smac(MAC_A)


def test_rs_from_link_local_with_sllao_when_usable() -> None:
    st, clock = ra_stack(dad=False)
    p = scapy(of_type(collect(st, clock, s(1)), 133)[0])
    assert p[IPv6].src == fmt(LL_A) and p[ICMPv6NDOptSrcLLAddr].lladdr == smac(MAC_A)


def test_rs_retransmitted_max_rtr_solicitations_times_every_interval_then_stops() -> None:
    st, clock = ra_stack()
    sent = [(t, f) for t, f in collect(st, clock, s(60)) if f.icmp_type == 133]
    assert len(sent) == rdisc.MAX_RTR_SOLICITATIONS == 3
    times = [t for t, _ in sent]
    assert [b - a for a, b in itertools.pairwise(times)] == [rdisc.RTR_SOLICITATION_INTERVAL] * 2
    assert st.ndp.rdisc.solicit == {}


def test_rs_stops_when_an_ra_with_nonzero_lifetime_arrives() -> None:
    st, clock = ra_stack()
    assert len(of_type(collect(st, clock, s(2)), 133)) == 1
    st.receive(IF, ra(lifetime=0), clock.now())          # lifetime 0: keep soliciting
    assert len(of_type(collect(st, clock, s(4)), 133)) == 1
    st.receive(IF, ra(lifetime=600), clock.now())
    assert of_type(collect(st, clock, s(30)), 133) == []


@pytest.mark.parametrize("kw", [{"accept_ra": False}, {"forwarding": True}], ids=["no_accept_ra", "router"])
def test_no_rs_without_accept_ra_or_when_forwarding(kw: dict[str, bool]) -> None:
    st, clock = ra_stack(**kw)
    assert of_type(collect(st, clock, s(30)), 133) == []


# -- RA validation (§6.1.2) -------------------------------------------------------------------


def _truncated_ra() -> bytes:
    return bytes(Ether(src=smac(MAC_R), dst="33:33:00:00:00:01") / IPv6(src=fmt(LL_R), dst="ff02::1", hlim=255)
                 / ICMPv6Unknown(type=134, code=0, msgbody=bytes(8)))          # 12 bytes < 16


def _zero_length_option_ra() -> bytes:
    return bytes(Ether(src=smac(MAC_R), dst="33:33:00:00:00:01") / IPv6(src=fmt(LL_R), dst="ff02::1", hlim=255)
                 / ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptUnknown(type=99, len=0, data=bytes(6)))


@pytest.mark.parametrize("frame, reason", [
    (lambda: ra(src=GA_B), Drop.ND_RA_BAD_SOURCE),
    (lambda: ra(src=LL_A), Drop.ND_RA_BAD_SOURCE),            # our own link-local
    (lambda: ra(hlim=254), Drop.ND_BAD_HOP_LIMIT),
    (lambda: ra(hlim=64), Drop.ND_BAD_HOP_LIMIT),
    (lambda: ra(code=1), Drop.ND_BAD_CODE),
    (_truncated_ra, Drop.ND_BAD_LENGTH),
    (_zero_length_option_ra, Drop.ND_BAD_OPTION),
], ids=["global_src", "own_src", "hlim_254", "hlim_64", "code_1", "short", "zero_len_option"])
def test_invalid_ra_is_a_counted_drop_and_changes_nothing(frame: Any, reason: Drop) -> None:
    st, clock = settled()
    st.receive(IF, frame(), clock.now())
    assert st.stats[reason] == 1
    assert routes(st, PROTO_RA) == [] and st.ndp.rdisc.routers == {}
    assert st.nd.get(IF, LL_R) is None


@pytest.mark.parametrize("kw", [{"accept_ra": False}, {"forwarding": True}], ids=["no_accept_ra", "router"])
def test_ra_is_counted_and_ignored_without_accept_ra_or_on_a_router(kw: dict[str, bool]) -> None:
    st, clock = settled(**kw)
    st.receive(IF, ra(pio(), reachable=5000, mtu=1400), clock.now())
    assert st.stats[Drop.ND_RA_IGNORED] == 1
    iface = st.interfaces[IF]
    assert routes(st, PROTO_RA) == [] and iface.find6(SLAAC_A) is None
    assert iface.mtu == 1500 and iface.nd.base_reachable_time == s(30)


def test_one_stack_without_accept_ra_still_ignores_ra() -> None:
    st, clock = one_stack()
    st.receive(IF, ra(pio()), clock.now())
    assert st.stats[Drop.ND_RA_IGNORED] == 1 and routes(st, PROTO_RA) == []


# -- default router list (§6.3.4, §6.3.5) -----------------------------------------------------------


def test_ra_adds_default_route_via_router_link_local_in_its_zone() -> None:
    st, clock = settled()
    add_router(st, clock, lifetime=1800)
    r = only(routes(st, PROTO_RA))
    assert (r.dst, r.plen, r.gateway, r.gw_zone, r.ifindex) == (bytes(16), 0, LL_R, IF, IF)
    assert r.expires_at == clock.now() + s(1800)
    out = st.route_output(FAR, 0, None, clock.now())
    assert (out.ifp, out.nexthop, out.nexthop_zone) == (IF, LL_R, IF)


def test_default_router_expires_with_its_lifetime() -> None:
    st, clock = settled()
    add_router(st, clock, lifetime=100)
    clock.advance(s(99))
    st.poll(clock.now())
    assert st.ndp.rdisc.is_router(IF, LL_R)
    clock.advance(s(1))
    st.poll(clock.now())
    assert not st.ndp.rdisc.is_router(IF, LL_R) and routes(st, PROTO_RA) == []
    with pytest.raises(RouteError):
        st.route_output(FAR, 0, None, clock.now())


def test_ra_refreshes_router_lifetime() -> None:
    st, clock = settled()
    add_router(st, clock, lifetime=100)
    clock.advance(s(90))
    st.poll(clock.now())
    add_router(st, clock, lifetime=100)
    clock.advance(s(50))
    st.poll(clock.now())
    r = only(routes(st, PROTO_RA))
    assert r.expires_at == clock.now() + s(50)


def test_ra_with_router_lifetime_zero_removes_the_router_at_once() -> None:
    st, clock = settled()
    add_router(st, clock, lifetime=1800)
    add_router(st, clock, lifetime=0)
    assert routes(st, PROTO_RA) == [] and st.ndp.rdisc.routers == {}


def test_two_routers_are_both_listed_and_removed_independently() -> None:
    st, clock = settled()
    add_router(st, clock, src=LL_R, lifetime=1800)
    add_router(st, clock, src=LL_R2, lifetime=1800, slla=MAC_C)
    assert {r.gateway for r in routes(st, PROTO_RA)} == {LL_R, LL_R2}
    add_router(st, clock, src=LL_R, lifetime=0)
    assert only(routes(st, PROTO_RA)).gateway == LL_R2


def test_router_known_reachable_is_preferred_over_unknown_one() -> None:
    st, clock = settled()
    add_router(st, clock, src=LL_R, slla=None)                     # no cache entry: unknown
    add_router(st, clock, src=LL_R2, slla=MAC_C)                   # STALE: probably reachable
    assert st.route_output(FAR, 0, None, clock.now()).nexthop == LL_R2   # §6.3.6
    metrics = {r.gateway: r.metric for r in routes(st, PROTO_RA)}
    assert metrics == {LL_R: rdisc.RA_SUSPECT_METRIC, LL_R2: rdisc.RA_DEFAULT_METRIC}


def test_traffic_moves_to_the_other_router_when_the_first_stops_answering() -> None:
    st, clock = settled()
    add_router(st, clock, pio(), src=LL_R, slla=MAC_R)
    add_router(st, clock, src=LL_R2, slla=MAC_C)
    assert st.route_output(FAR, 0, None, clock.now()).nexthop == LL_R
    st.icmp6.ping_send(FAR, 0, 1, 1, b"x", clock.now())
    assert only(of_type(frames(st), 128)).eth_dst == MAC_R
    settle(st, clock, s(10))                                        # DELAY, 3 probes, entry gone
    assert st.nd.get(IF, LL_R) is None
    assert st.route_output(FAR, 0, None, clock.now()).nexthop == LL_R2
    add_router(st, clock, src=LL_R, slla=MAC_R)                     # it is back
    assert {r.gateway: r.metric for r in routes(st, PROTO_RA)}[LL_R] == rdisc.RA_DEFAULT_METRIC


def test_router_answering_resolution_becomes_preferred_again() -> None:
    st, clock = settled()
    add_router(st, clock, src=LL_R, slla=None)
    assert only(routes(st, PROTO_RA)).metric == rdisc.RA_SUSPECT_METRIC
    st.ndp.apply(st.nd.on_solicitation(IF, LL_R, MAC_R, clock.now()), clock.now())
    st.receive(IF, _na_from_router(True), clock.now())
    assert only(routes(st, PROTO_RA)).metric == rdisc.RA_DEFAULT_METRIC


def test_static_default_route_wins_over_learned_one() -> None:
    st, clock = settled()
    st.add_route(bytes(16), 0, gateway=LL_X, gw_zone=IF, now=clock.now())
    add_router(st, clock)
    assert st.route_output(FAR, 0, None, clock.now()).nexthop == LL_X


def test_default_router_list_is_bounded() -> None:
    st, clock = settled()
    for i in range(rdisc.MAX_ROUTERS_PER_IF + 3):
        add_router(st, clock, src=ip6(f"fe80::1:{i + 1:x}"), slla=None)
    assert len(st.ndp.rdisc.routers) == rdisc.MAX_ROUTERS_PER_IF
    assert st.stats.get("nd", "ra_router_list_full") == 3


# -- parameters: CurHopLimit, ReachableTime, RetransTimer, MTU (§6.3.4) --------------------------


def _echo_from_b() -> bytes:
    return bytes(Ether(src=smac(MAC_B), dst=smac(MAC_A)) / IPv6(src=fmt(GA_B), dst=fmt(SLAAC_A))
                 / ICMPv6EchoRequest(id=1, seq=1))


def test_cur_hop_limit_is_used_for_our_packets() -> None:
    st, clock = settled()
    add_router(st, clock, pio(), chlim=17)
    assert st.interfaces[IF].nd.cur_hop_limit == 17
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_route(GA_B, 128, ifindex=IF, now=clock.now())
    st.receive(IF, _echo_from_b(), clock.now())
    reply = only(of_type(frames(st), 129))
    assert reply.hop_limit == 17


def test_cur_hop_limit_zero_means_unspecified() -> None:
    st, clock = settled()
    add_router(st, clock, chlim=0)
    assert st.interfaces[IF].nd.cur_hop_limit == 64


def test_reachable_time_and_retrans_timer_reach_the_neighbor_cache() -> None:
    st, clock = settled()
    add_router(st, clock, reachable=10_000, retrans=2500)
    nd = st.interfaces[IF].nd
    assert nd.base_reachable_time == s(10)
    assert s(5) <= nd.reachable_time <= s(15)                      # §6.3.2 random factor
    assert st.nd.reachable[IF] == nd.reachable_time and st.nd.retrans[IF] == ms(2500)
    drawn = nd.reachable_time
    add_router(st, clock, reachable=10_000, retrans=2500)          # same value: no new draw
    assert nd.reachable_time == drawn
    add_router(st, clock, reachable=0, retrans=0)                  # unspecified: kept
    assert (nd.base_reachable_time, nd.retrans_timer) == (s(10), ms(2500))


def test_new_reachable_time_drives_nud() -> None:
    st, clock = settled()
    add_router(st, clock, pio(), reachable=2000)
    st.add_route(GA_B, 128, ifindex=IF, now=clock.now())
    st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", clock.now())
    st.drain_tx()
    st.receive(IF, bytes(Ether(src=smac(MAC_B), dst=smac(MAC_A)) / IPv6(src=fmt(GA_B), dst=fmt(LL_A), hlim=255)
                         / ICMPv6ND_NA(tgt=fmt(GA_B), S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_B))),
               clock.now())
    e = st.nd.get(IF, GA_B)
    assert e is not None and e.state is NudState.REACHABLE
    clock.advance(s(3))                                            # > 1.5 x 2 s
    st.poll(clock.now())
    assert e.state is NudState.STALE


def test_retrans_timer_paces_address_resolution() -> None:
    st, clock = settled()
    add_router(st, clock, pio(), retrans=300)
    st.add_route(GA_B, 128, ifindex=IF, now=clock.now())
    st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", clock.now())
    assert only(of_type(frames(st), 135))
    out = collect(st, clock, s(2))
    assert [t for t, f in out if f.icmp_type == 135] == [ms(300), ms(600)]


@pytest.mark.parametrize("mtu, expected", [(1400, 1400), (1280, 1280), (1279, 1500), (9000, 1500)])
def test_mtu_option_within_limits_sets_link_mtu(mtu: int, expected: int) -> None:
    st, clock = settled()
    add_router(st, clock, mtu=mtu)
    assert st.interfaces[IF].mtu == expected
    assert st.route_output(FAR, 0, None, clock.now()).mtu == expected
    assert st.stats.get("nd", "ra_mtu_ignored") == (0 if mtu == expected else 1)


# -- SLLAO (§6.3.4) --------------------------------------------------------------------------


def test_ra_sllao_creates_stale_router_entry() -> None:
    st, clock = settled()
    add_router(st, clock)
    e = st.nd.get(IF, LL_R)
    assert e is not None and (e.state, e.lladdr, e.is_router) == (NudState.STALE, MAC_R, True)


def test_ra_sllao_changed_updates_entry_to_stale() -> None:
    st, clock = settled()
    add_router(st, clock)
    add_router(st, clock, slla=MAC_C)
    e = st.nd.get(IF, LL_R)
    assert e is not None and (e.state, e.lladdr) == (NudState.STALE, MAC_C)


def test_ra_without_sllao_marks_existing_entry_as_router() -> None:
    st, clock = settled()
    st.ndp.apply(st.nd.on_solicitation(IF, LL_R, MAC_R, clock.now()), clock.now())
    add_router(st, clock, slla=None)
    e = st.nd.get(IF, LL_R)
    assert e is not None and e.is_router


def test_ra_sllao_releases_packets_queued_for_the_router() -> None:
    st, clock = settled()
    st.add_address(IF, GA_A, 64, clock.now())
    st.add_route(bytes(16), 0, gateway=LL_R, gw_zone=IF, now=clock.now())
    st.icmp6.ping_send(FAR, 0, 1, 1, b"x", clock.now())
    assert of_type(frames(st), 135)                                   # resolving the router
    st.receive(IF, ra(), clock.now())
    echo = only(of_type(frames(st), 128))
    assert echo.eth_dst == MAC_R and echo.dst == FAR


# -- NA with R=0 (§7.2.5) -----------------------------------------------------------------------


def _na_from_router(router: bool, src: bytes = LL_R) -> bytes:
    return bytes(Ether(src=smac(MAC_R), dst="33:33:00:00:00:01") / IPv6(src=fmt(src), dst="ff02::1", hlim=255)
                 / ICMPv6ND_NA(tgt=fmt(src), R=int(router), S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_R)))


def test_router_that_stops_being_a_router_leaves_the_default_router_list() -> None:
    st, clock = settled()
    add_router(st, clock)
    st.receive(IF, _na_from_router(True), clock.now())
    assert st.ndp.rdisc.is_router(IF, LL_R)
    st.receive(IF, _na_from_router(False), clock.now())
    assert not st.ndp.rdisc.is_router(IF, LL_R) and routes(st, PROTO_RA) == []
    e = st.nd.get(IF, LL_R)
    assert e is not None and not e.is_router


def test_router_lost_even_when_its_entry_was_learned_without_is_router() -> None:
    st, clock = settled()
    add_router(st, clock, slla=None)                               # no entry yet
    st.ndp.apply(st.nd.on_solicitation(IF, LL_R, MAC_R, clock.now()), clock.now())
    st.receive(IF, _na_from_router(False), clock.now())
    assert routes(st, PROTO_RA) == []


# -- prefix list: on-link (§6.3.4) ------------------------------------------------------------------


def test_on_link_prefix_becomes_connected_route_expiring_with_valid_lifetime() -> None:
    st, clock = settled()
    add_router(st, clock, pio(L=1, A=0, valid=600, preferred=300))
    r = only(r for r in routes(st, PROTO_RA) if r.plen == 64)
    assert (r.dst, r.ifindex, r.gateway, r.expires_at) == (PREFIX, IF, None, clock.now() + s(600))
    assert st.interfaces[IF].find6(SLAAC_A) is None                # A=0: no address
    out = st.route_output(PREFIX[:15] + b"\x05", 0, None, clock.now())
    assert out.nexthop == PREFIX[:15] + b"\x05"                    # on-link: resolved directly
    clock.advance(s(600))
    st.poll(clock.now())
    assert [r for r in routes(st, PROTO_RA) if r.plen == 64] == []


def test_on_link_prefix_valid_lifetime_zero_times_it_out_and_unknown_zero_is_ignored() -> None:
    st, clock = settled()
    add_router(st, clock, pio(prefix=ip6("2001:db8:55::"), L=1, A=0, valid=0, preferred=0))
    assert [r for r in routes(st, PROTO_RA) if r.plen == 64] == []
    add_router(st, clock, pio(L=1, A=0, valid=600, preferred=0))
    add_router(st, clock, pio(L=1, A=0, valid=0, preferred=0))
    assert [r for r in routes(st, PROTO_RA) if r.plen == 64] == [] and st.ndp.rdisc.prefixes == {}


def test_on_link_prefix_with_infinite_lifetime_never_expires() -> None:
    st, clock = settled()
    add_router(st, clock, pio(L=1, A=0, valid=0xFFFFFFFF, preferred=0xFFFFFFFF))
    r = only(r for r in routes(st, PROTO_RA) if r.plen == 64)
    assert r.expires_at is None


def test_link_local_prefix_is_ignored() -> None:
    st, clock = settled()
    add_router(st, clock, pio(prefix=ip6("fe80::"), L=1, A=1))
    assert [r for r in routes(st, PROTO_RA) if r.plen == 64] == []
    assert [a for a in st.interfaces[IF].addrs6 if a.origin is Origin.SLAAC] == []


# -- SLAAC (RFC 4862 §5.5.3) --------------------------------------------------------------------------


def slaac(st: Stack) -> Any:
    return st.interfaces[IF].find6(SLAAC_A)


def test_autonomous_prefix_forms_eui64_address_and_runs_dad() -> None:
    st, clock = settled(dad=True)
    add_router(st, clock, pio(valid=7200, preferred=3600))
    a = slaac(st)
    assert a is not None and a.origin is Origin.SLAAC and a.plen == 64
    assert a.state is AddrState.TENTATIVE
    assert (a.preferred_until, a.valid_until) == (clock.now() + s(3600), clock.now() + s(7200))
    assert solicited_node(SLAAC_A) in st.interfaces[IF].groups6
    dad = [f for _, f in collect(st, clock, s(2)) if f.icmp_type == 135]
    p = scapy(only(dad))
    assert p[IPv6].src == "::" and p[IPv6].dst == fmt(solicited_node(SLAAC_A))
    assert p["ICMPv6 Neighbor Discovery - Neighbor Solicitation"].tgt == fmt(SLAAC_A)
    assert a.state is AddrState.PREFERRED


def test_slaac_address_answers_after_dad_and_is_the_source_toward_the_internet() -> None:
    st, clock = settled(dad=True)
    add_router(st, clock, pio())
    settle(st, clock, s(2))
    st.drain_tx()
    assert st.route_output(FAR, 0, None, clock.now()).src == SLAAC_A


def test_duplicate_slaac_address_is_marked_and_not_used() -> None:
    st, clock = settled(dad=True)
    add_router(st, clock, pio())
    dup = (Ether(src=smac(MAC_B), dst="33:33:00:00:00:01") / IPv6(src=fmt(SLAAC_A), dst="ff02::1", hlim=255)
           / ICMPv6ND_NA(tgt=fmt(SLAAC_A), S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_B)))
    st.receive(IF, bytes(dup), clock.now())
    assert slaac(st).state is AddrState.DUPLICATED
    assert not st.interfaces[IF].ipv6_disabled                     # only a MAC-derived link-local does that
    add_router(st, clock, pio())                                   # refresh keeps it DUPLICATED
    assert slaac(st).state is AddrState.DUPLICATED


def test_autonomous_prefix_without_on_link_flag_is_not_on_link() -> None:
    st, clock = settled()
    add_router(st, clock, pio(L=0, A=1))
    assert slaac(st) is not None
    assert [r for r in st.routes.routes(6) if r.plen == 64 and r.dst == PREFIX] == []   # RFC 5942 §4
    out = st.route_output(PREFIX[:15] + b"\x05", 0, None, clock.now())
    assert (out.nexthop, out.src) == (LL_R, SLAAC_A)                  # via the router


def test_slaac_next_to_a_static_address_keeps_the_static_connected_route() -> None:
    st, clock = settled()
    st.add_address(IF, PREFIX[:15] + b"\x07", 64, clock.now())
    add_router(st, clock, pio(L=0, A=1))
    assert slaac(st) is not None
    assert [r.proto for r in st.routes.routes(6) if r.plen == 64 and r.dst == PREFIX] == [PROTO_KERNEL]


@pytest.mark.parametrize("opt, counter", [
    (lambda: pio(plen=48), "pio_bad_prefix_length"),
    (lambda: pio(plen=96), "pio_bad_prefix_length"),
    (lambda: pio(valid=100, preferred=200), "pio_preferred_exceeds_valid"),
    (lambda: pio(valid=0, preferred=0), None),
    (lambda: pio(A=0), None),
    (lambda: pio(prefix=ip6("fe80::"), L=0), None),
], ids=["plen48", "plen96", "preferred_gt_valid", "valid0", "a0", "link_local"])
def test_prefixes_that_form_no_address(opt: Any, counter: str | None) -> None:
    st, clock = settled()
    add_router(st, clock, opt())
    assert [a for a in st.interfaces[IF].addrs6 if a.origin is Origin.SLAAC] == []
    if counter is not None:
        assert st.stats.get("nd", counter) == 1


def test_preferred_greater_than_valid_is_ignored_for_on_link_too() -> None:
    # RFC 4861 §6.3.4 does not compare the lifetimes for on-link: the route is kept.
    st, clock = settled()
    add_router(st, clock, pio(valid=100, preferred=200))
    assert [r for r in routes(st, PROTO_RA) if r.plen == 64]


def test_address_is_deprecated_then_removed_with_its_lifetimes() -> None:
    st, clock = settled()
    add_router(st, clock, pio(valid=200, preferred=100))
    assert slaac(st).state is AddrState.PREFERRED
    clock.advance(s(100))
    st.poll(clock.now())
    assert slaac(st).state is AddrState.DEPRECATED
    assert st.route_output(FAR, 0, None, clock.now()).src == SLAAC_A      # still usable
    st.receive(IF, bytes(Ether(src=smac(MAC_B), dst=smac(MAC_A)) / IPv6(src=fmt(GA_B), dst=fmt(SLAAC_A))
                         / ICMPv6EchoRequest()), clock.now())
    assert st.stats[Drop.IPV6_NOT_FOR_US] == 0                              # still ours
    st.drain_tx()
    clock.advance(s(100))
    st.poll(clock.now())
    assert slaac(st) is None
    assert st.interfaces[IF].groups6[solicited_node(SLAAC_A)] == 1   # shared with LL_A, left once
    assert any("expired" in m for _, m in st.log)


def test_deprecated_address_loses_source_selection_to_a_preferred_one() -> None:
    st, clock = settled()
    st.add_address(IF, GA_A, 64, clock.now())
    add_router(st, clock, pio(valid=200, preferred=0))
    assert slaac(st).state is AddrState.DEPRECATED                     # preferred 0: at once
    assert st.route_output(FAR, 0, None, clock.now()).src == GA_A       # RFC 6724 rule 3


def test_new_preferred_lifetime_revives_deprecated_address() -> None:
    st, clock = settled()
    add_router(st, clock, pio(valid=3 * HOUR, preferred=0))
    assert slaac(st).state is AddrState.DEPRECATED
    add_router(st, clock, pio(valid=3 * HOUR, preferred=600))
    assert slaac(st).state is AddrState.PREFERRED
    assert slaac(st).preferred_until == clock.now() + s(600)


def test_preferred_lifetime_running_out_during_dad_deprecates_after_dad() -> None:
    st, clock = settled(dad=True)
    add_router(st, clock, pio(valid=3 * HOUR, preferred=0))
    assert slaac(st).state is AddrState.TENTATIVE
    settle(st, clock, s(2))
    assert slaac(st).state is AddrState.DEPRECATED


@pytest.mark.parametrize("remaining, received, expected", [
    (3 * HOUR, 10 * HOUR, 10 * HOUR),     # e.1: more than two hours
    (3 * HOUR, 1 * HOUR, 2 * HOUR),       # e.3: cut to two hours, not to one
    (3 * HOUR, 0, 2 * HOUR),              # e.3: a zero valid lifetime cannot kill it
    (1 * HOUR, 600, 1 * HOUR),            # e.2: remaining <= 2 h: ignored
    (1 * HOUR, 0, 1 * HOUR),              # e.2
    (1800, 3600, 3600),                   # e.1: greater than the remaining lifetime
    (1 * HOUR, 3 * HOUR, 3 * HOUR),       # e.1
], ids=["e1_long", "e3_short", "e3_zero", "e2_short", "e2_zero", "e1_above_remaining", "e1_3h"])
def test_two_hour_rule(remaining: int, received: int, expected: int) -> None:
    st, clock = settled()
    add_router(st, clock, pio(valid=remaining, preferred=0))
    add_router(st, clock, pio(valid=received, preferred=0))
    assert slaac(st).valid_until == clock.now() + s(expected)


def test_two_hour_rule_with_infinite_lifetimes() -> None:
    st, clock = settled()
    add_router(st, clock, pio(valid=0xFFFFFFFF, preferred=0xFFFFFFFF))
    assert (slaac(st).valid_until, slaac(st).preferred_until) == (None, None)
    add_router(st, clock, pio(valid=600, preferred=300))            # infinite remaining: e.3
    assert slaac(st).valid_until == clock.now() + s(2 * HOUR)
    assert slaac(st).preferred_until == clock.now() + s(300)
    add_router(st, clock, pio(valid=0xFFFFFFFF, preferred=300))     # e.1
    assert slaac(st).valid_until is None


def test_slaac_addresses_are_bounded() -> None:
    st, clock = settled()
    for i in range(rdisc.MAX_SLAAC_PER_IF + 2):
        add_router(st, clock, pio(prefix=ip6(f"2001:db8:{i + 1:x}::"), L=0))
    n = len([a for a in st.interfaces[IF].addrs6 if a.origin is Origin.SLAAC])
    assert n == rdisc.MAX_SLAAC_PER_IF and st.stats.get("nd", "slaac_address_limit") == 2


# -- Redirect (§8.1, §8.3) -----------------------------------------------------------------------


def redirect_stack(**kw: Any) -> tuple[Stack, ManualClock]:
    st, clock = settled(**kw)
    add_router(st, clock, pio(L=1, A=1))
    return st, clock


def test_redirect_to_better_router_installs_host_route_and_learns_target() -> None:
    st, clock = redirect_stack()
    st.receive(IF, redirect(LL_R2, FAR), clock.now())
    r = only(routes(st, PROTO_REDIRECT))
    assert (r.dst, r.plen, r.gateway, r.gw_zone, r.ifindex) == (FAR, 128, LL_R2, IF, IF)
    e = st.nd.get(IF, LL_R2)
    assert e is not None and (e.state, e.lladdr, e.is_router) == (NudState.STALE, MAC_C, True)
    st.icmp6.ping_send(FAR, 0, 1, 1, b"x", clock.now())
    echo = only(of_type(frames(st), 128))
    assert echo.eth_dst == MAC_C and echo.dst == FAR
    other = st.route_output(ip6("2001:db8:99::6"), 0, None, clock.now())
    assert other.nexthop == LL_R                                   # only that destination moved


def test_redirect_to_on_link_destination() -> None:
    st, clock = redirect_stack()
    st.receive(IF, redirect(FAR, FAR, tlla=MAC_B), clock.now())
    r = only(routes(st, PROTO_REDIRECT))
    assert (r.dst, r.plen, r.gateway, r.ifindex) == (FAR, 128, None, IF)
    e = st.nd.get(IF, FAR)
    assert e is not None and e.lladdr == MAC_B and not e.is_router
    st.icmp6.ping_send(FAR, 0, 1, 1, b"x", clock.now())
    assert only(of_type(frames(st), 128)).eth_dst == MAC_B


def test_redirect_without_tlla_resolves_the_target_later() -> None:
    st, clock = redirect_stack()
    st.receive(IF, redirect(LL_R2, FAR, tlla=None), clock.now())
    assert only(routes(st, PROTO_REDIRECT)).gateway == LL_R2
    assert st.nd.get(IF, LL_R2) is None
    st.icmp6.ping_send(FAR, 0, 1, 1, b"x", clock.now())
    ns = scapy(only(of_type(frames(st), 135)))
    assert ns["ICMPv6 Neighbor Discovery - Neighbor Solicitation"].tgt == fmt(LL_R2)


def test_redirect_from_a_static_default_gateway_is_honoured_without_accept_ra() -> None:
    st, clock = settled(accept_ra=False)
    st.add_route(bytes(16), 0, gateway=LL_R, gw_zone=IF, now=clock.now())
    st.receive(IF, redirect(LL_R2, FAR), clock.now())
    assert only(routes(st, PROTO_REDIRECT)).gateway == LL_R2


def test_redirects_chain_only_from_the_current_first_hop() -> None:
    st, clock = redirect_stack()
    st.receive(IF, redirect(LL_R2, FAR), clock.now())
    third = ip6("fe80::3")
    st.receive(IF, redirect(third, FAR, src=LL_R), clock.now())   # the old router is no longer first hop
    assert st.stats[Drop.ND_REDIRECT_NOT_FROM_ROUTER] == 1
    st.receive(IF, redirect(third, FAR, src=LL_R2), clock.now())
    assert only(routes(st, PROTO_REDIRECT)).gateway == third


@pytest.mark.parametrize("frame, reason", [
    (lambda: redirect(LL_R2, FAR, src=LL_X), Drop.ND_REDIRECT_NOT_FROM_ROUTER),     # not our router
    (lambda: redirect(LL_R2, PREFIX[:15] + b"\x05"), Drop.ND_REDIRECT_NOT_FROM_ROUTER),  # on-link dest
    (lambda: redirect(LL_R2, FAR, src=ip6("2001:db8:77::1")), Drop.ND_REDIRECT_BAD_SOURCE),
    (lambda: redirect(LL_R2, FAR, hlim=254), Drop.ND_BAD_HOP_LIMIT),
    (lambda: redirect(LL_R2, FAR, code=1), Drop.ND_BAD_CODE),
    (lambda: redirect(LL_R2, ip6("ff0e::1")), Drop.ND_REDIRECT_BAD_DEST),
    (lambda: redirect(ip6("2001:db8:99::7"), FAR), Drop.ND_REDIRECT_BAD_TARGET),
    (lambda: redirect(ip6("ff02::2"), FAR), Drop.ND_REDIRECT_BAD_TARGET),
    (lambda: bytes(Ether(src=smac(MAC_R), dst=smac(MAC_A)) / IPv6(src=fmt(LL_R), dst=fmt(LL_A), hlim=255)
                   / ICMPv6Unknown(type=137, code=0, msgbody=bytes(32))), Drop.ND_BAD_LENGTH),
], ids=["not_router", "on_link_dest", "global_src", "hlim", "code", "mcast_dest", "global_target",
        "mcast_target", "short"])
def test_hostile_or_invalid_redirect_is_a_counted_drop(frame: Any, reason: Drop) -> None:
    st, clock = redirect_stack()
    st.receive(IF, frame(), clock.now())
    assert st.stats[reason] == 1
    assert routes(st, PROTO_REDIRECT) == []
    assert st.nd.get(IF, LL_R2) is None


def test_router_ignores_redirects() -> None:
    st, clock = settled(forwarding=True)
    st.add_route(bytes(16), 0, gateway=LL_R, gw_zone=IF, now=clock.now())
    st.receive(IF, redirect(LL_R2, FAR), clock.now())
    assert st.stats[Drop.ND_REDIRECT_IGNORED] == 1 and routes(st, PROTO_REDIRECT) == []


def test_redirect_route_expires() -> None:
    st, clock = redirect_stack()
    st.receive(IF, redirect(LL_R2, FAR), clock.now())
    clock.advance(rdisc.REDIRECT_LIFETIME)
    st.poll(clock.now())
    assert routes(st, PROTO_REDIRECT) == [] and st.ndp.rdisc.redirects == {}


def test_redirect_routes_via_a_lost_router_are_removed() -> None:
    st, clock = redirect_stack()
    st.receive(IF, redirect(LL_R2, FAR), clock.now())
    st.receive(IF, bytes(Ether(src=smac(MAC_C), dst="33:33:00:00:00:01")
                         / IPv6(src=fmt(LL_R2), dst="ff02::1", hlim=255)
                         / ICMPv6ND_NA(tgt=fmt(LL_R2), R=0, S=0, O=1)
                         / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_C))), clock.now())
    assert routes(st, PROTO_REDIRECT) == []
    assert st.route_output(FAR, 0, None, clock.now()).nexthop == LL_R


def test_redirects_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rdisc, "MAX_REDIRECTS", 16)
    st, clock = redirect_stack()
    for i in range(rdisc.MAX_REDIRECTS + 5):
        st.receive(IF, redirect(LL_R2, ip6(f"2001:db8:99::{i + 1:x}"), tlla=None), clock.now())
    assert len(routes(st, PROTO_REDIRECT)) == rdisc.MAX_REDIRECTS
    assert st.stats.get("nd", "redirect_evicted") == 5


def test_refreshed_redirect_outlives_an_older_one() -> None:
    st, clock = redirect_stack()
    other = ip6("2001:db8:99::6")
    st.receive(IF, redirect(LL_R2, FAR), clock.now())
    clock.advance(s(100))
    st.receive(IF, redirect(LL_R2, other), clock.now())
    clock.advance(s(100))
    st.receive(IF, redirect(LL_R2, FAR, src=LL_R2), clock.now())    # refresh from the new first hop
    clock.advance(rdisc.REDIRECT_LIFETIME - s(100))
    st.poll(clock.now())
    assert {r.dst for r in routes(st, PROTO_REDIRECT)} == {FAR}
    clock.advance(s(100))
    st.poll(clock.now())
    assert routes(st, PROTO_REDIRECT) == []

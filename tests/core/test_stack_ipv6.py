"""The core stack frame-in/frame-out on a manual clock: ND answers, DAD, echo,
queueing during resolution, address unreachable, loopback with origifp, zones."""

from __future__ import annotations

import errno
import random

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
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    eth6,
    frames,
    one_stack,
    only,
    settle,
    smac,
)

from stack.core.clock import ManualClock, ms, s
from stack.core.events import EchoReply, PingError
from stack.core.interface import AddrState
from stack.core.ipservice import RouteError
from stack.core.nd import NudState
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip6, solicited_node
from stack.wire.icmpv6 import build_icmpv6

FE80_1 = ip6("fe80::1")


def ns_from_b(target: bytes = GA_A, hlim: int = 255, src: bytes = GA_B) -> bytes:
    return bytes(eth6(dst_mac=bytes.fromhex("3333ff000002")) /
                 IPv6(src=fmt(src), dst=fmt(solicited_node(target)), hlim=hlim) /
                 ICMPv6ND_NS(tgt=fmt(target)) / ICMPv6NDOptSrcLLAddr(lladdr=smac(MAC_B)))


def echo_from_b(dst: bytes = GA_A, src: bytes = GA_B, seq: int = 1) -> bytes:
    return bytes(eth6() / IPv6(src=fmt(src), dst=fmt(dst)) / ICMPv6EchoRequest(id=7, seq=seq, data=b"x" * 8))


def test_solicitation_for_our_address_is_answered_and_learns_sender() -> None:
    st, clock = one_stack()
    st.receive(IF, ns_from_b(), clock.now())
    ifx, na = only(frames(st))
    assert (ifx, na.icmp_type, na.dst, na.src, na.hop_limit) == (IF, 136, GA_B, GA_A, 255)
    assert na.eth_dst == MAC_B and na.eth_src == MAC_A
    p = IPv6(bytes(na.buf[14:]))
    assert p[ICMPv6ND_NA].S == 1 and p[ICMPv6ND_NA].O == 1 and p[ICMPv6ND_NA].R == 0
    assert p[ICMPv6NDOptDstLLAddr].lladdr == smac(MAC_A)
    e = st.nd.get(IF, GA_B)
    assert e is not None and e.state in (NudState.STALE, NudState.DELAY) and e.lladdr == MAC_B


def test_ns_with_hop_limit_254_is_dropped_and_counted() -> None:
    st, clock = one_stack()
    st.receive(IF, ns_from_b(hlim=254), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.ND_BAD_HOP_LIMIT] == 1
    assert st.nd.get(IF, GA_B) is None


def test_ns_for_someone_else_is_ignored() -> None:
    st, clock = one_stack()
    st.receive(IF, ns_from_b(target=ip6("2001:db8:1::99")), clock.now())
    assert st.drain_tx() == []
    assert st.stats[Drop.ND_TARGET_NOT_OURS] + st.stats[Drop.IPV6_NOT_FOR_US] == 1


def test_ns_with_zero_length_option_is_dropped() -> None:
    st, clock = one_stack()
    raw = bytearray(ns_from_b())
    raw[14 + 40 + 24 + 1] = 0          # SLLAO length 0
    st.receive(IF, bytes(raw), clock.now())
    assert st.drain_tx() == []
    assert sum(st.stats.drops.values()) == 1


def test_echo_request_to_global_and_link_local_is_answered() -> None:
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, LL_B, MAC_B, clock.now())
    for dst, src in ((GA_A, GA_B), (LL_A, LL_B)):
        st.receive(IF, echo_from_b(dst, src), clock.now())
        _, rep = only(frames(st))
        assert (rep.icmp_type, rep.src, rep.dst, rep.eth_dst) == (129, dst, src, MAC_B)
        assert rep.buf[rep.l4_off + 4:rep.ip_end] == b"\x00\x07\x00\x01" + b"x" * 8


def test_echo_reply_checksum_updated_incrementally_equals_a_full_sum() -> None:
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    rng = random.Random(5)
    for seq in range(300):
        data = rng.randbytes(rng.randrange(0, 80))
        req = bytes(eth6() / IPv6(src=fmt(GA_B), dst=fmt(GA_A)) /
                    ICMPv6EchoRequest(id=rng.randrange(65536), seq=seq, data=data))
        st.receive(IF, req, clock.now())
        _, rep = only(frames(st))
        msg = rep.buf[rep.l4_off:rep.ip_end]
        assert rep.csum_ok and msg == build_icmpv6(GA_A, GA_B, 129, 0, req[14 + 40 + 4:]), seq
    # to a multicast group the source is chosen, so the reply is summed in full
    req = bytes(eth6(dst_mac=bytes.fromhex("333300000001")) / IPv6(src=fmt(GA_B), dst="ff02::1") /
                ICMPv6EchoRequest(id=9, seq=1, data=b"m" * 9))
    st.receive(IF, req, clock.now())
    _, rep = only(frames(st))
    assert rep.csum_ok and rep.src != ip6("ff02::1")
    assert rep.buf[rep.l4_off:rep.ip_end] == build_icmpv6(rep.src, GA_B, 129, 0, req[14 + 40 + 4:])


def test_echo_request_with_bad_checksum_is_dropped() -> None:
    st, clock = one_stack()
    raw = bytearray(echo_from_b())
    raw[-1] ^= 0xFF
    st.receive(IF, bytes(raw), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.BAD_CHECKSUM] == 1


def test_first_packet_to_unresolved_neighbor_is_queued_then_released_in_order() -> None:
    st, clock = one_stack()
    for seq in (1, 2, 3):
        st.icmp6.ping_send(GA_B, 0, 9, seq, b"hi", clock.now())
    ns = only(frames(st))[1]
    assert ns.icmp_type == 135 and ns.dst == solicited_node(GA_B) and ns.src == GA_A   # §7.2.2
    assert st.nd.get(IF, GA_B).state is NudState.INCOMPLETE  # type: ignore[union-attr]
    na = bytes(eth6() / IPv6(src=fmt(GA_B), dst=fmt(GA_A), hlim=255) /
               ICMPv6ND_NA(tgt=fmt(GA_B), S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_B)))
    st.receive(IF, na, clock.now())
    out = frames(st)
    assert [f.icmp_type for _, f in out] == [128, 128, 128]
    assert [int.from_bytes(f.buf[f.l4_off + 6:f.l4_off + 8], "big") for _, f in out] == [1, 2, 3]
    assert all(f.eth_dst == MAC_B for _, f in out)
    assert st.nd.get(IF, GA_B).state is NudState.REACHABLE  # type: ignore[union-attr]


def test_failed_resolution_reports_address_unreachable_to_local_sender() -> None:
    st, clock = one_stack()
    st.icmp6.ping_send(GA_B, 0, 9, 1, b"hi", clock.now())
    nss = frames(st)
    for _ in range(3):
        clock.advance(s(1))
        st.poll(clock.now())
        nss += frames(st)
    assert [f.icmp_type for _, f in nss] == [135, 135, 135]
    [err] = [e for e in st.drain_events() if isinstance(e, PingError)]
    assert err.seq == 1 and "Address unreachable" in err.text
    assert st.stats[Drop.ND_RESOLUTION_FAILED] == 1
    assert st.nd.get(IF, GA_B) is None


def test_dad_probes_from_unspecified_and_address_is_tentative_until_done() -> None:
    clock = ManualClock()
    st = Stack(rng=random.Random(3), now=clock.now())
    st.add_interface("tap0", MAC_A, now=clock.now())
    st.add_address(IF, GA_A, 64, clock.now())
    assert st.interfaces[IF].find6(GA_A).state is AddrState.TENTATIVE  # type: ignore[union-attr]
    assert not st.ready()
    st.receive(IF, echo_from_b(), clock.now())          # to a tentative address: dropped
    assert st.stats[Drop.IPV6_TENTATIVE_DST] == 1
    settle(st, clock, s(3))
    dad = [f for _, f in frames(st) if f.icmp_type == 135]
    assert {f.src for f in dad} == {bytes(16)}
    assert {bytes(IPv6(bytes(f.buf[14:]))[ICMPv6ND_NS].tgt.encode()) for f in dad}  # parsed
    assert st.ready()
    assert st.interfaces[IF].find6(GA_A).state is AddrState.PREFERRED  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["na", "ns_other_nonce"])
def test_dad_detects_duplicate(kind: str) -> None:
    clock = ManualClock()
    st = Stack(rng=random.Random(3), now=clock.now())
    st.add_interface("tap0", MAC_A, now=clock.now())
    st.add_address(IF, GA_A, 64, clock.now())
    if kind == "na":
        dup = eth6() / IPv6(src=fmt(GA_A), dst="ff02::1", hlim=255) / \
            ICMPv6ND_NA(tgt=fmt(GA_A), S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_B))
    else:
        dup = eth6() / IPv6(src="::", dst=fmt(solicited_node(GA_A)), hlim=255) / ICMPv6ND_NS(tgt=fmt(GA_A))
    st.receive(IF, bytes(dup), clock.now())
    assert st.interfaces[IF].find6(GA_A).state is AddrState.DUPLICATED  # type: ignore[union-attr]
    assert any("duplicate address 2001:db8:1::2" in m for _, m in st.log)


def test_dad_ignores_its_own_looped_probe_by_nonce() -> None:
    clock = ManualClock()
    st = Stack(rng=random.Random(3), now=clock.now())
    st.add_interface("tap0", MAC_A, now=clock.now())
    st.add_address(IF, GA_A, 64, clock.now())
    clock.advance(ms(150))
    st.poll(clock.now())
    own = [fr for _, fr in st.drain_tx() if b"\x20\x01\x0d\xb8\x00\x01" in fr[-40:]]
    assert own
    st.receive(IF, own[-1], clock.now())                  # a bridge reflected our own NS
    assert st.interfaces[IF].find6(GA_A).state is AddrState.TENTATIVE  # type: ignore[union-attr]
    assert st.stats.get("nd", "dad_own_probe_looped") == 1


# -- loopback shortcut with origifp ---------------------------------------------------------


def traced(st: Stack) -> list[str]:
    lines: list[str] = []
    st.tracer = lines.append
    return lines


def test_route_to_own_addresses_goes_via_lo_with_owning_origifp() -> None:
    st, clock = one_stack()
    r = st.route_output(LL_A, IF, None, clock.now())
    assert (r.ifp, r.origifp, r.src, r.local) == (1, IF, LL_A, True)
    r = st.route_output(GA_A, 0, None, clock.now())
    assert (r.ifp, r.origifp, r.src) == (1, IF, GA_A)
    r = st.route_output(ip6("::1"), 0, None, clock.now())
    assert (r.ifp, r.origifp) == (1, 1)
    r = st.route_output(LL_B, IF, None, clock.now())
    assert (r.ifp, r.origifp, r.src, r.local) == (IF, IF, LL_A, False)


def test_ping_self_link_local_is_received_on_origifp_marked_looped() -> None:
    st, clock = one_stack()
    lines = traced(st)
    st.icmp6.ping_send(LL_A, IF, 5, 1, b"me", clock.now())
    st.poll(clock.now())
    [rep] = [e for e in st.drain_events() if isinstance(e, EchoReply)]
    assert rep.src == LL_A and rep.src_zone == IF
    assert st.drain_tx() == []                        # nothing touched the wire
    want_out = f"ip6_output ifp=lo origifp=tap0 src={fmt(LL_A)}%tap0 dst={fmt(LL_A)}%tap0 proto=icmp6"
    assert any(line.startswith(want_out) for line in lines), lines
    assert any(line.startswith("ip6_input rcvif=tap0 looped=1") and "verdict=accept" in line
               for line in lines), lines


def test_trace_shows_each_input_before_the_output_it_causes() -> None:
    """A looped ping reads in causal order: request out, request in, reply out, reply in."""
    st, clock = one_stack()
    lines = traced(st)
    st.icmp6.ping_send(GA_A, 0, 5, 1, b"me", clock.now())
    st.poll(clock.now())
    order = [(line.split()[0], "looped=1" in line) for line in lines if line.startswith("ip6_")]
    assert order == [("ip6_output", False), ("ip6_input", True), ("ip6_output", False), ("ip6_input", True)], lines
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    lines.clear()
    st.receive(IF, echo_from_b(dst=GA_A, src=GA_B), clock.now())
    assert [line.split()[0] for line in lines] == ["ip6_input", "ip6_output"], lines
    assert "verdict=accept" in lines[0]


def test_source_validation_drops_own_source_from_wire_but_not_looped() -> None:
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.receive(IF, echo_from_b(dst=GA_A, src=GA_A), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.IPV6_SPOOFED_OWN_SOURCE] == 1
    st.icmp6.ping_send(GA_A, 0, 5, 1, b"me", clock.now())
    st.poll(clock.now())
    assert any(isinstance(e, EchoReply) for e in st.drain_events())
    assert st.stats[Drop.IPV6_SPOOFED_OWN_SOURCE] == 1


def test_loopback_address_from_wire_is_dropped() -> None:
    st, clock = one_stack()
    st.receive(IF, echo_from_b(dst=ip6("::1"), src=GA_B), clock.now())
    assert st.stats[Drop.IPV6_LOOPBACK_FROM_WIRE] == 1


# -- zones ------------------------------------------------------------------------------------


def two_links() -> tuple[Stack, ManualClock]:
    st, clock = one_stack()
    st.add_interface("tap1", MAC_C, now=clock.now(), dad_transmits=0)
    st.add_neighbor(2, FE80_1, MAC_B, clock.now())
    st.add_neighbor(3, FE80_1, bytes.fromhex("0200000000dd"), clock.now())
    return st, clock


def test_unzoned_link_local_destination_is_refused() -> None:
    st, clock = two_links()
    with pytest.raises(RouteError) as ei:
        st.route_output(FE80_1, 0, None, clock.now())
    assert ei.value.errno == errno.EINVAL and "zone" in str(ei.value)


def test_same_link_local_on_two_links_is_kept_apart() -> None:
    st, clock = two_links()
    st.icmp6.ping_send(FE80_1, 2, 1, 1, b"", clock.now())
    st.icmp6.ping_send(FE80_1, 3, 1, 2, b"", clock.now())
    out = frames(st)
    assert [(ifx, f.eth_dst) for ifx, f in out] == [(2, MAC_B), (3, bytes.fromhex("0200000000dd"))]
    assert out[0][1].src != out[1][1].src          # each link's own link-local source


def test_generation_changes_on_route_change_and_invalidates_cached_routes() -> None:
    st, clock = one_stack()
    r = st.route_output(GA_B, 0, None, clock.now())
    assert st.route_valid(r)
    st.add_route(ip6("2001:db8:99::"), 64, gateway=GA_B, now=clock.now())
    assert not st.route_valid(r)
    assert st.route_output(GA_B, 0, None, clock.now()).gen == r.gen + 1


def test_route_via_link_local_gateway_needs_zone() -> None:
    st, clock = two_links()
    with pytest.raises(RouteError):
        st.add_route(ip6("2001:db8:99::"), 64, gateway=FE80_1, now=clock.now())
    st.add_route(ip6("2001:db8:99::"), 64, gateway=FE80_1, gw_zone=3, now=clock.now())
    r = st.route_output(ip6("2001:db8:99::5"), 0, None, clock.now())
    assert (r.ifp, r.nexthop, r.nexthop_zone) == (3, FE80_1, 3)


def test_without_dad_the_solicited_node_group_is_still_joined() -> None:
    st, clock = one_stack(dad=False)
    assert solicited_node(GA_A) in st.interfaces[IF].groups6
    st.receive(IF, ns_from_b(), clock.now())
    assert only(frames(st))[1].icmp_type == 136

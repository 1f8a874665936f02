"""Optimistic DAD (RFC 4429), per interface (``optimistic_dad``): addresses are usable
while DAD runs, with the §3.3 restrictions, on a manual clock."""

from __future__ import annotations

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
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
    eth6,
    frames,
    settle,
    smac,
)

from stack.core.clock import ManualClock, ms, s
from stack.core.interface import Addr6, AddrState
from stack.core.srcsel import select_source6
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip6, solicited_node

GA_A2 = ip6("2001:db8:1::3")


def odad_stack(*, optimistic: bool = True, accept_ra: bool = False,
               seed: int = 3) -> tuple[Stack, ManualClock]:
    clock = ManualClock()
    st = Stack(rng=random.Random(seed), now=clock.now())
    st.add_interface("tap0", MAC_A, now=clock.now(), optimistic_dad=optimistic, accept_ra=accept_ra)
    st.add_address(IF, GA_A, 64, clock.now())
    return st, clock


def addr(st: Stack, a: bytes) -> Addr6:
    found = st.interfaces[IF].find6(a)
    assert found is not None
    return found


def echo_from_b(dst: bytes = GA_A) -> bytes:
    return bytes(eth6() / IPv6(src=fmt(GA_B), dst=fmt(dst)) / ICMPv6EchoRequest(id=7, seq=1, data=b"x" * 8))


def ns_from_b(target: bytes = GA_A) -> bytes:
    return bytes(eth6(dst_mac=bytes.fromhex("3333ff000002")) /
                 IPv6(src=fmt(GA_B), dst=fmt(solicited_node(target)), hlim=255) /
                 ICMPv6ND_NS(tgt=fmt(target)) / ICMPv6NDOptSrcLLAddr(lladdr=smac(MAC_B)))


def sent(st: Stack) -> list[Any]:
    """The frames sent since the last call, as scapy IPv6 packets."""
    return [IPv6(bytes(f.buf[14:])) for _, f in frames(st)]


def test_default_is_tentative_and_not_ready() -> None:
    st, _clock = odad_stack(optimistic=False)
    assert addr(st, GA_A).state is AddrState.TENTATIVE and not st.ready()


def test_addresses_start_optimistic_and_the_stack_is_ready_at_once() -> None:
    st, _clock = odad_stack()
    assert addr(st, GA_A).state is AddrState.OPTIMISTIC
    assert addr(st, LL_A).state is AddrState.OPTIMISTIC      # the link-local too (as Linux)
    assert st.ready()


def test_optimistic_address_is_accepted_as_destination_and_answers() -> None:
    st, clock = odad_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.receive(IF, echo_from_b(), clock.now())
    replies = [p for p in sent(st) if p.nh == 58 and p.payload.type == 129]
    assert len(replies) == 1 and replies[0].src == fmt(GA_A) and replies[0].dst == fmt(GA_B)
    assert st.stats[Drop.IPV6_TENTATIVE_DST] == 0


def test_dad_still_runs_and_then_the_address_is_preferred() -> None:
    st, clock = odad_stack()
    settle(st, clock, s(3))
    probes = [p for p in sent(st) if p.nh == 58 and p.payload.type == 135]
    assert {p[ICMPv6ND_NS].tgt for p in probes} == {fmt(GA_A), fmt(LL_A)}
    assert all(p.src == "::" for p in probes)
    assert addr(st, GA_A).state is AddrState.PREFERRED
    assert addr(st, LL_A).state is AddrState.PREFERRED


def test_na_for_an_optimistic_address_has_override_clear() -> None:
    st, clock = odad_stack()
    st.receive(IF, ns_from_b(), clock.now())
    [na] = [p for p in sent(st) if p.nh == 58 and p.payload.type == 136]
    assert na[ICMPv6ND_NA].O == 0 and na[ICMPv6ND_NA].S == 1
    assert na[ICMPv6NDOptDstLLAddr].lladdr == smac(MAC_A)
    assert st.stats.get("nd", "out_na_optimistic") == 1
    settle(st, clock, s(3))
    sent(st)
    st.receive(IF, ns_from_b(), clock.now())                  # DAD done: Override set again
    [na] = [p for p in sent(st) if p.nh == 58 and p.payload.type == 136]
    assert na[ICMPv6ND_NA].O == 1


def test_ns_from_an_optimistic_source_carries_no_sllao() -> None:
    st, clock = odad_stack()          # every address optimistic: the NS must come from one
    st.icmp6.ping_send(GA_B, 0, 9, 1, b"hi", clock.now())
    [ns] = [p for p in sent(st) if p.nh == 58 and p.payload.type == 135 and p.src != "::"]
    assert ns.src in (fmt(GA_A), fmt(LL_A))
    assert ICMPv6NDOptSrcLLAddr not in ns
    assert st.stats.get("nd", "out_ns_optimistic") == 1


def test_ns_prefers_a_non_optimistic_source_with_sllao() -> None:
    st, clock = odad_stack()
    settle(st, clock, s(3))                   # GA_A and the link-local passed DAD
    st.add_address(IF, GA_A2, 64, clock.now())
    assert addr(st, GA_A2).state is AddrState.OPTIMISTIC
    sent(st)
    # The prompting packet is sourced from the optimistic address: the NS is not.
    st.ndp.send_ns(IF, GA_B, None, GA_A2, clock.now())
    nss = [p for p in sent(st) if p.nh == 58 and p.payload.type == 135 and p.src != "::"]
    assert nss and all(p.src != fmt(GA_A2) for p in nss)
    assert all(p[ICMPv6NDOptSrcLLAddr].lladdr == smac(MAC_A) for p in nss)


def test_source_selection_avoids_optimistic_like_deprecated() -> None:
    st, clock = odad_stack()
    settle(st, clock, s(3))
    st.add_address(IF, GA_A2, 128, clock.now())
    ifaces = list(st.interfaces.values())
    dst = ip6("2001:db8:1::1:3")
    # GA_A2/128 shares 111 bits with dst, GA_A/64 counts 64 (rule 8), but GA_A2 is
    # optimistic (rule 3, before rule 8).
    assert addr(st, GA_A2).state is AddrState.OPTIMISTIC
    r = select_source6(ifaces, dst, 0, IF)
    assert r is not None and r[0] == GA_A
    settle(st, clock, s(3))
    r = select_source6(ifaces, dst, 0, IF)
    assert r is not None and r[0] == GA_A2
    # Alone, an optimistic address is still a candidate.
    st2, _clock2 = odad_stack()
    r = select_source6(list(st2.interfaces.values()), ip6("2001:db8:9::9"), 0, IF)
    assert r is not None and r[0] == GA_A


@pytest.mark.parametrize("kind", ["na", "ns_other_nonce"])
def test_duplicate_detected_while_optimistic_marks_it_duplicated(kind: str) -> None:
    st, clock = odad_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    if kind == "na":
        dup = eth6() / IPv6(src=fmt(GA_A), dst="ff02::1", hlim=255) / \
            ICMPv6ND_NA(tgt=fmt(GA_A), S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_B))
    else:
        dup = eth6() / IPv6(src="::", dst=fmt(solicited_node(GA_A)), hlim=255) / ICMPv6ND_NS(tgt=fmt(GA_A))
    st.receive(IF, bytes(dup), clock.now())
    assert addr(st, GA_A).state is AddrState.DUPLICATED
    assert st.stats.get("nd", "dad_duplicates") == 1
    sent(st)
    st.receive(IF, echo_from_b(), clock.now())              # no longer ours to answer
    assert sent(st) == [] and st.stats[Drop.IPV6_TENTATIVE_DST] == 1
    settle(st, clock, s(3))                                  # and DAD does not revive it
    assert addr(st, GA_A).state is AddrState.DUPLICATED


def test_own_looped_probe_does_not_mark_an_optimistic_address_duplicated() -> None:
    st, clock = odad_stack()
    clock.advance(ms(150))
    st.poll(clock.now())
    own = [fr for _, fr in st.drain_tx() if b"\x20\x01\x0d\xb8\x00\x01" in fr[-40:]]
    assert own
    st.receive(IF, own[-1], clock.now())
    assert addr(st, GA_A).state is AddrState.OPTIMISTIC
    assert st.stats.get("nd", "dad_own_probe_looped") == 1


def test_rs_from_an_optimistic_link_local_is_sent_from_unspecified_without_sllao() -> None:
    st, clock = odad_stack(accept_ra=True)
    seen: list[tuple[AddrState, Any]] = []
    for _ in range(600):                                     # 6 s in 10 ms steps
        clock.advance(ms(10))
        st.poll(clock.now())
        state = addr(st, LL_A).state
        seen += [(state, p) for p in sent(st) if p.nh == 58 and p.payload.type == 133]
    assert seen
    for state, rs in seen:
        if state is AddrState.OPTIMISTIC:
            assert rs.src == "::" and ICMPv6NDOptSrcLLAddr not in rs
        else:
            assert rs.src == fmt(LL_A) and rs[ICMPv6NDOptSrcLLAddr].lladdr == smac(MAC_A)
    assert {state for state, _ in seen} == {AddrState.OPTIMISTIC, AddrState.PREFERRED}

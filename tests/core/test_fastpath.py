"""The per-packet shortcuts give the answers of the slow path: echo replies reuse their
output decision only within its routing generation and until a route expires, a known
neighbor is sent to without building a pending entry, a STALE one still goes through
NUD (DELAY, then a probe); a listener answers SYNs along the same cached decisions."""

from __future__ import annotations

from harness import (
    GA_A,
    GA_B,
    IF,
    LL_B,
    MAC_B,
    MAC_C,
    TCP,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6NDOptDstLLAddr,
    IPv6,
    eth6,
    frames,
    one_stack,
    smac,
)

from stack.core.clock import ms, s
from stack.core.nd import NudState
from stack.core.stack import Stack
from stack.wire.addr import fmt, ip6

FAR = ip6("2001:db8:99::7")


def echo(src: bytes = GA_B, seq: int = 1) -> bytes:
    return bytes(eth6() / IPv6(src=fmt(src), dst=fmt(GA_A)) / ICMPv6EchoRequest(id=7, seq=seq, data=b"x" * 8))


def traced(st: Stack) -> list[str]:
    lines: list[str] = []
    st.tracer = lines.append
    return lines


def replies(st: Stack) -> list[tuple[bytes, str]]:
    """(destination MAC, IPv6 destination) of each echo reply sent."""
    return [(f.eth_dst, fmt(f.dst)) for _, f in frames(st) if f.icmp_type == 129]


def learn_na(st: Stack, target: bytes, mac: bytes, now: int) -> None:
    na = eth6(src_mac=mac) / IPv6(src=fmt(target), dst=fmt(GA_A), hlim=255) / \
        ICMPv6ND_NA(tgt=fmt(target), S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(mac))
    st.receive(IF, bytes(na), now)


def test_echo_reply_route_is_cached_within_a_generation_and_follows_a_new_route() -> None:
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, LL_B, MAC_C, clock.now())
    lines = traced(st)
    st.receive(IF, echo(FAR), clock.now())                   # no route to FAR: dropped
    assert replies(st) == []
    st.add_route(ip6("2001:db8:99::"), 64, gateway=GA_B, now=clock.now())
    for seq in (1, 2):
        st.receive(IF, echo(FAR, seq), clock.now())
    assert replies(st) == [(MAC_B, fmt(FAR))] * 2
    outs = [ln for ln in lines if ln.startswith("ip6_output")]
    assert "route=lookup" in outs[0] and "route=cached" in outs[1]
    # A new, longer route (new gen): the very next reply takes it.
    st.add_route(FAR, 128, gateway=LL_B, gw_zone=IF, now=clock.now())
    st.receive(IF, echo(FAR, 3), clock.now())
    assert replies(st) == [(MAC_C, fmt(FAR))]
    assert "route=lookup" in [ln for ln in lines if ln.startswith("ip6_output")][-1]


def test_cached_echo_route_ends_when_its_route_expires_without_a_poll() -> None:
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, LL_B, MAC_C, clock.now())
    st.add_route(ip6("2001:db8:99::"), 48, gateway=GA_B, now=clock.now())
    st.add_route(FAR, 128, gateway=LL_B, gw_zone=IF, now=clock.now(), expires_at=clock.now() + s(5))
    st.receive(IF, echo(FAR, 1), clock.now())
    assert replies(st) == [(MAC_C, fmt(FAR))]
    clock.advance(s(5))                                       # expired; no poll has removed it
    st.receive(IF, echo(FAR, 2), clock.now())
    assert replies(st) == [(MAC_B, fmt(FAR))]


def test_reply_to_a_stale_neighbor_still_runs_nud() -> None:
    st, clock = one_stack()
    st.receive(IF, echo(), clock.now())                       # GA_B unknown: NS, reply queued
    learn_na(st, GA_B, MAC_B, clock.now())                    # solicited: REACHABLE, reply sent
    assert [m for m, _ in replies(st)] == [MAC_B]
    e = st.nd.get(IF, GA_B)
    assert e is not None and e.state is NudState.REACHABLE
    st.receive(IF, echo(seq=2), clock.now())                  # known: straight out
    assert [m for m, _ in replies(st)] == [MAC_B] and e.state is NudState.REACHABLE
    clock.advance(s(60))
    st.poll(clock.now())
    assert e.state is NudState.STALE
    frames(st)
    st.receive(IF, echo(seq=3), clock.now())                  # STALE: sent, and DELAY (RFC 4861 §7.3.3)
    assert [m for m, _ in replies(st)] == [MAC_B] and e.state is NudState.DELAY
    clock.advance(s(6))
    st.poll(clock.now())
    assert e.state is NudState.PROBE
    probes = [f for _, f in frames(st) if f.icmp_type == 135]
    assert len(probes) == 1 and probes[0].eth_dst == MAC_B    # unicast probe
    clock.advance(ms(10))
    st.receive(IF, echo(seq=4), clock.now())                  # PROBE: still sent to the lladdr
    assert [m for m, _ in replies(st)] == [MAC_B] and e.state is NudState.PROBE


def syn(sport: int, src: bytes = FAR) -> bytes:
    return bytes(eth6() / IPv6(src=fmt(src), dst=fmt(GA_A)) / TCP(sport=sport, dport=7, flags="S", seq=1000))


def test_syn_ack_route_is_cached_within_a_generation_and_follows_a_new_route() -> None:
    """The listener's answer to a SYN takes the stack's cached output decision (as echo
    replies): looked up for the first SYN from a peer, reused for the next one, looked up
    again after a table change, which it follows."""
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, LL_B, MAC_C, clock.now())
    st.tcp.listen(None, 7)
    st.add_route(ip6("2001:db8:99::"), 64, gateway=GA_B, now=clock.now())
    lines = traced(st)
    for sport in (40000, 40001):
        st.receive(IF, syn(sport), clock.now())
    synacks = [f for _, f in frames(st) if f.proto == 6]
    assert [f.eth_dst for f in synacks] == [MAC_B, MAC_B]
    outs = [ln for ln in lines if ln.startswith("ip6_output")]
    assert "route=lookup" in outs[0] and "route=cached" in outs[1]
    st.add_route(FAR, 128, gateway=LL_B, gw_zone=IF, now=clock.now())   # new gen, new next hop
    st.receive(IF, syn(40002), clock.now())
    assert [f.eth_dst for _, f in frames(st) if f.proto == 6] == [MAC_C]
    assert "route=lookup" in [ln for ln in lines if ln.startswith("ip6_output")][-1]

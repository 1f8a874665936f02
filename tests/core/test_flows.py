"""Flow hints for the runtime's fast path (stack/core/flows.py): when core emits one,
what it holds, when the flow epoch moves, and that folding the fast path's packets
gives the counters the slow path gives for the same packets."""

from __future__ import annotations

import pytest
from harness import Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, smac
from scapy.layers.inet6 import ICMPv6EchoRequest  # type: ignore[import-untyped]
from test_forwarding import B4, B6, C4, C6, MAC_B, MAC_C, R0, R0_6, R1, T0, T1, from_b4, from_b6, router

from stack.core.clock import s
from stack.core.flows import ECHO, FORWARD, FlowHint
from stack.core.nd import NudState
from stack.core.stack import Stack
from stack.wire.addr import fmt, ip6
from stack.wire.ethernet import eth_header
from stack.wire.frame_types import ETHERTYPE_IPV4, ETHERTYPE_IPV6


def echo_to_router(seq: int = 1, size: int = 16) -> bytes:
    return bytes(Ether(src=smac(MAC_B), dst=smac(R0)) / IPv6(src=fmt(B6), dst=fmt(R0_6), hlim=64) /
                 ICMPv6EchoRequest(id=1, seq=seq, data=b"e" * size))


def collecting() -> tuple[Stack, int]:
    st, clock = router()
    st.flow_hints = []
    return st, clock.now()


def test_forward6_gives_one_hint_with_the_egress_header_and_mtu() -> None:
    st, now = collecting()
    st.receive(T0, from_b6(), now)
    assert st.flow_hints == [FlowHint(st.flow_epoch(), 6, FORWARD, T0, T1, B6, C6,
                                      eth_header(MAC_C, R1, ETHERTYPE_IPV6), R0, 1500, 0)]


def test_forward4_gives_one_hint() -> None:
    st, now = collecting()
    st.receive(T0, from_b4(), now)
    assert st.flow_hints == [FlowHint(st.flow_epoch(), 4, FORWARD, T0, T1, B4, C4,
                                      eth_header(MAC_C, R1, ETHERTYPE_IPV4), R0, 1500, 0)]


def test_echo6_gives_a_hint_with_the_reply_hop_limit() -> None:
    st, now = collecting()
    st.receive(T0, echo_to_router(), now)
    assert st.flow_hints == [FlowHint(st.flow_epoch(), 6, ECHO, T0, T0, B6, R0_6,
                                      eth_header(MAC_B, R0, ETHERTYPE_IPV6), R0, 1500, 64)]


def test_no_hints_unless_collected_nor_for_errors_or_fragments() -> None:
    st, clock = router()
    st.receive(T0, from_b6(), clock.now())
    assert st.flow_hints is None and st._flow_ctx is None
    st.flow_hints = []
    st.receive(T0, from_b6(hlim=1), clock.now())               # Time Exceeded, not forwarded
    st.receive(T0, from_b4(df=False, size=1600), clock.now())   # fragmented on the way out
    st.receive(T0, from_b6(dst=ip6("2001:db8:99::1")), clock.now())   # no route
    assert st.flow_hints == [] and st._flow_ctx is None


def test_no_hint_while_a_packet_must_move_the_neighbor_entry() -> None:
    st, clock = router()
    st.flow_hints = []
    far = ip6("2001:db8:2::77")       # on-link on tap1, no entry: INCOMPLETE, queued
    st.receive(T0, from_b6(dst=far), clock.now())
    assert st.flow_hints == []
    na = Ether(src=smac(MAC_C), dst=smac(R1)) / IPv6(src=fmt(far), dst="2001:db8:2::2", hlim=255) / \
        ICMPv6ND_NA(tgt=fmt(far), S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_C))
    st.receive(T1, bytes(na), clock.now())                     # REACHABLE: the queue goes
    assert st.flow_hints == []                                 # (released, not decided now)
    st.receive(T0, from_b6(dst=far), clock.now())
    [hint] = st.flow_hints
    assert hint.dst == far
    # ReachableTime passes: REACHABLE -> STALE moves the epoch, and a STALE entry gives no hint
    epoch = st.flow_epoch()
    clock.advance(s(60))
    st.poll(clock.now())
    assert st.nd.get(T1, far).state is NudState.STALE          # type: ignore[union-attr]
    assert st.flow_epoch() != epoch
    st.flow_hints.clear()
    st.receive(T0, from_b6(dst=far), clock.now())              # -> DELAY, still sent
    assert st.flow_hints == []
    # DELAY -> PROBE -> REACHABLE are timer moves, each one voids the flow: a hint again
    st.receive(T0, from_b6(dst=far), clock.now())
    [hint] = st.flow_hints
    assert st.nd.get(T1, far).state is NudState.DELAY and hint.epoch == st.flow_epoch()  # type: ignore[union-attr]


@pytest.mark.parametrize("change", ["route", "forwarding", "pmtu", "neighbor", "address", "link"])
def test_flow_epoch_moves_on_every_change_a_hint_depends_on(change: str) -> None:
    st, now = collecting()
    before = st.flow_epoch()
    if change == "route":
        st.add_route(ip6("2001:db8:77::"), 48, gateway=C6, now=now)
    elif change == "forwarding":
        st.set_forwarding(False)
    elif change == "pmtu":
        st.learn_pmtu(B6, 1400, now)
    elif change == "neighbor":
        st.add_neighbor(T1, C6, bytes.fromhex("02000000000e"), now)
    elif change == "address":
        st.remove_address(T0, R0_6, now)
    else:
        st.set_link(T1, False, now)
    assert st.flow_epoch() != before


def _state(st: Stack) -> tuple[object, ...]:
    ifs = {i: (f.counters.rx_packets, f.counters.rx_bytes, f.counters.tx_packets, f.counters.tx_bytes)
           for i, f in st.interfaces.items()}
    return st.stats.snapshot(), ifs


@pytest.mark.parametrize("kind", ["fwd6", "fwd4", "echo6"])
def test_folding_counts_as_the_slow_path_does(kind: str) -> None:
    """N packets on the slow path == 1 on the slow path + N-1 folded."""
    n = 5
    frame = {"fwd6": from_b6(), "fwd4": from_b4(), "echo6": echo_to_router()}[kind]
    slow, clock = router()
    for _ in range(n):
        slow.receive(T0, frame, clock.now())
    sent = slow.drain_tx()
    assert len(sent) == n
    out_ifx, out_len = sent[0][0], len(sent[0][1])

    fast, clock2 = router()
    fast.flow_hints = []
    fast.receive(T0, frame, clock2.now())
    assert len(fast.flow_hints) == 1
    fast.drain_tx()
    fast.fastpath_fold({T0: (n - 1, (n - 1) * len(frame))}, {out_ifx: (n - 1, (n - 1) * out_len)},
                       {kind: n - 1})
    assert _state(fast) == _state(slow)

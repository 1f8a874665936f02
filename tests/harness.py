"""Test helpers: a Stack on a manual clock, frames crafted with scapy, parsed output.

``one_stack()`` gives a stack with one Ethernet interface ``tap0`` (ifindex 2,
MAC_A, fe80::a-style link-local from MAC_A, 2001:db8:1::2/64, 192.0.2.2/24)
and DAD already finished. Peer "B" is at MAC_B / fe80::b / 2001:db8:1::1.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP  # type: ignore[import-untyped]
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether  # type: ignore[import-untyped]

from stack.core.clock import ManualClock, ms, s
from stack.core.stack import Stack
from stack.wire.addr import ip4, ip6, link_local_from_mac, mac
from stack.wire.frame import parse_frame
from stack.wire.frame_types import Frame

MAC_A = mac("02:00:00:00:00:0a")
MAC_B = mac("02:00:00:00:00:0b")
MAC_C = mac("02:00:00:00:00:0c")
LL_A = link_local_from_mac(MAC_A)
LL_B = ip6("fe80::b")
LL_C = ip6("fe80::c")
GA_A = ip6("2001:db8:1::2")
GA_B = ip6("2001:db8:1::1")
V4_A = ip4("192.0.2.2")
V4_B = ip4("192.0.2.1")
IF = 2

__all__ = [
    "ARP",
    "ICMP",
    "IP",
    "TCP",
    "UDP",
    "Ether",
    "ICMPv6EchoReply",
    "ICMPv6EchoRequest",
    "ICMPv6NDOptDstLLAddr",
    "ICMPv6NDOptSrcLLAddr",
    "ICMPv6ND_NA",
    "ICMPv6ND_NS",
    "IPv6",
    "ip4",
    "ip6",
    "mac",
    "ms",
    "s",
]


def smac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def settle(st: Stack, clock: ManualClock, until: int = s(3)) -> None:
    """Run timers until `until` of virtual time passed (DAD etc.)."""
    end = clock.now() + until
    while True:
        at = st.poll_at()
        if at is None or at > end:
            break
        clock.set(max(at, clock.now()))
        st.poll(clock.now())
    clock.set(end)
    st.poll(clock.now())


def one_stack(*, forwarding: bool = False, v4: bool = True, dad: bool = True,
              seed: int = 1) -> tuple[Stack, ManualClock]:
    clock = ManualClock()
    st = Stack(rng=random.Random(seed), now=clock.now(), forwarding=forwarding)
    ifx = st.add_interface("tap0", MAC_A, 1500, now=clock.now(), dad_transmits=1 if dad else 0)
    assert ifx == IF
    st.add_address(IF, GA_A, 64, clock.now())
    if v4:
        st.add_address(IF, V4_A, 24, clock.now())
    settle(st, clock)
    st.drain_tx()
    st.drain_events()
    return st, clock


def eth6(src_mac: bytes = MAC_B, dst_mac: bytes = MAC_A) -> Any:
    return Ether(src=smac(src_mac), dst=smac(dst_mac))


def frames(st: Stack) -> list[tuple[int, Frame]]:
    return [(ifx, parse_frame(fr)) for ifx, fr in st.drain_tx()]


def only(items: Iterable[Any]) -> Any:
    lst = list(items)
    assert len(lst) == 1, f"expected exactly one, got {len(lst)}: {lst}"
    return lst[0]


def scapy_of(frame: bytes) -> Any:
    return Ether(frame)


def neighbor_ready(st: Stack, clock: ManualClock, peer_ll: bytes = LL_B, peer_mac: bytes = MAC_B) -> None:
    """Give the stack a REACHABLE entry for the peer via an NS + solicited NA exchange."""
    st.add_neighbor(IF, peer_ll, peer_mac, clock.now())

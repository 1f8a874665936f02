"""Packets too large to send: a locally originated datagram over the IP maximum is
EMSGSIZE ("Message too long", as Linux) for the socket or ping that asked, and a
named drop for any other path (``ipv4_out_too_big``/``ipv6_out_too_big``); a
forwarded IPv4 fragment whose re-fragments would lie past 65535 is ``frag_bad``.
No exception reaches the caller of ``receive``/``poll``."""

from __future__ import annotations

import errno
import random

import pytest
from harness import IP, UDP, Ether, IPv6, settle, smac
from scapy.layers.inet import defragment
from scapy.layers.inet6 import IPv6ExtHdrFragment

from stack.core.clock import ManualClock
from stack.core.ipservice import RouteError
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip4, ip6, mac
from stack.wire.frame_types import PROTO_UDP

MAC_A, MAC_B, MAC_C = mac("02:00:00:00:00:0a"), mac("02:00:00:00:00:0b"), mac("02:00:00:00:00:0c")
A6, B6 = ip6("2001:db8:1::2"), ip6("2001:db8:1::1")
A4, B4, C4 = ip4("192.0.2.2"), ip4("192.0.2.1"), ip4("203.0.113.5")
T0, T1 = 2, 3


def host(*, forwarding: bool = False) -> tuple[Stack, ManualClock]:
    """tap0 2001:db8:1::2/64 + 192.0.2.2/24 with host B as a PERMANENT neighbor;
    tap1 (MTU 1280) 203.0.113.1/24 with C."""
    clock = ManualClock()
    st = Stack(rng=random.Random(3), now=clock.now(), forwarding=forwarding)
    st.add_interface("tap0", MAC_A, now=clock.now(), dad_transmits=0)
    st.add_interface("tap1", mac("02:00:00:00:01:0a"), 1280, now=clock.now(), dad_transmits=0)
    st.add_address(T0, A6, 64, clock.now())
    st.add_address(T0, A4, 24, clock.now())
    st.add_address(T1, ip4("203.0.113.1"), 24, clock.now())
    for ifx, addr, m in ((T0, B6, MAC_B), (T0, B4, MAC_B), (T1, C4, MAC_C)):
        st.add_neighbor(ifx, addr, m, clock.now())
    settle(st, clock)
    st.drain_tx()
    return st, clock


@pytest.mark.parametrize(("dst", "drop"), [(B4, Drop.IPV4_OUT_TOO_BIG), (B6, Drop.IPV6_OUT_TOO_BIG)],
                         ids=["ipv4", "ipv6"])
def test_ip_send_over_the_ip_maximum_is_a_counted_drop_not_an_exception(dst: bytes, drop: str) -> None:
    st, clock = host()
    route = st.route_output(dst, 0, None, clock.now())
    limit = 65535 - (20 if len(dst) == 4 else 0)          # IPv4 counts its header, IPv6 does not
    st.ip_send(route, PROTO_UDP, bytes(limit + 1), clock.now())
    assert st.drain_tx() == [] and st.stats[drop] == 1
    st.ip_send(route, PROTO_UDP, bytes(limit), clock.now())          # the largest that fits leaves
    assert len(st.drain_tx()) > 1 and st.stats[drop] == 1


@pytest.mark.parametrize(("dst", "largest"), [(B4, 65507), (B6, 65527)], ids=["ipv4", "ipv6"])
def test_udp_send_over_the_maximum_is_emsgsize_and_the_largest_is_sent(dst: bytes, largest: int) -> None:
    # Linux: 65535 - 20 - 8 for IPv4, 65535 - 8 for IPv6 (no jumbograms)
    st, clock = host()
    ep = st.udp.bind(None, 0)
    with pytest.raises(RouteError) as ei:
        ep.sendto(bytes(largest + 1), dst, 9, 0, clock.now())
    assert ei.value.errno == errno.EMSGSIZE and ei.value.strerror == "Message too long"
    assert st.drain_tx() == []
    assert ep.sendto(bytes(largest), dst, 9, 0, clock.now()) == largest
    frames = [raw for _ifx, raw in st.drain_tx()]
    if len(dst) == 4:
        [whole] = defragment([Ether(raw)[IP] for raw in frames])  # type: ignore[no-untyped-call]
        assert len(whole[UDP].payload) == largest
    else:
        frags = [Ether(raw)[IPv6] for raw in frames]
        assert all(IPv6ExtHdrFragment in p for p in frags)
        assert sum(len(p[IPv6ExtHdrFragment].payload) for p in frags) == largest + 8


@pytest.mark.parametrize(("dst", "largest"), [(B4, 65507), (B6, 65527)], ids=["ipv4", "ipv6"])
def test_ping_payload_over_the_maximum_is_emsgsize(dst: bytes, largest: int) -> None:
    st, clock = host()
    for size in (largest + 1, 70000):
        with pytest.raises(RouteError) as ei:
            if len(dst) == 4:
                st.ip4.ping_send(dst, 1, 1, bytes(size), clock.now())
            else:
                st.icmp6.ping_send(dst, 0, 1, 1, bytes(size), clock.now())
        assert ei.value.errno == errno.EMSGSIZE
    assert st.drain_tx() == []
    if len(dst) == 4:
        st.ip4.ping_send(dst, 1, 2, bytes(largest), clock.now())
    else:
        st.icmp6.ping_send(dst, 0, 1, 2, bytes(largest), clock.now())
    assert len(st.drain_tx()) > 1


def test_forwarded_fragment_that_would_be_refragmented_past_65535_is_frag_bad() -> None:
    st, clock = host(forwarding=True)
    # offset 65528 (the largest there is) with 1400 bytes: they fit one 1500 link but
    # the 1280 link needs a second piece at an offset no header can carry
    pkt = Ether(src=smac(MAC_B), dst=smac(MAC_A)) / \
        IP(src=fmt(B4), dst=fmt(C4), ttl=64, frag=65528 // 8, id=9, proto=17) / bytes(1400)
    st.receive(T0, bytes(pkt), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.FRAG_BAD] == 1
    # one at offset 8 with the same size is refragmented
    pkt[IP].frag = 1
    st.receive(T0, bytes(pkt), clock.now())
    out = [(ifx, Ether(raw)[IP]) for ifx, raw in st.drain_tx()]
    assert [ifx for ifx, _ in out] == [T1, T1] and [p.frag for _, p in out] == [1, 1 + (1256 // 8)]

"""IPv4 path MTU discovery for TCP (RFC 1191) and ICMPv4 Redirects received by a
host (RFC 1122 §3.2.2.2, as Linux ``__ip_do_redirect``), frame-in/frame-out."""

from __future__ import annotations

from typing import Any

import pytest
from harness import ICMP, IF, IP, MAC_A, MAC_B, MAC_C, TCP, UDP, V4_A, V4_B, Ether, one_stack, only, smac
from scapy.layers.inet import defragment

from stack.core.clock import ManualClock, s
from stack.core.ip4 import MIN_PMTU4, REDIRECT4_LIFETIME
from stack.core.routes import PROTO_REDIRECT
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.tcb import TcpState
from stack.wire.addr import fmt, ip4

V4_C = ip4("192.0.2.3")             # another router on the link
FAR = ip4("203.0.113.5")
FAR2 = ip4("203.0.113.6")


def from_peer(src: bytes = V4_B, src_mac: bytes = MAC_B) -> Any:
    return Ether(src=smac(src_mac), dst=smac(MAC_A)) / IP(src=fmt(src), dst=fmt(V4_A))


def sent(st: Stack) -> list[Any]:
    return [Ether(raw) for _, raw in st.drain_tx()]


# -- TCP over IPv4: DF and Fragmentation Needed ----------------------------------------------


def established(st: Stack, clock: ManualClock) -> TcpConnection:
    st.add_neighbor(IF, V4_B, MAC_B)
    conn: TcpConnection = st.tcp.connect(V4_B, 80, now=clock.now())
    st.poll(clock.now())
    syn = only(sent(st))
    assert syn[TCP].flags == "S" and syn[IP].flags.DF, syn.summary()
    synack = from_peer() / TCP(sport=80, dport=syn[TCP].sport, flags="SA", seq=1000,
                               ack=syn[TCP].seq + 1, window=65535, options=[("MSS", 1460)])
    st.receive(IF, bytes(synack), clock.now())
    ack = only(sent(st))
    assert ack[TCP].flags == "A" and ack[IP].flags.DF
    assert conn.state is TcpState.ESTABLISHED and conn.snd_mss == 1460
    return conn


def frag_needed(quoted: Any, mtu: int) -> bytes:
    return bytes(from_peer() / ICMP(type=3, code=4, nexthopmtu=mtu) / bytes(quoted[IP])[:28])


def test_tcp_segments_leave_with_df_and_fragmentation_needed_shrinks_them() -> None:
    st, clock = one_stack()
    conn = established(st, clock)
    conn.send(b"x" * 5000, clock.now())
    first = sent(st)
    assert [len(p[IP]) for p in first] == [1500, 1500, 1500]
    assert all(p[IP].flags.DF for p in first)
    # RFC 1191 §4: a router on the path says 1000; the quoted segment is in flight
    st.receive(IF, frag_needed(first[0], 1000), clock.now())
    assert st.route_output(V4_B, 0, None, clock.now()).mtu == 1000
    assert conn.snd_mss == 1000 - 40 and st.stats.get("tcp", "pmtu_reductions") == 1
    again = sent(st)            # what no longer fits goes again at the new size, DF still set
    assert again and all(len(p[IP]) <= 1000 and p[IP].flags.DF for p in again)
    assert again[0][TCP].seq == first[0][TCP].seq and len(again[0][IP]) == 1000
    assert st.stats[Drop.IPV4_NEEDS_FRAG] == 0


def test_fragmentation_needed_below_the_floor_clears_df_instead_of_stalling() -> None:
    """Linux ip_rt_min_pmtu: an MTU under 552 is taken as 552 and locked, and packets
    then leave with DF clear; TCP's MSS stops at 536 (576-byte packets), which must be
    fragmented rather than dropped at output forever."""
    st, clock = one_stack()
    conn = established(st, clock)
    conn.send(b"y" * 3000, clock.now())
    first = sent(st)
    st.receive(IF, frag_needed(first[0], 300), clock.now())
    assert st.route_output(V4_B, 0, None, clock.now()).mtu == MIN_PMTU4
    out = sent(st)
    assert out and all(len(p[IP]) <= MIN_PMTU4 and not p[IP].flags.DF for p in out)
    assert any(p[IP].flags.MF for p in out)
    whole = defragment([p[IP] for p in out])  # type: ignore[no-untyped-call]
    assert whole[0][TCP].seq == first[0][TCP].seq and len(whole[0][IP]) == 576
    assert st.stats[Drop.IPV4_NEEDS_FRAG] == 0


def test_fragmentation_needed_for_a_segment_not_in_flight_changes_no_mss() -> None:
    st, clock = one_stack()
    conn = established(st, clock)
    conn.send(b"z" * 1000, clock.now())
    seg = only(sent(st))
    seg[TCP].seq = (seg[TCP].seq + 100_000) & 0xFFFFFFFF      # RFC 5927 §4.1: not ours
    st.receive(IF, frag_needed(seg, 1000), clock.now())
    assert conn.snd_mss == 1460 and sent(st) == []


# -- Redirects received by a host ------------------------------------------------------------


ClockAndFirst = tuple[ManualClock, Any]


def host_with_default_route(*, forwarding: bool = False) -> tuple[Stack, ClockAndFirst]:
    st, clock = one_stack(forwarding=forwarding)
    st.add_route(ip4("0.0.0.0"), 0, gateway=V4_B, now=clock.now())
    st.add_neighbor(IF, V4_B, MAC_B)
    st.add_neighbor(IF, V4_C, MAC_C)
    ep = st.udp.bind(None, 40000)
    ep.sendto(b"first", FAR, 9, 0, clock.now())
    first = only(sent(st))
    assert first.dst == smac(MAC_B)
    return st, (clock, first)


def redirect(quoted: Any, gateway: bytes = V4_C, *, src: bytes = V4_B, src_mac: bytes = MAC_B,
             code: int = 1) -> bytes:
    return bytes(from_peer(src, src_mac) / ICMP(type=5, code=code, gw=fmt(gateway)) / bytes(quoted[IP])[:28])


def send_udp(st: Stack, dst: bytes, now: int) -> Any:
    st.udp.bind(None, 0).sendto(b"data", dst, 9, 0, now)
    return only(sent(st))


@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_redirect_from_the_current_gateway_installs_a_host_route(code: int) -> None:
    st, (clock, first) = host_with_default_route()
    st.receive(IF, redirect(first, code=code), clock.now())
    assert st.stats.get("icmp", "in_redirects_accepted") == 1
    r = st.routes.lookup(FAR, 0, clock.now())
    assert r is not None and (r.plen, r.gateway, r.proto) == (32, V4_C, PROTO_REDIRECT)
    assert r.expires_at == clock.now() + REDIRECT4_LIFETIME
    # the redirected destination goes to the new gateway; only that destination (RFC
    # 1122: a Network Redirect is treated as a Host Redirect)
    assert send_udp(st, FAR, clock.now()).dst == smac(MAC_C)
    assert send_udp(st, FAR2, clock.now()).dst == smac(MAC_B)
    # a second Redirect must now come from the new first hop
    st.receive(IF, redirect(first, V4_B), clock.now())
    assert st.stats["icmp_redirect_not_from_gateway"] == 1


def test_redirect_expires_and_traffic_returns_to_the_default_gateway() -> None:
    st, (clock, first) = host_with_default_route()
    st.receive(IF, redirect(first), clock.now())
    clock.advance(REDIRECT4_LIFETIME - s(1))
    st.poll(clock.now())
    assert send_udp(st, FAR, clock.now()).dst == smac(MAC_C)
    clock.advance(s(1))
    due = st.poll_at()
    assert due is not None and due <= clock.now()
    st.poll(clock.now())
    assert not any(r.proto == PROTO_REDIRECT for r in st.routes) and not st.ip4.redirects
    assert send_udp(st, FAR, clock.now()).dst == smac(MAC_B)


def test_redirect_to_a_new_gateway_is_resolved_by_arp() -> None:
    st, (clock, first) = host_with_default_route()
    v4_d = ip4("192.0.2.4")
    st.receive(IF, redirect(first, v4_d), clock.now())
    st.udp.bind(None, 0).sendto(b"data", FAR, 9, 0, clock.now())
    req = only(sent(st))
    assert req.haslayer("ARP") and req["ARP"].pdst == fmt(v4_d)


@pytest.mark.parametrize(("why", "kwargs", "reason"), [
    ("not the current gateway", {"src": V4_C, "src_mac": MAC_C, "gateway": ip4("192.0.2.4")},
     "icmp_redirect_not_from_gateway"),
    ("gateway off the link", {"gateway": ip4("198.51.100.9")}, "icmp_redirect_bad_gateway"),
    ("gateway is ourselves", {"gateway": V4_A}, "icmp_redirect_bad_gateway"),
    ("gateway is the old one", {"gateway": V4_B}, "icmp_redirect_bad_gateway"),
    ("gateway is the subnet broadcast", {"gateway": ip4("192.0.2.255")}, "icmp_redirect_bad_gateway"),
    ("gateway is multicast", {"gateway": ip4("224.0.0.1")}, "icmp_redirect_bad_gateway"),
    ("unknown code", {"code": 4}, "icmp_redirect_bad"),
])
def test_bad_redirects_are_counted_and_change_nothing(why: str, kwargs: dict[str, Any], reason: str) -> None:
    st, (clock, first) = host_with_default_route()
    gen = st.routes.gen
    st.receive(IF, redirect(first, **kwargs), clock.now())
    assert st.stats[reason] == 1, why
    assert st.routes.gen == gen and not st.ip4.redirects
    assert send_udp(st, FAR, clock.now()).dst == smac(MAC_B)


def test_redirect_quoting_a_packet_that_is_not_ours_is_dropped() -> None:
    st, (clock, first) = host_with_default_route()
    first[IP].src = "192.0.2.99"
    st.receive(IF, redirect(first), clock.now())
    assert st.stats[Drop.ICMP_ERROR_NO_MATCH] == 1 and not st.ip4.redirects


def test_router_ignores_redirects() -> None:
    st, (clock, first) = host_with_default_route(forwarding=True)
    st.receive(IF, redirect(first), clock.now())
    assert st.stats["icmp_redirect_ignored"] == 1 and not st.ip4.redirects


def test_configured_host_route_is_not_redirected() -> None:
    st, (clock, first) = host_with_default_route()
    st.add_route(FAR, 32, gateway=V4_B, now=clock.now())
    st.receive(IF, redirect(first), clock.now())
    assert st.stats["icmp_redirect_ignored"] == 1
    assert send_udp(st, FAR, clock.now()).dst == smac(MAC_B)


def test_redirects_are_bounded() -> None:
    st, (clock, first) = host_with_default_route()
    st.ip4.max_redirects = 8
    for i in range(20):
        quoted = first.copy()
        quoted[IP].dst = f"203.0.113.{100 + i}"
        st.receive(IF, redirect(quoted), clock.now())
    assert len(st.ip4.redirects) == 8 and st.stats.get("icmp", "redirects_evicted") == 12
    assert sum(r.proto == PROTO_REDIRECT for r in st.routes) == 8
    oldest, newest = (st.routes.lookup(ip4(a), 0, clock.now()) for a in ("203.0.113.100", "203.0.113.119"))
    assert oldest is not None and oldest.gateway == V4_B            # evicted: the default route
    assert newest is not None and newest.gateway == V4_C


def test_tcp_follows_a_redirect() -> None:
    st, (clock, _first) = host_with_default_route()
    conn: TcpConnection = st.tcp.connect(FAR, 80, now=clock.now())
    st.poll(clock.now())
    syn = only(sent(st))
    assert syn.dst == smac(MAC_B)
    st.receive(IF, redirect(syn), clock.now())
    clock.advance(s(1.1))                   # the SYN's retransmission timer
    st.poll(clock.now())
    again = only(sent(st))
    assert again[TCP].flags == "S" and again.dst == smac(MAC_C) and conn.state is TcpState.SYN_SENT


def test_udp_flows_are_unaffected_by_a_redirect_for_another_destination() -> None:
    st, (clock, first) = host_with_default_route()
    other = first.copy()
    other[IP].dst = fmt(FAR2)
    del other[UDP].chksum
    st.receive(IF, redirect(other), clock.now())
    assert send_udp(st, FAR, clock.now()).dst == smac(MAC_B)
    assert send_udp(st, FAR2, clock.now()).dst == smac(MAC_C)

"""RFC 5549/8950 v4-via-v6 routes on a host: next hop resolved by ND, ethertype
0x0800, IPv4 source chosen for the IPv4 destination (PROTOCOLS.md §2.1), the
freebsd-net 2025 scenario, route_output and its trace probe line."""

from __future__ import annotations

import errno
import random

import pytest
from harness import ICMP, IP, UDP, Ether, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, settle, smac

from stack.core.clock import ManualClock, s
from stack.core.events import EchoReply, PingError, SocketError
from stack.core.ipservice import RouteError
from stack.core.nd import NudState
from stack.core.stack import Limits, Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip4, ip6, link_local_from_mac, mac, solicited_node
from stack.wire.frame import parse_frame
from stack.wire.frame_types import ETHERTYPE_IPV4, ETHERTYPE_IPV6

MAC_H = mac("02:00:00:00:01:01")        # this host, on tap1
MAC_P = mac("02:00:00:00:02:02")        # the peer router fe80::2
LL_H = link_local_from_mac(MAC_H)
GW = ip6("fe80::2")
DST = ip4("203.0.113.2")
LO_ADDR = ip4("198.51.100.1")
LO_ADDR7 = ip4("198.51.100.7")
LO = 1


def host(*, lo_addrs: tuple[bytes, ...] = (LO_ADDR,), route_src: bytes | None = None,
         limits: Limits | None = None) -> tuple[Stack, ManualClock, int]:
    """tap1 with only its link-local IPv6 address; IPv4 addresses on lo only;
    203.0.113.2/32 via fe80::2%tap1 (freebsd-net, August 2025)."""
    clock = ManualClock()
    st = Stack(rng=random.Random(7), now=clock.now(), limits=limits)
    tap1 = st.add_interface("tap1", MAC_H, now=clock.now())
    for a in lo_addrs:
        st.add_address(LO, a, 32, clock.now())
    st.add_route(DST, 32, gateway=GW, gw_zone=tap1, src=route_src, now=clock.now())
    settle(st, clock)
    st.drain_tx()
    return st, clock, tap1


def na_from_peer(dst: bytes = LL_H, solicited: bool = True) -> bytes:
    return bytes(Ether(src=smac(MAC_P), dst=smac(MAC_H)) /
                 IPv6(src=fmt(GW), dst=fmt(dst), hlim=255) /
                 ICMPv6ND_NA(tgt=fmt(GW), R=1, S=int(solicited), O=1) /
                 ICMPv6NDOptDstLLAddr(lladdr=smac(MAC_P)))


def only_ns_for_gateway(st: Stack, tap1: int) -> None:
    [(ifx, raw)] = st.drain_tx()
    f = parse_frame(raw)
    assert (ifx, f.ethertype, f.icmp_type, f.dst) == (tap1, ETHERTYPE_IPV6, 135, solicited_node(GW))
    assert f.src == LL_H and f.hop_limit == 255
    assert IPv6(bytes(f.buf[14:])).tgt == fmt(GW)


def released(st: Stack, tap1: int) -> list[Ether]:
    out = []
    for ifx, raw in st.drain_tx():
        assert ifx == tap1
        p = Ether(raw)
        assert p.type == ETHERTYPE_IPV4, "v4-via-v6 frames carry ethertype 0x0800"
        assert (p.dst, p.src) == (smac(MAC_P), smac(MAC_H)), "dst MAC from ND"
        out.append(p)
    return out


def checksums_ok(p: Ether) -> None:
    ip = p[IP]
    fresh = IP(bytes(ip))
    del fresh.chksum
    if fresh.haslayer(UDP):
        del fresh[UDP].chksum
    if fresh.haslayer(ICMP):
        del fresh[ICMP].chksum
    assert bytes(IP(bytes(fresh))) == bytes(ip)


# -- the freebsd-net scenario as a core test ------------------------------------------------


def test_udp_datagram_leaves_tap1_from_loopback_address_with_nd_mac() -> None:
    st, clock, tap1 = host()
    ep = st.udp.bind(None, 0)
    assert ep.sendto(b"hello", DST, 9, 0, clock.now()) == 5
    only_ns_for_gateway(st, tap1)
    e = st.nd.get(tap1, GW)
    assert e is not None and e.state is NudState.INCOMPLETE
    assert [p.ethertype for p in e.queue] == [ETHERTYPE_IPV4]      # queued while INCOMPLETE
    assert st.arp.entries == {}                                     # no ARP anywhere
    st.receive(tap1, na_from_peer(), clock.now())
    [p] = released(st, tap1)
    assert (p[IP].src, p[IP].dst, p[IP].proto) == (fmt(LO_ADDR), fmt(DST), 17)
    assert (p[UDP].sport, p[UDP].dport, bytes(p[UDP].payload)) == (ep.port, 9, b"hello")
    checksums_ok(p)
    assert st.nd.get(tap1, GW).state is NudState.REACHABLE  # type: ignore[union-attr]


def test_icmp_echo_leaves_tap1_from_loopback_address_and_the_reply_comes_back() -> None:
    st, clock, tap1 = host()
    route = st.ip4.ping_send(DST, 0x4242, 1, b"ping", clock.now())
    assert route.src == LO_ADDR
    only_ns_for_gateway(st, tap1)
    st.receive(tap1, na_from_peer(), clock.now())
    [p] = released(st, tap1)
    assert (p[IP].src, p[IP].dst, p[ICMP].type, p[ICMP].id, p[ICMP].seq) == \
        (fmt(LO_ADDR), fmt(DST), 8, 0x4242, 1)
    checksums_ok(p)
    reply = Ether(src=smac(MAC_P), dst=smac(MAC_H)) / IP(src=fmt(DST), dst=fmt(LO_ADDR), ttl=63) / \
        ICMP(type=0, id=0x4242, seq=1) / b"ping"
    clock.advance(s(0.01))
    st.receive(tap1, bytes(reply), clock.now())
    [ev] = [e for e in st.drain_events() if isinstance(e, EchoReply)]
    assert (ev.src, ev.seq, ev.hop_limit, ev.received_at - ev.sent_at) == (DST, 1, 63, s(0.01))


@pytest.mark.parametrize("kind", ["udp", "icmp"])
def test_route_src_is_used_when_it_is_an_address_of_the_stack(kind: str) -> None:
    st, clock, tap1 = host(lo_addrs=(LO_ADDR, LO_ADDR7), route_src=LO_ADDR7)
    if kind == "udp":
        st.udp.bind(None, 0).sendto(b"x", DST, 9, 0, clock.now())
    else:
        st.ip4.ping_send(DST, 1, 1, b"", clock.now())
    only_ns_for_gateway(st, tap1)
    st.receive(tap1, na_from_peer(), clock.now())
    [p] = released(st, tap1)
    assert p[IP].src == fmt(LO_ADDR7)


def test_route_src_must_be_ours_and_a_removed_one_is_not_used() -> None:
    st, clock, tap1 = host(lo_addrs=(LO_ADDR, LO_ADDR7), route_src=LO_ADDR7)
    with pytest.raises(RouteError) as ei:
        st.add_route(ip4("203.0.113.9"), 32, gateway=GW, gw_zone=tap1, src=ip4("192.0.2.77"))
    assert ei.value.errno == errno.EADDRNOTAVAIL
    st.remove_address(LO, LO_ADDR7, clock.now())
    assert st.route_output(DST, 0, None, clock.now()).src == LO_ADDR


def test_route_output_decision_for_ipv4_via_ipv6_next_hop() -> None:
    st, clock, tap1 = host()
    r = st.route_output(DST, 0, None, clock.now())
    assert (r.dst, r.src, r.ifp, r.origifp, r.nexthop, r.nexthop_zone, r.local) == \
        (DST, LO_ADDR, tap1, tap1, GW, tap1, False)
    assert (r.mtu, r.gen) == (1500, st.routes.gen)
    assert st.route_valid(r)


def test_trace_probe_line_names_the_ipv6_next_hop_and_marks_cached_routes() -> None:
    st, clock, _tap1 = host()
    lines: list[str] = []
    st.tracer = lines.append
    ep = st.udp.bind(None, 0)
    ep.sendto(b"1", DST, 9, 0, clock.now())
    ep.sendto(b"2", DST, 9, 0, clock.now())
    st.ip4.ping_send(DST, 1, 1, b"", clock.now())
    gen = st.routes.gen
    out = [line for line in lines if line.startswith("ip_output")]
    base = "ip_output ifp=tap1 nexthop=fe80::2%tap1 src=198.51.100.1 dst=203.0.113.2"
    assert out == [f"{base} proto=udp route=lookup gen={gen} origifp=tap1",
                   f"{base} proto=udp route=cached gen={gen} origifp=tap1",
                   f"{base} proto=icmp route=lookup gen={gen} origifp=tap1"]
    assert "nd state=NONE->INCOMPLETE addr=fe80::2%tap1 lladdr=- queued=0" in lines


def test_trace_ip_output_to_an_own_address_names_lo_and_the_owning_interface() -> None:
    # As ip6_output: ifp is the transmit interface (lo for a local destination),
    # origifp the interface the destination address belongs to.
    st, clock, tap1 = host()
    st.add_address(tap1, ip4("203.0.113.9"), 24, clock.now())
    lines: list[str] = []
    st.tracer = lines.append
    st.ip4.ping_send(ip4("203.0.113.9"), 1, 1, b"", clock.now())
    st.ip4.ping_send(LO_ADDR, 1, 2, b"", clock.now())
    out = [line for line in lines if line.startswith("ip_output")]
    assert [line.split(" src=")[0] for line in out] == ["ip_output ifp=lo nexthop=203.0.113.9",
                                                        "ip_output ifp=lo nexthop=198.51.100.1"]
    assert [line.rsplit(" ", 1)[1] for line in out] == ["origifp=tap1", "origifp=lo"]


def test_no_ipv4_address_at_all_is_no_route_to_host() -> None:
    st, clock, _tap1 = host(lo_addrs=())
    for attempt in ("route", "udp", "ping"):
        with pytest.raises(RouteError) as ei:
            if attempt == "route":
                st.route_output(DST, 0, None, clock.now())
            elif attempt == "udp":
                st.udp.bind(None, 0).sendto(b"x", DST, 9, 0, clock.now())
            else:
                st.ip4.ping_send(DST, 1, 1, b"", clock.now())
        assert ei.value.errno == errno.EHOSTUNREACH
        assert "No route to host" in str(ei.value)
    assert st.drain_tx() == []


# -- IPv4 source order (PROTOCOLS.md §2.1) ---------------------------------------------------


def test_egress_interface_address_beats_loopback_and_subnet_match_comes_first() -> None:
    st, clock, tap1 = host()
    st.add_address(tap1, ip4("192.0.2.5"), 24, clock.now())
    st.add_address(tap1, ip4("203.0.113.77"), 24, clock.now())
    assert st.route_output(DST, 0, None, clock.now()).src == ip4("203.0.113.77")
    st.add_route(ip4("10.1.0.0"), 16, gateway=GW, gw_zone=tap1, now=clock.now())
    assert st.route_output(ip4("10.1.2.3"), 0, None, clock.now()).src == ip4("192.0.2.5")


def test_other_interface_address_when_egress_and_loopback_have_none() -> None:
    st, clock, tap1 = host(lo_addrs=())
    tap2 = st.add_interface("tap2", mac("02:00:00:00:03:03"), now=clock.now(), dad_transmits=0)
    st.add_address(tap2, ip4("169.254.7.7"), 16, clock.now())        # link scope: skipped
    with pytest.raises(RouteError):
        st.route_output(DST, 0, None, clock.now())
    st.add_address(tap2, ip4("192.0.2.9"), 24, clock.now())
    r = st.route_output(DST, 0, None, clock.now())
    assert (r.src, r.ifp) == (ip4("192.0.2.9"), tap1)
    st.add_address(LO, LO_ADDR, 32, clock.now())                      # loopback comes first
    assert st.route_output(DST, 0, None, clock.now()).src == LO_ADDR


def test_loopback_127_is_never_a_source_off_the_host_but_all_127_8_is_local() -> None:
    st, clock, _tap1 = host(lo_addrs=())
    assert st.interfaces[LO].find4(ip4("127.0.0.1")) is not None
    with pytest.raises(RouteError):
        st.route_output(DST, 0, None, clock.now())
    r = st.route_output(ip4("127.0.0.9"), 0, None, clock.now())
    assert (r.src, r.ifp, r.origifp, r.local) == (ip4("127.0.0.1"), LO, LO, True)
    st.ip4.ping_send(ip4("127.0.0.9"), 3, 1, b"", clock.now())
    st.poll(clock.now())
    [ev] = [e for e in st.drain_events() if isinstance(e, EchoReply)]
    assert ev.src == ip4("127.0.0.9") and st.drain_tx() == []


def test_ping_own_loopback_address_stays_inside() -> None:
    st, clock, _tap1 = host()
    r = st.ip4.ping_send(LO_ADDR, 3, 1, b"me", clock.now())
    assert (r.src, r.ifp, r.local) == (LO_ADDR, LO, True)
    st.poll(clock.now())
    assert any(isinstance(e, EchoReply) for e in st.drain_events())
    assert st.drain_tx() == []


# -- resolution through ND -----------------------------------------------------------------


def test_queued_datagrams_are_released_in_order_and_the_queue_is_bounded() -> None:
    st, clock, tap1 = host(limits=Limits(nd_queue_max=3))
    ep = st.udp.bind(None, 0)
    for i in range(5):
        ep.sendto(bytes([i]), DST, 9, 0, clock.now())
    only_ns_for_gateway(st, tap1)
    st.receive(tap1, na_from_peer(), clock.now())
    assert [bytes(p[UDP].payload) for p in released(st, tap1)] == [b"\x02", b"\x03", b"\x04"]
    assert st.nd.queue_drops == 2


def test_ipv4_and_ipv6_traffic_share_the_neighbor_entry() -> None:
    st, clock, tap1 = host()
    st.icmp6.ping_send(GW, tap1, 1, 1, b"", clock.now())       # IPv6 first: NS
    only_ns_for_gateway(st, tap1)
    st.receive(tap1, na_from_peer(), clock.now())
    assert [Ether(raw).type for _, raw in st.drain_tx()] == [ETHERTYPE_IPV6]
    st.udp.bind(None, 0).sendto(b"x", DST, 9, 0, clock.now())  # IPv4: no new NS
    [p] = released(st, tap1)
    assert p[IP].src == fmt(LO_ADDR)
    assert list(st.nd.entries) == [(tap1, GW)]


def test_unsolicited_na_for_unknown_gateway_creates_nothing() -> None:
    st, clock, tap1 = host()
    st.receive(tap1, na_from_peer(dst=ip6("ff02::1"), solicited=False), clock.now())
    assert st.nd.get(tap1, GW) is None


def test_stale_gateway_entry_is_reprobed_by_nud_for_ipv4_traffic() -> None:
    st, clock, tap1 = host()
    ep = st.udp.bind(None, 0)
    ep.sendto(b"x", DST, 9, 0, clock.now())
    st.drain_tx()
    st.receive(tap1, na_from_peer(), clock.now())
    st.drain_tx()
    settle(st, clock, s(60))                                    # REACHABLE -> STALE
    st.drain_tx()
    assert st.nd.get(tap1, GW).state is NudState.STALE  # type: ignore[union-attr]
    ep.sendto(b"y", DST, 9, 0, clock.now())
    assert len(released(st, tap1)) == 1                          # sent at once, DELAY
    assert st.nd.get(tap1, GW).state is NudState.DELAY  # type: ignore[union-attr]
    settle(st, clock, s(5))                                     # DELAY_FIRST_PROBE_TIME
    [(_, raw)] = st.drain_tx()
    probe = parse_frame(raw)
    assert (probe.icmp_type, probe.dst, probe.eth_dst) == (135, GW, MAC_P)   # unicast probe


def test_failed_resolution_gives_host_unreachable_to_the_local_sender() -> None:
    st, clock, _tap1 = host()
    ep = st.udp.bind(None, 0)
    ep.connect(DST, 9, 0)
    ep.sendto(b"x", DST, 9, 0, clock.now())
    st.ip4.ping_send(DST, 5, 1, b"", clock.now())
    settle(st, clock, s(4))
    sent = [parse_frame(raw) for _, raw in st.drain_tx()]
    assert [f.icmp_type for f in sent] == [135, 135, 135]        # MAX_MULTICAST_SOLICIT
    events = st.drain_events()
    [perr] = [e for e in events if isinstance(e, PingError)]
    assert perr.text == "Destination Host Unreachable" and perr.src == LO_ADDR
    [serr] = [e for e in events if isinstance(e, SocketError)]
    assert serr.errno == errno.EHOSTUNREACH
    assert st.stats[Drop.ND_RESOLUTION_FAILED] == 2
    assert st.stats.get("icmp", "out_errors_3_1") == 2


def test_global_ipv6_gateway_is_found_on_its_connected_prefix() -> None:
    st, clock, tap1 = host()
    st.add_address(tap1, ip6("2001:db8:5::2"), 64, clock.now())
    settle(st, clock)
    st.drain_tx()
    st.add_route(ip4("192.0.2.0"), 24, gateway=ip6("2001:db8:5::1"), now=clock.now())
    r = st.route_output(ip4("192.0.2.33"), 0, None, clock.now())
    assert (r.ifp, r.nexthop, r.nexthop_zone, r.src) == (tap1, ip6("2001:db8:5::1"), 0, LO_ADDR)
    st.ip4.ping_send(ip4("192.0.2.33"), 1, 1, b"", clock.now())
    [(_, raw)] = st.drain_tx()
    ns = parse_frame(raw)
    assert ns.icmp_type == 135 and ns.dst == solicited_node(ip6("2001:db8:5::1"))


def test_link_local_gateway_without_zone_is_refused() -> None:
    st, clock, tap1 = host()
    with pytest.raises(RouteError) as ei:
        st.add_route(ip4("10.0.0.0"), 8, gateway=GW, now=clock.now())
    assert ei.value.errno == errno.EINVAL
    st.add_route(ip4("10.0.0.0"), 8, gateway=GW, ifindex=tap1, now=clock.now())
    assert st.route_output(ip4("10.1.1.1"), 0, None, clock.now()).nexthop_zone == tap1


def test_interface_down_and_route_change_invalidate_the_cached_route() -> None:
    st, clock, tap1 = host()
    ep = st.udp.bind(None, 0)
    ep.sendto(b"x", DST, 9, 0, clock.now())
    r = ep.route
    assert r is not None and st.route_valid(r)
    st.set_link(tap1, False, clock.now())
    assert not st.route_valid(r)
    with pytest.raises(RouteError) as ei:
        ep.sendto(b"x", DST, 9, 0, clock.now())
    assert ei.value.errno == errno.ENETDOWN

"""IPv4 host side, frame-in/frame-out: header checks, options, TTL, weak host,
127/8 and own-source validation (by the looped mark), ARP with NUD-like aging,
ICMPv4 echo and unreachables, source fragmentation (RFC 791, 792, 826, 1122)."""

from __future__ import annotations

import errno
import random

import pytest
from harness import (
    ARP,
    ICMP,
    IF,
    IP,
    MAC_A,
    MAC_B,
    MAC_C,
    UDP,
    V4_A,
    V4_B,
    Ether,
    one_stack,
    only,
    settle,
    smac,
)
from scapy.layers.inet import IPerror, defragment  # type: ignore[import-untyped]

from stack.core.clock import ManualClock, s
from stack.core.events import EchoReply, PingError, SocketError
from stack.core.nd import NudState
from stack.core.stack import Limits, Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip4, mac
from stack.wire.frame_types import ETHERTYPE_ARP, ETHERTYPE_IPV4

V4_X = ip4("192.0.2.77")


def eth(src: bytes = MAC_B, dst: bytes = MAC_A) -> Ether:
    return Ether(src=smac(src), dst=smac(dst))


def echo4(dst: bytes = V4_A, src: bytes = V4_B, ttl: int = 64, ident: int = 7, seq: int = 1,
          l2dst: bytes = MAC_A, options: bytes = b"") -> bytes:
    ip = IP(src=fmt(src), dst=fmt(dst), ttl=ttl)
    if options:
        ip.options = [options]
    return bytes(eth(dst=l2dst) / ip / ICMP(type=8, id=ident, seq=seq) / b"ping-data")


def udp4(dport: int = 9, dst: bytes = V4_A, src: bytes = V4_B, data: bytes = b"hi",
         l2dst: bytes = MAC_A) -> bytes:
    return bytes(eth(dst=l2dst) / IP(src=fmt(src), dst=fmt(dst)) / UDP(sport=4000, dport=dport) / data)


def known_b(st: Stack) -> None:
    st.add_neighbor(IF, V4_B, MAC_B)


# -- header checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "value", "reason"), [
    (0, 0x65, "ipv4_bad_version"),
    (0, 0x44, "ipv4_bad_ihl"),
    (3, 0xFF, "ipv4_bad_length"),          # total length past the frame
    (10, 0x00, "ipv4_bad_checksum"),
])
def test_bad_header_is_a_counted_parse_drop(offset: int, value: int, reason: str) -> None:
    st, clock = one_stack()
    raw = bytearray(echo4())
    raw[14 + offset] = value
    if reason == "ipv4_bad_checksum":
        raw[14 + 11] ^= 0xFF
    st.receive(IF, bytes(raw), clock.now())
    assert st.drain_tx() == [] and st.stats[f"parse_{reason}"] == 1


def test_truncated_ipv4_is_a_counted_parse_drop() -> None:
    st, clock = one_stack()
    st.receive(IF, echo4()[:14 + 12], clock.now())
    assert st.stats["parse_ipv4_truncated"] == 1


def test_options_are_skipped_and_the_packet_is_answered() -> None:
    st, clock = one_stack()
    known_b(st)
    st.receive(IF, echo4(options=b"\x94\x04\x00\x00"), clock.now())   # Router Alert
    st.receive(IF, echo4(options=b"\x01\x01\x01\x00", seq=2), clock.now())   # NOPs, EOL
    reps = [Ether(raw) for _, raw in st.drain_tx()]
    assert [(p[ICMP].type, p[ICMP].seq, p[IP].ihl) for p in reps] == [(0, 1, 5), (0, 2, 5)]


def test_malformed_options_get_parameter_problem() -> None:
    st, clock = one_stack()
    known_b(st)
    st.receive(IF, echo4(options=b"\x07\x09\x04\x00"), clock.now())     # RR runs past the header
    p = Ether(only(st.drain_tx())[1])
    assert (p[ICMP].type, p[ICMP].code, p[ICMP].ptr) == (12, 0, 20)
    assert st.stats[Drop.IPV4_BAD_OPTION] == 1


def test_source_routed_packets_to_us_are_refused() -> None:
    st, clock = one_stack()
    known_b(st)
    st.receive(IF, echo4(options=bytes((137, 7, 4)) + V4_A + b"\x00"), clock.now())   # SSRR
    assert st.drain_tx() == [] and st.stats[Drop.IPV4_SOURCE_ROUTE] == 1


@pytest.mark.parametrize("ttl", [0, 1])
def test_low_ttl_is_fine_for_local_delivery(ttl: int) -> None:
    st, clock = one_stack()
    known_b(st)
    st.receive(IF, echo4(ttl=ttl), clock.now())
    p = Ether(only(st.drain_tx())[1])
    assert (p[ICMP].type, p[IP].ttl) == (0, 64)


# -- what is ours -----------------------------------------------------------------------------


def test_weak_host_accepts_an_address_of_another_interface() -> None:
    st, clock = one_stack()
    known_b(st)
    t1 = st.add_interface("tap1", MAC_C, now=clock.now(), dad_transmits=0)
    st.add_address(t1, ip4("203.0.113.1"), 24, clock.now())
    st.receive(IF, echo4(dst=ip4("203.0.113.1")), clock.now())
    p = Ether(only(st.drain_tx())[1])
    assert (p[IP].src, p[IP].dst, p[ICMP].type) == ("203.0.113.1", fmt(V4_B), 0)


def test_link_broadcast_udp_is_delivered_but_echo_is_ignored() -> None:
    st, clock = one_stack()
    ep = st.udp.bind(None, 5353)
    st.receive(IF, udp4(dport=5353, dst=ip4("192.0.2.255"), l2dst=b"\xff" * 6), clock.now())
    st.receive(IF, udp4(dport=5353, dst=ip4("255.255.255.255"), l2dst=b"\xff" * 6), clock.now())
    assert [d.dst for d in (ep.recv(), ep.recv())] == [ip4("192.0.2.255"), ip4("255.255.255.255")]
    st.receive(IF, echo4(dst=ip4("192.0.2.255"), l2dst=b"\xff" * 6), clock.now())
    assert st.drain_tx() == [] and st.stats["icmp_echo_broadcast_ignored"] == 1


def test_broadcast_of_another_link_is_not_ours() -> None:
    st, clock = one_stack()
    t1 = st.add_interface("tap1", MAC_C, now=clock.now(), dad_transmits=0)
    st.add_address(t1, ip4("203.0.113.1"), 24, clock.now())
    st.udp.bind(None, 5353)
    st.receive(IF, udp4(dport=5353, dst=ip4("203.0.113.255")), clock.now())
    assert st.stats[Drop.IPV4_NOT_FOR_US] == 1


def test_multicast_and_unknown_unicast_are_not_for_us() -> None:
    st, clock = one_stack()
    st.receive(IF, udp4(dst=ip4("224.0.0.251"), l2dst=mac("01:00:5e:00:00:fb")), clock.now())
    st.receive(IF, udp4(dst=ip4("192.0.2.99")), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.IPV4_NOT_FOR_US] == 2


@pytest.mark.parametrize(("src", "dst"), [("127.0.0.1", "192.0.2.2"), ("192.0.2.1", "127.0.0.1")])
def test_loopback_addresses_from_a_link_are_dropped(src: str, dst: str) -> None:
    st, clock = one_stack()
    st.receive(IF, echo4(src=ip4(src), dst=ip4(dst)), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.IPV4_LOOPBACK_FROM_WIRE] == 1


def test_own_source_from_the_wire_is_dropped_but_looped_packets_pass() -> None:
    st, clock = one_stack()
    lines: list[str] = []
    st.tracer = lines.append
    st.receive(IF, echo4(src=V4_A), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.IPV4_SPOOFED_OWN_SOURCE] == 1
    route = st.ip4.ping_send(V4_A, 9, 1, b"me", clock.now())
    assert (route.ifp, route.origifp, route.local) == (1, IF, True)
    st.poll(clock.now())
    assert any(isinstance(e, EchoReply) for e in st.drain_events())
    assert st.drain_tx() == [] and st.stats[Drop.IPV4_SPOOFED_OWN_SOURCE] == 1
    # the looped packet arrives on the owning interface, marked looped (not by interface type)
    assert any(line.startswith("ip_input rcvif=tap0 looped=1 src=192.0.2.2 dst=192.0.2.2")
               for line in lines), lines


def test_local_udp_to_a_closed_port_gets_port_unreachable_over_loopback() -> None:
    st, clock = one_stack()
    ep = st.udp.bind(None, 0)
    ep.connect(ip4("127.0.0.1"), 9, 0)
    ep.sendto(b"x", ip4("127.0.0.1"), 9, 0, clock.now())
    st.poll(clock.now())
    assert [e.errno for e in st.drain_events() if isinstance(e, SocketError)] == [errno.ECONNREFUSED]


# -- ARP (RFC 826) ----------------------------------------------------------------------------


def arp(op: int, spa: bytes, tpa: bytes, sha: bytes = MAC_B, l2dst: bytes = b"\xff" * 6,
        tha: bytes = bytes(6)) -> bytes:
    return bytes(Ether(src=smac(sha), dst=smac(l2dst)) /
                 ARP(op=op, hwsrc=smac(sha), psrc=fmt(spa), hwdst=smac(tha), pdst=fmt(tpa)))


def test_arp_request_for_us_is_answered_and_the_sender_learned() -> None:
    st, clock = one_stack()
    st.receive(IF, arp(1, V4_B, V4_A), clock.now())
    ifx, raw = only(st.drain_tx())
    p = Ether(raw)
    assert (ifx, p.type, p.dst) == (IF, ETHERTYPE_ARP, smac(MAC_B))
    assert (p[ARP].op, p[ARP].hwsrc, p[ARP].psrc, p[ARP].hwdst, p[ARP].pdst) == \
        (2, smac(MAC_A), fmt(V4_A), smac(MAC_B), fmt(V4_B))
    e = st.arp.get(IF, V4_B)
    assert e is not None and e.state is NudState.STALE and e.lladdr == MAC_B


def test_arp_request_for_someone_else_creates_nothing() -> None:
    st, clock = one_stack()
    st.receive(IF, arp(1, V4_B, V4_X), clock.now())
    assert st.drain_tx() == [] and st.arp.entries == {}
    assert st.stats[Drop.ARP_NOT_FOR_US] == 1


def test_gratuitous_arp_from_a_stranger_creates_no_entry_but_updates_a_known_one() -> None:
    st, clock = one_stack()
    st.receive(IF, arp(1, V4_X, V4_X), clock.now())
    st.receive(IF, arp(2, V4_X, V4_X), clock.now())
    assert st.arp.entries == {} and st.drain_tx() == []
    st.receive(IF, arp(1, V4_B, V4_A), clock.now())            # B becomes known
    st.drain_tx()
    st.receive(IF, arp(1, V4_B, V4_B, sha=MAC_C), clock.now())  # B moved to MAC_C
    e = st.arp.get(IF, V4_B)
    assert e is not None and e.lladdr == MAC_C and e.state is NudState.STALE


def test_arp_claiming_our_address_is_a_conflict_and_never_learned() -> None:
    st, clock = one_stack()
    st.receive(IF, arp(1, V4_A, V4_A, sha=MAC_C), clock.now())
    assert st.arp.entries == {} and st.stats[Drop.ARP_ADDRESS_CONFLICT] == 1
    assert any("address conflict" in m for _, m in st.log)


def test_arp_probe_for_our_address_is_defended() -> None:
    st, clock = one_stack()
    st.receive(IF, arp(1, bytes(4), V4_A, sha=MAC_C), clock.now())     # RFC 5227 probe
    p = Ether(only(st.drain_tx())[1])
    assert (p[ARP].op, p[ARP].psrc, p.dst) == (2, fmt(V4_A), smac(MAC_C))
    assert st.arp.entries == {}


@pytest.mark.parametrize("sha", [mac("01:00:5e:00:00:01"), MAC_A])
def test_arp_with_multicast_or_own_sender_mac_is_dropped(sha: bytes) -> None:
    st, clock = one_stack()
    st.receive(IF, arp(1, V4_B, V4_A, sha=sha), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.ARP_BAD] == 1


def test_first_packet_waits_for_arp_and_is_released_on_reply() -> None:
    st, clock = one_stack()
    for seq in (1, 2, 3):
        st.ip4.ping_send(V4_B, 4, seq, b"", clock.now())
    req = Ether(only(st.drain_tx())[1])
    assert (req.dst, req[ARP].op, req[ARP].psrc, req[ARP].pdst) == ("ff:ff:ff:ff:ff:ff", 1, fmt(V4_A),
                                                                    fmt(V4_B))
    assert st.arp.get(IF, V4_B).state is NudState.INCOMPLETE  # type: ignore[union-attr]
    st.receive(IF, arp(2, V4_B, V4_A, l2dst=MAC_A, tha=MAC_A), clock.now())
    out = [Ether(raw) for _, raw in st.drain_tx()]
    assert [(p.type, p.dst, p[ICMP].seq) for p in out] == [(ETHERTYPE_IPV4, smac(MAC_B), i) for i in (1, 2, 3)]
    assert st.arp.get(IF, V4_B).state is NudState.REACHABLE  # type: ignore[union-attr]


def test_unsolicited_arp_reply_creates_no_entry() -> None:
    st, clock = one_stack()
    st.receive(IF, arp(2, V4_B, V4_A, l2dst=MAC_A, tha=MAC_A), clock.now())
    assert st.arp.entries == {}


def test_arp_entry_ages_reachable_stale_delay_probe_and_goes_away() -> None:
    st, clock = one_stack()
    st.ip4.ping_send(V4_B, 4, 1, b"", clock.now())
    st.drain_tx()
    st.receive(IF, arp(2, V4_B, V4_A, l2dst=MAC_A, tha=MAC_A), clock.now())
    st.drain_tx()
    settle(st, clock, s(60))
    e = st.arp.get(IF, V4_B)
    assert e is not None and e.state is NudState.STALE
    st.ip4.ping_send(V4_B, 4, 2, b"", clock.now())
    assert e.state is NudState.DELAY and len(st.drain_tx()) == 1
    settle(st, clock, s(5))
    probe = Ether(only(st.drain_tx())[1])
    assert (probe.dst, probe[ARP].op, probe[ARP].pdst) == (smac(MAC_B), 1, fmt(V4_B))   # unicast
    assert e.state is NudState.PROBE
    settle(st, clock, s(3))
    assert st.arp.get(IF, V4_B) is None


def test_arp_cache_is_bounded() -> None:
    clock = ManualClock()
    st = Stack(rng=random.Random(1), now=clock.now(), limits=Limits(arp_cache_max=8))
    ifx = st.add_interface("tap0", MAC_A, now=clock.now(), dad_transmits=0)
    st.add_address(ifx, ip4("10.0.0.1"), 16, clock.now())
    for i in range(50):
        host = bytes((10, 0, 1, i + 1))
        st.receive(ifx, arp(1, host, ip4("10.0.0.1"), sha=bytes((2, 0, 0, 1, 0, i))), clock.now())
    assert len(st.arp.entries) == 8 and st.arp.evictions == 42


def test_arp_failure_gives_host_unreachable_to_the_local_pinger() -> None:
    st, clock = one_stack()
    st.ip4.ping_send(V4_X, 4, 1, b"", clock.now())
    settle(st, clock, s(4))
    assert [Ether(raw)[ARP].op for _, raw in st.drain_tx()] == [1, 1, 1]
    [err] = [e for e in st.drain_events() if isinstance(e, PingError)]
    assert err.text == "Destination Host Unreachable" and err.src == V4_A


# -- ICMPv4 -----------------------------------------------------------------------------------


def test_echo_request_is_answered_with_same_id_seq_and_data() -> None:
    st, clock = one_stack()
    known_b(st)
    st.receive(IF, echo4(ident=0x1234, seq=77), clock.now())
    p = Ether(only(st.drain_tx())[1])
    assert (p[IP].src, p[IP].dst, p[ICMP].type, p[ICMP].id, p[ICMP].seq, bytes(p[ICMP].payload)) == \
        (fmt(V4_A), fmt(V4_B), 0, 0x1234, 77, b"ping-data")
    icmp = ICMP(bytes(p[ICMP]))
    del icmp.chksum
    assert bytes(ICMP(bytes(icmp))) == bytes(p[ICMP])


def test_echo_request_with_bad_checksum_is_dropped() -> None:
    st, clock = one_stack()
    raw = bytearray(echo4())
    raw[-1] ^= 0xFF
    st.receive(IF, bytes(raw), clock.now())
    assert st.drain_tx() == [] and st.stats[Drop.BAD_CHECKSUM] == 1


def test_unknown_protocol_gets_protocol_unreachable() -> None:
    st, clock = one_stack()
    known_b(st)
    st.receive(IF, bytes(eth() / IP(src=fmt(V4_B), dst=fmt(V4_A), proto=253) / b"abcdefgh"), clock.now())
    p = Ether(only(st.drain_tx())[1])
    assert (p[ICMP].type, p[ICMP].code, p[IP].src, p[IPerror].proto) == (3, 2, fmt(V4_A), 253)
    assert st.stats[Drop.IPV4_UNKNOWN_PROTO] == 1


def test_closed_udp_port_gets_port_unreachable_quoting_the_datagram() -> None:
    st, clock = one_stack()
    known_b(st)
    st.receive(IF, udp4(dport=9), clock.now())
    p = Ether(only(st.drain_tx())[1])
    assert (p[ICMP].type, p[ICMP].code, p[IP].src, p[IP].dst) == (3, 3, fmt(V4_A), fmt(V4_B))
    assert bytes(p[IPerror])[:28] == bytes(Ether(udp4(dport=9))[IP])[:28]


def test_received_port_unreachable_reaches_the_connected_socket() -> None:
    st, clock = one_stack()
    known_b(st)
    ep = st.udp.bind(None, 40000)
    ep.connect(V4_B, 9, 0)
    ep.sendto(b"x", V4_B, 9, 0, clock.now())
    sent = Ether(only(st.drain_tx())[1])
    err = eth() / IP(src=fmt(V4_B), dst=fmt(V4_A)) / ICMP(type=3, code=3) / bytes(sent[IP])[:28]
    st.receive(IF, bytes(err), clock.now())
    assert [e.errno for e in st.drain_events() if isinstance(e, SocketError)] == [errno.ECONNREFUSED]


def test_received_fragmentation_needed_lowers_the_path_mtu() -> None:
    st, clock = one_stack()
    known_b(st)
    st.add_route(ip4("198.18.0.0"), 16, gateway=V4_B, now=clock.now())
    ep = st.udp.bind(None, 40000)
    ep.sendto(b"x" * 1000, ip4("198.18.0.1"), 9, 0, clock.now())
    sent = Ether(only(st.drain_tx())[1])
    err = eth() / IP(src=fmt(V4_B), dst=fmt(V4_A)) / ICMP(type=3, code=4, nexthopmtu=600) / \
        bytes(sent[IP])[:28]
    st.receive(IF, bytes(err), clock.now())
    assert st.route_output(ip4("198.18.0.1"), 0, None, clock.now()).mtu == 600
    ep.sendto(b"x" * 1000, ip4("198.18.0.1"), 9, 0, clock.now())
    assert [len(Ether(raw)[IP]) for _, raw in st.drain_tx()] == [596, 452]


# -- fragmentation on output ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["udp", "icmp"])
def test_big_datagrams_are_fragmented_with_df_clear(kind: str) -> None:
    st, clock = one_stack()
    known_b(st)
    payload = bytes(range(256)) * 12                          # 3072 bytes
    if kind == "udp":
        st.udp.bind(None, 40000).sendto(payload, V4_B, 9, 0, clock.now())
    else:
        st.ip4.ping_send(V4_B, 1, 1, payload, clock.now())
    frags = [Ether(raw)[IP] for _, raw in st.drain_tx()]
    assert len(frags) == 3 and all(len(f) <= 1500 and not f.flags.DF for f in frags)
    assert [f.frag * 8 for f in frags] == [0, 1480, 2960]
    assert len({f.id for f in frags}) == 1
    [whole] = defragment(frags)
    if kind == "udp":
        assert bytes(whole[UDP].payload) == payload
    else:
        assert bytes(whole[ICMP].payload) == payload


def test_udp_over_ipv4_loopback_is_delivered() -> None:
    st, clock = one_stack()
    rx = st.udp.bind(ip4("127.0.0.1"), 7000)
    st.udp.bind(None, 0).sendto(b"hello", ip4("127.0.0.1"), 7000, 0, clock.now())
    st.poll(clock.now())
    d = rx.recv()
    assert d is not None and (d.data, d.src) == (b"hello", ip4("127.0.0.1"))
    assert st.drain_tx() == []

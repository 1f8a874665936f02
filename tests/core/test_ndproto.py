"""ND message validation and behaviour (stack.core.ndproto), frame in / frame out.

Every receive-side rule of RFC 4861 §6.1, §7.1.1, §7.1.2, §8.1 and RFC 6980 is a
counted drop; §7.2.2 (NS source), §7.2.4 (NA flags), §7.2.5 (NA processing,
override, NA without TLLAO), and the neighbor cache under a resolution flood.
Packets are crafted and checked with scapy."""

from __future__ import annotations

import random
from typing import Any

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
    Ether,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
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
    ICMPv6NDOptUnknown,
    ICMPv6Unknown,
    IPv6ExtHdrFragment,
    fragment6,
)
from scapy.packet import Raw  # type: ignore[import-untyped]

from stack.core.clock import ManualClock, s
from stack.core.interface import AddrState
from stack.core.nd import DELAY_FIRST_PROBE_TIME, NudState
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip6, link_local_from_mac, multicast_mac, solicited_node
from stack.wire.ethernet import eth_header
from stack.wire.frame_types import ETHERTYPE_IPV6, Frame
from stack.wire.icmpv6 import ECHO_REQUEST, build_echo6
from stack.wire.ipv6 import build_ipv6

LL_R = ip6("fe80::1")


def mcast_mac(dst: bytes) -> str:
    return smac(multicast_mac(dst)) if dst[0] == 0xFF else smac(MAC_A)


def ns(target: bytes = GA_A, *, src: bytes = GA_B, dst: bytes | None = None, hlim: int = 255, code: int = 0,
       slla: bytes | None = MAC_B, extra: Any = None) -> Any:
    dst = solicited_node(target) if dst is None else dst
    p = (Ether(src=smac(MAC_B), dst=mcast_mac(dst)) / IPv6(src=fmt(src), dst=fmt(dst), hlim=hlim)
         / ICMPv6ND_NS(code=code, tgt=fmt(target)))
    if slla is not None:
        p /= ICMPv6NDOptSrcLLAddr(lladdr=smac(slla))
    if extra is not None:
        p /= extra
    return p


def na(target: bytes = GA_B, *, src: bytes | None = None, dst: bytes = GA_A, hlim: int = 255, code: int = 0,
       r: int = 0, solicited: int = 1, override: int = 1, tlla: bytes | None = MAC_B, mac: bytes = MAC_B,
       extra: Any = None) -> Any:
    p = (Ether(src=smac(mac), dst=mcast_mac(dst)) / IPv6(src=fmt(target if src is None else src),
                                                         dst=fmt(dst), hlim=hlim)
         / ICMPv6ND_NA(code=code, R=r, S=solicited, O=override, tgt=fmt(target)))
    if tlla is not None:
        p /= ICMPv6NDOptDstLLAddr(lladdr=smac(tlla))
    if extra is not None:
        p /= extra
    return p


def rs(*, hlim: int = 255, code: int = 0, extra: Any = None, src: bytes = LL_B,
       slla: bytes | None = MAC_B) -> Any:
    # A host does not listen to ff02::2: send it to our link-local so that ND sees it.
    p = (Ether(src=smac(MAC_B), dst=smac(MAC_A)) / IPv6(src=fmt(src), dst=fmt(LL_A), hlim=hlim)
         / ICMPv6ND_RS(code=code))
    if slla is not None:
        p /= ICMPv6NDOptSrcLLAddr(lladdr=smac(slla))
    return p / extra if extra is not None else p


def ra(*, hlim: int = 255, code: int = 0, extra: Any = None) -> Any:
    p = (Ether(src=smac(MAC_C), dst="33:33:00:00:00:01") / IPv6(src=fmt(LL_R), dst="ff02::1", hlim=hlim)
         / ICMPv6ND_RA(code=code, routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr=smac(MAC_C)))
    return p / extra if extra is not None else p


def redirect(*, hlim: int = 255, code: int = 0, extra: Any = None) -> Any:
    p = (Ether(src=smac(MAC_C), dst=smac(MAC_A)) / IPv6(src=fmt(LL_R), dst=fmt(LL_A), hlim=hlim)
         / ICMPv6ND_Redirect(code=code, tgt="fe80::2", dst="2001:db8:99::5"))
    return p / extra if extra is not None else p


def short(icmp_type: int, length: int) -> Any:
    return (Ether(src=smac(MAC_B), dst=smac(MAC_A)) / IPv6(src=fmt(LL_B), dst=fmt(LL_A), hlim=255)
            / ICMPv6Unknown(type=icmp_type, code=0, msgbody=bytes(length - 4)))


BUILDERS = {"ns": ns, "na": lambda **kw: na(dst=ip6("ff02::1"), solicited=0, **kw), "rs": rs, "ra": ra,
            "redirect": redirect}
ZERO_LEN_OPTION = ICMPv6NDOptUnknown(type=99, len=0, data=bytes(6))


def scapy(f: Frame) -> Any:
    return Ether(bytes(f.buf))


def assert_untouched(st: Stack) -> None:
    """Nothing was sent and no neighbor was learned."""
    assert st.drain_tx() == []
    assert st.nd.get(IF, GA_B) is None and st.nd.get(IF, LL_B) is None


def learn_stale(st: Stack, now: int, mac: bytes = MAC_B) -> None:
    st.receive(IF, bytes(ns(slla=mac)), now)                         # §7.2.3: STALE
    st.drain_tx()


def learn_reachable(st: Stack, now: int) -> None:
    st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", now)
    st.receive(IF, bytes(na()), now)                                # solicited: REACHABLE
    st.drain_tx()
    st.drain_events()


def entry(st: Stack, addr: bytes = GA_B) -> Any:
    e = st.nd.get(IF, addr)
    assert e is not None
    return e


# -- §6.1, §7.1, §8.1: hop limit, code, length, options ---------------------------------------


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("hlim", [254, 64, 1])
def test_nd_message_not_from_the_link_is_dropped(kind: str, hlim: int) -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(BUILDERS[kind](hlim=hlim)), clock.now())
    assert st.stats[Drop.ND_BAD_HOP_LIMIT] == 1
    assert_untouched(st)


@pytest.mark.parametrize("kind", BUILDERS)
def test_nd_message_with_nonzero_code_is_dropped(kind: str) -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(BUILDERS[kind](code=1)), clock.now())
    assert st.stats[Drop.ND_BAD_CODE] == 1
    assert_untouched(st)


@pytest.mark.parametrize("icmp_type, length, reason", [
    (135, 23, Drop.ND_BAD_LENGTH),
    (136, 20, Drop.ND_BAD_LENGTH),
    (133, 4, "parse_icmp_truncated"),         # below 8 bytes the frame parser already refuses it
    (134, 12, Drop.ND_BAD_LENGTH),
    (137, 36, Drop.ND_BAD_LENGTH),
], ids=["ns", "na", "rs", "ra", "redirect"])
def test_nd_message_shorter_than_its_fixed_part_is_dropped(icmp_type: int, length: int, reason: str) -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(short(icmp_type, length)), clock.now())
    assert st.stats[reason] == 1
    assert_untouched(st)


@pytest.mark.parametrize("kind", BUILDERS)
def test_nd_message_with_zero_length_option_is_dropped(kind: str) -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(BUILDERS[kind](extra=ZERO_LEN_OPTION)), clock.now())
    assert st.stats[Drop.ND_BAD_OPTION] == 1
    assert_untouched(st)


def test_option_running_past_the_message_is_dropped() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(ns(extra=Raw(b"\x63\x02" + bytes(6)))), clock.now())   # says 16, has 8
    assert st.stats[Drop.ND_BAD_OPTION] == 1
    assert_untouched(st)


def test_sllao_of_wrong_size_for_ethernet_is_dropped() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(ns(slla=None, extra=Raw(b"\x01\x02" + smac(MAC_B).encode()[:6] + bytes(8)))),
               clock.now())
    assert st.stats[Drop.ND_BAD_OPTION] == 1
    assert_untouched(st)


def test_unknown_option_is_skipped() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(ns(extra=ICMPv6NDOptUnknown(type=99, len=1, data=bytes(6)))), clock.now())
    assert only(frames(st))[1].icmp_type == 136                     # §4.6: silently ignored


def test_nd_message_with_bad_checksum_is_dropped() -> None:
    st, clock = one_stack()
    raw = bytearray(bytes(ns()))
    raw[-1] ^= 0x01
    st.receive(IF, bytes(raw), clock.now())
    assert st.stats[Drop.BAD_CHECKSUM] == 1
    assert_untouched(st)


# -- §7.1.1 / §7.1.2 source, destination and target rules ------------------------------------------


@pytest.mark.parametrize("dst", [GA_A, ip6("ff02::1"), solicited_node(GA_B)],
                         ids=["unicast", "all_nodes", "other_solicited_node"])
def test_ns_from_unspecified_must_go_to_the_targets_solicited_node_group(dst: bytes) -> None:
    st, clock = one_stack()
    if dst == solicited_node(GA_B):
        st.ndp.join(st.interfaces[IF], dst, clock.now())             # so that IPv6 input takes it
    st.receive(IF, bytes(ns(src=bytes(16), dst=dst, slla=None)), clock.now())
    assert st.stats[Drop.ND_BAD_SOURCE] == 1
    assert st.drain_tx() == []
    assert st.interfaces[IF].find6(GA_A).state is AddrState.PREFERRED   # type: ignore[union-attr]


def test_ns_from_unspecified_with_sllao_is_dropped() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(ns(src=bytes(16), slla=MAC_B)), clock.now())
    assert st.stats[Drop.ND_BAD_SOURCE] == 1
    assert st.drain_tx() == []


def test_solicited_na_to_multicast_is_dropped() -> None:
    st, clock = one_stack()
    learn_stale(st, clock.now())
    st.receive(IF, bytes(na(dst=ip6("ff02::1"), solicited=1, tlla=MAC_C)), clock.now())
    assert st.stats[Drop.ND_BAD_DEST] == 1
    assert entry(st).lladdr == MAC_B


def test_valid_rs_is_counted_and_ignored_by_a_host() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(rs()), clock.now())
    assert st.stats.get("nd", "in_rs_ignored") == 1 and st.drain_tx() == []


def test_rs_from_unspecified_with_sllao_is_dropped() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(rs(src=bytes(16))), clock.now())
    assert st.stats[Drop.ND_BAD_SOURCE] == 1                          # §6.1.1


def test_unsolicited_na_to_multicast_is_accepted() -> None:
    st, clock = one_stack()
    learn_stale(st, clock.now())
    st.receive(IF, bytes(na(dst=ip6("ff02::1"), solicited=0, tlla=MAC_C)), clock.now())
    assert entry(st).lladdr == MAC_C and entry(st).state is NudState.STALE


@pytest.mark.parametrize("kind", ["ns", "na"])
def test_multicast_target_is_dropped(kind: str) -> None:
    st, clock = one_stack()
    target = ip6("ff02::1:ff00:2")
    frame = ns(target=target, dst=target) if kind == "ns" else na(target=target, src=GA_B)
    st.receive(IF, bytes(frame), clock.now())
    assert st.stats[Drop.ND_BAD_TARGET] == 1
    assert_untouched(st)


def test_ns_for_an_address_that_is_not_ours_is_not_answered() -> None:
    st, clock = one_stack()
    st.ndp.join(st.interfaces[IF], solicited_node(GA_B), clock.now())
    st.receive(IF, bytes(ns(target=GA_B, src=ip6("2001:db8:1::9"))), clock.now())
    assert st.stats[Drop.ND_TARGET_NOT_OURS] == 1
    assert st.drain_tx() == []


# -- RFC 6980: no fragmented ND ------------------------------------------------------------------


def _atomic_fragment_ns() -> list[bytes]:
    p = ns()
    ip = p[IPv6]
    frag = (Ether(src=smac(MAC_B), dst=p[Ether].dst)
            / IPv6(src=ip.src, dst=ip.dst, hlim=255) / IPv6ExtHdrFragment(offset=0, m=0, id=7)
            / ip.payload)
    return [bytes(frag)]


def _fragments(kind: str) -> list[bytes]:
    if kind == "atomic":
        return _atomic_fragment_ns()
    p = ns(extra=ICMPv6NDOptUnknown(type=99, len=20, data=bytes(158)))
    ip = p[IPv6]
    whole = IPv6(src=ip.src, dst=ip.dst, hlim=255) / IPv6ExtHdrFragment(id=9) / ip.payload
    return [bytes(Ether(src=smac(MAC_B), dst=p[Ether].dst) / f) for f in fragment6(whole, 120)]


@pytest.mark.parametrize("kind", ["atomic", "two_fragments"])
def test_fragmented_nd_is_dropped(kind: str) -> None:
    st, clock = one_stack()
    pieces = _fragments(kind)
    assert (len(pieces) == 1) == (kind == "atomic")
    for piece in pieces:
        st.receive(IF, piece, clock.now())
    assert st.drain_tx() == []
    assert st.stats[Drop.ND_FRAGMENTED] == 1


# -- §7.2.2: the source of our solicitations --------------------------------------------------------


def test_ns_source_is_the_prompting_packets_source_when_ours() -> None:
    st, clock = one_stack()
    st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", clock.now())
    p = scapy(only(frames(st))[1])
    assert p[IPv6].src == fmt(GA_A) and p[IPv6].dst == fmt(solicited_node(GA_B)) and p[IPv6].hlim == 255
    assert p[ICMPv6ND_NS].tgt == fmt(GA_B) and p[ICMPv6NDOptSrcLLAddr].lladdr == smac(MAC_A)
    assert p[Ether].dst == smac(multicast_mac(solicited_node(GA_B)))


def test_ns_source_for_a_link_local_destination_is_our_link_local() -> None:
    st, clock = one_stack()
    st.icmp6.ping_send(LL_B, IF, 1, 1, b"x", clock.now())
    p = scapy(only(frames(st))[1])
    assert p[IPv6].src == fmt(LL_A) and p[ICMPv6ND_NS].tgt == fmt(LL_B)


def test_ns_for_a_forwarded_packet_uses_an_address_of_the_outgoing_interface() -> None:
    clock = ManualClock()
    st = Stack(rng=random.Random(1), now=clock.now(), forwarding=True)
    st.add_interface("tap0", MAC_A, now=clock.now(), dad_transmits=0)
    st.add_address(IF, GA_A, 64, clock.now())
    tap1 = st.add_interface("tap1", MAC_C, now=clock.now(), dad_transmits=0)
    st.add_address(tap1, ip6("2001:db8:2::1"), 64, clock.now())
    settle(st, clock)
    st.drain_tx()
    far_src = ip6("2001:db8:2::9")
    st.receive(tap1, bytes(Ether(src=smac(MAC_B), dst=smac(MAC_C)) / IPv6(src=fmt(far_src), dst=fmt(GA_B))
                           / ICMPv6EchoRequest()), clock.now())
    ifx, f = only(frames(st))
    p = scapy(f)
    assert ifx == IF and ICMPv6ND_NS in p
    assert p[IPv6].src in (fmt(LL_A), fmt(GA_A))                     # not the forwarded source


def test_nud_probe_is_unicast_from_our_link_local() -> None:
    st, clock = one_stack()
    learn_stale(st, clock.now())
    st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", clock.now())
    assert only(frames(st))[1].icmp_type == 128 and entry(st).state is NudState.DELAY
    clock.advance(DELAY_FIRST_PROBE_TIME)
    st.poll(clock.now())
    p = scapy(only(frames(st))[1])
    assert entry(st).state is NudState.PROBE
    assert p[Ether].dst == smac(MAC_B) and p[IPv6].dst == fmt(GA_B) and p[IPv6].src == fmt(LL_A)
    assert p[ICMPv6ND_NS].tgt == fmt(GA_B)


# -- §7.2.4: our advertisements ------------------------------------------------------------------------


def test_answer_to_ns_is_solicited_override_unicast_with_tlla() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(ns()), clock.now())
    p = scapy(only(frames(st))[1])
    assert (p[ICMPv6ND_NA].R, p[ICMPv6ND_NA].S, p[ICMPv6ND_NA].O) == (0, 1, 1)
    assert p[IPv6].src == fmt(GA_A) and p[IPv6].dst == fmt(GA_B) and p[IPv6].hlim == 255
    assert p[Ether].dst == smac(MAC_B) and p[ICMPv6NDOptDstLLAddr].lladdr == smac(MAC_A)


def test_router_sets_the_r_flag() -> None:
    st, clock = one_stack(forwarding=True)
    st.receive(IF, bytes(ns()), clock.now())
    assert scapy(only(frames(st))[1])[ICMPv6ND_NA].R == 1


def test_answer_to_dad_probe_goes_to_all_nodes_unsolicited() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(ns(src=bytes(16), slla=None)), clock.now())
    p = scapy(only(frames(st))[1])
    assert p[IPv6].dst == "ff02::1" and p[Ether].dst == "33:33:00:00:00:01"
    assert (p[ICMPv6ND_NA].S, p[ICMPv6ND_NA].O) == (0, 1) and p[ICMPv6ND_NA].tgt == fmt(GA_A)
    assert st.nd.get(IF, bytes(16)) is None


def test_ns_for_link_local_target_is_answered_from_it() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(ns(target=LL_A, src=LL_B)), clock.now())
    p = scapy(only(frames(st))[1])
    assert p[IPv6].src == fmt(LL_A) and p[ICMPv6ND_NA].tgt == fmt(LL_A)


def test_ns_from_a_unicast_source_for_a_tentative_address_is_not_answered() -> None:
    st, clock = one_stack()
    new = ip6("2001:db8:1::33")
    st.add_address(IF, new, 64, clock.now())
    st.drain_tx()
    st.receive(IF, bytes(ns(target=new)), clock.now())
    assert st.drain_tx() == []                                       # RFC 4862 §5.4.3
    assert st.interfaces[IF].find6(new).state is AddrState.TENTATIVE  # type: ignore[union-attr]


# -- §7.2.5: receiving advertisements ------------------------------------------------------------------


def test_na_without_tlla_confirms_a_probe_entry() -> None:
    """PROTOCOLS.md §7: Linux answers a unicast probe without TLLAO."""
    st, clock = one_stack()
    learn_stale(st, clock.now())
    st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", clock.now())
    clock.advance(DELAY_FIRST_PROBE_TIME)
    st.poll(clock.now())
    assert entry(st).state is NudState.PROBE
    st.drain_tx()
    st.receive(IF, bytes(na(solicited=1, override=0, tlla=None)), clock.now())
    assert entry(st).state is NudState.REACHABLE and entry(st).lladdr == MAC_B
    clock.advance(s(10))
    st.poll(clock.now())
    assert not [f for _, f in frames(st) if f.icmp_type == 135]
    assert st.nd.get(IF, GA_B) is not None


def test_unanswered_probes_delete_the_entry() -> None:
    st, clock = one_stack()
    learn_stale(st, clock.now())
    st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", clock.now())
    settle(st, clock, s(10))
    assert len([f for _, f in frames(st) if f.icmp_type == 135]) == 3
    assert st.nd.get(IF, GA_B) is None


def test_na_without_tlla_for_incomplete_entry_is_ignored() -> None:
    st, clock = one_stack()
    st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", clock.now())
    st.drain_tx()
    st.receive(IF, bytes(na(tlla=None)), clock.now())
    assert entry(st).state is NudState.INCOMPLETE and st.drain_tx() == []


@pytest.mark.parametrize("start, solicited, override, tlla, end, lladdr", [
    ("REACHABLE", 0, 0, MAC_C, NudState.STALE, MAC_B),      # O=0, new lladdr: REACHABLE -> STALE, kept
    ("STALE", 1, 0, MAC_C, NudState.STALE, MAC_B),          # O=0, new lladdr: ignored
    ("REACHABLE", 1, 0, MAC_C, NudState.STALE, MAC_B),
    ("REACHABLE", 0, 1, MAC_C, NudState.STALE, MAC_C),      # O=1: updated, S=0 -> STALE
    ("STALE", 1, 1, MAC_C, NudState.REACHABLE, MAC_C),      # O=1, S=1: updated, REACHABLE
    ("STALE", 1, 0, MAC_B, NudState.REACHABLE, MAC_B),      # same lladdr, S=1: REACHABLE
    ("STALE", 0, 0, MAC_B, NudState.STALE, MAC_B),          # nothing new
    ("REACHABLE", 0, 1, MAC_B, NudState.REACHABLE, MAC_B),  # same lladdr, unsolicited: no change
    ("INCOMPLETE", 0, 0, MAC_C, NudState.STALE, MAC_C),     # INCOMPLETE ignores O
    ("INCOMPLETE", 1, 0, MAC_C, NudState.REACHABLE, MAC_C),
], ids=str)
def test_na_override_semantics(start: str, solicited: int, override: int, tlla: bytes, end: NudState,
                               lladdr: bytes) -> None:
    st, clock = one_stack()
    if start == "REACHABLE":
        learn_reachable(st, clock.now())
    elif start == "STALE":
        learn_stale(st, clock.now())
    else:
        st.icmp6.ping_send(GA_B, 0, 1, 1, b"x", clock.now())
        st.drain_tx()
    assert entry(st).state.value == start
    st.receive(IF, bytes(na(solicited=solicited, override=override, tlla=tlla,
                            dst=GA_A if solicited else ip6("ff02::1"))), clock.now())
    assert (entry(st).state, entry(st).lladdr) == (end, lladdr)


def test_unsolicited_na_for_an_unknown_neighbor_creates_nothing() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(na(dst=ip6("ff02::1"), solicited=0)), clock.now())
    assert st.stats[Drop.ND_UNSOLICITED_IGNORED] == 1
    assert st.nd.get(IF, GA_B) is None


def test_na_r_flag_sets_is_router() -> None:
    st, clock = one_stack()
    learn_stale(st, clock.now())
    st.receive(IF, bytes(na(r=1, solicited=0, dst=ip6("ff02::1"))), clock.now())
    assert entry(st).is_router
    st.receive(IF, bytes(na(r=0, solicited=0, dst=ip6("ff02::1"))), clock.now())
    assert not entry(st).is_router


def test_na_for_our_own_address_is_counted_and_changes_nothing() -> None:
    st, clock = one_stack()
    st.receive(IF, bytes(na(target=GA_A, src=LL_B, dst=ip6("ff02::1"), solicited=0)), clock.now())
    assert st.stats.get("nd", "in_na_for_own_address") == 1
    assert st.interfaces[IF].find6(GA_A).state is AddrState.PREFERRED   # type: ignore[union-attr]
    assert any("advertises our address" in m for _, m in st.log)


def test_ns_with_sllao_updates_a_reachable_entry_to_stale() -> None:
    st, clock = one_stack()
    learn_reachable(st, clock.now())
    learn_stale(st, clock.now(), mac=MAC_C)                          # §7.2.3: different lladdr
    assert (entry(st).state, entry(st).lladdr) == (NudState.STALE, MAC_C)


# -- a resolution flood --------------------------------------------------------------------------


def test_resolution_flood_keeps_cache_bounded_and_reachable_entries() -> None:
    st, clock = one_stack()
    learn_reachable(st, clock.now())
    peer_ll = link_local_from_mac(MAC_B)
    st.add_neighbor(IF, peer_ll, MAC_B, clock.now())
    limit = st.limits.neighbor_cache_max
    base = int.from_bytes(ip6("2001:db8:1::1:0"), "big")
    eth = eth_header(MAC_A, MAC_C, ETHERTYPE_IPV6)
    for i in range(5000):
        src = (base + i).to_bytes(16, "big")
        msg = build_echo6(src, GA_A, ECHO_REQUEST, 7, i, b"flood")
        st.receive(IF, eth + build_ipv6(src, GA_A, 58, msg), clock.now())
    sent = st.drain_tx()
    assert len(sent) == 5000 and all(fr[14 + 40] == 135 for _, fr in sent)   # one NS each
    assert len(st.nd.entries) <= limit
    assert st.nd.evictions >= 5000 - limit
    assert entry(st).state is NudState.REACHABLE and entry(st).lladdr == MAC_B
    assert entry(st, peer_ll).state is NudState.PERMANENT
    st.receive(IF, bytes(Ether(src=smac(MAC_B), dst=smac(MAC_A)) / IPv6(src=fmt(GA_B), dst=fmt(GA_A))
                         / ICMPv6EchoRequest(id=9, seq=1, data=b"still here")), clock.now())
    reply = only(frames(st))[1]
    assert (reply.icmp_type, reply.dst, reply.eth_dst) == (129, GA_B, MAC_B)
    settle(st, clock, s(5))                                           # the INCOMPLETE ones fail
    assert len(st.nd.entries) <= limit

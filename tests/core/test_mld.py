"""MLDv2 listener (stack.core.mld), frame in / frame out on a manual clock.
Queries are crafted with scapy; Reports are parsed back with scapy.
RFC 3810 §5, §6, §8.2.1; RFC 2710 §4; RFC 3590 §4."""

from __future__ import annotations

import random
from typing import Any

import pytest
from harness import (
    GA_A,
    IF,
    LL_A,
    MAC_A,
    MAC_B,
    Ether,
    IPv6,
    frames,
    one_stack,
    smac,
)
from scapy.layers.inet6 import (  # type: ignore[import-untyped]
    ICMPv6MLDMultAddrRec,
    ICMPv6MLDone,
    ICMPv6MLQuery,
    ICMPv6MLQuery2,
    ICMPv6MLReport,
    ICMPv6MLReport2,
    ICMPv6Unknown,
    IPv6ExtHdrHopByHop,
    RouterAlert,
)

from stack.core import mld
from stack.core.clock import ManualClock, ms, s
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire import ndp
from stack.wire.addr import fmt, ip6, solicited_node
from stack.wire.frame_types import Frame

SN_LL = solicited_node(LL_A)
SN_GA = solicited_node(GA_A)
G = ip6("ff05::1:3")
ROUTER = "fe80::1"
GROUPS = {fmt(SN_LL), fmt(SN_GA)}


def query(group: str = "::", *, mrd: int = 1000, dst: str = "ff02::1", src: str = ROUTER, hlim: int = 1,
          router_alert: bool = True, v1: bool = False, sources: tuple[str, ...] = (), qrv: int = 2) -> bytes:
    ip = IPv6(src=src, dst=dst, hlim=hlim)
    if router_alert:
        ip /= IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
    body = ICMPv6MLQuery(mrd=mrd, mladdr=group) if v1 else \
        ICMPv6MLQuery2(mrd=mrd, mladdr=group, QRV=qrv, sources=list(sources))
    mac_dst = "33:33:" + ":".join(f"{b:02x}" for b in ip6(dst)[12:])
    return bytes(Ether(src=smac(MAC_B), dst=mac_dst) / ip / body)


def collect(st: Stack, clock: ManualClock, until: int) -> list[tuple[int, Frame]]:
    """Frames sent during `until` of virtual time, with their time offset."""
    start, end = clock.now(), clock.now() + until
    out: list[tuple[int, Frame]] = [(0, f) for _, f in frames(st)]
    while True:
        at = st.poll_at()
        if at is None or at > end:
            break
        clock.set(max(at, clock.now()))
        st.poll(clock.now())
        out.extend((clock.now() - start, f) for _, f in frames(st))
    clock.set(end)
    return out


def reports(out: list[tuple[int, Frame]]) -> list[tuple[int, Any]]:
    return [(t, Ether(bytes(f.buf))) for t, f in out if f.icmp_type == 143]


def records(p: Any) -> list[tuple[int, str, tuple[str, ...]]]:
    """The Multicast Address Records (scapy chains records 2.. as payloads of the first)."""
    out = []
    for rec in p[ICMPv6MLReport2].records:
        r = rec
        while isinstance(r, ICMPv6MLDMultAddrRec):
            out.append((r.rtype, r.dst, tuple(r.sources)))
            r = r.payload
    assert len(out) == p[ICMPv6MLReport2].records_number
    return out


def check_envelope(p: Any, src: str = fmt(LL_A), dst: str = "ff02::16") -> None:
    """RFC 3810 §5.2.13-14: link-local (or ::) source, hop limit 1, Router Alert."""
    assert p[IPv6].src == src and p[IPv6].dst == dst and p[IPv6].hlim == 1
    hbh = p[IPv6ExtHdrHopByHop]
    assert any(isinstance(o, RouterAlert) and o.value == 0 for o in hbh.options)
    assert p[Ether].dst == "33:33:" + ":".join(f"{b:02x}" for b in ip6(dst)[12:])
    assert p[Ether].src == smac(MAC_A)


def joined(st: Stack, group: bytes, now: int) -> None:
    st.ndp.join(st.interfaces[IF], group, now)


# -- state changes on join and leave (§6.1) ----------------------------------------------------


def test_join_sends_to_ex_report_at_once_then_one_retransmission_within_a_second() -> None:
    st, clock = one_stack()
    joined(st, G, clock.now())
    assert st.poll_at() == clock.now()                               # "immediately"
    sent = reports(collect(st, clock, s(10)))
    assert len(sent) == mld.ROBUSTNESS == 2                           # RV transmissions in all
    (t0, first), (t1, second) = sent
    assert t0 == 0 and 0 < t1 <= mld.UNSOLICITED_REPORT_INTERVAL
    for p in (first, second):
        check_envelope(p)
        assert records(p) == [(ndp.CHANGE_TO_EXCLUDE, fmt(G), ())]


def test_fresh_interface_reports_from_unspecified_then_again_from_link_local() -> None:
    clock = ManualClock()
    st = Stack(rng=random.Random(5), now=clock.now())
    st.add_interface("tap0", MAC_A, now=clock.now())
    sent = reports(collect(st, clock, s(5)))
    early = [p for _, p in sent if p[IPv6].src == "::"]
    late = [p for _, p in sent if p[IPv6].src == fmt(LL_A)]
    assert len(early) == 2 and len(late) == 2 and len(sent) == 4     # RFC 3590 §4
    for p in early:
        check_envelope(p, src="::")                                  # §5.2.13
    for p in early + late:
        assert records(p) == [(ndp.CHANGE_TO_EXCLUDE, fmt(SN_LL), ())]   # never ff02::1


def test_all_nodes_and_interface_local_groups_are_never_reported() -> None:
    st, clock = one_stack()
    for g in ("ff02::1", "ff01::5", "ff00::7"):
        joined(st, ip6(g), clock.now())
    assert reports(collect(st, clock, s(5))) == []


def test_new_address_joins_its_solicited_node_group() -> None:
    st, clock = one_stack()
    st.add_address(IF, ip6("2001:db8:5::77"), 64, clock.now())
    sent = reports(collect(st, clock, s(5)))
    assert [records(p) for _, p in sent] == [[(ndp.CHANGE_TO_EXCLUDE, "ff02::1:ff00:77", ())]] * 2


def test_leave_sends_to_in_report_robustness_times() -> None:
    st, clock = one_stack()
    st.remove_address(IF, GA_A, clock.now())
    sent = reports(collect(st, clock, s(5)))
    assert [records(p) for _, p in sent] == [[(ndp.CHANGE_TO_INCLUDE, fmt(SN_GA), ())]] * 2
    check_envelope(sent[0][1])


def test_shared_solicited_node_group_is_left_only_with_its_last_address() -> None:
    st, clock = one_stack()
    twin = ip6("2001:db8:2::2")                                       # same group as GA_A
    st.add_address(IF, twin, 64, clock.now())
    assert reports(collect(st, clock, s(5))) == []
    st.remove_address(IF, twin, clock.now())
    assert reports(collect(st, clock, s(5))) == []
    st.remove_address(IF, GA_A, clock.now())
    assert len(reports(collect(st, clock, s(5)))) == 2


def test_join_then_leave_before_sending_reports_the_leave() -> None:
    st, clock = one_stack()
    joined(st, G, clock.now())
    st.ndp.leave(st.interfaces[IF], G, clock.now())
    sent = reports(collect(st, clock, s(5)))
    assert [records(p) for _, p in sent] == [[(ndp.CHANGE_TO_INCLUDE, fmt(G), ())]] * 2


def test_pending_changes_leave_in_one_report() -> None:
    st, clock = one_stack()
    g2 = ip6("ff05::1:4")
    joined(st, G, clock.now())
    joined(st, g2, clock.now())
    _, first = reports(collect(st, clock, s(5)))[0]
    assert sorted(records(first)) == [(4, fmt(G), ()), (4, fmt(g2), ())]


def test_no_reports_while_the_link_is_down() -> None:
    st, clock = one_stack()
    st.set_link(IF, False, clock.now())
    joined(st, G, clock.now())
    assert reports(collect(st, clock, s(5))) == []


# -- queries (§6.2, §6.3) ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_general_query_answered_within_max_response_delay_with_current_state(seed: int) -> None:
    st, clock = one_stack(seed=seed)
    st.receive(IF, query(mrd=2000), clock.now())
    sent = reports(collect(st, clock, s(30)))
    assert len(sent) == 1
    t, p = sent[0]
    assert 0 <= t <= ms(2000)
    check_envelope(p)
    assert sorted(records(p)) == sorted((ndp.MODE_IS_EXCLUDE, g, ()) for g in GROUPS)


def test_general_query_with_zero_delay_is_answered_at_once() -> None:
    st, clock = one_stack()
    st.receive(IF, query(mrd=0), clock.now())
    st.poll(clock.now())
    assert len(reports([(0, f) for _, f in frames(st)])) == 1


def test_address_specific_query_reports_that_address_only() -> None:
    st, clock = one_stack()
    st.receive(IF, query(fmt(SN_GA), dst=fmt(SN_GA), mrd=500), clock.now())
    sent = reports(collect(st, clock, s(5)))
    assert len(sent) == 1 and sent[0][0] <= ms(500)
    assert records(sent[0][1]) == [(ndp.MODE_IS_EXCLUDE, fmt(SN_GA), ())]


def test_mldv1_form_address_specific_query_is_answered_too() -> None:
    st, clock = one_stack()
    st.receive(IF, query(fmt(SN_GA), dst=fmt(SN_GA), mrd=500, v1=True), clock.now())
    sent = [(t, Ether(bytes(f.buf))) for t, f in collect(st, clock, s(5)) if f.icmp_type == 131]
    assert len(sent) == 1 and sent[0][1][ICMPv6MLReport].mladdr == fmt(SN_GA)


def test_query_for_an_address_we_do_not_listen_to_is_ignored() -> None:
    st, clock = one_stack()
    st.receive(IF, query("ff05::99", dst="ff02::1"), clock.now())
    assert reports(collect(st, clock, s(5))) == []
    assert st.stats.get("mld", "query_other_group") == 1


def test_source_specific_query_is_answered_with_is_in_of_the_sources() -> None:
    st, clock = one_stack()
    joined(st, G, clock.now())
    collect(st, clock, s(5))
    srcs = ("2001:db8::53", "2001:db8::54")
    st.receive(IF, query(fmt(G), dst=fmt(G), sources=srcs), clock.now())
    [(_, p)] = reports(collect(st, clock, s(5)))
    assert records(p) == [(ndp.MODE_IS_INCLUDE, fmt(G), srcs)]       # §6.3: EXCLUDE({}) hears them


def test_address_query_after_source_query_widens_to_the_whole_address() -> None:
    st, clock = one_stack()
    joined(st, G, clock.now())
    collect(st, clock, s(5))
    st.receive(IF, query(fmt(G), dst=fmt(G), sources=("2001:db8::53",), mrd=5000), clock.now())
    st.receive(IF, query(fmt(G), dst=fmt(G), mrd=5000), clock.now())
    [(_, p)] = reports(collect(st, clock, s(10)))
    assert records(p) == [(ndp.MODE_IS_EXCLUDE, fmt(G), ())]


def test_pending_general_response_covers_a_later_address_query() -> None:
    st, clock = one_stack(seed=3)
    st.receive(IF, query(mrd=100), clock.now())                       # rule 1: due within 100 ms
    st.receive(IF, query(fmt(SN_GA), dst=fmt(SN_GA), mrd=10_000), clock.now())
    sent = reports(collect(st, clock, s(15)))
    assert len(sent) == 1 and len(records(sent[0][1])) == 2
    assert st.stats.get("mld", "query_covered") >= 1


def test_new_general_query_with_shorter_delay_reschedules_the_response() -> None:
    st, clock = one_stack(seed=4)
    st.receive(IF, query(mrd=10_000), clock.now())
    st.receive(IF, query(mrd=100), clock.now())
    sent = reports(collect(st, clock, s(15)))
    assert len(sent) == 1 and sent[0][0] <= ms(100)


def test_querier_robustness_variable_is_adopted() -> None:
    st, clock = one_stack()
    st.receive(IF, query(mrd=0, qrv=3), clock.now())
    collect(st, clock, s(1))
    joined(st, G, clock.now())
    assert len(reports(collect(st, clock, s(10)))) == 3


def test_many_groups_are_split_over_reports_that_fit_the_mtu() -> None:
    st, clock = one_stack()
    many = [ip6(f"ff05::1:{i + 1:x}") for i in range(150)]
    for g in many:
        joined(st, g, clock.now())
    collect(st, clock, s(5))
    st.receive(IF, query(mrd=0), clock.now())
    out = collect(st, clock, s(1))
    sent = reports(out)
    assert len(sent) == 3
    assert all(len(f.buf) - 14 <= 1500 for _, f in out)
    got = {r[1] for _, p in sent for r in records(p)}
    assert got == {fmt(g) for g in many} | GROUPS


# -- query validation (§6.2) --------------------------------------------------------------------------


def _short_query() -> bytes:
    return bytes(Ether(src=smac(MAC_B), dst="33:33:00:00:00:01") / IPv6(src=ROUTER, dst="ff02::1", hlim=1)
                 / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)])
                 / ICMPv6Unknown(type=130, code=0, msgbody=bytes(22)))          # 26 bytes: §8.1


@pytest.mark.parametrize("frame, reason", [
    (lambda: query(hlim=2), Drop.MLD_BAD_HOP_LIMIT),
    (lambda: query(hlim=255), Drop.MLD_BAD_HOP_LIMIT),
    (lambda: query(src="2001:db8:1::1"), Drop.MLD_BAD_SOURCE),
    (lambda: query(src="::"), Drop.MLD_BAD_SOURCE),
    (lambda: query(router_alert=False), Drop.MLD_NO_ROUTER_ALERT),
    (lambda: query(v1=True, router_alert=False), Drop.MLD_NO_ROUTER_ALERT),
    (_short_query, Drop.MLD_BAD),
], ids=["hlim2", "hlim255", "global_src", "unspecified_src", "no_router_alert", "v1_no_router_alert",
        "bad_length"])
def test_invalid_query_is_a_counted_drop_and_answered_never(frame: Any, reason: Drop) -> None:
    st, clock = one_stack()
    st.receive(IF, frame(), clock.now())
    assert st.stats[reason] == 1
    assert collect(st, clock, s(15)) == []
    assert not st.ndp.mld.ifs[IF].v1


# -- MLDv1 compatibility (§8.2.1, RFC 2710) -------------------------------------------------------------


def v1_sent(out: list[tuple[int, Frame]]) -> list[tuple[int, Any]]:
    return [(t, Ether(bytes(f.buf))) for t, f in out if f.icmp_type in (131, 132)]


def test_mldv1_general_query_is_answered_with_mldv1_reports_to_each_address() -> None:
    st, clock = one_stack()
    st.receive(IF, query(mrd=1000, v1=True), clock.now())
    sent = v1_sent(collect(st, clock, s(5)))
    assert len(sent) == 2 and all(t <= ms(1000) for t, _ in sent)
    assert reports(collect(st, clock, s(1))) == []
    for _, p in sent:
        group = p[ICMPv6MLReport].mladdr
        check_envelope(p, dst=group)                                 # RFC 2710 §3: to the address
    assert {p[ICMPv6MLReport].mladdr for _, p in sent} == GROUPS


def test_mldv1_mode_leave_sends_done_and_mode_times_out() -> None:
    st, clock = one_stack()
    st.receive(IF, query(mrd=0, v1=True), clock.now())
    collect(st, clock, s(1))
    st.remove_address(IF, GA_A, clock.now())
    [(_, done)] = v1_sent(collect(st, clock, s(5)))
    assert ICMPv6MLDone in done and done[ICMPv6MLDone].mladdr == fmt(SN_GA)
    check_envelope(done, dst="ff02::2")
    clock.advance(mld.OLDER_VERSION_QUERIER_PRESENT_TIMEOUT)
    st.poll(clock.now())
    assert not st.ndp.mld.ifs[IF].v1
    joined(st, G, clock.now())
    assert len(reports(collect(st, clock, s(5)))) == 2               # MLDv2 again


def test_mldv1_join_is_repeated_after_the_v1_interval() -> None:
    st, clock = one_stack()
    st.receive(IF, query(mrd=0, v1=True), clock.now())
    collect(st, clock, s(1))
    joined(st, G, clock.now())
    sent = v1_sent(collect(st, clock, s(20)))
    assert len(sent) == 2 and sent[0][0] == 0 and 0 < sent[1][0] <= mld.V1_UNSOLICITED_REPORT_INTERVAL
    assert all(p[ICMPv6MLReport].mladdr == fmt(G) for _, p in sent)


def test_switching_to_mldv1_cancels_pending_mldv2_timers() -> None:
    st, clock = one_stack()
    st.receive(IF, query(mrd=10_000), clock.now())
    joined(st, G, clock.now())
    st.receive(IF, query(fmt(SN_GA), dst=fmt(SN_GA), mrd=10_000, v1=True), clock.now())
    out = collect(st, clock, s(15))
    assert reports(out) == []
    assert [p[ICMPv6MLReport].mladdr for _, p in v1_sent(out)] == [fmt(SN_GA)]


def test_mldv1_report_from_another_listener_suppresses_ours() -> None:
    st, clock = one_stack()
    st.receive(IF, query(mrd=5000, v1=True), clock.now())
    other = (Ether(src=smac(MAC_B), dst="33:33:ff:00:00:02") / IPv6(src="fe80::b", dst=fmt(SN_GA), hlim=1)
             / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)]) / ICMPv6MLReport(mladdr=fmt(SN_GA)))
    st.receive(IF, bytes(other), clock.now())
    sent = v1_sent(collect(st, clock, s(10)))
    assert [p[ICMPv6MLReport].mladdr for _, p in sent] == [fmt(SN_LL)]
    assert st.stats.get("mld", "v1_report_suppressed") == 1


def test_other_listeners_v2_reports_and_dones_are_ignored() -> None:
    st, clock = one_stack()
    joined(st, ip6("ff02::16"), clock.now())                          # so that reports reach us
    collect(st, clock, s(5))
    rep = (Ether(src=smac(MAC_B), dst="33:33:00:00:00:16") / IPv6(src="fe80::b", dst="ff02::16", hlim=1)
           / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0)]) / ICMPv6MLReport2())
    st.receive(IF, bytes(rep), clock.now())
    assert collect(st, clock, s(5)) == []
    assert st.stats.get("mld", "in_type_143") == 1


def test_no_timer_is_left_once_reports_are_done() -> None:
    st, _clock = one_stack()
    assert st.ndp.mld.poll_at() is None

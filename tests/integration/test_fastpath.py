"""The native flow fast path (stack/link/fastpath.py, native/fastpath.c) against the
kernel: forwarded and echoed floods are answered in C after the first packet of a
flow, every packet is still counted exactly as the slow path counts it, and nothing
the slow path decides goes stale: a route change applies to the next packet, NUD
still probes a neighbor the fast path sends to, a trace sees every packet, and
``fastpath = false`` leaves everything to Python.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from stack.link.fastpath import available
from tests.integration.conftest import Factory, StackProcess
from tests.integration.test_router import ROUTER
from tests.integration.tracing import Trace, fields

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(not available(), reason="no native build (TAPSTACK_PURE=1 or not compiled)"),
]

# ROUTER with a short ReachableTime on tap1: NUD has to run while the flood goes fast
ROUTER_SHORT_NUD = ROUTER + """
[interface.nd]
base_reachable_time_ms = 400
delay_first_probe_time_ms = 100
"""


def stats(sp: StackProcess) -> dict[str, Any]:
    return dict(json.loads(sp.tapstack("-j", "stats").stdout))


def flood(sp: StackProcess, family: str, dst: str, count: int) -> None:
    out = sp.run_in_ns(["ping", family, "-q", "-f", "-l", "8", "-c", str(count), "-W", "2", dst],
                       timeout=120).stdout
    assert f"{count} packets transmitted, {count} received" in out, out


@pytest.mark.parametrize(("family", "dst", "proto", "kind"),
                         [("-6", "2001:db8:2::1", "ipv6", "fwd6"), ("-4", "203.0.113.2", "ipv4", "fwd4")])
def test_forwarded_flood_goes_fast_and_is_counted_exactly(tapstack_factory: Factory, family: str, dst: str,
                                                          proto: str, kind: str) -> None:
    sp = tapstack_factory(ROUTER)
    out = sp.run_in_ns(["ping", family, "-c", "1", "-W", "2", dst]).stdout
    assert "1 received" in out and "ttl=63" in out, out
    n = 3000
    flood(sp, family, dst, n)
    out = sp.run_in_ns(["ping", family, "-c", "1", "-W", "2", dst]).stdout
    assert "1 received" in out and "ttl=63" in out, out          # the fast path decrements too
    st = stats(sp)
    # every request and reply crossed the router once, on whichever path
    assert st[proto]["out_forwarded"] == 2 * (n + 2), st[proto]
    assert st["link"][f"fastpath_{kind}"] >= n, st["link"]          # most of them in C
    assert st["runtime"]["fastpath"] == 1 and st["runtime"]["fastpath_installs"] >= 2, st["runtime"]
    ifs = st["interfaces"]
    assert ifs[sp["tap0"]]["link_rx_frames"] >= n and ifs[sp["tap1"]]["link_tx_frames"] >= n, ifs
    assert ifs[sp["tap0"]]["rx_packets"] >= n and ifs[sp["tap1"]]["tx_packets"] >= n, ifs


def test_echo_flood_is_answered_fast_and_counted_exactly(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER)
    n = 3000
    flood(sp, "-6", "2001:db8:1::2", n)
    st = stats(sp)
    assert st["icmp6"]["out_echo_replies"] == n and st["icmp6"]["in_type_128"] == n, st["icmp6"]
    assert st["link"]["fastpath_echo6"] >= n - 100, st["link"]


def test_fastpath_off_leaves_every_packet_to_python(tapstack_factory: Factory) -> None:
    sp = tapstack_factory("fastpath = false\n" + ROUTER)
    flood(sp, "-6", "2001:db8:2::1", 500)
    st = stats(sp)
    assert st["ipv6"]["out_forwarded"] == 1000
    assert "fastpath" not in st["runtime"] and "fastpath_fwd6" not in st["link"], st


def test_a_route_change_applies_to_the_next_packet(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER)
    flood(sp, "-6", "2001:db8:2::1", 200)
    assert stats(sp)["link"]["fastpath_fwd6"] > 0
    sp.tapstack("route", "del", "2001:db8:2::/64")
    r = sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:2::1"], check=False)
    assert r.returncode == 1 and "From 2001:db8:1::2 icmp_seq=1 Destination unreachable: No route" in r.stdout, r
    assert stats(sp)["drops"]["ipv6_no_route"] == 1


def test_nud_still_probes_a_neighbor_the_fast_path_sends_to(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER_SHORT_NUD)
    before = stats(sp)["nd"].get("out_ns", 0)
    # 150 echoes 20 ms apart: 3 s, several ReachableTimes of tap1's next hop fe80::2
    out = sp.run_in_ns(["ping", "-6", "-q", "-i", "0.02", "-c", "150", "-W", "2", "2001:db8:2::1"],
                       timeout=60).stdout
    assert "150 received" in out, out
    st = stats(sp)
    assert st["link"]["fastpath_fwd6"] > 0, st["link"]
    # REACHABLE -> STALE -> DELAY -> PROBE -> REACHABLE again and again: unicast probes went out
    assert st["nd"]["out_ns"] - before >= 2, st["nd"]
    neigh = json.loads(sp.tapstack("-j", "neigh").stdout)
    [nh] = [e for e in neigh if e["dst"] == "fe80::2" and e["dev"] == sp["tap1"]]
    assert nh["state"] in ("REACHABLE", "STALE", "DELAY", "PROBE"), nh


def test_a_trace_sees_every_packet(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER)
    flood(sp, "-6", "2001:db8:2::1", 200)               # flows installed
    trace = Trace(sp)
    try:
        out = sp.run_in_ns(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "2001:db8:2::1"]).stdout
        assert "3 received" in out, out
        lines = [fields(x) for x in trace.mark() if x.startswith("ip6_forward ")]
    finally:
        trace.close()
    way = [(f["rcvif"], f["ifp"]) for f in lines]
    assert way.count((sp["tap0"], sp["tap1"])) == 3 and way.count((sp["tap1"], sp["tap0"])) == 3, lines
    assert stats(sp)["runtime"]["fastpath"] == 1                 # on again once the trace left

"""SIGHUP reload on a TAP-less core stack: route diffs, needs-restart keys, refusal before change."""

from __future__ import annotations

import dataclasses
import random

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from stack.control.config import ConfigError, parse_config
from stack.core.stack import Limits, Stack
from stack.core.stats import Drop
from stack.runtime.build import build_stack
from stack.runtime.reload import needs_restart, reload_config

BASE = """
[[interface]]
name = "tap0"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]
[[interface]]
name = "tap1"
[[route]]
to = "203.0.113.0/24"
via = "fe80::2%tap1"
[services]
echo = 7
"""


def routes(st: object) -> set[str]:
    return {r["dst"] for r in st.query("route", {}, 0) if r["proto"] == "static"}  # type: ignore[attr-defined]


def test_routes_are_diffed_and_other_changes_only_reported() -> None:
    old = parse_config(BASE, "a.toml")
    st = build_stack(old, 0, random.Random(1))
    st.add_route(bytes(16), 0, gateway=bytes.fromhex("20010db8000100000000000000000001"))  # `route add` by hand
    new = parse_config(BASE.replace('to = "203.0.113.0/24"', 'to = "198.51.100.0/24"')
                       .replace("192.0.2.2/24", "192.0.2.3/24") + "discard = 9\n", "a.toml")
    res = reload_config(old, new, st, None, 0)
    assert res.routes_deleted == ["203.0.113.0/24 via fe80::2%tap1"]
    assert res.routes_added == ["198.51.100.0/24 via fe80::2%tap1"]
    assert routes(st) == {"198.51.100.0/24", "default"}       # the hand-added default stays
    assert res.needs_restart == ["interfaces"]
    assert "192.0.2.3" not in {a["address"] for i in st.query("addr", {}, 0) for a in i["addresses"]}


def test_a_route_core_refuses_changes_nothing() -> None:
    old = parse_config(BASE, "a.toml")
    st = build_stack(old, 0, random.Random(1))
    bad = parse_config(BASE + '[[route]]\nto = "2001:db8:9::/48"\nvia = "2001:db8:77::1"\n', "b.toml")
    with pytest.raises(ConfigError, match=r"b.toml: route\[1\]: gateway 2001:db8:77::1"):
        reload_config(old, bad, st, None, 0)
    assert routes(st) == {"203.0.113.0/24"}


def test_needs_restart_ignores_live_keys_and_source_path() -> None:
    a = parse_config(BASE, "a.toml")
    b = parse_config(BASE.replace("echo = 7", "echo = 8") + "[[forward]]\nlisten = 1\nto = \"127.0.0.1:2\"\n", "b.toml")
    assert needs_restart(a, b) == []
    assert needs_restart(a, parse_config("forwarding = true\n" + BASE, "c.toml")) == []
    assert needs_restart(a, parse_config(BASE + "[limits]\nnd_queue_max = 4\n", "d.toml")) == []
    assert needs_restart(a, parse_config('name = "other"\n' + BASE, "e.toml")) == ["name"]


def forwarded(st: Stack, now: int) -> bool:
    """Does st route a packet from tap0 toward 2001:db8:9::1 (via fe80::2%tap1)?"""
    pkt = bytes(Ether(src="02:00:00:00:00:0b", dst=st.interfaces[2].mac.hex(":")) /
                IPv6(src="2001:db8:1::1", dst="2001:db8:9::1") / UDP(sport=1, dport=2) / b"x")
    before = st.stats.get("ipv6", "out_forwarded")
    st.receive(2, pkt, now)
    st.drain_tx()
    return st.stats.get("ipv6", "out_forwarded") > before


def test_forwarding_changes_at_once_both_ways() -> None:
    base = BASE + '[[route]]\nto = "2001:db8:9::/48"\nvia = "fe80::2%tap1"\n'
    old = parse_config(base, "a.toml")
    st = build_stack(old, 0, random.Random(1))
    assert not forwarded(st, 0) and st.stats[Drop.IPV6_FORWARDING_OFF] + st.stats[Drop.IPV6_NOT_FOR_US] == 1
    on = parse_config("forwarding = true\n" + base, "a.toml")
    res = reload_config(old, on, st, None, 0)
    assert res.needs_restart == [] and res.changed == ["forwarding on"]
    assert "forwarding on" in res.summary()
    assert st.forwarding and forwarded(st, 0)
    res = reload_config(on, old, st, None, 0)
    assert res.changed == ["forwarding off"] and not st.forwarding and not forwarded(st, 0)


def test_limits_change_at_run_time() -> None:
    old = parse_config(BASE, "a.toml")
    st = build_stack(old, 0, random.Random(1))
    new = parse_config(BASE + "[limits]\nneighbor_cache_max = 64\narp_cache_max = 32\nnd_queue_max = 2\n"
                       "icmp_error_rate = 5\nicmp_error_burst = 3\nreasm_max_bytes = 100000\n"
                       "udp_rcvbuf = 4096\nloop_queue_max = 10\npmtu_max = 8\n", "a.toml")
    res = reload_config(old, new, st, None, 0)
    assert res.needs_restart == []
    assert res.changed == ["limits arp_cache_max=32 icmp_error_burst=3 icmp_error_rate=5 loop_queue_max=10 "
                           "nd_queue_max=2 neighbor_cache_max=64 pmtu_max=8 reasm_max_bytes=100000 udp_rcvbuf=4096"]
    assert (st.limits.pmtu_max, st.limits.loop_queue_max, st.limits.reasm_max_bytes) == (8, 10, 100000)
    assert (st.nd.max_entries, st.arp.max_entries, st.nd.queue_max, st.arp.queue_max) == (64, 32, 2, 2)
    for bucket in (st.icmp6.bucket, st.ip4.bucket):
        assert (bucket.rate, bucket.burst) == (5, 3)
    assert st.udp.bind(None, 0).rcvbuf == 4096                # sockets opened from now on
    # the queue bound applies to the next packet: 3 datagrams toward an unresolved
    # neighbor (ARP here) keep 2, the third is counted
    ep = st.udp.bind(None, 0)
    for _ in range(3):
        ep.sendto(b"x", bytes((192, 0, 2, 9)), 9, 0, 0)
    assert st.stats[Drop.ND_QUEUE_OVERFLOW] == 1
    # back to the defaults when [limits] leaves the file
    res = reload_config(new, old, st, None, 0)
    assert res.changed == ["limits default"] and st.limits == Limits() and st.nd.queue_max == 16


def test_tcp_buffers_from_limits_for_connections_opened_later() -> None:
    cfg = parse_config(BASE + "[limits]\ntcp_rcvbuf = 200000\ntcp_sndbuf = 100\n", "a.toml")
    st = build_stack(cfg, 0, random.Random(1))
    assert (st.tcp.config.rcv_buf, st.tcp.config.snd_buf) == (200000, 4096)   # raised to the minimum
    default = parse_config(BASE, "a.toml")
    reload_config(cfg, default, st, None, 0)
    assert (st.tcp.config.rcv_buf, st.tcp.config.snd_buf) == (1 << 20, 1 << 20)


def test_bad_limit_changes_nothing() -> None:
    old = parse_config(BASE, "a.toml")
    st = build_stack(old, 0, random.Random(1))
    new = dataclasses.replace(old, limits={"no_such_limit": 1}, forwarding=True)
    with pytest.raises(ConfigError, match=r"limits\.no_such_limit"):
        reload_config(old, new, st, None, 0)
    assert st.limits == Limits() and not st.forwarding

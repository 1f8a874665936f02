"""Two TAPs, two peer namespaces, an IPv4 route via an IPv6 link-local next hop (RFC 5549)."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import ONE_TAP, Factory

pytestmark = pytest.mark.netns

TWO_TAPS = ONE_TAP + """
[[interface]]
name = "{tap1}"
mac = "02:00:00:00:01:01"
addresses = []

[interface.peer]
netns = "{ns1}"
addresses = ["fe80::2/64", "203.0.113.2/24"]
routes = ["198.51.100.1/32 via inet6 fe80::ff:fe00:101"]
nodad = true
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}

[[route]]
to = "203.0.113.0/24"
via = "fe80::2%{tap1}"
src = "198.51.100.1"
"""


def test_ipv4_via_ipv6_next_hop_both_ways(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(TWO_TAPS)
    out = sp.run_in_ns(["ping", "-4", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.1"], sp["ns1"]).stdout
    assert "2 received" in out
    got = json.loads(sp.tapstack("-j", "route", "get", "203.0.113.2").stdout)
    assert got["dev"] == sp["tap1"] and got["src"] == "198.51.100.1"
    assert str(got["gateway"]).startswith("fe80::2")
    text = sp.tapstack("route", "get", "203.0.113.2").stdout.strip()
    assert text.startswith(f"203.0.113.2 dev {sp['tap1']}") and f"via fe80::2%{sp['tap1']}" in text
    neigh = json.loads(sp.tapstack("neigh", "-j").stdout)
    assert any(n["dst"].startswith("fe80::2") and n["dev"] == sp["tap1"] for n in neigh)
    # the first link still works independently
    out = sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"]).stdout
    assert "1 received" in out


def test_route_added_at_run_time_is_used(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(TWO_TAPS.replace('to = "203.0.113.0/24"', 'to = "203.0.113.128/25"'))
    assert sp.run_in_ns(["ping", "-4", "-c", "1", "-W", "1", "198.51.100.1"], sp["ns1"], check=False).returncode == 1
    sp.tapstack("route", "add", "203.0.113.0/24", "via", f"fe80::2%{sp['tap1']}", "src", "198.51.100.1")
    out = sp.run_in_ns(["ping", "-4", "-c", "1", "-W", "2", "198.51.100.1"], sp["ns1"]).stdout
    assert "1 received" in out
    sp.tapstack("route", "del", "203.0.113.0/24")
    assert sp.run_in_ns(["ping", "-4", "-c", "1", "-W", "1", "198.51.100.1"], sp["ns1"], check=False).returncode == 1

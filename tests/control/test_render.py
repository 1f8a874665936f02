"""Text renderings of the JSON shapes in INTERFACE.md."""

from __future__ import annotations

from stack.control import render


def test_route_get_line_is_the_contract_format() -> None:
    r = {"dst": "2001:db8:ff::1", "dev": "lo", "origdev": "tap0", "gateway": None, "src": "2001:db8:ff::1",
         "gen": 7, "mtu": 65536}
    assert render.route_get(r) == "2001:db8:ff::1 dev lo origdev tap0 src 2001:db8:ff::1 gen 7"
    r = {"dst": "203.0.113.2", "dev": "tap1", "origdev": "tap1", "gateway": "fe80::2%tap1", "src": "198.51.100.1",
         "gen": 3}
    assert render.route_get(r) == "203.0.113.2 dev tap1 origdev tap1 via fe80::2%tap1 src 198.51.100.1 gen 3"


def test_neigh_lines_are_ip_neigh_like() -> None:
    data = [{"dst": "fe80::2", "dev": "tap1", "lladdr": "02:00:00:00:01:02", "state": "REACHABLE", "router": True},
            {"dst": "2001:db8:1::9", "dev": "tap0", "lladdr": None, "state": "INCOMPLETE", "router": False}]
    assert render.neigh(data).splitlines() == [
        "fe80::2 dev tap1 lladdr 02:00:00:00:01:02 router REACHABLE",
        "2001:db8:1::9 dev tap0 INCOMPLETE",
    ]


def test_route_lines() -> None:
    data = [{"dst": "203.0.113.0/24", "gateway": "fe80::2%tap1", "dev": "tap1", "src": "198.51.100.1",
             "proto": "static", "metric": 0},
            {"dst": "2001:db8:1::/64", "gateway": None, "dev": "tap0", "proto": "kernel", "metric": 5}]
    assert render.route(data).splitlines() == [
        "203.0.113.0/24 via inet6 fe80::2%tap1 dev tap1 proto static src 198.51.100.1",
        "2001:db8:1::/64 dev tap0 proto kernel metric 5",
    ]


def test_addr_block() -> None:
    data = [{"ifname": "tap0", "ifindex": 2, "mac": "02:00:00:00:00:02", "mtu": 1500,
             "addresses": [{"address": "2001:db8:1::2", "prefixlen": 64, "scope": "global", "state": "tentative"},
                           {"address": "192.0.2.2", "prefixlen": 24, "scope": "global", "state": "preferred"}]}]
    assert render.addr(data).splitlines() == [
        "2: tap0: mtu 1500",
        "    link/ether 02:00:00:00:00:02",
        "    inet6 2001:db8:1::2/64 scope global tentative",
        "    inet 192.0.2.2/24 scope global preferred",
    ]


def test_sockets_and_stats_are_aligned() -> None:
    text = render.sockets([{"proto": "tcp", "state": "LISTEN", "local": "[::]:7", "remote": None, "recv_q": 0,
                            "send_q": 0}])
    head, row = text.splitlines()
    assert head.index("Local") == row.index("[::]:7")
    stats = render.stats({"ipv6": {"in_receives": 10, "out_requests": 2}, "drops": {},
                          "interfaces": {"tap0": {"rx": 3}}})
    assert "ipv6:\n    in_receives   10\n    out_requests   2" in stats
    assert "drops:\n    (none)" in stats and "interface tap0:" in stats

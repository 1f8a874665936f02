"""Configuration parsing: the good forms, and every error naming file + key path."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from stack.control.config import ConfigError, StackConfig, load_config, parse_config

FULL = """
name = "lab"
forwarding = true

[loopback]
addresses = ["2001:db8:ff::1/128", "198.51.100.1/32"]

[[interface]]
name = "tap0"
mac = "02:00:00:00:00:02"
mtu = 1500
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]
accept_ra = false
optimistic_dad = true
neighbors = [{ address = "fe80::1", mac = "02:00:00:00:00:01" }]

[interface.peer]
netns = "tsk-a"
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
routes = [
  "2001:db8:ff::1/128 via 2001:db8:1::2",
  "198.51.100.1/32 via inet6 fe80::2",
  "default via 2001:db8:1::2 dev tap0 metric 10",
]
nodad = true
sysctl = { accept_dad = 0, accept_ra = 0, router_solicitations = 0 }

[[interface]]
name = "tap1"
addresses = []

[[route]]
to = "203.0.113.0/24"
via = "fe80::2%tap1"
src = "198.51.100.1"

[[route]]
to = "2001:db8:5::/48"
dev = "tap0"

[services]
echo = 7
discard = false
daytime = true

[[forward]]
listen = 2222
to = "127.0.0.1:22"

[[forward]]
listen = 2223
to = "[::1]:22"
"""


def test_full_config_parses() -> None:
    c = parse_config(FULL, "lab.toml")
    assert c.name == "lab" and c.forwarding is True
    tap0, tap1 = c.interfaces
    assert tap0.mac == bytes.fromhex("020000000002")
    assert [str(a) for a in tap0.addresses] == ["2001:db8:1::2/64", "192.0.2.2/24"]
    assert tap0.neighbors[0].address == ipaddress.ip_address("fe80::1")
    assert tap0.peer is not None and tap0.peer.netns == "tsk-a" and tap0.peer.nodad
    assert dict(tap0.peer.sysctl) == {"accept_dad": 0, "accept_ra": 0, "router_solicitations": 0}
    _r0, r1, r2 = tap0.peer.routes
    assert str(r1.dst) == "198.51.100.1/32" and r1.via == ipaddress.ip_address("fe80::2")
    assert str(r2.dst) == "::/0" and r2.dev == "tap0" and r2.metric == 10
    assert tap1.addresses == () and tap1.peer is None
    assert tap0.optimistic_dad is True and tap1.optimistic_dad is False
    rt, onlink = c.routes
    assert rt.via_zone == "tap1" and str(rt.src) == "198.51.100.1"
    assert onlink.via is None and onlink.dev == "tap0"
    assert c.services.enabled() == {"echo": 7, "daytime": 13}
    assert [(f.to_host, f.to_port) for f in c.forwards] == [("127.0.0.1", 22), ("::1", 22)]
    assert c.source_path == "lab.toml"


def test_default_is_interface_md() -> None:
    c = StackConfig.default()
    assert c.name == "tapstack"
    [tap0] = c.interfaces
    assert tap0.name == "tap0"
    assert [str(a) for a in tap0.addresses] == ["2001:db8:1::2/64", "192.0.2.2/24"]
    assert [str(a) for a in c.loopback.addresses] == ["2001:db8:ff::1/128", "198.51.100.1/32"]
    assert tap0.peer is not None and tap0.peer.netns is None
    assert [str(a) for a in tap0.peer.addresses] == ["2001:db8:1::1/64", "192.0.2.1/24"]
    assert {str(r.dst) for r in tap0.peer.routes} == {"2001:db8:ff::1/128", "198.51.100.1/32"}
    assert c.services.enabled() == {"echo": 7, "discard": 9, "daytime": 13, "chargen": 19}


def test_minimal_and_empty() -> None:
    c = parse_config("", "empty.toml")
    assert c.interfaces == () and c.name == "tapstack"
    c = parse_config('[[interface]]\nname = "t0"\naddresses = []\n', "f")
    assert c.interfaces[0].addresses == ()


def test_load_config_reads_file(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(FULL)
    assert load_config(f).source_path == str(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "nope.toml")
    assert str(e.value) == f"{tmp_path / 'nope.toml'}: no such file"


IF = '[[interface]]\nname = "tap0"\n'

BAD = [
    ('name = 5', "name", "expected a string, got integer 5"),
    ('name = "a/b"', "name", "'a/b'"),
    ('forwarding = "yes"', "forwarding", "expected a boolean"),
    ('colour = 1', "colour", "unknown key"),
    ('x = [', "", "TOML syntax error"),
    ('[loopback]\naddresses = ["::1/128", "x"]', "loopback.addresses[1]", "'x' is not an IP prefix"),
    ('[loopback]\nadresses = []', "loopback.adresses", "unknown key"),
    ('interface = 3', "interface", "expected an array of tables"),
    ('[[interface]]\nmtu = 1500', "interface[0].name", "missing"),
    (IF + 'addresses = ["2001:db8::1/64", "x"]', "interface[0].addresses[1]", "'x' is not an IP prefix"),
    (IF + 'addresses = ["2001:db8::1/129"]', "interface[0].addresses[0]", "not an IP prefix"),
    (IF + 'addresses = ["fe80::1%tap0/64"]', "interface[0].addresses[0]", "no %zone"),
    (IF + 'addresses = ["ff02::1/128"]', "interface[0].addresses[0]", "not a unicast"),
    (IF + 'addresses = ["2001:db8::1/64", "2001:db8::1/64"]', "interface[0].addresses[1]", "duplicate"),
    (IF + 'addresses = "2001:db8::1/64"', "interface[0].addresses", "expected an array"),
    (IF + 'mac = "02:00:00:00:00"', "interface[0].mac", "is not a MAC address"),
    (IF + 'mac = "01:00:00:00:00:01"', "interface[0].mac", "multicast"),
    (IF + 'mac = "00:00:00:00:00:00"', "interface[0].mac", "all-zero"),
    (IF + 'mtu = 100', "interface[0].mtu", "out of range"),
    (IF + 'mtu = "1500"', "interface[0].mtu", "expected an integer, got string '1500'"),
    (IF + 'mtu = true', "interface[0].mtu", "expected an integer, got boolean"),
    (IF + 'accept_ra = 1', "interface[0].accept_ra", "expected a boolean"),
    ('busy_poll_us = 20000', "busy_poll_us", "out of range"),
    ('busy_poll_us = -1', "busy_poll_us", "out of range"),
    (IF + 'optimistic_dad = "yes"', "interface[0].optimistic_dad", "expected a boolean"),
    (IF + 'speed = 1', "interface[0].speed", "unknown key"),
    ('[[interface]]\nname = "averyveryverylongname"', "interface[0].name", "longer than 15"),
    ('[[interface]]\nname = "a b"', "interface[0].name", "not a valid interface name"),
    ('[[interface]]\nname = "lo"', "interface[0].name", "loopback"),
    (IF + IF, "interface[1].name", "duplicate interface name 'tap0'"),
    (IF + 'neighbors = [{ address = "fe80::1" }]', "interface[0].neighbors[0].mac", "missing"),
    (IF + 'neighbors = [{ address = "x", mac = "02:00:00:00:00:01" }]', "interface[0].neighbors[0].address",
     "not an IP address"),
    (IF + '[interface.peer]\nnetns = "a b"', "interface[0].peer.netns", "not a valid namespace"),
    (IF + '[interface.peer]\naddresses = ["x"]', "interface[0].peer.addresses[0]", "'x' is not an IP prefix"),
    (IF + '[interface.peer]\nroutes = ["2001:db8::/64 via x"]', "interface[0].peer.routes[0]", "not an IP address"),
    (IF + '[interface.peer]\nroutes = ["2001:db8::/64 gateway ::1"]', "interface[0].peer.routes[0]",
     "unknown word 'gateway'"),
    (IF + '[interface.peer]\nroutes = ["2001:db8::/64 via"]', "interface[0].peer.routes[0]", "needs a value"),
    (IF + '[interface.peer]\nroutes = ["default dev tap0"]', "interface[0].peer.routes[0]", "needs 'via'"),
    (IF + '[interface.peer]\nroutes = ["2001:db8::1/64 via ::1"]', "interface[0].peer.routes[0]", "host bits"),
    (IF + '[interface.peer]\nroutes = ["2001:db8::/64 via 192.0.2.1"]', "interface[0].peer.routes[0]",
     "IPv4 gateway"),
    (IF + '[interface.peer]\nroutes = ["192.0.2.0/24 via inet6 192.0.2.1"]', "interface[0].peer.routes[0]",
     "not an inet6 address"),
    (IF + '[interface.peer]\nsysctl = { "Bad-Key" = 0 }', "interface[0].peer.sysctl.Bad-Key", "not a net.ipv6"),
    (IF + '[interface.peer]\nsysctl = { accept_dad = "0" }', "interface[0].peer.sysctl.accept_dad",
     "expected an integer"),
    (IF + '[interface.peer]\nfoo = 1', "interface[0].peer.foo", "unknown key"),
    (IF + '[[route]]\nvia = "fe80::1"', "route[0].to", "missing"),
    (IF + '[[route]]\nto = "x"\nvia = "fe80::1"', "route[0].to", "'x' is not an IP prefix"),
    (IF + '[[route]]\nto = "2001:db8::/32"', "route[0]", "needs 'via' or 'dev'"),
    (IF + '[[route]]\nto = "2001:db8::/32"\nvia = "2001:db8::1%tap0"', "route[0].via", "only link-local"),
    (IF + '[[route]]\nto = "2001:db8::/32"\nvia = "fe80::1%tap9"', "route[0].via", "no interface named 'tap9'"),
    (IF + '[[route]]\nto = "2001:db8::/32"\ndev = "tap9"', "route[0].dev", "no interface named 'tap9'"),
    (IF + '[[route]]\nto = "2001:db8::/32"\nvia = "fe80::1%tap0"\nsrc = "192.0.2.1"', "route[0].src",
     "family"),
    (IF + '[[interface]]\nname = "tap1"\n[[route]]\nto = "203.0.113.0/24"\nvia = "fe80::1"', "route[0].via",
     "needs a zone"),
    ('[services]\necho = 70000', "services.echo", "out of range"),
    ('[services]\nssh = 22', "services.ssh", "unknown key"),
    ('[services]\necho = "7"', "services.echo", "expected an integer"),
    ('[[forward]]\nlisten = 22', "forward[0].to", "missing"),
    ('[[forward]]\nlisten = 22\nto = "localhost"', "forward[0].to", "HOST:PORT"),
    ('[[forward]]\nlisten = 0\nto = "h:1"', "forward[0].listen", "out of range"),
    ('limits = 3', "limits", "expected a table"),
    ('[limits]\nneighbor_cache_max = -1', "limits.neighbor_cache_max", "out of range"),
]


@pytest.mark.parametrize("text, keypath, problem", BAD, ids=[b[1] or "syntax" for b in BAD])
def test_errors_name_file_key_and_problem(text: str, keypath: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "bad.toml")
    err = e.value
    assert err.file == "bad.toml"
    assert err.keypath == keypath
    assert problem in err.problem
    prefix = f"bad.toml: {keypath}: " if keypath else "bad.toml: "
    assert str(err).startswith(prefix)


def test_exact_message_from_the_contract() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(IF + 'addresses = ["2001:db8::1/64", "x"]', "bad.toml")
    assert str(e.value) == "bad.toml: interface[0].addresses[1]: 'x' is not an IP prefix"


def test_single_interface_link_local_gateway_gets_the_zone() -> None:
    c = parse_config(IF + '[[route]]\nto = "203.0.113.0/24"\nvia = "fe80::1"', "f")
    assert c.routes[0].via_zone == "tap0"


def test_faults_table() -> None:
    c = parse_config(IF + '[interface.faults]\nloss = 0.05\ndelay_ms = 2\nseed = 7\ndirection = "tx"\n', "f")
    f = c.interfaces[0].faults
    assert f is not None and f.loss == 0.05 and f.delay_ms == 2.0 and f.seed == 7 and f.direction == "tx"


@pytest.mark.parametrize("body, keypath, problem", [
    ("loss = 2", "interface[0].faults.loss", "not a probability"),
    ('loss = "x"', "interface[0].faults.loss", "expected a number"),
    ('direction = "up"', "interface[0].faults.direction", "not one of"),
    ("delay_ms = -1", "interface[0].faults.delay_ms", "negative"),
    ("bogus = 1", "interface[0].faults.bogus", "unknown key"),
])
def test_fault_errors(body: str, keypath: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(IF + "[interface.faults]\n" + body + "\n", "f")
    assert e.value.keypath == keypath and problem in e.value.problem


def test_nd_table_reaches_the_core_interface() -> None:
    import random

    from stack.runtime.build import build_stack

    c = parse_config(IF + "[interface.nd]\nbase_reachable_time_ms = 2000\nretrans_timer_ms = 250\n"
                     "delay_first_probe_time_ms = 1500\ngc_stale_time_ms = 9000\n", "f")
    nd = c.interfaces[0].nd
    assert nd is not None and (nd.base_reachable_time_ms, nd.retrans_timer_ms, nd.delay_first_probe_time_ms,
                               nd.gc_stale_time_ms) == (2000, 250, 1500, 9000)
    st = build_stack(c, 0, random.Random(1))
    p = st.interfaces[st.ifindex("tap0")].nd
    assert (p.base_reachable_time, p.retrans_timer, p.delay_first_probe_time, p.gc_stale_time) == (
        2_000_000_000, 250_000_000, 1_500_000_000, 9_000_000_000)
    assert 1_000_000_000 <= p.reachable_time <= 3_000_000_000
    assert parse_config(IF, "f").interfaces[0].nd is None        # absent: the RFC 4861 defaults


@pytest.mark.parametrize("body, keypath, problem", [
    ("base_reachable_time_ms = 0", "interface[0].nd.base_reachable_time_ms", "out of range (100..3600000)"),
    ("retrans_timer_ms = 3600001", "interface[0].nd.retrans_timer_ms", "out of range (10..3600000)"),
    ('delay_first_probe_time_ms = "5s"', "interface[0].nd.delay_first_probe_time_ms", "expected an integer"),
    ("gc_stale_time_ms = 1.5", "interface[0].nd.gc_stale_time_ms", "expected an integer"),
    ("retrans_time_ms = 100", "interface[0].nd.retrans_time_ms", "unknown key"),
])
def test_nd_errors(body: str, keypath: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(IF + "[interface.nd]\n" + body + "\n", "f")
    assert e.value.keypath == keypath and problem in e.value.problem

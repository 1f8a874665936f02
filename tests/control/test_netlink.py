"""PeerSetup against the kernel: namespace, move, sysctl, addresses, routes, undo."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from stack.control.config import parse_config
from stack.control.netlink import PeerSetup, PeerSetupError, namespace_exists
from stack.link.tap import TapLink

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun"), reason="needs root"),
]


def _cfg(tap: str, ns: str, extra: str = "") -> str:
    return f"""
[[interface]]
name = "{tap}"
[interface.peer]
netns = "{ns}"
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
routes = [
  "2001:db8:ff::1/128 via 2001:db8:1::2",
  "198.51.100.1/32 via inet6 fe80::2",
  "203.0.113.0/24 via 192.0.2.2 metric 5",
]
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}
nodad = true
{extra}
"""


def _ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True).stdout


def test_setup_then_cleanup_leaves_nothing() -> None:
    tap, ns = f"tskn{os.getpid() % 100000}", f"tsk-nl-{os.getpid()}"
    cfg = parse_config(_cfg(tap, ns), "t.toml")
    peer = cfg.interfaces[0].peer
    assert peer is not None
    link = TapLink(tap)
    ps = PeerSetup()
    try:
        ps.setup(tap, peer, 1500)
        assert namespace_exists(ns) and ps.created_namespaces == [ns]
        addrs = _ip(ns, "addr", "show", "dev", tap)
        assert "2001:db8:1::1/64" in addrs and "192.0.2.1/24" in addrs and "UP" in addrs
        assert "198.51.100.1 via inet6 fe80::2" in _ip(ns, "-4", "route")
        assert "203.0.113.0/24 via 192.0.2.2" in _ip(ns, "-4", "route")
        assert "2001:db8:ff::1 via 2001:db8:1::2" in _ip(ns, "-6", "route")
        with open(f"/proc/{os.getpid()}/net/dev") as f:
            assert tap not in f.read()                      # moved out of our namespace
        assert ps.wait_settled(timeout=2) == []             # nodad: nothing to wait for
        assert ps.cleanup() == []
        assert "192.0.2.1" not in _ip(ns, "addr", "show", "dev", tap)
    finally:
        ps.cleanup()
        link.close()
        ps.remove_namespaces()
    assert not namespace_exists(ns)


def test_failure_midway_is_undone() -> None:
    tap, ns = f"tskf{os.getpid() % 100000}", f"tsk-nlf-{os.getpid()}"
    bad = _cfg(tap, ns).replace('"203.0.113.0/24 via 192.0.2.2 metric 5"', '"203.0.113.0/24 via 2001:db8:9::9"')
    peer = parse_config(bad, "t.toml").interfaces[0].peer
    assert peer is not None
    link = TapLink(tap)
    ps = PeerSetup()
    try:
        with pytest.raises(PeerSetupError, match=re.escape("peer route '203.0.113.0/24 via 2001:db8:9::9'")):
            ps.setup(tap, peer, 1500)
        ps.cleanup()
        assert "2001:db8:ff::1" not in _ip(ns, "-6", "route")
    finally:
        link.close()
        ps.remove_namespaces()
    assert not namespace_exists(ns)

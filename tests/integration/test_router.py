"""Issue 6 acceptance against the kernel: IPv4 with ARP, IPv4 via IPv6 next hops
(RFC 5549/8950), router mode, ICMP errors and their rate limit.

- The freebsd-net scenario: a host whose only link has just a link-local address,
  IPv4 on the loopback, and a route to a v4 host via an IPv6 link-local next hop.
  A TCP client in the stack reaches a server in the peer namespace, which sees the
  loopback address (or the route's ``src``) as the source.
- Router mode between two namespaces (ns0 - tap0 - stack - tap1 - ns1, tap1 link-local
  only): ping -4/-6, traceroute -4 (the stack's IPv4 address as the hop, or 192.0.0.8
  without one), traceroute6, Packet Too Big, Fragmentation Needed, a link-local
  source that must not be forwarded.
- The ICMP error token bucket under a flood, seen from both sides.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.integration.conftest import Factory, StackProcess, wait_for
from tests.integration.tracing import Trace, fields

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("traceroute") is None or shutil.which("traceroute6") is None,
                       reason="traceroute not installed (scripts/setup.sh installs it)"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="nftables not installed"),
]

QUIET = "sysctl = {{ accept_ra = 0, router_solicitations = 0 }}"
STACK_LL0 = "fe80::ff:fe00:2"         # from mac 02:00:00:00:00:02
STACK_LL1 = "fe80::ff:fe00:101"       # from mac 02:00:00:00:01:01

# -- 1. the freebsd-net scenario: link-local only link, IPv4 on lo ----------------------

LL_ONLY_HOST = """
name = "{name}"
[loopback]
addresses = ["198.51.100.1/32", "198.51.100.7/32"]

[[interface]]
name = "{tap1}"
mac = "02:00:00:00:01:01"
addresses = []

[interface.peer]
netns = "{ns1}"
addresses = ["fe80::2/64", "203.0.113.2/32"]
routes = ["198.51.100.0/24 via inet6 fe80::ff:fe00:101"]
nodad = true
""" + QUIET + """

[[route]]
to = "203.0.113.2/32"
via = "fe80::2%{tap1}"
"""

SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("203.0.113.2", int(sys.argv[1])))
s.listen(4)
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    c, peer = s.accept()
    print(peer[0], flush=True)
    c.sendall(("you are " + peer[0] + "\n").encode())
    c.close()
"""


def read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    """One stdout line of proc within timeout (select, no sleeps)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no {what} within {timeout}s (got {buf!r})")
        ch = os.read(fd, 1)
        if not ch:
            raise AssertionError(f"{what}: process ended ({proc.poll()}) after {buf!r}")
        buf += ch
    return buf.decode().strip()


@contextmanager
def ns_process(ns: str, argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a namespace, killed by its PID (and reaped) whatever happens."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_v4_via_v6_from_a_link_local_only_host(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(LL_ONLY_HOST)
    got = json.loads(sp.tapstack("-j", "route", "get", "203.0.113.2").stdout)
    assert got["dev"] == sp["tap1"] and got["src"] == "198.51.100.1", got
    assert got["gateway"] == f"fe80::2%{sp['tap1']}", got
    with ns_process(sp["ns1"], [sys.executable, "-c", SERVER, "8007", "2"]) as server:
        assert read_line(server, 10, "listening line") == "listening"
        # loopback address chosen: route src -> egress (none: link-local only) -> lo
        r = sp.tapstack("connect", "-w", "5", "203.0.113.2", "8007", input="")
        assert r.stdout == "you are 198.51.100.1\n", r
        assert read_line(server, 5, "server's peer line") == "198.51.100.1"
        # the route's src wins over the loopback order
        sp.tapstack("route", "del", "203.0.113.2/32")
        sp.tapstack("route", "add", "203.0.113.2/32", "via", f"fe80::2%{sp['tap1']}", "src", "198.51.100.7")
        r = sp.tapstack("connect", "-w", "5", "203.0.113.2", "8007", input="")
        assert r.stdout == "you are 198.51.100.7\n", r
        assert read_line(server, 5, "server's peer line") == "198.51.100.7"
    # the stack's own ping over the same v4-via-v6 route; `tapstack trace` shows the
    # decision: IPv6 link-local next hop, IPv4 source from the route
    trace = Trace(sp)
    try:
        trace.mark()
        r = sp.tapstack("ping", "-c", "2", "-i", "0.2", "-W", "2", "203.0.113.2")
        lines = trace.mark()
    finally:
        trace.close()
    assert "2 received" in r.stdout, r.stdout
    assert re.search(r"from 203\.0\.113\.2: icmp_seq=1 ttl=64", r.stdout), r.stdout
    out = [f for f in map(fields, lines) if f["probe"] == "ip_output" and f.get("dst") == "203.0.113.2"]
    assert len(out) == 2, lines
    for f in out:
        assert (f["ifp"], f["nexthop"], f["src"], f["proto"]) == \
            (sp["tap1"], f"fe80::2%{sp['tap1']}", "198.51.100.7", "icmp"), f
    # the next hop was resolved by ND; no ARP entry (the link has no IPv4 at all)
    neigh = json.loads(sp.tapstack("-j", "neigh").stdout)
    assert [(n["dst"], n["dev"]) for n in neigh] == [("fe80::2", sp["tap1"])], neigh
    stats = json.loads(sp.tapstack("-j", "stats").stdout)
    assert stats["tcp"]["active_opens"] == 2 and "arp" not in stats, stats


# -- 2. router mode: ns0 - tap0 - stack - tap1 (link-local only, MTU 1280) - ns1 --------

TAP1_LL_ONLY = """
[[interface]]
name = "{tap1}"
mac = "02:00:00:00:01:01"
mtu = 1280
addresses = []

[interface.peer]
netns = "{ns1}"
addresses = ["fe80::2/64", "2001:db8:2::1/64", "203.0.113.2/24"]
routes = ["2001:db8:1::/64 via fe80::ff:fe00:101", "192.0.2.0/24 via inet6 fe80::ff:fe00:101"]
nodad = true
""" + QUIET + """

[[route]]
to = "2001:db8:2::/64"
via = "fe80::2%{tap1}"

[[route]]
to = "203.0.113.0/24"
via = "fe80::2%{tap1}"
"""

# The stack has IPv4 on tap0 (ARP with ns0), none on tap1 (RFC 8950 next hop).
ROUTER = """
name = "{name}"
forwarding = true

[[interface]]
name = "{tap0}"
mac = "02:00:00:00:00:02"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]

[interface.peer]
netns = "{ns0}"
addresses = ["fe80::1/64", "2001:db8:1::1/64", "192.0.2.1/24"]
routes = ["2001:db8:2::/64 via 2001:db8:1::2", "203.0.113.0/24 via 192.0.2.2"]
nodad = true
""" + QUIET + TAP1_LL_ONLY

# The stack has no IPv4 address at all: IPv4 via IPv6 next hops on both sides.
ROUTER_NO_V4 = """
name = "{name}"
forwarding = true

[[interface]]
name = "{tap0}"
mac = "02:00:00:00:00:02"
addresses = ["2001:db8:1::2/64"]

[interface.peer]
netns = "{ns0}"
addresses = ["fe80::1/64", "2001:db8:1::1/64", "192.0.2.1/24"]
routes = ["2001:db8:2::/64 via 2001:db8:1::2", "203.0.113.0/24 via inet6 fe80::ff:fe00:2"]
nodad = true
""" + QUIET + """

[[route]]
to = "192.0.2.0/24"
via = "fe80::1%{tap0}"
""" + TAP1_LL_ONLY


def hops(out: str) -> list[str]:
    """The address of each hop line of `traceroute -n -q 1` (``*`` when none)."""
    found = []
    for line in out.splitlines()[1:]:
        m = re.match(r"\s*\d+\s+(\S+)", line)
        if m:
            found.append(m.group(1))
    return found


def stats(sp: StackProcess) -> dict[str, Any]:
    return dict(json.loads(sp.tapstack("-j", "stats").stdout))


def test_router_ping_traceroute_and_arp(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER)
    out = sp.run_in_ns(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:2::1"]).stdout
    assert "2 received" in out and "ttl=63" in out, out
    out = sp.run_in_ns(["ping", "-4", "-c", "2", "-i", "0.2", "-W", "2", "203.0.113.2"]).stdout
    assert "2 received" in out and "ttl=63" in out, out
    # ARP on tap0: the kernel knows the stack's MAC for 192.0.2.2, the stack knows ns0's
    out = sp.run_in_ns(["ip", "-4", "neigh", "show", "dev", sp["tap0"]]).stdout
    assert re.search(r"^192\.0\.2\.2 lladdr 02:00:00:00:00:02 ", out, re.M), out
    link = json.loads(sp.run_in_ns(["ip", "-j", "link", "show", "dev", sp["tap0"]]).stdout)[0]
    neigh = json.loads(sp.tapstack("-j", "neigh").stdout)
    arp = [n for n in neigh if n["dst"] == "192.0.2.1"]
    assert len(arp) == 1 and arp[0]["dev"] == sp["tap0"] and arp[0]["lladdr"] == link["address"], neigh
    assert arp[0]["state"] in ("REACHABLE", "STALE", "DELAY", "PROBE"), arp
    assert any(n["dst"] == "fe80::2" and n["dev"] == sp["tap1"] for n in neigh), neigh
    # traceroute -4 through the v4-via-v6 hop: the stack answers from its tap0 address
    out = sp.run_in_ns(["traceroute", "-4", "-n", "-q", "1", "-w", "2", "-m", "3", "203.0.113.2"]).stdout
    assert hops(out) == ["192.0.2.2", "203.0.113.2"], out
    out = sp.run_in_ns(["traceroute6", "-n", "-q", "1", "-w", "2", "-m", "3", "2001:db8:2::1"]).stdout
    assert hops(out) == ["2001:db8:1::2", "2001:db8:2::1"], out
    st = stats(sp)
    assert st["icmp"]["out_errors_11_0"] >= 1 and st["icmp6"]["out_errors_3_0"] >= 1, st
    assert st["ipv4"]["out_forwarded"] >= 4 and st["ipv6"]["out_forwarded"] >= 4, st


def test_router_packet_too_big_and_frag_needed(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER)
    # DF clear (before the kernel learns the path MTU): the stack fragments for tap1
    out = sp.run_in_ns(["ping", "-4", "-c", "1", "-s", "1400", "-M", "dont", "-W", "2", "203.0.113.2"]).stdout
    assert "1 received" in out, out
    assert stats(sp)["ipv4"]["out_frag_creates"] == 2
    # 1400 + 48 > tap1's 1280: Packet Too Big with the MTU (RFC 4443 §3.2)
    r = sp.run_in_ns(["ping", "-6", "-c", "1", "-s", "1400", "-M", "do", "-W", "2", "2001:db8:2::1"],
                     check=False)
    assert r.returncode == 1 and "From 2001:db8:1::2 icmp_seq=1 Packet too big: mtu=1280" in r.stdout, r
    # DF set, 1428 > 1280: Fragmentation Needed with the next-hop MTU (RFC 1191 §4)
    r = sp.run_in_ns(["ping", "-4", "-c", "1", "-s", "1400", "-M", "do", "-W", "2", "203.0.113.2"],
                     check=False)
    assert r.returncode == 1 and "From 192.0.2.2 icmp_seq=1 Frag needed and DF set (mtu = 1280)" in r.stdout, r
    # the kernel learned both path MTUs
    out = sp.run_in_ns(["ip", "-6", "route", "get", "2001:db8:2::1"]).stdout
    assert "mtu 1280" in out, out
    out = sp.run_in_ns(["ip", "-4", "route", "get", "203.0.113.2"]).stdout
    assert "mtu 1280" in out, out
    st = stats(sp)
    assert st["icmp6"]["out_errors_2_0"] == 1 and st["drops"]["ipv6_too_big"] == 1, st
    assert st["icmp"]["out_errors_3_4"] == 1 and st["drops"]["ipv4_needs_frag"] == 1, st


def test_traceroute_shows_192_0_0_8_without_ipv4_address(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER_NO_V4)
    out = sp.run_in_ns(["ping", "-4", "-c", "1", "-W", "2", "203.0.113.2"]).stdout
    assert "1 received" in out, out
    out = sp.run_in_ns(["traceroute", "-4", "-n", "-q", "1", "-w", "2", "-m", "3", "203.0.113.2"]).stdout
    assert hops(out) == ["192.0.0.8", "203.0.113.2"], out
    r = sp.run_in_ns(["ping", "-4", "-c", "1", "-s", "1400", "-M", "do", "-W", "2", "203.0.113.2"],
                     check=False)
    assert "From 192.0.0.8 icmp_seq=1 Frag needed and DF set (mtu = 1280)" in r.stdout, r
    addrs = json.loads(sp.tapstack("-j", "addr").stdout)
    assert not [a for i in addrs for a in i["addresses"] if a["family"] == "inet" and i["ifname"] != "lo"
                and not a["address"].startswith("127.")], addrs


NFT_COUNT = """
table inet tsk {
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    icmpv6 type echo-request icmpv6 id 16962 counter
    ip6 saddr fe80::/10 icmpv6 type echo-request icmpv6 id 16962 counter
  }
}
"""

LL_PROBE = r"""
import sys
from scapy.all import Ether, IPv6, ICMPv6EchoRequest, ICMPv6EchoReply, ICMPv6DestUnreach, conf, srp1
iface, mac = sys.argv[1], sys.argv[2]
conf.verb = 0
for seq, src in enumerate(["2001:db8:1::1", "fe80::1"]):
    p = Ether(dst=mac) / IPv6(src=src, dst="2001:db8:2::1", hlim=64) / ICMPv6EchoRequest(id=0x4242, seq=seq)
    ans = srp1(p, iface=iface, timeout=3)
    if ans is None:
        print(src, "none")
    elif ICMPv6EchoReply in ans:
        print(src, "reply", ans[IPv6].src)
    elif ICMPv6DestUnreach in ans:
        print(src, "unreach", ans[ICMPv6DestUnreach].code, ans[IPv6].src)
    else:
        print(src, "other", ans.summary())
"""


def nft_counters(sp: StackProcess, ns: str) -> list[int]:
    """Packets counted by each rule of the test's nft table, in order."""
    out = json.loads(sp.run_in_ns(["nft", "-j", "list", "table", "inet", "tsk"], ns).stdout)
    return [e["counter"]["packets"] for item in out["nftables"] if "rule" in item
            for e in item["rule"]["expr"] if "counter" in e]


def test_link_local_source_is_not_forwarded(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER)
    sp.run_in_ns(["nft", "-f", "-"], sp["ns1"], input=NFT_COUNT)
    assert nft_counters(sp, sp["ns1"]) == [0, 0]
    out = sp.run_in_ns([sys.executable, "-c", LL_PROBE, sp["tap0"], "02:00:00:00:00:02"]).stdout
    lines = out.splitlines()
    # positive control: a global source crosses the stack, ns1 counts and answers it
    assert lines[0] == "2001:db8:1::1 reply 2001:db8:2::1", out
    # RFC 4007 §9: the link-local source is refused with "beyond scope of source" (code 2),
    # sent from the stack's link-local address (RFC 6724 rule 2: the destination's scope)
    assert lines[1] == f"fe80::1 unreach 2 {STACK_LL0}", out
    assert nft_counters(sp, sp["ns1"]) == [1, 0]
    st = stats(sp)
    assert st["drops"]["ipv6_beyond_scope"] == 1 and st["icmp6"]["out_errors_1_2"] == 1, st


# -- 3. the ICMP error token bucket under a flood -----------------------------------------

NFT_ERRORS = """
table inet tsk {
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    icmpv6 type destination-unreachable icmpv6 code port-unreachable counter
    icmp type destination-unreachable icmp code port-unreachable counter
  }
}
"""

FLOOD = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)      # unconnected: errors do not stop sendto
for i in range(int(sys.argv[2])):
    s.sendto(b"flood %d" % i, (sys.argv[1], 9))
"""


def test_icmp_errors_are_rate_limited_under_a_flood(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ROUTER)
    sp.run_in_ns(["nft", "-f", "-"], input=NFT_ERRORS)
    n = 500
    burst, rate = 50, 100.0           # Limits.icmp_error_burst / icmp_error_rate (defaults)
    for i, (dst, family, sent_key) in enumerate((("2001:db8:1::2", "icmp6", "out_errors_1_4"),
                                                 ("192.0.2.2", "icmp", "out_errors_3_3"))):
        before = stats(sp)
        drops0 = before["drops"]
        t0 = time.monotonic()
        sp.run_in_ns([sys.executable, "-c", FLOOD, dst, str(n)])

        def processed(drops0: dict[str, int] = drops0) -> dict[str, Any] | None:
            st = stats(sp)
            done = st["drops"].get("udp_no_port", 0) - drops0.get("udp_no_port", 0)
            return st if done >= n else None

        after = wait_for(f"the stack to see all {n} datagrams to {dst}", processed)
        elapsed = time.monotonic() - t0
        sent = after[family].get(sent_key, 0) - before.get(family, {}).get(sent_key, 0)
        limited = after["drops"].get("icmp_error_rate_limited", 0) - drops0.get("icmp_error_rate_limited", 0)
        # every datagram got its error or a counted rate-limit drop; the errors sent are
        # bounded by the bucket: the burst plus the rate over the time the flood took
        assert sent + limited == n, (sent, limited, after)
        assert burst <= sent <= burst + rate * elapsed + 1, (sent, elapsed)
        assert limited >= n - burst - rate * elapsed - 1, (limited, elapsed)
        # the kernel received exactly what the stack says it sent
        wait_for(f"{sent} port unreachables in {sp['ns0']}", lambda i=i, sent=sent: nft_counters(sp, sp["ns0"])[i] == sent)


# -- 4. an ICMPv4 Redirect from a Linux router, honoured by the stack as a host -----------

HOST_BEHIND_LINUX = """
name = "{name}"

[[interface]]
name = "{tap0}"
mac = "02:00:00:00:00:02"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]

[interface.peer]
netns = "{ns0}"
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
routes = ["203.0.113.0/24 via 192.0.2.3"]
nodad = true
""" + QUIET + """

[[route]]
to = "203.0.113.0/24"
via = "192.0.2.1"
"""


def test_redirect_from_the_linux_router_is_honoured(tapstack_factory: Factory) -> None:
    """ns0 routes 203.0.113.0/24 back out the same link to 192.0.2.3 (a static
    neighbor there), so Linux sends the stack a Host Redirect (RFC 1812 §5.2.7.2)."""
    sp = tapstack_factory(HOST_BEHIND_LINUX)
    tap = sp["tap0"]
    sp.run_in_ns(["ip", "neigh", "replace", "192.0.2.3", "lladdr", "02:00:00:00:00:33", "dev", tap, "nud",
                  "permanent"])
    sp.run_in_ns(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=1",
                  f"net.ipv4.conf.{tap}.send_redirects=1"])
    got = json.loads(sp.tapstack("-j", "route", "get", "203.0.113.9").stdout)
    assert got["gateway"] == "192.0.2.1", got
    sp.tapstack("connect", "-u", "-w", "1", "203.0.113.9", "9", input="to the far side\n", check=False)

    def redirected() -> dict[str, Any] | None:
        got = json.loads(sp.tapstack("-j", "route", "get", "203.0.113.9").stdout)
        return got if got["gateway"] == "192.0.2.3" else None

    got = wait_for("the Redirect to take effect (route get 203.0.113.9 via 192.0.2.3)", redirected, 5)
    assert got["dev"] == tap and got["src"] == "192.0.2.2", got
    routes = json.loads(sp.tapstack("-j", "route").stdout)
    assert [(r["dst"], r["gateway"], r["proto"]) for r in routes if r["proto"] == "redirect"] == \
        [("203.0.113.9/32", "192.0.2.3", "redirect")], routes
    st = stats(sp)
    assert st["icmp"]["in_type_5"] >= 1 and st["icmp"]["in_redirects_accepted"] == 1, st
    # only that destination moved
    got = json.loads(sp.tapstack("-j", "route", "get", "203.0.113.10").stdout)
    assert got["gateway"] == "192.0.2.1", got

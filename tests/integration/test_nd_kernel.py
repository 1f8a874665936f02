"""Issue 3 acceptance: Neighbor Discovery against the real Linux kernel.

The kernel in the peer namespace is the other node: it answers the stack's NS,
keeps its own neighbor cache, holds a duplicate of the stack's address, and
(through scapy) sends an RA and hand-made NS. States are observed with
``tapstack -j neigh|addr|route|stats`` polled until a condition holds, with a
deadline and the last answer in the failure message.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.integration.conftest import ONE_TAP, STACK_LL, Factory, StackProcess

pytestmark = pytest.mark.netns

T = TypeVar("T")
KERNEL = "2001:db8:1::1"
STACK = "2001:db8:1::2"

# Short ND timers so a whole NUD cycle takes a few seconds: ReachableTime is
# random in [0.5, 1.5] x 3000 ms (long enough to see REACHABLE after a CLI round
# trip), DELAY lasts 1500 ms, probes 1000 ms apart.
FAST_ND = """
[interface.nd]
base_reachable_time_ms = 3000
retrans_timer_ms = 1000
delay_first_probe_time_ms = 1500
"""


def with_nd(config: str, nd: str = FAST_ND) -> str:
    """ONE_TAP-style config with an [interface.nd] table for the (first) interface."""
    head, sep, peer = config.partition("\n[interface.peer]")
    return head + nd + sep + peer


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 10.0, every: float = 0.05) -> T:
    """Re-run fn until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def jq(sp: StackProcess, *args: str) -> Any:
    return json.loads(sp.tapstack("-j", *args).stdout)


def neigh_entry(sp: StackProcess, dst: str) -> dict[str, Any] | None:
    return next((n for n in jq(sp, "neigh") if n["dst"] == dst), None)


def drops(sp: StackProcess) -> dict[str, int]:
    return dict(jq(sp, "stats")["drops"])


def kernel_link(sp: StackProcess, ns: str | None = None, tap: str | None = None) -> tuple[str, str]:
    """(MAC, link-local address) of the kernel side of a TAP."""
    ns, tap = ns or sp["ns0"], tap or sp["tap0"]
    link = json.loads(sp.run_in_ns(["ip", "-j", "link", "show", "dev", tap], ns).stdout)[0]
    info = json.loads(sp.run_in_ns(["ip", "-j", "-6", "addr", "show", "dev", tap, "scope", "link"], ns).stdout)
    lls = [a["local"] for i in info for a in i.get("addr_info", []) if "local" in a]
    assert lls, info
    return link["address"], lls[0]


def scapy_in_ns(sp: StackProcess, script: str, ns: str | None = None, timeout: float = 30) -> str:
    """Run a scapy script in a peer namespace (the venv's Python); its stdout."""
    prelude = "import json, sys\nfrom scapy.all import *\nconf.verb = 0\n"
    return sp.run_in_ns([sys.executable, "-c", prelude + script], ns, timeout=timeout).stdout


# -- 1-3: resolution, the NUD cycle, address unreachable ---------------------------------------


def test_first_ping_is_queued_then_nud_cycle_then_flush_and_address_unreachable(
        tapstack_factory: Factory) -> None:
    sp = tapstack_factory(with_nd(ONE_TAP))
    tap = sp["tap0"]
    kmac, _ = kernel_link(sp)
    assert neigh_entry(sp, KERNEL) is None, jq(sp, "neigh")

    # 1. The first echo request waits on the INCOMPLETE entry and is sent when the NA comes.
    r = sp.tapstack("ping", "-c", "1", "-W", "5", KERNEL, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"from {KERNEL}: icmp_seq=1 " in r.stdout, r.stdout
    assert "1 packets transmitted, 1 received" in r.stdout, r.stdout
    e = neigh_entry(sp, KERNEL)
    assert e is not None and e["lladdr"] == kmac and e["dev"] == tap, e

    # 2. REACHABLE -> STALE (ReachableTime) -> DELAY (we send) -> PROBE (no upper-layer
    # confirmation within DELAY_FIRST_PROBE_TIME) -> REACHABLE (the kernel's NA).
    # The kernel answers a unicast probe within a millisecond, too fast to see PROBE by
    # polling; so its input drops unicast NS to its address until PROBE has been seen.
    ns0 = sp["ns0"]
    table = "tsk_nd"                         # in our own namespace: no clash possible
    sp.run_in_ns(["nft", "-f", "-"], ns0, input=(
        f"table ip6 {table} {{\n  chain input {{\n    type filter hook input priority 0;\n"
        f"    icmpv6 type nd-neighbor-solicit ip6 daddr {KERNEL} counter drop\n  }}\n}}\n"))
    seen: list[str] = []
    pinger: subprocess.Popen[str] | None = None
    dropping = True
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            cur = neigh_entry(sp, KERNEL)
            state = cur["state"] if cur is not None else "NONE"
            if not seen or seen[-1] != state:
                seen.append(state)
            if state == "STALE" and pinger is None:
                pinger = subprocess.Popen(
                    [sys.executable, "-m", "stack", "ping", "-c", "1", "-W", "5", KERNEL, "--name", sp.name],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if state == "PROBE" and dropping:
                sp.run_in_ns(["nft", "delete", "table", "ip6", table], ns0)
                dropping = False
            if seen[-2:] == ["PROBE", "REACHABLE"]:
                break
    finally:
        if dropping:
            sp.run_in_ns(["nft", "delete", "table", "ip6", table], ns0, check=False)
        if pinger is not None:
            out, _ = pinger.communicate(timeout=10)
    assert pinger is not None and pinger.returncode == 0, (seen, out if pinger else None)
    it = iter(seen)
    assert all(s in it for s in ("REACHABLE", "STALE", "DELAY", "PROBE", "REACHABLE")), seen
    assert "NONE" not in seen and "INCOMPLETE" not in seen, seen
    print(f"NUD states seen by polling `tapstack -j neigh`: {' -> '.join(seen)}")

    # 3. The kernel's address goes away; a flush forgets the entry; resolution then fails.
    sp.run_in_ns(["ip", "addr", "del", f"{KERNEL}/64", "dev", tap], ns0)
    flushed = sp.tapstack("neigh", "flush", "dev", tap)
    assert flushed.stdout == "" and flushed.stderr == ""
    # (the kernel may re-create an entry for its link-local at once by soliciting us)
    assert neigh_entry(sp, KERNEL) is None, jq(sp, "neigh")
    r = sp.tapstack("ping", "-c", "1", "-W", "10", KERNEL, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"From {STACK} icmp_seq=1 Destination unreachable: Address unreachable" in r.stdout, r.stdout
    assert "1 packets transmitted, 0 received, +1 errors" in r.stdout, r.stdout
    assert drops(sp).get("nd_resolution_failed") == 1
    assert neigh_entry(sp, KERNEL) is None


# -- 4: DAD against a kernel that holds our address ------------------------------------------


def test_duplicate_of_our_address_on_the_kernel_side_is_detected(tapstack_factory: Factory) -> None:
    dup = ONE_TAP.replace('addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]',
                          'addresses = ["2001:db8:1::1/64", "2001:db8:1::2/64", "192.0.2.1/24"]\nnodad = true'
                          ).replace('  "2001:db8:ff::1/128 via 2001:db8:1::2",\n', '')
    assert "nodad" in dup and "via 2001:db8:1::2" not in dup
    sp = tapstack_factory(dup)
    addrs = jq(sp, "addr")
    tap0 = next(i for i in addrs if i["ifname"] == sp["tap0"])
    states = {a["address"]: a["state"] for a in tap0["addresses"]}
    assert states[STACK] == "duplicated", states
    assert states[STACK_LL] == "preferred", states            # the link-local passed DAD
    assert f"duplicate address {STACK} detected" in sp.stderr()
    assert f"inet6 {STACK}/64 scope global duplicated" in sp.tapstack("addr").stdout


# -- 4b: Optimistic DAD (RFC 4429): usable right after the ready line --------------------------


OPTIMISTIC_TAP = ONE_TAP.replace('addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]',
                                 'addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]\noptimistic_dad = true'
                                 ).replace('addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]',
                                           'addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]\nnodad = true')


def test_optimistic_dad_global_address_answers_the_kernel_right_after_ready(
        tapstack_factory: Factory) -> None:
    assert "optimistic_dad = true" in OPTIMISTIC_TAP and "nodad = true" in OPTIMISTIC_TAP
    sp = tapstack_factory(OPTIMISTIC_TAP)
    # At once, with no wait: the kernel resolves our address (our NA: Override clear,
    # RFC 4429 §3.3) and gets its echo answered.
    out = sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", STACK]).stdout
    assert "1 received" in out
    nd = jq(sp, "stats")["nd"]
    assert nd.get("out_na_optimistic", 0) >= 1, nd          # it was still optimistic then
    assert drops(sp).get("ipv6_tentative_dst", 0) == 0

    def state() -> str | None:
        tap0 = next(i for i in jq(sp, "addr") if i["ifname"] == sp["tap0"])
        st = {a["address"]: a["state"] for a in tap0["addresses"]}[STACK]
        return st if st == "preferred" else None
    wait_for("DAD to end", state, timeout=10)                # then preferred, as without ODAD


def test_optimistic_dad_still_detects_a_duplicate_held_by_the_kernel(tapstack_factory: Factory) -> None:
    dup = OPTIMISTIC_TAP.replace('addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]',
                                 'addresses = ["2001:db8:1::1/64", "2001:db8:1::2/64", "192.0.2.1/24"]'
                                 ).replace('  "2001:db8:ff::1/128 via 2001:db8:1::2",\n', '')
    assert "2001:db8:1::2/64\", \"192.0.2.1/24" in dup
    sp = tapstack_factory(dup)

    def state() -> str | None:
        tap0 = next(i for i in jq(sp, "addr") if i["ifname"] == sp["tap0"])
        st = {a["address"]: a["state"] for a in tap0["addresses"]}[STACK]
        return st if st != "optimistic" else None
    assert wait_for("DAD to end", state, timeout=10) == "duplicated"
    assert f"duplicate address {STACK} detected" in sp.stderr()


# -- 5: RA -> SLAAC address and default route; RS at start --------------------------------------


RA_TAP = ONE_TAP.replace('addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]',
                         'addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]\naccept_ra = true')


def test_ra_from_the_kernel_side_gives_slaac_address_and_default_route(
        tapstack_factory: Factory, tmp_path: Path) -> None:
    assert RA_TAP != ONE_TAP
    pcap_dir = tmp_path / "pcap"
    sp = tapstack_factory(RA_TAP, "--pcap", str(pcap_dir))
    tap = sp["tap0"]
    kmac, kll = kernel_link(sp)

    def rs_sent() -> list[Any]:
        from scapy.layers.inet6 import ICMPv6ND_RS
        from scapy.utils import rdpcap

        path = pcap_dir / f"{tap}.pcap"
        if not path.exists():
            return []
        return [p for p in rdpcap(str(path)) if ICMPv6ND_RS in p]

    [rs, *_] = wait_for("a Router Solicitation in the daemon's pcap", rs_sent, timeout=5)
    # §6.3.7: from the link-local, or from :: (no SLLAO) while it is still tentative
    assert rs["IPv6"].dst == "ff02::2" and rs["IPv6"].hlim == 255 and rs["IPv6"].src in (STACK_LL, "::"), rs

    scapy_in_ns(sp, f"""
ra = (Ether(src="{kmac}", dst="33:33:00:00:00:01") /
      IPv6(src="{kll}", dst="ff02::1", hlim=255) /
      ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr="{kmac}") /
      ICMPv6NDOptPrefixInfo(prefix="2001:db8:5::", prefixlen=64, L=1, A=1,
                            validlifetime=86400, preferredlifetime=14400))
sendp(ra, iface="{tap}")
""")

    def slaac() -> list[dict[str, Any]]:
        tap0 = next(i for i in jq(sp, "addr") if i["ifname"] == tap)
        return [a for a in tap0["addresses"] if a["address"].startswith("2001:db8:5:")
                and a["state"] == "preferred"]

    [a] = wait_for("a preferred SLAAC address in 2001:db8:5::/64", slaac, timeout=10)
    assert a["prefixlen"] == 64 and a["origin"] == "slaac", a
    stack_iid = STACK_LL.split("::")[1]
    assert a["address"] == f"2001:db8:5::{stack_iid}", a       # modified EUI-64 of STACK_MAC
    routes = jq(sp, "route")
    default = [r for r in routes if r["dst"] in ("::/0", "default") and r["family"] == "inet6"]
    assert [(r["gateway"], r["dev"], r["proto"]) for r in default] == [(f"{kll}%{tap}", tap, "ra")], default
    assert any(r["dst"] == "2001:db8:5::/64" and r["gateway"] is None for r in routes), routes
    # the new address works against the kernel (it has the prefix from its own address list)
    sp.run_in_ns(["ip", "addr", "add", "2001:db8:5::1/64", "dev", tap, "nodad"])
    out = sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "3", a["address"]]).stdout
    assert "1 received" in out


# -- 6: NS hop limit ----------------------------------------------------------------------------


def test_ns_with_hop_limit_254_is_dropped_and_255_is_answered(one_tap: StackProcess) -> None:
    sp = one_tap
    tap = sp["tap0"]
    kmac, kll = kernel_link(sp)
    before = drops(sp).get("nd_bad_hop_limit", 0)
    # Both NS in one go, the 254 one first with another source so that its answer
    # (if any) would be told apart; the stack handles frames in order, so once the
    # answer to the second has arrived the first one was dealt with.
    out = scapy_in_ns(sp, f"""
def ns(src, hlim):
    return (Ether(src="{kmac}", dst="33:33:ff:00:00:02") /
            IPv6(src=src, dst="ff02::1:ff00:2", hlim=hlim) /
            ICMPv6ND_NS(tgt="{STACK}") / ICMPv6NDOptSrcLLAddr(lladdr="{kmac}"))
import threading
got, ready = [], threading.Event()
sn = AsyncSniffer(iface="{tap}", lfilter=lambda p: ICMPv6ND_NA in p, prn=lambda p: got.append(p[IPv6].dst),
                  stop_filter=lambda p: ICMPv6ND_NA in p and p[IPv6].dst == "{KERNEL}",
                  started_callback=ready.set)
sn.start()
ready.wait(5)
sendp([ns("{kll}", 254), ns("{KERNEL}", 255)], iface="{tap}")
sn.join(timeout=10)
if sn.running:
    sn.stop()
print(json.dumps(got))
""")
    answered = json.loads(out.strip().splitlines()[-1])
    assert answered == [KERNEL], answered
    assert drops(sp).get("nd_bad_hop_limit", 0) == before + 1


# -- 7: a neighbor flood through the forwarding stack -----------------------------------------------


FLOOD = ONE_TAP.replace('name = "{name}"', 'name = "{name}"\nforwarding = true').replace(
    '  "198.51.100.1/32 via inet6 fe80::ff:fe00:2",\n]',
    '  "198.51.100.1/32 via inet6 fe80::ff:fe00:2",\n  "2001:db8:2::/64 via 2001:db8:1::2",\n]') + """
[[interface]]
name = "{tap1}"
mac = "02:00:00:00:01:01"
addresses = ["2001:db8:2::2/64"]

[interface.peer]
netns = "{ns1}"
addresses = ["2001:db8:2::1/64"]
routes = ["2001:db8:1::/64 via 2001:db8:2::2"]
nodad = true
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}

[limits]
neighbor_cache_max = 64
"""


def test_neighbor_flood_keeps_the_cache_bounded_and_the_stack_answering(tapstack_factory: Factory) -> None:
    assert "2001:db8:2::/64 via" in FLOOD and "forwarding = true" in FLOOD
    sp = tapstack_factory(FLOOD)
    out = sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "3", "2001:db8:2::1"]).stdout   # forwarded
    assert "1 received" in out
    # 5000 datagrams from the kernel in ns0, each to another address on tap1's /64 (a
    # TAP queue long enough for all of them, so that every one reaches the stack).
    sp.run_in_ns(["ip", "link", "set", "dev", sp["tap0"], "txqueuelen", "10000"])
    sent = sp.run_in_ns([sys.executable, "-c", """
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sent = 0
for i in range(5000):
    try:
        s.sendto(b"x", ("2001:db8:2::%x:%x" % (1 + i // 4096, i % 4096 + 16), 9))
        sent += 1
    except OSError:
        pass
print(sent)
"""]).stdout.strip()

    def handled() -> dict[str, Any] | None:
        # Each datagram ends on an INCOMPLETE entry's queue, then is dropped with it when the
        # entry is evicted for a newer one or fails after 3 NS (RFC 4861 §7.2.2).
        st = jq(sp, "stats")
        waiting = sum(n["queued"] for n in jq(sp, "neigh") if n["dst"].startswith("2001:db8:2::"))
        done = st["drops"]["nd_cache_full"] + st["drops"]["nd_resolution_failed"] + waiting
        return st if done >= 5000 else None

    stats = wait_for("all 5000 datagrams to be queued or dropped by the neighbor cache", handled,
                     timeout=30, every=0.2)
    entries = jq(sp, "neigh")
    assert len([n for n in entries if n["family"] == "inet6"]) <= 64, len(entries)
    assert stats["nd"]["cache_entries"] <= 64
    print(f"flood: {sent} datagrams sent, nd evictions {stats['nd']['evictions']}, "
          f"{len(entries)} entries, nd drops { {k: v for k, v in stats['drops'].items() if k.startswith('nd_') and v} }")
    out = sp.run_in_ns(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "3", STACK]).stdout
    assert "3 received" in out
    r = sp.tapstack("ping", "-c", "1", "-W", "5", "2001:db8:2::1", check=False)
    assert r.returncode == 0 and "1 received" in r.stdout, r.stdout + r.stderr

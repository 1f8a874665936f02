"""The daemon against the kernel: ND, echo, control commands, clean shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ONE_TAP,
    REPO,
    STACK_LL,
    STACK_MAC,
    Factory,
    StackProcess,
    link_exists,
    netns_exists,
    unique_names,
)

pytestmark = pytest.mark.netns


def test_ready_line_is_exact(one_tap: StackProcess) -> None:
    assert one_tap.ready_line == f"tapstack: ready name={one_tap.name} control=/run/tapstack/{one_tap.name}.sock"
    assert one_tap.socket.stat().st_mode & 0o777 == 0o600
    assert link_exists(one_tap["tap0"], one_tap["ns0"])        # the kernel side keeps the TAP's name
    assert not link_exists(one_tap["tap0"])                     # ... and left our namespace


def test_kernel_pings_global_link_local_and_ipv4(one_tap: StackProcess) -> None:
    tap = one_tap["tap0"]
    out = one_tap.run_in_ns(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "2001:db8:1::2"]).stdout
    assert "3 received" in out
    out = one_tap.run_in_ns(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", f"{STACK_LL}%{tap}"]).stdout
    assert "3 received" in out
    out = one_tap.run_in_ns(["ping", "-4", "-c", "2", "-i", "0.2", "-W", "2", "192.0.2.2"]).stdout
    assert "2 received" in out


def test_peer_routes_reach_the_loopback_addresses(one_tap: StackProcess) -> None:
    out = one_tap.run_in_ns(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:ff::1"]).stdout
    assert "2 received" in out
    # IPv4 via an IPv6 link-local next hop (RFC 5549) on the kernel side.
    out = one_tap.run_in_ns(["ping", "-4", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.1"]).stdout
    assert "2 received" in out


def test_peer_neighbor_cache_shows_the_stack_mac(one_tap: StackProcess) -> None:
    one_tap.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"])
    out = one_tap.run_in_ns(["ip", "-6", "neigh", "show", "dev", one_tap["tap0"]]).stdout
    assert f"2001:db8:1::2 lladdr {STACK_MAC}" in out


@pytest.mark.skipif(shutil.which("ndisc6") is None, reason="ndisc6 not installed")
def test_ndisc6_resolves_the_stack(one_tap: StackProcess) -> None:
    out = one_tap.run_in_ns(["ndisc6", "-1", "-r", "3", "-w", "1000", "2001:db8:1::2", one_tap["tap0"]]).stdout
    assert STACK_MAC.upper() in out.upper()


def test_addr_and_stats_commands(one_tap: StackProcess) -> None:
    one_tap.run_in_ns(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:1::2"])
    text = one_tap.tapstack("addr").stdout
    assert f"2: {one_tap['tap0']}:" in text
    assert "inet6 2001:db8:1::2/64 scope global preferred" in text
    assert f"inet6 {STACK_LL}/64 scope link preferred" in text
    addrs = json.loads(one_tap.tapstack("addr", "-j").stdout)
    tap0 = next(i for i in addrs if i["ifname"] == one_tap["tap0"])
    assert tap0["mac"] == STACK_MAC and tap0["mtu"] == 1500
    assert {"2001:db8:1::2", STACK_LL, "192.0.2.2"} <= {a["address"] for a in tap0["addresses"]}
    stats = json.loads(one_tap.tapstack("-j", "stats").stdout)
    assert "drops" in stats and stats["link"]["rx_frames"] > 0 and stats["link"]["tx_frames"] > 0
    neigh = json.loads(one_tap.tapstack("neigh", "-j").stdout)
    assert any(n["dst"] == "2001:db8:1::1" and n["dev"] == one_tap["tap0"] for n in neigh)


def test_sigterm_removes_everything(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ONE_TAP)
    assert netns_exists(sp["ns0"]) and sp.socket.exists()
    assert sp.stop(signal.SIGTERM) == 0
    assert sp.leftovers() == []
    assert not Path(f"/run/tapstack/{sp.name}.lock").exists()


def test_sigint_also_exits_0_after_cleanup(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ONE_TAP)
    assert sp.stop(signal.SIGINT) == 0
    assert sp.leftovers() == []


def test_existing_namespace_is_kept(tapstack_factory: Factory) -> None:
    names = unique_names()
    subprocess.run(["ip", "netns", "add", names["ns0"]], check=True)
    try:
        sp = tapstack_factory(ONE_TAP, names=names)
        assert sp.stop() == 0
        assert netns_exists(names["ns0"])                  # not ours: left alone
        assert not link_exists(names["tap0"], names["ns0"])
    finally:
        subprocess.run(["ip", "netns", "del", names["ns0"]], check=False)


def test_second_instance_of_a_name_is_refused(tapstack_factory: Factory) -> None:
    first = tapstack_factory(ONE_TAP)
    names = unique_names()
    names["name"] = first.name
    second = tapstack_factory(ONE_TAP, wait=False, names=names)
    assert second.proc.wait(30) == 1
    assert f"a stack named '{first.name}' is already running" in second.stderr()
    assert not link_exists(names["tap0"]) and not netns_exists(names["ns0"])
    assert first.tapstack("addr").returncode == 0            # the first one is untouched


def test_stale_socket_is_replaced(tapstack_factory: Factory) -> None:
    names = unique_names()
    path = Path("/run/tapstack") / f"{names['name']}.sock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as s:              # a socket file nobody listens on
        s.bind(str(path))
    sp = tapstack_factory(ONE_TAP, names=names)
    assert sp.tapstack("addr").returncode == 0


def test_bad_config_creates_nothing(tmp_path: Path) -> None:
    names = unique_names()
    bad = ONE_TAP.replace('"192.0.2.2/24"]', '"192.0.2.2/24", "x"]').format(**names)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(bad)
    r = subprocess.run([sys.executable, "-m", "stack", "run", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.strip() == f"tapstack: config error: {cfg}: interface[0].addresses[2]: 'x' is not an IP prefix"
    assert not link_exists(names["tap0"]) and not netns_exists(names["ns0"])
    assert not Path(f"/run/tapstack/{names['name']}.sock").exists()


def test_failed_peer_setup_is_undone(tapstack_factory: Factory) -> None:
    bad = ONE_TAP.replace('"198.51.100.1/32 via inet6 fe80::ff:fe00:2"', '"203.0.113.0/24 via 2001:db8:9::9"')
    sp = tapstack_factory(bad, wait=False)
    assert sp.proc.wait(30) == 1
    assert "peer route '203.0.113.0/24 via 2001:db8:9::9'" in sp.stderr()
    assert sp.leftovers() == []


def test_pcap_files_are_readable(tapstack_factory: Factory, tmp_path: Path) -> None:
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest
    from scapy.utils import rdpcap

    pcap_dir = tmp_path / "pcap"
    sp = tapstack_factory(ONE_TAP, "--pcap", str(pcap_dir))
    sp.run_in_ns(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:1::2"])
    pkts = rdpcap(str(pcap_dir / f"{sp['tap0']}.pcap"))        # flushed while running
    assert sum(1 for p in pkts if ICMPv6EchoRequest in p) >= 2
    assert sum(1 for p in pkts if ICMPv6EchoReply in p) >= 2


def test_restart_after_sigkill(tapstack_factory: Factory) -> None:
    first = tapstack_factory(ONE_TAP)
    first.stop(signal.SIGKILL)
    assert not link_exists(first["tap0"], first["ns0"])        # the TAP died with its fd
    assert netns_exists(first["ns0"]) and first.socket.exists()  # these cannot clean themselves up
    # the CLI sees a dead daemon at once (no hang on the stale socket) and says so
    r = first.tapstack("addr", check=False, timeout=10)
    assert r.returncode == 2 and "is stale" in r.stderr, r.stderr
    run = Path("/run/tapstack")
    assert (run / f"{first.name}.lock").exists() and (run / f"{first.name}.netns").exists()
    second = tapstack_factory(ONE_TAP, names=dict(first.names))
    out = second.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"]).stdout
    assert "1 received" in out
    assert second.stop() == 0
    assert second.leftovers() == []                             # the adopted namespace is gone too
    # the stale socket was replaced and then removed; lock and namespace state file too
    assert sorted(p.name for p in run.glob(f"{first.name}.*")) == []


def test_host_runtime_as_async_context_manager(tmp_path: Path) -> None:
    import asyncio

    import uvloop

    from stack.control.config import parse_config
    from stack.runtime.host import HostRuntime

    names = unique_names()
    cfg = parse_config(ONE_TAP.format(**names), "inline.toml")

    async def main() -> str:
        async with HostRuntime(cfg) as rt:
            assert rt.stack.ready()
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", names["ns0"], "ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2",
                stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            return out.decode()

    assert "1 received" in uvloop.run(main())
    assert not netns_exists(names["ns0"]) and not link_exists(names["tap0"])


def test_no_per_packet_logging_even_at_debug(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ONE_TAP, "--log-level", "debug")
    sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"])
    before = len(sp.stderr().splitlines())
    sp.run_in_ns(["ping", "-6", "-c", "50", "-i", "0.01", "-W", "2", "2001:db8:1::2"])
    sp.tapstack("addr")
    after = len(sp.stderr().splitlines())
    assert after - before < 10, sp.stderr()

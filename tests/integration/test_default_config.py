"""`tapstack run` without -c: the built-in default, run inside a throwaway namespace so
that its "host" side (tap0, 2001:db8:1::1, the routes) lives there and nowhere else."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, StackProcess, link_exists, unique_names

pytestmark = pytest.mark.netns


def test_default_config_answers_on_tap0(tmp_path: Path) -> None:
    names = unique_names()
    ns = names["ns0"]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    sp = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        sp = StackProcess(names, None, tmp_path, ["--name", names["name"]], prefix=["ip", "netns", "exec", ns])
        assert sp.wait_ready() == f"tapstack: ready name={names['name']} control=/run/tapstack/{names['name']}.sock"
        assert link_exists("tap0", ns)
        for cmd in (["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:1::2"],
                    ["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.0.2.2"],
                    ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:ff::1"],
                    ["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.1"]):
            out = sp.run_in_ns(cmd, ns).stdout
            assert "2 received" in out, out
        assert sp.stop(signal.SIGTERM) == 0
        assert not link_exists("tap0", ns)
        assert not Path(f"/run/tapstack/{names['name']}.sock").exists()
    finally:
        if sp is not None:
            sp.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_default_config_refuses_a_namespace_already_using_its_prefix(tmp_path: Path) -> None:
    """On a VM whose own link is 192.0.2.0/24 (this test machine's is), the default's
    kernel-side 192.0.2.1/24 would capture the VM's traffic: the daemon refuses before
    it creates anything, naming both interfaces."""
    names = unique_names()
    ns = names["ns0"]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"],
                       check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "192.0.2.9/24", "dev", "uplink0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "uplink0", "up"], check=True)
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "stack", "run", "--name", names["name"]],
                           capture_output=True, text=True, timeout=30, cwd=REPO)
        assert r.returncode == 1, r
        assert "tap0: peer address 192.0.2.1/24 overlaps 192.0.2.9/24 on uplink0 in this namespace" in r.stderr, r.stderr
        assert "ready" not in r.stdout
        assert not link_exists("tap0", ns)
        addrs = subprocess.run(["ip", "-n", ns, "-br", "addr"], capture_output=True, text=True, check=True).stdout
        assert "192.0.2.1" not in addrs and "2001:db8:1::1" not in addrs, addrs
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        for suffix in (".sock", ".lock"):     # left only if the daemon had started and been killed
            Path(f"/run/tapstack/{names['name']}{suffix}").unlink(missing_ok=True)

"""The daemon's services and client commands against the kernel: echo/discard/daytime/
chargen from the kernel side, `tapstack ping` and `tapstack connect` toward the kernel."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ONE_TAP, Factory, StackProcess, wait_for

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("nc") is None, reason="netcat-openbsd not installed"),
]

# ping/connect handlers and the services come from the api layer's plug-ins.
needs_control_plugin = pytest.mark.skipif(importlib.util.find_spec("stack.api.control") is None,
                                          reason="stack.api.control (ping/connect handlers) not present")
needs_services = pytest.mark.skipif(importlib.util.find_spec("stack.api.services") is None,
                                    reason="stack.api.services not present")
pytestmark.append(needs_services)

WITH_SERVICES = ONE_TAP + """
[services]
echo = 7
discard = 9
daytime = 13
chargen = 19
"""


@pytest.fixture
def served(tapstack_factory: Factory) -> StackProcess:
    return tapstack_factory(WITH_SERVICES)


def test_tcp_and_udp_echo_from_the_kernel(served: StackProcess) -> None:
    out = served.run_in_ns(["timeout", "10", "nc", "-N", "2001:db8:1::2", "7"], input="hello v6\n").stdout
    assert out == "hello v6\n"
    out = served.run_in_ns(["timeout", "10", "nc", "-N", "192.0.2.2", "7"], input="hello v4\n").stdout
    assert out == "hello v4\n"
    out = served.run_in_ns(["timeout", "3", "nc", "-u", "-w", "1", "2001:db8:1::2", "7"], input="udp\n",
                           check=False).stdout
    assert out == "udp\n"


def test_daytime_and_chargen(served: StackProcess) -> None:
    out = served.run_in_ns(["timeout", "10", "nc", "-d", "2001:db8:1::2", "13"]).stdout
    assert out.strip()
    # chargen never stops: read for a moment, then let timeout end nc
    r = subprocess.run(["ip", "netns", "exec", served["ns0"], "timeout", "1", "nc", "-d", "2001:db8:1::2", "19"],
                       capture_output=True, timeout=20)
    assert len(r.stdout) > 1000 and r.stdout[:1] in b" !\"#$%"


@needs_control_plugin
def test_tapstack_ping_exit_codes(served: StackProcess) -> None:
    r = served.tapstack("ping", "-c", "2", "-i", "0.2", "2001:db8:1::1")
    assert "2 received" in r.stdout
    r = served.tapstack("ping", "-c", "1", "-W", "1", "2001:db8:1::99", check=False)
    assert r.returncode == 1
    r = served.tapstack("ping", "-c", "1", "not-an-address", check=False)
    assert r.returncode == 2 and r.stderr.strip()


@needs_control_plugin
def test_tapstack_connect_to_a_kernel_listener(served: StackProcess) -> None:
    listener = subprocess.Popen(["ip", "netns", "exec", served["ns0"], "timeout", "10", "nc", "-l", "-s",
                                 "2001:db8:1::1", "-p", "5555"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        for _ in range(100):            # until the kernel listens (ss in the namespace)
            ss = served.run_in_ns(["ss", "-Hltn", "sport", "= :5555"]).stdout
            if ss.strip():
                break
            subprocess.run(["sleep", "0.05"])
        r = served.tapstack("connect", "-w", "5", "2001:db8:1::1", "5555", input="from the stack\n")
        assert r.returncode == 0
        assert listener.stdout is not None
        assert listener.stdout.read() == b"from the stack\n"
        listener.wait(10)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()


@needs_control_plugin
def test_tapstack_connect_errors(served: StackProcess) -> None:
    r = served.tapstack("connect", "-w", "3", "2001:db8:1::1", "5556", input="x\n", check=False)
    assert r.returncode == 1 and r.stderr.strip() == "connect: Connection refused"
    r = served.tapstack("connect", "-w", "3", "2001:db8:99::1", "7", input="x\n", check=False)
    assert r.returncode == 1 and r.stderr.startswith("connect: ")


@needs_control_plugin
def test_connect_to_itself_over_loopback_and_lo_pcap(tapstack_factory: Factory, tmp_path: Path) -> None:
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether  # noqa: F401  (registers LINKTYPE_ETHERNET)
    from scapy.utils import rdpcap

    pcap_dir = f"{tmp_path}/pcap"
    sp = tapstack_factory(WITH_SERVICES, "--pcap", pcap_dir)
    r = sp.tapstack("connect", "-w", "5", "2001:db8:1::2", "7", input="hi\n")
    assert r.stdout == "hi\n" and r.returncode == 0
    pkts = rdpcap(f"{pcap_dir}/lo.pcap")
    assert any(IPv6 in p and p[IPv6].dst == "2001:db8:1::2" for p in pkts)


ECHO_CLIENT = r"""
import socket, sys, threading
n = int(sys.argv[1])
data = bytes(range(256)) * (n // 256)
s = socket.create_connection(("2001:db8:1::2", 7), timeout=30)
threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)), daemon=True).start()
got = bytearray()
while chunk := s.recv(65536):
    got += chunk
print(len(got), got == data)
"""


def test_echo_moves_on_with_no_tcp_memory_beyond_the_floors(tapstack_factory: Factory) -> None:
    """limits.tcp_mem = 0: each buffer keeps only its 4 KB floor (TcpMemory), and two
    connections at once still echo 1 MiB each, intact, against the kernel; the pool
    is back to 0 when they are done."""
    sp = tapstack_factory(ONE_TAP + "\n[services]\necho = 7\n\n[limits]\ntcp_mem = 0\n")
    client = ["timeout", "60", sys.executable, "-c", ECHO_CLIENT, str(1 << 20)]
    procs = [subprocess.Popen(["ip", "netns", "exec", sp["ns0"], *client], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=90)[0] for p in procs]
    assert outs == [f"{1 << 20} True\n"] * 2

    def tcp_stats() -> dict[str, int]:
        return dict(json.loads(sp.tapstack("stats", "-j").stdout)["tcp"])

    wait_for("the pool to empty", lambda: tcp_stats()["mem_used"] == 0)
    assert tcp_stats()["mem_limit"] == 0

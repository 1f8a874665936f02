"""Operating the daemon: SIGHUP reload, sd_notify readiness, pcap rotation read while running."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import (
    ONE_TAP,
    REPO,
    Factory,
    StackProcess,
    link_exists,
    netns_exists,
    wait_for,
)

pytestmark = pytest.mark.netns

ECHO_ONLY = ONE_TAP + """
[services]
echo = 7
"""

RELOADED = "forwarding = true\n" + ECHO_ONLY + """discard = 9

[[route]]
to = "203.0.113.0/24"
via = "2001:db8:1::1"

[limits]
nd_queue_max = 4
"""


class Session:
    """A long-lived `nc` client in the peer namespace."""

    def __init__(self, sp: StackProcess, host: str, port: int) -> None:
        self.p = subprocess.Popen(["ip", "netns", "exec", sp["ns0"], "timeout", "60", "nc", host, str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def roundtrip(self, text: bytes) -> bytes:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(text)
        self.p.stdin.flush()
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < len(text):
            left = deadline - time.monotonic()
            assert left > 0, f"echo answered {got!r} of {text!r}"
            ready, _, _ = select.select([self.p.stdout], [], [], left)
            chunk = os.read(self.p.stdout.fileno(), 4096) if ready else b""
            assert chunk or not ready, f"session closed after {got!r}"
            got += chunk
        return got

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)


def tcp_port_open(sp: StackProcess, port: int) -> bool:
    r = sp.run_in_ns(["timeout", "10", "nc", "-N", "-w", "3", "2001:db8:1::2", str(port)], check=False,
                     input="x\n")
    return r.returncode == 0


def routes(sp: StackProcess) -> list[str]:
    return [r["dst"] for r in json.loads(sp.tapstack("route", "-j").stdout)]


def log_has(sp: StackProcess, text: str) -> Callable[[], bool]:
    return lambda: text in sp.stderr()


def test_sighup_reload_keeps_established_connections(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ECHO_ONLY)
    assert sp.config_path is not None
    assert not tcp_port_open(sp, 9)                       # discard is off at first
    session = Session(sp, "2001:db8:1::2", 7)
    try:
        assert session.roundtrip(b"before\n") == b"before\n"

        # A route and discard appear, router mode and a limit change; the established
        # echo session goes on.
        sp.config_path.write_text(RELOADED.format(**sp.names))
        sp.proc.send_signal(signal.SIGHUP)
        wait_for("the reloaded route in `tapstack route`", lambda: "203.0.113.0/24" in routes(sp))
        wait_for("the reload log line", log_has(sp, "reloaded"))
        assert ": forwarding on; limits nd_queue_max=4; route added 203.0.113.0/24" in sp.stderr()
        assert "need a restart" not in sp.stderr()
        assert tcp_port_open(sp, 9)
        got = json.loads(sp.tapstack("route", "get", "203.0.113.7", "-j").stdout)
        assert got["dev"] == sp["tap0"] and got["gateway"] == "2001:db8:1::1"
        assert session.roundtrip(b"after reload\n") == b"after reload\n"

        # A broken file: logged with the config error, the daemon and the old config stay.
        sp.config_path.write_text("[[interface]\nname = ")
        sp.proc.send_signal(signal.SIGHUP)
        wait_for("the reload failure log line", log_has(sp, "reload failed, running configuration kept"))
        assert "TOML syntax error" in sp.stderr()
        assert sp.proc.poll() is None
        assert "203.0.113.0/24" in routes(sp) and tcp_port_open(sp, 9)
        assert session.roundtrip(b"after a bad file\n") == b"after a bad file\n"

        # A route core refuses (gateway not on a connected network) changes nothing either.
        sp.config_path.write_text(RELOADED.replace("2001:db8:1::1", "2001:db8:77::1").format(**sp.names))
        sp.proc.send_signal(signal.SIGHUP)
        wait_for("the refused route in the log", log_has(sp, "route[0]: gateway 2001:db8:77::1"))
        assert "203.0.113.0/24" in routes(sp)

        # Back to the first file: route and discard go, an address change only needs a restart.
        sp.config_path.write_text(ECHO_ONLY.replace("192.0.2.2/24", "192.0.2.3/24").format(**sp.names))
        sp.proc.send_signal(signal.SIGHUP)
        wait_for("the route to go", lambda: "203.0.113.0/24" not in routes(sp))
        wait_for("the needs-restart warning", log_has(sp, "changes to interfaces need a restart"))
        assert ": forwarding off; limits default; route deleted 203.0.113.0/24" in sp.stderr()
        assert not tcp_port_open(sp, 9)
        addrs = {a["address"] for i in json.loads(sp.tapstack("addr", "-j").stdout) for a in i["addresses"]}
        assert "192.0.2.2" in addrs and "192.0.2.3" not in addrs
        assert session.roundtrip(b"still here\n") == b"still here\n"
    finally:
        session.close()
    assert sp.stop() == 0


def test_sd_notify_ready_reloading_stopping(tapstack_factory: Factory, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))

    def message() -> set[str]:
        ready, _, _ = select.select([listener], [], [], 10)
        assert ready, "no sd_notify datagram within 10 s"
        return set(listener.recv(4096).decode().split("\n"))

    try:
        sp = tapstack_factory(ECHO_ONLY)       # returns after the ready line on stdout
        first = message()
        assert "READY=1" in first and f"MAINPID={sp.proc.pid}" in first
        sp.proc.send_signal(signal.SIGHUP)
        reloading = message()
        assert "RELOADING=1" in reloading and any(x.startswith("MONOTONIC_USEC=") for x in reloading)
        assert "READY=1" in message()
        assert sp.stop() == 0
        assert "STOPPING=1" in message()
    finally:
        listener.close()


def test_pcap_rotation_and_tcpdump_while_running(tapstack_factory: Factory, tmp_path: Path) -> None:
    pcap = tmp_path / "pcap"
    sp = tapstack_factory(ONE_TAP, "--pcap", str(pcap), "--pcap-size", "8k", "--pcap-files", "3")
    tap = sp["tap0"]
    assert (pcap / "lo.pcap").exists()                      # loopback has its file from the start
    sp.run_in_ns(["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::2"])
    # tcpdump reads the live file: header and records are flushed as frames pass.
    r = subprocess.run(["tcpdump", "-nr", str(pcap / f"{tap}.pcap")], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "ICMP6, echo request" in r.stdout and "ICMP6, echo reply" in r.stdout
    # 40 x (1000 bytes + headers) both ways is ~90 kB: the 8 KiB files rotate, 3 are kept.
    sp.run_in_ns(["ping", "-6", "-c", "40", "-i", "0.01", "-s", "1000", "-W", "2", "2001:db8:1::2"])
    files = sorted(p.name for p in pcap.iterdir() if p.name.startswith(tap))
    assert files == [f"{tap}.pcap", f"{tap}.pcap.1", f"{tap}.pcap.2"]
    for name in files:
        size = (pcap / name).stat().st_size
        assert 24 < size <= 8192, (name, size)
        r = subprocess.run(["tcpdump", "-nr", str(pcap / name)], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and "length 1008" in r.stdout, (name, r.stderr)


def test_bad_pcap_options_are_refused(tapstack_factory: Factory, tmp_path: Path) -> None:
    for args in (("--pcap-size", "lots"), ("--pcap-files", "0")):
        sp = tapstack_factory(ONE_TAP, "--pcap", str(tmp_path / "unused"), *args, wait=False)
        assert sp.proc.wait(30) == 2
        assert "bad --pcap-" in sp.stderr()
        assert sp.leftovers() == []


def test_netns_lab_up_ping_down() -> None:
    prefix = f"tl{os.getpid() % 100000}"
    script = str(REPO / "scripts" / "netns-lab")

    def lab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([script, *args, "--prefix", prefix], capture_output=True, text=True, timeout=60)

    def in_ns(ns: str, *argv: str) -> str:
        r = subprocess.run(["ip", "netns", "exec", f"{prefix}-{ns}", *argv], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, f"{argv} in {prefix}-{ns}: {r.stdout}{r.stderr}"
        return r.stdout

    try:
        up = lab("up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"ip netns exec {prefix}-a ping -c 3 2001:db8:b::2" in up.stdout
        assert "2 received" in in_ns("a", "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "2001:db8:b::2")
        assert "2 received" in in_ns("a", "ping", "-4", "-c", "2", "-i", "0.2", "-W", "2", "203.0.113.2")
        hops = in_ns("a", "traceroute", "-n", "-q", "1", "-w", "2", "-m", "3", "203.0.113.2").splitlines()[1:]
        assert [h.split()[1] for h in hops] == ["192.0.2.1", "203.0.113.2"], hops
        r = subprocess.run(["ip", "netns", "exec", f"{prefix}-b", "timeout", "10", "nc", "-N", "198.51.100.1", "7"],
                           input="via v4-over-v6\n", capture_output=True, text=True, timeout=30)
        assert r.stdout == "via v4-over-v6\n", r.stderr
        status = lab("status")
        assert status.returncode == 0 and f"namespace {prefix}-a: present" in status.stdout
        assert lab("up").returncode == 1                       # one lab per prefix
    finally:
        down = lab("down")
    assert down.returncode == 0, down.stderr
    assert not netns_exists(f"{prefix}-a") and not netns_exists(f"{prefix}-b")
    assert not link_exists(f"{prefix}0") and not link_exists(f"{prefix}1")
    assert sorted(p.name for p in Path("/run/tapstack").glob(f"{prefix}.*")) == []
    assert lab("down").returncode == 0                         # idempotent
    assert lab("status").returncode == 3

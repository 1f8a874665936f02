"""`tapstack ping` / `tapstack connect` end to end: the CLI (a real process) against a
control server whose stack is TAP-less and wired to a second stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.api.facade import Stack
from stack.control.commands import load_plugins
from stack.control.server import ControlServer
from tests.api.conftest import A_GA, A_LL, A_TOML, B_GA, B_LL, B_TOML

REPO = Path(__file__).resolve().parents[2]


class Served:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.a = Stack.for_testing(A_TOML, seed=1)
        self.b = Stack.for_testing(B_TOML, seed=2)
        Stack.wire(self.a, self.b)
        self.server: ControlServer | None = None

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> None:
        await self.a.start()
        await self.b.start()
        load_plugins()
        assert self.a.ctx is not None
        self.server = ControlServer(self.a.ctx, self.run_dir / "a.sock")
        await self.server.start()

    async def _stop(self) -> None:
        if self.server is not None:
            await self.server.close()
        await self.a.close()
        await self.b.close()

    def cli(self, *args: str, input: bytes = b"", timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, TAPSTACK_RUN_DIR=str(self.run_dir))
        return subprocess.run([sys.executable, "-m", "stack", *args, "--name", "a"], input=input,
                              capture_output=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    run_dir = tmp_path_factory.mktemp("run")
    s = Served(run_dir)
    s.thread.start()
    try:
        s.call(s._start())
        yield s
    finally:
        s.call(s._stop())
        s.loop.call_soon_threadsafe(s.loop.stop)
        s.thread.join(10)


def test_ping_lines_and_summary(served: Served) -> None:
    r = served.cli("ping", "-c", "2", "-i", "0.05", B_GA)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    lines = out.splitlines()
    assert lines[0] == f"PING {B_GA}({B_GA}) 56 data bytes"
    assert lines[1].startswith(f"64 bytes from {B_GA}: icmp_seq=1 ttl=64 time=") and lines[1].endswith(" ms")
    assert lines[2].startswith(f"64 bytes from {B_GA}: icmp_seq=2 ttl=64 time=")
    assert lines[3] == f"--- {B_GA} ping statistics ---"
    assert lines[4].startswith("2 packets transmitted, 2 received, 0% packet loss, time ")
    assert lines[5].startswith("rtt min/avg/max/mdev = ")


@pytest.mark.parametrize("dst", [A_GA, f"{A_LL}%tap0", "127.0.0.1", "::1", "2001:db8:ff::1", f"{B_LL}%tap0",
                                 B_LL, "192.0.2.1"])
def test_ping_self_and_peer(served: Served, dst: str) -> None:
    r = served.cli("ping", "-c", "1", dst)
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"1 received" in r.stdout


def test_ping_ipv4_header_and_errors(served: Served) -> None:
    r = served.cli("ping", "-c", "1", "-s", "100", "192.0.2.1")
    assert r.stdout.decode().splitlines()[0] == "PING 192.0.2.1 (192.0.2.1) 100(128) bytes of data."
    assert b"108 bytes from 192.0.2.1: icmp_seq=1" in r.stdout
    r = served.cli("ping", "-c", "1", "2001:db8:99::1")
    assert r.returncode == 2 and r.stderr == b"tapstack: ping: connect: Network is unreachable\n"
    r = served.cli("ping", "-c", "1", "-I", "tap0", B_LL)
    assert r.returncode == 0 and r.stdout.decode().splitlines()[0] == f"PING {B_LL}%tap0({B_LL}%tap0) 56 data bytes"
    r = served.cli("ping", "-c", "1", "-I", A_GA, B_GA)
    assert r.returncode == 0 and f"from {A_GA} : 56 data bytes".encode() in r.stdout
    r = served.cli("ping", "-c", "1", "-I", "192.0.2.2", B_GA)
    assert r.returncode == 2 and b"different families" in r.stderr
    r = served.cli("ping", "-c", "1", "nonsense")
    assert r.returncode == 2 and b"not an IP address" in r.stderr


def test_ping_address_unreachable(served: Served) -> None:
    t = time.monotonic()
    r = served.cli("ping", "-c", "1", "2001:db8:1::99")
    assert r.returncode == 1
    out = r.stdout.decode()
    assert "From 2001:db8:1::2 icmp_seq=1 Destination unreachable: Address unreachable" in out
    assert "1 packets transmitted, 0 received, +1 errors, 100% packet loss" in out
    assert time.monotonic() - t < 8          # ND gives up after 3 s; no 10 s linger


def test_connect_echo_and_exit_status(served: Served) -> None:
    t = time.monotonic()
    r = served.cli("connect", A_GA, "7", input=b"hi\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"hi\n", b"")
    assert time.monotonic() - t < 3
    r = served.cli("connect", f"{A_LL}%tap0", "7", input=b"link-local to self\n")
    assert (r.returncode, r.stdout) == (0, b"link-local to self\n")
    r = served.cli("connect", B_GA, "7", input=b"x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"connect: Connection refused\n")
    r = served.cli("connect", "2001:db8:99::1", "7")
    assert (r.returncode, r.stderr) == (1, b"connect: Network is unreachable\n")
    r = served.cli("connect", "-w", "0.5", "2001:db8:1::98", "7")
    assert (r.returncode, r.stderr) == (1, b"connect: Connection timed out\n")
    r = served.cli("connect", "127.0.0.1", "13")
    assert r.returncode == 0 and r.stdout.endswith(b"-UTC\r\n")


def test_connect_bulk_and_udp(served: Served) -> None:
    payload = os.urandom(1 << 20)
    r = served.cli("connect", A_GA, "7", input=payload, timeout=60)
    assert r.returncode == 0 and r.stdout == payload
    r = served.cli("connect", "-u", A_GA, "7", input=b"datagram\n")
    assert (r.returncode, r.stdout) == (0, b"datagram\n")
    r = served.cli("connect", "-u", B_GA, "7", input=b"datagram\n")
    assert (r.returncode, r.stderr) == (1, b"connect: Connection refused\n")
    r = served.cli("connect", "-w", "1", "::1", "9", input=b"to discard")   # idle for 1 s: ends, 0
    assert (r.returncode, r.stdout) == (0, b"")


def test_sockets_lists_tcp(served: Served) -> None:
    r = served.cli("sockets")
    out = r.stdout.decode()
    assert r.returncode == 0
    assert any(line.split()[:2] == ["tcp", "LISTEN"] and line.split()[4].endswith(":7")
               for line in out.splitlines()), out
    assert any(line.split()[:2] == ["udp", "UNCONN"] for line in out.splitlines())


def test_ping_until_interrupted_prints_statistics(served: Served) -> None:
    """Without -c the client ends ping by half-closing (its ^C): the summary still comes."""
    import json
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(str(served.run_dir / "a.sock"))
    s.sendall(json.dumps({"cmd": "ping", "args": {"dst": B_GA, "interval": 0.05}}).encode() + b"\n")
    f = s.makefile("rb")
    assert json.loads(f.readline())["ok"] is True
    assert json.loads(f.readline())["line"].startswith("PING ")
    assert " bytes from " in json.loads(f.readline())["line"]
    s.shutdown(socket.SHUT_WR)
    rest = [json.loads(line) for line in f]
    s.close()
    lines = [o["line"] for o in rest if "line" in o]
    assert f"--- {B_GA} ping statistics ---" in lines
    assert rest[-1] == {"exit": 0}


def test_cli_ping_ctrl_c_prints_statistics(served: Served) -> None:
    import signal

    env = dict(os.environ, TAPSTACK_RUN_DIR=str(served.run_dir))
    p = subprocess.Popen([sys.executable, "-m", "stack", "ping", "-i", "0.05", B_GA, "--name", "a"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
    assert p.stdout is not None
    try:
        assert p.stdout.readline().startswith(b"PING ")
        assert b"icmp_seq=1 " in p.stdout.readline()
        assert b"icmp_seq=2 " in p.stdout.readline()
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0
    assert f"--- {B_GA} ping statistics ---".encode() in out and b" received, " in out

"""The api layer against the Linux kernel: services reached with nc and telnet from the
kernel side (IPv6 global, link-local %tap, IPv4), `tapstack ping` and `tapstack connect`
from the stack, 100 parallel echo sessions and 50 MiB through echo."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import ONE_TAP, STACK_LL, Factory, StackProcess

pytestmark = [pytest.mark.netns]

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


def ns_argv(sp: StackProcess, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", sp["ns0"], *argv]


def test_nc_echo_over_global_link_local_and_ipv4(served: StackProcess) -> None:
    for host in ("2001:db8:1::2", f"{STACK_LL}%{served['tap0']}", "192.0.2.2"):
        r = served.run_in_ns(["timeout", "10", "nc", "-N", host, "7"], input=f"hello {host}\n")
        assert r.stdout == f"hello {host}\n", host


class Telnet:
    """telnet in the peer namespace with its stdin kept open (telnet quits at stdin EOF,
    which would race the server's answer)."""

    def __init__(self, sp: StackProcess, host: str, port: int) -> None:
        self.p = subprocess.Popen(ns_argv(sp, "timeout", "10", "telnet", host, str(port)), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""

    def send(self, data: bytes) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def until(self, done: Callable[[bytes], bool]) -> bytes:
        assert self.p.stdout is not None
        deadline = time.monotonic() + 10
        while not done(self.out):
            left = deadline - time.monotonic()
            assert left > 0, self.out
            ready, _, _ = select.select([self.p.stdout], [], [], left)
            chunk = os.read(self.p.stdout.fileno(), 4096) if ready else b""
            assert chunk, self.out
            self.out += chunk
        return self.out

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait(10)


def test_telnet_echo_and_daytime(served: StackProcess) -> None:
    for host in ("2001:db8:1::2", f"{STACK_LL}%{served['tap0']}", "192.0.2.2"):
        t = Telnet(served, host, 7)
        try:
            t.send(b"over telnet\r\n")
            out = t.until(lambda o: b"over telnet\r\n" in o.split(b"Escape character is '^]'.", 1)[-1])
            assert b"Connected to" in out
        finally:
            t.close()
    t = Telnet(served, "2001:db8:1::2", 13)
    try:
        out = t.until(lambda o: b"Connection closed by foreign host." in o)
        assert re.search(rb"\n[A-Z][a-z]+day, [A-Z][a-z]+ \d\d, \d{4} \d\d:\d\d:\d\d-UTC\r?\n", out), out
    finally:
        t.close()


def test_daytime_and_chargen_over_both_families(served: StackProcess) -> None:
    for host in ("2001:db8:1::2", "192.0.2.2"):
        out = served.run_in_ns(["timeout", "10", "nc", "-d", host, "13"]).stdout
        assert out.endswith("-UTC\n") and out.count("\n") == 1        # text mode reads CRLF as LF
        r = subprocess.run(ns_argv(served, "timeout", "2", "nc", "-d", host, "19"), capture_output=True,
                           timeout=20)
        lines = r.stdout.split(b"\r\n")
        assert len(lines) > 100
        assert lines[0] == bytes(range(0x20, 0x20 + 72)) and lines[1] == bytes(range(0x21, 0x21 + 72))
    out = served.run_in_ns(["timeout", "5", "nc", "-u", "-w", "1", "2001:db8:1::2", "13"], input="?\n",
                           check=False).stdout
    assert out.endswith("-UTC\n")


@pytest.mark.parametrize("dst", ["2001:db8:1::2", f"{STACK_LL}%{{tap0}}", "127.0.0.1", "::1", "2001:db8:ff::1",
                                 "198.51.100.1", "2001:db8:1::1", "192.0.2.1", "fe80-peer"])
def test_tapstack_ping(served: StackProcess, dst: str) -> None:
    if dst == "fe80-peer":
        peer_ll = served.run_in_ns(["ip", "-6", "-o", "addr", "show", "dev", served["tap0"], "scope", "link"])
        dst = peer_ll.stdout.split()[3].split("/")[0] + f"%{served['tap0']}"
    dst = dst.replace("{tap0}", served["tap0"])
    r = served.tapstack("ping", "-c", "2", "-i", "0.2", dst)
    assert "2 packets transmitted, 2 received, 0% packet loss" in r.stdout
    assert r.stdout.splitlines()[1].startswith("64 bytes from ")


def test_tapstack_connect(served: StackProcess) -> None:
    t = time.monotonic()
    r = subprocess.run(f"echo hi | {sys.executable} -m stack connect 2001:db8:1::2 7 --name {served.name}",
                       shell=True, capture_output=True, text=True, timeout=20)
    elapsed = time.monotonic() - t
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi\n", "")
    assert elapsed < 1.0, f"took {elapsed:.2f}s"
    r = served.tapstack("connect", f"{STACK_LL}%{served['tap0']}", "7", input="link-local to self\n")
    assert r.stdout == "link-local to self\n"
    r = served.tapstack("connect", "2001:db8:1::2", "4444", input="x\n", check=False)
    assert (r.returncode, r.stderr) == (1, "connect: Connection refused\n")
    r = served.tapstack("connect", "2001:db8:1::1", "4444", input="x\n", check=False)
    assert (r.returncode, r.stderr) == (1, "connect: Connection refused\n")      # the kernel's RST
    r = served.tapstack("connect", "-u", "192.0.2.2", "7", input="udp to self\n")
    assert r.stdout == "udp to self\n"


PARALLEL = r"""
import asyncio, os, sys
async def one(i):
    r, w = await asyncio.open_connection(sys.argv[1], 7)
    data = os.urandom(2000 + 131 * i)
    w.write(data); w.write_eof()
    back = await r.read()
    w.close()
    return back == data
async def main():
    ok = await asyncio.gather(*(one(i) for i in range(100)))
    print(sum(ok))
asyncio.run(main())
"""


def test_hundred_parallel_echo_sessions_from_the_kernel(served: StackProcess) -> None:
    for host in ("2001:db8:1::2", "192.0.2.2"):
        r = served.run_in_ns([sys.executable, "-c", PARALLEL, host], timeout=120)
        assert r.stdout.strip() == "100", r.stderr


BULK = r"""
import asyncio, hashlib, os, sys, time
async def main():
    n = int(sys.argv[2])
    r, w = await asyncio.open_connection(sys.argv[1], 7)
    sent, got = hashlib.sha256(), hashlib.sha256()
    async def send():
        left = n
        while left:
            chunk = os.urandom(min(left, 256 * 1024))
            sent.update(chunk)
            w.write(chunk)
            await w.drain()
            left -= len(chunk)
        w.write_eof()
    t = time.monotonic()
    task = asyncio.ensure_future(send())
    total = 0
    while chunk := await r.read(1 << 20):
        got.update(chunk)
        total += len(chunk)
    await task
    print(total, sent.hexdigest() == got.hexdigest(), round(time.monotonic() - t, 2))
asyncio.run(main())
"""


def test_fifty_mib_through_echo(served: StackProcess) -> None:
    n = 50 << 20
    r = served.run_in_ns([sys.executable, "-c", BULK, "2001:db8:1::2", str(n)], timeout=600)
    total, same, seconds = r.stdout.split()
    assert int(total) == n and same == "True", r.stdout
    print(f"50 MiB echoed in {seconds}s")

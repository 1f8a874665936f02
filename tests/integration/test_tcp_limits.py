"""TCP's global bounds against the kernel: limits.tcp_max_connections and limits.tcp_mem."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.conftest import ONE_TAP, Factory, StackProcess, wait_for

pytestmark = pytest.mark.netns

FLOOR = 4096            # stack.core.tcp.buffers.TcpMemory.FLOOR

CONNECT_CLIENT = r"""
import json, socket
def conn(timeout):
    s = socket.create_connection(("2001:db8:1::2", 7), timeout=timeout)
    s.sendall(b"x")
    assert s.recv(1) == b"x"
    return s
held = [conn(10) for _ in range(3)]
try:
    conn(2.5)
    fourth = "connected"
except (TimeoutError, socket.timeout):
    fourth = "timed out"
held.pop().close()                      # one ends: its place is free once the FINs are through
fifth = "connected" if conn(10) else "?"     # SYN retransmitted after 1 s if we were too early
print(json.dumps({"fourth": fourth, "fifth": fifth}))
"""

HOG_CLIENT = r"""
import json, selectors, socket, sys
sel = selectors.DefaultSelector()
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("2001:db8:1::2", 7))
    s.setblocking(False)
    socks.append(s)
    sel.register(s, selectors.EVENT_WRITE)
block, sent = bytes(65536), 0
while sel.select(2.0):                  # 2 s with nothing writable: every connection is stuck
    for key, _ in sel.select(0):
        try:
            sent += key.fileobj.send(block)
        except BlockingIOError:
            pass
print(json.dumps({"sent": sent}), flush=True)
sys.stdin.read()                        # hold the connections until told
"""


def tcp_stats(sp: StackProcess) -> dict[str, dict[str, int]]:
    return dict(json.loads(sp.tapstack("stats", "-j").stdout))


def test_connection_limit_drops_the_syn_beyond_it_until_one_ends(tapstack_factory: Factory) -> None:
    sp = tapstack_factory(ONE_TAP + "\n[services]\necho = 7\n\n[limits]\ntcp_max_connections = 3\n")
    out = sp.run_in_ns([sys.executable, "-c", CONNECT_CLIENT], timeout=60).stdout
    assert json.loads(out) == {"fourth": "timed out", "fifth": "connected"}
    assert tcp_stats(sp)["drops"]["tcp_conn_limit"] >= 1


def test_tcp_memory_stays_bounded_under_peers_that_never_read(tapstack_factory: Factory) -> None:
    """Six connections write to echo and never read (a 4 KB receive buffer on the client):
    the stack's buffers hold the 256 KiB limit plus at most a floor per buffer, data
    beyond it is refused and counted, and everything is given back at the close."""
    limit, conns = 262144, 6
    sp = tapstack_factory(ONE_TAP + f"\n[services]\necho = 7\n\n[limits]\ntcp_mem = {limit}\n")
    p = subprocess.Popen(["ip", "netns", "exec", sp["ns0"], sys.executable, "-c", HOG_CLIENT, str(conns)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdin is not None
        sent = json.loads(p.stdout.readline())["sent"]
        loaded = tcp_stats(sp)
        used = loaded["tcp"]["mem_used"]
        assert limit - 65536 <= used <= limit + 2 * FLOOR * conns, (used, sent)
        assert sent > used                  # the rest waits in the kernel or was refused
        p.stdin.close()
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    wait_for("the pool to empty after the close", lambda: tcp_stats(sp)["tcp"]["mem_used"] == 0, timeout=20)

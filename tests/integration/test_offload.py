"""TAP offloads against the kernel (IFF_VNET_HDR + TUNSETOFFLOAD TSO4/TSO6/CSUM).

With ``offload = true`` the kernel hands the stack 64 KB TCP segments marked NEEDS_CSUM
and takes 64 KB GSO segments back; with ``offload = false`` everything stays plain
1500-byte frames. Both must move 50 MiB through echo intact. Evidence that offloads
are really on: the kernel's own view (ETHTOOL_GTSO / ETHTOOL_GTXCSUM on the TAP, read
with the SIOCETHTOOL ioctl, since ethtool itself is not installed) and the link
counters in ``tapstack stats -j`` (frames read with a virtio-net header, GSO frames
written).
"""

from __future__ import annotations

import json
import sys

import pytest

from stack.link import gso
from tests.integration.conftest import ONE_TAP, Factory, StackProcess

pytestmark = [pytest.mark.netns]

SERVICES = """
[services]
echo = 7
discard = 9
chargen = 19
"""


def config(offload: bool) -> str:
    cfg = ONE_TAP.replace('addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]\n',
                          'addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]\n'
                          f"offload = {'true' if offload else 'false'}\n", 1)
    assert "offload" in cfg
    return cfg + SERVICES


# ETHTOOL_GTSO (0x1e) / ETHTOOL_GTXCSUM (0x16) via SIOCETHTOOL (0x8946) on the TAP's kernel side.
ETHTOOL = r"""
import ctypes, fcntl, socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
out = []
for cmd in (0x1e, 0x16):
    val = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
    ifr = struct.pack("16sP16x", sys.argv[1].encode(), ctypes.addressof(val))
    fcntl.ioctl(s, 0x8946, ifr)
    out.append(struct.unpack("II", val.raw[:8])[1])
print(*out)
"""

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


def _link(sp: StackProcess) -> dict[str, int]:
    data = json.loads(sp.tapstack("stats", "-j").stdout)
    entry: dict[str, int] = data["interfaces"][sp["tap0"]]
    return entry


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
def test_fifty_mib_echo(tapstack_factory: Factory, offload: bool) -> None:
    sp = tapstack_factory(config(offload))
    tso, txcsum = sp.run_in_ns([sys.executable, "-c", ETHTOOL, sp["tap0"]]).stdout.split()
    assert (tso, txcsum) == (("1", "1") if offload else ("0", "0")), "kernel view of the TAP's offloads"
    for host in ("2001:db8:1::2", "192.0.2.2"):
        n = 50 << 20 if host.startswith("2001") else 8 << 20
        r = sp.run_in_ns([sys.executable, "-c", BULK, host, str(n)], timeout=300)
        total, same, seconds = r.stdout.split()
        assert int(total) == n and same == "True", r.stdout + r.stderr
        print(f"offload={offload} {host}: {n >> 20} MiB echoed in {seconds}s")
    link = _link(sp)
    if offload:
        assert link["link_offload"] == 1
        assert link["link_rx_offload"] > 0, link     # NEEDS_CSUM / GSO frames from the kernel
        assert link["link_tx_gso"] > 0, link         # 64 KB segments to the kernel
    else:
        assert link["link_offload"] == 0 and link["link_rx_offload"] == 0 and link["link_tx_gso"] == 0, link
    assert link.get("link_rx_errors", 0) == 0 and link.get("link_tx_errors", 0) == 0, link
    stats = json.loads(sp.tapstack("stats", "-j").stdout)
    drops = stats["drops"]
    assert not drops.get("bad_checksum") and not drops.get("offload_bad_gso"), drops


# Bulk one way: into discard (kernel -> stack) or out of chargen (stack -> kernel), bytes/time.
THROUGHPUT = r"""
import socket, sys, time
host, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.connect((host, 9 if mode == "to_stack" else 19))
t = time.monotonic()
if mode == "to_stack":
    buf = b"x" * (1 << 20)
    for _ in range(n >> 20):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):                # discard answers nothing; EOF once it read everything
        pass
    total = n
else:
    total = 0
    while total < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
dt = time.monotonic() - t
print(total, round(total * 8 / dt / 1e9, 2))
"""


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "plain"])
def test_bulk_throughput_both_ways(tapstack_factory: Factory, offload: bool) -> None:
    sp = tapstack_factory(config(offload))
    n = (256 if offload else 64) << 20
    for mode in ("to_stack", "from_stack"):
        r = sp.run_in_ns([sys.executable, "-c", THROUGHPUT, "2001:db8:1::2", mode, str(n)], timeout=120)
        total, gbits = r.stdout.split()
        assert int(total) >= n, r.stdout + r.stderr
        print(f"offload={offload} {mode}: {int(total) >> 20} MiB at {gbits} Gbit/s")



# -- router mode: ns0 - tap0 (offloads) - stack - tap1 (offloads or not) - ns1 -----------------

ROUTER = """
name = "{name}"
forwarding = true

[[interface]]
name = "{tap0}"
mac = "02:00:00:00:00:02"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]
offload = true

[interface.peer]
netns = "{ns0}"
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
routes = ["2001:db8:2::/64 via 2001:db8:1::2", "203.0.113.0/24 via 192.0.2.2"]
nodad = true
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}

[[interface]]
name = "{tap1}"
mac = "02:00:00:00:01:01"
addresses = ["2001:db8:2::2/64", "203.0.113.1/24"]
offload = OFFLOAD1

[interface.peer]
netns = "{ns1}"
addresses = ["2001:db8:2::1/64", "203.0.113.2/24"]
routes = ["2001:db8:1::/64 via 2001:db8:2::2", "192.0.2.0/24 via 203.0.113.1"]
nodad = true
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}
"""

# An echo server for one connection per family; prints its port once listening.
ECHO_SERVER = r"""
import socket, sys, threading
def serve(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 7007))
    s.listen(1)
    return s
def run(s):
    c, _ = s.accept()
    while data := c.recv(1 << 20):
        c.sendall(data)
    c.close()
ls = [serve(socket.AF_INET6, "2001:db8:2::1"), serve(socket.AF_INET, "203.0.113.2")]
ts = [threading.Thread(target=run, args=(s,)) for s in ls]
for t in ts:
    t.start()
print("listening", flush=True)
for t in ts:
    t.join()
"""


@pytest.mark.parametrize("offload1", [True, False], ids=["gso-kept", "gso-split"])
def test_router_forwards_gso_whole_or_split(tapstack_factory: Factory, offload1: bool) -> None:
    import subprocess
    sp = tapstack_factory(ROUTER.replace("OFFLOAD1", "true" if offload1 else "false"))
    server = subprocess.Popen(["ip", "netns", "exec", sp["ns1"], sys.executable, "-c", ECHO_SERVER],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening", server.stderr.read() if server.stderr else ""
        for host in ("2001:db8:2::1", "203.0.113.2"):
            r = sp.run_in_ns([sys.executable, "-c", BULK.replace("sys.argv[1], 7", "sys.argv[1], 7007"),
                              host, str(16 << 20)], timeout=120)
            total, same, seconds = r.stdout.split()
            assert int(total) == 16 << 20 and same == "True", r.stdout + r.stderr
            print(f"router tap1 offload={offload1} {host}: 16 MiB echoed in {seconds}s")
        assert server.wait(timeout=10) == 0, "echo server did not finish"
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
    st = json.loads(sp.tapstack("stats", "-j").stdout)
    t0, t1 = st["interfaces"][sp["tap0"]], st["interfaces"][sp["tap1"]]
    assert t0["link_rx_offload"] > 0                          # GSO / NEEDS_CSUM frames from ns0
    if offload1:
        assert t1["link_tx_gso"] > 0 and t0["link_tx_gso"] > 0     # forwarded whole, both ways
        assert st.get("ip", {}).get("gso_split", 0) == 0, st.get("ip")
    elif gso.available():
        # tap1 takes GSO (gso = true by default): forwarded whole, cut in C by the link
        assert t1["link_offload"] == 0 and t1["link_tx_gso"] == 0
        assert t1["link_tx_gso_split"] > 0, t1
        assert st.get("ip", {}).get("gso_split", 0) == 0, st.get("ip")
    else:
        assert t1["link_offload"] == 0 and t1["link_tx_gso"] == 0 and t1["link_tx_gso_split"] == 0
        assert st["ip"]["gso_split"] > 0, st.get("ip")         # split in software (core) toward tap1
    drops = st["drops"]
    assert not drops.get("bad_checksum") and not any(k.startswith("offload_") for k in drops), drops

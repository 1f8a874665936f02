#!/usr/bin/env python3
"""The bare baseline for scripts/bench.py: the least a Python program on a TAP can do.

    scripts/bench_baseline.py --tap TAP --netns NS --addr 2001:db8:1::2 --peer 2001:db8:1::1/64

Creates the TAP (IFF_TAP | IFF_NO_PI, blocking fd), moves its kernel side into the
existing namespace NS with the peer address (nodad) and brings it up, prints ``ready``
on stdout, then loops: read one frame, answer

- a Neighbor Solicitation for ``--addr`` with a Neighbor Advertisement
  (solicited, override, target link-layer address option);
- an ICMPv6 echo request to ``--addr`` with an echo reply: Ethernet and IPv6 addresses
  swapped in place, type 128 -> 129 and the checksum fixed incrementally (RFC 1624);

(not DAD probes) and ignores everything else (no validation beyond what picking those two needs).
SIGTERM/SIGINT end it; the TAP goes away with the fd. The namespace belongs to the
caller. Stdlib only, so that nothing of the stack is measured.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import os
import signal
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_TUN_EXCL = 0x8000
MAC = bytes.fromhex("020000000b02")
UNSPEC = bytes(16)


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    return ~s & 0xFFFF


def build_na(dst_mac: bytes, src: bytes, dst: bytes, target: bytes) -> bytes:
    body = bytearray(struct.pack("!BBHI16sBB6s", 136, 0, 0, 0x60000000, target, 2, 1, MAC))
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    c = csum(pseudo + bytes(body))
    body[2:4] = c.to_bytes(2, "big")
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, 255, src, dst)
    return dst_mac + MAC + b"\x86\xdd" + ip6 + bytes(body)


def setup(tap: str, netns: str, peer: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", tap.encode(), IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL))
    for cmd in (["ip", "link", "set", tap, "netns", netns],
                ["ip", "-n", netns, "link", "set", tap, "up"],
                ["ip", "-n", netns, "addr", "add", peer, "dev", tap, "nodad"]):
        subprocess.run(cmd, check=True)
    return fd


def serve(fd: int, addr: bytes) -> None:
    read, write = os.read, os.write
    ll = bytes.fromhex("fe80000000000000") + bytes([MAC[0] ^ 2]) + MAC[1:3] + b"\xff\xfe" + MAC[3:]
    ours = (addr, ll)
    while True:
        f = read(fd, 65536)
        if len(f) < 62 or f[12:14] != b"\x86\xdd" or f[20] != 58:
            continue
        t = f[54]
        if t == 128 and f[38:54] in ours:
            b = bytearray(f)
            b[0:6], b[6:12] = f[6:12], f[0:6]
            b[22:38], b[38:54] = f[38:54], f[22:38]
            b[54] = 129
            # RFC 1624 eqn 3: HC' = ~(~HC + ~m + m'); the word 0x80cc becomes 0x81cc: +0x100
            s = (~((f[56] << 8) | f[57]) & 0xFFFF) + 0x100
            s = (s & 0xFFFF) + (s >> 16)
            c = ~s & 0xFFFF
            b[56], b[57] = c >> 8, c & 0xFF
            write(fd, b)
        elif t == 135 and len(f) >= 78 and f[62:78] in ours and f[22:38] != UNSPEC:
            write(fd, build_na(f[6:12], f[62:78], f[22:38], f[62:78]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tap", required=True)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--addr", default="2001:db8:1::2", help="the baseline's IPv6 address")
    ap.add_argument("--peer", default="2001:db8:1::1/64", help="the kernel side's address/prefix")
    ns = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    fd = setup(ns.tap, ns.netns, ns.peer)
    print("ready", flush=True)
    try:
        serve(fd, ipaddress.IPv6Address(ns.addr).packed)
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())

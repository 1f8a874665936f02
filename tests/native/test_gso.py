"""Software GSO in C (native/gso.c, stack/link/gso.py) against its pure twin.

* a few hundred seeded TCP GSO frames (IPv6 / IPv4 with and without options, TCP
  options, payloads 0..64 KB, odd segment sizes, every flag byte incl. FIN/PSH/CWR,
  sequence wrap, ECN bit, partial or complete checksum): the C cut is byte-identical
  to ``segment_frame`` (``gso_segment``), and each segment is checked on its own:
  valid TCP and IPv4 header checksums, payloads that add up, seq advanced, FIN/PSH
  only on the last, CWR only on the first, IPv4 ident + 1 per segment;
* NEEDS_CSUM-only frames completed as ``complete_checksum`` does (0 -> 0xffff);
* bad shapes: the same ParseError reason from both, nothing written;
* random junk behind valid headers: equal frames or equal reasons;
* written to an AF_UNIX SOCK_SEQPACKET socketpair (a non-blocking fd with message
  boundaries, written with the same writev a TAP gets): the frames read back equal
  the cut; a full queue counts EAGAIN for every frame not written; a closed peer
  counts errors; ``TapLink.write`` on a plain link counts tx_frames / tx_gso_split.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import struct

import pytest

from stack.link import gso
from stack.link.tap import TapLink
from stack.wire.checksum import internet_checksum, ones_sum, pseudo_sum4, pseudo_sum6
from stack.wire.errors import ParseError
from stack.wire.gso import (
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    Offload,
    OffloadBytes,
    complete_checksum,
    segment_frame,
)

if not gso.available():
    reason = ("TAPSTACK_PURE=1 forces the pure backend" if os.environ.get("TAPSTACK_PURE", "") not in ("", "0")
              else "stack._native is not built (python native/build_native.py)")
    pytest.skip(reason, allow_module_level=True)

SRC6, DST6 = bytes.fromhex("20010db8000100000000000000000010"), bytes.fromhex("20010db8000200000000000000000020")
SRC4, DST4 = bytes([192, 0, 2, 10]), bytes([198, 51, 100, 20])
ETH6 = bytes.fromhex("020000000202" "020000000201" "86dd")
ETH4 = bytes.fromhex("020000000202" "020000000201" "0800")


def tcp_frame(rng: random.Random, *, v6: bool, payload: bytes, ip_opts: int = 0, tcp_opts: int = 0,
              flags: int = 0x18, seq: int = 1000, ident: int = 7, partial: bool = False) -> tuple[bytes, Offload]:
    """One Ethernet frame with a TCP packet and the Offload core / a kernel would give it."""
    thl = 20 + 4 * tcp_opts
    tcp = bytearray(struct.pack("!HHIIBBHHH", 4000, 80, seq & 0xFFFFFFFF, rng.getrandbits(32), (thl // 4) << 4,
                                flags, rng.getrandbits(16), 0, 0))
    tcp += rng.randbytes(thl - 20) + payload
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    pseudo = (pseudo_sum6 if v6 else pseudo_sum4)(src, dst, len(tcp), 6)
    if partial:
        tcp[16:18] = pseudo.to_bytes(2, "big")           # NEEDS_CSUM: the pseudo-header sum only
    else:
        tcp[16:18] = internet_checksum(tcp, pseudo).to_bytes(2, "big")
    if v6:
        ip = struct.pack("!IHBB", 0x60000000 | rng.getrandbits(20), len(tcp), 6, 64) + src + dst
        eth = ETH6
    else:
        ihl = 20 + 4 * ip_opts
        hdr = bytearray(struct.pack("!BBHHHBBH", 0x40 | ihl // 4, rng.getrandbits(8), ihl + len(tcp), ident,
                                    rng.choice((0, 0x4000)), 64, 6, 0) + src + dst + rng.randbytes(ihl - 20))
        hdr[10:12] = internet_checksum(hdr).to_bytes(2, "big")
        ip = bytes(hdr)
        eth = ETH4
    l4 = 14 + len(ip)
    off = Offload(F_NEEDS_CSUM if partial else 0, GSO_TCPV6 if v6 else GSO_TCPV4, l4 + thl, 0,
                  l4 if partial else 0, 16 if partial else 0)
    return eth + ip + bytes(tcp), off


def random_case(rng: random.Random) -> tuple[bytes, Offload]:
    v6 = rng.random() < 0.5
    kind = rng.random()
    if kind < 0.1:
        size = 0
    elif kind < 0.7:
        size = rng.randint(1, 6000)
    else:
        size = rng.randint(6000, 65535 - 40 - 60 - 60)
    ip_opts = 0 if v6 or rng.random() < 0.6 else rng.randint(1, 10)
    tcp_opts = rng.choice((0, 3, rng.randint(0, 10)))
    frame, off = tcp_frame(rng, v6=v6, payload=rng.randbytes(size), ip_opts=ip_opts, tcp_opts=tcp_opts,
                           flags=rng.getrandbits(8), seq=rng.choice((rng.getrandbits(32), 0xFFFFFFFF - 3000)),
                           ident=rng.choice((rng.getrandbits(16), 0xFFFF)), partial=rng.random() < 0.5)
    gso_size = rng.choice((1448, 1440, 1220, 536, rng.randint(1, 1500))) if size < 6000 or rng.random() < 0.9 \
        else rng.choice((1448, 8960, 65000))
    if size > 6000 and gso_size < 200:
        gso_size = 1448
    gso_type = off.gso_type | (GSO_ECN if rng.random() < 0.2 else 0)
    return frame, off._replace(gso_type=gso_type, gso_size=gso_size)


def check_segments(frame: bytes, off: Offload, segs: list[bytes]) -> None:
    """The cut on its own terms, not against the twin."""
    v6 = frame[12:14] == b"\x86\xdd"
    l4 = 14 + (40 if v6 else (frame[14] & 0x0F) * 4)
    thl = (frame[l4 + 12] >> 4) * 4
    end = 14 + (40 + int.from_bytes(frame[18:20], "big") if v6 else int.from_bytes(frame[16:18], "big"))
    payload = frame[l4 + thl:end]
    assert b"".join(s[l4 + thl:] for s in segs) == payload
    seq = int.from_bytes(frame[l4 + 4:l4 + 8], "big")
    flags = frame[l4 + 13]
    ident = int.from_bytes(frame[18:20], "big")
    for i, s in enumerate(segs):
        assert s[:14] == frame[:14]
        assert len(s) - l4 - thl <= off.gso_size
        tcp = s[l4:]
        src, dst = (s[22:38], s[38:54]) if v6 else (s[26:30], s[30:34])
        pseudo = (pseudo_sum6 if v6 else pseudo_sum4)(src, dst, len(tcp), 6)
        assert ones_sum(tcp, pseudo) == 0xFFFF, f"segment {i}: bad TCP checksum"
        if v6:
            assert int.from_bytes(s[18:20], "big") == len(s) - 54
        else:
            assert ones_sum(s[14:l4]) == 0xFFFF, f"segment {i}: bad IPv4 header checksum"
            assert int.from_bytes(s[16:18], "big") == len(s) - 14
            assert int.from_bytes(s[18:20], "big") == (ident + i) & 0xFFFF
        assert int.from_bytes(tcp[4:8], "big") == (seq + i * off.gso_size) & 0xFFFFFFFF
        want = flags
        if i != len(segs) - 1:
            want &= ~0x09
        if i != 0:
            want &= ~0x80
        assert tcp[13] == want
        assert tcp[:4] == frame[l4:l4 + 4] and tcp[8:13] == frame[l4 + 8:l4 + 13]


def test_random_gso_frames_identical_to_twin() -> None:
    rng = random.Random(8)
    total = 0
    for _ in range(300):
        frame, off = random_case(rng)
        want = segment_frame(frame, off)
        got = gso.cut(frame, off)
        assert got == want, off
        check_segments(frame, off, got)
        total += len(got)
    assert total > 3000


def test_needs_csum_only_completed_as_twin() -> None:
    rng = random.Random(5)
    for i in range(200):
        frame, off = tcp_frame(rng, v6=i % 2 == 0, payload=rng.randbytes(rng.randint(0, 1500)), partial=True,
                               tcp_opts=rng.randint(0, 10))
        off = off._replace(gso_type=0, hdr_len=0)
        want = segment_frame(frame, off)
        assert want == [complete_checksum(frame, off.csum_start, off.csum_offset)]
        assert gso.cut(frame, off) == want
        l4 = off.csum_start
        v6 = i % 2 == 0
        src, dst = (frame[22:38], frame[38:54]) if v6 else (frame[26:30], frame[30:34])
        pseudo = (pseudo_sum6 if v6 else pseudo_sum4)(src, dst, len(frame) - l4, 6)
        assert ones_sum(want[0][l4:], pseudo) == 0xFFFF
    # a sum that completes to 0 is stored as 0xffff, as the kernel does
    body = bytes(20) + b"\xff\xff"
    frame = ETH6 + body
    off = Offload(F_NEEDS_CSUM, 0, 0, 0, 14, 20)
    assert gso.cut(frame, off) == segment_frame(frame, off) == [ETH6 + bytes(20) + b"\xff\xff"]
    # neither GSO nor NEEDS_CSUM: as it is
    assert gso.cut(frame, Offload()) == [frame]


def test_bad_shapes_same_reason() -> None:
    rng = random.Random(3)
    f6, o6 = tcp_frame(rng, v6=True, payload=bytes(3000))
    f4, o4 = tcp_frame(rng, v6=False, payload=bytes(3000))
    o6, o4 = o6._replace(gso_size=1000), o4._replace(gso_size=1000)
    udp6 = bytearray(f6)
    udp6[20] = 17
    frag4 = bytearray(f4)
    frag4[20] |= 0x20                                  # MF
    cases = [
        (f6, o6._replace(gso_size=0), "gso_bad_size"),
        (f6, o6._replace(gso_type=GSO_UDP), "bad_gso"),
        (f6, o6._replace(gso_type=2), "bad_gso"),
        (bytes(udp6), o6, "gso_not_tcp"),
        (bytes(frag4), o4, "gso_not_tcp"),
        (f6[:14 + 59], o6, "gso_not_tcp"),                 # shorter than IPv6 + TCP headers
        (f6[:200], o6, "gso_truncated"),                   # payload length past the end
        (f4[:200], o4, "gso_truncated"),
        (f6[:10], o6, "gso_truncated"),                    # not even Ethernet
        (ETH6 + bytes(60), o6, "gso_not_tcp"),             # version 0
        (f6[:14] + b"\x70" + f6[15:], o6, "gso_not_tcp"),  # version 7
        (f4[:14] + b"\x44" + f4[15:], o4, "gso_not_tcp"),  # IHL 4
        (f6[:14 + 40 + 12] + b"\x40" + f6[14 + 40 + 13:], o6, "gso_truncated"),   # TCP offset 4
        (f6, Offload(F_NEEDS_CSUM, 0, 0, 0, len(f6) - 1, 0), "csum_bad_offset"),
        (f6, Offload(F_NEEDS_CSUM, 0, 0, 0, 14 + 40, 0xFFFF), "csum_bad_offset"),
    ]
    for frame, off, reason in cases:
        with pytest.raises(ParseError) as pure:
            segment_frame(frame, off)
        with pytest.raises(ParseError) as native:
            gso.cut(frame, off)
        assert pure.value.reason == native.value.reason == reason, (reason, pure.value.reason, native.value.reason)
        a, b = pair()
        try:
            w = gso.GsoWriter(a.fileno())
            assert w.write(frame, off) == -{v: k for k, v in gso.REASONS.items()}[reason]
            assert w.tx.frames == 0
            with pytest.raises(BlockingIOError):
                b.recv(70000)
        finally:
            a.close()
            b.close()


def test_random_junk_same_result() -> None:
    rng = random.Random(11)
    base6, o6 = tcp_frame(rng, v6=True, payload=bytes(2000))
    base4, o4 = tcp_frame(rng, v6=False, payload=bytes(2000), ip_opts=2)
    for i in range(3000):
        frame = bytearray(base6 if i % 2 else base4)
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(14, 14 + 80)] = rng.getrandbits(8)
        frame = frame[:rng.choice((len(frame), rng.randrange(0, len(frame))))]
        off = (o6 if i % 2 else o4)._replace(gso_size=rng.choice((1, 100, 1448)),
                                              gso_type=rng.choice((GSO_TCPV4, GSO_TCPV6)))
        try:
            want: list[bytes] | str = segment_frame(bytes(frame), off)
        except ParseError as e:
            want = e.reason
        try:
            got: list[bytes] | str = gso.cut(bytes(frame), off)
        except ParseError as e:
            got = e.reason
        assert got == want


def pair(sndbuf: int | None = None) -> tuple[socket.socket, socket.socket]:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    ours.setblocking(False)
    peer.setblocking(False)
    return ours, peer


def read_all(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(70000))
        except BlockingIOError:
            return out


def test_written_frames_equal_the_cut() -> None:
    rng = random.Random(21)
    ours, peer = pair()
    try:
        w = gso.GsoWriter(ours.fileno())
        for _ in range(20):
            frame, off = random_case(rng)
            if len(frame) > 30000:
                continue          # the socketpair's default buffer: this test is not about a full queue
            want = gso.cut(frame, off)
            n = w.write(frame, off)
            assert n == len(want) == w.tx.frames
            assert w.tx.bytes == sum(map(len, want))
            assert w.tx.err == 0
            assert read_all(peer) == want
    finally:
        ours.close()
        peer.close()


def test_full_queue_counts_every_frame_not_written() -> None:
    rng = random.Random(2)
    ours, peer = pair(sndbuf=4096)
    try:
        w = gso.GsoWriter(ours.fileno())
        frame, off = tcp_frame(rng, v6=True, payload=rng.randbytes(60000))
        off = off._replace(gso_size=1000)
        want = gso.cut(frame, off)
        n = w.write(frame, off)
        assert 0 < n < len(want)
        assert w.tx.err == errno.EAGAIN
        assert w.tx.frames == n and w.tx.full == len(want) - n
        assert w.tx.down == w.tx.errors == 0
        assert read_all(peer) == want[:n]
    finally:
        ours.close()
        peer.close()


def test_closed_peer_counts_errors() -> None:
    rng = random.Random(4)
    ours, peer = pair()
    peer.close()
    try:
        w = gso.GsoWriter(ours.fileno())
        frame, off = tcp_frame(rng, v6=False, payload=bytes(5000))
        off = off._replace(gso_size=1000)
        assert w.write(frame, off) == 0
        assert w.tx.err == errno.EPIPE
        assert w.tx.errors == 5 and w.tx.frames == w.tx.full == 0
    finally:
        ours.close()


class SockLink(TapLink):
    """A plain TapLink over one end of a socketpair instead of /dev/net/tun."""

    def __init__(self, sock: socket.socket) -> None:
        self.name = "sock"
        self.rx_frames = self.tx_frames = self.tx_full = self.tx_down = self.tx_errors = 0
        self.rx_errors = self.rx_offload = self.tx_gso = 0
        self.closed = False
        self.offload = False
        self._fd = sock.fileno()
        self._gso = gso.GsoWriter(self._fd)


def test_taplink_plain_cuts_in_c() -> None:
    rng = random.Random(9)
    ours, peer = pair(sndbuf=200000)
    try:
        link = SockLink(ours)
        frame, off = tcp_frame(rng, v6=True, payload=rng.randbytes(10000), flags=0x19, partial=True)
        off = off._replace(gso_size=1448)
        want = segment_frame(frame, off)
        assert link.write(OffloadBytes.make(frame, off))
        assert read_all(peer) == want
        assert link.tx_frames == 7 and link.tx_gso_split == 1
        # NEEDS_CSUM only: one frame, completed
        small, soff = tcp_frame(rng, v6=False, payload=bytes(100), partial=True)
        soff = soff._replace(gso_type=0)
        assert link.write(OffloadBytes.make(small, soff))
        assert read_all(peer) == [complete_checksum(small, soff.csum_start, soff.csum_offset)]
        assert link.tx_frames == 8 and link.tx_gso_split == 1
        # a bad one: dropped and counted
        assert not link.write(OffloadBytes.make(frame, off._replace(gso_type=GSO_UDP)))
        assert link.tx_gso_bad == 1 and link.tx_frames == 8
        assert read_all(peer) == []
        c = link.counters()
        assert c["tx_gso_split"] == 1 and c["tx_gso_bad"] == 1
    finally:
        ours.close()
        peer.close()


def test_taplink_full_queue_counted() -> None:
    rng = random.Random(6)
    ours, peer = pair(sndbuf=4096)
    try:
        link = SockLink(ours)
        frame, off = tcp_frame(rng, v6=False, payload=rng.randbytes(40000))
        off = off._replace(gso_size=1000)
        assert not link.write(OffloadBytes.make(frame, off))
        got = read_all(peer)
        assert 0 < len(got) < 40
        assert link.tx_frames == len(got) and link.tx_full == 40 - len(got)
    finally:
        ours.close()
        peer.close()

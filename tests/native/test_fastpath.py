"""The native per-flow fast path (native/fastpath.c, stack/link/fastpath.py).

No TAP needed: AF_UNIX SOCK_SEQPACKET socketpairs are non-blocking fds with message
boundaries, read and written with the same read()/writev() a TAP gets. ``SockLink`` is
a TapLink over such an fd, so ``TapLink.read_batch`` on the same bytes is the reference
for what a punted frame must look like.

* forwarding v6/v4: bytes equal the core slow path's (a two-interface router), hop
  limit / TTL, the IPv4 header checksum against a full recomputation (scapy), the
  0x0000 corners, trailing padding not sent;
* echo v6: reply bytes equal the core slow path's reply for the same request (parity),
  the ICMPv6 checksum against a full recomputation, 0x0000 and 0xffff corners;
* every punt condition returns the frame unchanged, as TapLink would, and sends nothing;
* tsk_fp_rx return codes: -1 budget, 0 empty, -2 read error, -3 EOF;
* write failures counted at the egress slot (peer closed, queue full);
* virtio-net header: GSO passed through to a vnet egress, zero header plain -> vnet;
* the table: overwrite, 2-way eviction, clear, remove_link;
* random junk: never a crash, every frame either punted unchanged or consumed and sent.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from harness import GA_A, GA_B, IF, MAC_A, MAC_B, ICMPv6EchoRequest, IPv6, eth6, one_stack, settle, smac
from scapy.layers.inet import IP, TCP, UDP  # type: ignore[import-untyped]
from scapy.layers.inet6 import IPv6ExtHdrHopByHop  # type: ignore[import-untyped]
from scapy.layers.l2 import ARP, Dot1Q, Ether  # type: ignore[import-untyped]

from stack.core.clock import ManualClock
from stack.core.stack import Stack
from stack.link import fastpath
from stack.link.tap import LinkGone, TapLink
from stack.wire import _pure
from stack.wire.addr import ip4, ip6
from stack.wire.ethernet import eth_header
from stack.wire.gso import Offload, offload_of

if not fastpath.available():
    reason = ("TAPSTACK_PURE=1 forces the pure backend" if os.environ.get("TAPSTACK_PURE", "") not in ("", "0")
              else "stack._native is not built (python native/build_native.py)")
    pytest.skip(reason, allow_module_level=True)

ffi, lib = fastpath._lib()

IN_A, IN_B = 2, 3
MAC_IN = bytes.fromhex("020000000101")      # our MAC on link A
MAC_PEER = bytes.fromhex("020000000102")    # the host on link A
MAC_OUT = bytes.fromhex("020000000201")     # our MAC on link B
MAC_NEXT = bytes.fromhex("020000000202")    # the next hop on link B
H1, H2 = ip6("2001:db8:1::10"), ip6("2001:db8:2::20")
V1, V2 = ip4("192.0.2.10"), ip4("198.51.100.20")
ETH_OUT6 = eth_header(MAC_NEXT, MAC_OUT, 0x86DD)
ETH_OUT4 = eth_header(MAC_NEXT, MAC_OUT, 0x0800)
ETH_BACK6 = eth_header(MAC_PEER, MAC_IN, 0x86DD)
ZERO_VNET = bytes(10)


class SockLink(TapLink):
    """A TapLink over one end of a socketpair instead of /dev/net/tun."""

    def __init__(self, sock: socket.socket, name: str, *, offload: bool = False) -> None:
        self.name = name
        self.rx_frames = self.tx_frames = self.tx_full = self.tx_down = self.tx_errors = 0
        self.rx_errors = self.rx_offload = self.tx_gso = 0
        self.closed = False
        self.offload = offload
        self.sock = sock
        self._fd = sock.fileno()


def seqpacket() -> tuple[socket.socket, socket.socket]:
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    peer.setblocking(False)
    return ours, peer


class Env:
    """Two links (A = ifindex 2, B = ifindex 3), each a socketpair: we hold one end
    (the link), the test plays the kernel on the other (``a``/``b``)."""

    def __init__(self, *, slots: int = 16, vnet_a: bool = False, vnet_b: bool = False) -> None:
        self.socks: list[socket.socket] = []
        ours_a, self.a = seqpacket()
        ours_b, self.b = seqpacket()
        self.socks += [ours_a, self.a, ours_b, self.b]
        self.link_a = SockLink(ours_a, "tapA", offload=vnet_a)
        self.link_b = SockLink(ours_b, "tapB", offload=vnet_b)
        self.fp = fastpath.FastPath(slots)
        assert self.fp.add_link(IN_A, self.link_a) and self.fp.add_link(IN_B, self.link_b)

    def close(self) -> None:
        for s in self.socks:
            s.close()

    def fwd6(self, mtu: int = 1500, src: bytes = H1, dst: bytes = H2, eth: bytes = ETH_OUT6) -> None:
        assert self.fp.install(family=6, action=fastpath.FORWARD, in_ifindex=IN_A, out_ifindex=IN_B,
                               src=src, dst=dst, eth=eth, in_mac=MAC_IN, mtu=mtu, hop_limit=0)

    def fwd4(self, mtu: int = 1500, src: bytes = V1, dst: bytes = V2) -> None:
        assert self.fp.install(family=4, action=fastpath.FORWARD, in_ifindex=IN_A, out_ifindex=IN_B,
                               src=src, dst=dst, eth=ETH_OUT4, in_mac=MAC_IN, mtu=mtu, hop_limit=0)

    def echo6(self, mtu: int = 1500, hop_limit: int = 64, src: bytes = H1, dst: bytes = H2) -> None:
        assert self.fp.install(family=6, action=fastpath.ECHO, in_ifindex=IN_A, out_ifindex=IN_A,
                               src=src, dst=dst, eth=ETH_BACK6, in_mac=MAC_IN, mtu=mtu, hop_limit=hop_limit)

    def feed(self, *frames: bytes, n: int = 64) -> list[bytes]:
        for fr in frames:
            self.a.send(fr)
        return self.fp.read_batch(IN_A, self.link_a, n)

    def stats(self, ifindex: int = IN_A) -> dict[str, int]:
        return self.fp.counters()[ifindex]


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(70000))
        except BlockingIOError:
            return out


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.close()


@pytest.fixture
def venv() -> Iterator[Env]:
    e = Env(vnet_a=True, vnet_b=True)
    yield e
    e.close()


def eth_in(ethertype: Any = None, dst_mac: bytes = MAC_IN) -> Any:
    e = Ether(dst=smac(dst_mac), src=smac(MAC_PEER))
    if ethertype is not None:
        e.type = ethertype
    return e


def udp6(hlim: int = 64, size: int = 100, src: bytes = H1, dst: bytes = H2, **kw: Any) -> bytes:
    return bytes(eth_in(**kw) / IPv6(src=str(ip6_str(src)), dst=ip6_str(dst), hlim=hlim) /
                 UDP(sport=1000, dport=2000) / (b"u" * size))


def udp4(ttl: int = 64, size: int = 100, ident: int = 1, tos: int = 0, **kw: Any) -> bytes:
    return bytes(eth_in(**kw) / IP(src="192.0.2.10", dst="198.51.100.20", ttl=ttl, id=ident, tos=tos) /
                 UDP(sport=1000, dport=2000) / (b"u" * size))


def ping6(seq: int = 1, data: bytes = b"x" * 16, tc: int = 0, fl: int = 0, hlim: int = 64,
          src: bytes = H1, dst: bytes = H2, dst_mac: bytes = MAC_IN, **icmp: Any) -> bytes:
    return bytes(Ether(dst=smac(dst_mac), src=smac(MAC_PEER)) /
                 IPv6(src=ip6_str(src), dst=ip6_str(dst), tc=tc, fl=fl, hlim=hlim) /
                 ICMPv6EchoRequest(id=0x4242, seq=seq, data=data, **icmp))


def ip6_str(a: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, a)


def full_icmp6_checksum(ip: bytes) -> int:
    """The checksum a full recomputation of the ICMPv6 message in ``ip`` gives."""
    msg = bytearray(ip[40:])
    msg[2:4] = b"\0\0"
    return _pure.internet_checksum(msg, _pure.pseudo_sum6(ip[8:24], ip[24:40], len(msg), 58))


def expected_forward(frame: bytes, eth: bytes) -> bytes:
    """What forwarding ``frame`` must send: recomputed by scapy, not incrementally."""
    if frame[12:14] == b"\x86\xdd":
        p = IPv6(frame[14:])
        p.hlim -= 1
        return eth + bytes(p)[:40 + p.plen]
    p = IP(frame[14:])
    p.ttl -= 1
    del p.chksum
    return eth + bytes(IP(bytes(p)))[:p.len]


# --- forwarding -----------------------------------------------------------------------


def test_forward_v6_decrements_the_hop_limit_and_uses_the_flow_ethernet_header(env: Env) -> None:
    env.fwd6()
    frames = [udp6(hlim=h, size=s) for h, s in ((64, 100), (2, 0), (255, 1400))]
    assert env.feed(*frames) == []
    out = drain(env.b)
    assert out == [expected_forward(f, ETH_OUT6) for f in frames]
    assert [IPv6(o[14:]).hlim for o in out] == [63, 1, 254]
    assert drain(env.a) == []
    a, b = env.stats(IN_A), env.stats(IN_B)
    assert (a["rx_packets"], a["rx_bytes"], a["fwd6"], a["punted"]) == (3, sum(map(len, frames)), 3, 0)
    assert (b["tx_packets"], b["tx_bytes"], b["rx_packets"]) == (3, sum(map(len, out)), 0)
    assert env.link_a.rx_frames == 0    # TapLink counters are for punted frames only


def test_forward_v4_ttl_and_header_checksum_match_a_full_recomputation(env: Env) -> None:
    env.fwd4()
    rng = random.Random(4)
    frames = [udp4(ttl=rng.randrange(2, 256), ident=rng.randrange(65536), tos=rng.randrange(256),
                   size=rng.randrange(0, 1400)) for _ in range(300)]
    out = []
    for f in frames:
        assert env.feed(f) == []
        out += drain(env.b)
    assert out == [expected_forward(f, ETH_OUT4) for f in frames]
    assert env.stats()["fwd4"] == 300 and env.stats(IN_B)["tx_packets"] == 300


def core_router() -> Any:
    """A core Stack forwarding between tap0 (ifindex 2, MAC_IN, host MAC_PEER with H1/V1)
    and tap1 (ifindex 3, MAC_OUT, next hop MAC_NEXT with H2/V2), neighbors PERMANENT."""
    clock = ManualClock()
    st = Stack(rng=random.Random(5), now=clock.now(), forwarding=True)
    assert st.add_interface("tap0", MAC_IN, now=clock.now(), dad_transmits=0) == IN_A
    assert st.add_interface("tap1", MAC_OUT, now=clock.now(), dad_transmits=0) == IN_B
    st.add_address(IN_A, ip6("2001:db8:1::1"), 64, clock.now())
    st.add_address(IN_B, ip6("2001:db8:2::1"), 64, clock.now())
    st.add_address(IN_A, ip4("192.0.2.1"), 24, clock.now())
    st.add_address(IN_B, ip4("198.51.100.1"), 24, clock.now())
    for ifx, addr, m in ((IN_A, H1, MAC_PEER), (IN_A, V1, MAC_PEER), (IN_B, H2, MAC_NEXT), (IN_B, V2, MAC_NEXT)):
        st.add_neighbor(ifx, addr, m, clock.now())
    settle(st, clock)
    st.drain_tx()
    return st, clock


def test_forwarding_equals_the_core_slow_path(env: Env) -> None:
    st, clock = core_router()
    env.fwd6()
    env.fwd4()
    rng = random.Random(7)
    for i in range(60):
        if i % 2:
            f = udp4(ttl=rng.randrange(2, 256), ident=rng.randrange(65536), tos=rng.randrange(256),
                     size=rng.randrange(1400))
        else:
            f = bytes(eth_in() / IPv6(src=ip6_str(H1), dst=ip6_str(H2), hlim=rng.randrange(2, 256),
                                      tc=rng.randrange(256), fl=rng.randrange(1 << 20)) /
                      UDP(sport=1, dport=2) / rng.randbytes(rng.randrange(1400)))
        st.receive(IN_A, f, clock.now())
        (ifx, want), = st.drain_tx()
        assert env.feed(f) == []
        assert ifx == IN_B and drain(env.b) == [bytes(want)], f"frame {i}"


def _ident_for_checksum(target: int, ttl: int) -> int:
    """An IPv4 identification for which udp4(ttl, ident)'s header checksum is ``target``."""
    hdr = bytearray(udp4(ttl=ttl, ident=0)[14:34])
    hdr[10:12] = b"\0\0"
    for ident in range(65536):
        hdr[4:6] = ident.to_bytes(2, "big")
        if _pure.internet_checksum(hdr) == target:
            assert IP(udp4(ttl=ttl, ident=ident)[14:]).chksum == target
            return ident
    raise AssertionError("no such header")


@pytest.mark.parametrize("corner", ["request", "forwarded"])
def test_forward_v4_checksum_zero_corners(env: Env, corner: str) -> None:
    # A header whose checksum is 0x0000 before the TTL decrement, and one whose checksum
    # is 0x0000 after it: the incremental update must give the recomputed value (never 0xffff).
    ident = _ident_for_checksum(0, 64 if corner == "request" else 63)
    frame = udp4(ttl=64, ident=ident)
    env.fwd4()
    assert env.feed(frame) == []
    (out,) = drain(env.b)
    assert out == expected_forward(frame, ETH_OUT4)
    assert (out[24:26] == b"\0\0") == (corner == "forwarded")


def test_forward_sends_ip_length_bytes_not_the_ethernet_padding(env: Env) -> None:
    env.fwd4()
    env.fwd6()
    small4 = udp4(size=2) + bytes(14)          # padded to the 60-byte minimum and beyond
    small6 = udp6(size=1) + b"\xaa" * 9
    assert env.feed(small4, small6) == []
    out = drain(env.b)
    assert [len(o) for o in out] == [14 + 20 + 8 + 2, 14 + 40 + 8 + 1]
    assert out == [expected_forward(small4, ETH_OUT4), expected_forward(small6, ETH_OUT6)]
    assert env.stats()["rx_bytes"] == len(small4) + len(small6)


# --- echo -----------------------------------------------------------------------------


def core_echo_reply(request: bytes) -> bytes:
    """The reply the core slow path sends for ``request`` (B -> A, a known neighbor)."""
    st, clock = one_stack()
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.receive(IF, request, clock.now())
    (ifx, frame), = st.drain_tx()
    assert ifx == IF
    return bytes(frame)


def test_echo6_reply_equals_the_core_slow_path_reply() -> None:
    rng = random.Random(6)
    e = Env()
    try:
        st, _ = one_stack()
        hop_limit = st.interfaces[IF].nd.cur_hop_limit
        assert e.fp.install(family=6, action=fastpath.ECHO, in_ifindex=IN_A, out_ifindex=IN_A, src=GA_B, dst=GA_A,
                            eth=eth_header(MAC_B, MAC_A, 0x86DD), in_mac=MAC_A, mtu=1500, hop_limit=hop_limit)
        for i in range(40):
            size = rng.choice([0, 1, 7, 56, 57, 1000, 1452])
            req = bytes(eth6() / IPv6(src=ip6_str(GA_B), dst=ip6_str(GA_A), tc=rng.randrange(256),
                                      fl=rng.randrange(1 << 20), hlim=rng.randrange(1, 256)) /
                        ICMPv6EchoRequest(id=rng.randrange(65536), seq=i, data=rng.randbytes(size)))
            if i % 5 == 0:
                req += bytes(rng.randrange(1, 20))     # Ethernet padding: not part of the reply
            assert e.feed(req) == []
            (got,) = drain(e.a)
            assert got == core_echo_reply(req), f"request {i}"
        assert e.stats()["echo6"] == 40 and e.stats()["tx_packets"] == 40 and drain(e.b) == []
    finally:
        e.close()


def _echo6_with_checksum(target: int) -> bytes:
    f = ping6(seq=0, data=b"")
    msg = bytearray(f[54:])
    msg[2:4] = b"\0\0"
    psum = _pure.pseudo_sum6(H1, H2, len(msg), 58)
    for seq in range(65536):
        msg[6:8] = seq.to_bytes(2, "big")
        if _pure.internet_checksum(msg, psum) == target:
            f = ping6(seq=seq, data=b"")
            assert IPv6(f[14:])[ICMPv6EchoRequest].cksum == target
            return f
    raise AssertionError("no such request")


def _reply_checksum(env: Env, req: bytes) -> tuple[bytes, int]:
    env.a.send(req)
    assert env.fp.read_batch(IN_A, env.link_a, 8) == []
    (rep,) = drain(env.a)
    return rep, full_icmp6_checksum(rep[14:])


@pytest.mark.parametrize("case", ["request_zero", "reply_zero", "request_ffff"])
def test_echo6_checksum_corners_match_a_full_recomputation(env: Env, case: str) -> None:
    env.echo6()
    if case == "request_zero":
        req = _echo6_with_checksum(0)
    elif case == "reply_zero":
        req = _echo6_with_checksum(0x0100)       # 0x8000 -> 0x8100 takes 0x0100 to 0x0000
    else:
        # 0xffff is the other zero: a request computed as 0x0000 verifies with 0xffff too
        req = bytearray(_echo6_with_checksum(0))
        req[14 + 40 + 2:14 + 40 + 4] = b"\xff\xff"
        req = bytes(req)
    rep, full = _reply_checksum(env, req)
    assert int.from_bytes(rep[14 + 40 + 2:14 + 40 + 4], "big") == full
    assert (full == 0) == (case == "reply_zero")


def test_echo6_reply_fields(env: Env) -> None:
    env.echo6(hop_limit=77)
    req = ping6(tc=0xB9, fl=0xABCDE, hlim=3, data=b"hello")
    rep, full = _reply_checksum(env, req)
    p = IPv6(rep[14:])
    assert rep[:14] == ETH_BACK6
    assert (p.tc, p.fl, p.hlim, p.src, p.dst, p.plen, p.nh) == (0xB9, 0, 77, ip6_str(H2), ip6_str(H1), 8 + 5, 58)
    assert (rep[54], rep[55], bytes(rep[58:])) == (129, 0, req[58:])
    assert int.from_bytes(rep[56:58], "big") == full


# --- punts ----------------------------------------------------------------------------


def _hbh6() -> bytes:
    return bytes(eth_in() / IPv6(src=ip6_str(H1), dst=ip6_str(H2)) / IPv6ExtHdrHopByHop() / UDP() / b"x")


def _v4_options() -> bytes:
    return bytes(eth_in() / IP(src="192.0.2.10", dst="198.51.100.20", options=b"\x01\x01\x01\x00") / UDP() / b"x")


def _bad_v4_checksum() -> bytes:
    f = bytearray(udp4())
    f[24] ^= 0x01
    return bytes(f)


def _patched(frame: bytes, off: int, value: bytes) -> bytes:
    f = bytearray(frame)
    f[off:off + len(value)] = value
    return bytes(f)


PUNTS: dict[str, Any] = {
    "wrong_mac": lambda: udp6(dst_mac=MAC_OUT),
    "multicast_mac": lambda: udp6(dst_mac=bytes.fromhex("333300000001")),
    "hop_by_hop": _hbh6,
    "hop_limit_1": lambda: udp6(hlim=1),
    "hop_limit_0": lambda: udp6(hlim=0),
    "ttl_1": lambda: udp4(ttl=1),
    "ttl_0": lambda: udp4(ttl=0),
    "too_big_v6": lambda: udp6(size=1500 - 48 + 1),
    "too_big_v4": lambda: udp4(size=1500 - 28 + 1),
    "ipv4_options": _v4_options,
    "bad_ipv4_checksum": _bad_v4_checksum,
    "unknown_flow_v6": lambda: udp6(dst=ip6("2001:db8:2::21")),
    "unknown_flow_src_v6": lambda: udp6(src=ip6("2001:db8:1::11")),
    "unknown_flow_v4": lambda: bytes(eth_in() / IP(src="192.0.2.10", dst="198.51.100.21") / UDP()),
    "truncated_eth": lambda: udp6()[:13],
    "truncated_ipv6_header": lambda: udp6()[:14 + 39],
    "truncated_ipv6_payload": lambda: udp6()[:-1],
    "truncated_ipv4_header": lambda: udp4()[:14 + 19],
    "truncated_ipv4_total": lambda: udp4()[:-1],
    "ipv4_total_below_20": lambda: _patched(udp4(), 16, b"\x00\x13"),
    "arp": lambda: bytes(eth_in() / ARP()),
    "vlan": lambda: bytes(eth_in() / Dot1Q(vlan=5) / IPv6(src=ip6_str(H1), dst=ip6_str(H2)) / UDP()),
    "v4_in_86dd": lambda: bytes(eth_in(ethertype=0x86DD) / IP(src="192.0.2.10", dst="198.51.100.20") /
                                UDP() / (b"\0" * 40)),
    "v6_in_0800": lambda: bytes(eth_in(ethertype=0x0800) / IPv6(src=ip6_str(H1), dst=ip6_str(H2)) / UDP()),
    # echo flow H1 -> H2 is replaced by these for the echo cases below
    "echo_bad_checksum": lambda: ping6(cksum=0x1234),
    "echo_code_1": lambda: ping6(code=1),
    "echo_reply_type": lambda: _patched(ping6(), 54, b"\x81"),
    "echo_short": lambda: bytes(eth_in() / IPv6(src=ip6_str(H1), dst=ip6_str(H2), nh=58) /
                                b"\x80\x00\x00\x00\x00\x01"),
    "echo_udp": lambda: udp6(),
    "echo_too_big": lambda: ping6(data=b"x" * 1200),
    "echo_to_multicast": lambda: ping6(dst=ip6("ff02::1"), dst_mac=MAC_IN),
    "echo_hop_by_hop": lambda: bytes(eth_in() / IPv6(src=ip6_str(H1), dst=ip6_str(H2)) /
                                     IPv6ExtHdrHopByHop() / ICMPv6EchoRequest()),
}


@pytest.mark.parametrize("name", sorted(PUNTS))
def test_punted_frames_come_back_unchanged_and_nothing_is_sent(env: Env, name: str) -> None:
    if name.startswith("echo_"):
        env.echo6(mtu=1200)
        # the multicast case needs a flow for its own key, or it would only test "unknown flow"
        assert env.fp.install(family=6, action=fastpath.ECHO, in_ifindex=IN_A, out_ifindex=IN_A, src=H1,
                              dst=ip6("ff02::1"), eth=ETH_BACK6, in_mac=MAC_IN, mtu=1500, hop_limit=64)
    else:
        env.fwd6()
        env.fwd4()
    frame = PUNTS[name]()
    assert env.feed(frame) == [frame]
    assert drain(env.a) == [] and drain(env.b) == []
    a = env.stats()
    assert (a["punted"], a["rx_packets"], a["fwd6"] + a["fwd4"] + a["echo6"]) == (1, 0, 0)
    assert env.link_a.rx_frames == 1
    assert env.stats(IN_B)["tx_packets"] == 0


def test_the_checks_let_the_unpunted_twins_through(env: Env) -> None:
    """The frames next to the punt cases pass: the checks are not simply always false."""
    env.fwd6(mtu=1500)
    env.fwd4(mtu=1500)
    ok = [udp6(hlim=2), udp4(ttl=2), udp6(size=1500 - 48), udp4(size=1500 - 28)]
    assert env.feed(*ok) == []
    assert len(drain(env.b)) == 4
    env.fp.clear()
    env.echo6(mtu=1200)
    assert env.feed(ping6(data=b"x" * (1200 - 48))) == []
    assert len(drain(env.a)) == 1


def test_punted_frames_equal_what_taplink_returns_on_a_vnet_link(venv: Env) -> None:
    venv.fwd6()
    gso_udp = struct.pack("<BBHHHH", 1, 3, 14 + 48, 1000, 54, 6)
    short = b"\x01\x02\x03"
    raw = [ZERO_VNET + udp6(dst_mac=MAC_OUT), gso_udp + udp6(), short, ZERO_VNET + udp6(hlim=1)]
    ref = SockLink(venv.link_a.sock, "ref", offload=True)
    for r in raw:
        venv.a.send(r)
    expect = ref.read_batch(64)
    for r in raw:
        venv.a.send(r)
    got = venv.fp.read_batch(IN_A, venv.link_a, 64)
    assert got == expect and [type(x) for x in got] == [type(x) for x in expect]
    assert [offload_of(x) for x in got] == [offload_of(x) for x in expect]
    assert offload_of(got[1]) == Offload(1, 3, 14 + 48, 1000, 54, 6)
    lk = venv.link_a
    assert (lk.rx_frames, lk.rx_errors, lk.rx_offload) == (ref.rx_frames, ref.rx_errors, ref.rx_offload) == (3, 1, 1)
    assert venv.stats()["punted"] == 4 and drain(venv.b) == []


# --- tsk_fp_rx return codes -----------------------------------------------------------


def _rx(env: Env, budget: int, sock: socket.socket | None = None, slot: int = 0, vnet: int = 0) -> int:
    fd = (sock or env.link_a.sock).fileno()
    return int(lib.tsk_fp_rx(env.fp._table, fd, slot, vnet, env.fp._buf, fastpath.BUF_SIZE, budget))


def test_rx_codes_empty_budget_punt_eof(env: Env) -> None:
    env.fwd6()
    assert _rx(env, 8) == 0                                  # empty
    for _ in range(5):
        env.a.send(udp6())
    assert _rx(env, 3) == -1                                 # budget used up, more waiting
    assert _rx(env, 0) == -1
    punt = udp6(hlim=1)
    env.a.send(punt)
    n = _rx(env, 8)                                          # two forwarded, then the punt
    assert n == len(punt) and ffi.unpack(env.fp._buf, n) == punt
    assert _rx(env, 8) == 0
    assert env.stats()["fwd6"] == 5 and env.stats()["punted"] == 1
    env.a.close()
    assert _rx(env, 8) == -3                                 # the peer is gone: EOF


def test_rx_read_error_sets_err() -> None:
    e = Env()
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        n = int(lib.tsk_fp_rx(e.fp._table, fd, 0, 0, e.fp._buf, fastpath.BUF_SIZE, 4))
        assert (n, e.fp._table.err) == (-2, errno.EISDIR)
        n = int(lib.tsk_fp_rx(e.fp._table, fd, 64, 0, e.fp._buf, fastpath.BUF_SIZE, 4))   # slot out of range
        assert (n, e.fp._table.err) == (-2, errno.EINVAL)
        n = int(lib.tsk_fp_rx(e.fp._table, fd, 0, 4, e.fp._buf, fastpath.BUF_SIZE, 4))    # vnet not 0/10
        assert (n, e.fp._table.err) == (-2, errno.EINVAL)
        # the wrapper: an error that is not "link gone" is counted, like TapLink
        dirlink = SockLink(e.link_a.sock, "dir")
        dirlink._fd = fd
        assert e.fp.add_link(5, dirlink)
        assert e.fp.read_batch(5, dirlink, 8) == [] and dirlink.rx_errors == 1
    finally:
        os.close(fd)
        e.close()


def test_read_batch_respects_max_frames_and_raises_link_gone(env: Env) -> None:
    env.fwd6()
    frames = [udp6(), udp6(hlim=1), udp6(), udp6(), udp6(hlim=1)]
    got = env.feed(*frames, n=3)                 # reads: fwd, punt, fwd
    assert got == [frames[1]] and len(drain(env.b)) == 2 and env.fp.consumed == 2
    assert env.fp.read_batch(IN_A, env.link_a, 64) == [frames[4]] and env.fp.consumed == 1
    assert env.fp.read_batch(IN_A, env.link_a, 64) == [] and env.fp.consumed == 0
    assert env.link_a.rx_frames == 2 and env.stats()["fwd6"] == 3
    env.a.close()
    with pytest.raises(LinkGone) as ei:
        env.fp.read_batch(IN_A, env.link_a, 64)
    assert ei.value.errno == errno.EIO and ei.value.name == "tapA"


def test_a_link_without_a_slot_reads_through_taplink(env: Env) -> None:
    other, peer = seqpacket()
    try:
        lk = SockLink(other, "tapC")
        peer.send(b"abc")
        assert env.fp.read_batch(9, lk, 4) == [b"abc"] and lk.rx_frames == 1
    finally:
        other.close()
        peer.close()


# --- write failures -------------------------------------------------------------------


def test_write_to_a_closed_peer_is_counted_at_the_egress_slot(env: Env) -> None:
    env.fwd6()
    env.b.close()
    assert env.feed(udp6(), udp6()) == []
    a, b = env.stats(IN_A), env.stats(IN_B)
    assert (a["rx_packets"], a["fwd6"], a["punted"]) == (2, 2, 0)
    assert (b["tx_packets"], b["tx_errors"], b["tx_full"], b["tx_down"]) == (0, 2, 0, 0)


def test_a_full_egress_queue_counts_tx_full(env: Env) -> None:
    env.fwd6()
    env.link_b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = 0
    while env.stats(IN_B)["tx_full"] == 0:
        assert sent < 10_000, "the egress queue never filled"
        assert env.feed(udp6(size=1000)) == []
        sent += 1
    b = env.stats(IN_B)
    assert b["tx_packets"] + b["tx_full"] == sent == env.stats()["rx_packets"]
    assert len(drain(env.b)) == b["tx_packets"]


# --- virtio-net header ----------------------------------------------------------------


def tcp6_gso(payload: int = 4000) -> bytes:
    return bytes(eth_in() / IPv6(src=ip6_str(H1), dst=ip6_str(H2), hlim=64) /
                 TCP(sport=1, dport=2, flags="A", options=[("NOP", None)] * 4) / (b"t" * payload))


def vhdr(flags: int = 1, gso: int = 4, gso_size: int = 1400, csum_start: int = 54, csum_off: int = 16,
         hdr_len: int = 14 + 40 + 24) -> bytes:
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, csum_start, csum_off)


def test_vnet_gso_frame_passes_through_with_its_header(venv: Env) -> None:
    venv.fwd6(mtu=1500)
    frame = tcp6_gso()
    hdr = vhdr(gso_size=1500 - 40 - 24)           # segment = exactly the MTU
    assert venv.feed(hdr + frame) == []
    (out,) = drain(venv.b)
    assert out == hdr + expected_forward(frame, ETH_OUT6)
    assert venv.stats(IN_B)["tx_bytes"] == len(out) - 10


@pytest.mark.parametrize("hdr", [
    vhdr(gso_size=1500 - 40 - 24 + 1),           # a segment over the MTU
    vhdr(gso=3),                                   # UDP GSO
    vhdr(gso=4 | 0x80),                            # the ECN bit
    vhdr(gso=1),                                   # TCPV4 on an IPv6 packet
    vhdr(gso_size=0),
    vhdr(flags=4),                                 # unknown flag
    vhdr(gso=0, csum_start=14 + 40 + 4000),        # csum_start outside the packet
    vhdr(gso=0, csum_start=20),                    # csum_start inside the IP header
], ids=["seg_over_mtu", "udp", "ecn", "tcpv4_on_v6", "gso_size_0", "flag_4", "csum_out", "csum_in_ip"])
def test_vnet_punts(venv: Env, hdr: bytes) -> None:
    venv.fwd6(mtu=1500)
    frame = tcp6_gso()
    (got,) = venv.feed(hdr + frame)
    assert got == frame and offload_of(got) == Offload(*struct.unpack("<BBHHHH", hdr))
    assert drain(venv.b) == [] and venv.stats()["punted"] == 1


def test_vnet_gso_to_a_plain_link_and_echo_with_a_header_are_punted() -> None:
    e = Env(vnet_a=True, vnet_b=False)
    try:
        e.fwd6()
        (got,) = e.feed(vhdr() + tcp6_gso())
        assert offload_of(got) is not None and drain(e.b) == []
        e.fp.clear()
        e.echo6()
        (got,) = e.feed(vhdr(flags=2, gso=0) + ping6())
        assert got == ping6() and drain(e.a) == []
        # a plain frame (zero header) on the vnet ingress: forwarded without a header
        e.fwd6()
        e.echo6(src=H2, dst=H1)
        assert e.feed(ZERO_VNET + udp6(), ZERO_VNET + ping6(src=H2, dst=H1)) == []
        assert drain(e.b) == [expected_forward(udp6(), ETH_OUT6)]
        assert len(drain(e.a)) == 1 and e.stats()["echo6"] == 1
    finally:
        e.close()


def test_plain_to_vnet_gets_a_zero_header() -> None:
    e = Env(vnet_a=False, vnet_b=True)
    try:
        e.fwd6()
        e.fwd4()
        assert e.feed(udp6(), udp4()) == []
        assert drain(e.b) == [ZERO_VNET + expected_forward(udp6(), ETH_OUT6),
                              ZERO_VNET + expected_forward(udp4(), ETH_OUT4)]
    finally:
        e.close()


def test_vnet_needs_csum_without_gso_and_v4_gso(venv: Env) -> None:
    venv.fwd4(mtu=1500)
    frame = bytes(eth_in() / IP(src="192.0.2.10", dst="198.51.100.20", ttl=9) / TCP(flags="A") / (b"z" * 3000))
    hdr = vhdr(gso=1, gso_size=1460, csum_start=34, hdr_len=54)
    assert venv.feed(hdr + frame) == []
    (out,) = drain(venv.b)
    assert out == hdr + expected_forward(frame, ETH_OUT4)
    csum_only = vhdr(gso=0, gso_size=0, csum_start=34)
    small = bytes(eth_in() / IP(src="192.0.2.10", dst="198.51.100.20") / TCP() / b"q")
    assert venv.feed(csum_only + small) == []
    assert drain(venv.b) == [csum_only + expected_forward(small, ETH_OUT4)]
    (big,) = venv.feed(csum_only + frame)        # without GSO the packet itself must fit
    assert big == frame


# --- the table ------------------------------------------------------------------------


def test_direct_mapped_table_overwrites_and_reinstall_updates() -> None:
    e = Env(slots=1)
    try:
        e.fwd6()
        e.fwd6(dst=ip6("2001:db8:2::21"))            # the one slot now holds this flow
        assert e.feed(udp6()) == [udp6()]
        assert e.feed(udp6(dst=ip6("2001:db8:2::21"))) == []
        other_eth = eth_header(MAC_PEER, MAC_OUT, 0x86DD)
        e.fwd6(dst=ip6("2001:db8:2::21"), eth=other_eth)
        assert e.feed(udp6(dst=ip6("2001:db8:2::21"))) == []
        assert [o[:14] for o in drain(e.b)] == [ETH_OUT6, other_eth]
    finally:
        e.close()


def test_two_way_table_keeps_two_and_evicts_the_older() -> None:
    e = Env(slots=2)
    try:
        dsts = [ip6(f"2001:db8:2::{i:x}") for i in (0x21, 0x22, 0x23)]
        e.fwd6(dst=dsts[0])
        e.fwd6(dst=dsts[1])
        assert e.feed(udp6(dst=dsts[0]), udp6(dst=dsts[1])) == []
        e.fwd6(dst=dsts[1])                       # same key: overwritten in place, nothing evicted
        assert e.feed(udp6(dst=dsts[0])) == []
        e.fwd6(dst=dsts[2])                       # the older of the two ways (dsts[0]) goes
        assert e.feed(udp6(dst=dsts[0])) == [udp6(dst=dsts[0])]
        assert e.feed(udp6(dst=dsts[1]), udp6(dst=dsts[2])) == []
    finally:
        e.close()


def test_big_table_holds_many_flows_and_clear_empties_it() -> None:
    e = Env(slots=4096)
    try:
        dsts = [ip6(f"2001:db8:2::{i:x}") for i in range(1, 201)]
        for d in dsts:
            e.fwd6(dst=d)
        got = [len(e.feed(udp6(dst=d))) for d in dsts]
        assert sum(got) <= 4              # 2-way sets of 4096 slots: at most a rare eviction
        e.fp.clear()
        assert all(e.feed(udp6(dst=d)) == [udp6(dst=d)] for d in dsts[:20])
        e.fwd6(dst=dsts[0])
        e.fp.remove_link(IN_B)            # any flow may point at its fd: all gone
        assert e.feed(udp6(dst=dsts[0])) == [udp6(dst=dsts[0])]
        assert not e.fp.install(family=6, action=1, in_ifindex=IN_A, out_ifindex=IN_B, src=H1, dst=H2,
                                eth=ETH_OUT6, in_mac=MAC_IN, mtu=1500, hop_limit=0)
    finally:
        e.close()


def test_clear_is_a_generation_bump_and_a_wrap_wipes_the_slots() -> None:
    """clear() voids every flow at once (flows carry the table's gen); when gen wraps to
    0 the slots are wiped, so a flow installed 2^32 clears earlier cannot match again."""
    e = Env(slots=2)
    try:
        e.fwd6()
        e.fp.clear()
        assert e.feed(udp6()) == [udp6()]
        e.fwd6()                                  # a new install in the new gen works
        assert e.feed(udp6()) == []
        e.fp._table.gen = 0xFFFFFFFF              # the last gen before the wrap
        e.fwd6()
        assert e.feed(udp6()) == []
        e.fp.clear()                              # gen 0 again: the slots are wiped
        assert e.fp._table.gen == 0 and e.fp._flows[0].family == 0 and e.fp._flows[1].family == 0
        assert e.feed(udp6()) == [udp6()]
        drain(e.b)
    finally:
        e.close()


def test_slots_and_bad_arguments(env: Env) -> None:
    fp = fastpath.FastPath(2)
    links = [SockLink(env.link_a.sock, f"t{i}") for i in range(65)]
    assert all(fp.add_link(100 + i, links[i]) for i in range(64))
    assert not fp.add_link(200, links[64])
    fp.remove_link(100)
    assert fp.add_link(200, links[64])
    for bad in (0, 3, 6):
        with pytest.raises(ValueError):
            fastpath.FastPath(bad)
    kw: dict[str, Any] = dict(family=6, action=1, in_ifindex=IN_A, out_ifindex=IN_B, src=H1, dst=H2,
                              eth=ETH_OUT6, in_mac=MAC_IN, mtu=1500, hop_limit=0)
    for change in ({"family": 5}, {"action": 3}, {"src": V1}, {"eth": b"x"}, {"in_mac": b""}, {"hop_limit": 256}):
        with pytest.raises(ValueError):
            env.fp.install(**{**kw, **change})


def test_counters_are_cumulative_from_add_link(env: Env) -> None:
    env.fwd6()
    env.feed(udp6(), udp6(hlim=1))
    env.fp.remove_link(IN_A)
    assert IN_A not in env.fp.counters()
    assert env.fp.add_link(IN_A, env.link_a)             # the same slot again, counters from zero
    assert env.fp.counters()[IN_A] == dict.fromkeys(fastpath.COUNTERS, 0)
    env.fwd6()
    env.feed(udp6())
    assert env.stats()["fwd6"] == 1 and env.stats(IN_B)["tx_packets"] == 2


# --- junk -----------------------------------------------------------------------------


def _mutate(rng: random.Random, base: bytes) -> bytes:
    f = bytearray(base)
    r = rng.random()
    if r < 0.3:
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(f))
            f[i] ^= 1 << rng.randrange(8)
    elif r < 0.5:
        f = f[:rng.randrange(len(f) + 1)]
    elif r < 0.7:
        f = f[:14 + rng.randrange(60)] + bytearray(rng.randbytes(rng.randrange(200)))
    elif r < 0.85:
        # a header field set to a random value: version, lengths, hop limit, protocol
        i = 14 + rng.choice([0, 1, 4, 5, 6, 7, 2, 3, 8, 9, 10, 11])
        if i < len(f):
            f[i] = rng.randrange(256)
    return bytes(f)


def test_random_junk_is_punted_unchanged_or_consumed_and_sent_once() -> None:
    rng = random.Random(20261204)
    for vnet in (False, True):
        e = Env(vnet_a=vnet, vnet_b=vnet)
        try:
            e.fwd6()
            e.fwd4()
            assert e.fp.install(family=6, action=fastpath.ECHO, in_ifindex=IN_A, out_ifindex=IN_A, src=H2, dst=H1,
                                eth=ETH_BACK6, in_mac=MAC_IN, mtu=1500, hop_limit=64)
            bases = [udp6(), udp4(), ping6(src=H2, dst=H1), tcp6_gso(500), udp6(size=0), udp4(size=0)]
            sent = consumed = 0
            for _ in range(3000):
                frame = _mutate(rng, rng.choice(bases))
                if vnet:
                    frame = (ZERO_VNET if rng.random() < 0.5 else rng.choice(
                        [vhdr(), vhdr(gso=1), vhdr(flags=2, gso=0), rng.randbytes(10)])) + frame
                if not frame:
                    continue
                before = e.stats()["rx_packets"]
                expect_ref = SockLink(e.link_a.sock, "ref", offload=vnet)
                e.a.send(frame)
                got = e.fp.read_batch(IN_A, e.link_a, 1)
                sent += 1
                if e.stats()["rx_packets"] == before:
                    e.a.send(frame)
                    expect = expect_ref.read_batch(1)               # punted: as TapLink returns it
                    assert got == expect and [offload_of(x) for x in got] == [offload_of(x) for x in expect]
                    assert drain(e.a) == [] and drain(e.b) == []
                    continue
                consumed += 1
                assert got == []
                out = drain(e.a) + drain(e.b)
                assert len(out) == 1
                pkt = out[0][10:] if vnet else out[0]
                ip = pkt[14:]
                if ip[0] >> 4 == 4:
                    assert _pure.ones_sum(ip[:20]) == 0xFFFF
                    assert pkt == expected_forward(frame[10:] if vnet else frame, ETH_OUT4)
                elif pkt[:14] == ETH_BACK6:
                    assert ip[40] == 129 and full_icmp6_checksum(ip) == int.from_bytes(ip[42:44], "big")
                else:
                    assert pkt == expected_forward(frame[10:] if vnet else frame, ETH_OUT6)
            s = e.stats()
            assert s["rx_packets"] == consumed and s["punted"] == sent - consumed
            assert consumed > 300 and sent - consumed > 300, (consumed, sent)
        finally:
            e.close()

"""TapLink against the real kernel (skipped without root and /dev/net/tun)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from stack.link.tap import LinkGone, TapError, TapLink, random_mac

needs_tun = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
                               reason="needs root and /dev/net/tun")


def _name(tag: str) -> str:
    return f"tsk{os.getpid() % 100000}{tag}"[:15]


@needs_tun
def test_create_read_write_close() -> None:
    name = _name("a")
    tap = TapLink(name)
    try:
        assert Path(f"/sys/class/net/{name}").exists()
        assert tap.read_batch(8) == []               # nonblocking, nothing queued (link down)
        frame = bytes.fromhex("ffffffffffff020000000001" "88b5") + b"x" * 50
        assert tap.write(frame) in (True, False)     # down link may drop, never raises
    finally:
        tap.close()
    assert not Path(f"/sys/class/net/{name}").exists()   # non-persistent: gone with the fd
    tap.close()                                            # idempotent


@needs_tun
def test_existing_name_is_refused() -> None:
    name = _name("b")
    with TapLink(name), pytest.raises(TapError, match="already exists"):
        TapLink(name)


@needs_tun
def test_closed_fd_reports_link_gone() -> None:
    tap = TapLink(_name("c"))
    os.close(tap.fileno())
    with pytest.raises(LinkGone):
        tap.read_batch(1)
    tap.closed = True


def test_bad_name_and_missing_device() -> None:
    with pytest.raises(TapError):
        TapLink("x" * 16)
    with pytest.raises(TapError, match="does not exist"):
        TapLink("t0", device="/nonexistent/tun")


def test_random_mac_is_local_unicast() -> None:
    m = random_mac(b"\xff" * 6)
    assert m[0] & 0x03 == 0x02 and len(m) == 6


@needs_tun
def test_deleted_device_reports_link_gone() -> None:
    from pyroute2 import IPRoute

    name = _name("d")
    tap = TapLink(name)
    try:
        with IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=name)[0])
        with pytest.raises(LinkGone):
            tap.read_batch(1)
        with pytest.raises(LinkGone):
            tap.write(b"\x00" * 60)
    finally:
        tap.close()


def _kernel_offloads(name: str) -> tuple[int, int]:
    """(TSO, TX checksum) as the kernel reports them for ``name`` (ETHTOOL_GTSO /
    ETHTOOL_GTXCSUM through SIOCETHTOOL; ethtool itself is not installed)."""
    import ctypes
    import fcntl
    import struct
    out = []
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        for cmd in (0x1E, 0x16):
            val = ctypes.create_string_buffer(struct.pack("II", cmd, 0))
            fcntl.ioctl(s, 0x8946, struct.pack("16sP16x", name.encode(), ctypes.addressof(val)))
            out.append(struct.unpack("II", val.raw[:8])[1])
    return out[0], out[1]


@needs_tun
def test_offload_tap_has_tso_and_csum_and_plain_one_has_neither() -> None:
    with TapLink(_name("o"), offload=True) as on, TapLink(_name("p")) as plain:
        assert on.offload and not plain.offload
        assert _kernel_offloads(on.name) == (1, 1)
        assert _kernel_offloads(plain.name) == (0, 0)
        assert on.counters()["offload"] == 1 and plain.counters()["offload"] == 0
        assert on.read_batch(4) == []
        frame = bytes.fromhex("ffffffffffff020000000001" "88b5") + b"x" * 50
        assert on.write(frame) in (True, False)          # a zero virtio-net header goes first


@needs_tun
def test_offload_falls_back_to_plain_frames_when_the_kernel_refuses(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """TUNSETOFFLOAD refused (as on kernels without it): one log line, a plain TAP."""
    import errno as _errno
    import fcntl

    from stack.link import tap as tapmod
    real = fcntl.ioctl

    def ioctl(fd: int, req: int, arg: object = 0) -> object:
        if req == tapmod.TUNSETOFFLOAD:
            raise OSError(_errno.EINVAL, "Invalid argument")
        return real(fd, req, arg)          # type: ignore[call-overload]

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    with TapLink(_name("f"), offload=True) as link:
        assert not link.offload
        assert _kernel_offloads(link.name) == (0, 0)
    assert [r.message for r in caplog.records if "offloads unavailable" in r.message] == \
        [f"{_name('f')}: TAP offloads unavailable (Invalid argument); using plain frames"]


class _SockLink(TapLink):
    """A plain TapLink over one end of a SOCK_SEQPACKET socketpair (a non-blocking fd with
    message boundaries, written as a TAP is), with or without the C segmenter."""

    def __init__(self, fd: int, native: bool) -> None:
        from stack.link import gso
        self.name = "sock"
        self.rx_frames = self.tx_frames = self.tx_full = self.tx_down = self.tx_errors = 0
        self.rx_errors = self.rx_offload = self.tx_gso = 0
        self.closed = False
        self.offload = False
        self._fd = fd
        self._gso = gso.GsoWriter(fd) if native else None


def _drain(sock: socket.socket) -> list[bytes]:
    """Every message waiting on a non-blocking socket."""
    got = []
    while True:
        try:
            got.append(sock.recv(70000))
        except BlockingIOError:
            return got


@pytest.mark.parametrize("native", [False, True], ids=["pure", "native"])
def test_plain_link_cuts_gso_frames(native: bool) -> None:
    """A GSO frame given to a link without offloads reaches the wire as its segments
    (segment_frame), in the pure build too; the link counts frames and cuts."""

    from stack.link import gso
    from stack.wire.gso import GSO_TCPV6, GSO_UDP, Offload, OffloadBytes, segment_frame, tcp_gso
    from stack.wire.ipv6 import build_ipv6
    from stack.wire.tcp import TcpSegment, build_tcp

    if native and not gso.available():
        pytest.skip("the pure build has no C segmenter")
    src, dst = bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000002")
    l4 = build_tcp(src, dst, 19, 40000, TcpSegment(1, 1, 0x18, 1000, bytes(range(256)) * 20))
    packet = build_ipv6(src, dst, 6, l4)
    off = tcp_gso(packet, 1000).shifted(14)
    assert off.gso == GSO_TCPV6
    frame = bytes.fromhex("020000000002" "020000000001" "86dd") + packet
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ours.setblocking(False)
        peer.setblocking(False)
        link = _SockLink(ours.fileno(), native)
        assert link.write(OffloadBytes.make(frame, off))
        got = _drain(peer)
        assert got == segment_frame(frame, off) and len(got) == 6
        assert max(map(len, got)) <= 1514
        assert link.tx_frames == 6 and link.tx_gso_split == 1
        assert not link.write(OffloadBytes.make(frame, Offload(0, GSO_UDP, 0, 1000)))
        assert link.tx_gso_bad == 1 and link.tx_frames == 6
    finally:
        ours.close()
        peer.close()


@pytest.mark.parametrize("offload", [True, False], ids=["vnet", "plain"])
def test_a_gso_chain_is_written_as_its_joined_frame(offload: bool) -> None:
    """A GsoChain (a TSO frame core did not join) goes out byte for byte as the joined
    OffloadBytes would: on a vnet link the virtio-net header, head and body in one
    writev; on a plain link cut into the same segments."""

    from stack.wire.gso import GsoChain, segment_frame, tcp_gso
    from stack.wire.ipv6 import build_ipv6
    from stack.wire.tcp import TcpSegment, build_tcp

    src, dst = bytes.fromhex("20010db8000000000000000000000001"), bytes.fromhex("20010db8000000000000000000000002")
    seg = TcpSegment(1, 1, 0x18, 1000, bytes(range(256)) * 20, 0, None, None, False, (), (1, 2))
    packet = build_ipv6(src, dst, 6, build_tcp(src, dst, 19, 40000, seg, chain=True))
    assert isinstance(packet, GsoChain)
    packet.offload = tcp_gso(packet, 1000)
    frame = bytes.fromhex("020000000002" "020000000001" "86dd") + packet
    whole = frame.join()
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        ours.setblocking(False)
        peer.setblocking(False)
        link = _SockLink(ours.fileno(), False)
        link.offload = offload
        assert link.write(frame)        # type: ignore[arg-type]
        got = _drain(peer)
        if offload:
            assert got == [whole.offload.pack() + whole]   # type: ignore[attr-defined]
            assert link.tx_frames == 1 and link.tx_gso == 1
        else:
            assert got == segment_frame(whole, whole.offload) and len(got) == 6   # type: ignore[attr-defined]
    finally:
        ours.close()
        peer.close()

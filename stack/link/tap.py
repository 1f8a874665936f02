"""A Linux TAP device as a nonblocking fd (Documentation/networking/tuntap.rst).

``TapLink(name)`` creates a non-persistent TAP with IFF_TAP | IFF_NO_PI (and
IFF_TUN_EXCL, so an existing device of that name is an error, never silently
shared). The kernel side gets its own MAC; the stack's MAC lives in core only.
The device disappears when the fd closes, wherever its kernel side has been
moved (the fd keeps working after ``ip link set NAME netns NS``).

``read_batch(n)`` reads until EAGAIN or ``n`` frames; ``write(frame)`` returns
False when the TAP queue is full. A vanished device (EBADFD after ``ip link del``, EBADF,
ENODEV, ENXIO) raises ``LinkGone``, which the driver turns into a link-down event.

``TapLink(name, offload=True)`` opens the TAP with IFF_VNET_HDR and asks for
TUNSETVNETHDRSZ(10) and TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6). If any of
that fails the fd is reopened with plain frames (one log line; ``offload`` is then
False). With offloads each read starts with a virtio-net header (``stack.wire.gso``):
frames whose header is all zero come back as plain ``bytes``, others as
``OffloadBytes`` (NEEDS_CSUM: the L4 checksum is partial and trusted; GSO: one TCP
packet of up to 64 KB to be taken as the kernel's coalesced segments). ``write``
prepends the header of an ``OffloadBytes`` frame (a zero header for plain bytes) with
one writev, no copy; a ``GsoChain`` frame (a TSO segment core built without joining
its headers and payload) goes out as header, head and body in that one writev.

Without offloads, ``write`` given an ``OffloadBytes`` frame (core hands a plain link
64 KB TCP segments when the runtime set its ``gso_max``: config key ``gso``) does what
the kernel would have done with it: a TCP GSO frame is cut into MTU-sized segments
and a NEEDS_CSUM frame gets its checksum completed, in C (``stack.link.gso``, one
write per frame) or, in the pure build, by ``segment_frame``. ``tx_frames`` counts
frames written, ``tx_gso_split`` GSO frames cut, ``tx_gso_bad`` frames with metadata
that could not be sent (dropped). ``cut_in_software(frame, off)`` is the pure cut with
the same counting, for callers that must see every frame (pcap, tx faults).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct

from stack.link import gso as native_gso
from stack.wire.errors import ParseError
from stack.wire.gso import (
    NO_OFFLOAD_HDR,
    VNET_HDR_LEN,
    GsoChain,
    Offload,
    OffloadBytes,
    joined,
    segment_frame,
    unpack_offload,
)

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_DEVICE = "/dev/net/tun"

log = logging.getLogger("tapstack.link")

READ_SIZE = 65536 + 14 + 12
# With offloads: the header, and a GSO frame of up to 64 KB plus all its headers
VNET_READ_SIZE = 10 + 65536 + 14 + 40 + 60 + 256
# The device was deleted (tun detaches the file: EBADFD) or our fd is no longer valid.
# EIO on write only means the kernel side is down: counted, not fatal.
_GONE = {errno.EBADFD, errno.EBADF, errno.ENODEV, errno.ENXIO}


class LinkGone(Exception):
    """The TAP device went away (deleted, or its fd closed)."""

    def __init__(self, name: str, err: int) -> None:
        self.name = name
        self.errno = err
        super().__init__(f"{name}: {os.strerror(err)}")


class TapError(Exception):
    """Creating the TAP failed; the message is meant for users."""


class TapLink:
    """One TAP device; frames are whole Ethernet frames without any prefix."""

    # set per instance in __init__; class defaults for links built around another fd (tests)
    tx_gso_split = 0
    tx_gso_bad = 0
    _gso: native_gso.GsoWriter | None = None

    def __init__(self, name: str, *, device: str = TUN_DEVICE, offload: bool = False) -> None:
        if not name or len(name) > 15:
            raise TapError(f"bad TAP name {name!r}")
        self.name = name
        self.rx_frames = 0
        self.tx_frames = 0
        self.tx_full = 0
        self.tx_down = 0
        self.tx_errors = 0
        self.rx_errors = 0
        self.closed = False
        self.offload = False
        self.rx_offload = 0     # frames read with a non-zero virtio-net header
        self.tx_gso = 0         # GSO frames written
        self.tx_gso_split = 0   # GSO frames cut in software (no offloads)
        self.tx_gso_bad = 0     # frames with offload metadata that could not be cut (dropped)
        if offload:
            fd = self._open(device, name, IFF_VNET_HDR)
            try:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                self.offload = True
            except OSError as e:
                os.close(fd)      # the device goes with the fd: recreate it with plain frames
                log.warning("%s: TAP offloads unavailable (%s); using plain frames", name, e.strerror)
        if not self.offload:
            fd = self._open(device, name, 0)
        self._fd = fd
        self._gso = native_gso.GsoWriter(fd) if not self.offload and native_gso.available() else None

    @staticmethod
    def _open(device: str, name: str, extra_flags: int) -> int:
        try:
            fd = os.open(device, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TapError(f"{device} does not exist (is the tun module loaded?)") from None
        except PermissionError:
            raise TapError(f"cannot open {device}: permission denied (run as root)") from None
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL | extra_flags)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            os.close(fd)
            if e.errno == errno.EBUSY:
                raise TapError(f"cannot create TAP {name}: an interface with that name already exists") from None
            if e.errno == errno.EPERM:
                raise TapError(f"cannot create TAP {name}: operation not permitted (need CAP_NET_ADMIN)") from None
            raise TapError(f"cannot create TAP {name}: {e.strerror}") from None
        return fd

    def fileno(self) -> int:
        return self._fd

    def read_batch(self, max_frames: int = 64) -> list[bytes]:
        """Up to ``max_frames`` frames, fewer when the queue runs empty."""
        if self.offload:
            return self._read_batch_vnet(max_frames)
        frames: list[bytes] = []
        read = os.read
        fd = self._fd
        for _ in range(max_frames):
            try:
                frame = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _GONE:
                    raise LinkGone(self.name, e.errno or errno.EIO) from None
                self.rx_errors += 1
                break
            if not frame:
                raise LinkGone(self.name, errno.EIO)
            frames.append(frame)
        self.rx_frames += len(frames)
        return frames

    def _read_batch_vnet(self, max_frames: int) -> list[bytes]:
        frames: list[bytes] = []
        read = os.read
        fd = self._fd
        zero = NO_OFFLOAD_HDR
        hl = VNET_HDR_LEN
        for _ in range(max_frames):
            try:
                data = read(fd, VNET_READ_SIZE)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in _GONE:
                    raise LinkGone(self.name, e.errno or errno.EIO) from None
                self.rx_errors += 1
                break
            if not data:
                raise LinkGone(self.name, errno.EIO)
            if len(data) <= hl:
                self.rx_errors += 1
                continue
            if data.startswith(zero):
                frames.append(data[hl:])
            else:
                self.rx_offload += 1
                frames.append(offload_frame(data))
        self.rx_frames += len(frames)
        return frames

    def write(self, frame: bytes) -> bool:
        """Write one frame; False if the TAP queue is full (the frame is dropped).
        A ``GsoChain`` (stack.wire.gso) is written as header, head and body in one
        writev on a link with offloads, joined first on a link without."""
        if not self.offload and type(frame) is not bytes:
            frame = joined(frame)
            off = getattr(frame, "offload", None)
            if off is not None:
                return self._write_cut(frame, off)
        try:
            if self.offload:
                off = getattr(frame, "offload", None) if type(frame) is not bytes else None
                if off is None:
                    os.writev(self._fd, (NO_OFFLOAD_HDR, frame if type(frame) is bytes else joined(frame)))
                else:
                    if isinstance(frame, GsoChain):
                        os.writev(self._fd, (off.pack(), frame.head, frame.body))
                    else:
                        os.writev(self._fd, (off.pack(), frame))
                    if off.gso_type:
                        self.tx_gso += 1
            else:
                os.write(self._fd, frame)
        except BlockingIOError:
            self.tx_full += 1
            return False
        except OSError as e:
            if e.errno in _GONE:
                raise LinkGone(self.name, e.errno or errno.EIO) from None
            if e.errno == errno.EIO:
                self.tx_down += 1
            else:
                self.tx_errors += 1
            return False
        self.tx_frames += 1
        return True

    def _write_cut(self, frame: bytes, off: Offload) -> bool:
        """A frame with metadata on a link without offloads: cut / completed, then written."""
        gw = self._gso
        if gw is None:
            pieces = self.cut_in_software(frame, off)     # the pure build
            ok = bool(pieces)
            for piece in pieces:
                ok = self.write(piece) and ok
            return ok
        n = gw.write(frame, off)
        if n < 0:
            self.tx_gso_bad += 1
            return False
        if off.gso:
            self.tx_gso_split += 1
        self.tx_frames += n
        tx = gw.tx
        err = tx.err
        if err:
            if err in _GONE:
                raise LinkGone(self.name, err)
            self.tx_full += tx.full
            self.tx_down += tx.down
            self.tx_errors += tx.errors
            return False
        return True

    def cut_in_software(self, frame: bytes, off: Offload) -> list[bytes]:
        """``segment_frame`` (pure) with this link's counting: the frames to write, or []
        for a frame that cannot be sent (``tx_gso_bad``)."""
        try:
            frames = segment_frame(frame, off)
        except ParseError:
            self.tx_gso_bad += 1
            return []
        if off.gso:
            self.tx_gso_split += 1
        return frames

    def counters(self) -> dict[str, int]:
        return {"rx_frames": self.rx_frames, "tx_frames": self.tx_frames,
                "tx_queue_full": self.tx_full, "tx_link_down": self.tx_down, "tx_errors": self.tx_errors,
                "rx_errors": self.rx_errors, "offload": int(self.offload), "rx_offload": self.rx_offload, "tx_gso": self.tx_gso,
                "tx_gso_split": self.tx_gso_split, "tx_gso_bad": self.tx_gso_bad}

    def close(self) -> None:
        """Close the fd: the kernel deletes the (non-persistent) device."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def __enter__(self) -> TapLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TapLink({self.name!r}, fd={self._fd}{', closed' if self.closed else ''})"


def offload_frame(data: bytes) -> OffloadBytes:
    """One read of a vnet link whose header is not all zero (longer than the header)
    as the frame ``read_batch`` returns: the Ethernet frame carrying that header."""
    return OffloadBytes.make(memoryview(data)[VNET_HDR_LEN:], unpack_offload(data))


def random_mac(rand_bytes: bytes | None = None) -> bytes:
    """A unicast, locally administered MAC (02:xx:xx:xx:xx:xx style)."""
    raw = bytearray(rand_bytes if rand_bytes is not None else os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)

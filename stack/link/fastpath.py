"""The native per-flow fast path (``native/fastpath.c``) behind a TapLink-like reader.

The core decides the first packet of a flow on its slow path and hands out a flow
hint (forward to a REACHABLE neighbor, or answer an ICMPv6 echo request); the runtime
installs it with ``install()``. ``read_batch(ifindex, link, n)`` then reads the TAP
in C: frames that match an installed flow and pass the per-packet checks are
rewritten and written out without returning to Python; every other frame comes back
exactly as ``TapLink.read_batch`` would return it (``bytes``, or ``OffloadBytes``
on a link with offloads), with the link's ``rx_frames``/``rx_errors``/``rx_offload``
counted the same way and ``LinkGone`` raised the same way.

Flows are keyed by (ingress link, family, source, destination) in a bounded 2-way
set-associative table of ``slots`` entries; a new flow may evict an older one (it
is then decided on the slow path again). ``remove_link`` clears the table, as any
flow may point at that link's fd. Per-link counters of what C did (``counters()``)
are cumulative from ``add_link``.

``available()`` is False with ``TAPSTACK_PURE=1`` or without the native build: the
pure build has no fast path, the slow path is its twin.
"""

from __future__ import annotations

import errno
from typing import Any

from stack.link.tap import _GONE, LinkGone, TapLink
from stack.wire import checksum
from stack.wire.gso import NO_OFFLOAD_HDR, VNET_HDR_LEN, OffloadBytes, unpack_offload

MAX_LINKS = 64
FORWARD = 1
ECHO = 2
BUF_SIZE = VNET_HDR_LEN + 65536 + 512
COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "fwd6", "fwd4", "echo6", "echo4",
            "punted", "tx_full", "tx_down", "tx_errors", "tx_gso",
            "gro_packets", "gro_segs", "acks_merged", "gro_bytes")


def _lib() -> tuple[Any, Any]:
    ffi, lib = checksum.ffi, checksum.lib
    if lib is None or not hasattr(lib, "tsk_fp_rx"):
        return None, None
    return ffi, lib


def available() -> bool:
    """The native module is loaded and has the fast path."""
    return _lib()[1] is not None


class _Link:
    __slots__ = ("base", "fd", "hold", "slot", "vnet")

    def __init__(self, slot: int, fd: int, vnet: int, base: tuple[int, ...]) -> None:
        self.slot = slot
        self.fd = fd
        self.vnet = vnet
        self.base = base
        self.hold: Any = None       # GRO hold buffer (cffi char[]) while GRO is on


class FastPath:
    """One flow table with its read buffer; links are known by ifindex."""

    def __init__(self, slots: int = 4096) -> None:
        ffi, lib = _lib()
        if lib is None:
            raise RuntimeError("the native fast path is not available (TAPSTACK_PURE=1 or stack._native not built)")
        if slots < 1 or slots & (slots - 1) or slots > 1 << 20:
            raise ValueError(f"flow slots must be a power of two in 1..{1 << 20}, not {slots}")
        self._ffi = ffi
        self._table = ffi.new("struct tsk_fp_table *")
        self._flows = ffi.new("struct tsk_fp_flow[]", slots)   # owned here; the table points at it
        self._table.mask = slots - 1
        self._table.flows = self._flows
        self._buf = ffi.new("char[]", BUF_SIZE)
        self._flow = ffi.new("struct tsk_fp_flow *")           # scratch for install()
        self._rx_vnet = ffi.buffer(self._table.rx_vnet)         # metadata of a merged frame
        self._view = memoryview(ffi.buffer(self._buf))           # frames are copied out of it once
        self._rx = lib.tsk_fp_rx
        self._put = lib.tsk_fp_put
        self._clear = lib.tsk_fp_clear
        self._unpack = ffi.unpack
        self._links: dict[int, _Link] = {}
        self.slots = slots
        self.consumed = 0       # frames C handled during the last read_batch (it may return [] after work)

    # --- links ----------------------------------------------------------------------

    def _snapshot(self, slot: int) -> tuple[int, ...]:
        c = self._table.links[slot]
        return tuple(int(getattr(c, name)) for name in COUNTERS)

    def add_link(self, ifindex: int, link: TapLink, *, gro: bool = True) -> bool:
        """Give the link a slot (again: its fd and offload mode are refreshed); False when all 64 are used.
        ``gro``: merge the TCP segments read on it (``set_gro``)."""
        old = self._links.get(ifindex)
        if old is not None:
            slot = old.slot
        else:
            used = {lk.slot for lk in self._links.values()}
            free = [i for i in range(MAX_LINKS) if i not in used]
            if not free:
                return False
            slot = free[0]
        if old is not None and (old.fd != link.fileno() or old.vnet != (VNET_HDR_LEN if link.offload else 0)):
            self.clear()   # flows carry the old fd
        base = old.base if old is not None else self._snapshot(slot)
        lk = _Link(slot, link.fileno(), VNET_HDR_LEN if link.offload else 0, base)
        self._links[ifindex] = lk
        self._set_hold(lk, gro)
        return True

    def _set_hold(self, lk: _Link, on: bool) -> None:
        h = self._table.holds[lk.slot]
        h.len = 0                   # a frame held for the old fd is not this fd's
        if on:
            if lk.hold is None:
                lk.hold = self._ffi.new("char[]", BUF_SIZE)
            h.buf = lk.hold
            h.cap = BUF_SIZE
        else:
            lk.hold = None
            h.buf = self._ffi.NULL
            h.cap = 0

    def set_gro(self, ifindex: int, on: bool) -> None:
        """Merge TCP segments read on this link (GRO, see native/fastpath.c) or not."""
        lk = self._links.get(ifindex)
        if lk is not None and (lk.hold is not None) != on:
            self._set_hold(lk, on)

    def gro(self, ifindex: int) -> bool:
        lk = self._links.get(ifindex)
        return lk is not None and lk.hold is not None

    def remove_link(self, ifindex: int) -> None:
        """Free the link's slot and drop every flow (any may write to its fd)."""
        lk = self._links.pop(ifindex, None)
        if lk is not None:
            self._set_hold(lk, False)
            self.clear()

    def has_link(self, ifindex: int) -> bool:
        return ifindex in self._links

    # --- flows ----------------------------------------------------------------------

    def install(self, *, family: int, action: int, in_ifindex: int, out_ifindex: int, src: bytes, dst: bytes,
                eth: bytes, in_mac: bytes, mtu: int, hop_limit: int = 0) -> bool:
        """Install one flow; False if either link has no slot. Bad values raise ValueError."""
        alen = {6: 16, 4: 4}.get(family)
        if alen is None:
            raise ValueError(f"family must be 6 or 4, not {family}")
        if action not in (FORWARD, ECHO):
            raise ValueError(f"action must be {FORWARD} (forward) or {ECHO} (echo), not {action}")
        if len(src) != alen or len(dst) != alen:
            raise ValueError(f"IPv{family} addresses are {alen} bytes")
        if len(eth) != 14 or len(in_mac) != 6:
            raise ValueError("eth is a 14-byte Ethernet header, in_mac 6 bytes")
        if not 0 <= mtu <= 0xFFFFFFFF or not 0 <= hop_limit <= 255:
            raise ValueError(f"bad mtu {mtu} or hop limit {hop_limit}")
        rx = self._links.get(in_ifindex)
        tx = self._links.get(out_ifindex)
        if rx is None or tx is None:
            return False
        f = self._flow
        mm = self._ffi.memmove
        mm(f.src, src.ljust(16, b"\0"), 16)
        mm(f.dst, dst.ljust(16, b"\0"), 16)
        mm(f.eth, eth, 14)
        mm(f.in_mac, in_mac, 6)
        f.family = family
        f.action = action
        f.out_fd = tx.fd
        f.in_slot = rx.slot
        f.out_slot = tx.slot
        f.out_vnet = tx.vnet
        f.mtu = mtu
        f.hop_limit = hop_limit
        self._put(self._table, f)
        return True

    def clear(self) -> None:
        """Forget every flow (routes, neighbors or links changed)."""
        self._clear(self._table)

    # --- the reader -----------------------------------------------------------------

    def read_batch(self, ifindex: int, link: TapLink, max_frames: int = 64, *,
                   pairs: bool = False) -> list[Any]:
        """``link.read_batch(max_frames)`` with the fast path in front: at most
        ``max_frames`` reads; returns the frames C left to Python. ``pairs``: a frame
        with offload metadata comes as ``(bytes, Offload)`` instead of ``OffloadBytes``
        (one 64 KB copy less: CPython copies twice to make a bytes subclass from a
        buffer; ``Stack.receive`` takes the pair's halves)."""
        lk = self._links.get(ifindex)
        if lk is None:
            self.consumed = 0
            return link.read_batch(max_frames)
        frames: list[Any] = []
        table = self._table
        counters = table.links[lk.slot]
        hold = table.holds[lk.slot]
        rx = self._rx
        buf = self._buf
        view = self._view
        unpack = self._unpack
        fd, slot, vnet = lk.fd, lk.slot, lk.vnet
        left = max_frames
        start = counters.rx_packets
        while left > 0 or hold.len:
            n = rx(table, fd, slot, vnet, buf, BUF_SIZE, max(left, 1))
            if n > 0:
                left -= table.rx_reads
                # one copy per frame: the bytes after any header, straight from buf
                if vnet:
                    if n <= VNET_HDR_LEN:
                        link.rx_errors += 1
                        continue
                    if view[:VNET_HDR_LEN] == NO_OFFLOAD_HDR:
                        frames.append(view[VNET_HDR_LEN:n].tobytes())
                        continue
                    if table.rx_segs < 2:
                        link.rx_offload += 1
                    data, off = view[VNET_HDR_LEN:n], unpack_offload(view)
                elif table.rx_segs > 1:
                    data, off = view[:n], unpack_offload(self._rx_vnet)      # merged by GRO
                else:
                    frames.append(unpack(buf, n))
                    continue
                frames.append((data.tobytes(), off) if pairs else OffloadBytes.make(data, off))
                continue
            if n == -2:
                err = table.err
                if err in _GONE:
                    raise LinkGone(link.name, err or errno.EIO)
                link.rx_errors += 1
            elif n == -3:
                raise LinkGone(link.name, errno.EIO)
            if n == -1:
                left = 0
                continue        # budget spent: only a held frame is still taken
            break
        self.consumed = counters.rx_packets - start
        link.rx_frames += len(frames)
        return frames

    # --- counters ---------------------------------------------------------------------

    def counters(self) -> dict[int, dict[str, int]]:
        """Per ifindex: what C did on that link since ``add_link`` (COUNTERS)."""
        out: dict[int, dict[str, int]] = {}
        for ifindex, lk in self._links.items():
            now = self._snapshot(lk.slot)
            out[ifindex] = {name: v - b for name, v, b in zip(COUNTERS, now, lk.base, strict=True)}
        return out

"""Software GSO in C (``native/gso.c``) for links without offloads.

Core's TCP builds segments of up to 64 KB (TSO) for a link that says it takes them
(``Stack.set_offload``); a TAP without a virtio-net header cannot pass them to the
kernel, so ``TapLink.write`` cuts them right before the write, as Linux's software
GSO (``skb_gso_segment``) does before a driver without TSO: ``GsoWriter.write``
cuts one frame and writes each segment with one ``writev`` to the TAP fd, without
copying the payload. ``cut(frame, off)`` returns the segments instead (tests).

The pure twin is ``stack.wire.gso.segment_frame``: same frames byte for byte, same
ParseError reasons for the shapes it refuses. ``available()`` is False with
``TAPSTACK_PURE=1`` or without the native build; core then builds MSS-sized
segments for plain links as before (the runtime leaves their ``gso_max`` at 0).
"""

from __future__ import annotations

from typing import Any

from stack.wire import checksum
from stack.wire.errors import ParseError
from stack.wire.gso import Offload

# -TSK_GSO_E_* -> the ParseError reason of segment_frame
REASONS = {1: "gso_bad_size", 2: "gso_truncated", 3: "gso_not_tcp", 4: "bad_gso", 5: "csum_bad_offset",
           6: "gso_no_space"}
HDR_MAX = 14 + 60 + 60            # Ethernet + IP + TCP headers of one segment, at most


def _lib() -> tuple[Any, Any]:
    ffi, lib = checksum.ffi, checksum.lib
    if lib is None or not hasattr(lib, "tsk_gso_write"):
        return None, None
    return ffi, lib


def available() -> bool:
    """The native module is loaded and has the segmenter."""
    return _lib()[1] is not None


class GsoWriter:
    """Cuts and writes frames to one fd; ``write`` returns what C did."""

    __slots__ = ("_fd", "_tx", "_write", "tx")

    def __init__(self, fd: int) -> None:
        ffi, lib = _lib()
        if lib is None:
            raise RuntimeError("software GSO in C is not available (TAPSTACK_PURE=1 or stack._native not built)")
        self._fd = fd
        self._tx = ffi.new("struct tsk_gso_tx *")
        self.tx = self._tx                # frames, bytes, full, down, errors, err of the last write
        self._write = lib.tsk_gso_write

    def write(self, frame: bytes, off: Offload) -> int:
        """Frames written (>= 0), or -TSK_GSO_E_* for a shape C refuses (nothing
        written; ``REASONS`` names it). After a failed write ``tx.err`` is its errno
        and the frames not written are in ``tx.full`` / ``tx.down`` / ``tx.errors``."""
        return self._write(self._fd, frame, len(frame), off.flags, off.gso_type, off.gso_size,  # type: ignore[no-any-return]
                           off.csum_start, off.csum_offset, self._tx)


def cut(frame: bytes, off: Offload) -> list[bytes]:
    """The frames ``GsoWriter.write`` would write for ``frame``; raises ParseError
    as ``segment_frame`` does."""
    ffi, lib = _lib()
    if lib is None:
        raise RuntimeError("software GSO in C is not available")
    segs = len(frame) // max(off.gso_size, 1) + 1          # at least as many as C makes
    cap = len(frame) + segs * HDR_MAX
    out = ffi.new("char[]", cap)
    lens = ffi.new("uint32_t[]", segs)
    n = lib.tsk_gso_cut(frame, len(frame), off.flags, off.gso_type, off.gso_size, off.csum_start,
                        off.csum_offset, out, cap, lens, segs)
    if n < 0:
        raise ParseError(REASONS.get(-n, "gso_error"))
    frames: list[bytes] = []
    pos = 0
    for i in range(n):
        frames.append(ffi.unpack(out + pos, lens[i]))
        pos += lens[i]
    return frames

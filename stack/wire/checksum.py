"""Internet checksum (RFC 1071), pseudo-header sums, incremental update (RFC 1624).

Backend chosen once at import (GUIDE.md §6): the cffi extension
``stack._native`` when it imports, else the pure-Python twin in ``_pure.py``.
``TAPSTACK_PURE=1`` in the environment forces pure; ``BACKEND`` says which
one is live. Both give identical results for every input (tested in
tests/native/test_equivalence.py).

Conventions:

* ``ones_sum`` is the folded 16-bit one's-complement sum, *not* inverted; it is
  0 only for all-zero input. ``initial`` is a non-negative partial sum below
  2**32 (usually a pseudo-header sum) added in before folding.
* ``internet_checksum`` is ``~ones_sum & 0xffff``: the value to store in a
  checksum field that was zero while summing. A received message verifies
  when ``ones_sum`` over it (checksum included, plus pseudo-header) is 0xffff.

This is the one ``wire`` module that imports ``os``: only to read
``TAPSTACK_PURE`` once, at import (CONTRACTS.md).
"""

from __future__ import annotations

import os
from typing import Any

from stack.wire import _pure

Buffer = bytes | bytearray | memoryview


def _load_native() -> tuple[Any, Any, str]:
    if os.environ.get("TAPSTACK_PURE", "") not in ("", "0"):
        return None, None, "pure"
    try:
        from stack._native import ffi, lib  # built by native/build_native.py
    except ImportError:  # no compiler, sdist, or a plain source checkout
        return None, None, "pure"
    return ffi, lib, "native"


ffi, lib, BACKEND = _load_native()


# The C entry points bound once: a ``lib.name`` lookup per call costs about as much
# as summing a 1500-byte frame (bench_native.py), and the results are Python ints.
_ones: Any = lib.tsk_ones_sum if lib is not None else None
_psum6: Any = lib.tsk_pseudo_sum6 if lib is not None else None
_psum4: Any = lib.tsk_pseudo_sum4 if lib is not None else None
_from_buffer: Any = ffi.from_buffer if ffi is not None else None


def _native_ones_sum(data: Buffer, initial: int = 0) -> int:
    if type(data) is bytes:
        return _ones(data, len(data), initial)  # type: ignore[no-any-return]
    return _ones(_from_buffer(data), len(data), initial)  # type: ignore[no-any-return]


def _native_internet_checksum(data: Buffer, initial: int = 0) -> int:
    if type(data) is bytes:
        return ~_ones(data, len(data), initial) & 0xFFFF  # type: ignore[no-any-return]
    return ~_ones(_from_buffer(data), len(data), initial) & 0xFFFF  # type: ignore[no-any-return]


def _native_pseudo_sum6(src: bytes, dst: bytes, length: int, nh: int) -> int:
    return _psum6(src, dst, length, nh)  # type: ignore[no-any-return]


def _native_pseudo_sum4(src: bytes, dst: bytes, length: int, proto: int) -> int:
    return _psum4(src, dst, length, proto)  # type: ignore[no-any-return]


if BACKEND == "native":
    ones_sum = _native_ones_sum
    internet_checksum = _native_internet_checksum
    pseudo_sum6 = _native_pseudo_sum6
    pseudo_sum4 = _native_pseudo_sum4
else:
    ones_sum = _pure.ones_sum
    internet_checksum = _pure.internet_checksum
    pseudo_sum6 = _pure.pseudo_sum6
    pseudo_sum4 = _pure.pseudo_sum4


def checksum_adjust(csum: int, old: bytes, new: bytes) -> int:
    """Incrementally update a checksum field after ``old`` became ``new``.

    RFC 1624 §3, eqn. 3: ``HC' = ~(~HC + ~m + m')``, with m and m' the old and
    new 16-bit words (here any number of them: ``old``/``new`` are equal-length
    byte strings of even length, aligned on a 16-bit boundary of the summed data).
    Eqn. 3 is used rather than eqn. 2 because it cannot produce -0 (0xffff)
    for a non-zero sum, matching a full recomputation.
    """
    if len(old) != len(new) or len(old) & 1:
        raise ValueError("checksum_adjust needs equal, even-length old/new")
    # ~m summed over the words is the one's complement of their sum.
    return checksum_adjust_word(csum, _pure.ones_sum(old), _pure.ones_sum(new))


def checksum_adjust_word(csum: int, old: int, new: int) -> int:
    """``checksum_adjust`` for one 16-bit word given as ints (or the folded sums of
    several): RFC 1624 eqn. 3 without building byte strings (per forwarded packet)."""
    total = (~csum & 0xFFFF) + (~old & 0xFFFF) + new
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


__all__ = [
    "BACKEND",
    "checksum_adjust",
    "checksum_adjust_word",
    "ffi",
    "internet_checksum",
    "lib",
    "ones_sum",
    "pseudo_sum4",
    "pseudo_sum6",
]

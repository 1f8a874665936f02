"""Sequence numbers, initial sequence numbers and SYN cookies.

RFC 9293 §3.4 (sequence space), RFC 1982-style comparison, RFC 6528 (ISN =
M + F(4-tuple, secret) with a 4 µs timer M), RFC 4987 §3.6 (SYN cookies).

The engine keeps every sequence number *unwrapped*: a Python int that starts at
the 32-bit ISN and grows without bound, so comparisons are plain ``<`` and no
state can confuse "before" and "after" across 2**32. Wire values are mapped in
with :func:`unwrap` against a nearby reference (``rcv_nxt`` for SEG.SEQ,
``snd_una`` for SEG.ACK) and out with ``& SEQ_MASK`` (done by ``build_tcp``).
"""

from __future__ import annotations

from hashlib import blake2s
from struct import Struct

from stack.core.clock import s

SEQ_MASK = 0xFFFFFFFF
_HALF = 1 << 31
_PORTS = Struct("!HHI")

ISN_TICK_NS = 4_000                    # RFC 6528 §3: M is a timer that ticks every 4 µs

# RFC 4987 §3.6: the cookie carries an MSS index; these are the values a peer
# is likely to offer (Linux msstab is similar). The largest not above the
# peer's MSS is used.
COOKIE_MSS = (536, 1220, 1300, 1400, 1440, 1460, 4312, 8960)
COOKIE_PERIOD = s(64)                  # counter t ticks every 64 s; two ticks are accepted
COOKIE_NO_WSCALE = 0xF


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b of two 32-bit wire values (RFC 1982 comparison)."""
    d = (a - b) & SEQ_MASK
    return d - (1 << 32) if d >= _HALF else d


def unwrap(wire: int, ref: int) -> int:
    """The unwrapped number closest to ``ref`` whose low 32 bits are ``wire``."""
    return ref + seq_diff(wire, ref)


def _tuple_bytes(local: bytes, lport: int, remote: bytes, rport: int, extra: int = 0) -> bytes:
    return local + remote + _PORTS.pack(lport, rport, extra & SEQ_MASK)


def _hash32(secret: bytes, data: bytes) -> int:
    return int.from_bytes(blake2s(data, key=secret, digest_size=4).digest(), "big")


def initial_sequence(secret: bytes, local: bytes, lport: int, remote: bytes, rport: int,
                     now: int) -> int:
    """RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey).

    F is a keyed BLAKE2s (a PRF as §3 asks), M the 4 µs timer taken from ``now``.
    """
    return isn_and_ts_offset(secret, local, lport, remote, rport, now)[0]


def isn_and_ts_offset(secret: bytes, local: bytes, lport: int, remote: bytes, rport: int,
                      now: int) -> tuple[int, int]:
    """The ISN (``initial_sequence``) and the RFC 7323 §5.4 timestamp offset of one
    4-tuple from one keyed BLAKE2s of it: the first 32 bits are F, the last 32 the
    offset (two halves of one PRF output, as independent as two PRF calls; one hash
    per connection instead of two)."""
    h = int.from_bytes(blake2s(_tuple_bytes(local, lport, remote, rport), key=secret, digest_size=8).digest(),
                       "big")
    return ((now // ISN_TICK_NS + (h >> 32)) & SEQ_MASK, h & SEQ_MASK)


def make_cookie(secret: bytes, local: bytes, lport: int, remote: bytes, rport: int,
                peer_isn: int, peer_mss: int, now: int) -> tuple[int, int]:
    """RFC 4987 §3.6 SYN cookie: our ISN encodes time, an MSS index and a MAC.

    Layout before the per-tuple offset is added: 5 bits counter, 3 bits MSS
    index, 24 bits keyed hash of (4-tuple, peer ISN, counter). Returns the
    cookie and the MSS it promises.
    """
    idx = 0
    for i, value in enumerate(COOKIE_MSS):
        if value <= peer_mss:
            idx = i
    t = (now // COOKIE_PERIOD) & 0x1F
    base = _tuple_bytes(local, lport, remote, rport)
    mac = _hash32(secret, base + _PORTS.pack(t, idx, peer_isn)) & 0xFFFFFF
    offset = _hash32(secret, base + b"offset")
    return (offset + ((t << 27) | (idx << 24) | mac)) & SEQ_MASK, COOKIE_MSS[idx]


def check_cookie(secret: bytes, local: bytes, lport: int, remote: bytes, rport: int,
                 peer_isn: int, cookie: int, now: int) -> int | None:
    """The MSS encoded in ``cookie`` when it is ours and at most two periods old, else None."""
    base = _tuple_bytes(local, lport, remote, rport)
    value = (cookie - _hash32(secret, base + b"offset")) & SEQ_MASK
    t, idx, mac = value >> 27, (value >> 24) & 0x7, value & 0xFFFFFF
    t_now = now // COOKIE_PERIOD
    if t not in (t_now & 0x1F, (t_now - 1) & 0x1F):
        return None
    if _hash32(secret, base + _PORTS.pack(t, idx, peer_isn)) & 0xFFFFFF != mac:
        return None
    return COOKIE_MSS[idx]


def cookie_tsval(ts_now: int, wscale: int | None, sack: bool) -> int:
    """A TSval that also carries the peer's SYN options (as Linux does, RFC 4987 §3.6
    notes that options are otherwise lost): low 4 bits window scale, bit 4 SACK.
    The value stays at or below the current timestamp clock."""
    bits = (COOKIE_NO_WSCALE if wscale is None else wscale) | (0x10 if sack else 0)
    return (((ts_now - 64) & ~0x3F) | bits) & SEQ_MASK


def cookie_options(tsecr: int) -> tuple[int | None, bool]:
    """Decode what :func:`cookie_tsval` stored: (peer window scale or None, SACK permitted)."""
    ws = tsecr & 0xF
    return (None if ws == COOKIE_NO_WSCALE else min(ws, 14)), bool(tsecr & 0x10)

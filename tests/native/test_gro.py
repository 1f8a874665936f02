"""GRO in the native fast path (native/fastpath.c gro_run, stack/link/fastpath.py).

Same harness as test_fastpath.py: a socketpair stands in for the TAP. What is checked:

* in-order data segments of one flow come back as one TCP packet (IPv6 and IPv4):
  payload concatenated, lengths and IPv4 header checksum right, the TCP checksum
  partial and correct once completed (scapy recomputes it), offload metadata
  NEEDS_CSUM + GSO with gso_size = the first segment's payload, window = latest;
* the offload metadata makes core take it as one verified TCP packet and cutting it
  with gso_segment gives back the segments that were read (byte for byte but the
  window, as Linux GRO);
* what ends a merge or is never merged: a gap, another flow, a different ACK number,
  different options, PSH (merged, then ends), a shorter segment (merged, then ends),
  a larger one, a bad checksum, SYN/FIN/RST/URG/ECE, IPv4 fragments and options,
  a different hop limit or traffic class; the frame that did not continue comes back
  next, in order, unchanged;
* pure ACKs: a later cumulative ACK supersedes an earlier one; duplicate ACKs, window
  updates and SACK-carrying ACKs are all kept;
* the budget: a held frame is still returned, never more than budget + 1 reads;
  GRO off (set_gro) returns frames as read; a vnet link merges zero-header frames;
* counters: gro_packets, gro_segs, acks_merged, gro_bytes; random sequences never
  lose or reorder payload bytes.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from harness import smac
from scapy.layers.inet import IP, TCP  # type: ignore[import-untyped]
from scapy.layers.inet6 import IPv6  # type: ignore[import-untyped]
from scapy.layers.l2 import Ether  # type: ignore[import-untyped]

from stack.link import fastpath
from stack.wire.gso import F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, complete_checksum, gso_segment, offload_of

if not fastpath.available():
    reason = ("TAPSTACK_PURE=1 forces the pure backend" if os.environ.get("TAPSTACK_PURE", "") not in ("", "0")
              else "stack._native is not built (python native/build_native.py)")
    pytest.skip(reason, allow_module_level=True)

from tests.native.test_fastpath import IN_A, MAC_IN, MAC_PEER, Env

TS = [("NOP", None), ("NOP", None), ("Timestamp", (1000, 2000))]
MSS = 1000


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.close()


def seg6(seq: int, size: int = MSS, *, ack: int = 5000, flags: str = "A", opts: Any = None, window: int = 512,
         sport: int = 40000, hlim: int = 64, tc: int = 0, fill: int | None = None, csum: int | None = None) -> bytes:
    payload = bytes(((seq + i) * 7 + (fill or 0)) & 0xFF for i in range(size))
    t = TCP(sport=sport, dport=9, seq=seq, ack=ack, flags=flags, window=window,
            options=TS if opts is None else opts)
    if csum is not None:
        t.chksum = csum
    return bytes(Ether(dst=smac(MAC_IN), src=smac(MAC_PEER)) /
                 IPv6(src="2001:db8:1::10", dst="2001:db8:1::2", hlim=hlim, tc=tc) / t / payload)


def seg4(seq: int, size: int = MSS, *, ack: int = 5000, flags: str = "A", ident: int = 1, frag: int = 0,
         ipflags: str = "DF", window: int = 512, ipopts: Any = None) -> bytes:
    payload = bytes(((seq + i) * 7) & 0xFF for i in range(size))
    ip = IP(src="192.0.2.10", dst="192.0.2.2", id=ident, flags=ipflags, frag=frag)
    if ipopts is not None:
        ip.options = ipopts
    return bytes(Ether(dst=smac(MAC_IN), src=smac(MAC_PEER)) / ip /
                 TCP(sport=40000, dport=9, seq=seq, ack=ack, flags="A" if flags is None else flags, window=window,
                     options=TS) / payload)


def stream6(n: int, start: int = 1, size: int = MSS, **kw: Any) -> list[bytes]:
    return [seg6(start + i * size, size, **kw) for i in range(n)]


def payload_of(frame: bytes) -> bytes:
    if frame[12:14] == b"\x86\xdd":
        p = IPv6(frame[14:])
        return bytes(p[TCP].payload)
    return bytes(IP(frame[14:])[TCP].payload)


def completed(frame: bytes) -> bytes:
    """The merged frame with its partial checksum completed (what a NIC would do)."""
    off = offload_of(frame)
    assert off is not None
    return complete_checksum(bytes(frame), off.csum_start, off.csum_offset)


# --- merging data ---------------------------------------------------------------------


def test_v6_in_order_segments_become_one_packet(env: Env) -> None:
    frames = stream6(5, window=100)
    frames[-1] = seg6(1 + 4 * MSS, window=777)
    out = env.feed(*frames)
    assert len(out) == 1
    m = out[0]
    off = offload_of(m)
    assert off is not None
    assert (off.flags, off.gso_type, off.gso_size) == (F_NEEDS_CSUM, GSO_TCPV6, MSS)
    assert (off.csum_start, off.csum_offset, off.hdr_len) == (14 + 40, 16, 14 + 40 + 32)
    full = completed(m)
    p = IPv6(full[14:])
    assert p.plen == 32 + 5 * MSS and len(full) == 14 + 40 + 32 + 5 * MSS
    assert bytes(p[TCP].payload) == b"".join(payload_of(f) for f in frames)
    assert p[TCP].seq == 1 and p[TCP].window == 777 and p[TCP].flags == "A"
    chk = p[TCP].chksum
    del p[TCP].chksum
    assert IPv6(bytes(p))[TCP].chksum == chk       # scapy's full recomputation
    st = env.stats()
    assert (st["gro_packets"], st["gro_segs"], st["punted"]) == (1, 4, 1)
    assert st["gro_bytes"] == 4 * (14 + 40 + 32)
    assert env.link_a.rx_frames == 1


def test_v4_in_order_segments_become_one_packet_with_a_good_header_checksum(env: Env) -> None:
    frames = [seg4(100 + i * MSS, ident=7 + i) for i in range(3)]
    out = env.feed(*frames)
    assert len(out) == 1
    off = offload_of(out[0])
    assert off is not None and off.gso_type == GSO_TCPV4 and off.csum_start == 14 + 20
    full = completed(out[0])
    p = IP(full[14:])
    assert p.len == 20 + 32 + 3 * MSS and p.id == 7
    hdr = p.chksum
    del p.chksum
    assert IP(bytes(p)).chksum == hdr
    chk = p[TCP].chksum
    del p[TCP].chksum
    assert IP(bytes(p))[TCP].chksum == chk
    assert bytes(p[TCP].payload) == b"".join(payload_of(f) for f in frames)


def test_cutting_the_merged_packet_gives_back_the_segments(env: Env) -> None:
    frames = stream6(4)
    (m,) = env.feed(*frames)
    off = offload_of(m)
    assert off is not None
    cut = gso_segment(complete_checksum(bytes(m), off.csum_start, off.csum_offset)[14:], off.gso_size)
    assert [bytes(m[:14]) + c for c in cut] == frames


def test_core_takes_the_merged_packet_as_one_verified_tcp_packet(env: Env) -> None:
    from harness import one_stack
    frames = stream6(3)
    (m,) = env.feed(*frames)
    s, _clock = one_stack()[:2]
    off = offload_of(m)
    assert off is not None
    f = s._offload_rx(__import__("stack.wire.frame", fromlist=["parse_frame"]).parse_frame(m), off)
    assert f is not None and f.csum_ok and f.proto == 6


@pytest.mark.parametrize("case", ["gap", "other_flow", "ack", "options", "larger", "bad_csum", "syn", "fin",
                                  "rst", "urg", "ece", "hlim", "tclass", "pure_ack"])
def test_what_does_not_continue_comes_back_next_unchanged(env: Env, case: str) -> None:
    a, b = stream6(2)
    nxt = 1 + 2 * MSS
    third = {
        "gap": seg6(nxt + 1),
        "other_flow": seg6(nxt, sport=40001),
        "ack": seg6(nxt, ack=5001),
        "options": seg6(nxt, opts=[("NOP", None), ("NOP", None), ("Timestamp", (1001, 2000))]),
        "larger": seg6(nxt, MSS + 1),
        "bad_csum": seg6(nxt, csum=0x1234),
        "syn": seg6(nxt, flags="SA"),
        "fin": seg6(nxt, flags="FA"),
        "rst": seg6(nxt, flags="RA"),
        "urg": seg6(nxt, flags="UA"),
        "ece": seg6(nxt, flags="EA"),
        "hlim": seg6(nxt, hlim=63),
        "tclass": seg6(nxt, tc=1),
        "pure_ack": seg6(nxt, 0),
    }[case]
    after = seg6(nxt + 5 * MSS, sport=40002)
    out = env.feed(a, b, third, after)
    assert len(out) == 3
    assert payload_of(completed(out[0])) == payload_of(a) + payload_of(b)
    assert out[1] == third and type(out[1]) is bytes
    assert out[2] == after
    st = env.stats()
    assert (st["gro_packets"], st["gro_segs"]) == (1, 1)


def test_psh_and_a_shorter_segment_are_merged_and_end_the_merge(env: Env) -> None:
    a, b = stream6(2)
    c = seg6(1 + 2 * MSS, flags="PA")
    d = seg6(1 + 3 * MSS)
    out = env.feed(a, b, c, d)
    assert len(out) == 2 and out[1] == d
    p = IPv6(completed(out[0])[14:])
    assert p[TCP].flags == "PA" and len(p[TCP].payload) == 3 * MSS
    short = seg6(1 + 4 * MSS, 100)
    e = seg6(1 + 4 * MSS + 100, 100)
    out = env.feed(seg6(1 + 3 * MSS), short, e)
    assert len(out) == 2 and out[1] == e
    assert len(IPv6(completed(out[0])[14:])[TCP].payload) == MSS + 100


def test_a_first_segment_with_psh_or_alone_is_returned_as_read(env: Env) -> None:
    a = seg6(1, flags="PA")
    b = seg6(1 + MSS)
    out = env.feed(a, b)
    assert out == [a, b] and all(type(f) is bytes for f in out)
    assert env.stats()["gro_packets"] == 0


def test_v4_idents_without_df_must_run_on_by_one(env: Env) -> None:
    run = [seg4(1 + i * MSS, ident=(65534 + i) & 0xFFFF, ipflags=0) for i in range(3)]
    assert len(env.feed(*run)) == 1                  # 65534, 65535, 0
    jump = [seg4(1 + 3 * MSS, ident=5, ipflags=0), seg4(1 + 4 * MSS, ident=7, ipflags=0)]
    assert env.feed(*jump) == jump
    df = [seg4(1 + 5 * MSS, ident=9), seg4(1 + 6 * MSS, ident=3)]
    assert len(env.feed(*df)) == 1


def test_v4_fragments_and_options_are_not_merged(env: Env) -> None:
    for frames in ([seg4(1, ipflags="MF"), seg4(1 + MSS, ipflags="MF")],
                   [seg4(1, ipopts=b"\x01\x01\x01\x00"), seg4(1 + MSS, ipopts=b"\x01\x01\x01\x00")]):
        assert env.feed(*frames) == frames
    assert env.stats()["gro_packets"] == 0


def test_the_merge_stops_at_64_kb(env: Env) -> None:
    frames = stream6(80, size=1400)
    out = env.feed(*frames, n=200)
    sizes = [len(payload_of(completed(f) if offload_of(f) else f)) for f in out]
    assert sum(sizes) == 80 * 1400
    assert all(32 + s <= 0xFFFF for s in sizes) and len(out) == 2


# --- pure ACKs ----------------------------------------------------------------------------


def ack6(ack: int, *, seq: int = 1, window: int = 512, opts: Any = None) -> bytes:
    return seg6(seq, 0, ack=ack, window=window, opts=opts)


def test_a_later_cumulative_ack_supersedes_an_earlier_one(env: Env) -> None:
    acks = [ack6(1000 * i) for i in range(1, 6)]
    out = env.feed(*acks)
    assert out == [acks[-1]] and type(out[0]) is bytes
    st = env.stats()
    assert st["acks_merged"] == 4 and st["gro_bytes"] == 4 * len(acks[0]) and st["gro_packets"] == 0


def test_ack_number_wraps(env: Env) -> None:
    acks = [ack6(0xFFFFFF00), ack6(0x100)]
    assert env.feed(*acks) == [acks[1]]


def test_duplicate_acks_window_updates_and_sack_are_kept(env: Env) -> None:
    dup = [ack6(1000), ack6(1000), ack6(1000)]
    assert env.feed(*dup) == dup
    win = [ack6(2000, window=10), ack6(2000, window=20)]
    assert env.feed(*win) == win
    sack = [ack6(3000, opts=[("NOP", None), ("NOP", None), ("SAck", (4000, 5000))]),
            ack6(3500, opts=[("NOP", None), ("NOP", None), ("SAck", (4000, 6000))])]
    assert env.feed(*sack) == sack
    older = [ack6(5000), ack6(4000)]
    assert env.feed(*older) == older
    assert env.stats()["acks_merged"] == 0


# --- budget, switches, vnet -------------------------------------------------------------------


def test_interleaved_flows_respect_the_budget_and_keep_order(env: Env) -> None:
    frames = []
    for i in range(50):
        frames.append(seg6(1 + i * 200, 200, sport=40000))
        frames.append(seg6(1 + i * 200, 200, sport=40001))
    for f in frames:
        env.a.send(f)
    got = env.fp.read_batch(IN_A, env.link_a, 64)
    assert 64 <= len(got) <= 65 and got == frames[:len(got)]
    rest: list[bytes] = []
    while True:
        batch = env.fp.read_batch(IN_A, env.link_a, 64)
        if not batch:
            break
        rest += batch
    assert got + rest == frames


def test_a_held_frame_is_returned_even_when_the_budget_is_spent(env: Env) -> None:
    a, b = stream6(2)
    other = seg6(1, sport=40001)
    for f in (a, b, other):
        env.a.send(f)
    out = env.fp.read_batch(IN_A, env.link_a, 3)
    assert len(out) == 2 and out[1] == other
    assert env.fp.read_batch(IN_A, env.link_a, 3) == []


def test_gro_off_returns_frames_as_read(env: Env) -> None:
    env.fp.set_gro(IN_A, False)
    assert not env.fp.gro(IN_A)
    frames = stream6(4)
    assert env.feed(*frames) == frames
    env.fp.set_gro(IN_A, True)
    assert len(env.feed(*stream6(4, start=1 + 4 * MSS))) == 1


def test_a_vnet_link_merges_frames_with_a_zero_header() -> None:
    e = Env(vnet_a=True)
    try:
        frames = stream6(3)
        for f in frames:
            e.a.send(bytes(10) + f)
        out = e.fp.read_batch(IN_A, e.link_a, 64)
        assert len(out) == 1
        off = offload_of(out[0])
        assert off is not None and off.gso_type == GSO_TCPV6 and off.gso_size == MSS
        assert payload_of(completed(out[0])) == b"".join(payload_of(f) for f in frames)
        assert e.link_a.rx_offload == 0
    finally:
        e.close()


def test_a_fast_path_frame_read_while_merging_is_still_forwarded(env: Env) -> None:
    from tests.native.test_fastpath import udp6
    env.fwd6()
    a, b = stream6(2)
    fwd = udp6()
    out = env.feed(a, b, fwd)
    assert len(out) == 1
    assert env.stats()["fwd6"] == 1
    assert len(env.b.recv(2000)) > 0


# --- random sequences -----------------------------------------------------------------------


def test_random_sequences_never_lose_or_reorder_payload(env: Env) -> None:
    rng = random.Random(8)
    for _ in range(60):
        frames = []
        seqs = {40000: 1, 40001: 1}
        for _ in range(rng.randrange(1, 40)):
            sport = rng.choice((40000, 40000, 40000, 40001))
            size = rng.choice((MSS, MSS, MSS, 10, 0))
            flags = rng.choice(("A", "A", "A", "PA", "FA"))
            seq = seqs[sport] + rng.choice((0, 0, 0, 0, 1))
            frames.append(seg6(seq, size, flags=flags, sport=sport, ack=rng.choice((5000, 5000, 6000))))
            seqs[sport] = seq + size
        got: list[bytes] = []
        for f in frames:
            env.a.send(f)
        while True:
            batch = env.fp.read_batch(IN_A, env.link_a, rng.randrange(1, 70))
            if not batch:
                break
            got += batch
        # per flow, the payload bytes in order are the same; ACK supersession drops
        # only pure ACKs (payload b"")
        for sport in (40000, 40001):
            def data(fs: list[bytes], sp: int = sport) -> bytes:
                out = b""
                for f in fs:
                    full = completed(f) if offload_of(f) else f
                    t = IPv6(full[14:])[TCP]
                    if t.sport == sp:
                        out += bytes(t.payload)
                return out
            assert data(got) == data(frames)
        assert set(got) <= set(frames) | {g for g in got if offload_of(g)}


def test_no_frame_is_held_after_read_batch(env: Env) -> None:
    frames = [*stream6(3), seg6(1, sport=40005)]
    env.feed(*frames)
    assert env.fp._table.holds[env.fp._links[IN_A].slot].len == 0
    assert env.fp.read_batch(IN_A, env.link_a, 64) == []


def test_pairs_give_the_same_bytes_and_metadata_as_offloadbytes() -> None:
    for vnet in (False, True):
        e = Env(vnet_a=vnet)
        try:
            frames = stream6(3)
            got = []
            for pairs in (False, True):
                for f in frames:
                    e.a.send(bytes(10) + f if vnet else f)
                got.append(e.fp.read_batch(IN_A, e.link_a, 64, pairs=pairs))
            (ob,), (pair,) = got
            assert type(pair) is tuple and type(pair[0]) is bytes
            assert pair == (bytes(ob), offload_of(ob))
        finally:
            e.close()

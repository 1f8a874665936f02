"""TAP offloads in core: TSO output, NEEDS_CSUM and GSO input, forwarding GSO packets.

The link marks frames with ``wire.gso.OffloadBytes``; core sees the metadata, never
the virtio-net header itself. Equivalence is the main check: what a TSO interface
sends, cut by ``gso_segment``, is byte for byte what a plain interface sends.
"""

from __future__ import annotations

import random

import pytest
from harness import IF, IP, TCP, Ether, IPv6, settle, smac

from stack.core.clock import ManualClock
from stack.core.stack import Stack
from stack.core.stats import Drop
from stack.wire.addr import fmt, ip4, ip6, mac
from stack.wire.checksum import pseudo_sum4, pseudo_sum6
from stack.wire.gso import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP,
    GsoChain,
    Offload,
    OffloadBytes,
    gso_segment,
    joined,
    offload_of,
)

MAC_A, MAC_B = mac("02:00:00:00:00:0a"), mac("02:00:00:00:00:0b")
GA_A, GA_B = ip6("2001:db8:1::2"), ip6("2001:db8:1::1")
V4_A, V4_B = ip4("192.0.2.2"), ip4("192.0.2.1")
PORT = 5001
TSO = 65535


def host(*, offload: bool) -> tuple[Stack, ManualClock]:
    clock = ManualClock()
    st = Stack(rng=random.Random(7), now=clock.now())
    st.add_interface("tap0", MAC_A, 1500, now=clock.now(), dad_transmits=0)
    st.add_address(IF, GA_A, 64, clock.now())
    st.add_address(IF, V4_A, 24, clock.now())
    st.add_neighbor(IF, GA_B, MAC_B, clock.now())
    st.add_neighbor(IF, V4_B, MAC_B, clock.now())
    if offload:
        st.set_offload(IF, TSO)
    settle(st, clock)
    st.drain_tx()
    return st, clock


def _ip(v6: bool) -> IPv6 | IP:
    return IPv6(src=fmt(GA_B), dst=fmt(GA_A)) if v6 else IP(src=fmt(V4_B), dst=fmt(V4_A))


def _eth(pkt: object) -> bytes:
    return bytes(Ether(src=smac(MAC_B), dst=smac(MAC_A)) / pkt)


def established(st: Stack, clock: ManualClock, v6: bool) -> tuple[object, int, int]:
    """A passive connection from the peer (MSS 1440, window scale 7, SACK, no timestamps);
    returns (connection, our next seq, peer's next seq)."""
    st.tcp.listen(None, PORT)
    mss = 1440 if v6 else 1460
    st.receive(IF, _eth(_ip(v6) / TCP(sport=40000, dport=PORT, flags="S", seq=1000, window=65535,
                                      options=[("MSS", mss), ("NOP", None), ("WScale", 7),
                                               ("SAckOK", b"")])), clock.now())
    (_ifx, raw), = st.drain_tx()
    synack = Ether(raw)[TCP]
    st.receive(IF, _eth(_ip(v6) / TCP(sport=40000, dport=PORT, flags="A", seq=1001, ack=synack.seq + 1,
                                      window=8192)), clock.now())
    assert st.drain_tx() == []
    listener = st.tcp.listeners[(None, PORT, 0)]
    conn = listener.accept()
    assert conn is not None
    return conn, synack.seq + 1, 1001


def _ack(v6: bool, ack: int) -> bytes:
    return _eth(_ip(v6) / TCP(sport=40000, dport=PORT, flags="A", seq=1001, ack=ack & 0xFFFFFFFF, window=8192))


def _split_all(frames: list[bytes]) -> list[bytes]:
    """Frames as they go on the wire after the kernel's segmentation."""
    out: list[bytes] = []
    for fr in frames:
        off = offload_of(fr)
        if off is not None and off.gso:
            out.extend(fr[:14] + seg for seg in gso_segment(fr[14:], off.gso_size))
        else:
            out.append(bytes(fr))
    return out


def _run_transfer(v6: bool, offload: bool, size: int, chains: bool = False) -> tuple[list[bytes], bytes]:
    """Send ``size`` bytes to a peer that ACKs each flight; returns (frames sent, bytes received).
    ``chains``: core hands TSO frames out unjoined (``tx_chains``, as to the runtime); they
    are joined here."""
    st, clock = host(offload=offload)
    st.tx_chains = chains
    conn, _seq, _ = established(st, clock, v6)
    data = random.Random(3).randbytes(size)
    sent: list[bytes] = []
    got = bytearray()
    pos = conn.send(data, clock.now())        # type: ignore[attr-defined]
    for _ in range(1000):
        tx = [fr for _ifx, fr in st.drain_tx()]
        if chains:
            assert all(type(fr) is GsoChain for fr in tx if offload_of(fr) is not None)
            tx = [joined(fr) for fr in tx]
        if not tx and pos >= size:
            break
        sent.extend(tx)
        last = 0
        for fr in _split_all(tx):
            t = Ether(fr)[TCP]
            got.extend(bytes(t.payload))
            last = t.seq + len(t.payload)
        clock.advance(1_000_000)
        if last:
            st.receive(IF, _ack(v6, last), clock.now())
        if pos < size:
            pos += conn.send(data[pos:], clock.now())      # type: ignore[attr-defined]
    return sent, bytes(got)


@pytest.mark.parametrize("v6", [True, False])
def test_tso_interface_sends_big_segments_that_split_into_what_a_plain_one_sends(v6: bool) -> None:
    size = 300_000
    big, got_big = _run_transfer(v6, True, size)
    small, got_small = _run_transfer(v6, False, size)
    assert got_big == got_small == random.Random(3).randbytes(size)
    assert max(len(f) for f in small) <= 1514 and all(offload_of(f) is None for f in small)
    gso = [f for f in big if offload_of(f) is not None]
    assert gso and max(len(f) for f in gso) > 30_000 and len(big) < len(small) // 5
    mss = 1440 if v6 else 1460
    for f in gso:
        off = offload_of(f)
        assert off is not None
        assert off == Offload(0, GSO_TCPV6 if v6 else GSO_TCPV4, 14 + (40 if v6 else 20) + 20, mss, 0, 0)
        assert (len(f) - off.hdr_len) % mss == 0 or Ether(f)[TCP].flags.P    # whole MSS multiples but the tail
        assert len(f) - 14 <= 65535
        pkt = Ether(f)
        ip = pkt[IPv6] if v6 else pkt[IP]
        assert ip.__class__(bytes(ip)).chksum if not v6 else True
        # the full checksum is valid (scapy recomputes it when the field is deleted)
        t = pkt[TCP]
        chk = t.chksum
        del t.chksum
        assert (IPv6 if v6 else IP)(bytes(ip))[TCP].chksum == chk
    assert _split_all(big) == small                # byte for byte: what the kernel puts on the wire


@pytest.mark.parametrize("v6", [True, False])
def test_tso_frames_handed_out_unjoined_are_the_same_frames(v6: bool) -> None:
    """With ``tx_chains`` (the runtime's setting) TSO frames leave core as GsoChain, not
    copied into one bytes object per layer; joined, they are the frames of the default."""
    chained, got_chained = _run_transfer(v6, True, 300_000, chains=True)
    big, got_big = _run_transfer(v6, True, 300_000)
    assert got_chained == got_big == random.Random(3).randbytes(300_000)
    assert chained == big and [offload_of(f) for f in chained] == [offload_of(f) for f in big]
    assert all(type(f) is bytes or type(f) is OffloadBytes for f in big)


def _flights(offload: bool, window: int) -> list[list[int]]:
    """Payload sizes of the frames of the first three flights toward a peer offering ``window``."""
    st, clock = host(offload=offload)
    conn, seq, _ = established(st, clock, True)
    conn.send(bytes(200_000), clock.now())        # type: ignore[attr-defined]
    flights = []
    for _ in range(3):
        sizes = [len(fr) - 74 for _i, fr in st.drain_tx()]
        flights.append(sizes)
        seq += sum(sizes)
        st.receive(IF, _eth(_ip(True) / TCP(sport=40000, dport=PORT, flags="A", seq=1001, ack=seq,
                                            window=window)), clock.now())
    return flights


@pytest.mark.parametrize("window", [8192, 60])       # scaled by 2**7: 1 MiB, 7680 bytes
def test_tso_segments_respect_cwnd_and_the_peer_window(window: int) -> None:
    tso, plain = _flights(True, window), _flights(False, window)
    assert [sum(f) for f in tso] == [sum(f) for f in plain]     # the same bytes leave per flight
    assert tso[0] == [10 * 1440]                                # initial cwnd (10 segments) in one packet
    if window == 60:
        assert tso[1:] == [[5 * 1440], [5 * 1440]]              # 7680 bytes: 5 whole MSS
    else:
        assert all(len(f) == 1 and f[0] % 1440 == 0 for f in tso)


def test_loopback_and_plain_interfaces_have_no_tso() -> None:
    st, clock = host(offload=False)
    route = st.route_output(GA_B, 0, None, clock.now())
    assert st.tso_max(route) == 0
    st.set_offload(IF, TSO)
    assert st.tso_max(st.route_output(GA_B, 0, None, clock.now())) == TSO
    assert st.tso_max(st.route_output(GA_A, 0, None, clock.now())) == 0     # to ourselves: lo


# -- input: NEEDS_CSUM and GSO from the kernel ----------------------------------------------

def _data_frame(v6: bool, ack: int, payload: bytes, *, partial: bool, seq: int = 1001) -> bytes:
    raw = bytearray(_eth(_ip(v6) / TCP(sport=40000, dport=PORT, flags="PA", seq=seq, ack=ack, window=8192)
                         / payload))
    if partial:
        l4 = 14 + (40 if v6 else 20)
        src, dst = (bytes(raw[22:38]), bytes(raw[38:54])) if v6 else (bytes(raw[26:30]), bytes(raw[30:34]))
        n = len(raw) - l4
        ps = pseudo_sum6(src, dst, n, 6) if v6 else pseudo_sum4(src, dst, n, 6)
        raw[l4 + 16:l4 + 18] = ps.to_bytes(2, "big")
    return bytes(raw)


@pytest.mark.parametrize("v6", [True, False])
def test_needs_csum_frames_are_accepted_and_bad_checksums_still_dropped(v6: bool) -> None:
    st, clock = host(offload=True)
    conn, seq, _ = established(st, clock, v6)
    l4 = 14 + (40 if v6 else 20)
    partial = _data_frame(v6, seq, b"hello", partial=True)
    st.receive(IF, partial, clock.now())                                 # plain bytes: a bad checksum
    assert st.stats[Drop.BAD_CHECKSUM] == 1 and conn.recv_queue == 0     # type: ignore[attr-defined]
    wrong_start = OffloadBytes.make(partial, Offload(F_NEEDS_CSUM, 0, 0, 0, l4 + 4, 16))
    st.receive(IF, wrong_start, clock.now())                             # metadata not about this checksum
    assert st.stats[Drop.BAD_CHECKSUM] == 2
    st.receive(IF, OffloadBytes.make(partial, Offload(F_NEEDS_CSUM, 0, 0, 0, l4, 16)), clock.now())
    assert conn.recv(100) == b"hello"                                    # type: ignore[attr-defined]
    corrupt = bytearray(_data_frame(v6, seq, b"world", partial=False, seq=1006))
    corrupt[-1] ^= 0xFF
    st.receive(IF, bytes(corrupt), clock.now())
    assert st.stats[Drop.BAD_CHECKSUM] == 3 and conn.recv_queue == 0    # type: ignore[attr-defined]


def _deliver(st: Stack, ifindex: int, frame: bytes, off: Offload, now: int, pair: bool) -> None:
    """The frame with its metadata as OffloadBytes, or as plain bytes beside it (what
    the runtime's fast-path reader hands core: one 64 KB copy less)."""
    if pair:
        st.receive(ifindex, bytes(frame), now, off)
    else:
        st.receive(ifindex, OffloadBytes.make(frame, off), now)


@pytest.mark.parametrize("pair", [False, True], ids=["offloadbytes", "pair"])
@pytest.mark.parametrize("v6", [True, False])
def test_a_gso_segment_from_the_kernel_is_taken_whole(v6: bool, pair: bool) -> None:
    st, clock = host(offload=True)
    conn, seq, _ = established(st, clock, v6)
    l4 = 14 + (40 if v6 else 20)
    payload = random.Random(1).randbytes(60_000)
    frame = _data_frame(v6, seq, payload, partial=True)
    _deliver(st, IF, frame, Offload(F_NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, l4 + 20, 1440, l4, 16),
             clock.now(), pair)
    assert conn.recv(100_000) == payload                                 # type: ignore[attr-defined]
    acks = [Ether(fr)[TCP] for _i, fr in st.drain_tx()]
    assert acks and acks[-1].ack == 1001 + len(payload)


def test_a_gso_type_we_did_not_enable_is_dropped() -> None:
    st, clock = host(offload=True)
    _conn, seq, _ = established(st, clock, True)
    frame = _data_frame(True, seq, bytes(3000), partial=True)
    st.receive(IF, OffloadBytes.make(frame, Offload(F_NEEDS_CSUM, GSO_UDP, 74, 1000, 54, 16)), clock.now())
    assert st.stats["offload_bad_gso"] == 1 and st.drain_tx() == []


# -- forwarding -----------------------------------------------------------------------------

R0, R1, MAC_C = mac("02:00:00:00:aa:00"), mac("02:00:00:00:aa:01"), mac("02:00:00:00:00:0c")
C6, C4 = ip6("2001:db8:2::1"), ip4("203.0.113.5")


def router(*, offload_out: bool, mtu1: int = 1500) -> tuple[Stack, ManualClock]:
    clock = ManualClock()
    st = Stack(rng=random.Random(5), now=clock.now(), forwarding=True)
    st.add_interface("tap0", R0, now=clock.now(), dad_transmits=0)
    st.add_interface("tap1", R1, mtu1, now=clock.now(), dad_transmits=0)
    st.add_address(2, ip6("2001:db8:1::2"), 64, clock.now())
    st.add_address(3, ip6("2001:db8:2::2"), 64, clock.now())
    st.add_address(2, ip4("192.0.2.2"), 24, clock.now())
    st.add_address(3, ip4("203.0.113.1"), 24, clock.now())
    for ifx, addr, m in ((2, GA_B, MAC_B), (2, V4_B, MAC_B), (3, C6, MAC_C), (3, C4, MAC_C)):
        st.add_neighbor(ifx, addr, m, clock.now())
    st.set_offload(2, TSO)
    if offload_out:
        st.set_offload(3, TSO)
    settle(st, clock)
    st.drain_tx()
    return st, clock


def _gso_from_b(v6: bool, size: int, gso_size: int, flags: str = "PA") -> tuple[bytes, Offload]:
    ip = IPv6(src=fmt(GA_B), dst=fmt(C6), hlim=64) if v6 else IP(src=fmt(V4_B), dst=fmt(C4), ttl=64,
                                                                    flags="DF", id=100)
    raw = bytearray(bytes(Ether(src=smac(MAC_B), dst=smac(R0)) / ip
                          / TCP(sport=40000, dport=80, seq=5, ack=9, flags=flags, window=100)
                          / random.Random(2).randbytes(size)))
    l4 = 14 + (40 if v6 else 20)
    src, dst = (bytes(raw[22:38]), bytes(raw[38:54])) if v6 else (bytes(raw[26:30]), bytes(raw[30:34]))
    ps = (pseudo_sum6 if v6 else pseudo_sum4)(src, dst, len(raw) - l4, 6)
    raw[l4 + 16:l4 + 18] = ps.to_bytes(2, "big")                         # partial, as the kernel sends
    off = Offload(F_NEEDS_CSUM, (GSO_TCPV6 if v6 else GSO_TCPV4) if gso_size else 0, l4 + 20, gso_size, l4, 16)
    return bytes(raw), off


@pytest.mark.parametrize("pair", [False, True], ids=["offloadbytes", "pair"])
@pytest.mark.parametrize("v6", [True, False])
def test_forwarding_keeps_gso_whole_toward_an_offload_link(v6: bool, pair: bool) -> None:
    st, clock = router(offload_out=True)
    raw, off = _gso_from_b(v6, 40_000, 1440)
    _deliver(st, 2, raw, off, clock.now(), pair)
    (ifx, fr), = st.drain_tx()
    assert ifx == 3 and offload_of(fr) == off and len(fr) == len(raw)
    assert fr[14:] != raw[14:] and (fr[21] == 63 if v6 else fr[22] == 63)    # hop limit / TTL decremented


@pytest.mark.parametrize("pair", [False, True], ids=["offloadbytes", "pair"])
@pytest.mark.parametrize("v6", [True, False])
def test_forwarding_splits_gso_in_software_toward_a_plain_link(v6: bool, pair: bool) -> None:
    st, clock = router(offload_out=False)
    raw, off = _gso_from_b(v6, 40_000, 1440, flags="FPA")
    _deliver(st, 2, raw, off, clock.now(), pair)
    out = [fr for _i, fr in st.drain_tx()]
    assert len(out) == 28 and all(offload_of(f) is None and len(f) <= 1514 for f in out)
    payload = b""
    for i, f in enumerate(out):
        pkt = Ether(f)
        t = pkt[TCP]
        ip = pkt[IPv6] if v6 else pkt[IP]
        chk, ipchk = t.chksum, (None if v6 else ip.chksum)
        del t.chksum
        if not v6:
            del ip.chksum
        again = (IPv6 if v6 else IP)(bytes(ip))
        assert again[TCP].chksum == chk and (v6 or again.chksum == ipchk)
        assert (ip.hlim if v6 else ip.ttl) == 63
        assert t.seq == 5 + i * 1440
        assert str(t.flags) == ("FPA" if i == 27 else "A")
        if not v6:
            assert ip.id == 100 + i
        payload += bytes(t.payload)
    assert payload == random.Random(2).randbytes(40_000)
    assert st.stats.get("ip", "gso_split") == 28


def test_forwarding_completes_a_partial_checksum_toward_a_plain_link() -> None:
    st, clock = router(offload_out=False)
    raw, off = _gso_from_b(True, 500, 0)
    st.receive(2, OffloadBytes.make(raw, off), clock.now())
    (_ifx, fr), = st.drain_tx()
    t = Ether(fr)[TCP]
    chk = t.chksum
    del t.chksum
    assert IPv6(bytes(Ether(fr)[IPv6]))[TCP].chksum == chk != int.from_bytes(raw[54 + 16:54 + 18], "big")


def test_forwarding_gso_whose_segments_do_not_fit_gets_packet_too_big() -> None:
    st, clock = router(offload_out=True, mtu1=1280)
    raw, off = _gso_from_b(True, 20_000, 1440)
    st.receive(2, OffloadBytes.make(raw, off), clock.now())
    (ifx, fr), = st.drain_tx()
    assert ifx == 2 and Ether(fr)[IPv6].nh == 58 and st.stats[Drop.IPV6_TOO_BIG] == 1

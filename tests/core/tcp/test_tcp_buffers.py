"""buffers.py: send/receive buffers and the bounded reassembly queue."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from stack.core.tcp.buffers import ReassemblyQueue, ReceiveBuffer, SendBuffer


def test_send_buffer_append_read_ack() -> None:
    b = SendBuffer(100, limit=10)
    assert b.append(b"0123456789abc") == 10 and b.space() == 0
    assert b.read(102, 3) == b"234" and b.end == 110
    assert b.ack(104) == 4 and b.seq == 104 and b.read(104, 2) == b"45"
    assert b.ack(200) == 6 and len(b) == 0 and b.seq == 110


def test_receive_buffer_reads_in_pieces() -> None:
    r = ReceiveBuffer(100)
    r.append(b"hello world")
    assert r.read(5) == b"hello" and r.read(100) == b" world" and len(r) == 0 and r.space() == 100


def test_reassembly_merges_and_pops() -> None:
    q = ReassemblyQueue(limit=1000)
    assert q.insert(20, b"cc")
    assert q.insert(10, b"aa")
    assert q.insert(12, b"bbbbbbbb")                 # bridges both: one range
    assert (q.starts, q.ends, q.size) == ([10], [22], 12)
    assert q.pop_ready(5) is None
    assert q.pop_ready(10) == b"aabbbbbbbbcc" and q.size == 0


def test_reassembly_grows_in_place_for_runs() -> None:
    q = ReassemblyQueue(limit=10_000)
    for i in range(10):
        q.insert(100 + i * 10, bytes([i]) * 10)
    assert len(q) == 1 and q.size == 100
    assert q.pop_ready(105) == b"".join(bytes([i]) * 10 for i in range(10))[5:]


def test_reassembly_bounds() -> None:
    q = ReassemblyQueue(limit=10, max_ranges=2)
    assert q.insert(0, b"x" * 8)
    assert not q.insert(20, b"y" * 3)                # bytes
    assert q.insert(20, b"y" * 2)
    assert not q.insert(30, b"z")                     # ranges
    assert q.size == 10


def test_sack_blocks_most_recent_first() -> None:
    q = ReassemblyQueue(limit=1000)
    q.insert(100, b"a" * 10)
    q.insert(300, b"c" * 10)
    q.insert(200, b"b" * 10)
    assert q.sack_blocks() == ((200, 210), (300, 310), (100, 110))
    assert q.sack_blocks(limit=2) == ((200, 210), (300, 310))


@settings(max_examples=200)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40))
def test_any_arrival_order_reassembles_the_stream(seed: int, n: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(n * 50)
    pieces = []
    for _ in range(n * 2):
        a = rng.randrange(len(data))
        b = min(len(data), a + rng.randrange(1, 120))
        pieces.append((a, data[a:b]))
    pieces.append((0, data))                          # make sure everything is covered
    rng.shuffle(pieces)
    q = ReassemblyQueue(limit=1 << 20, max_ranges=1000)
    out = bytearray()
    nxt = 0
    for start, chunk in pieces:
        if start + len(chunk) <= nxt:
            continue
        if start <= nxt:
            out += chunk[nxt - start :]
            nxt = start + len(chunk)
        else:
            assert q.insert(start, chunk)
        ready = q.pop_ready(nxt)
        if ready is not None:
            out += ready
            nxt += len(ready)
    assert bytes(out) == data and q.size == 0


def test_send_buffer_keeps_immutable_data_by_reference_and_copies_mutable_data() -> None:
    big = bytes(range(256)) * 64                     # 16 KB
    b = SendBuffer(0, limit=20000)
    assert b.append(memoryview(big)[1000:]) == len(big) - 1000      # a transport's leftover view
    assert b.append(big) == 20000 - (len(big) - 1000)                # only part fits: a view of it
    assert all(type(c) is memoryview and c.obj is big for c in b.chunks)
    v = b.read(0, 8000)
    assert type(v) is memoryview and v.obj is big and bytes(v) == big[1000:9000]
    assert b.read(14000, 5000) == big[15000:] + big[:5000 - 1384]   # across the two chunks
    mutable = bytearray(b"m" * 5000)
    b2 = SendBuffer(0, limit=10000)
    b2.append(memoryview(mutable))
    mutable[:] = b"x" * 5000                          # the caller reuses its buffer
    assert b2.read(0, 5000) == b"m" * 5000
    wide = memoryview(bytes(32000)).cast("I")         # items wider than a byte: never a view
    b3 = SendBuffer(0, limit=40000)
    b3.append(wide)
    assert type(b3.chunks[0]) is not memoryview


def test_receive_buffer_hands_out_large_payloads_without_copies() -> None:
    r = ReceiveBuffer(1 << 20)
    big = bytes(range(256)) * 256                    # 64 KB, as a GSO segment's payload
    r.append(big)
    r.append(b"tail")
    assert r.read(1 << 20) is big                    # the same object: queued and returned as is
    assert r.read(100) == b"tail" and len(r) == 0


def test_receive_buffer_small_pieces_share_chunks() -> None:
    r = ReceiveBuffer(1 << 20)
    for i in range(10_000):
        r.append(bytes([i & 0xFF]))
    assert len(r.chunks) == 1 and len(r) == 10_000
    assert r.read(3) == b"\x00\x01\x02" and len(r) == 9_997


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=9000), max_size=30),
       st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=40))
def test_receive_buffer_reads_what_was_appended_in_order(pieces: list[bytes], reads: list[int]) -> None:
    r = ReceiveBuffer(1 << 30)
    for p in pieces:
        r.append(p)
    want = b"".join(pieces)
    got = bytearray()
    for n in reads:
        before = len(r)
        out = r.read(n)
        assert type(out) is bytes and len(out) <= n and len(r) == before - len(out)
        assert out or before == 0                    # something whenever something is there
        got += out
    while len(r):
        got += r.read(65536)
    assert got == want and r.read(10) == b""


def test_send_buffer_queues_bytes_without_copies_and_reads_views_of_them() -> None:
    b = SendBuffer(1000, limit=1 << 20)
    block = bytes(range(256)) * 200                  # 51200 bytes, as chargen writes
    assert b.append(block) == len(block) and b.chunks[0] is block
    view = b.read(1000 + 100, 10_000)
    assert isinstance(view, memoryview) and view.obj is block and bytes(view) == block[100:10_100]
    assert b.append(b"xy") == 2 and b.append(bytearray(b"z")) == 1
    assert b.read(1000 + len(block) - 2, 5) == block[-2:] + b"xyz"      # across chunks: one join
    assert b.ack(1000 + len(block) + 1) == len(block) + 1 and len(b.chunks) == 1 and b.read(b.seq, 2) == b"yz"
    b.clear()
    assert len(b) == 0 and b.end == b.seq


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "ack", "read"]), st.binary(max_size=9000),
                          st.integers(min_value=0, max_value=20_000), st.integers(min_value=0, max_value=20_000)),
                max_size=40))
def test_send_buffer_matches_a_plain_model(ops: list[tuple[str, bytes, int, int]]) -> None:
    b = SendBuffer(5000, limit=60_000)
    model = bytearray()
    una = 5000
    for op, data, x, y in ops:
        if op == "append":
            piece = data if x & 1 else bytearray(data)
            n = b.append(piece)
            assert n == min(len(data), 60_000 - len(model))
            model += data[:n]
        elif op == "ack":
            k = min(x, len(model))
            assert b.ack(una + k) == k
            del model[:k]
            una += k
        elif model:
            off = x % len(model)
            n = min(y, len(model) - off)
            assert bytes(b.read(una + off, n)) == bytes(model[off:off + n])
        assert len(b) == len(model) and b.end == una + len(model) and b.seq == una


def test_byte_view_flattens_wide_and_strided_views() -> None:
    from array import array

    from stack.core.tcp.buffers import byte_view
    words = array("H", range(10))
    v = byte_view(memoryview(words))
    assert type(v) is memoryview and len(v) == 20 and bytes(v) == words.tobytes()
    strided = memoryview(b"abcdef")[::2]
    assert bytes(byte_view(strided)) == b"ace"
    plain = b"xyz"
    assert byte_view(plain) is plain

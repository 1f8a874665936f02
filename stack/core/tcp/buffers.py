"""Send buffer, receive buffer and the out-of-order reassembly queue.

RFC 9293 §3.8.6 (windows), RFC 2018 §4 (which SACK blocks a receiver reports).

Invariants: sequence numbers are unwrapped ints (see ``seq.py``). Buffers are
``bytearray``s trimmed at the front with ``del buf[:n]``, which CPython does in
O(1) amortized (it moves the start pointer), so neither acknowledging nor
reading costs a copy of what remains. The send buffer copies bytes once on the
way in and once per segment built; the receive buffer keeps large ``bytes``
payloads as they arrived and hands them out as they are (small ones are copied
into a shared tail once, and once out). The reassembly queue keeps disjoint, non-adjacent
ranges, so an in-order run behind a hole grows one ``bytearray`` in place
instead of re-merging (no O(n^2) during loss recovery), and is bounded both in
bytes and in ranges; what does not fit is refused and counted by the caller.

All three charge one ``TcpMemory`` per stack (``limits.tcp_mem``) for the bytes they
hold, so the sum over every connection is bounded too, not only each buffer.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

Buffer = bytes | bytearray | memoryview


def byte_view(data: Buffer) -> Buffer:
    """``data`` with ``len`` in bytes: a memoryview of wider items (``array('I')``) or of
    several dimensions becomes a flat byte view of the same memory (a copy only when
    it is not contiguous); anything else is returned as it is."""
    if type(data) is memoryview and (data.itemsize != 1 or data.ndim != 1 or data.format != "B"):
        return data.cast("B") if data.c_contiguous else memoryview(data.tobytes())
    return data


class TcpMemory:
    """The bytes that every connection's buffers hold together (send, receive and out
    of order), against ``limit`` (``limits.tcp_mem``: Linux's tcp_mem hard limit).

    Buffers add what they take to ``used`` and subtract what leaves. Above the limit a
    buffer takes nothing more, with one exception: each may always hold ``FLOOR``
    bytes of its own (Linux's tcp_rmem/tcp_wmem minimum, a socket's "right by birth"),
    so under pressure every connection still moves, slowly, and none waits forever on
    memory that another holds. ``used`` can pass ``limit`` by at most a floor per
    buffer. Without a pool a buffer gets its own unbounded one."""

    __slots__ = ("limit", "used")

    FLOOR = 4096

    def __init__(self, limit: int = 1 << 62) -> None:
        self.limit = limit
        self.used = 0

    def room(self, held: int) -> int:
        """What a buffer already holding ``held`` bytes may add now."""
        return max(self.limit - self.used, self.FLOOR - held, 0)


class SendBuffer:
    """Bytes from SND.UNA on: sent-but-unacknowledged, then not yet sent.

    A queue of chunks, never one ``bytearray`` trimmed at the front: CPython copies
    the whole remaining buffer when a bytearray trimmed with ``del b[:n]`` grows
    again, which made every ``send`` after an ACK copy up to ``limit`` bytes. A
    ``bytes`` argument (or a ``memoryview`` of one: what a transport keeps of a
    partly taken write) is queued as it is, or as a view of the part that fits
    (immutable: no copy), and ``read`` answers a large range inside one such chunk
    with a ``memoryview`` of it (a TSO segment's payload goes to the link as it is). Small pieces share a
    ``bytearray`` tail (up to ``TAIL`` bytes), which ``read`` always copies out."""

    __slots__ = ("chunks", "head", "limit", "mem", "seq", "size")

    SMALL = 4096            # bytes pieces this large are queued as they are
    TAIL = 65536
    VIEW_AT = 4096          # read: ranges this large inside a bytes chunk come back as a view

    def __init__(self, seq: int, limit: int, mem: TcpMemory | None = None) -> None:
        self.chunks: deque[bytes | bytearray | memoryview] = deque()
        self.head = 0           # acknowledged bytes at the front of chunks[0]
        self.size = 0
        self.seq = seq          # sequence number of the first unacknowledged byte
        self.limit = limit
        self.mem = mem if mem is not None else TcpMemory()

    def __len__(self) -> int:
        return self.size

    @property
    def end(self) -> int:
        """Sequence number just after the last queued byte."""
        return self.seq + self.size

    def space(self) -> int:
        return max(0, min(self.limit - self.size, self.mem.room(self.size)))

    def append(self, data: Buffer) -> int:
        """Queue as much of ``data`` as fits (this buffer's limit, the stack's
        ``TcpMemory``); returns the number of bytes taken."""
        n = min(len(data), self.limit - self.size, self.mem.room(self.size))
        if n <= 0:
            return 0
        chunks = self.chunks
        if n >= self.SMALL:
            if type(data) is bytes or (type(data) is memoryview and type(data.obj) is bytes
                                       and data.itemsize == 1 and data.c_contiguous):
                # immutable underneath: kept by reference, a part of it as a view
                chunks.append(data if n == len(data) else memoryview(data)[:n])
            else:
                chunks.append(bytes(memoryview(data)[:n]))
        elif chunks and type(chunks[-1]) is bytearray and len(chunks[-1]) < self.TAIL:
            chunks[-1] += memoryview(data)[:n]
        else:
            chunks.append(bytearray(memoryview(data)[:n]))
        self.size += n
        self.mem.used += n
        return n

    def ack(self, upto: int) -> int:
        """Drop bytes below ``upto``; returns how many were freed."""
        n = min(upto - self.seq, self.size)
        if n <= 0:
            return 0
        self.seq += n
        self.size -= n
        self.mem.used -= n
        chunks = self.chunks
        left = n + self.head
        while chunks and left >= len(chunks[0]):
            left -= len(chunks.popleft())
        self.head = left if chunks else 0
        return n

    def read(self, seq: int, n: int) -> bytes:
        """``n`` bytes from ``seq`` (a ``memoryview`` of a bytes chunk when large)."""
        off = seq - self.seq
        assert off >= 0 and off + n <= self.size, "reading outside the send buffer"
        off += self.head
        parts: list[memoryview] = []
        for c in self.chunks:
            clen = len(c)
            if off >= clen:
                off -= clen
                continue
            take = min(n, clen - off)
            if not parts and take == n:
                if n >= self.VIEW_AT and type(c) is not bytearray:
                    return memoryview(c)[off:off + n]       # type: ignore[return-value]
                with memoryview(c) as view:
                    return view[off:off + n].tobytes()
            parts.append(memoryview(c)[off:off + take])
            n -= take
            off = 0
            if not n:
                break
        out = b"".join(parts)
        for v in parts:
            v.release()         # a bytearray tail may grow again
        return out

    def clear(self) -> None:
        """Forget everything queued (abort); SND.UNA stays."""
        self.mem.used -= self.size
        self.chunks.clear()
        self.head = self.size = 0


class ReceiveBuffer:
    """In-order bytes the application has not read yet, as a queue of chunks.

    A large ``bytes`` payload (a 64 KB GSO segment parsed out of its frame) is
    queued as it is and handed to ``read`` as the same object when it fits: no
    copy in, none out. Smaller pieces are gathered into a ``bytearray`` tail (up to
    ``TAIL`` bytes each), so a stream of tiny segments costs one chunk per 64 KB
    (memory stays bounded by ``limit`` plus little overhead), not one object per
    segment, and is read with one copy as before."""

    __slots__ = ("chunks", "head", "limit", "mem", "size")

    SMALL = 4096            # payloads this large (bytes) are queued as they are
    TAIL = 65536            # smaller ones join the last chunk while it is below this

    def __init__(self, limit: int, mem: TcpMemory | None = None) -> None:
        self.chunks: deque[bytes | bytearray] = deque()   # a bytearray chunk is ours to grow
        self.head = 0           # bytes of chunks[0] already read
        self.size = 0
        self.limit = limit
        self.mem = mem if mem is not None else TcpMemory()

    def __len__(self) -> int:
        return self.size

    def space(self) -> int:
        return max(0, min(self.limit - self.size, self.mem.room(self.size)))

    def append(self, data: Buffer) -> None:
        """Queue in-order data the window test accepted (never refused here: the
        window offered, ``TcpControlBlock.rcv_window``, already counted the pool)."""
        n = len(data)
        if not n:
            return
        chunks = self.chunks
        if n >= self.SMALL and type(data) is bytes:
            chunks.append(data)                          # immutable: shared, not copied
        elif chunks and type(chunks[-1]) is bytearray and len(chunks[-1]) < self.TAIL:
            chunks[-1] += data
        else:
            chunks.append(bytearray(data))
        self.size += n
        self.mem.used += n

    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes``; a large chunk at the front is returned alone (a short
        read, which a stream reader takes as it takes any), never split to fill up."""
        before = self.size
        out = self._read(max_bytes)
        self.mem.used -= before - self.size
        return out

    def _read(self, max_bytes: int) -> bytes:
        chunks = self.chunks
        if not chunks or max_bytes <= 0:
            return b""
        first = chunks[0]
        head = self.head
        avail = len(first) - head
        if avail >= max_bytes or avail >= self.SMALL or len(chunks) == 1:
            if head == 0 and avail <= max_bytes:
                chunks.popleft()
                self.size -= avail
                return first if type(first) is bytes else bytes(first)
            take = min(avail, max_bytes)
            out = bytes(memoryview(first)[head:head + take])
            if take == avail:
                chunks.popleft()
                self.head = 0
            else:
                self.head = head + take
            self.size -= take
            return out
        parts: list[bytes | bytearray] = []
        n = 0
        while chunks and n < max_bytes:
            c = chunks[0]
            take = min(len(c) - self.head, max_bytes - n)
            if self.head == 0 and take == len(c):
                parts.append(c)                          # whole: joined without a copy first
            else:
                parts.append(bytes(memoryview(c)[self.head:self.head + take]))
            n += take
            if self.head + take == len(c):
                chunks.popleft()
                self.head = 0
            else:
                self.head += take
        self.size -= n
        return b"".join(parts)

    def clear(self) -> None:
        self.mem.used -= self.size
        self.chunks.clear()
        self.head = self.size = 0

    def detach(self) -> None:
        """Stop counting against the stack's pool (the connection is gone; what is left
        may still be read): the bytes held move to a pool of their own."""
        self.mem.used -= self.size
        self.mem = TcpMemory()
        self.mem.used = self.size


class ReassemblyQueue:
    """Out-of-order data above RCV.NXT as sorted disjoint ranges [start, end)."""

    __slots__ = ("chunks", "ends", "last_seq", "limit", "max_ranges", "mem", "size", "starts")

    def __init__(self, limit: int, max_ranges: int = 64, mem: TcpMemory | None = None) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.chunks: list[bytearray] = []
        self.size = 0              # bytes held
        self.limit = limit
        self.max_ranges = max_ranges
        self.last_seq = -1         # a byte of the most recently queued segment (RFC 2018 §4)
        self.mem = mem if mem is not None else TcpMemory()   # no floor here: all of it is optional

    def __len__(self) -> int:
        return len(self.starts)

    def insert(self, seq: int, data: Buffer) -> bool:
        """Add ``data`` at ``seq``; False (nothing stored) when it would exceed a bound."""
        end = seq + len(data)
        starts, ends = self.starts, self.ends
        i = bisect_left(ends, seq)            # first range ending at or after seq
        j = i
        while j < len(starts) and starts[j] <= end:
            j += 1
        if i == j:
            mem = self.mem
            if self.size + len(data) > self.limit or len(starts) >= self.max_ranges \
                    or mem.used + len(data) > mem.limit:
                return False
            starts.insert(i, seq)
            ends.insert(i, end)
            self.chunks.insert(i, bytearray(data))
            self.size += len(data)
            mem.used += len(data)
        elif not self._merge(i, j, seq, data):
            return False
        self.last_seq = seq
        return True

    def _merge(self, i: int, j: int, seq: int, data: Buffer) -> bool:
        starts, ends, chunks = self.starts, self.ends, self.chunks
        end = seq + len(data)
        new_start, new_end = min(starts[i], seq), max(ends[j - 1], end)
        held = sum(ends[k] - starts[k] for k in range(i, j))
        added = (new_end - new_start) - held
        if self.size + added > self.limit or self.mem.used + added > self.mem.limit:
            return False
        if j == i + 1 and starts[i] <= seq:
            # Common case: extends (or repeats) one range to the right; grow in place.
            if end > ends[i]:
                chunks[i] += data[ends[i] - seq :]
                ends[i] = end
        else:
            merged = bytearray()
            cursor = new_start
            for k in range(i, j):
                if cursor < starts[k]:
                    merged += data[cursor - seq : starts[k] - seq]
                merged += chunks[k]
                cursor = ends[k]
            if cursor < end:
                merged += data[cursor - seq :]
            starts[i:j] = [new_start]
            ends[i:j] = [new_end]
            chunks[i:j] = [merged]
        self.size += added
        self.mem.used += added
        return True

    def pop_ready(self, rcv_nxt: int) -> bytearray | None:
        """Remove and return the data that continues at ``rcv_nxt``, if any."""
        out: bytearray | None = None
        starts, ends, chunks = self.starts, self.ends, self.chunks
        while starts and starts[0] <= rcv_nxt:
            start, end, chunk = starts.pop(0), ends.pop(0), chunks.pop(0)
            self.size -= end - start
            self.mem.used -= end - start
            if end <= rcv_nxt:
                continue
            tail = chunk if start == rcv_nxt else chunk[rcv_nxt - start :]
            if out is None:
                out = tail
            else:
                out += tail
            rcv_nxt = end
        return out

    def sack_blocks(self, limit: int = 4) -> tuple[tuple[int, int], ...]:
        """RFC 2018 §4: the first block holds the most recent segment, then the
        others (highest first: those the sender is likeliest not to know yet)."""
        if not self.starts:
            return ()
        first = bisect_left(self.ends, self.last_seq + 1)
        if first >= len(self.starts) or self.starts[first] > self.last_seq:
            first = len(self.starts) - 1
        blocks = [(self.starts[first], self.ends[first])]
        for k in range(len(self.starts) - 1, -1, -1):
            if len(blocks) >= limit:
                break
            if k != first:
                blocks.append((self.starts[k], self.ends[k]))
        return tuple(blocks)

    def highest(self) -> int | None:
        return self.ends[-1] if self.ends else None

    def clear(self) -> None:
        self.mem.used -= self.size
        self.starts.clear()
        self.ends.clear()
        self.chunks.clear()
        self.size = 0

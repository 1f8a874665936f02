"""A fault-injecting link: seeded loss, duplication, reordering, corruption, delay.

This kernel has no ``netem`` (reference/TESTBED.md), so impairments that the kernel
cannot make are made here, around the stack's own link, as smoltcp's
``FaultInjector`` wraps a device. It is deterministic for a given seed and takes
time as an argument: ``offer(frame, now)`` queues a frame, ``due(now)`` returns the
frames whose time has come, ``next_at()`` says when to look again. The driver
applies one injector per direction of an interface (config ``[interface.faults]``).

Semantics per frame, in order: lost with probability ``loss``; corrupted (one
random bit flipped past the Ethernet header) with probability ``corrupt``;
delayed by ``delay_ms`` plus uniform ``jitter_ms``; with probability ``reorder``
held back an extra ``reorder_ms`` so that later frames overtake it; duplicated
with probability ``duplicate`` (the copy follows 0.1 ms later). Every decision is
counted.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

ETH_HEADER_LEN = 14


@dataclass(frozen=True, slots=True)
class FaultConfig:
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_ms: float = 10.0
    limit: int = 10_000          # frames held at most (beyond: dropped and counted)
    seed: int = 1
    direction: str = "both"      # "rx", "tx" or "both"

    def active(self) -> bool:
        return any((self.loss, self.duplicate, self.reorder, self.corrupt, self.delay_ms, self.jitter_ms))

    def validate(self) -> list[str]:
        problems = []
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                problems.append(f"{name}: {v} is not a probability between 0 and 1")
        for name in ("delay_ms", "jitter_ms", "reorder_ms"):
            if getattr(self, name) < 0:
                problems.append(f"{name}: must not be negative")
        if self.direction not in ("rx", "tx", "both"):
            problems.append(f"direction: {self.direction!r} is not one of rx, tx, both")
        if self.limit < 1:
            problems.append("limit: must be at least 1")
        return problems


@dataclass(slots=True)
class FaultCounters:
    offered: int = 0
    passed: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    overflow: int = 0


@dataclass(slots=True)
class FaultInjector:
    cfg: FaultConfig
    rng: random.Random = field(init=False)
    counters: FaultCounters = field(default_factory=FaultCounters)
    _heap: list[tuple[int, int, bytes]] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.cfg.seed)

    def _push(self, at: int, frame: bytes) -> None:
        if len(self._heap) >= self.cfg.limit:
            self.counters.overflow += 1
            return
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, frame))

    def offer(self, frame: bytes, now: int) -> None:
        cfg, rng, c = self.cfg, self.rng, self.counters
        c.offered += 1
        if cfg.loss and rng.random() < cfg.loss:
            c.lost += 1
            return
        if cfg.corrupt and rng.random() < cfg.corrupt and len(frame) > ETH_HEADER_LEN:
            buf = bytearray(frame)
            bit = rng.randrange((len(buf) - ETH_HEADER_LEN) * 8)
            buf[ETH_HEADER_LEN + bit // 8] ^= 1 << (bit % 8)
            frame = bytes(buf)
            c.corrupted += 1
        delay = cfg.delay_ms
        if cfg.jitter_ms:
            delay += rng.uniform(0, cfg.jitter_ms)
        if cfg.reorder and rng.random() < cfg.reorder:
            delay += cfg.reorder_ms
            c.reordered += 1
        at = now + int(delay * 1_000_000)
        self._push(at, frame)
        if cfg.duplicate and rng.random() < cfg.duplicate:
            c.duplicated += 1
            self._push(at + 100_000, frame)

    def due(self, now: int) -> list[bytes]:
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        self.counters.passed += len(out)
        return out

    def next_at(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

"""TAP-less operation: in-memory links, a wire between two stacks, virtual time.

``MemoryLink`` has the interface of ``stack.link.tap.TapLink`` (``fileno``,
``read_batch``, ``write``, ``counters``, ``close``) so the runtime ``Driver`` runs it
unchanged: frames in with ``inject(frame)``, frames out to ``on_tx(frame)`` (or kept in
``sent`` when nobody listens). Readiness is an eventfd, so the event loop wakes up
for injected frames like for a TAP.

``Wire(a, b, loss=0.0, seed=0)`` joins two links; ``loss`` drops frames with a
seeded generator.

``VirtualTimeLoop`` is an asyncio selector loop whose clock jumps to the next timer
whenever no fd is ready: DAD, TCP retransmission and timeouts take no wall time, and
a test that hangs on an event that never comes ends at its (virtual) timeout. Use it
only where all I/O is in memory; a real socket that is slow to answer lets virtual
time run ahead. ``LoopClock`` gives core Instants from ``loop.time()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import selectors
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

INBOX_MAX = 4096


class MemoryLink:
    """An in-memory stand-in for a TAP device."""

    def __init__(self, name: str, *, inbox_max: int = INBOX_MAX) -> None:
        self.name = name
        self.on_tx: Callable[[bytes], None] | None = None
        self.sent: deque[bytes] = deque(maxlen=INBOX_MAX)
        self._inbox: deque[bytes] = deque()
        self._inbox_max = inbox_max
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._signalled = False
        self.closed = False
        self.rx_frames = 0
        self.tx_frames = 0
        self.rx_dropped = 0

    def fileno(self) -> int:
        return self._fd

    def inject(self, frame: bytes) -> bool:
        """A frame arrives from the wire; False when the inbox is full (dropped)."""
        if self.closed or len(self._inbox) >= self._inbox_max:
            self.rx_dropped += 1
            return False
        self._inbox.append(bytes(frame))
        if not self._signalled:
            self._signalled = True
            os.eventfd_write(self._fd, 1)
        return True

    def read_batch(self, max_frames: int = 64) -> list[bytes]:
        inbox = self._inbox
        n = min(max_frames, len(inbox))
        frames = [inbox.popleft() for _ in range(n)]
        if not inbox and self._signalled:
            self._signalled = False
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._fd)
        self.rx_frames += n
        return frames

    def write(self, frame: bytes) -> bool:
        self.tx_frames += 1
        if self.on_tx is not None:
            self.on_tx(frame)
        else:
            self.sent.append(frame)
        return True

    def counters(self) -> dict[str, int]:
        return {"rx_frames": self.rx_frames, "tx_frames": self.tx_frames, "rx_dropped": self.rx_dropped}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)

    def __repr__(self) -> str:
        return f"MemoryLink({self.name!r})"


class Wire:
    """Two memory links joined back to back (optionally lossy, seeded)."""

    def __init__(self, a: MemoryLink, b: MemoryLink, *, loss: float = 0.0, seed: int = 0,
                 tap: Callable[[str, bytes], None] | None = None) -> None:
        self.a, self.b = a, b
        self.loss = loss
        self.rng = random.Random(seed)
        self.dropped = 0
        self.tap = tap
        a.on_tx = lambda frame: self._carry(a, b, frame)
        b.on_tx = lambda frame: self._carry(b, a, frame)

    def _carry(self, src: MemoryLink, dst: MemoryLink, frame: bytes) -> None:
        if self.tap is not None:
            self.tap(src.name, frame)
        if self.loss and self.rng.random() < self.loss:
            self.dropped += 1
            return
        dst.inject(frame)

    def cut(self) -> None:
        self.a.on_tx = None
        self.b.on_tx = None


class LoopClock:
    """Core time (ns) from the event loop's clock (virtual under ``VirtualTimeLoop``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def now(self) -> int:
        return int(self.loop.time() * 1e9)


class _VirtualSelector(selectors.BaseSelector):
    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._sel.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._sel.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._sel.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._sel.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            return self._sel.select(None)       # nothing scheduled: wait for real I/O
        assert self.loop is not None
        self.loop.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._sel.get_map()

    def close(self) -> None:
        self._sel.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: idle means "jump to the next timer"."""

    virtual_time = True

    def __init__(self, start: float = 1000.0) -> None:
        self._vtime = start
        sel = _VirtualSelector()
        super().__init__(sel)
        sel.loop = self

    def time(self) -> float:
        return self._vtime

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._vtime += seconds


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]] | Awaitable[T], *, timeout: float = 600.0) -> T:
    """Run a coroutine on a fresh ``VirtualTimeLoop``; ``timeout`` is virtual seconds."""
    loop = VirtualTimeLoop()
    try:
        asyncio.set_event_loop(loop)
        coro = main() if callable(main) else main
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

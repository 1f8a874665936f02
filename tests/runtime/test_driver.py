"""Driver mechanics with a fake core and socketpair links (no TAP, no root)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from stack.link.faults import FaultConfig
from stack.link.tap import LinkGone
from stack.runtime.driver import Driver, MonotonicClock


class FakeLink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.wire, self.ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.written: list[bytes] = []
        self.closed = False
        self.gone = False

    def fileno(self) -> int:
        return self.ours.fileno()

    def read_batch(self, n: int) -> list[bytes]:
        if self.gone:
            raise LinkGone(self.name, 77)
        out = []
        for _ in range(n):
            try:
                out.append(self.ours.recv(65536))
            except BlockingIOError:
                break
        return out

    def write(self, frame: bytes) -> bool:
        self.written.append(frame)
        return True

    def counters(self) -> dict[str, int]:
        return {"tx_frames": len(self.written)}

    def close(self) -> None:
        self.closed = True


class FakeStack:
    def __init__(self) -> None:
        self.tx: list[tuple[int, bytes]] = []
        self.events: list[object] = []
        self.log: list[tuple[str, str]] = []
        self.received: list[tuple[int, bytes]] = []
        self.deadline: int | None = None
        self.polls = 0
        self.link_events: list[tuple[int, bool]] = []

    def receive(self, ifindex: int, frame: bytes, now: int) -> None:
        self.received.append((ifindex, frame))
        self.tx.append((ifindex, b"re:" + frame))
        self.events.append(("got", frame))
        self.log.append(("info", f"received {frame!r}"))

    def drain_tx(self) -> list[tuple[int, bytes]]:
        out, self.tx = self.tx, []
        return out

    def drain_events(self) -> list[object]:
        out, self.events = self.events, []
        return out

    def poll_at(self) -> int | None:
        return self.deadline

    def poll(self, now: int) -> None:
        if self.deadline is not None and now >= self.deadline:
            self.polls += 1
            self.deadline = None
            self.tx.append((2, b"timer"))

    def set_link(self, ifindex: int, up: bool, now: int) -> None:
        self.link_events.append((ifindex, up))


@pytest.fixture
def env() -> Iterator[tuple[asyncio.AbstractEventLoop, FakeStack, FakeLink, Driver]]:
    loop = asyncio.new_event_loop()
    st = FakeStack()
    link = FakeLink("tap0")
    drv = Driver(st, MonotonicClock(), loop, batch=4)
    drv.add_link(2, link)  # type: ignore[arg-type]
    drv.start()
    yield loop, st, link, drv
    drv.stop()
    loop.close()


def until(loop: asyncio.AbstractEventLoop, cond: Any, timeout: float = 2.0) -> None:
    async def wait() -> None:
        while not cond():
            await asyncio.sleep(0.001)
    loop.run_until_complete(asyncio.wait_for(wait(), timeout))


def test_frames_in_replies_out_events_to_listeners(env: Any, caplog: pytest.LogCaptureFixture) -> None:
    loop, st, link, drv = env
    seen: list[object] = []
    drv.add_listener(seen.extend)
    caplog.set_level(logging.INFO, logger="tapstack.core")
    for i in range(10):                      # more than one batch
        link.wire.send(b"f%d" % i)
    until(loop, lambda: len(link.written) == 10)
    assert link.written == [b"re:f%d" % i for i in range(10)]
    assert seen == [("got", b"f%d" % i) for i in range(10)]
    assert st.log == [] and "received b'f0'" in caplog.text


def test_listener_errors_do_not_stop_the_driver(env: Any) -> None:
    loop, _st, link, drv = env

    def bad(events: list[object]) -> None:
        raise RuntimeError("listener bug")
    drv.add_listener(bad)
    link.wire.send(b"x")
    until(loop, lambda: link.written == [b"re:x"])
    assert drv.listener_errors == 1


def test_timer_fires_at_poll_at(env: Any) -> None:
    loop, st, link, drv = env
    st.deadline = drv.clock.now() + 20_000_000          # 20 ms
    drv.service()
    until(loop, lambda: st.polls == 1)
    assert link.written == [b"timer"]
    assert drv._timer is None


def test_link_gone_is_an_event_not_a_crash(env: Any, caplog: pytest.LogCaptureFixture) -> None:
    loop, st, link, drv = env
    link.gone = True
    link.wire.send(b"x")
    until(loop, lambda: st.link_events == [(2, False)])
    assert link.closed and 2 not in drv.links and "went away" in caplog.text
    st.tx.append((2, b"late"))
    drv.service()
    assert drv.tx_no_link == 1
    assert drv.link_counters() == {"tap0": {"tx_frames": 0}}


def test_rx_faults_drop_and_count(env: Any) -> None:
    loop, st, link, drv = env
    drv.set_faults(2, FaultConfig(loss=1.0, direction="rx"))
    link.wire.send(b"x")
    until(loop, lambda: drv.faults_rx[2].counters.lost == 1)
    assert st.received == [] and drv.link_counters()["tap0"]["faults_rx_lost"] == 1


def test_tx_delay_faults_release_on_the_timer(env: Any) -> None:
    loop, st, link, drv = env
    drv.set_faults(2, FaultConfig(delay_ms=30, direction="tx"))
    link.wire.send(b"x")
    until(loop, lambda: st.received == [(2, b"x")])
    assert link.written == []                      # held back
    until(loop, lambda: link.written == [b"re:x"])


def test_core_exceptions_are_counted_not_fatal(env: Any, caplog: pytest.LogCaptureFixture) -> None:
    loop, st, link, drv = env

    def broken(ifindex: int, frame: bytes, now: int) -> None:
        if frame == b"bad":
            raise ValueError("core bug")
        FakeStack.receive(st, ifindex, frame, now)
    st.receive = broken  # type: ignore[method-assign]
    link.wire.send(b"bad")
    link.wire.send(b"good")
    until(loop, lambda: link.written == [b"re:good"])
    assert drv.core_errors == 1 and "core receive failed" in caplog.text
    assert drv.counters()["core_errors"] == 1


class ChattyStack(FakeStack):
    """A peer that sends its next frame as soon as our answer to the previous one is
    out: the wire gets frame n + 1 while the driver still handles frame n."""

    def __init__(self, link: FakeLink, count: int) -> None:
        super().__init__()
        self.link = link
        self.left = count

    def receive(self, ifindex: int, frame: bytes, now: int) -> None:
        super().receive(ifindex, frame, now)
        self.left -= 1
        if self.left > 0:
            self.link.wire.send(b"f%d" % self.left)


@pytest.mark.parametrize("busy_poll_us", [0, 200_000])
def test_busy_poll_reads_what_arrives_within_the_window_in_the_same_wakeup(busy_poll_us: int) -> None:
    loop = asyncio.new_event_loop()
    link = FakeLink("tap0")
    st = ChattyStack(link, 5)
    drv = Driver(st, MonotonicClock(), loop, batch=4, busy_poll_us=busy_poll_us)
    drv.add_link(2, link)  # type: ignore[arg-type]
    wakeups = []
    real = drv._on_readable

    def counted(ifindex: int) -> None:
        wakeups.append(ifindex)
        real(ifindex)
    drv._on_readable = counted  # type: ignore[method-assign]
    drv.start()
    try:
        link.wire.send(b"f5")
        until(loop, lambda: len(link.written) == 5)
        assert link.written == [b"re:f5", b"re:f4", b"re:f3", b"re:f2", b"re:f1"]
        if busy_poll_us:
            # the first wake-up read all five; the window then ended with nothing more
            assert wakeups == [2] and drv.busy_polls == 4
            assert drv.counters()["busy_polls"] == 4
        else:
            assert len(wakeups) == 5 and drv.busy_polls == 0
    finally:
        drv.stop()
        loop.close()


def test_busy_poll_yields_to_a_due_core_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    import stack.runtime.driver as driver_mod
    monkeypatch.setattr(driver_mod, "BUSY_POLL_MAX_NS", 10_000_000_000)   # only the timer can end it
    loop = asyncio.new_event_loop()
    link = FakeLink("tap0")
    st = FakeStack()
    drv = Driver(st, MonotonicClock(), loop, batch=4, busy_poll_us=10_000_000)   # 10 s window
    drv.add_link(2, link)  # type: ignore[arg-type]
    drv.start()
    try:
        st.deadline = drv.clock.now() + 1_000_000          # 1 ms
        drv._reschedule()
        link.wire.send(b"x")                                # starts a (long) busy-poll window
        until(loop, lambda: st.polls == 1, timeout=5)       # the timer still fires
        assert link.written == [b"re:x", b"timer"]
    finally:
        drv.stop()
        loop.close()

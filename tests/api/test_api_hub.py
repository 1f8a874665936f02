"""Hub: a kick from a handler of delivered events is done at the end of that batch."""

from __future__ import annotations

import asyncio

from stack.api.hub import Hub
from stack.core.clock import ManualClock


class _Driver:
    def __init__(self) -> None:
        self.listeners: list[object] = []
        self.services = 0

    def add_listener(self, cb: object) -> None:
        self.listeners.append(cb)

    def service(self) -> None:
        self.services += 1


class _Stack:
    def __init__(self) -> None:
        self.polls: list[int] = []

    def poll(self, now: int) -> None:
        self.polls.append(now)


class _Sock:
    pass


def test_kick_while_delivering_polls_core_once_after_the_batch_and_schedules_nothing() -> None:
    loop = asyncio.new_event_loop()
    try:
        clock, driver, stack = ManualClock(), _Driver(), _Stack()
        hub = Hub(stack, clock, driver, loop)
        a, b = _Sock(), _Sock()
        seen: list[tuple[object, list[int]]] = []

        def handler(ev: object) -> None:
            seen.append((ev, list(stack.polls)))      # core is not polled mid-batch
            hub.kick()

        hub.watch(a, handler)
        hub.watch(b, handler)
        events = [type("Ev", (), {"sock": a})(), type("Ev", (), {"sock": b})()]
        hub._on_events(events)
        assert [ev for ev, _ in seen] == events and all(p == [] for _, p in seen)
        assert stack.polls == [clock.now()]           # once, after both handlers
        loop.call_soon(loop.stop)
        loop.run_forever()                            # nothing else was scheduled
        assert driver.services == 0
        hub.kick()                                    # outside a batch: the loop's flush
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert driver.services == 1 and len(stack.polls) == 1
    finally:
        loop.close()

"""Echo requests sent by the stack itself (ICMPv6 / ICMP), for ``Stack.ping`` and
``tapstack ping``.

A ``Pinger`` owns one ICMP identifier (registered with the hub). ``send(seq)`` asks
core to send (raising OSError with the errno when there is no route or source);
replies and errors that quote our requests arrive as ``EchoReply``/``PingError``
events and are passed to ``on_event``. Round-trip times are core Instants
(``received_at - sent_at``), so they are measured where the frames are handled.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Any

from stack.api.hub import Hub, StackClosed, from_route_error, os_error
from stack.core.events import EchoReply, PingError
from stack.core.ipservice import RouteError


def payload(size: int) -> bytes:
    """iputils-like pattern bytes: 0x08, 0x09, ... after the first 8."""
    return bytes((i + 8) & 0xFF for i in range(size))


class Pinger:
    def __init__(self, hub: Hub, dst: bytes, zone: int, *, src: bytes | None = None,
                 size: int = 56, hop_limit: int | None = None,
                 on_event: Callable[[Any], None] | None = None) -> None:
        if not 0 <= size <= 65507:
            raise os_error(errno.EINVAL, f"bad payload size {size}")
        if src is not None and len(src) != len(dst):
            raise os_error(errno.EINVAL, "source and destination are of different families")
        self.hub = hub
        self.dst = dst
        self.zone = zone
        self.src = src
        self.size = size
        self.hop_limit = hop_limit
        self.family = 6 if len(dst) == 16 else 4
        self.on_event = on_event
        self.ident = hub.register_ping(self.family, self._on_event)
        self.closed = False
        self.route: Any = None
        self._data = payload(size)

    def _on_event(self, ev: Any) -> None:
        if self.on_event is not None and not self.closed:
            self.on_event(ev)

    def send(self, seq: int) -> None:
        """Send echo request ``seq`` (0..65535). OSError when it cannot leave."""
        st = self.hub.stack
        now = self.hub.now()
        try:
            if self.family == 6:
                self.route = st.icmp6.ping_send(self.dst, self.zone, self.ident, seq & 0xFFFF, self._data,
                                                now, src=self.src, hop_limit=self.hop_limit)
            else:
                self.route = st.ip4.ping_send(self.dst, self.ident, seq & 0xFFFF, self._data, now,
                                              src=self.src, ttl=self.hop_limit)
        except RouteError as e:
            raise from_route_error(e) from None
        finally:
            self.hub.kick()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.hub.unregister_ping(self.family, self.ident)


async def ping_once(hub: Hub, dst: bytes, zone: int, *, timeout: float = 5.0, size: int = 56,
                    src: bytes | None = None) -> float:
    """One echo request; the round-trip time in seconds. OSError on an ICMP error
    (EHOSTUNREACH ...), TimeoutError (ETIMEDOUT) without an answer."""
    fut: asyncio.Future[EchoReply] = hub.loop.create_future()

    def on_event(ev: EchoReply | PingError | StackClosed) -> None:
        if fut.done():
            return
        if isinstance(ev, EchoReply):
            fut.set_result(ev)
        elif isinstance(ev, StackClosed):
            fut.set_exception(os_error(ev.errno))
        else:
            err = errno.ENETUNREACH if "No route" in ev.text else errno.EHOSTUNREACH
            fut.set_exception(OSError(err, f"{hub.text(ev.src, ev.src_zone)}: {ev.text}"))

    pinger = Pinger(hub, dst, zone, src=src, size=size, on_event=on_event)
    try:
        pinger.send(1)
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT, f"no echo reply from {hub.text(dst, zone)} within "
                          f"{timeout:g} s") from None
        return max(0, reply.received_at - reply.sent_at) / 1e9
    finally:
        pinger.close()

"""The api layer's handle on one running core stack: events in, flushes out.

A ``Hub`` wraps ``(core stack, clock, driver, loop)``. It registers one driver
listener and hands each core event to the api object that watches the core socket
concerned (``watch(sock, cb)``); echo replies and ping errors go to the ``Pinger``
that owns the ICMP identifier. Callbacks run after core returned (GUIDE §5: events
out, no callbacks in); they may call core again and then ``kick()``, which flushes
frames and events through ``driver.service()`` (re-entrant safe).

Also here: text addresses with ``%zone`` (``fe80::1%tap0``), the link-local default
rule of INTERFACE.md, and ``os_error()`` that turns errnos into ``OSError``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stack.core.events import EchoReply, PingError
from stack.wire.addr import fmt, ip, is_v4mapped, needs_zone, split_zone

log = logging.getLogger("tapstack.api")

EventCallback = Callable[[Any], None]
# Errors whose core detail says more than strerror (which address, which zone).
_DETAILED = {errno.EINVAL, errno.EADDRNOTAVAIL, errno.EADDRINUSE, errno.ENODEV}


@dataclass(frozen=True, slots=True)
class StackClosed:
    """The stack stopped (``Hub.close()``): every watcher hears it once, so that tasks
    waiting on a socket end with ENETDOWN instead of waiting forever."""
    sock: object
    errno: int = errno.ENETDOWN


def os_error(err: int, detail: str | None = None) -> OSError:
    """``OSError(err, strerror)``; picks the subclass (ConnectionRefusedError ...)."""
    text = os.strerror(err)
    if detail and err in _DETAILED:
        text = detail
    return OSError(err, text)


def from_route_error(e: OSError) -> OSError:
    """A core ``RouteError`` as the plain OSError a socket would raise."""
    err = e.errno or errno.EINVAL
    return os_error(err, e.strerror)


_PING_EVENTS = (EchoReply, PingError)     # a tuple: isinstance with a union type is slower


class Hub:
    """Event dispatch and flushing for the api objects of one stack."""

    def __init__(self, stack: Any, clock: Any, driver: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.stack = stack
        self.clock = clock
        self.driver = driver
        self.loop = loop
        self._watchers: dict[int, tuple[object, EventCallback]] = {}
        self._pings: dict[tuple[int, int], EventCallback] = {}
        self._rng = random.Random()
        self.closed = False
        self._kick_pending = False
        self._delivering = False           # inside _on_events (the driver's service())
        self._poll_due = False             # a kick while delivering: poll core after the batch
        driver.add_listener(self._on_events)

    @staticmethod
    def of(ctx: Any) -> Hub:
        """The hub of a control/daemon ``Context`` (created on first use)."""
        hub = ctx.extras.get("api.hub")
        if hub is None:
            loop = ctx.loop or asyncio.get_running_loop()
            hub = Hub(ctx.stack, ctx.clock, ctx.driver, loop)
            ctx.extras["api.hub"] = hub
        assert isinstance(hub, Hub)
        return hub

    def close(self) -> None:
        """Stop dispatching; tell every watcher and ping that the stack is gone."""
        if self.closed:
            return
        self.closed = True
        self.driver.remove_listener(self._on_events)
        watchers, self._watchers = list(self._watchers.values()), {}
        pings, self._pings = list(self._pings.values()), {}
        for sock, cb in watchers:
            self._tell(cb, StackClosed(sock))
        for cb in pings:
            self._tell(cb, StackClosed(None))

    @staticmethod
    def _tell(cb: EventCallback, ev: object) -> None:
        try:
            cb(ev)
        except Exception:
            log.exception("api close handler failed")

    # -- time and flushing ------------------------------------------------------

    def now(self) -> int:
        return int(self.clock.now())

    def kick(self) -> None:
        """Flush what a core call produced (frames out, events to watchers, timer).

        The flush runs from the loop soon after (coalesced): an API call never runs
        protocol callbacks of its own (asyncio's rule), and a burst of writes leaves
        in one batch. A kick from a handler of delivered events (most of them: an echo's
        write, a close on EOF) is done at the end of that batch instead: core is polled
        once, and the driver's service() that delivered the batch writes the output and
        sets the timer, without another loop pass, service() and timer tick."""
        if self._delivering:
            self._poll_due = True
            return
        if not self._kick_pending and not self.closed:
            self._kick_pending = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._kick_pending = False
        if not self.closed:
            self.driver.service()

    # -- event routing ------------------------------------------------------------

    def watch(self, sock: object, cb: EventCallback) -> None:
        self._watchers[id(sock)] = (sock, cb)

    def unwatch(self, sock: object) -> None:
        entry = self._watchers.get(id(sock))
        if entry is not None and entry[0] is sock:
            del self._watchers[id(sock)]

    def watching(self, sock: object) -> bool:
        entry = self._watchers.get(id(sock))
        return entry is not None and entry[0] is sock

    def _on_events(self, events: list[object]) -> None:
        self._delivering = True
        try:
            self._dispatch(events)
        finally:
            self._delivering = False
        if self._poll_due:
            self._poll_due = False
            if not self.closed:
                # What a kick's flush would do first (Driver._tick: Stack.poll); new events
                # it makes come back here in the same service(), as listeners' output does.
                self.stack.poll(self.now())

    def _dispatch(self, events: list[object]) -> None:
        for ev in events:
            try:
                if isinstance(ev, _PING_EVENTS):
                    fam = 6 if len(ev.src) == 16 else 4
                    cb = self._pings.get((fam, ev.ident))
                    if cb is not None:
                        cb(ev)
                    continue
                sock = getattr(ev, "sock", None)
                entry = self._watchers.get(id(sock))
                if entry is not None and entry[0] is sock:
                    entry[1](ev)
            except Exception:
                log.exception("api event handler failed for %r", ev)

    # -- ICMP echo identifiers ------------------------------------------------------

    def register_ping(self, family: int, cb: EventCallback, ident: int | None = None) -> int:
        if ident is None:
            for _ in range(1000):
                ident = self._rng.randrange(1, 0x10000)
                if (family, ident) not in self._pings:
                    break
            else:  # pragma: no cover - 65535 concurrent pings
                raise os_error(errno.EAGAIN)
        self._pings[(family, ident)] = cb
        return ident

    def unregister_ping(self, family: int, ident: int) -> None:
        self._pings.pop((family, ident), None)
        icmp = self.stack.icmp6 if family == 6 else self.stack.ip4
        forget = getattr(icmp, "ping_forget", None)
        if forget is not None:
            forget(ident)
        else:
            icmp.pings.pop(ident, None)

    # -- addresses --------------------------------------------------------------------

    def interface_names(self) -> list[str]:
        """Names of the non-loopback interfaces, in ifindex order."""
        return [iface.name for _, iface in sorted(self.stack.interfaces.items()) if not iface.loopback]

    def zone_index(self, zone_text: str) -> int:
        if zone_text.isdigit():
            z = int(zone_text)
            if z not in self.stack.interfaces:
                raise os_error(errno.ENODEV, f"no interface with index {z}")
            return z
        try:
            return int(self.stack.ifindex(zone_text))
        except KeyError:
            raise os_error(errno.ENODEV, f"no interface named {zone_text!r}") from None

    def default_zone(self, addr: bytes) -> int:
        """The zone of an unzoned link-local address: the only interface, or EINVAL."""
        names = self.interface_names()
        if len(names) == 1:
            return int(self.stack.ifindex(names[0]))
        text = fmt(addr)
        if not names:
            raise os_error(errno.EINVAL, f"{text} is link-local and this stack has no interface")
        raise os_error(errno.EINVAL, f"{text} is link-local: give its zone ({text}%IFNAME); "
                       f"this stack has {len(names)} interfaces ({', '.join(names)})")

    def parse_addr(self, host: Any, scope_id: int = 0) -> tuple[bytes, int]:
        """Text (``2001:db8::1``, ``fe80::1%tap0``, ``192.0.2.1``), ``ipaddress`` object
        or bytes -> ``(address bytes, zone)``. OSError(EINVAL) for anything else."""
        if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
            host = str(host)
        if isinstance(host, bytes | bytearray) and len(host) in (4, 16):
            addr, zone_text = bytes(host), None
        elif isinstance(host, str):
            try:
                text, zone_text = split_zone(host.strip())
                addr = ip(text.strip("[]"))
            except ValueError:
                raise os_error(errno.EINVAL, f"{host!r} is not an IP address (names are not "
                               "resolved inside the stack)") from None
        else:
            raise os_error(errno.EINVAL, f"{host!r} is not an IP address")
        if is_v4mapped(addr):
            return addr[12:], 0
        zone = 0
        if zone_text is not None:
            zone = self.zone_index(zone_text)
        elif scope_id:
            if scope_id not in self.stack.interfaces:
                raise os_error(errno.ENODEV, f"no interface with index {scope_id}")
            zone = scope_id
        if not needs_zone(addr):
            return addr, 0
        if not zone:
            zone = self.default_zone(addr)
        return addr, zone

    def parse_sockaddr(self, addr: Any) -> tuple[bytes, int, int]:
        """``(host, port)`` or ``(host, port, flowinfo, scope_id)`` -> (addr, port, zone)."""
        if not isinstance(addr, tuple | list) or len(addr) not in (2, 4):
            raise os_error(errno.EINVAL, f"bad socket address {addr!r}: expected (host, port)")
        host, port = addr[0], addr[1]
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise os_error(errno.EINVAL, f"bad port {port!r}")
        scope = int(addr[3]) if len(addr) == 4 else 0
        a, zone = self.parse_addr(host, scope)
        return a, port, zone

    def text(self, addr: bytes, zone: int) -> str:
        """Address text with ``%ifname`` for link-scope addresses."""
        return str(self.stack.fmt_zoned(addr, zone))

    def sockaddr(self, addr: bytes | None, port: int, zone: int = 0, family: int = 0) -> tuple[Any, ...]:
        """A Python-socket-like address tuple: (host, port) or (host, port, 0, scope_id)."""
        if addr is None:
            return ("::", port, 0, 0) if family == 6 or family == 0 else ("0.0.0.0", port)
        if len(addr) == 4:
            return (fmt(addr), port)
        z = zone if needs_zone(addr) else 0
        return (self.text(addr, z), port, 0, z)

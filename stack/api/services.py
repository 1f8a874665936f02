"""Built-in services and TCP forwards, on every address of the stack.

``start_services(ctx, cfg)`` (called by the daemon and by ``api.Stack``) starts, per
``[services]``, on TCP and UDP:

* echo (RFC 862): TCP copies input to output until the client's EOF, then closes;
  UDP answers each datagram with its data.
* discard (RFC 863): reads and drops.
* daytime (RFC 867): the date and time as one human-readable ASCII line
  (``Sunday, November 22, 2026 04:51:37-UTC``, CRLF), then TCP closes; UDP answers any
  datagram with it.
* chargen (RFC 864): TCP sends the rotating 72-character line pattern (the 95
  printable ASCII characters, each line starting one character later, CRLF) until the
  client goes away; UDP answers each datagram with a random number (0..512) of those
  characters.

and per ``[[forward]]`` a TCP relay from the stack's ``listen`` port to a host socket
(``to``, opened with ``asyncio.open_connection`` on the host): both directions, a
half-close (EOF) is passed on with ``write_eof``, buffers are bounded by the stream
limits (``drain()`` backpressure on both sides); a failure on either side resets the
other.

UDP answers leave from the address the request was sent to, so a connected client
(``nc -u``) accepts them. Returns a ``Services`` object; ``close()`` stops everything.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stack.api import sockets
from stack.api.hub import Hub

log = logging.getLogger("tapstack.services")

LINE_WIDTH = 72
PRINTABLE = bytes(range(0x20, 0x7F))       # the 95 printable ASCII characters
FORWARD_CONNECT_TIMEOUT = 10.0
RELAY_CHUNK = 64 * 1024
UDP_CHARGEN_MAX = 512


def chargen_line(n: int) -> bytes:
    """Line ``n`` of RFC 864's pattern: 72 characters starting at offset n, CRLF."""
    start = n % len(PRINTABLE)
    doubled = PRINTABLE + PRINTABLE
    return doubled[start:start + LINE_WIDTH] + b"\r\n"


CHARGEN_CYCLE = b"".join(chargen_line(i) for i in range(len(PRINTABLE)))   # 95 lines, then it repeats


def daytime_text(now: float | None = None) -> bytes:
    """RFC 867: 'Weekday, Month Day, Year HH:MM:SS-ZONE' (UTC), CRLF."""
    t = time.gmtime(now)
    return time.strftime("%A, %B %d, %Y %H:%M:%S-UTC", t).encode("ascii") + b"\r\n"


# ---------------------------------------------------------------------------
# TCP services: plain protocols on the transport, no task or stream objects per
# connection (a connection costs a protocol object and its callbacks, nothing else).


class _TcpService(asyncio.Protocol):
    """Base of the TCP services: keeps its transport in ``services.conns`` while open,
    so that ``Services.close()`` can reset the connections it serves."""

    def __init__(self, conns: set[asyncio.Transport]) -> None:
        self.conns = conns
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conns.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.conns.discard(self.transport)


class TcpEcho(_TcpService):
    """RFC 862: input goes back out until the client's EOF, then the FIN. While the
    answer waits in the transport above its high-water mark, reading stops (so the
    TCP window closes), as ``await writer.drain()`` did."""

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False                    # the transport closes: FIN after the echoed bytes

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()


class TcpDiscard(_TcpService):
    """RFC 863: reads and drops; the client's EOF closes."""

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False


class TcpDaytime(_TcpService):
    """RFC 867: one line, then the FIN; input is not read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.write(daytime_text())
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        pass


class TcpChargen(_TcpService):
    """RFC 864: the pattern until the client goes away; input is read and dropped
    (an EOF from the client does not stop it). Writes until the transport pauses us."""

    # ~450 KB per write, kept by reference down to the link: a 64 KB TSO segment then
    # lies inside one block (one view, no copy) unless it straddles two (~1 in 7)
    BLOCK = CHARGEN_CYCLE * 64

    def __init__(self, conns: set[asyncio.Transport]) -> None:
        super().__init__(conns)
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._fill()

    def _fill(self) -> None:
        t = self.transport
        assert t is not None
        block = self.BLOCK
        while not self.paused and not t.is_closing():
            t.write(block)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return True                     # keep sending (half-close from the client)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._fill()


TCP_PROTOCOLS: dict[str, type[_TcpService]] = {
    "echo": TcpEcho, "discard": TcpDiscard, "daytime": TcpDaytime, "chargen": TcpChargen}


# ---------------------------------------------------------------------------
# UDP


class UdpService(asyncio.DatagramProtocol):
    def __init__(self, hub: Hub, kind: str) -> None:
        self.hub = hub
        self.kind = kind
        self.transport: sockets.DatagramTransport | None = None
        self.rng = random.Random()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, sockets.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:   # pragma: no cover - see below
        self.answer(data, addr, None)

    def answer(self, data: bytes, addr: Any, local: bytes | None) -> None:
        if self.kind == "discard":
            return
        if self.kind == "echo":
            reply = data
        elif self.kind == "daytime":
            reply = daytime_text()
        else:
            n = self.rng.randint(0, UDP_CHARGEN_MAX)
            reply = (CHARGEN_CYCLE * (1 + n // len(CHARGEN_CYCLE)))[:n]
        assert self.transport is not None
        ep = self.transport.get_extra_info("endpoint")
        dst, port, zone = self.hub.parse_sockaddr(addr)
        if local is not None and (local[0] == 0xFF or (len(local) == 4 and local[0] >= 224)):
            local = None            # asked on a multicast/broadcast address: normal source
        try:
            sockets.send_udp_from(self.hub, ep.port, reply, dst, port, zone, local)
        except OSError as e:
            log.debug("udp %s: answer to %s failed: %s", self.kind, addr, e)


class _UdpServiceTransport(sockets.DatagramTransport):
    """Hands the request's destination address to the service (for the answer's source)."""

    def _read_ready(self) -> None:
        hub = self._hub
        proto = self._protocol
        assert isinstance(proto, UdpService)
        while not self._closing:
            d = self._ep.recv()
            if d is None:
                break
            proto.answer(d.data, hub.sockaddr(d.src, d.sport, d.zone), d.dst)


def _udp_service(hub: Hub, kind: str, port: int) -> sockets.DatagramTransport:
    ep = sockets._route_errors(hub.stack.udp.bind, None, port, 0, 0)
    transport = _UdpServiceTransport(hub, ep, UdpService(hub, kind))
    transport._start()
    return transport


# ---------------------------------------------------------------------------
# TCP forward (relay to a host socket)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (half-close)."""
    while data := await src.read(RELAY_CHUNK):
        dst.write(data)
        await dst.drain()
    if dst.can_write_eof() and not dst.transport.is_closing():
        dst.write_eof()


class Forward:
    def __init__(self, services: Services, listen: int, host: str, port: int) -> None:
        self.services = services
        self.listen = listen
        self.host = host
        self.port = port
        self.active = 0
        self.total = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            host_r, host_w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                    FORWARD_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            log.warning("forward %d -> %s:%d: cannot connect for %s: %s", self.listen, self.host,
                        self.port, peer[0] if peer else "?", getattr(e, "strerror", None) or e or "timeout")
            writer.transport.abort()
            return
        self.active += 1
        self.total += 1
        up = asyncio.ensure_future(_pipe(reader, host_w))
        down = asyncio.ensure_future(_pipe(host_r, writer))
        try:
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                for t in pending:
                    t.cancel()
                writer.transport.abort()
                host_w.transport.abort()
                return
            writer.close()
            host_w.close()
        except asyncio.CancelledError:
            up.cancel()
            down.cancel()
            writer.transport.abort()
            host_w.transport.abort()
            raise
        finally:
            self.active -= 1


# ---------------------------------------------------------------------------


class Services:
    """The running services and forwards of one stack."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.servers: list[sockets.TcpServer] = []
        self.udp: list[sockets.DatagramTransport] = []
        self.forwards: list[Forward] = []
        self.tasks: set[asyncio.Task[Any]] = set()          # forward handlers
        self.conns: set[asyncio.Transport] = set()          # connections of the TCP services
        self.problems: list[str] = []
        # What each configuration entry started ("echo/7", "forward 2222->127.0.0.1:22"),
        # so a reload stops exactly that listener and leaves established connections alone.
        self.entries: dict[str, tuple[list[sockets.TcpServer], list[sockets.DatagramTransport],
                                      Forward | None]] = {}

    def _tracked(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                 ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self.tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                if task is not None:
                    self.tasks.discard(task)
        return run

    def add_tcp(self, name: str, port: int,
                handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None = None,
                protocol: type[_TcpService] | None = None) -> None:
        """Listen on ``port``: a stream ``handler`` (a task per connection) or a service
        ``protocol`` class (callbacks only)."""
        hub = self.hub
        factory: Callable[[], asyncio.Protocol]
        if protocol is not None:
            conns = self.conns

            def factory() -> asyncio.Protocol:
                return protocol(conns)
        else:
            assert handler is not None
            factory = sockets.stream_protocol_factory(hub.loop, 2 ** 16, self._tracked(handler))
        try:
            self.servers.append(sockets.listen(hub, factory, port))
        except OSError as e:
            self._problem(f"{name}: cannot listen on TCP port {port}: {e.strerror or e}")

    def add_udp(self, name: str, port: int) -> None:
        try:
            self.udp.append(_udp_service(self.hub, name, port))
        except OSError as e:
            self._problem(f"{name}: cannot bind UDP port {port}: {e.strerror or e}")

    def _problem(self, text: str) -> None:
        self.problems.append(text)
        log.error("%s", text)

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for t in self.udp:
            t.close()
        for task in list(self.tasks):
            task.cancel()
        for transport in list(self.conns):
            transport.abort()
        self.conns.clear()
        self.servers.clear()
        self.udp.clear()
        self.entries.clear()

    def start_entry(self, key: str, spec: tuple[Any, ...]) -> None:
        """Start one entry of ``wanted_entries()``: a service on TCP and UDP, or a forward."""
        n_tcp, n_udp = len(self.servers), len(self.udp)
        fwd: Forward | None = None
        if spec[0] == "service":
            _, name, port = spec
            if self.hub.stack.tcp is not None:
                self.add_tcp(name, port, protocol=TCP_PROTOCOLS[name])
            self.add_udp(name, port)
        elif self.hub.stack.tcp is not None:
            _, listen, host, port = spec
            fwd = Forward(self, listen, host, port)
            self.forwards.append(fwd)
            self.add_tcp(f"forward {listen}", listen, fwd.handle)
        self.entries[key] = (self.servers[n_tcp:], self.udp[n_udp:], fwd)

    def stop_entry(self, key: str) -> None:
        """Stop listening for one entry; its established connections go on."""
        servers, udp, fwd = self.entries.pop(key)
        for server in servers:
            server.close()
            self.servers.remove(server)
        for t in udp:
            t.close()
            self.udp.remove(t)
        if fwd is not None:
            self.forwards.remove(fwd)

    def reconfigure(self, cfg: Any) -> tuple[list[str], list[str]]:
        """Make the listeners match ``cfg`` (SIGHUP); returns (started, stopped) keys."""
        wanted = wanted_entries(cfg)
        stopped = [key for key in self.entries if key not in wanted]
        for key in stopped:
            self.stop_entry(key)
        started = [key for key in wanted if key not in self.entries]
        for key in started:
            self.start_entry(key, wanted[key])
        self.hub.kick()
        return started, stopped


def wanted_entries(cfg: Any) -> dict[str, tuple[Any, ...]]:
    """The listeners ``cfg`` asks for, by a key that changes when the entry does."""
    out: dict[str, tuple[Any, ...]] = {}
    for name, port in cfg.services.enabled().items():
        out[f"{name}/{port}"] = ("service", name, port)
    for fwd in cfg.forwards:
        out[f"forward {fwd.listen}->{fwd.to_host}:{fwd.to_port}"] = ("forward", fwd.listen, fwd.to_host,
                                                                     fwd.to_port)
    return out


def start_services(ctx: Any, cfg: Any) -> Services:
    """Start ``cfg.services`` and ``cfg.forwards`` on the stack of ``ctx`` (synchronous)."""
    hub = Hub.of(ctx)
    services = Services(hub)
    has_tcp = hub.stack.tcp is not None
    enabled = cfg.services.enabled()
    for key, spec in wanted_entries(cfg).items():
        services.start_entry(key, spec)
    if not has_tcp and (enabled or cfg.forwards):
        log.warning("this build has no TCP yet: only the UDP services run")
    if enabled or cfg.forwards:
        log.info("services: %s%s", ", ".join(f"{k}/{v}" for k, v in enabled.items()) or "none",
                 "".join(f", forward {f.listen}->{f.host}:{f.port}" for f in services.forwards))
    hub.kick()
    return services

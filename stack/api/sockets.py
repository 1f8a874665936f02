"""asyncio sockets over core endpoints.

* UDP: ``DatagramTransport`` (an ``asyncio.DatagramTransport`` over a core
  ``UdpEndpoint``, for ``create_datagram_endpoint``) and ``UdpSocket`` (awaitable
  ``recvfrom``/``sendto``).
* TCP: ``TcpTransport`` (an ``asyncio.Transport`` over a core ``TcpConnection``),
  so the standard ``StreamReaderProtocol``/``StreamReader``/``StreamWriter`` work
  unchanged (``open_connection``/``start_server`` semantics, ``drain()``
  backpressure, ``write_eof()``); ``TcpServer`` (an ``asyncio.AbstractServer`` over
  core listeners).

Flow control. Writes go straight into the core send buffer; what it does not take
waits in the transport's buffer, and above the high-water mark the protocol is
paused (``drain()`` blocks) until ``Writable`` events have moved it into core.
Reading stops while the protocol paused reading (the StreamReader's buffer is full):
data then stays in core and the TCP window closes.

Closing never loses the tail (PROTOCOLS.md §7): ``write_eof()`` and ``close()`` hand
the FIN to core only after the last buffered byte, and core sends it after the last
queued byte. Data that arrives after ``close()`` is discarded (asyncio semantics:
"no more data will be received"), so a close is a FIN, not a reset.

Addresses are Python socket tuples: ``(host, port)`` for IPv4,
``(host, port, flowinfo, scope_id)`` for IPv6, ``host`` text with ``%ifname`` for
link-local.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from stack.api.hub import Hub, StackClosed, from_route_error, os_error
from stack.core.events import Accepted, Closed, Connected, Readable, SocketError, Writable
from stack.core.ipservice import RouteError
from stack.core.tcp.buffers import byte_view
from stack.core.tcp.tcb import TcpState
from stack.wire.frame_types import PROTO_UDP
from stack.wire.udp import build_udp

log = logging.getLogger("tapstack.api")

HIGH_WATER = 64 * 1024
READ_CHUNK = 64 * 1024
UDP_SOCKET_QUEUE = 1024


def _route_errors(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except RouteError as e:
        raise from_route_error(e) from None


# ---------------------------------------------------------------------------
# UDP


class DatagramTransport(asyncio.DatagramTransport):
    """``asyncio.DatagramTransport`` over a core UDP endpoint."""

    def __init__(self, hub: Hub, ep: Any, protocol: asyncio.DatagramProtocol,
                 remote: tuple[bytes, int, int] | None = None) -> None:
        super().__init__()
        self._hub = hub
        self._ep = ep
        self._protocol = protocol
        self._remote = remote
        self._closing = False
        self._remote_tuple = hub.sockaddr(*remote) if remote is not None else None

    def _start(self) -> None:
        self._hub.watch(self._ep, self._on_event)
        self._protocol.connection_made(self)
        if self._ep.queue:
            self._read_ready()

    def _on_event(self, ev: object) -> None:
        if self._closing:
            return
        if isinstance(ev, Readable):
            self._read_ready()
        elif isinstance(ev, SocketError):
            err = self._ep.take_error() or ev.errno
            if err:
                self._protocol.error_received(os_error(err))
        elif isinstance(ev, StackClosed):
            self._protocol.error_received(os_error(ev.errno))
            self.close()

    def _read_ready(self) -> None:
        hub = self._hub
        while not self._closing:
            d = self._ep.recv()
            if d is None:
                break
            self._protocol.datagram_received(d.data, hub.sockaddr(d.src, d.sport, d.zone))

    # -- asyncio.DatagramTransport -------------------------------------------------

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return
        try:
            self._send(bytes(data), addr)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EDESTADDRREQ, errno.ENODEV) and not isinstance(e, RouteError):
                raise                   # the caller's mistake: bad address
            self._protocol.error_received(e)

    def _send(self, data: bytes, addr: Any) -> int:
        hub = self._hub
        if addr is None:
            if self._remote is None:
                raise os_error(errno.EDESTADDRREQ)
            dst, port, zone = self._remote
        else:
            dst, port, zone = hub.parse_sockaddr(addr)
            if self._remote is not None and (dst, port) != self._remote[:2]:
                raise ValueError(f"Invalid address: must be None or {self._remote_tuple}")
        try:
            return int(_route_errors(self._ep.sendto, data, dst, port, zone, hub.now()))
        finally:
            hub.kick()

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._hub.unwatch(self._ep)
        self._ep.close()
        self._hub.loop.call_soon(self._protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.DatagramProtocol)
        self._protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            ep = self._ep
            return self._hub.sockaddr(ep.local, ep.port, ep.zone, ep.family)
        if name == "peername":
            return self._remote_tuple if self._remote_tuple is not None else default
        if name == "endpoint":
            return self._ep
        return default


def bind_datagram(hub: Hub, protocol_factory: Callable[[], asyncio.DatagramProtocol], *,
                  local_addr: Any = None, local_port: int = 0,
                  remote_addr: Any = None) -> tuple[DatagramTransport, Any]:
    """Bind (wildcard unless ``local_addr``), optionally connect, start the protocol."""
    local: bytes | None = None
    zone = 0
    port = local_port
    if local_addr is not None:
        if isinstance(local_addr, tuple | list):
            local, port, zone = hub.parse_sockaddr(local_addr)
        else:
            local, zone = hub.parse_addr(local_addr)
    remote: tuple[bytes, int, int] | None = None
    family = 0
    if remote_addr is not None:
        remote = hub.parse_sockaddr(remote_addr)
        family = 6 if len(remote[0]) == 16 else 4
        if local is not None and len(local) != len(remote[0]):
            raise os_error(errno.EINVAL, "local and remote address are of different families")
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise os_error(errno.EINVAL, f"bad port {port!r}")
    if local is not None:
        family = 6 if len(local) == 16 else 4
    ep = _route_errors(hub.stack.udp.bind, local, port, zone, family)
    if remote is not None:
        ep.connect(*remote)
    protocol = protocol_factory()
    transport = DatagramTransport(hub, ep, protocol, remote)
    transport._start()
    return transport, protocol


async def create_datagram_endpoint(hub: Hub, protocol_factory: Callable[[], asyncio.DatagramProtocol], *,
                                   local_addr: Any = None, local_port: int = 0,
                                   remote_addr: Any = None) -> tuple[DatagramTransport, Any]:
    return bind_datagram(hub, protocol_factory, local_addr=local_addr, local_port=local_port,
                         remote_addr=remote_addr)


def send_udp_from(hub: Hub, sport: int, data: bytes, dst: bytes, dport: int, zone: int,
                  src: bytes | None) -> None:
    """One datagram from a chosen source address (a wildcard-bound server answering
    from the address it was asked on, as IP_PKTINFO lets a kernel socket do)."""
    st = hub.stack
    now = hub.now()
    try:
        route = _route_errors(st.route_output, dst, zone, src, now)
        st.stats.count("udp", "out_datagrams")
        st.ip_send(route, PROTO_UDP, build_udp(route.src, route.dst, sport, dport, data), now)
    finally:
        hub.kick()


class _QueueProtocol(asyncio.DatagramProtocol):
    def __init__(self, maxlen: int) -> None:
        self.queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self.maxlen = maxlen
        self.dropped = 0
        self.error: OSError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(self.queue) >= self.maxlen:
            self.dropped += 1
            return
        self.queue.append((data, addr))
        self._wake()

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.error = exc
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()


class UdpSocket:
    """A UDP socket with awaitable ``recvfrom()``; see ``Stack.udp_socket``."""

    def __init__(self, transport: DatagramTransport, protocol: _QueueProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @property
    def dropped(self) -> int:
        """Datagrams dropped because the socket's queue was full."""
        return self._protocol.dropped

    def getsockname(self) -> Any:
        return self._transport.get_extra_info("sockname")

    def getpeername(self) -> Any:
        return self._transport.get_extra_info("peername")

    def sendto(self, data: bytes, addr: Any = None) -> int:
        """Send one datagram now; OSError (errno) when it cannot leave."""
        if self._transport.is_closing():
            raise os_error(errno.EBADF)
        return self._transport._send(bytes(data), addr)

    def send(self, data: bytes) -> int:
        return self.sendto(data, None)

    async def recvfrom(self) -> tuple[bytes, Any]:
        """The next datagram and its sender; a pending ICMP error raises OSError."""
        p = self._protocol
        while True:
            if p.queue:
                return p.queue.popleft()
            if p.error is not None:
                e, p.error = p.error, None
                raise e
            if p.closed:
                raise os_error(errno.EBADF)
            p.waiter = self._transport._hub.loop.create_future()
            try:
                await p.waiter
            finally:
                p.waiter = None

    async def recv(self) -> bytes:
        return (await self.recvfrom())[0]

    def close(self) -> None:
        self._transport.close()

    async def __aenter__(self) -> UdpSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def udp_socket(hub: Hub, *, local_addr: Any = None, local_port: int = 0,
                     remote_addr: Any = None, queue: int = UDP_SOCKET_QUEUE) -> UdpSocket:
    transport, protocol = await create_datagram_endpoint(
        hub, lambda: _QueueProtocol(queue), local_addr=local_addr, local_port=local_port,
        remote_addr=remote_addr)
    assert isinstance(protocol, _QueueProtocol)
    return UdpSocket(transport, protocol)


# ---------------------------------------------------------------------------
# TCP


class _WriteBuffer:
    """What a TcpTransport holds while core's send buffer is full, as the written
    objects themselves: a large immutable ``bytes`` (a chargen's block) is kept by
    reference and handed to core whole (core's send buffer queues it without a copy,
    as a direct ``send`` would); small or mutable pieces are copied into a
    ``bytearray`` tail, as before. A ``bytearray`` of everything (the former buffer)
    cost two copies of every byte that waited: into it, and out into core."""

    __slots__ = ("parts", "size")

    SMALL = 4096            # bytes this large are kept by reference

    def __init__(self) -> None:
        self.parts: collections.deque[bytes | bytearray | memoryview] = collections.deque()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def extend(self, data: bytes | bytearray | memoryview, start: int = 0) -> None:
        """Queue ``data[start:]`` (a copy unless ``data`` is a large ``bytes``)."""
        if type(data) is bytes and len(data) - start >= self.SMALL:
            self.parts.append(memoryview(data)[start:] if start else data)
            self.size += len(data) - start
            return
        with memoryview(data) as view:
            piece = view.cast("B")[start:]
            parts = self.parts
            if parts and type(parts[-1]) is bytearray:
                parts[-1] += piece
            else:
                parts.append(bytearray(piece))
            self.size += len(piece)
            piece.release()

    def clear(self) -> None:
        self.parts.clear()
        self.size = 0

    def send_to(self, conn: Any) -> bool:
        """Move what fits into core's send buffer (``conn.send``); True if any moved.
        OSError from ``send`` propagates (nothing is lost from the buffer)."""
        parts = self.parts
        moved = False
        while parts:
            space = conn.send_space
            if space <= 0:
                break
            head = parts[0]
            if len(head) <= space:
                n = conn.send(head, None)        # sent at the kick's flush
            else:
                with memoryview(head) as view:
                    n = conn.send(view[:space], None)
            if n <= 0:
                break
            moved = True
            self.size -= n
            if n >= len(head):
                parts.popleft()
            elif type(head) is bytearray:
                del head[:n]
            else:
                parts[0] = memoryview(head)[n:]
        return moved


class TcpTransport(asyncio.Transport):
    """``asyncio.Transport`` over a core TCP connection (see the module docstring)."""

    def __init__(self, hub: Hub, conn: Any, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._hub = hub
        self._conn = conn
        self._protocol = protocol
        self._buf = _WriteBuffer()
        self._high = HIGH_WATER
        self._low = HIGH_WATER // 4
        self._protocol_paused = False
        self._reading_paused = False
        self._eof_requested = False       # write_eof() called
        self._eof_sent = False            # FIN handed to core
        self._eof_received = False
        self._closing = False             # close() called
        self._lost = False                # connection_lost scheduled
        self._started = False
        self._peername: tuple[Any, ...] | None = None     # formatted on first use
        self._sockname: tuple[Any, ...] | None = None

    # -- wiring -------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        self._hub.watch(self._conn, self._on_event)
        self._protocol.connection_made(self)
        if self._conn.readable():
            self._read_ready()
        if self._conn.state is TcpState.CLOSED and not self._lost:
            self._on_closed()

    def _on_event(self, ev: object) -> None:
        if self._lost:
            return
        try:
            if isinstance(ev, Readable):
                self._read_ready()
            elif isinstance(ev, Writable):
                self._write_ready()
            elif isinstance(ev, SocketError):
                if self._conn.state is TcpState.CLOSED:
                    self._on_closed()
            elif isinstance(ev, Closed):
                self._on_closed()
            elif isinstance(ev, StackClosed):
                self._fatal(os_error(ev.errno))
        except Exception as e:
            # A protocol callback failed (as asyncio's _fatal_error: log, then abort).
            log.exception("protocol of %r failed; connection reset", self)
            self._fatal(OSError(errno.ECONNABORTED, f"protocol error: {e}"))

    def _now(self) -> int:
        return self._hub.now()

    # -- reading --------------------------------------------------------------------

    def _read_ready(self, force: bool = False) -> None:
        conn = self._conn
        if self._lost:
            return
        if self._closing:
            self._discard_input()
            return
        got = False
        while force or not self._reading_paused:
            if got and not conn.readable():
                # what a recv would raise (BlockingIOError) without the exception, once per
                # Readable; the recv before this one re-armed Readable already
                break
            try:
                data = conn.recv(READ_CHUNK, self._now())
            except BlockingIOError:
                break
            except OSError as e:
                self._fatal(e)
                return
            got = True
            if not data:
                if not self._eof_received:
                    self._eof_received = True
                    keep_open = self._protocol.eof_received()
                    if not keep_open:
                        self.close()
                break
            self._protocol.data_received(data)
            if self._lost or self._closing:
                break
        if got:
            self._hub.kick()           # window updates

    def _discard_input(self) -> None:
        conn = self._conn
        try:
            while conn.recv(READ_CHUNK, self._now()):
                pass
        except OSError:
            pass

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._hub.loop.call_soon(self._read_ready)

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing and not self._lost

    # -- writing ----------------------------------------------------------------------

    def write(self, data: Any) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._eof_requested:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._lost or self._closing or not data:
            return
        data = byte_view(data)          # len() in bytes: a memoryview of wider items counts items
        if self._buf:
            self._buf.extend(data)
        else:
            try:
                # No time: the connection sends at the flush this kick schedules, once
                # for every write of this loop pass (auto-corking: a chargen's 28 KB
                # writes leave as 64 KB TSO segments, not one segment each).
                n = self._conn.send(data, None)
            except OSError as e:
                self._fatal(e)
                return
            except Exception as e:          # a core bug: the connection, not the caller, pays
                log.exception("core send failed on %r", self)
                self._fatal(OSError(errno.EIO, f"internal error: {e}"))
                return
            if n < len(data):
                self._buf.extend(data, n)
            self._hub.kick()
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Iterable[Any]) -> None:
        self.write(b"".join(list_of_data))

    def _write_ready(self) -> None:
        try:
            moved = self._buf.send_to(self._conn)
        except OSError as e:
            self._fatal(e)
            return
        if not self._buf:
            if self._closing:
                self._finish_close()
                return
            if self._eof_requested and not self._eof_sent:
                self._send_fin()
        if moved:
            self._hub.kick()
        self._maybe_resume_protocol()

    def _send_fin(self) -> None:
        self._eof_sent = True
        self._conn.shutdown_write(self._now())
        self._hub.kick()

    def write_eof(self) -> None:
        if self._eof_requested or self._lost or self._closing:
            return
        self._eof_requested = True
        if not self._buf:
            self._send_fin()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return len(self._buf)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if not self._protocol_paused and len(self._buf) > self._high:
            self._protocol_paused = True
            try:
                self._protocol.pause_writing()
            except Exception:
                log.exception("protocol.pause_writing() failed")

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._buf) <= self._low:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except Exception:
                log.exception("protocol.resume_writing() failed")

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._closing = True
        if not self._buf:
            self._finish_close()

    def _finish_close(self) -> None:
        """Everything buffered is in core: FIN after it (data not read is dropped)."""
        self._discard_input()
        self._hub.unwatch(self._conn)
        self._conn.close(self._now())
        self._hub.kick()
        self._connection_lost(None)

    def abort(self) -> None:
        if self._lost:
            return
        self._buf.clear()
        self._hub.unwatch(self._conn)
        self._conn.abort(self._now())
        self._hub.kick()
        self._connection_lost(None)

    def _on_closed(self) -> None:
        """Core finished the connection: hand over what is left, then connection_lost."""
        conn = self._conn
        if not self._closing:
            self._read_ready(force=True)
        if self._lost:
            return
        err = conn.error
        self._buf.clear()
        self._hub.unwatch(conn)
        self._connection_lost(os_error(err) if err else None)

    def _fatal(self, exc: OSError) -> None:
        if self._lost:
            return
        self._buf.clear()
        self._hub.unwatch(self._conn)
        with contextlib.suppress(OSError):
            self._conn.abort(self._now())
        self._hub.kick()
        self._connection_lost(exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._hub.loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        except Exception:
            log.exception("protocol.connection_lost() failed")

    def is_closing(self) -> bool:
        return self._closing or self._lost

    # -- the rest of asyncio.Transport ------------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def set_nodelay(self, flag: bool) -> None:
        self._conn.set_nodelay(flag)
        self._hub.kick()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            if self._peername is None:
                c = self._conn
                self._peername = self._hub.sockaddr(c.remote, c.rport, c.zone)
            return self._peername
        if name == "sockname":
            if self._sockname is None:
                c = self._conn
                self._sockname = self._hub.sockaddr(c.local, c.lport, c.zone)
            return self._sockname
        if name == "connection":
            return self._conn
        return default

    def __repr__(self) -> str:
        state = "closed" if self._lost else "closing" if self._closing else "open"
        return f"<TcpTransport {state} {self.get_extra_info('sockname')} -> {self.get_extra_info('peername')}>"


def _source(hub: Hub, local_addr: Any) -> tuple[bytes | None, int, int]:
    """(address or None, port or 0, zone) of a client's ``local_addr``."""
    if local_addr is None:
        return None, 0, 0
    if isinstance(local_addr, tuple | list):
        addr, lport, zone = hub.parse_sockaddr(local_addr)
        if addr == bytes(len(addr)):
            return None, lport, 0       # "::" / "0.0.0.0": any address, maybe a port
        return addr, lport, zone
    src, zone = hub.parse_addr(local_addr)
    return src, 0, zone


async def create_connection(hub: Hub, protocol_factory: Callable[[], asyncio.Protocol], host: Any,
                            port: int, *, local_addr: Any = None, timeout: float | None = None,
                            nodelay: bool = True) -> tuple[TcpTransport, asyncio.Protocol]:
    """Active open; returns when established. OSError with the errno
    (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, EINVAL ...) otherwise."""
    tcp = hub.stack.tcp
    if tcp is None:
        raise os_error(errno.EPROTONOSUPPORT, "this stack has no TCP")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise os_error(errno.EINVAL, f"bad port {port!r}")
    dst, zone = hub.parse_addr(host)
    src, sport, src_zone = _source(hub, local_addr)
    if src is not None and len(src) != len(dst):
        raise os_error(errno.EINVAL, "source and destination are of different families")
    if src is not None and src_zone and not zone:
        zone = src_zone
    fut: asyncio.Future[TcpTransport] = hub.loop.create_future()
    conn: Any = None

    def on_event(ev: object) -> None:
        if fut.done():
            return
        if isinstance(ev, Connected):
            hub.unwatch(conn)
            transport = TcpTransport(hub, conn, protocol_factory())
            if nodelay:
                conn.set_nodelay(True)
            transport._start()
            fut.set_result(transport)
        elif isinstance(ev, SocketError | Closed | StackClosed):
            hub.unwatch(conn)
            err = ev.errno if isinstance(ev, SocketError | StackClosed) else (conn.error or errno.ECONNREFUSED)
            fut.set_exception(os_error(err))

    try:
        conn = tcp.connect(dst, port, zone, src, hub.now(), sport=sport or None)
    except RouteError as e:
        hub.kick()
        raise from_route_error(e) from None
    except OSError as e:
        raise os_error(e.errno or errno.EADDRNOTAVAIL, e.strerror) from None
    hub.watch(conn, on_event)
    hub.kick()
    try:
        if timeout is None:
            transport = await fut
        else:
            transport = await asyncio.wait_for(fut, timeout)
    except (TimeoutError, asyncio.CancelledError) as e:
        hub.unwatch(conn)
        if not fut.done() or fut.cancelled():
            conn.abort(hub.now())
            hub.kick()
        elif fut.exception() is None:
            fut.result().abort()
        if isinstance(e, TimeoutError):
            raise os_error(errno.ETIMEDOUT) from None
        raise
    return transport, transport.get_protocol()  # type: ignore[return-value]


def stream_protocol_factory(loop: asyncio.AbstractEventLoop, limit: int,
                            handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                              Awaitable[None] | None] | None = None
                            ) -> Callable[[], asyncio.StreamReaderProtocol]:
    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return _StreamProtocol(reader, _guarded(handler) if handler else None, loop=loop)
    return factory


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """StreamReaderProtocol that keeps its reader alive (asyncio keeps it only weakly;
    ``open_connection`` holds the strong reference in its frame, we hold it here)."""

    def __init__(self, reader: asyncio.StreamReader, cb: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, cb, loop=loop)
        self.reader = reader


def _guarded(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]
             ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A connection handler whose exception is logged and aborts its connection."""
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            res = handler(reader, writer)
            if res is not None:
                await res
        except (ConnectionError, asyncio.CancelledError):
            # Not re-raised: asyncio's StreamReaderProtocol asks the task for its
            # exception(), which raises again for a cancelled task.
            writer.transport.abort()
        except Exception:
            log.exception("connection handler failed (%s)", writer.get_extra_info("peername"))
            writer.transport.abort()
    return run


async def open_connection(hub: Hub, host: Any, port: int, *, local_addr: Any = None,
                          limit: int = 2 ** 16, timeout: float | None = None
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = hub.loop
    transport, protocol = await create_connection(
        hub, stream_protocol_factory(loop, limit), host, port, local_addr=local_addr, timeout=timeout)
    assert isinstance(protocol, _StreamProtocol)
    reader = protocol.reader
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


class TcpServer(asyncio.AbstractServer):
    """Core listeners that hand accepted connections to a protocol factory."""

    def __init__(self, hub: Hub, listeners: list[Any], protocol_factory: Callable[[], asyncio.Protocol],
                 addresses: list[tuple[Any, ...]]) -> None:
        self._hub = hub
        self._listeners = listeners
        self._factory = protocol_factory
        self.addresses = addresses
        self._serving = True
        self._closed = asyncio.Event()
        self.accepted = 0
        for lst in listeners:
            hub.watch(lst, self._on_event)
        for lst in listeners:
            self._accept(lst)

    @property
    def port(self) -> int:
        return int(self._listeners[0].port) if self._listeners else 0

    def _on_event(self, ev: object) -> None:
        if isinstance(ev, Accepted):
            self._accept(ev.sock)
        elif isinstance(ev, StackClosed):
            self.close()

    def _accept(self, listener: Any) -> None:
        while True:
            conn = listener.accept()
            if conn is None:
                return
            if not self._serving:
                conn.abort(self._hub.now())
                continue
            self.accepted += 1
            conn.set_nodelay(True)
            try:
                protocol = self._factory()
            except Exception:
                log.exception("protocol factory failed; connection reset")
                conn.abort(self._hub.now())
                continue
            TcpTransport(self._hub, conn, protocol)._start()
        # Output of the handlers is flushed by the service() that delivered the event.

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        now = self._hub.now()
        for lst in self._listeners:
            self._hub.unwatch(lst)
            lst.close(now)
        self._hub.kick()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._hub.loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        try:
            await self._closed.wait()
        finally:
            self.close()

    @property
    def sockets(self) -> tuple[()]:
        return ()

    def __repr__(self) -> str:
        return f"<TcpServer {self.addresses} {'serving' if self._serving else 'closed'}>"


def listen(hub: Hub, protocol_factory: Callable[[], asyncio.Protocol], port: int,
           host: Any = None, *, backlog: int = 128) -> TcpServer:
    """Listen on ``port`` (``host`` None = every address of both families)."""
    tcp = hub.stack.tcp
    if tcp is None:
        raise os_error(errno.EPROTONOSUPPORT, "this stack has no TCP")
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise os_error(errno.EINVAL, f"bad port {port!r}")
    hosts = host if isinstance(host, list | tuple) else [host]
    listeners: list[Any] = []
    addresses: list[tuple[Any, ...]] = []
    try:
        for h in hosts:
            addr: bytes | None = None
            zone = 0
            if h is not None and h not in ("", "::", "0.0.0.0"):
                addr, zone = hub.parse_addr(h)
            lst = _route_errors(tcp.listen, addr, port, backlog, zone)
            listeners.append(lst)
            addresses.append(hub.sockaddr(addr, lst.port, zone))
            port = lst.port if port == 0 else port
    except BaseException:
        for lst in listeners:
            lst.close(hub.now())
        hub.kick()
        raise
    return TcpServer(hub, listeners, protocol_factory, addresses)


async def create_server(hub: Hub, protocol_factory: Callable[[], asyncio.Protocol], port: int,
                        host: Any = None, *, backlog: int = 128) -> TcpServer:
    return listen(hub, protocol_factory, port, host, backlog=backlog)


async def start_server(hub: Hub, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                   Awaitable[None] | None],
                       port: int, host: Any = None, *, limit: int = 2 ** 16, backlog: int = 128) -> TcpServer:
    return await create_server(hub, stream_protocol_factory(hub.loop, limit, handler), port, host,
                               backlog=backlog)

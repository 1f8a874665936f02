"""Daemon-side ``tapstack ping`` and ``tapstack connect`` (registered on import).

``ping`` (streaming): iputils-style output::

    PING 2001:db8:1::1(2001:db8:1::1) 56 data bytes
    64 bytes from 2001:db8:1::1: icmp_seq=1 ttl=64 time=0.123 ms
    From 2001:db8:1::2 icmp_seq=2 Destination unreachable: Address unreachable
    --- 2001:db8:1::1 ping statistics ---
    2 packets transmitted, 1 received, +1 errors, 50% packet loss, time 1001ms
    rtt min/avg/max/mdev = 0.123/0.123/0.123/0.000 ms

Arguments (as the CLI sends them): ``dst``, ``count`` (None = until the client goes
away), ``interval`` (s), ``size``, ``timeout`` (-W: how long to wait for the replies
after the last request; default 10 s as iputils' linger time), ``source`` (-I: an
address, or an interface name as the zone of a link-local destination). Exit status 0
if any reply arrived, 1 if none, 2 on error (bad address, no route).

``connect``: a TCP (``udp``: UDP) client inside the stack bridged to the client's byte
pipe. The errno text (``connect: Connection refused``, ``connect: No route to host``)
and exit 1 on failure; the pipe's EOF half-closes the connection (UDP: no more
datagrams; the command then ends after ``wait`` idle seconds, 1 s by default); exit 0
when the peer closes. ``wait`` (-w) bounds the connect and any idle period (an idle
timeout ends quietly with 0, like ``nc -w``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
from typing import Any

from stack.api import sockets
from stack.api.hub import Hub, from_route_error
from stack.api.ping import Pinger
from stack.control.server import CommandError, Pipe, Request, register_command
from stack.core.events import EchoReply, PingError
from stack.core.ipservice import RouteError
from stack.wire.addr import fmt

PING_LINGER = 10.0
UDP_LINGER = 1.0
CHUNK = 64 * 1024


# ---------------------------------------------------------------------------
# argument checks (the CLI checks too; these protect against any other client)


def _num(req: Request, key: str, default: Any, kind: type, *, low: float | None = None,
         high: float | None = None, positive: bool = False) -> Any:
    v = req.args.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or (kind is int and not isinstance(v, int)):
        raise CommandError(f"{req.cmd}: {key} must be a number")
    if positive and v <= 0:
        raise CommandError(f"{req.cmd}: {key} must be positive")
    if (low is not None and v < low) or (high is not None and v > high):
        raise CommandError(f"{req.cmd}: {key} {v} out of range")
    return kind(v)


def _text_arg(req: Request, key: str, required: bool = False) -> str | None:
    v = req.args.get(key)
    if v is None or v == "":
        if required:
            raise CommandError(f"{req.cmd}: missing {key}")
        return None
    if not isinstance(v, str):
        raise CommandError(f"{req.cmd}: {key} must be a string")
    return v


def _endpoints(hub: Hub, cmd: str, dst_text: str, source: str | None, exit_code: int
               ) -> tuple[bytes, int, bytes | None]:
    """(dst, zone, src) from text; ``source`` may be an address or an interface name."""
    iface_zone = 0
    src: bytes | None = None
    try:
        if source is not None:
            if source in hub.interface_names() or source == "lo":
                iface_zone = hub.zone_index(source) if source != "lo" else 1
            else:
                src, src_zone = hub.parse_addr(source)
                iface_zone = src_zone
        dst, zone = hub.parse_addr(dst_text, iface_zone)
    except OSError as e:
        raise CommandError(f"{cmd}: {e.strerror or e}", exit_code) from None
    if src is not None and len(src) != len(dst):
        raise CommandError(f"{cmd}: source {source} and destination {dst_text} are of different "
                           "families", exit_code)
    return dst, zone, src


# ---------------------------------------------------------------------------
# ping


def rtt_text(ns: int) -> str:
    """iputils' precision: 3 decimals below 1 ms, then 2, 1, none."""
    us = ns // 1000
    if us >= 100000 - 50:
        return f"{(us + 500) // 1000}"
    if us >= 10000 - 5:
        return f"{us / 1000:.1f}"
    if us >= 1000:
        return f"{us / 1000:.2f}"
    return f"{us / 1000:.3f}"


class PingRun:
    def __init__(self, req: Request, hub: Hub, pinger: Pinger, dst_text: str, count: int | None,
                 interval: float, linger: float) -> None:
        self.req = req
        self.hub = hub
        self.pinger = pinger
        self.dst_text = dst_text
        self.count = count
        self.interval = interval
        self.linger = linger
        self.events: asyncio.Queue[EchoReply | PingError] = asyncio.Queue()
        self.transmitted = 0
        self.received = 0
        self.errors = 0
        self.rtts: list[int] = []
        self.start = hub.loop.time()
        pinger.on_event = self.events.put_nowait

    async def run(self) -> int:
        loop = self.hub.loop
        start = self.start = loop.time()
        next_send = start
        last_send = start
        seq = 0
        while True:
            now = loop.time()
            more = self.count is None or seq < self.count
            if more and now >= next_send:
                seq += 1
                try:
                    self.pinger.send(seq)
                    self.transmitted += 1
                except OSError as e:
                    self.errors += 1
                    await self.req.send({"stderr": f"ping: sendmsg: {e.strerror or e}"})
                last_send = now
                next_send += self.interval
                more = self.count is None or seq < self.count
            if not more and self.received + self.errors >= self.transmitted:
                break
            wake = next_send if more else last_send + self.linger
            if not more and loop.time() >= wake:
                break
            try:
                ev = await asyncio.wait_for(self.events.get(), max(0.0, wake - loop.time()))
            except TimeoutError:
                continue
            await self._show(ev)
        await self.summary()
        return 0 if self.received else 1

    async def _show(self, ev: EchoReply | PingError) -> None:
        if not isinstance(ev, EchoReply | PingError):
            return                       # the stack is stopping
        who = self.hub.text(ev.src, ev.src_zone)
        if isinstance(ev, EchoReply):
            self.received += 1
            rtt = max(0, ev.received_at - ev.sent_at)
            self.rtts.append(rtt)
            await self.req.send({"line": f"{ev.size + 8} bytes from {who}: icmp_seq={ev.seq} "
                                         f"ttl={ev.hop_limit} time={rtt_text(rtt)} ms"})
        else:
            self.errors += 1
            await self.req.send({"line": f"From {who} icmp_seq={ev.seq} {ev.text}"})

    async def summary(self) -> None:
        elapsed = self.hub.loop.time() - self.start
        tx, rx = self.transmitted, self.received
        loss = 0 if tx == 0 else round(100 * (tx - rx) / tx)
        errors = f", +{self.errors} errors" if self.errors else ""
        lines = [f"--- {self.dst_text} ping statistics ---",
                 f"{tx} packets transmitted, {rx} received{errors}, {loss}% packet loss, "
                 f"time {int(elapsed * 1000)}ms"]
        if self.rtts:
            us = [r // 1000 for r in self.rtts]
            avg = sum(us) / len(us)
            mdev = math.sqrt(max(0.0, sum(x * x for x in us) / len(us) - avg * avg))
            parts = [min(us), round(avg), max(us), round(mdev)]
            lines.append("rtt min/avg/max/mdev = " + "/".join(f"{v // 1000}.{v % 1000:03d}" for v in parts)
                         + " ms")
        for line in lines:
            await self.req.send({"line": line})


async def ping(req: Request) -> None:
    hub = Hub.of(req.ctx)
    dst_text = _text_arg(req, "dst", required=True)
    assert dst_text is not None
    count = _num(req, "count", None, int, low=1)
    interval = _num(req, "interval", 1.0, float, positive=True, high=3600)
    size = _num(req, "size", 56, int, low=0, high=65507)
    timeout = _num(req, "timeout", None, float, positive=True)
    source = _text_arg(req, "source")
    dst, zone, src = _endpoints(hub, "ping", dst_text, source, 2)
    try:
        route = hub.stack.route_output(dst, zone, src, hub.now())
    except RouteError as e:
        raise CommandError(f"ping: connect: {from_route_error(e).strerror}") from None
    pinger = Pinger(hub, dst, zone, src=src, size=size)
    shown = hub.text(dst, zone)
    gone = asyncio.ensure_future(req.wait_client_gone())
    run = PingRun(req, hub, pinger, shown, count, interval, timeout or PING_LINGER)
    task = asyncio.ensure_future(run.run())
    try:
        await req.reply({"dst": shown, "ident": pinger.ident})
        if len(dst) == 16:
            via = f"from {hub.text(route.src, route.src_zone)} : " if src is not None else ""
            head = f"PING {shown}({shown}) {via}{size} data bytes"
        else:
            via = f"from {fmt(route.src)} " if src is not None else ""
            head = f"PING {shown} ({fmt(dst)}) {via}{size}({size + 28}) bytes of data."
        await req.send({"line": head})
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            await req.send({"exit": task.result()})
        else:
            # The client half-closed (its ^C) or went away: stop and try to say how it went,
            # as iputils prints the statistics on SIGINT.
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(ConnectionError, OSError):
                await run.summary()
                await req.send({"exit": 0 if run.received else 1})
    finally:
        task.cancel()
        gone.cancel()
        pinger.close()


# ---------------------------------------------------------------------------
# connect


class Idle:
    """An idle timer: ``touch()`` on traffic; ``expired()`` completes after ``wait`` idle s."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wait: float | None) -> None:
        self.loop = loop
        self.wait = wait
        self.last = loop.time()

    def touch(self) -> None:
        self.last = self.loop.time()

    async def expired(self) -> None:
        if self.wait is None:
            await asyncio.Event().wait()
            return
        while True:
            left = self.last + self.wait - self.loop.time()
            if left <= 0:
                return
            await asyncio.sleep(left)


def _errno_text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    return str(e) or type(e).__name__


async def _tcp_bridge(pipe: Pipe, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      idle: Idle) -> int:
    async def up() -> None:
        while data := await pipe.reader.read(CHUNK):
            idle.touch()
            writer.write(data)
            await writer.drain()
        if not writer.transport.is_closing():
            writer.write_eof()

    async def down() -> None:
        while data := await reader.read(CHUNK):
            idle.touch()
            pipe.writer.write(data)
            await pipe.writer.drain()

    up_t = asyncio.ensure_future(up())
    down_t = asyncio.ensure_future(down())
    idle_t = asyncio.ensure_future(idle.expired())
    pending: set[asyncio.Future[Any]] = {up_t, down_t, idle_t}
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if down_t in done:
                exc = down_t.exception()
                if exc is not None:
                    raise CommandError(f"connect: {_errno_text(exc)}", 1)
                writer.close()                   # the peer closed: we are done
                return 0
            if idle_t in done:
                writer.close()
                return 0
            if up_t in done and up_t.exception() is not None:
                exc = up_t.exception()
                if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.ETIMEDOUT,
                                                              errno.EHOSTUNREACH, errno.ENETUNREACH):
                    raise CommandError(f"connect: {_errno_text(exc)}", 1)
                writer.transport.abort()         # the client went away
                return 1
    finally:
        for t in (up_t, down_t, idle_t):
            t.cancel()


async def _udp_bridge(pipe: Pipe, sock: sockets.UdpSocket, idle: Idle) -> int:
    async def up() -> None:
        while data := await pipe.reader.read(CHUNK):
            idle.touch()
            sock.send(data)

    async def down() -> None:
        while True:
            data = await sock.recv()
            idle.touch()
            pipe.writer.write(data)
            await pipe.writer.drain()

    up_t = asyncio.ensure_future(up())
    down_t = asyncio.ensure_future(down())
    idle_t = asyncio.ensure_future(idle.expired())
    pending: set[asyncio.Future[Any]] = {up_t, down_t, idle_t}
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in (up_t, down_t):
                if t in done and t.exception() is not None:
                    raise CommandError(f"connect: {_errno_text(t.exception())}", 1)   # type: ignore[arg-type]
            if idle_t in done:
                return 0
            if up_t in done and idle.wait is None:
                idle.wait = UDP_LINGER           # stdin ended: linger for answers, then end
                idle.touch()
                idle_t.cancel()
                idle_t = asyncio.ensure_future(idle.expired())
                pending.add(idle_t)
    finally:
        for t in (up_t, down_t, idle_t):
            t.cancel()


async def connect(req: Request) -> None:
    hub = Hub.of(req.ctx)
    dst_text = _text_arg(req, "dst", required=True)
    assert dst_text is not None
    port = _num(req, "port", None, int, low=1, high=65535)
    if port is None:
        raise CommandError("connect: missing port", 1)
    wait = _num(req, "wait", None, float, positive=True)
    udp = bool(req.args.get("udp"))
    source = _text_arg(req, "source")
    dst, zone, src = _endpoints(hub, "connect", dst_text, source, 1)
    idle = Idle(hub.loop, wait)
    local = (src, 0, 0, zone) if src is not None else None
    sock: sockets.UdpSocket | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        if udp:
            sock = await sockets.udp_socket(hub, local_addr=local, remote_addr=(dst, port, 0, zone))
        else:
            reader, writer = await sockets.open_connection(hub, hub.text(dst, zone), port,
                                                           local_addr=local, timeout=wait)
    except OSError as e:
        raise CommandError(f"connect: {_errno_text(e)}", 1) from None
    gone = asyncio.ensure_future(req.wait_client_gone())
    pipe: Pipe | None = None
    ok = False
    try:
        pipe = await req.open_pipe()
        idle.touch()
        if sock is not None:
            work = asyncio.ensure_future(_udp_bridge(pipe, sock, idle))
        else:
            assert writer is not None
            work = asyncio.ensure_future(_tcp_bridge(pipe, reader, writer, idle))
        code = await _until_gone(work, gone)
        ok = True
    finally:
        gone.cancel()
        if sock is not None:
            sock.close()
        if writer is not None and not ok:
            writer.transport.abort()
        if pipe is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pipe.writer.drain(), 5.0)
            pipe.close()
    if code is not None:
        await req.send({"exit": code})


async def _until_gone(work: asyncio.Future[int], gone: asyncio.Future[None]) -> int | None:
    """The bridge's exit status, or None when the client went away first."""
    both: set[asyncio.Future[Any]] = {work, gone}
    done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    if work in done:
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    return None


register_command("ping", ping, stream=True, help="echo requests from the stack (iputils-style)")
register_command("connect", connect, help="TCP/UDP client inside the stack bridged to a byte pipe")

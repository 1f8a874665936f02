"""The control socket: one JSON request line in, JSON reply line(s) out.

Socket ``/run/tapstack/NAME.sock`` (``TAPSTACK_RUN_DIR`` overrides the directory),
mode 0600; a peer must be uid 0 or the daemon's own uid (SO_PEERCRED).

Protocol (one connection per request):

* request: ``{"cmd": "NAME", "args": {...}}`` + newline.
* plain commands: one reply line ``{"ok": true, "data": ...}`` or
  ``{"ok": false, "error": "text"}``, then the server closes. A handler that raises
  ``CommandError(text, exit_code=N)`` with N != 2 adds ``"exit": N``: the CLI then prints
  the text as is (``connect: No route to host``) and exits N; otherwise it prints
  ``tapstack: text`` and exits 2.
* streaming commands (``trace``, ``ping``): the ``ok`` reply first, then any number of
  object lines; the client treats ``{"line": s}`` as stdout, ``{"stderr": s}`` as
  stderr, ``{"dropped": n}`` as a lost-lines notice, and ``{"exit": n}`` (optionally
  with ``"error": s``) as the end with that exit status. An error after the ok reply
  is ``{"error": "text", "exit": 2}``.
* byte pipes (``connect``): the handler calls ``await req.open_pipe()``; the client gets
  ``{"ok": true, "data": {"pipe": TOKEN}}``, opens a second connection with
  ``{"cmd": "pipe", "args": {"token": TOKEN}}``, reads ``{"ok": true}``, and from then
  on that second connection is a raw byte stream both ways (the client half-closes
  it at stdin EOF; the daemon closes it when the peer closes). The first connection
  stays framed and carries the final ``{"exit": n, "error"?: text}`` line, so errors
  after the switch (reset, timeout) still reach the user with their errno text.

Handlers: ``register_command(name, handler, stream=False, help="")`` adds to the
default registry that every ``ControlServer`` copies at construction;
``server.register(...)`` adds to one server. A handler is ``handler(req) -> data``
(sync or async); it reaches the engine through ``req.ctx`` (``stack``, ``driver``,
``clock``, ``loop``, ``config``; ``ctx.now()``; ``ctx.kick()`` flushes frames the call
produced). ``CommandError("text")`` becomes the error reply; any other exception is
logged and answered with ``internal error``, never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("tapstack.control")

DEFAULT_RUN_DIR = "/run/tapstack"
MAX_REQUEST = 1 << 20
TRACE_QUEUE = 4096
PIPE_ATTACH_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0


def run_dir() -> Path:
    return Path(os.environ.get("TAPSTACK_RUN_DIR") or DEFAULT_RUN_DIR)


def socket_path(name: str) -> Path:
    return run_dir() / f"{name}.sock"


class CommandError(Exception):
    """A user-facing failure of a command: becomes ``{"ok": false, "error": text}``."""

    def __init__(self, text: str, exit_code: int = 2) -> None:
        super().__init__(text)
        self.text = text
        self.exit_code = exit_code


def _line(obj: object) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()


@dataclass
class Context:
    """What a handler can reach: the engine, the driver, the clock, the loop."""

    stack: Any
    clock: Any
    loop: asyncio.AbstractEventLoop | None = None
    driver: Any = None
    config: Any = None
    extras: dict[str, Any] = field(default_factory=dict)   # for plug-ins (e.g. the api layer)

    def now(self) -> int:
        return int(self.clock.now())

    def kick(self) -> None:
        """Write frames / hand out events produced by a core call made from a handler."""
        if self.driver is not None:
            self.driver.service()


class Request:
    """One command being handled."""

    def __init__(self, server: ControlServer, cmd: str, args: dict[str, Any],
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.cmd = cmd
        self.args = args
        self.ctx = server.ctx
        self.reader = reader
        self.writer = writer
        self.replied = False
        self.pipe: Pipe | None = None

    async def send(self, obj: object) -> None:
        self.writer.write(_line(obj))
        await self.writer.drain()

    async def reply(self, data: object = None) -> None:
        """Send the ``ok`` reply (streaming handlers call this before their lines)."""
        if self.replied:
            raise RuntimeError("reply already sent")
        self.replied = True
        await self.send({"ok": True, "data": data})

    async def wait_client_gone(self) -> None:
        """Returns when the client closes its side (EOF) or the connection breaks."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while await self.reader.read(4096):
                pass

    async def open_pipe(self, timeout: float = PIPE_ATTACH_TIMEOUT) -> Pipe:
        """Reply ok with a pipe token and wait for the client's data connection."""
        token = secrets.token_hex(16)
        fut: asyncio.Future[Pipe] = asyncio.get_running_loop().create_future()
        self.server._pipes[token] = fut
        try:
            await self.reply({"pipe": token})
            self.pipe = await asyncio.wait_for(fut, timeout)
            return self.pipe
        except TimeoutError:
            raise CommandError("client did not attach the data pipe") from None
        finally:
            self.server._pipes.pop(token, None)


@dataclass
class Pipe:
    """The raw data connection of a ``connect``-style command. Call ``close()`` when done."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        self.done.set()


Handler = Callable[[Request], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    stream: bool = False
    help: str = ""


_DEFAULT_COMMANDS: dict[str, Command] = {}


def register_command(name: str, handler: Handler, *, stream: bool = False, help: str = "") -> None:
    """Add a command to the default registry (copied by every new ControlServer)."""
    _DEFAULT_COMMANDS[name] = Command(name, handler, stream, help)


def default_commands() -> dict[str, Command]:
    return dict(_DEFAULT_COMMANDS)


class TraceHub:
    """Fans ``stack.tracer`` lines out to attached clients; bounded queues, drops counted."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queues: list[TraceQueue] = []
        self.dropped_total = 0

    def attach(self, maxsize: int = TRACE_QUEUE) -> TraceQueue:
        q = TraceQueue(maxsize)
        self.queues.append(q)
        self.ctx.stack.tracer = self.publish
        return q

    def detach(self, q: TraceQueue) -> None:
        if q in self.queues:
            self.queues.remove(q)
        if not self.queues:
            self.ctx.stack.tracer = None

    def publish(self, line: str) -> None:
        for q in self.queues:
            if not q.offer(line):
                self.dropped_total += 1


class TraceQueue:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, line: str) -> bool:
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1
            return False
        return True


class ControlServer:
    """Serves the control socket for one stack."""

    def __init__(self, ctx: Context, path: str | Path, commands: dict[str, Command] | None = None) -> None:
        self.ctx = ctx
        self.path = Path(path)
        self.commands = default_commands() if commands is None else dict(commands)
        self.trace = TraceHub(ctx)
        self._server: asyncio.AbstractServer | None = None
        self._pipes: dict[str, asyncio.Future[Pipe]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.errors = 0
        self.register("trace", _trace_handler, stream=True, help="stream probe lines")

    def register(self, name: str, handler: Handler, *, stream: bool = False, help: str = "") -> None:
        self.commands[name] = Command(name, handler, stream, help)

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._on_connect, path=str(self.path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        if sock is None:
            return False
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return False
        _pid, uid, _gid = struct.unpack("3i", raw)
        return uid in (0, os.geteuid())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        keep_open: asyncio.Event | None = None
        try:
            if not self._peer_allowed(writer):
                writer.write(_line({"ok": False, "error": "permission denied (root only)"}))
                await writer.drain()
                return
            keep_open = await self._dispatch(reader, writer)
            if keep_open is not None:
                await keep_open.wait()
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("control connection failed")
        finally:
            if keep_open is None:
                with contextlib.suppress(Exception):
                    writer.close()
                    await writer.wait_closed()

    async def _dispatch(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> asyncio.Event | None:
        async def error(text: str, exit_code: int = 2) -> None:
            self.errors += 1
            reply: dict[str, Any] = {"ok": False, "error": text}
            if exit_code != 2:
                reply["exit"] = exit_code
            writer.write(_line(reply))
            await writer.drain()

        try:
            raw = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
        except ValueError:
            await error("request too long")
            return None
        except TimeoutError:
            await error(f"no request within {REQUEST_TIMEOUT:.0f} s")
            return None
        if not raw:
            return None
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            await error("malformed request: not JSON")
            return None
        if not isinstance(msg, dict) or not isinstance(msg.get("cmd"), str):
            await error('malformed request: expected {"cmd": "...", "args": {...}}')
            return None
        args = msg.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            await error("malformed request: args must be an object")
            return None
        cmd = msg["cmd"]
        self.requests += 1
        if cmd == "pipe":
            return await self._attach_pipe(reader, writer, args, error)
        command = self.commands.get(cmd)
        if command is None:
            known = ", ".join(sorted(self.commands))
            await error(f"unknown command {cmd!r} (this daemon knows: {known})")
            return None
        req = Request(self, cmd, args, reader, writer)
        try:
            result = command.handler(req)
            if inspect.isawaitable(result):
                result = await result
            self.ctx.kick()
            if not req.replied:
                await req.reply(result)
        except CommandError as e:
            self.ctx.kick()
            if req.replied:
                await req.send({"error": e.text, "exit": e.exit_code})
            else:
                await error(e.text, e.exit_code)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:
            log.exception("command %s failed", cmd)
            self.ctx.kick()
            text = f"internal error in {cmd}: {type(e).__name__}: {e}"
            if req.replied:
                await req.send({"error": text, "exit": 2})
            else:
                await error(text)
        finally:
            if req.pipe is not None:
                req.pipe.close()        # a handler that forgot (or failed) must not hang the client
        return None

    async def _attach_pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           args: dict[str, Any], error: Callable[[str], Awaitable[None]]) -> asyncio.Event | None:
        fut = self._pipes.get(str(args.get("token", "")))
        if fut is None or fut.done():
            await error("no such pipe")
            return None
        writer.write(_line({"ok": True, "data": None}))
        await writer.drain()
        pipe = Pipe(reader, writer)
        fut.set_result(pipe)
        return pipe.done


async def _trace_handler(req: Request) -> None:
    """``trace [-c N]``: stream probe lines until the client goes away or N were sent."""
    count = req.args.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise CommandError("trace: count must be a positive integer")
    hub = req.server.trace
    q = hub.attach()
    gone = asyncio.ensure_future(req.wait_client_gone())
    try:
        await req.reply({"dropped_before": hub.dropped_total})
        sent = 0
        while count is None or sent < count:
            get = asyncio.ensure_future(q.queue.get())
            done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                return
            if q.dropped:
                await req.send({"dropped": q.dropped})
                q.dropped = 0
            await req.send({"line": get.result()})
            sent += 1
        await req.send({"exit": 0})
    finally:
        gone.cancel()
        hub.detach(q)

"""The public ``Stack``: a configured tapstack as an asyncio object (INTERFACE.md "Python API").

::

    from stack import Stack, load_config

    async with Stack(load_config("stack.toml")) as st:          # or Stack.default()
        reader, writer = await st.open_connection("2001:db8:1::1", 7)
        server = await st.start_server(handle, port=8080)
        transport, proto = await st.create_datagram_endpoint(MyProto, local_port=5353)
        rtt = await st.ping("fe80::1%tap0")

``async with`` does what ``tapstack run`` does (through ``stack.runtime.host.HostRuntime``):
TAPs, their kernel side, the driver on the running loop, the ``[services]`` and
``[[forward]]`` relays, and waits until addresses finished DAD; leaving removes it all.

TAP-less (tests): ``Stack.for_testing(config)`` gives every configured interface a
``MemoryLink`` (``st.link("tap0")``: ``inject(frame)`` frames in, ``on_tx`` frames out);
``Stack.wire(a, b)`` joins two such stacks. Under ``stack.api.testing.VirtualTimeLoop``
the stack runs on the loop's virtual clock, so DAD and TCP timers take no wall time.

Addresses are text with ``%zone`` for link-local (``fe80::1%tap0``); an unzoned
link-local address is accepted only when the stack has exactly one interface. Errors
are ``OSError`` with the errno (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT,
EINVAL ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stack.api import sockets
from stack.api.hub import Hub
from stack.api.ping import ping_once
from stack.api.testing import LoopClock, MemoryLink, Wire
from stack.control.config import StackConfig, load_config, parse_config
from stack.control.server import Context
from stack.link.pcap import PcapSet
from stack.runtime.driver import MonotonicClock
from stack.runtime.host import HostRuntime, stack_ready

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


class Stack:
    """One tapstack instance on the running event loop."""

    def __init__(self, config: StackConfig | str | Path | None = None, *, links: bool = True,
                 services: bool = True, seed: int | None = None, pcap_dir: str | Path | None = None,
                 clock: Any = None) -> None:
        """``config``: a ``StackConfig``, a path to a TOML file, or TOML text (a string
        containing a newline); None = the built-in default. ``links=False``: in-memory
        links instead of TAPs (nothing on the host is touched). ``services=False``: do not
        start ``[services]``/``[[forward]]``. ``seed``: seeds MACs, ISNs and ports."""
        if config is None:
            config = StackConfig.default()
        elif isinstance(config, str) and "\n" in config:
            config = parse_config(config, "<string>")
        elif isinstance(config, str | Path):
            config = load_config(config)
        self.config: StackConfig = config
        self.uses_taps = links
        self._want_services = services
        self._seed = seed
        self._pcap_dir = pcap_dir
        self._clock = clock
        self._memlinks: dict[str, MemoryLink] = {} if links else {
            i.name: MemoryLink(i.name) for i in config.interfaces}
        self._rt: HostRuntime | None = None
        self._hub: Hub | None = None
        self.ctx: Context | None = None
        self.services: Any = None
        self._started = False

    @classmethod
    def default(cls) -> Stack:
        """INTERFACE.md's built-in default configuration on TAPs (needs root)."""
        return cls(StackConfig.default())

    @classmethod
    def for_testing(cls, config: StackConfig | str | Path | None = None, *, seed: int = 0,
                    services: bool = True) -> Stack:
        """The same stack without TAPs: in-memory links, deterministic seed."""
        return cls(config, links=False, seed=seed, services=services)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> Stack:
        if self._started:
            return self
        self._started = True
        loop = asyncio.get_running_loop()
        clock = self._clock
        if clock is None:
            clock = LoopClock(loop) if getattr(loop, "virtual_time", False) else MonotonicClock()
        rng = random.Random(self._seed) if self._seed is not None else None
        rt = HostRuntime(self.config, pcap_dir=self._pcap_dir, clock=clock, rng=rng)
        self._rt = rt
        try:
            if self.uses_taps:
                await loop.run_in_executor(None, rt.open)
            else:
                rt.taps.update(self._memlinks)  # type: ignore[arg-type]
                if self._pcap_dir is not None:
                    rt.pcap = PcapSet(self._pcap_dir)
            driver = rt.attach(loop)
            hub = self._hub = Hub(rt.stack, clock, driver, loop)
            ctx = self.ctx = Context(stack=rt.stack, clock=clock, loop=loop, driver=driver, config=self.config)
            ctx.extras["api.hub"] = hub
            if self._want_services and (self.config.services.enabled() or self.config.forwards):
                from stack.api.services import start_services
                self.services = start_services(ctx, self.config)
            if self.uses_taps:
                await rt.wait_ready()
            else:
                await self._core_ready()
        except BaseException:
            await self.close()
            raise
        return self

    async def _core_ready(self) -> None:
        assert self._rt is not None and self._rt.driver is not None
        driver = self._rt.driver
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def check() -> None:
            if not fut.done() and stack_ready(self.core):
                fut.set_result(None)

        driver.add_watcher(check)
        check()
        try:
            await fut
        finally:
            driver.remove_watcher(check)

    async def close(self) -> None:
        """Stop services, the driver, and remove TAPs/kernel-side state. Idempotent."""
        services, self.services = self.services, None
        if services is not None:
            close = getattr(services, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    res = close()
                    if asyncio.iscoroutine(res):
                        await res
        if self._hub is not None:
            self._hub.close()            # sockets still open end with ENETDOWN (and RST)
        rt, self._rt = self._rt, None
        if rt is None:
            return
        if rt.driver is not None:
            rt.driver.service()          # those resets go out before the links close
        rt.detach()
        if self.uses_taps:
            await asyncio.get_running_loop().run_in_executor(None, rt.close)
        else:
            rt.close()

    async def __aenter__(self) -> Stack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- parts ---------------------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the stack is not running: use `async with` or `await st.start()`")
        return self._hub

    @property
    def core(self) -> Any:
        """The core engine (``stack.core.stack.Stack``)."""
        if self._rt is None:
            raise RuntimeError("the stack is not running: use `async with` or `await st.start()`")
        return self._rt.stack

    @property
    def driver(self) -> Any:
        return self.hub.driver

    @property
    def clock(self) -> Any:
        return self.hub.clock

    def link(self, ifname: str) -> MemoryLink:
        """The in-memory link of a TAP-less stack."""
        try:
            return self._memlinks[ifname]
        except KeyError:
            raise KeyError(f"no in-memory link {ifname!r} (TAP-less stacks only)") from None

    @staticmethod
    def wire(a: Stack, b: Stack, ifname_a: str = "tap0", ifname_b: str | None = None, *,
             loss: float = 0.0, seed: int = 0) -> Wire:
        """Join interface ``ifname_a`` of ``a`` and ``ifname_b`` of ``b`` (TAP-less)."""
        return Wire(a.link(ifname_a), b.link(ifname_b or ifname_a), loss=loss, seed=seed)

    def addresses(self, ifname: str | None = None) -> list[str]:
        """Usable addresses (text, ``%zone`` on link-local), of one interface or all."""
        core = self.core
        out = []
        for ifx, iface in sorted(core.interfaces.items()):
            if ifname is not None and iface.name != ifname:
                continue
            out += [core.fmt_zoned(a.addr, ifx) for a in iface.addrs6 if a.usable]
            out += [core.fmt_zoned(a.addr, ifx) for a in iface.addrs4]
        return out

    def link_local(self, ifname: str) -> str:
        """``fe80::...%ifname`` of an interface."""
        core = self.core
        ifx = core.ifindex(ifname)
        a = core.interfaces[ifx].link_local()
        if a is None:
            raise LookupError(f"{ifname} has no usable link-local address")
        return str(core.fmt_zoned(a.addr, ifx))

    # -- sockets ---------------------------------------------------------------------------

    async def open_connection(self, host: Any, port: int, *, local_addr: Any = None,
                              limit: int = 2 ** 16, timeout: float | None = None
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """TCP client: asyncio streams once the connection is established."""
        return await sockets.open_connection(self.hub, host, port, local_addr=local_addr, limit=limit,
                                             timeout=timeout)

    async def create_connection(self, protocol_factory: Callable[[], asyncio.Protocol], host: Any,
                                port: int, *, local_addr: Any = None, timeout: float | None = None
                                ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """TCP client with a protocol, as ``loop.create_connection``."""
        return await sockets.create_connection(self.hub, protocol_factory, host, port,
                                               local_addr=local_addr, timeout=timeout)

    async def start_server(self, handler: Handler, port: int, host: Any = None, *,
                           limit: int = 2 ** 16, backlog: int = 128) -> sockets.TcpServer:
        """TCP server: ``handler(reader, writer)`` per connection (``host`` None = all addresses)."""
        return await sockets.start_server(self.hub, handler, port, host, limit=limit, backlog=backlog)

    async def create_server(self, protocol_factory: Callable[[], asyncio.Protocol], port: int,
                            host: Any = None, *, backlog: int = 128) -> sockets.TcpServer:
        return await sockets.create_server(self.hub, protocol_factory, port, host, backlog=backlog)

    async def create_datagram_endpoint(self, protocol_factory: Callable[[], asyncio.DatagramProtocol], *,
                                       local_port: int = 0, local_addr: Any = None,
                                       remote_addr: Any = None) -> tuple[asyncio.DatagramTransport, Any]:
        """UDP, as ``loop.create_datagram_endpoint``; ``local_addr`` may be a host or (host, port)."""
        return await sockets.create_datagram_endpoint(self.hub, protocol_factory, local_addr=local_addr,
                                                      local_port=local_port, remote_addr=remote_addr)

    async def udp_socket(self, *, local_port: int = 0, local_addr: Any = None,
                         remote_addr: Any = None) -> sockets.UdpSocket:
        """UDP with awaitable ``recvfrom()``."""
        return await sockets.udp_socket(self.hub, local_addr=local_addr, local_port=local_port,
                                        remote_addr=remote_addr)

    async def ping(self, dst: Any, timeout: float = 5.0, *, size: int = 56, source: Any = None) -> float:
        """One echo request; the round-trip time in seconds (OSError / TimeoutError otherwise)."""
        hub = self.hub
        addr, zone = hub.parse_addr(dst)
        src = hub.parse_addr(source)[0] if source is not None else None
        return await ping_once(hub, addr, zone, timeout=timeout, size=size, src=src)

    def __repr__(self) -> str:
        mode = "taps" if self.uses_taps else "in-memory"
        state = "running" if self._rt is not None else "stopped"
        return f"<tapstack.Stack {self.config.name} {mode} {state}>"

"""Everything that puts a configured stack on the host, except the control socket.

``HostRuntime(cfg)`` builds the core stack at once (a bad configuration raises
``ConfigError`` before anything is touched). Then:

* ``open()`` (synchronous, pyroute2): create the TAPs, set up their kernel side, open
  pcap files. Call ``close()`` afterwards even when ``open()`` fails half way.
* ``attach(loop)``: start the ``Driver`` on a running loop; ``wait_ready()`` waits for
  core DAD and kernel-side DAD; ``detach()`` stops the driver.
* ``close()`` (synchronous): kernel-side routes and addresses, the TAPs, the
  namespaces this runtime created, in that order. Idempotent.

pyroute2's synchronous API cannot run on a thread whose event loop is running, so
code inside a loop uses ``async with HostRuntime(cfg) as rt`` (which runs ``open`` and
``close`` in an executor) or calls them through ``loop.run_in_executor``.

With a ``state_file`` the namespaces it creates are written down, so that a restart
after SIGKILL adopts (and later removes) the namespaces its predecessor left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from pathlib import Path
from typing import Any

from stack.control.config import StackConfig
from stack.control.netlink import PeerSetup, namespace_exists
from stack.link.gso import available as gso_available
from stack.link.pcap import PcapSet
from stack.link.tap import TapLink
from stack.runtime.build import build_stack, interface_macs
from stack.runtime.driver import Driver, MonotonicClock
from stack.wire.gso import GSO_MAX_PACKET

log = logging.getLogger("tapstack")

READY_WARN_AFTER = 10.0
PEER_SETTLE_TIMEOUT = 10.0


class HostRuntime:
    def __init__(self, cfg: StackConfig, *, pcap_dir: str | Path | None = None, clock: Any = None,
                 rng: random.Random | None = None, state_file: str | Path | None = None,
                 pcap_options: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or MonotonicClock()
        self.rng = rng or random.Random(os.urandom(16))
        self.macs = interface_macs(cfg, self.rng)
        self.stack = build_stack(cfg, self.clock.now(), self.rng, macs=self.macs)
        self.pcap_dir = pcap_dir
        self.pcap_options = dict(pcap_options or {})     # PcapWriter arguments (max_bytes, keep)
        self.state_file = Path(state_file) if state_file is not None else None
        self.taps: dict[str, TapLink] = {}
        self.peers = PeerSetup()
        self.pcap: PcapSet | None = None
        self.driver: Driver | None = None

    # -- synchronous host setup ----------------------------------------------------

    def open(self) -> None:
        self._adopt_stale_namespaces()
        self.peers.preflight([(i.name, i.peer) for i in self.cfg.interfaces if i.peer is not None])
        for iface in self.cfg.interfaces:
            tap = self.taps[iface.name] = TapLink(iface.name, offload=iface.offload)
            # core may hand this link 64 KB TCP segments (TSO) and GSO/NEEDS_CSUM packets:
            # the kernel takes them with offloads, else the TAP cuts them in C (software GSO)
            soft_gso = not tap.offload and iface.gso and gso_available()
            self.stack.set_offload(self.stack.ifindex(iface.name),
                                   GSO_MAX_PACKET if tap.offload or soft_gso else 0)
            log.info("%s: TAP created%s", iface.name,
                     " (offloads: vnet_hdr, csum, tso4, tso6)" if tap.offload
                     else " (software GSO)" if soft_gso else "")
        try:
            for iface in self.cfg.interfaces:
                if iface.peer is not None:
                    self.peers.setup(iface.name, iface.peer, iface.mtu)
        finally:
            self._write_state()
        if self.pcap_dir:
            self.pcap = PcapSet(self.pcap_dir, **self.pcap_options)
            for ifname in ("lo", *(iface.name for iface in self.cfg.interfaces)):
                self.pcap.writer(ifname)        # every file exists from the start, lo.pcap too

    def close(self) -> None:
        self.peers.cleanup()
        for name, tap in self.taps.items():
            tap.close()
            log.info("%s: TAP removed", name)
        self.taps.clear()
        problems = self.peers.remove_namespaces()
        if self.pcap is not None:
            self.pcap.close()
            self.pcap = None
        if self.state_file is not None and not problems:
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()

    def _adopt_stale_namespaces(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        wanted = {i.peer.netns for i in self.cfg.interfaces if i.peer is not None and i.peer.netns}
        for name in self.state_file.read_text().split():
            if name in wanted and namespace_exists(name):
                log.info("adopting namespace %s left by a previous instance", name)
                self.peers.created_namespaces.append(name)

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        if self.peers.created_namespaces:
            self.state_file.write_text("".join(f"{n}\n" for n in self.peers.created_namespaces))
        else:
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()

    # -- on the loop ----------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> Driver:
        driver = Driver(self.stack, self.clock, loop, pcap=self.pcap, busy_poll_us=self.cfg.busy_poll_us,
                        fastpath=_fastpath(self.cfg.fastpath))
        gro = {iface.name: iface.gro for iface in self.cfg.interfaces}
        for name, tap in self.taps.items():
            driver.add_link(self.stack.ifindex(name), tap, gro=gro.get(name, True))
        for iface in self.cfg.interfaces:
            if iface.faults is not None and iface.faults.active():
                driver.set_faults(self.stack.ifindex(iface.name), iface.faults)
                log.info("%s: fault injection %s", iface.name, iface.faults)
        driver.start()
        self.driver = driver
        return driver

    def detach(self) -> None:
        if self.driver is not None:
            self.driver.stop()
            self.driver = None

    async def wait_ready(self, stop: asyncio.Event | None = None) -> bool:
        """Core DAD done and kernel-side DAD settled; False if ``stop`` was set first."""
        driver = self.driver
        assert driver is not None, "attach() first"
        loop = asyncio.get_running_loop()
        core_ready: asyncio.Future[None] = loop.create_future()

        def check() -> None:
            if not core_ready.done() and stack_ready(self.stack):
                core_ready.set_result(None)

        driver.add_watcher(check)
        check()
        settle = loop.run_in_executor(None, self.peers.wait_settled, PEER_SETTLE_TIMEOUT)
        both: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(core_ready, settle))
        waiters: set[asyncio.Future[Any]] = {both}
        stopper: asyncio.Future[Any] | None = None
        if stop is not None:
            stopper = asyncio.ensure_future(stop.wait())
            waiters.add(stopper)
        try:
            done, _ = await asyncio.wait(waiters, timeout=READY_WARN_AFTER, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                log.warning("not ready after %.0f s (addresses still tentative?); still waiting", READY_WARN_AFTER)
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if both in done:
                _, unsettled = both.result()
                if unsettled:
                    log.warning("kernel side still tentative on %s", ", ".join(unsettled))
                return True
            return False
        finally:
            driver.remove_watcher(check)
            if stopper is not None:
                stopper.cancel()
            if not both.done():
                self.peers.cancel_wait()
                both.cancel()
                with contextlib.suppress(BaseException):
                    await settle
                with contextlib.suppress(BaseException):
                    await both

    # -- async context manager --------------------------------------------------------

    async def __aenter__(self) -> HostRuntime:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.open)
            self.attach(loop)
            await self.wait_ready()
        except BaseException:
            self.detach()
            await loop.run_in_executor(None, self.close)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.detach()
        await asyncio.get_running_loop().run_in_executor(None, self.close)


def stack_ready(stack: Any) -> bool:
    ready = getattr(stack, "ready", None)
    if ready is None:       # a core without ready(): nothing to wait for
        return True
    return bool(ready())


def _fastpath(wanted: bool) -> Any:
    """The native flow table when configured and built (TAPSTACK_PURE=1 has none)."""
    if not wanted:
        return None
    try:
        from stack.link.fastpath import FastPath, available
    except ImportError:
        return None
    if not available():
        log.info("fast path: not available (pure-Python build); every frame takes the slow path")
        return None
    return FastPath()

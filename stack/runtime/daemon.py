"""``tapstack run``: configuration → TAPs → kernel side → stack → control socket → ready.

Order matters for the contract:

1. parse and validate the configuration and build the core stack (pure: a bad
   configuration exits 2 and nothing on the system has been touched);
2. take ``/run/tapstack/NAME.lock`` (flock) and remove a stale control socket that no
   process answers on; a live instance of the same name is refused (exit 1);
3. create the TAPs, set up their kernel side (``PeerSetup``), start the driver and the
   control server, wait for core DAD (``stack.ready()``) and kernel-side DAD, then print
   ``tapstack: ready name=NAME control=PATH`` on stdout;
4. SIGTERM/SIGINT (also during setup): undo everything in reverse, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import random
import signal
import sys
from dataclasses import replace
from types import FrameType
from typing import Any

from stack.control.client import ControlClient
from stack.control.config import ConfigError, StackConfig, load_config
from stack.control.netlink import PeerSetup, PeerSetupError
from stack.control.server import Context, ControlServer, run_dir, socket_path
from stack.link.pcap import PcapSet
from stack.link.tap import TapError, TapLink
from stack.runtime.build import build_stack, interface_macs
from stack.runtime.driver import Driver, MonotonicClock

log = logging.getLogger("tapstack")

READY_WARN_AFTER = 10.0     # seconds without readiness before a warning
PEER_SETTLE_TIMEOUT = 10.0
# Modules with ``start_services(ctx, cfg) -> object with optional close()``; the first one
# found starts the built-in services and forwards (the api layer provides it).
SERVICE_MODULES = ("stack.api.services",)


class Terminated(Exception):
    """SIGTERM/SIGINT arrived during synchronous setup."""


def setup_logging(level: str, name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s tapstack[{name}] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tapstack")
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    root.propagate = False


def err(text: str) -> None:
    print(f"tapstack: {text}", file=sys.stderr, flush=True)


def run_daemon(ns: argparse.Namespace) -> int:
    try:
        cfg = load_config(ns.config) if ns.config else StackConfig.default()
    except ConfigError as e:
        err(f"config error: {e}")
        return 2
    if ns.name:
        if not _valid_name(ns.name):
            err(f"bad --name {ns.name!r}: use letters, digits, '_', '.', '-'")
            return 2
        cfg = replace(cfg, name=ns.name)
    setup_logging(ns.log_level, cfg.name)
    clock = MonotonicClock()
    rng = random.Random(os.urandom(16))
    macs = interface_macs(cfg, rng)
    try:
        stack = build_stack(cfg, clock.now(), rng, macs=macs)
    except ConfigError as e:
        err(f"config error: {e}")
        return 2
    return Daemon(cfg, stack, clock, pcap_dir=ns.pcap).run()


def _valid_name(name: str) -> bool:
    from stack.control.config import _NAME_RE
    return bool(_NAME_RE.match(name))


class Daemon:
    def __init__(self, cfg: StackConfig, stack: Any, clock: MonotonicClock, *, pcap_dir: str | None = None) -> None:
        self.cfg = cfg
        self.stack = stack
        self.clock = clock
        self.pcap_dir = pcap_dir
        self.sock_path = socket_path(cfg.name)
        self.lock_path = run_dir() / f"{cfg.name}.lock"
        self.taps: dict[str, TapLink] = {}
        self.peers = PeerSetup()
        self.pcap: PcapSet | None = None
        self._lock_fd: int | None = None
        self._stop: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        pid = os.getpid()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != pid:      # a forked helper of some library: just die
                os._exit(128 + signum)
            raise Terminated(signal.Signals(signum).name)

        for sig in old:
            signal.signal(sig, on_signal)
        rc = 0
        try:
            if not self._take_name():
                return 1
            self._create_links()
            rc = self._run_loop()
        except Terminated as e:
            log.info("%s during setup: cleaning up", e)
        except (TapError, PeerSetupError, OSError) as e:
            err(str(e) if not isinstance(e, OSError) or not e.strerror else f"{e.strerror}: {e.filename or ''}")
            rc = 1
        finally:
            # No signal may interrupt the cleanup itself.
            for sig in old:
                signal.signal(sig, signal.SIG_IGN)
            self._cleanup()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return rc

    def _take_name(self) -> bool:
        directory = run_dir()
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            err(f"a stack named {self.cfg.name!r} is already running ({self.sock_path})")
            return False
        self._lock_fd = fd
        if self.sock_path.exists() or self.sock_path.is_symlink():
            if ControlClient(self.cfg.name, self.sock_path).alive():
                err(f"a stack named {self.cfg.name!r} is already running ({self.sock_path})")
                self._release_name(unlink=False)
                return False
            log.info("removing stale control socket %s", self.sock_path)
            self.sock_path.unlink()
        return True

    def _release_name(self, unlink: bool = True) -> None:
        if self._lock_fd is not None:
            if unlink:
                with contextlib.suppress(FileNotFoundError):
                    self.lock_path.unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def _create_links(self) -> None:
        for iface in self.cfg.interfaces:
            self.taps[iface.name] = TapLink(iface.name)
            log.info("%s: TAP created", iface.name)
            if iface.offload:
                log.warning("%s: offload = true is not supported yet; using plain frames", iface.name)
        for iface in self.cfg.interfaces:
            if iface.peer is not None:
                self.peers.setup(iface.name, iface.peer, iface.mtu)
        if self.pcap_dir:
            self.pcap = PcapSet(self.pcap_dir)
            for iface in self.cfg.interfaces:
                self.pcap.writer(iface.name)

    def _run_loop(self) -> int:
        try:
            import uvloop
            loop_factory: Any = uvloop.new_event_loop
        except ImportError:   # pragma: no cover - uvloop is a dependency
            loop_factory = None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        driver = Driver(self.stack, self.clock, loop, pcap=self.pcap)
        for name, tap in self.taps.items():
            driver.add_link(self.stack.ifindex(name), tap)
        for iface in self.cfg.interfaces:
            if iface.faults is not None and iface.faults.active():
                driver.set_faults(self.stack.ifindex(iface.name), iface.faults)
                log.info("%s: fault injection %s", iface.name, iface.faults)
        ctx = Context(stack=self.stack, clock=self.clock, loop=loop, driver=driver, config=self.cfg)
        from stack.control.commands import load_plugins
        load_plugins()
        server = ControlServer(ctx, self.sock_path)
        services: Any = None
        try:
            await server.start()
            driver.start()
            services = self._start_services(ctx)
            ready = await self._wait_ready(driver, loop)
            if ready:
                print(f"tapstack: ready name={self.cfg.name} control={self.sock_path}", flush=True)
                log.info("ready")
                await self._stop.wait()
            log.info("stopping")
        finally:
            close = getattr(services, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    res = close()
                    if asyncio.iscoroutine(res):
                        await res
            driver.stop()
            await server.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 0

    def _start_services(self, ctx: Context) -> Any:
        wanted = bool(self.cfg.services.enabled() or self.cfg.forwards)
        for name in SERVICE_MODULES:
            try:
                mod = importlib.import_module(name)
            except ModuleNotFoundError as e:
                if e.name is not None and name.startswith(e.name):
                    continue
                raise
            start = getattr(mod, "start_services", None)
            if start is not None:
                return start(ctx, self.cfg)
        if wanted:
            log.warning("services/forwards configured but this build has no service layer yet")
        return None

    async def _wait_ready(self, driver: Driver, loop: asyncio.AbstractEventLoop) -> bool:
        """Core DAD done and kernel-side DAD settled; False if stopped first."""
        assert self._stop is not None
        core_ready: asyncio.Future[None] = loop.create_future()

        def check() -> None:
            if not core_ready.done() and _stack_ready(self.stack):
                core_ready.set_result(None)

        driver.add_watcher(check)
        check()
        settle = loop.run_in_executor(None, self.peers.wait_settled, PEER_SETTLE_TIMEOUT)
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        both: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(core_ready, settle))
        try:
            done, _ = await asyncio.wait({both, stop}, timeout=READY_WARN_AFTER,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                log.warning("not ready after %.0f s (addresses still tentative?); still waiting",
                            READY_WARN_AFTER)
                done, _ = await asyncio.wait({both, stop}, return_when=asyncio.FIRST_COMPLETED)
            if both in done:
                _, unsettled = both.result()
                if unsettled:
                    log.warning("kernel side still tentative on %s", ", ".join(unsettled))
                return True
            return False
        finally:
            driver.remove_watcher(check)
            stop.cancel()
            if not both.done():
                self.peers.cancel_wait()
                both.cancel()
                with contextlib.suppress(BaseException):
                    await settle

    def _cleanup(self) -> None:
        self.peers.cleanup()
        for name, tap in self.taps.items():
            tap.close()
            log.info("%s: TAP removed", name)
        self.taps.clear()
        self.peers.remove_namespaces()
        if self.pcap is not None:
            self.pcap.close()
        with contextlib.suppress(FileNotFoundError):
            if self._lock_fd is not None:
                self.sock_path.unlink()
        self._release_name()


def _stack_ready(stack: Any) -> bool:
    ready = getattr(stack, "ready", None)
    if ready is None:       # TODO(core): Stack.ready(); until then: no tentative address
        return True
    return bool(ready())


def main(argv: list[str] | None = None) -> int:
    from stack.control.cli import main as cli_main
    return cli_main(["run", *(argv or [])])


if __name__ == "__main__":
    sys.exit(main())

"""``tapstack run``: configuration → TAPs → kernel side → stack → control socket → ready.

Order matters for the contract:

1. parse and validate the configuration and build the core stack (pure: a bad
   configuration exits 2 and nothing on the system has been touched);
2. take ``/run/tapstack/NAME.lock`` (flock) and remove a stale control socket that no
   process answers on; a live instance of the same name is refused (exit 1);
3. ``HostRuntime.open()``: create the TAPs and set up their kernel side (namespaces it
   creates are noted in ``/run/tapstack/NAME.netns``, so a restart after SIGKILL adopts
   and later removes them); then on uvloop: the driver, plug-in commands, the control
   server, services; wait for core DAD (``stack.ready()``) and kernel-side DAD, then
   print ``tapstack: ready name=NAME control=PATH`` on stdout;
4. SIGTERM/SIGINT (also during setup): undo everything in reverse, exit 0.

With ``$NOTIFY_SOCKET`` set (systemd ``Type=notify``) the ready line is also sent as
``READY=1``. SIGHUP re-reads the ``-c`` file (``stack/runtime/reload.py``): routes,
services, forwards, forwarding and limits change at once, other changes are logged as
needing a restart,
and a file that does not load or validate is logged and the running configuration
kept. SIGHUP during setup is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import importlib
import logging
import os
import signal
import sys
from dataclasses import replace
from types import FrameType
from typing import Any

from stack.control.client import ControlClient
from stack.control.config import ConfigError, StackConfig, load_config
from stack.control.netlink import PeerSetupError
from stack.control.server import Context, ControlServer, run_dir, socket_path
from stack.link.tap import TapError
from stack.runtime.host import HostRuntime
from stack.runtime.notify import monotonic_usec, sd_notify
from stack.runtime.reload import reload_config

log = logging.getLogger("tapstack")

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
    pcap_options = _pcap_options(ns)
    if isinstance(pcap_options, str):
        err(pcap_options)
        return 2
    setup_logging(ns.log_level, cfg.name)
    try:
        rt = HostRuntime(cfg, pcap_dir=ns.pcap, state_file=run_dir() / f"{cfg.name}.netns",
                         pcap_options=pcap_options)
    except ConfigError as e:
        err(f"config error: {e}")
        return 2
    return Daemon(rt, config_path=ns.config, name_override=ns.name).run()


def parse_size(text: str) -> int | None:
    """``64M``, ``512k``, ``1G`` or plain bytes; None if it is not a size."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = units.get(t[-1:], 1)
    if t[-1:] in units:
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        return None
    return int(value * mult) if value > 0 else None


def _pcap_options(ns: argparse.Namespace) -> dict[str, int] | str:
    """``PcapWriter`` arguments from --pcap-size/--pcap-files, or the error text."""
    size = parse_size(str(getattr(ns, "pcap_size", "64M")))
    if size is None or size < 1024:
        return f"bad --pcap-size {ns.pcap_size!r}: use a size of at least 1k, e.g. 64M or 512k"
    files = int(getattr(ns, "pcap_files", 2))
    if not 1 <= files <= 1000:
        return f"bad --pcap-files {files}: use 1..1000 (1 = start the file over when it is full)"
    return {"max_bytes": size, "keep": files - 1}


def _valid_name(name: str) -> bool:
    from stack.control.config import _NAME_RE
    return bool(_NAME_RE.match(name))


def os_error_text(e: OSError) -> str:
    text = e.strerror or str(e)
    if e.filename:
        text = f"{e.filename}: {text}"
    if e.errno in (errno.EPERM, errno.EACCES):
        text += " (tapstack run needs root / CAP_NET_ADMIN)"
    return text


class Daemon:
    def __init__(self, runtime: HostRuntime, *, config_path: str | None = None,
                 name_override: str | None = None) -> None:
        self.rt = runtime
        self.cfg = runtime.cfg
        self.config_path = config_path
        self.name_override = name_override
        self._services: Any = None
        self._ctx: Context | None = None
        self.stack = runtime.stack
        self.sock_path = socket_path(self.cfg.name)
        self.lock_path = run_dir() / f"{self.cfg.name}.lock"
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
        old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)     # no reload before the loop runs
        rc = 0
        try:
            if not self._take_name():
                return 1
            self.rt.open()
            rc = self._run_loop()
        except Terminated as e:
            log.info("%s during setup: cleaning up", e)
        except (TapError, PeerSetupError) as e:
            err(str(e))
            rc = 1
        except OSError as e:
            err(os_error_text(e))
            rc = 1
        except Exception as e:      # a bug: the traceback goes to the log, cleanup still runs
            log.exception("internal error")
            err(f"internal error: {type(e).__name__}: {e}")
            rc = 1
        finally:
            # No signal may interrupt the cleanup itself.
            for sig in old:
                signal.signal(sig, signal.SIG_IGN)
            self.rt.close()
            if self._lock_fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.sock_path.unlink()
            self._release_name()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.signal(signal.SIGHUP, old_hup)
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
        driver = self.rt.attach(loop)
        ctx = Context(stack=self.stack, clock=self.rt.clock, loop=loop, driver=driver, config=self.cfg,
                      extras={"runtime": self.rt})
        self._ctx = ctx
        from stack.control.commands import load_plugins
        load_plugins()
        server = ControlServer(ctx, self.sock_path)
        services: Any = None
        try:
            await server.start()
            services = self._services = self._start_services(ctx)
            if await self.rt.wait_ready(self._stop):
                loop.add_signal_handler(signal.SIGHUP, self.reload)   # before anyone is told "ready"
                print(f"tapstack: ready name={self.cfg.name} control={self.sock_path}", flush=True)
                log.info("ready")
                sd_notify("READY=1", f"STATUS=ready name={self.cfg.name}", f"MAINPID={os.getpid()}")
                await self._stop.wait()
            log.info("stopping")
            sd_notify("STOPPING=1")
        finally:
            close = getattr(services, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    res = close()
                    if asyncio.iscoroutine(res):
                        await res
            self.rt.detach()
            await server.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    def reload(self) -> None:
        """SIGHUP: apply the file's routes, services, forwards, forwarding and limits; keep
        the old config on errors."""
        if self.config_path is None:
            log.warning("SIGHUP: started without -c, there is no configuration file to re-read")
            return
        sd_notify("RELOADING=1", monotonic_usec())
        try:
            new = load_config(self.config_path)
            if self.name_override:
                new = replace(new, name=self.name_override)
            res = reload_config(self.cfg, new, self.stack, self._services, self.rt.clock.now())
        except ConfigError as e:
            log.error("reload failed, running configuration kept: config error: %s", e)
        except Exception:       # a bug: keep running with what we have
            log.exception("reload failed, running configuration kept: internal error")
        else:
            self.cfg = replace(self.cfg, routes=new.routes, services=new.services, forwards=new.forwards,
                               forwarding=new.forwarding, limits=new.limits)
            if self._ctx is not None:
                self._ctx.config = self.cfg
            log.info("reloaded %s: %s", self.config_path, res.summary())
            if res.needs_restart:
                log.warning("reload: changes to %s need a restart (ignored until then)",
                            ", ".join(res.needs_restart))
        finally:
            if self._ctx is not None:
                self._ctx.kick()
            sd_notify("READY=1", f"STATUS=ready name={self.cfg.name}")

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


def main(argv: list[str] | None = None) -> int:
    from stack.control.cli import main as cli_main
    return cli_main(["run", *(argv or [])])


if __name__ == "__main__":
    sys.exit(main())

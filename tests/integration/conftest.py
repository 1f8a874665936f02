"""Namespace fixtures: run the real daemon against the Linux kernel.

Tests marked ``@pytest.mark.netns`` are skipped without root (CAP_NET_ADMIN), without
/dev/net/tun or without iproute2. ``tapstack_factory(config)`` writes a TOML config with
unique names (``{name}``, ``{tap0}``, ``{tap1}``, ``{ns0}``, ``{ns1}`` placeholders),
starts ``python -m stack run -c CFG`` and waits for its ready line (no sleeps, 30 s cap).
Teardown sends SIGTERM to the PID it started, waits, and then removes, by name, any
TAP, namespace or control socket of that instance still present (and fails the test
when it had to). Only documentation prefixes and link-local addresses are used.
"""

from __future__ import annotations

import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
_counter = itertools.count()


def netns_capable() -> str | None:
    """None when namespace tests can run, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = netns_capable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


def wait_for(what: str, cond: Callable[..., Any], timeout: float = 10.0) -> Any:
    """Re-evaluate ``cond()`` until it returns something true (a state the daemon or
    the kernel reaches on its own, read by polling); fail naming ``what``, with the
    last value, at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {got!r})")
        time.sleep(0.05)


def unique_names() -> dict[str, str]:
    n = next(_counter)
    pid = os.getpid() % 100000
    return {"name": f"tsk-{pid}-{n}", "tap0": f"tk{pid}n{n}a", "tap1": f"tk{pid}n{n}b",
            "ns0": f"tsk-{pid}-{n}-a", "ns1": f"tsk-{pid}-{n}-b"}


def link_exists(name: str, ns: str | None = None) -> bool:
    cmd = ["ip", "link", "show", "dev", name] if ns is None else ["ip", "-n", ns, "link", "show", "dev", name]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def netns_exists(ns: str) -> bool:
    return os.path.exists(f"/run/netns/{ns}")


class StackProcess:
    """One running daemon and helpers to poke it and its peers."""

    def __init__(self, names: dict[str, str], config_path: Path | None, workdir: Path, extra_args: list[str],
                 prefix: list[str] | None = None) -> None:
        self.names = names
        self.name = names["name"]
        self.config_path = config_path
        self.stderr_path = workdir / f"{self.name}.stderr"
        self.socket = Path("/run/tapstack") / f"{self.name}.sock"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("TAPSTACK_RUN_DIR", None)
        config_args = ["-c", str(config_path)] if config_path is not None else []
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "stack", "run", *config_args, *extra_args],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        self.ready_line = ""

    def __getitem__(self, key: str) -> str:
        return self.names[key]

    def stderr(self) -> str:
        if not self._stderr.closed:     # stop() closes it; the file is still there to read
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no ready line within {timeout}s; stderr:\n{self.stderr()}")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(5)
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before ready; stderr:\n"
                                     f"{self.stderr()}")
            buf += chunk
        self.ready_line = buf.split(b"\n", 1)[0].decode()
        return self.ready_line

    def run_in_ns(self, cmd: list[str] | str, ns: str | None = None, *, timeout: float = 30,
                  check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in a peer namespace (default: ns0)."""
        argv = cmd.split() if isinstance(cmd, str) else list(cmd)
        ns = ns or self.names["ns0"]
        r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout,
                           input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{argv} in {ns} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def tapstack(self, *args: str, check: bool = True, timeout: float = 30,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``tapstack ARGS --name NAME`` against this instance."""
        r = subprocess.run([sys.executable, "-m", "stack", *args, "--name", self.name], capture_output=True,
                           text=True, timeout=timeout, cwd=REPO, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"tapstack {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the daemon (by the PID we started) and wait; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return self.proc.returncode

    def leftovers(self) -> list[str]:
        found = []
        for key in ("tap0", "tap1"):
            if link_exists(self.names[key]):
                found.append(f"TAP {self.names[key]}")
        for key in ("ns0", "ns1"):
            if netns_exists(self.names[key]):
                found.append(f"namespace {self.names[key]}")
        if self.socket.exists():
            found.append(f"socket {self.socket}")
        return found

    def force_cleanup(self) -> None:
        """Remove whatever of this instance is left, by name only."""
        for key in ("ns0", "ns1"):
            ns = self.names[key]
            if netns_exists(ns):
                for tap in ("tap0", "tap1"):
                    subprocess.run(["ip", "-n", ns, "link", "del", self.names[tap]], capture_output=True)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for key in ("tap0", "tap1"):
            if link_exists(self.names[key]):
                subprocess.run(["ip", "link", "del", self.names[key]], capture_output=True)
        for suffix in (".sock", ".lock"):
            p = Path("/run/tapstack") / f"{self.name}{suffix}"
            if p.exists():
                p.unlink()


Factory = Callable[..., StackProcess]


@pytest.fixture
def tapstack_factory(tmp_path: Path) -> Iterator[Factory]:
    started: list[StackProcess] = []

    def start(config: str, *extra_args: str, wait: bool = True, names: dict[str, str] | None = None) -> StackProcess:
        names = names or unique_names()
        path = tmp_path / f"{names['name']}.toml"
        path.write_text(config.format(**names))
        sp = StackProcess(names, path, tmp_path, list(extra_args))
        started.append(sp)
        if wait:
            sp.wait_ready()
        return sp

    yield start
    leaks = []
    for sp in started:
        sp.stop()
        left = sp.leftovers()
        if left:
            leaks.append(f"{sp.name}: {', '.join(left)}\n{sp.stderr()}")
            sp.force_cleanup()
    if leaks:
        pytest.fail("daemon left things behind after SIGTERM:\n" + "\n".join(leaks))


# One TAP, kernel side in namespace ns0, quiet (no RA/RS), normal DAD on both sides.
ONE_TAP = """
name = "{name}"
[loopback]
addresses = ["2001:db8:ff::1/128", "198.51.100.1/32"]

[[interface]]
name = "{tap0}"
mac = "02:00:00:00:00:02"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]

[interface.peer]
netns = "{ns0}"
addresses = ["2001:db8:1::1/64", "192.0.2.1/24"]
routes = [
  "2001:db8:ff::1/128 via 2001:db8:1::2",
  "198.51.100.1/32 via inet6 fe80::ff:fe00:2",
]
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}
"""

STACK_MAC = "02:00:00:00:00:02"
STACK_LL = "fe80::ff:fe00:2"


@pytest.fixture
def one_tap(tapstack_factory: Factory) -> Any:
    return tapstack_factory(ONE_TAP)

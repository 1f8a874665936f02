#!/usr/bin/env python3
"""tapstack against a bare baseline, on this machine, in one run (issue 8).

    .venv/bin/python scripts/bench.py                    # everything, 3 runs each, table
    .venv/bin/python scripts/bench.py --runs 5 -j        # JSON on stdout
    .venv/bin/python scripts/bench.py --quick --only ready,ping1    # 1 short run (smoke)

Needs root, /dev/net/tun, iproute2, iputils ping, iperf3. It creates its own namespaces
and TAPs (names ``tsb-PID-*`` / ``tbPID*``), starts ``tapstack run -c CFG`` (as ``python -m stack``
from this tree) with a generated configuration (two TAPs, forwarding on, echo/discard/chargen,
``offload = false`` unless ``--offload``, ``busy_poll_us = 50`` unless ``--busy-poll-us``) and
``scripts/bench_baseline.py`` (a bare read/answer loop: NS -> NA, echo -> reply, nothing
else) on a third TAP, and measures them alternately, run by run, so every figure is
put next to a baseline figure taken seconds apart on the same machine:

==========  ========================================  ==================================
bench       tapstack                                  baseline
==========  ========================================  ==================================
ready       start -> ready line (one TAP, peer nodad) start -> TAP up in the namespace
ready_odad  the same with ``optimistic_dad = true``   the same
ping1       ``ping -6 -f``: RTT µs (one in flight)    the same against the baseline
ping1_nobp  the same, daemon at busy_poll_us = 0      the same
ping32      ``ping -6 -f -l 32``: echoes/s            the same
tcp_in      kernel -> discard, Gbit/s (payload)       ``ping -f -l 32 -s 1400``, one way
tcp_out     chargen -> kernel, Gbit/s (payload)       the same bulk figure
cps         connect + 1-byte echo + close, conn/s     ping32 (packets/s; ≥ 9 frames/conn)
fwd_ping    router mode ns0 -> ns1 ``ping -f -l 32``  ping32 (forwarded packets = 2/echo)
fwd_iperf   router mode ``iperf3`` ns0 -> ns1 Gbit/s  the bulk figure
idle10k     daemon RSS MB with 10,000 established     the baseline's RSS
            idle connections to echo
==========  ========================================  ==================================

The daemon's tree is byte-compiled first (``compileall``, into its git-ignored ``__pycache__``),
as an installed package is, so ``ready`` does not count compiling from source (this machine sets
PYTHONDONTWRITEBYTECODE).

Each figure: median and min-max over ``--runs`` (default 3). Progress goes to stderr,
the table (or ``-j`` JSON) to stdout. Everything it created is removed on exit, on an
error and on SIGINT/SIGTERM (processes by their PID, namespaces/TAPs by name). The
``_client`` subcommand is the load generator it runs inside the namespaces.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_PY = REPO / ".venv" / "bin" / "python"
PY = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
READY_TIMEOUT = 30.0
BENCHES = ("ready", "ready_odad", "ping1", "ping1_nobp", "ping32", "tcp_in", "tcp_out", "cps", "fwd_ping", "fwd_iperf", "idle10k")

STACK_A, KERNEL_A = "2001:db8:1::2", "2001:db8:1::1"
STACK_B, KERNEL_B = "2001:db8:2::2", "2001:db8:2::1"
BASE_ADDR, BASE_PEER = "2001:db8:3::2", "2001:db8:3::1/64"

MAIN_CONFIG = """\
name = "{name}"
forwarding = true
{busy_poll}

[[interface]]
name = "{tap0}"
mac = "02:00:00:00:00:02"
addresses = ["2001:db8:1::2/64"]
offload = {offload}

[interface.peer]
netns = "{ns0}"
addresses = ["2001:db8:1::1/64"]
routes = ["2001:db8:2::/64 via 2001:db8:1::2"]
nodad = true
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}

[[interface]]
name = "{tap1}"
mac = "02:00:00:00:01:02"
addresses = ["2001:db8:2::2/64"]
offload = {offload}

[interface.peer]
netns = "{ns1}"
addresses = ["2001:db8:2::1/64"]
routes = ["2001:db8:1::/64 via 2001:db8:2::2"]
nodad = true
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}

[services]
echo = 7
discard = 9
chargen = 19
"""

READY_CONFIG = """\
name = "{name}"

[[interface]]
name = "{tap0}"
addresses = ["2001:db8:1::2/64"]

[interface.peer]
netns = "{ns0}"
addresses = ["2001:db8:1::1/64"]
nodad = true
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}
"""


class Stop(Exception):
    """SIGTERM/SIGINT: clean up and leave."""


def progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# -- what we created, removed in reverse on the way out ------------------------------------


@dataclass
class Owned:
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            stop_proc(p)
        self.procs.clear()
        for ns in reversed(self.netns):
            if os.path.exists(f"/run/netns/{ns}"):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.netns.clear()
        for link in self.links:
            if subprocess.run(["ip", "link", "show", "dev", link], capture_output=True).returncode == 0:
                subprocess.run(["ip", "link", "del", link], capture_output=True)
        self.links.clear()
        for name in self.names:
            for suffix in (".sock", ".lock", ".netns"):
                p = Path("/run/tapstack") / f"{name}{suffix}"
                if p.exists():
                    p.unlink()


def stop_proc(p: subprocess.Popen[Any], timeout: float = 15) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            f.close()


def read_line(p: subprocess.Popen[Any], timeout: float, what: str) -> str:
    """The next stdout line of ``p`` within ``timeout`` s (no sleeps), else an error."""
    assert p.stdout is not None
    fd = p.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{what}: no line within {timeout:.0f} s")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 1)
        if not chunk:
            raise RuntimeError(f"{what}: exited ({p.wait()}) before its line")
        buf += chunk
    return buf.decode().strip()


def in_ns(ns: str, argv: list[str], timeout: float = 120) -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {ns} failed ({r.returncode}): {r.stderr.strip() or r.stdout}")
    return r.stdout


def client(ns: str, *args: str, timeout: float = 180) -> dict[str, Any]:
    out = in_ns(ns, [PY, str(Path(__file__).resolve()), "_client", *args], timeout)
    return dict(json.loads(out.strip().splitlines()[-1]))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# -- the two subjects ----------------------------------------------------------------------


class Bench:
    def __init__(self, quick: bool, log_dir: Path, stack_src: Path | None = None, offload: bool = False,
                 busy_poll_us: int = 0) -> None:
        self.quick = quick
        self.offload = offload
        self.busy_poll_us = busy_poll_us
        self.stack_src = stack_src
        self.log_dir = log_dir
        self.compiled: set[Path] = set()
        self.owned = Owned()
        pid = os.getpid() % 100000
        self.pid = pid
        self._n = 0
        self.daemon: subprocess.Popen[Any] | None = None
        self.names: dict[str, str] = {}
        self.baseline: subprocess.Popen[Any] | None = None
        self.base_ns = f"tsb-{pid}-base"
        self.base_tap = f"tb{pid}base"

    def unique(self) -> dict[str, str]:
        n = self._n
        self._n += 1
        names = {"name": f"tsb-{self.pid}-{n}", "tap0": f"tb{self.pid}n{n}a", "tap1": f"tb{self.pid}n{n}b",
                 "ns0": f"tsb-{self.pid}-{n}-a", "ns1": f"tsb-{self.pid}-{n}-b"}
        self.owned.names.append(names["name"])
        self.owned.netns += [names["ns0"], names["ns1"]]
        self.owned.links += [names["tap0"], names["tap1"]]
        return names

    def byte_compile(self, src: Path) -> None:
        """Byte-compile the daemon's tree once (``__pycache__``, git-ignored), as an installed
        package has it: with PYTHONDONTWRITEBYTECODE set (as on this machine) every start
        would otherwise compile ~70 modules from source (+0.2-0.4 s to ``ready``)."""
        if src not in self.compiled:
            subprocess.run([PY, "-m", "compileall", "-q", str(src / "stack")], check=True,
                           stdout=subprocess.DEVNULL)
            self.compiled.add(src)

    def start_daemon(self, config: str, names: dict[str, str]) -> tuple[subprocess.Popen[Any], float]:
        """Start ``tapstack run``; (process, seconds from spawn to the ready line)."""
        path = self.log_dir / f"{names['name']}.toml"
        path.write_text(config.format(**names))
        err = open(self.log_dir / f"{names['name']}.stderr", "wb")  # noqa: SIM115 - the child owns it
        # ``tapstack run`` as ``python -m stack run`` from this tree (or --stack-src): the
        # console script imports whatever tree the venv's editable install points at.
        src = self.stack_src or REPO
        self.byte_compile(src)
        env = dict(os.environ, PYTHONPATH=str(src))
        t0 = time.perf_counter()
        p = subprocess.Popen([PY, "-m", "stack", "run", "-c", str(path), "--log-level", "warning"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, cwd=src, env=env)
        err.close()
        self.owned.procs.append(p)
        line = read_line(p, READY_TIMEOUT, "tapstack run")
        dt = time.perf_counter() - t0
        if not line.startswith("tapstack: ready"):
            raise RuntimeError(f"unexpected first line {line!r}")
        return p, dt

    def start_baseline(self) -> tuple[subprocess.Popen[Any], float]:
        if not os.path.exists(f"/run/netns/{self.base_ns}"):
            subprocess.run(["ip", "netns", "add", self.base_ns], check=True)
            self.owned.netns.append(self.base_ns)
            self.owned.links.append(self.base_tap)
        t0 = time.perf_counter()
        p = subprocess.Popen([PY, str(REPO / "scripts" / "bench_baseline.py"), "--tap", self.base_tap,
                              "--netns", self.base_ns, "--addr", BASE_ADDR, "--peer", BASE_PEER],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=REPO)
        self.owned.procs.append(p)
        line = read_line(p, READY_TIMEOUT, "bench_baseline.py")
        dt = time.perf_counter() - t0
        if line != "ready":
            raise RuntimeError(f"baseline said {line!r}")
        return p, dt

    def stop(self, p: subprocess.Popen[Any]) -> None:
        stop_proc(p)
        if p in self.owned.procs:
            self.owned.procs.remove(p)

    def ensure_main(self) -> None:
        if self.daemon is None:
            self.names = self.unique()
            config = MAIN_CONFIG.replace("{offload}", "true" if self.offload else "false").replace(
                "{busy_poll}", f"busy_poll_us = {self.busy_poll_us}" if self.busy_poll_us else "")
            self.daemon, _ = self.start_daemon(config, self.names)
            for ns in (self.names["ns0"], self.names["ns1"]):
                # many short connections (cps) and 10k idle ones: ports and TIME_WAIT reuse
                in_ns(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000",
                           "net.ipv4.tcp_tw_reuse=1"])
            # resolve both neighbors before measuring
            in_ns(self.names["ns0"], ["ping", "-6", "-c", "1", "-W", "2", STACK_A])
            in_ns(self.names["ns0"], ["ping", "-6", "-c", "1", "-W", "2", KERNEL_B])
        if self.baseline is None:
            self.baseline, _ = self.start_baseline()
            in_ns(self.base_ns, ["ping", "-6", "-c", "1", "-W", "2", BASE_ADDR])

    # -- measurements -------------------------------------------------------------------

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def ready(self, subject: str) -> float:
        if subject == "baseline":
            if self.baseline is not None:
                self.stop(self.baseline)
                self.baseline = None
            self.baseline, dt = self.start_baseline()
            return dt * 1000
        names = self.unique()
        p, dt = self.start_daemon(READY_CONFIG, names)
        self.stop(p)
        return dt * 1000

    def ready_odad(self, subject: str) -> float:
        """``ready`` with Optimistic DAD (RFC 4429): the ready line need not wait for DAD."""
        if subject == "baseline":
            return self.ready(subject)
        names = self.unique()
        config = READY_CONFIG.replace('addresses = ["2001:db8:1::2/64"]\n',
                                      'addresses = ["2001:db8:1::2/64"]\noptimistic_dad = true\n', 1)
        p, dt = self.start_daemon(config, names)
        self.stop(p)
        return dt * 1000

    def ping(self, ns: str, addr: str, count: int, *extra: str) -> dict[str, float]:
        out = in_ns(ns, ["ping", "-6", "-q", "-f", "-c", str(count), *extra, addr], timeout=300)
        m = re.search(r"(\d+) packets transmitted, (\d+) received.*time (\d+)ms", out)
        r = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", out)
        if m is None or r is None:
            raise RuntimeError(f"cannot parse ping output:\n{out}")
        sent, got, ms = int(m[1]), int(m[2]), int(m[3])
        return {"sent": sent, "received": got, "pps": got / max(ms, 1) * 1000, "rtt_us": float(r[2]) * 1000}

    def subject_ns_addr(self, subject: str) -> tuple[str, str]:
        return (self.base_ns, BASE_ADDR) if subject == "baseline" else (self.names["ns0"], STACK_A)

    def ping1(self, subject: str) -> float:
        ns, addr = self.subject_ns_addr(subject)
        return self.ping(ns, addr, self.n(30000, 5000))["rtt_us"]

    def ping1_nobp(self, subject: str) -> float:
        """``ping1`` against a daemon at the default ``busy_poll_us = 0`` (one TAP)."""
        if subject == "baseline":
            return self.ping1(subject)
        names = self.unique()
        p, _ = self.start_daemon(READY_CONFIG, names)
        try:
            in_ns(names["ns0"], ["ping", "-6", "-c", "1", "-W", "2", STACK_A])
            return self.ping(names["ns0"], STACK_A, self.n(30000, 5000))["rtt_us"]
        finally:
            self.stop(p)

    def ping32(self, subject: str) -> float:
        ns, addr = self.subject_ns_addr(subject)
        return self.ping(ns, addr, self.n(150000, 20000), "-l", "32")["pps"]

    def bulk_baseline(self) -> float:
        """One-way Gbit/s of IPv6 packets carrying 1400-byte echoes through the bare loop."""
        r = self.ping(self.base_ns, BASE_ADDR, self.n(100000, 10000), "-l", "32", "-s", "1400")
        return r["pps"] * (1400 + 8 + 40) * 8 / 1e9

    def tcp_in(self, subject: str) -> float:
        if subject == "baseline":
            return self.bulk_baseline()
        r = client(self.names["ns0"], "sink", STACK_A, "9", str(self.n(200, 20) * 2**20))
        return float(r["gbit"])

    def tcp_out(self, subject: str) -> float:
        if subject == "baseline":
            return self.bulk_baseline()
        r = client(self.names["ns0"], "source", STACK_A, "19", str(self.n(200, 20) * 2**20))
        return float(r["gbit"])

    def cps(self, subject: str) -> float:
        if subject == "baseline":
            return self.ping32("baseline")
        r = client(self.names["ns0"], "cps", STACK_A, "7", str(self.n(3, 1)), "16")
        if r["errors"]:
            progress(f"cps: {r['errors']} connections failed")
        return float(r["cps"])

    def fwd_ping(self, subject: str) -> float:
        if subject == "baseline":
            return self.ping32("baseline")
        r = self.ping(self.names["ns0"], KERNEL_B, self.n(150000, 20000), "-l", "32")
        return r["pps"] * 2        # request and reply both cross the router

    def fwd_iperf(self, subject: str) -> float:
        if subject == "baseline":
            return self.bulk_baseline()
        ns1 = self.names["ns1"]
        srv = subprocess.Popen(["ip", "netns", "exec", ns1, "iperf3", "-s", "-1", "-B", KERNEL_B],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.owned.procs.append(srv)
        try:
            deadline = time.monotonic() + 10
            while ":5201" not in in_ns(ns1, ["ss", "-Hltn", "sport", "5201"]):
                if time.monotonic() > deadline or srv.poll() is not None:
                    raise RuntimeError("iperf3 server did not start listening")
                select.select([], [], [], 0.02)
            out = in_ns(self.names["ns0"], ["iperf3", "-6", "-J", "-c", KERNEL_B, "-t", str(self.n(3, 1))])
            doc = json.loads(out)
            return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e9
        finally:
            self.stop(srv)

    def idle10k(self, subject: str) -> float:
        if subject == "baseline":
            assert self.baseline is not None
            return rss_mb(self.baseline.pid)
        assert self.daemon is not None
        count = self.n(10000, 1000)
        p = subprocess.Popen(["ip", "netns", "exec", self.names["ns0"], PY, str(Path(__file__).resolve()),
                              "_client", "idle", STACK_A, "7", str(count)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
        self.owned.procs.append(p)
        try:
            got = json.loads(read_line(p, 300, "idle client"))
            if got.get("held") != count:
                raise RuntimeError(f"idle client: {got}")
            mb = rss_mb(self.daemon.pid)
            assert p.stdin is not None
            p.stdin.write(b"\n")
            p.stdin.flush()
            read_line(p, 120, "idle client")
            progress(f"idle10k: {count} connections established in {got['seconds']:.1f} s, RSS {mb:.1f} MB")
            return mb
        finally:
            self.stop(p)


@dataclass
class Spec:
    unit: str
    better: str                 # "higher" / "lower"
    target: float | None
    baseline_is: str            # what the baseline column is
    text: str


SPECS: dict[str, Spec] = {
    "ready": Spec("ms", "lower", 1000, "baseline: start -> TAP up", "start -> ready line"),
    "ready_odad": Spec("ms", "lower", 1000, "baseline: start -> TAP up", "ready, optimistic_dad = true"),
    "ping1": Spec("µs", "lower", None, "baseline ping1", "ping -f RTT (1 in flight)"),
    "ping1_nobp": Spec("µs", "lower", None, "baseline ping1", "ping1, busy_poll_us = 0"),
    "ping32": Spec("pps", "higher", None, "baseline ping32", "ping -f -l 32 echoes/s"),
    "tcp_in": Spec("Gbit/s", "higher", 1.5, "baseline ping -s 1400 one way", "TCP kernel -> discard"),
    "tcp_out": Spec("Gbit/s", "higher", 1.5, "baseline ping -s 1400 one way", "TCP chargen -> kernel"),
    "cps": Spec("conn/s", "higher", 5000, "baseline ping32 pps", "TCP connect+echo+close"),
    "fwd_ping": Spec("pps", "higher", 100000, "baseline ping32 pps", "router: forwarded pkts/s"),
    "fwd_iperf": Spec("Gbit/s", "higher", None, "baseline ping -s 1400 one way", "router: iperf3 TCP"),
    "idle10k": Spec("MB", "lower", 200, "baseline RSS", "RSS, 10k idle conns"),
}
# issue 8's targets with offload = true (--offload): TCP bulk 10 Gbit/s, router iperf3 5 Gbit/s
OFFLOAD_TARGETS = {"tcp_in": 10.0, "tcp_out": 10.0, "fwd_iperf": 5.0}



def summarize(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def fmt_num(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def run_all(b: Bench, only: list[str], runs: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    total = len(only) * runs
    step = 0
    for name in only:
        spec = SPECS[name]
        if b.offload and name in OFFLOAD_TARGETS:
            spec = dataclasses.replace(spec, target=OFFLOAD_TARGETS[name])
        fn: Callable[[str], float] = getattr(b, name)
        if not name.startswith("ready"):
            b.ensure_main()
        ts: list[float] = []
        bs: list[float] = []
        for i in range(runs):
            step += 1
            for subject, acc in (("baseline", bs), ("tapstack", ts)):
                if name == "idle10k" and subject == "baseline" and bs:
                    continue        # the baseline's RSS does not change between runs
                t0 = time.monotonic()
                v = fn(subject)
                acc.append(v)
                progress(f"[{step}/{total}] {name} run {i + 1}/{runs} {subject}: {fmt_num(v)} {spec.unit} "
                         f"({time.monotonic() - t0:.1f} s)")
        t, base = summarize(ts), summarize(bs)
        ratio = t["median"] / base["median"] if base["median"] else None
        ok = None
        if spec.target is not None:
            ok = t["median"] >= spec.target if spec.better == "higher" else t["median"] <= spec.target
        results[name] = {"what": spec.text, "unit": spec.unit, "tapstack": t, "baseline": base,
                         "baseline_is": spec.baseline_is, "ratio": ratio, "target": spec.target, "target_met": ok}
    # the echo targets are ratios to the baseline: RTT at most 2x, echoes/s at least 0.4x
    for name, limit in (("ping1", 2.0), ("ping1_nobp", 2.0), ("ping32", 0.4)):
        r = results.get(name)
        if r is not None:
            r["target"] = limit
            r["target_met"] = r["ratio"] is not None and (r["ratio"] <= limit if name.startswith("ping1")
                                                          else r["ratio"] >= limit)
    return results


def table(results: dict[str, Any]) -> str:
    rows = [("bench", "what", "tapstack median (min-max)", "baseline median (min-max)", "ratio", "target")]
    for name, r in results.items():
        t, b = r["tapstack"], r["baseline"]
        target = ""
        if name in ("ping1", "ping1_nobp", "ping32") and r["target"] is not None:
            target = f"{'<=' if name.startswith('ping1') else '>='}{r['target']}x " \
                     f"{'ok' if r['target_met'] else 'MISSED'}"
        elif r["target"] is not None:
            op = ">=" if SPECS[name].better == "higher" else "<="
            target = f"{op}{fmt_num(r['target'])} {'ok' if r['target_met'] else 'MISSED'}"
        rows.append((name, r["what"],
                     f"{fmt_num(t['median'])} {r['unit']} ({fmt_num(t['min'])}-{fmt_num(t['max'])})",
                     f"{fmt_num(b['median'])} ({fmt_num(b['min'])}-{fmt_num(b['max'])}) [{r['baseline_is']}]",
                     "" if r["ratio"] is None else f"{r['ratio']:.2f}x", target))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}     # other load skews every figure


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_client":
        return client_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    ap.add_argument("--quick", action="store_true", help="1 short run each (smoke test)")
    ap.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("-j", "--json", action="store_true", help="JSON on stdout instead of the table")
    ap.add_argument("--busy-poll-us", type=int, default=50, metavar="N",
                    help="busy_poll_us of the main daemon (default 50; 0 leaves the key out, e.g. for "
                         "--stack-src trees without it); ping1_nobp always runs at 0")
    ap.add_argument("--offload", action="store_true",
                    help="offload = true on the daemon's TAPs (virtio-net header, TSO); default false")
    ap.add_argument("--stack-src", type=Path, metavar="DIR",
                    help="run the daemon from this source tree (PYTHONPATH=DIR python -m stack), e.g. a "
                         "`git worktree` of an older commit with its native module built")
    ns = ap.parse_args(argv)
    only = [x.strip() for x in ns.only.split(",") if x.strip()]
    bad = [x for x in only if x not in BENCHES]
    if bad or not only:
        ap.error(f"unknown benchmark(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(BENCHES)}")
    runs = 1 if ns.quick else ns.runs
    if runs < 1:
        ap.error("--runs must be at least 1")
    if os.geteuid() != 0:
        print("bench: needs root (namespaces, TAPs)", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: Any) -> None:
        raise Stop(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    rc = 0
    with tempfile.TemporaryDirectory(prefix="tapstack-bench-") as tmp:
        b = Bench(ns.quick, Path(tmp), ns.stack_src.resolve() if ns.stack_src else None, ns.offload,
                  ns.busy_poll_us)
        try:
            t0 = time.monotonic()
            load_before = [round(x, 2) for x in os.getloadavg()]
            results = run_all(b, only, runs)
            doc = {"command": " ".join(["scripts/bench.py", *argv]), "machine": machine(), "runs": runs,
                   "stack_src": str(b.stack_src or REPO), "offload": ns.offload, "busy_poll_us": ns.busy_poll_us,
                   "quick": ns.quick, "seconds": round(time.monotonic() - t0, 1), "results": results}
            if ns.json:
                print(json.dumps(doc, indent=2))
            else:
                m = doc["machine"]
                print(f"tapstack bench, {m['date']}, nproc {m['nproc']}, kernel {m['kernel']}, "
                      f"Python {m['python']}, {runs} run(s) each, {doc['seconds']} s, load average "
                      f"{load_before[0]} before / {m['loadavg'][0]} after, daemon from {doc['stack_src']}, "
                      f"offload {'true' if ns.offload else 'false'}, busy_poll_us {ns.busy_poll_us}")
                print(table(results))
        except Stop as e:
            progress(f"{e}: cleaning up")
            rc = 130
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            progress(f"failed: {e}")
            for name in b.owned.names:
                p = Path(tmp) / f"{name}.stderr"
                if p.exists() and p.stat().st_size:
                    progress(f"{name} stderr:\n{p.read_text(errors='replace')[-3000:]}")
            rc = 1
        finally:
            for sig in old:
                signal.signal(sig, signal.SIG_IGN)
            b.owned.cleanup()
            for sig, handler in old.items():
                signal.signal(sig, handler)
    return rc


# -- the load generator, run inside a namespace ----------------------------------------------


def client_main(argv: list[str]) -> int:
    kind, host, port = argv[0], argv[1], int(argv[2])
    out: dict[str, Any]
    if kind == "sink":
        out = c_sink(host, port, int(argv[3]))
    elif kind == "source":
        out = c_source(host, port, int(argv[3]))
    elif kind == "cps":
        out = c_cps(host, port, float(argv[3]), int(argv[4]))
    elif kind == "idle":
        return c_idle(host, port, int(argv[3]))
    else:
        raise SystemExit(f"unknown client {kind}")
    print(json.dumps(out), flush=True)
    return 0


def c_sink(host: str, port: int, nbytes: int) -> dict[str, Any]:
    """Send ``nbytes`` to discard, half-close, wait for its close: payload Gbit/s."""
    chunk = memoryview(bytes(1 << 20))
    s = socket.create_connection((host, port), timeout=60)
    t0 = time.perf_counter()
    left = nbytes
    while left > 0:
        left -= s.send(chunk[:min(left, len(chunk))])
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    dt = time.perf_counter() - t0
    s.close()
    return {"bytes": nbytes, "seconds": dt, "gbit": nbytes * 8 / dt / 1e9}


def c_source(host: str, port: int, nbytes: int) -> dict[str, Any]:
    """Read ``nbytes`` from chargen: payload Gbit/s."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    s = socket.create_connection((host, port), timeout=60)
    t0 = time.perf_counter()
    got = 0
    while got < nbytes:
        n = s.recv_into(view)
        if not n:
            raise SystemExit(f"chargen closed after {got} bytes")
        got += n
    dt = time.perf_counter() - t0
    s.close()
    return {"bytes": got, "seconds": dt, "gbit": got * 8 / dt / 1e9}


def c_cps(host: str, port: int, seconds: float, parallel: int) -> dict[str, Any]:
    """``parallel`` loops of connect, 1-byte echo round trip, close, for ``seconds``."""
    import selectors

    sel = selectors.DefaultSelector()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET

    def start() -> None:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE, 0)

    done = errors = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    for _ in range(parallel):
        start()
    while time.perf_counter() < end:
        for key, _ev in sel.select(1.0):
            s: socket.socket = key.fileobj  # type: ignore[assignment]
            if key.data == 0:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    errors += 1
                    sel.unregister(s)
                    s.close()
                    start()
                    continue
                s.send(b"x")
                sel.modify(s, selectors.EVENT_READ, 1)
            else:
                try:
                    data = s.recv(16)
                except OSError:
                    data = b""
                sel.unregister(s)
                s.close()
                if data == b"x":
                    done += 1
                else:
                    errors += 1
                start()
    dt = time.perf_counter() - t0
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return {"connections": done, "errors": errors, "seconds": dt, "cps": done / dt}


def c_idle(host: str, port: int, count: int) -> int:
    """Open ``count`` connections (one echo round trip each), report, hold until stdin says go."""
    import resource

    want = count + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    socks = []
    t0 = time.perf_counter()
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise SystemExit("echo did not answer")
        socks.append(s)
    print(json.dumps({"held": len(socks), "seconds": time.perf_counter() - t0}), flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    print(json.dumps({"closed": len(socks)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

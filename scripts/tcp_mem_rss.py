#!/usr/bin/env python3
"""TCP memory under peers that send and never read: ``limits.tcp_mem`` at work.

    sudo .venv/bin/python scripts/tcp_mem_rss.py                       # 300 x 4 MB, default limit
    sudo .venv/bin/python scripts/tcp_mem_rss.py --tcp-mem 2147483647  # (almost) no pool bound
    sudo .venv/bin/python scripts/tcp_mem_rss.py -n 50 --bytes 1000000 -j

Starts the daemon (``python -m stack run``, from this tree) with one TAP whose kernel side
is in a namespace of its own, the echo service and ``[limits] tcp_mem``; in that namespace
a client opens ``-n`` connections to echo with a 4 KB SO_RCVBUF and writes ``--bytes`` to
each without ever reading, so the answers pile up in the stack. Once no connection takes
more (or after ``--seconds``) it prints the daemon's RSS (VmRSS) before and under load and
what ``tapstack stats -j`` says (``tcp.mem_used``, ``mem_limit``, ``mem_pressure_trims``,
``drops.tcp_mem_pressure``); then the client closes everything and the pool must go back
to 0. Everything it created (daemon, TAP, namespace) is removed on exit, also on failure.
Needs root and /dev/net/tun.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench import PY, Owned, read_line, stop_proc  # noqa: E402

STACK = "2001:db8:1::2"
CONFIG = """\
name = "{name}"
[[interface]]
name = "{tap}"
mac = "02:00:00:00:00:02"
addresses = ["{stack}/64"]
[interface.peer]
netns = "{ns}"
addresses = ["2001:db8:1::1/64"]
nodad = true
sysctl = {{ accept_ra = 0, router_solicitations = 0 }}
[services]
echo = 7
[limits]
tcp_mem = {tcp_mem}
"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def client(n: int, per: int, seconds: float) -> None:
    """In the namespace: n connections, write ``per`` bytes each, never read; one JSON
    line once stuck, then hold the connections until stdin closes."""
    sel = selectors.DefaultSelector()
    left: dict[socket.socket, int] = {}
    for _ in range(n):
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((STACK, 7))
        s.setblocking(False)
        left[s] = per
        sel.register(s, selectors.EVENT_WRITE)
    block = bytes(65536)
    end = time.monotonic() + seconds
    sent = 0
    while left and time.monotonic() < end:
        ready = sel.select(2.0)          # nothing writable for 2 s: every connection is stuck
        if not ready:
            break
        for key, _ in ready:
            s = key.fileobj              # type: ignore[assignment]
            assert isinstance(s, socket.socket)
            try:
                k = s.send(block[:min(len(block), left[s])])
            except BlockingIOError:
                continue
            sent += k
            left[s] -= k
            if not left[s]:
                sel.unregister(s)
                del left[s]
    print(json.dumps({"sent": sent, "stuck": len(left)}), flush=True)
    sys.stdin.read()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        client(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("-n", "--connections", type=int, default=300)
    ap.add_argument("--bytes", type=int, default=4_000_000, help="written to each connection")
    ap.add_argument("--tcp-mem", type=int, default=None, help="limits.tcp_mem (default: the stack's)")
    ap.add_argument("--seconds", type=float, default=60, help="give up writing after this long")
    ap.add_argument("-j", "--json", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("needs root (TAP, namespaces)")
    from stack.core.stack import Limits
    tcp_mem = a.tcp_mem if a.tcp_mem is not None else Limits().tcp_mem
    tag = str(os.getpid())
    name, tap, ns = f"tmr{tag}", f"tmr{tag}0"[:15], f"tmr-{tag}"
    owned = Owned()
    owned.names.append(name)
    owned.links.append(tap)
    owned.netns.append(ns)
    cfg = Path(f"/tmp/{name}.toml")
    try:
        cfg.write_text(CONFIG.format(name=name, tap=tap, ns=ns, stack=STACK, tcp_mem=tcp_mem))
        daemon = subprocess.Popen([PY, "-m", "stack", "run", "-c", str(cfg), "--log-level", "warning"], cwd=REPO,
                                  stdout=subprocess.PIPE)
        owned.procs.append(daemon)
        read_line(daemon, 60, "tapstack run")
        before = rss_kb(daemon.pid)
        print(f"tcp_mem_rss: {a.connections} connections x {a.bytes} bytes, tcp_mem {tcp_mem} ...",
              file=sys.stderr)
        cl = subprocess.Popen(["ip", "netns", "exec", ns, PY, __file__, "_client", str(a.connections),
                               str(a.bytes), str(a.seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        owned.procs.append(cl)
        wrote = json.loads(read_line(cl, a.seconds + 60, "client"))

        def stats() -> dict[str, Any]:
            r = subprocess.run([PY, "-m", "stack", "--name", name, "stats", "-j"], cwd=REPO, capture_output=True,
                               text=True, check=True, timeout=30)
            return dict(json.loads(r.stdout))

        loaded = stats()
        under = rss_kb(daemon.pid)
        assert cl.stdin is not None
        cl.stdin.close()
        cl.wait(30)
        deadline = time.monotonic() + 30
        while (after := stats())["tcp"]["mem_used"] and time.monotonic() < deadline:
            time.sleep(0.2)             # the peers' FINs and our answers: a few round trips
        out = {"connections": a.connections, "bytes_each": a.bytes, "tcp_mem": tcp_mem,
               "client_sent": wrote["sent"], "rss_kb_before": before, "rss_kb_loaded": under,
               "mem_used_loaded": loaded["tcp"]["mem_used"],
               "mem_pressure_trims": loaded["tcp"].get("mem_pressure_trims", 0),
               "drops_tcp_mem_pressure": loaded["drops"].get("tcp_mem_pressure", 0),
               "mem_used_after_close": after["tcp"]["mem_used"]}
        if a.json:
            print(json.dumps(out))
        else:
            for k, v in out.items():
                print(f"{k:24} {v:,}")
        stop_proc(daemon)
        return 0 if out["mem_used_after_close"] == 0 else 1
    finally:
        owned.cleanup()
        cfg.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())

"""scripts/bench.py as a smoke test: it runs, reports both subjects, cleans up (also on ^C).

Speed is never asserted here; only that the figures exist and nothing is left behind.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.netns

BENCH = REPO / "scripts" / "bench.py"


def leftovers(pid: int) -> list[str]:
    """Namespaces, TAPs and control files named after the bench process ``pid``."""
    tag = pid % 100000
    found = [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(f"tsb-{tag}-")] \
        if os.path.isdir("/run/netns") else []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"link {w.rstrip(':').split('@')[0]}" for w in links.split() if w.startswith(f"tb{tag}")]
    run = Path("/run/tapstack")
    if run.is_dir():
        found += [f"file {p.name}" for p in run.iterdir() if p.name.startswith(f"tsb-{tag}-")]
    return found


def remove_leftovers(pid: int) -> None:
    """After a failure: remove by name what the bench ``pid`` left behind."""
    run = Path("/run/tapstack")
    for item in leftovers(pid):
        kind, name = item.split(" ", 1)
        if kind == "netns":
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        elif kind == "link":
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        elif kind == "file":
            (run / name).unlink(missing_ok=True)


def test_quick_ready_and_ping1_report_both_subjects_and_clean_up() -> None:
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--only", "ready,ping1", "-j"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["runs"] == 1 and set(doc["results"]) == {"ready", "ping1"}
    for name, unit in (("ready", "ms"), ("ping1", "µs")):
        r = doc["results"][name]
        assert r["unit"] == unit and r["tapstack"]["median"] > 0 and r["baseline"]["median"] > 0
        assert r["ratio"] == pytest.approx(r["tapstack"]["median"] / r["baseline"]["median"])
    assert "ping1 run 1/1 tapstack" in p.stderr        # progress on stderr
    assert doc["machine"]["nproc"] == os.cpu_count()


def test_unknown_benchmark_is_a_usage_error() -> None:
    p = subprocess.run([sys.executable, str(BENCH), "--only", "ping1,warp"], capture_output=True, text=True,
                       timeout=30, cwd=REPO)
    assert p.returncode == 2 and "unknown benchmark(s) warp" in p.stderr


def test_interrupt_mid_run_removes_everything() -> None:
    proc = subprocess.Popen([sys.executable, str(BENCH), "--only", "ping1,ping32", "--runs", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        seen = b""
        deadline = time.monotonic() + 30
        while b"ping1 run 1/20 tapstack" not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no progress line within 30 s: {seen.decode(errors='replace')}"
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 4096)
                assert chunk, f"bench exited early ({proc.wait()}): {seen.decode(errors='replace')}"
                seen += chunk
        assert leftovers(proc.pid), "the bench should have namespaces while it runs"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        left = leftovers(proc.pid)
        remove_leftovers(proc.pid)
    assert rc == 130
    assert left == []

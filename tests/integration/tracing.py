"""`tapstack trace` read from a test: a background trace process and its line format.

Shared by the scoped-routing and the router tests; the process is ours and ended by
its PID.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from tests.integration.conftest import REPO, StackProcess


def fields(line: str) -> dict[str, str]:
    """``probe k=v k=v`` -> {"probe": probe, k: v, ...}"""
    probe, *rest = line.split()
    out = {"probe": probe}
    for word in rest:
        k, _, v = word.partition("=")
        out[k] = v
    return out


class Trace:
    """`tapstack trace` of one instance, streaming in the background (the process we
    start, ended by its PID). ``mark()`` pings a fresh 127/8 address and returns every
    line that arrived before that ping's own output line, so a test knows it has seen
    everything that happened before it asked."""

    def __init__(self, sp: StackProcess) -> None:
        self.sp = sp
        self.proc = subprocess.Popen([sys.executable, "-m", "stack", "trace", "--name", sp.name], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buf = b""
        self.pending: list[str] = []
        self.n = 1
        # attached once one of our marks shows up (the first pings may come too early)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.mark(timeout=1.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.close()
                    raise AssertionError(f"tapstack trace never showed a probe line; stderr:\n"
                                         f"{self.sp.stderr()}") from None

    def _lines(self, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return []
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"tapstack trace ended ({self.proc.poll()}): "
                                 f"{self.proc.stderr.read() if self.proc.stderr else ''!r}")
        self.buf += chunk
        *done, self.buf = self.buf.split(b"\n")
        return [d.decode() for d in done]

    def mark(self, timeout: float = 10.0) -> list[str]:
        self.n += 1
        marker = f"127.0.0.{self.n}"
        self.sp.tapstack("ping", "-c", "1", "-W", "2", marker)
        want = f" dst={marker} proto=icmp "
        deadline = time.monotonic() + timeout
        while True:
            for i, line in enumerate(self.pending):
                if line.startswith("ip_output ") and want in line:
                    before, self.pending = self.pending[:i], []
                    marks = tuple(f"=127.0.0.{k} " for k in range(2, self.n + 1))
                    return [b for b in before if not any(m in b for m in marks)]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"marker {marker} not traced")
            self.pending += self._lines(left)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

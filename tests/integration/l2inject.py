"""Raw Ethernet frames onto an interface of a namespace, and what comes back.

Run inside a peer namespace (``ip netns exec NS python -m tests.integration.l2inject IFACE``)
it opens one scapy L2 socket on IFACE, answers ``ready`` and then reads commands, one
per line, from stdin; every command is answered with one line on stdout:

* ``send HEX HEX ...``: send these frames in order (``sendp`` on the one socket);
  answer ``sent N``.
* ``dump``: the frames received on IFACE since the last ``dump`` (a sniffer thread
  records them from start-up), answered as ``frames HEX HEX ...``.

``Injector`` is the test side: it starts the helper in a namespace and talks to it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def serve(iface: str) -> None:
    from scapy.config import conf
    from scapy.packet import Raw
    from scapy.sendrecv import AsyncSniffer

    sock = conf.L2socket(iface=iface)
    got: list[bytes] = []
    lock = threading.Lock()
    started = threading.Event()

    def keep(pkt: object) -> None:
        with lock:
            got.append(bytes(pkt))  # type: ignore[call-overload]

    sniffer = AsyncSniffer(iface=iface, prn=keep, store=False, started_callback=started.set)
    sniffer.start()
    started.wait(10)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "send":
            for hexframe in words[1:]:
                sock.send(Raw(bytes.fromhex(hexframe)))
            out.write(f"sent {len(words) - 1}\n")
        elif words[0] == "dump":
            with lock:
                frames, got[:] = list(got), []
            out.write("frames " + " ".join(f.hex() for f in frames) + "\n")
        else:
            out.write(f"error unknown command {words[0]}\n")
        out.flush()
    sniffer.stop()
    sock.close()


class Injector:
    """A running ``l2inject`` helper in namespace ``ns`` on ``iface``."""

    def __init__(self, ns: str, iface: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.integration.l2inject", iface],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        first = self._line()
        if first != "ready":
            raise AssertionError(f"l2inject did not start: {first!r}")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        result: list[str] = []
        t = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(self.timeout)
        if not result or not result[0]:
            self.close()
            err = self.proc.stderr.read() if self.proc.stderr is not None else ""
            raise AssertionError(f"l2inject gave no answer within {self.timeout}s; stderr:\n{err}")
        return result[0].strip()

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._line()

    def send(self, *frames: bytes) -> None:
        for i in range(0, len(frames), 256):           # keep each command line modest
            chunk = frames[i:i + 256]
            answer = self._ask("send " + " ".join(f.hex() for f in chunk))
            assert answer == f"sent {len(chunk)}", answer

    def dump(self) -> list[bytes]:
        answer = self._ask("dump")
        words = answer.split()
        assert words and words[0] == "frames", answer
        return [bytes.fromhex(w) for w in words[1:]]

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Injector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    serve(sys.argv[1])

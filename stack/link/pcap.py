"""Mirror frames into classic pcap files (LINKTYPE_ETHERNET), one per interface.

The format is libpcap's: a 24-byte global header, then per packet a 16-byte record
header (seconds, sub-seconds, captured length, original length) and the bytes.
Nanosecond files use magic 0xa1b23c4d, microsecond files 0xa1b2c3d4; both are read
by tcpdump, Wireshark and scapy. Each record is flushed at once so a file can be
read while the stack runs. A file that would grow past ``max_bytes`` is rotated:
``tap0.pcap`` becomes ``tap0.pcap.1`` (older ones shift up to ``keep``).
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
SNAPLEN = 262144
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Append frames to ``path``; ``write(frame, ts_ns)`` with a wall-clock stamp."""

    def __init__(self, path: str | Path, *, nanoseconds: bool = True, max_bytes: int = 64 << 20,
                 keep: int = 1, snaplen: int = SNAPLEN) -> None:
        self.path = Path(path)
        self.nanoseconds = nanoseconds
        self.max_bytes = max_bytes
        self.keep = keep
        self.snaplen = snaplen
        self.packets = 0
        self._file: BinaryIO | None = None
        self._size = 0
        self._open()

    def _open(self) -> None:
        f = open(self.path, "wb")  # noqa: SIM115 - kept open for the writer's lifetime
        magic = MAGIC_NS if self.nanoseconds else MAGIC_US
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, self.snaplen, LINKTYPE_ETHERNET))
        f.flush()
        self._file = f
        self._size = 24

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        for i in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            newer = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
            if newer.exists():
                os.replace(newer, older)
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        self._open()

    def write(self, frame: bytes | bytearray | memoryview, ts_ns: int | None = None) -> None:
        if self._file is None:
            return
        if ts_ns is None:
            ts_ns = time.time_ns()
        sec, frac = divmod(ts_ns, 1_000_000_000)
        if not self.nanoseconds:
            frac //= 1000
        caplen = min(len(frame), self.snaplen)
        size = _RECORD.size + caplen
        if self._size + size > self.max_bytes and self._size > 24:
            self._rotate()
        f = self._file
        assert f is not None
        f.write(_RECORD.pack(sec & 0xFFFFFFFF, frac, caplen, len(frame)))
        f.write(frame[:caplen])
        f.flush()
        self._size += size
        self.packets += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class PcapSet:
    """One ``PcapWriter`` per interface name under a directory."""

    def __init__(self, directory: str | Path, **writer_args: object) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._args = writer_args
        self.writers: dict[str, PcapWriter] = {}

    def writer(self, ifname: str) -> PcapWriter:
        w = self.writers.get(ifname)
        if w is None:
            w = self.writers[ifname] = PcapWriter(self.directory / f"{ifname}.pcap", **self._args)  # type: ignore[arg-type]
        return w

    def write(self, ifname: str, frame: bytes, ts_ns: int | None = None) -> None:
        self.writer(ifname).write(frame, ts_ns)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()

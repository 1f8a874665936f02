"""pcap files are readable by scapy (and tcpdump when installed), flushed per packet, rotated."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from stack.link.pcap import PcapSet, PcapWriter


def _frame(seq: int) -> bytes:
    pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IPv6(src="2001:db8:1::1", dst="2001:db8:1::2")
    return bytes(pkt / ICMPv6EchoRequest(id=1, seq=seq))


@pytest.mark.parametrize("ns", [True, False])
def test_scapy_reads_frames_while_open(tmp_path: Path, ns: bool) -> None:
    w = PcapWriter(tmp_path / "tap0.pcap", nanoseconds=ns)
    w.write(_frame(1), ts_ns=1_700_000_000_123_456_789)
    w.write(_frame(2), ts_ns=1_700_000_001_000_000_000)
    pkts = rdpcap(str(tmp_path / "tap0.pcap"))      # not closed yet: flushed per packet
    assert [p[ICMPv6EchoRequest].seq for p in pkts] == [1, 2]
    assert int(pkts[0].time) == 1_700_000_000
    assert bytes(pkts[0]) == _frame(1)
    w.close()


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_tcpdump_reads_it(tmp_path: Path) -> None:
    w = PcapWriter(tmp_path / "tap0.pcap")
    w.write(_frame(7))
    w.close()
    out = subprocess.run(["tcpdump", "-nr", str(tmp_path / "tap0.pcap")], capture_output=True, text=True,
                         check=True).stdout
    assert "2001:db8:1::1 > 2001:db8:1::2: ICMP6, echo request" in out and "seq 7" in out


def test_rotation_keeps_files_bounded(tmp_path: Path) -> None:
    f = _frame(0)
    w = PcapWriter(tmp_path / "tap0.pcap", max_bytes=24 + 3 * (16 + len(f)), keep=1)
    for i in range(8):
        w.write(_frame(i))
    w.close()
    cur = rdpcap(str(tmp_path / "tap0.pcap"))
    old = rdpcap(str(tmp_path / "tap0.pcap.1"))
    assert [p[ICMPv6EchoRequest].seq for p in cur] == [6, 7]
    assert [p[ICMPv6EchoRequest].seq for p in old] == [3, 4, 5]
    assert not (tmp_path / "tap0.pcap.2").exists()


def test_set_makes_one_file_per_interface(tmp_path: Path) -> None:
    s = PcapSet(tmp_path / "pc")
    s.write("tap0", _frame(1))
    s.write("lo", _frame(2))
    s.close()
    assert sorted(p.name for p in (tmp_path / "pc").iterdir()) == ["lo.pcap", "tap0.pcap"]

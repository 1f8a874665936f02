"""Software GSO toward a kernel peer on a link without offloads (``offload = false``).

With ``gso = true`` (the default) core's TCP hands the plain TAP 64 KB segments and the
link cuts them in C (``stack.link.gso``) into frames the kernel takes as they come: echo
must return every byte intact (sha256) over IPv6 and IPv4, and ``link_tx_gso_split``
says the cut happened. ``gso = false`` keeps core at MSS-sized segments (the counter
stays 0). With ``--pcap`` the cut happens in Python before the capture, so the pcap
file holds only frames the wire can carry. The pure build has no C segmenter: there
``gso`` changes nothing and the counter stays 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stack.link import gso
from tests.integration.conftest import ONE_TAP, Factory, StackProcess
from tests.integration.test_offload import BULK

pytestmark = [pytest.mark.netns]

SERVICES = """
[services]
echo = 7
"""


def config(gso_on: bool) -> str:
    cfg = ONE_TAP.replace('addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]\n',
                          'addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]\n'
                          f"offload = false\ngso = {'true' if gso_on else 'false'}\n", 1)
    assert "gso =" in cfg
    return cfg + SERVICES


def echo_intact(sp: StackProcess, mib_v6: int, mib_v4: int) -> None:
    for host, mib in (("2001:db8:1::2", mib_v6), ("192.0.2.2", mib_v4)):
        n = mib << 20
        r = sp.run_in_ns([sys.executable, "-c", BULK, host, str(n)], timeout=300)
        total, same, seconds = r.stdout.split()
        assert int(total) == n and same == "True", r.stdout + r.stderr
        print(f"{host}: {mib} MiB echoed in {seconds}s")


def link_and_drops(sp: StackProcess) -> tuple[dict[str, int], dict[str, int]]:
    stats = json.loads(sp.tapstack("stats", "-j").stdout)
    return stats["interfaces"][sp["tap0"]], stats["drops"]


@pytest.mark.parametrize("gso_on", [True, False], ids=["gso", "nogso"])
def test_plain_link_echo_cut_in_c(tapstack_factory: Factory, gso_on: bool) -> None:
    sp = tapstack_factory(config(gso_on))
    echo_intact(sp, 16, 4)
    link, drops = link_and_drops(sp)
    assert link["link_offload"] == 0 and link["link_tx_gso"] == 0, link
    if gso_on and gso.available():
        assert link["link_tx_gso_split"] > 0, link
        # every GSO frame became several frames on the wire
        assert link["link_tx_frames"] > 2 * link["link_tx_gso_split"], link
    else:
        assert link["link_tx_gso_split"] == 0, link
    assert link["link_tx_gso_bad"] == 0 and link["link_tx_errors"] == 0, link
    assert not drops.get("bad_checksum") and not any(k.startswith("offload_") and v for k, v in drops.items()), drops


def test_pcap_shows_wire_frames(tapstack_factory: Factory, tmp_path: Path) -> None:
    from scapy.layers.inet import TCP  # type: ignore[import-untyped]
    from scapy.layers.inet6 import IPv6  # type: ignore[import-untyped]
    from scapy.utils import rdpcap  # type: ignore[import-untyped]

    pcap_dir = tmp_path / "pcap"
    sp = tapstack_factory(config(True), "--pcap", str(pcap_dir))
    echo_intact(sp, 2, 1)
    link, _ = link_and_drops(sp)
    if gso.available():
        assert link["link_tx_gso_split"] > 0, link      # core sent GSO frames; cut before the capture
    sp.stop()
    pkts = rdpcap(str(pcap_dir / f"{sp['tap0']}.pcap"))
    ours = [p for p in pkts if IPv6 in p and TCP in p and p[IPv6].src == "2001:db8:1::2"]
    assert sum(len(p[TCP].payload) for p in ours) >= 2 << 20, "the echoed bytes are in the capture"
    assert max(len(p) for p in pkts) <= 1514, "a frame larger than the MTU in the pcap"

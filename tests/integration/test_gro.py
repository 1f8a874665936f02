"""GRO in the fast path against a kernel peer on a link without offloads.

The kernel sends MSS-sized frames on a plain TAP; with ``gro = true`` (the default,
native build, fast path on) the fast path merges in-order segments of a flow before
core sees them and supersedes pure ACKs by later ones. Echo must return every byte
intact (sha256) over IPv6 and IPv4 (the merged packets' partial checksums, the
window, the ACK numbers all have to be right for that), the link counters must show
merging, and core's interface counters still count every frame that came in.
``gro = false`` merges nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from stack.link import fastpath
from tests.integration.conftest import ONE_TAP, Factory, StackProcess
from tests.integration.test_gso import echo_intact

pytestmark = [pytest.mark.netns]


def config(gro_on: bool) -> str:
    cfg = ONE_TAP.replace('addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]\n',
                          'addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]\n'
                          f"offload = false\ngro = {'true' if gro_on else 'false'}\n", 1)
    assert "gro =" in cfg
    return cfg + "\n[services]\necho = 7\n"


def stats(sp: StackProcess) -> Any:
    return json.loads(sp.tapstack("stats", "-j").stdout)


@pytest.mark.parametrize("gro_on", [True, False], ids=["gro", "nogro"])
def test_plain_link_echo_with_gro(tapstack_factory: Factory, gro_on: bool) -> None:
    sp = tapstack_factory(config(gro_on))
    echo_intact(sp, 16, 4)
    st = stats(sp)
    link = st["interfaces"][sp["tap0"]]
    merged = link.get("link_fastpath_gro_packets", 0)
    if gro_on and fastpath.available():
        assert merged > 0 and link["link_fastpath_gro_segs"] > merged, link
        assert link["link_fastpath_acks_merged"] >= 0
        # every frame read is counted once: by core (merged packet) or as merged away
        assert link["link_rx_frames"] >= link["rx_packets"] - 1, link
    else:
        assert merged == 0 and link.get("link_fastpath_gro_segs", 0) == 0, link
    assert not st["drops"].get("bad_checksum") and not any(
        k.startswith("offload_") and v for k, v in st["drops"].items()), st["drops"]

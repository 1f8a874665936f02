"""The facade itself: import path, lifecycle, address forms, callback failures."""

from __future__ import annotations

import asyncio
import errno

import pytest

import stack
from stack.api.facade import Stack
from stack.wire.addr import ip4, ip6
from tests.api.conftest import A_GA, A_LL, A_TOML, B_GA, pair, virtual


def test_top_level_import_and_lifecycle_errors() -> None:
    assert stack.Stack is Stack
    st = stack.Stack.for_testing(A_TOML)
    assert "in-memory" in repr(st) and "stopped" in repr(st)
    with pytest.raises(RuntimeError, match="not running"):
        _ = st.hub
    with pytest.raises(KeyError):
        st.link("tap9")
    assert st.link("tap0").name == "tap0"


@virtual
async def test_address_forms() -> None:
    async with pair() as (a, _b):
        hub = a.hub
        assert hub.parse_addr("2001:db8:1::1") == (ip6("2001:db8:1::1"), 0)
        assert hub.parse_addr("[2001:db8:1::1]") == (ip6("2001:db8:1::1"), 0)
        assert hub.parse_addr("::ffff:192.0.2.1") == (ip4("192.0.2.1"), 0)
        assert hub.parse_addr("fe80::1%tap0") == (ip6("fe80::1"), 2)
        assert hub.parse_addr("fe80::1%2") == (ip6("fe80::1"), 2)
        assert hub.parse_addr("2001:db8::1%tap0") == (ip6("2001:db8::1"), 0)     # zone ignored
        assert hub.parse_sockaddr(("fe80::1", 7, 0, 2)) == (ip6("fe80::1"), 7, 2)
        for bad, err in (("fe80::1%9", errno.ENODEV), ("fe80::1%", errno.EINVAL), ("1.2.3", errno.EINVAL)):
            with pytest.raises(OSError) as e:
                hub.parse_addr(bad)
            assert e.value.errno == err, bad
        assert hub.sockaddr(ip6("fe80::1"), 7, 2) == ("fe80::1%tap0", 7, 0, 2)
        assert hub.sockaddr(ip4("192.0.2.1"), 7) == ("192.0.2.1", 7)
        assert a.addresses("tap0")[:2] == [f"{A_LL}%tap0", A_GA]
        assert a.link_local("tap0") == f"{A_LL}%tap0"


@virtual
async def test_a_failing_protocol_callback_resets_only_its_connection() -> None:
    class Boom(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("bug in user code")

    async with pair() as (a, b):
        server = await b.create_server(Boom, 6000)
        reader, writer = await a.open_connection(B_GA, 6000)
        writer.write(b"trigger")
        with pytest.raises(ConnectionResetError):
            await reader.read()
        server.close()
        # the stack is fine afterwards
        r2, w2 = await a.open_connection(A_GA, 7)
        w2.write(b"still fine")
        w2.write_eof()
        assert await r2.read() == b"still fine"
        w2.close()


def test_pcap_of_a_tap_less_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from scapy.layers.inet6 import ICMPv6EchoRequest  # type: ignore[import-untyped]
    from scapy.layers.l2 import Ether  # type: ignore[import-untyped]  # noqa: F401  (LINKTYPE_ETHERNET)
    from scapy.utils import rdpcap  # type: ignore[import-untyped]

    from stack.api.testing import run_virtual
    from tests.api.conftest import B_TOML

    async def main() -> None:
        a = Stack(A_TOML, links=False, seed=1, pcap_dir=tmp_path)
        b = Stack.for_testing(B_TOML, seed=2)
        Stack.wire(a, b)
        async with a, b:
            await b.ping(A_GA)
    run_virtual(main)
    pkts = rdpcap(str(tmp_path / "tap0.pcap"))
    assert any(p.haslayer(ICMPv6EchoRequest) for p in pkts)


@virtual
async def test_frames_in_frames_out() -> None:
    """A TAP-less stack with nothing on its link: inject a frame, read what comes out."""
    from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
    from scapy.layers.l2 import Ether

    from stack.wire.frame import parse_frame

    async with Stack.for_testing(A_TOML, services=False) as a:
        link = a.link("tap0")
        out: asyncio.Queue[bytes] = asyncio.Queue()
        link.on_tx = out.put_nowait
        peer_mac, a_mac = "02:00:00:00:00:0b", "02:00:00:00:00:0a"
        req = Ether(src=peer_mac, dst=a_mac) / IPv6(src=B_GA, dst=A_GA) / ICMPv6EchoRequest(id=7, seq=1)
        link.inject(bytes(req))
        while (f := parse_frame(await out.get())).icmp_type != 135:    # A resolves B first
            pass
        na = (Ether(src=peer_mac, dst=a_mac) / IPv6(src=B_GA, dst=A_GA, hlim=255)
              / ICMPv6ND_NA(tgt=B_GA, R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=peer_mac))
        link.inject(bytes(na))
        while (f := parse_frame(await out.get())).icmp_type != 129:
            pass
        assert (f.src, f.dst, f.eth_dst) == (ip6(A_GA), ip6(B_GA), bytes.fromhex("02000000000b"))


@virtual
async def test_closing_the_stack_wakes_waiting_sockets() -> None:
    async with pair() as (a, b):
        server_side: asyncio.Future[asyncio.StreamReader] = asyncio.get_running_loop().create_future()

        async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            server_side.set_result(reader)
            await reader.read()

        await a.start_server(keep, 6001)
        reader, _writer = await b.open_connection(A_GA, 6001)
        peer_reader = await server_side
        udp = await b.udp_socket(local_port=6002)
        waiting = [asyncio.ensure_future(reader.read()), asyncio.ensure_future(udp.recvfrom())]
        await asyncio.sleep(0)
        await b.close()
        for t in waiting:
            with pytest.raises(OSError) as e:
                await t
            assert e.value.errno == errno.ENETDOWN
        with pytest.raises(ConnectionResetError):     # b's RST reached a
            await peer_reader.read()

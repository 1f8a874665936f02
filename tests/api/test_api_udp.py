"""UDP through the facade: datagram endpoints, UdpSocket, errors, zones."""

from __future__ import annotations

import asyncio
import errno

import pytest

from stack.api.facade import Stack
from tests.api.conftest import A_GA, A_LL, A_LO4, A_V4, B_GA, B_LL, pair, virtual


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, object]] = asyncio.Queue()
        self.errors: list[Exception] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.got.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


@virtual
async def test_udp_echo_round_trip_both_families() -> None:
    async with pair() as (a, b):
        for st, dst in ((b, A_GA), (b, A_V4), (a, A_LO4), (a, "::1"), (a, A_GA)):
            sock = await st.udp_socket(remote_addr=(dst, 7))
            sock.send(b"ping " + dst.encode())
            data, addr = await sock.recvfrom()
            assert data == b"ping " + dst.encode()
            assert addr[0] == dst and addr[1] == 7
            sock.close()


@virtual
async def test_datagram_endpoint_server_and_client() -> None:
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.transport.sendto(data.upper(), addr)  # type: ignore[attr-defined]

    async with pair() as (a, b):
        server, _ = await a.create_datagram_endpoint(Echo, local_port=5353)
        assert server.get_extra_info("sockname")[1] == 5353
        client, proto = await b.create_datagram_endpoint(Collect, remote_addr=(A_GA, 5353))
        assert isinstance(proto, Collect)
        client.sendto(b"hello")
        data, addr = await proto.got.get()
        assert data == b"HELLO" and addr == (A_GA, 5353, 0, 0)
        assert client.get_extra_info("peername") == (A_GA, 5353, 0, 0)
        local = client.get_extra_info("sockname")
        assert local[1] > 0
        client.close()
        await proto.lost.wait()
        server.close()


@virtual
async def test_port_unreachable_is_econnrefused() -> None:
    async with pair() as (a, _b):
        sock = await a.udp_socket(remote_addr=(B_GA, 7))      # B runs no services
        sock.send(b"x")
        with pytest.raises(ConnectionRefusedError) as e:
            await sock.recvfrom()
        assert e.value.errno == errno.ECONNREFUSED
        sock.close()


@virtual
async def test_link_local_with_and_without_zone() -> None:
    async with pair() as (_a, b):
        # one interface: an unzoned link-local destination defaults to it
        sock = await b.udp_socket(remote_addr=(A_LL, 7))
        sock.send(b"ll")
        data, addr = await sock.recvfrom()
        assert data == b"ll" and addr == (f"{A_LL}%tap0", 7, 0, 2)
        sock.close()
        sock = await b.udp_socket(remote_addr=(f"{A_LL}%tap0", 7))
        sock.send(b"zoned")
        assert (await sock.recvfrom())[0] == b"zoned"
        sock.close()
        with pytest.raises(OSError) as e:
            await b.udp_socket(remote_addr=(f"{A_LL}%nope0", 7))
        assert e.value.errno == errno.ENODEV
        assert b.link_local("tap0") == f"{B_LL}%tap0"


TWO_IFACES = """
name = "c"
[[interface]]
name = "tap0"
mac = "02:00:00:00:00:0c"
addresses = ["2001:db8:1::3/64"]
[[interface]]
name = "tap1"
mac = "02:00:00:00:01:0c"
addresses = ["2001:db8:2::3/64"]
"""


@virtual
async def test_unzoned_link_local_is_einval_with_two_interfaces() -> None:
    async with Stack.for_testing(TWO_IFACES, services=False) as c:
        with pytest.raises(OSError) as e:
            await c.udp_socket(remote_addr=("fe80::1", 7))
        assert e.value.errno == errno.EINVAL
        assert "%IFNAME" in e.value.strerror and "tap0, tap1" in e.value.strerror
        with pytest.raises(OSError) as e:
            await c.ping("fe80::1")
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            await c.open_connection("fe80::1", 7)
        assert e.value.errno == errno.EINVAL
        sock = await c.udp_socket(remote_addr=("fe80::1%tap1", 7))     # zoned: fine
        sock.close()


@virtual
async def test_bad_addresses_are_clear_errors() -> None:
    async with pair() as (a, b):
        for bad in ("example.org", "2001:db8::g", ""):
            with pytest.raises(OSError) as e:
                await b.udp_socket(remote_addr=(bad, 7))
            assert e.value.errno == errno.EINVAL and "not an IP address" in e.value.strerror
        with pytest.raises(OSError) as e:
            await b.udp_socket(remote_addr=(A_GA, 70000))
        assert e.value.errno == errno.EINVAL
        s1 = await a.udp_socket(local_port=4000)
        with pytest.raises(OSError) as e:
            await a.udp_socket(local_port=4000)
        assert e.value.errno == errno.EADDRINUSE
        s1.close()
        with pytest.raises(OSError) as e:
            await b.udp_socket(local_addr=A_GA)             # not b's address
        assert e.value.errno == errno.EADDRNOTAVAIL


@virtual
async def test_no_route_is_enetunreach_through_error_received() -> None:
    async with pair() as (_a, b):
        t, proto = await b.create_datagram_endpoint(Collect)
        t.sendto(b"x", ("2001:db8:99::1", 7))
        assert isinstance(proto.errors[0], OSError) and proto.errors[0].errno == errno.ENETUNREACH
        with pytest.raises(OSError):
            t.sendto(b"x", ("nonsense", 7))
        t.close()


@virtual
async def test_datagram_over_the_ip_maximum_is_emsgsize_and_the_largest_goes_through() -> None:
    # Linux: 65507 bytes for UDP over IPv4, 65527 over IPv6; beyond, "Message too long"
    async with pair() as (_a, b):
        for dst, largest in ((A_V4, 65507), (A_GA, 65527)):
            sock = await b.udp_socket(remote_addr=(dst, 7))      # a's echo service
            sock.send(b"warm")                      # resolve a first: 45 fragments overflow the ND queue
            assert (await sock.recvfrom())[0] == b"warm"
            with pytest.raises(OSError) as e:
                sock.send(bytes(largest + 1))
            assert (e.value.errno, e.value.strerror) == (errno.EMSGSIZE, "Message too long")
            sock.send(b"e" * largest)
            data, _addr = await sock.recvfrom()
            assert data == b"e" * largest
            sock.close()
        t, proto = await b.create_datagram_endpoint(Collect)
        t.sendto(bytes(65508), (A_V4, 7))                     # a transport reports it as error_received
        [err] = proto.errors
        assert isinstance(err, OSError) and err.errno == errno.EMSGSIZE
        t.close()

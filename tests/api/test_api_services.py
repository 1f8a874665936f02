"""Built-in services (echo, discard, daytime, chargen on TCP and UDP) and the
[[forward]] relay to a real host socket."""

from __future__ import annotations

import asyncio
import re
import socket

from stack.api.services import CHARGEN_CYCLE, chargen_line, daytime_text
from stack.control.config import ForwardConfig
from tests.api.conftest import A_GA, A_LL, A_V4, pair, virtual

DAYTIME = re.compile(rb"^[A-Z][a-z]+day, [A-Z][a-z]+ \d\d, \d{4} \d\d:\d\d:\d\d-UTC\r\n$")


def test_chargen_pattern_is_rfc864() -> None:
    first = chargen_line(0)
    assert first == b' !"#$%&\'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n'
    assert chargen_line(1)[:3] == b'!"#' and len(chargen_line(94)) == 74
    assert chargen_line(95) == first and len(CHARGEN_CYCLE) == 95 * 74
    assert DAYTIME.match(daytime_text(0)) and daytime_text(0).startswith(b"Thursday, January 01, 1970")


@virtual
async def test_tcp_discard_daytime_chargen() -> None:
    async with pair() as (_a, b):
        reader, writer = await b.open_connection(A_GA, 9)
        writer.write(b"x" * 100_000)
        writer.write_eof()
        assert await reader.read() == b""              # nothing comes back, then the FIN
        writer.close()

        for host in (A_GA, A_V4, A_LL):
            reader, writer = await b.open_connection(host, 13)
            line = await reader.read()
            assert DAYTIME.match(line), line
            writer.close()

        reader, writer = await b.open_connection(A_GA, 19)
        data = await reader.readexactly(200 * 74)
        assert data == (CHARGEN_CYCLE * 3)[:200 * 74]
        writer.close()
        await writer.wait_closed()


@virtual
async def test_udp_services() -> None:
    async with pair() as (_a, b):
        s = await b.udp_socket(remote_addr=(A_GA, 13))
        s.send(b"")
        assert DAYTIME.match(await s.recv())
        s.close()
        s = await b.udp_socket(remote_addr=(A_V4, 19))
        for _ in range(5):
            s.send(b"?")
            data = await s.recv()
            assert len(data) <= 512 and CHARGEN_CYCLE.startswith(data)
        s.close()
        s = await b.udp_socket(remote_addr=(A_GA, 9))
        s.send(b"gone")
        e = await b.udp_socket(remote_addr=(A_GA, 7))
        e.send(b"after discard")
        assert await e.recv() == b"after discard"
        assert s._protocol.queue == type(s._protocol.queue)()     # discard answered nothing
        s.close()
        e.close()


@virtual
async def test_udp_answer_comes_from_the_address_asked() -> None:
    """A wildcard service answers a request to a loopback address from that address,
    so a connected client (nc -u) takes it."""
    async with pair() as (a, _b):
        s = await a.udp_socket(remote_addr=("2001:db8:ff::1", 7))
        s.send(b"lo")
        data, addr = await s.recvfrom()
        assert data == b"lo" and addr[0] == "2001:db8:ff::1"
        s.close()


async def _host_server(handler):  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_forward_relays_both_ways_with_half_close() -> None:
    async def main() -> None:
        events: list[str] = []

        async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"SSH-2.0-banner\r\n")      # the host side talks first
            await writer.drain()
            data = await reader.read()                # until the relayed FIN
            events.append("host saw eof")
            writer.write(b"you said " + data)         # the other direction still works
            await writer.drain()
            writer.close()

        server, port = await _host_server(host)
        fwd = (ForwardConfig(2222, f"127.0.0.1:{port}", "127.0.0.1", port),)
        async with pair(forwards=fwd) as (a, b):
            reader, writer = await b.open_connection(A_GA, 2222)
            assert await reader.readline() == b"SSH-2.0-banner\r\n"
            writer.write(b"x" * 300_000)
            writer.write_eof()
            data = await reader.read()
            assert data == b"you said " + b"x" * 300_000
            assert events == ["host saw eof"]
            writer.close()
            forward = a.services.forwards[0]
            assert forward.total == 1
        server.close()
        await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_forward_host_half_close_and_refused_target() -> None:
    async def main() -> None:
        async def host(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"bye early")
            writer.write_eof()                        # host closes its sending side first
            data = await reader.read()
            writer.close()
            got.set_result(data)

        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        server, port = await _host_server(host)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
        probe.close()                                     # nobody listens there now
        fwd = (ForwardConfig(2222, f"127.0.0.1:{port}", "127.0.0.1", port),
               ForwardConfig(2223, f"127.0.0.1:{closed_port}", "127.0.0.1", closed_port))
        async with pair(forwards=fwd) as (_a, b):
            reader, writer = await b.open_connection(A_GA, 2222)
            assert await reader.read() == b"bye early"    # EOF relayed
            writer.write(b"still talking")                # our direction is still open
            writer.write_eof()
            assert await got == b"still talking"
            writer.close()
            reader, writer = await b.open_connection(A_GA, 2223)
            try:
                data = await reader.read()
            except ConnectionResetError:
                data = b""
            assert data == b""                            # reset: the host refused
            writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 60))

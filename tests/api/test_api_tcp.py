"""TCP through the facade: asyncio streams over core connections."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import random
from array import array

import pytest

from stack.wire.addr import ip6
from tests.api.conftest import A_GA, A_LL, A_LO4, A_LO6, A_V4, B_GA, pair, virtual


async def echo_once(st, host: str, port: int, payload: bytes) -> bytes:  # type: ignore[no-untyped-def]
    reader, writer = await st.open_connection(host, port)
    writer.write(payload)
    writer.write_eof()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


@virtual
async def test_echo_service_over_every_kind_of_address() -> None:
    async with pair() as (a, b):
        for st, host in ((b, A_GA), (b, A_V4), (b, A_LL), (b, f"{A_LL}%tap0"),
                         (a, A_GA), (a, f"{A_LL}%tap0"), (a, "::1"), (a, A_LO6), (a, A_V4)):
            assert await echo_once(st, host, 7, f"hi {host}\n".encode()) == f"hi {host}\n".encode(), host


@virtual
async def test_ipv4_loopback_echo() -> None:
    async with pair() as (a, _b):
        for host in ("127.0.0.1", A_LO4):
            assert await echo_once(a, host, 7, b"v4 lo\n") == b"v4 lo\n"


@virtual
async def test_start_server_handler_sees_addresses_and_half_close() -> None:
    seen: dict[str, object] = {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["peer"] = writer.get_extra_info("peername")
        seen["sock"] = writer.get_extra_info("sockname")
        data = await reader.read()               # until the client's FIN
        writer.write(b"got " + data)             # still allowed: only one direction is closed
        await writer.drain()
        writer.close()

    async with pair() as (a, b):
        server = await b.start_server(handler, 8080)
        reader, writer = await a.open_connection(B_GA, 8080)
        assert writer.get_extra_info("peername") == (B_GA, 8080, 0, 0)
        writer.write(b"abc")
        writer.write_eof()
        assert await reader.read() == b"got abc"
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        assert seen["sock"] == (B_GA, 8080, 0, 0)
        assert seen["peer"][0] == A_GA  # type: ignore[index]
        server.close()
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await a.open_connection(B_GA, 8080)


@virtual
async def test_connect_errors_carry_errno() -> None:
    async with pair() as (a, _b):
        with pytest.raises(ConnectionRefusedError) as e:
            await a.open_connection(B_GA, 9999)
        assert e.value.errno == errno.ECONNREFUSED and e.value.strerror == "Connection refused"
        with pytest.raises(OSError) as e:
            await a.open_connection("2001:db8:1::99", 7)          # on-link, nobody answers ND
        assert e.value.errno == errno.EHOSTUNREACH and e.value.strerror == "No route to host"
        with pytest.raises(OSError) as e:
            await a.open_connection("2001:db8:99::1", 7)
        assert e.value.errno == errno.ENETUNREACH
        with pytest.raises(TimeoutError) as t:
            await a.open_connection("2001:db8:1::98", 7, timeout=0.5)
        assert t.value.errno == errno.ETIMEDOUT
        assert not [c for c in a.core.tcp.connections.values() if c.remote == ip6("2001:db8:1::98")]


@virtual
async def test_backpressure_drain_blocks_until_the_peer_reads() -> None:
    release = asyncio.Event()
    received = hashlib.sha256()
    total = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal total
        await release.wait()
        while data := await reader.read(65536):
            received.update(data)
            total += len(data)
        writer.close()

    async with pair() as (a, b):
        await b.start_server(slow, 5001)
        _reader, writer = await a.open_connection(B_GA, 5001)
        chunk = random.Random(1).randbytes(64 * 1024)
        sent = hashlib.sha256()
        n = 0
        while True:
            writer.write(chunk)
            sent.update(chunk)
            n += len(chunk)
            drain = asyncio.ensure_future(writer.drain())
            done, _ = await asyncio.wait({drain}, timeout=2.0)     # virtual seconds
            if not done:
                break                                              # the peer's window is full
            assert n < 16 << 20, "drain never blocked"
        transport = writer.transport
        assert transport.get_write_buffer_size() > 64 * 1024
        conn = transport.get_extra_info("connection")
        assert conn.send_queue > 0
        release.set()
        await drain
        writer.close()
        await writer.wait_closed()
        while total < n:
            await asyncio.sleep(0.01)
        assert total == n and received.digest() == sent.digest()


@virtual
async def test_close_right_after_write_keeps_the_tail() -> None:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.read())
        writer.close()

    async with pair() as (a, b):
        await b.start_server(sink, 5002)
        payload = random.Random(2).randbytes(3 << 20)
        _reader, writer = await a.open_connection(B_GA, 5002)
        writer.write(payload)          # far more than core's send buffer takes at once
        writer.close()                 # no drain: the FIN must still come after the last byte
        data = await got
        assert len(data) == len(payload) and data == payload


@virtual
async def test_peer_reset_reaches_the_reader() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)
        writer.transport.abort()

    async with pair() as (a, b):
        await b.start_server(rude, 5003)
        reader, writer = await a.open_connection(B_GA, 5003)
        writer.write(b"x")
        with pytest.raises(ConnectionResetError):
            await reader.read()


@virtual
async def test_hundred_parallel_echo_sessions() -> None:
    async with pair() as (a, b):
        async def one(i: int) -> bool:
            payload = random.Random(i).randbytes(1000 + 97 * i)
            return await echo_once(b, A_GA if i % 2 else A_V4, 7, payload) == payload
        results = await asyncio.gather(*(one(i) for i in range(100)))
        assert all(results)
        assert a.services.servers[0].accepted >= 50


@virtual
async def test_bulk_echo_over_a_lossy_wire() -> None:
    async with pair(loss=0.05) as (a, b):
        payload = random.Random(5).randbytes(512 * 1024)
        reader, writer = await b.open_connection(A_GA, 7)

        async def send() -> None:
            for i in range(0, len(payload), 50_000):
                writer.write(payload[i:i + 50_000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.ensure_future(send())
        data = await reader.read()
        await sender
        assert data == payload
        stats = a.core.stats.snapshot()["tcp"]
        assert stats["retrans_segs"] > 0 or b.core.stats.snapshot()["tcp"]["retrans_segs"] > 0


@virtual
async def test_create_connection_with_protocol_and_local_addr() -> None:
    class Proto(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = b""
            self.done = asyncio.get_running_loop().create_future()

        def data_received(self, data: bytes) -> None:
            self.data += data

        def eof_received(self) -> bool:
            self.done.set_result(self.data)
            return False                   # close on EOF

    async with pair() as (_a, b):
        transport, proto = await b.create_connection(Proto, A_GA, 7, local_addr=(B_GA, 40000))
        assert transport.get_extra_info("sockname")[:2] == (B_GA, 40000)
        transport.write(b"proto")
        transport.write_eof()
        assert await proto.done == b"proto"     # type: ignore[attr-defined]
        assert transport.is_closing()
        _r, w = await b.open_connection(A_GA, 7, local_addr=("::", 40001))
        assert w.get_extra_info("sockname")[1] == 40001
        w.close()


@virtual
async def test_writes_that_wait_in_the_transport_arrive_intact_and_in_order() -> None:
    """Writes beyond core's send buffer wait in the transport: large ``bytes`` by
    reference, anything else copied at write time (a bytearray changed afterwards does
    not change what is sent)."""
    rng = random.Random(11)
    big = [rng.randbytes(rng.choice((5000, 70_000, 300_000))) for _ in range(12)]
    async with pair() as (a, _b):
        reader, writer = await a.open_connection(A_GA, 7)
        expect = bytearray()
        for i, blob in enumerate(big):
            writer.write(blob)
            expect += blob
            small = bytearray(rng.randbytes(1 + i * 37))
            writer.write(small)
            expect += small
            small[:] = b"x" * len(small)          # after write(): must not show
            writer.write(memoryview(blob)[i:i + 6000])
            expect += blob[i:i + 6000]
            words = array("I", range(i * 1000, i * 1000 + 2000))    # a view of 4-byte items
            writer.write(memoryview(words))
            expect += words.tobytes()
        writer.write_eof()
        got = await reader.read()
        assert len(got) == len(expect) and hashlib.sha256(got).digest() == hashlib.sha256(expect).digest()
        writer.close()
        await writer.wait_closed()

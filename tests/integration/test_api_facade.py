"""The Python API on real TAPs: ``async with Stack(config)`` creates the TAP and its
kernel side (in a throwaway namespace), serves, pings and connects, and removes it all."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from stack import Stack
from stack.control.config import parse_config
from tests.integration.conftest import ONE_TAP, link_exists, netns_exists, unique_names

pytestmark = [pytest.mark.netns]


def test_facade_on_a_tap() -> None:
    names = unique_names()
    cfg = parse_config(ONE_TAP.format(**names) + "\n[services]\necho = 7\n", "facade.toml")

    async def main() -> None:
        async with Stack(cfg) as st:
            assert link_exists(names["tap0"], names["ns0"])
            assert await st.ping("2001:db8:1::1", timeout=5) > 0
            assert await st.ping("2001:db8:1::2", timeout=5) >= 0
            hits: list[bytes] = []

            async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                hits.append(await reader.read())
                writer.write(b"bye\n")
                writer.close()

            server = await st.start_server(handler, 8080)
            nc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", names["ns0"], "timeout", "10", "nc", "-N", "2001:db8:1::2", "8080",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            out, _ = await nc.communicate(b"from the kernel\n")
            assert out == b"bye\n" and hits == [b"from the kernel\n"]
            server.close()
            listener = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", names["ns0"], sys.executable, "-c",
                "import socket; s = socket.create_server(('2001:db8:1::1', 5555), family=socket.AF_INET6); "
                "print('up', flush=True); c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()",
                stdout=subprocess.PIPE)
            assert listener.stdout is not None
            assert await listener.stdout.readline() == b"up\n"
            reader, writer = await st.open_connection("2001:db8:1::1", 5555)
            writer.write(b"to the kernel")
            assert await reader.read() == b"TO THE KERNEL"
            writer.close()
            await listener.wait()
        assert not link_exists(names["tap0"]) and not netns_exists(names["ns0"])

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        if netns_exists(names["ns0"]):
            subprocess.run(["ip", "netns", "del", names["ns0"]], capture_output=True)

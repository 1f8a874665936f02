"""The control protocol end to end over a temporary unix socket, with a real core Stack
(built from a config, no TAPs: frames for tap0 are counted and dropped by the driver)."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.control import commands  # noqa: F401  (registers the built-in commands)
from stack.control.cli import main
from stack.control.client import ControlClient, ControlError
from stack.control.config import parse_config
from stack.control.server import CommandError, Context, ControlServer, Request
from stack.runtime.build import build_stack
from stack.runtime.driver import Driver, MonotonicClock

CONFIG = """
name = "unit"
[loopback]
addresses = ["2001:db8:ff::1/128", "198.51.100.1/32"]
[[interface]]
name = "tap0"
mac = "02:00:00:00:00:02"
addresses = ["2001:db8:1::2/64", "192.0.2.2/24"]
"""


class Served:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.clock = MonotonicClock()
        cfg = parse_config(CONFIG, "unit.toml")
        self.stack = build_stack(cfg, self.clock.now(), random.Random(1))
        self.driver = Driver(self.stack, self.clock, self.loop)
        self.ctx = Context(stack=self.stack, clock=self.clock, loop=self.loop, driver=self.driver, config=cfg)
        self.server = ControlServer(self.ctx, path)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, fn: Any) -> Any:
        async def run() -> Any:
            res = fn()
            return await res if asyncio.iscoroutine(res) else res
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def start(self) -> None:
        self.thread.start()
        self.call(self.server.start)
        self.call(self.driver.start)

    def stop(self) -> None:
        self.call(self.driver.stop)
        self.call(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("TAPSTACK_RUN_DIR", str(tmp_path))
    s = Served(tmp_path / "unit.sock")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def raw(path: Path, data: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_socket_mode_is_0600(served: Served) -> None:
    assert served.path.stat().st_mode & 0o777 == 0o600


def test_addr_query(served: Served) -> None:
    data = ControlClient("unit", served.path).request("addr")
    names = [i["ifname"] for i in data]
    assert names[:2] == ["lo", "tap0"]
    tap0 = data[1]
    assert tap0["mac"] == "02:00:00:00:00:02"
    assert {"address": "2001:db8:1::2", "prefixlen": 64} .items() <= {
        k: v for a in tap0["addresses"] if a["address"] == "2001:db8:1::2" for k, v in a.items()}.items()


@pytest.mark.parametrize("payload, error", [
    (b"not json\n", "malformed request: not JSON"),
    (b"[1, 2]\n", "malformed request"),
    (b'{"args": {}}\n', "malformed request"),
    (b'{"cmd": "addr", "args": 5}\n', "args must be an object"),
    (b'{"cmd": "nope"}\n', "unknown command 'nope'"),
    (b'{"cmd": "route_get", "args": {}}\n', "missing dst"),
    (b'{"cmd": "pipe", "args": {"token": "x"}}\n', "no such pipe"),
])
def test_malformed_requests_get_errors_not_crashes(served: Served, payload: bytes, error: str) -> None:
    [reply] = raw(served.path, payload)
    assert reply["ok"] is False and error in reply["error"]
    assert ControlClient("unit", served.path).request("stats")     # still serving


def test_empty_connection_is_harmless(served: Served) -> None:
    assert raw(served.path, b"") == []


def test_stats_include_link_and_control_counters(served: Served) -> None:
    data = ControlClient("unit", served.path).request("stats")
    assert "drops" in data and "link" in data and data["control"]["requests"] >= 1


def test_route_add_get_del_through_the_cli(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--name", "unit", "route", "add", "203.0.113.0/24", "via", "fe80::2%tap0",
                 "src", "198.51.100.1"]) == 0
    capsys.readouterr()
    assert main(["route", "--name", "unit"]) == 0
    out = capsys.readouterr().out
    assert "203.0.113.0/24 via inet6 fe80::2" in out and "dev tap0" in out
    assert main(["--name", "unit", "-j", "route", "get", "203.0.113.7"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["dev"] == "tap0" and got["src"] == "198.51.100.1"
    assert main(["route", "get", "203.0.113.7", "--name", "unit"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("203.0.113.7 dev tap0") and " src 198.51.100.1" in line and " gen " in line
    assert main(["--name", "unit", "route", "del", "203.0.113.0/24"]) == 0
    assert main(["--name", "unit", "route", "del", "203.0.113.0/24"]) == 2
    assert "no such route" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["route", "add", "2001:db8:9::/48", "via", "fe80::1%tap9"], "no interface named 'tap9'"),
    (["route", "add", "2001:db8:9::/48", "via", "fe80::1"], "link-local"),
    (["route", "add", "x", "dev", "tap0"], "'x' is not an IP prefix"),
    (["route", "add", "2001:db8:9::/48", "via", "2001:db8:1::1%tap0"], "only link-local"),
    (["neigh", "flush", "dev", "tap7"], "no interface named 'tap7'"),
])
def test_mutation_errors_are_one_line(served: Served, capsys: pytest.CaptureFixture[str], argv: list[str],
                                      message: str) -> None:
    assert main(["--name", "unit", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tapstack: ") and message in err and "Traceback" not in err


def test_text_renderers_run(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("addr", "route", "neigh", "stats", "sockets"):
        assert main(["--name", "unit", cmd]) == 0
    out = capsys.readouterr().out
    assert "2: tap0:" in out and "inet6 2001:db8:1::2/64" in out and "Netid" in out


def test_neigh_flush(served: Served) -> None:
    assert ControlClient("unit", served.path).request("neigh_flush", {"dev": "tap0"}) == {"flushed": 0}


def test_trace_streams_and_detaches(served: Served) -> None:
    client = ControlClient("unit", served.path)
    it = client.stream("trace", {"count": 2})
    assert next(it)["ok"] is True
    assert served.stack.tracer is not None
    served.call(lambda: [served.stack.trace(f"probe n={i}") for i in range(3)])
    assert [next(it), next(it), next(it)] == [{"line": "probe n=0"}, {"line": "probe n=1"}, {"exit": 0}]
    assert list(it) == []
    for _ in range(50):
        if served.call(lambda: served.stack.tracer) is None:
            break
        threading.Event().wait(0.02)
    assert served.stack.tracer is None


def test_trace_drops_when_the_client_is_slow(served: Served) -> None:
    hub = served.server.trace
    q = served.call(lambda: hub.attach(maxsize=2))
    served.call(lambda: [served.stack.trace("x") for _ in range(5)])
    assert q.dropped == 3 and hub.dropped_total == 3
    served.call(lambda: hub.detach(q))


def test_streaming_and_pipe_commands_from_plugins(served: Served, capfd: pytest.CaptureFixture[str]) -> None:
    async def ping(req: Request) -> None:
        await req.reply()
        await req.send({"line": "PING x"})
        await req.send({"exit": 1})

    async def connect(req: Request) -> None:
        if req.args["dst"] == "bad":
            raise CommandError("connect: No route to host", exit_code=1)
        pipe = await req.open_pipe()
        data = await pipe.reader.read()          # stdin of the client until its half-close
        pipe.writer.write(b"got:" + data + b"\n")
        await pipe.writer.drain()
        pipe.close()
        await req.send({"exit": 1, "error": "connect: Connection reset by peer"} if data == b"boom"
                       else {"exit": 0})

    served.server.register("ping", ping, stream=True)
    served.server.register("connect", connect, stream=True)
    assert main(["--name", "unit", "ping", "-c", "1", "2001:db8:1::1"]) == 1
    assert capfd.readouterr().out == "PING x\n"
    assert main(["--name", "unit", "connect", "bad", "7"]) == 1
    assert capfd.readouterr().err == "connect: No route to host\n"
    assert main(["--name", "unit", "connect", "2001:db8:1::1", "7"]) == 0     # stdin is empty here
    assert capfd.readouterr().out == "got:\n"


def test_internal_errors_are_replied(served: Served) -> None:
    def broken(req: Request) -> None:
        raise RuntimeError("kaput")
    served.server.register("broken", broken)
    with pytest.raises(ControlError, match="internal error in broken: RuntimeError: kaput"):
        ControlClient("unit", served.path).request("broken")


def test_missing_plugin_commands_are_clear_errors(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    for plugin in ("ping", "connect"):          # registered globally once stack.api.control is imported
        served.server.commands.pop(plugin, None)
    assert main(["--name", "unit", "ping", "2001:db8:1::1"]) == 2
    assert capsys.readouterr().err.startswith("tapstack: unknown command 'ping'")
    assert main(["--name", "unit", "connect", "2001:db8:1::1", "7"]) == 2
    assert capsys.readouterr().err.startswith("tapstack: unknown command 'connect'")


def test_mutations_are_silent_on_success_unless_json(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--name", "unit", "route", "add", "2001:db8:7::/48", "dev", "tap0"]) == 0
    assert main(["--name", "unit", "neigh", "flush"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["--name", "unit", "-j", "route", "del", "2001:db8:7::/48"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": 1}


def test_a_handler_that_forgets_its_pipe_does_not_hang_the_client(served: Served,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    async def sloppy(req: Request) -> None:
        pipe = await req.open_pipe()
        pipe.writer.write(b"partial\n")
        await req.send({"exit": 0})           # returns without pipe.close()

    served.server.register("connect", sloppy, stream=True)
    assert main(["--name", "unit", "connect", "2001:db8:1::1", "7"]) == 0
    assert capfd.readouterr().out == "partial\n"

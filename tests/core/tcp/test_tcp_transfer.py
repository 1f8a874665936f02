"""Two TcpLayers over a seeded lossy, reordering wire: bulk transfer in virtual time.

The wire (tcp_harness.Wire) only connects two of our own engines; every random
choice is seeded, so the virtual duration is a snapshot: if a change moves it,
look at why before updating the number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from tcp_harness import FakeIp, Wire, run_until

from stack.core.clock import ms, s
from stack.core.tcp.connection import TcpConnection
from stack.core.tcp.layer import TcpLayer
from stack.core.tcp.tcb import TcpConfig, TcpState
from stack.wire.addr import ip4, ip6

MiB = 1 << 20


@dataclass
class Transfer:
    data: bytes
    client: TcpConnection
    listener_port: int
    server_layer: TcpLayer
    sent: int = 0
    got: bytearray = field(default_factory=bytearray)
    server: TcpConnection | None = None
    server_closed: bool = False

    def step(self, now: int) -> None:
        c = self.client
        if c.state is TcpState.ESTABLISHED and self.sent < len(self.data):
            self.sent += c.send(memoryview(self.data)[self.sent : self.sent + 65536], now)
            if self.sent == len(self.data):
                c.close(now)                       # close right after the last write
        if self.server is None:
            lst = self.server_layer.listeners[(None, self.listener_port, 0)]
            self.server = lst.accept()
        if self.server is not None and not self.server_closed:
            while True:
                try:
                    chunk = self.server.recv(MiB, now)
                except BlockingIOError:
                    break
                if not chunk:
                    self.server.close(now)
                    self.server_closed = True
                    break
                self.got += chunk

    def done(self) -> bool:
        return self.server_closed and self.client.state in (TcpState.TIME_WAIT, TcpState.CLOSED)


def transfer(size: int, *, seed: int, loss: float, jitter: int, v4: bool = False,
             config: TcpConfig | None = None) -> tuple[int, Transfer, Wire, FakeIp, FakeIp]:
    a, b = (ip4("192.0.2.1"), ip4("192.0.2.2")) if v4 else (ip6("2001:db8:1::1"), ip6("2001:db8:1::2"))
    ipa, ipb = FakeIp([a], random.Random(seed)), FakeIp([b], random.Random(seed + 1))
    la, lb = TcpLayer(ipa, config), TcpLayer(ipb, config)
    wire = Wire(seed, loss=loss, delay=ms(5), jitter=jitter, rate_bps=100_000_000)
    wire.attach(ipa, la, ipb, lb)
    lb.listen(None, 5001)
    data = random.Random(seed).randbytes(size)
    t = Transfer(data, la.connect(b, 5001, now=0), 5001, lb)
    end = run_until(t.done, wire, [la, lb], 0, s(600), t.step)
    return end, t, wire, ipa, ipb


def test_one_mib_over_five_percent_loss_and_reordering() -> None:
    end, t, wire, ipa, _ipb = transfer(MiB, seed=1, loss=0.05, jitter=ms(1))
    assert bytes(t.got) == t.data
    assert wire.dropped > 50                                  # the loss really happened
    assert ipa.stats.get("tcp", "retrans_segs") >= wire.dropped // 2
    assert t.server is not None and t.server.state in (TcpState.LAST_ACK, TcpState.CLOSED)
    # Snapshot of the virtual duration (10 ms RTT, 100 Mbit/s, 5% loss both ways).
    assert end == SNAPSHOT_LOSSY, end / 1e9


def test_one_mib_clean_path_is_fast() -> None:
    end, t, _wire, ipa, _ipb = transfer(MiB, seed=2, loss=0.0, jitter=0)
    assert bytes(t.got) == t.data
    assert ipa.stats.get("tcp", "retrans_segs") == 0
    assert end < ms(200), end / 1e9                           # 84 ms of serialization + slow start


@pytest.mark.parametrize("name, config", [
    ("newreno_no_sack", TcpConfig(sack=False)),
    ("no_timestamps", TcpConfig(timestamps=False)),
    ("no_options", TcpConfig(sack=False, timestamps=False, window_scaling=False)),
    ("small_buffers", TcpConfig(rcv_buf=16 * 1024, snd_buf=8 * 1024)),
])
def test_variants_over_loss(name: str, config: TcpConfig) -> None:
    end, t, _wire, _ipa, _ipb = transfer(256 * 1024, seed=3, loss=0.05, jitter=ms(1), config=config)
    assert bytes(t.got) == t.data, name
    assert end < s(30), (name, end / 1e9)


def test_ipv4_transfer() -> None:
    _end, t, _wire, _ipa, _ipb = transfer(128 * 1024, seed=4, loss=0.02, jitter=ms(1), v4=True)
    assert bytes(t.got) == t.data


SNAPSHOT_LOSSY = 2_223_544_085          # ns of virtual time
